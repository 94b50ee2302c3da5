#!/bin/sh
# The test command of `npm run mutate` (Stryker's command runner): the fast unit and
# kernel-fixture tests only (no worker-heavy tests, no 100,000-entry or fuzz loops), stopping
# at the first failure. Stryker builds the instrumented sources once (buildCommand) and
# selects the mutant through __STRYKER_ACTIVE_MUTANT__, so each run costs only the tests.
# MUTATE_TESTS="tcp parse ..." narrows the files (a run over part of the scope).
# ava is started with node directly: npx resolving it cost 0.4 s of each ~1.5 s mutant.
cd "$(dirname "$0")/../.." || exit 2
files="${MUTATE_TESTS:-kernel-reference ext zones events reclaim kernel-fixtures tcp parse parse-edges checksum-edges proto-other malformed gc gc-units invariants nat offload zones-units zones-gaps chains-units chains-refs chains-recovery chains-walks core-clash gc-engine gc-handle}"
set --
for f in $files; do [ -f "dist/test/$f.test.js" ] && set -- "$@" "dist/test/$f.test.js"; done
# MUTATE_INPROC=1: the tests run in one long-lived process per sandbox (inproc/server.mjs), which
# switches the active mutant between runs: ~50x cheaper per mutant; survivors are re-checked
# with real ava (this script without MUTATE_INPROC).
if [ -n "$MUTATE_INPROC" ]; then exec node scripts/mutate/inproc/client.mjs $files; fi
# Stryker's sandbox (.stryker-tmp*/sandbox-*) has no node_modules of its own: look upwards.
d=$PWD; while [ ! -f "$d/node_modules/ava/entrypoints/cli.mjs" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
exec node "$d/node_modules/ava/entrypoints/cli.mjs" --config ava.mutate.config.js --fail-fast \
  --match '!*several threads*' --match '!*rogue namespace*' --match '!*while packet workers*' \
  --match '!*100,000*' --match '!*at the same time*' --match '!host capture*' "$@"
