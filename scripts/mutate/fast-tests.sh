#!/bin/sh
# The test command of `npm run mutate` (Stryker's command runner): the fast unit and
# kernel-fixture tests only (no worker-heavy tests, no 100,000-entry or fuzz loops), stopping
# at the first failure. Stryker builds the instrumented sources once (buildCommand) and
# selects the mutant through __STRYKER_ACTIVE_MUTANT__, so each run costs only the tests.
# MUTATE_TESTS="tcp parse ..." narrows the files (a run over part of the scope).
cd "$(dirname "$0")/../.." || exit 2
files="${MUTATE_TESTS:-kernel-reference ext zones events reclaim kernel-fixtures tcp parse proto-other malformed gc invariants}"
set --
for f in $files; do [ -f "dist/test/$f.test.js" ] && set -- "$@" "dist/test/$f.test.js"; done
exec npx ava --config ava.mutate.config.js --fail-fast \
  --match '!*several threads*' --match '!*rogue namespace*' --match '!*while packet workers*' \
  --match '!*100,000*' --match '!*at the same time*' "$@"
