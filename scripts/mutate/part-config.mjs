// The settings of stryker.config.json for one part of the scope (stryker.table.config.mjs,
// stryker.track.config.mjs), with that part's own incremental and report files, so parts can run
// side by side. MUT_PART=NAME gives a run its own temp dir and files too.
import { readFileSync } from 'node:fs';

export function partConfig(name, mutate) {
  const base = JSON.parse(readFileSync(new URL('../../stryker.config.json', import.meta.url), 'utf8'));
  delete base.$schema;
  delete base._comment;
  const part = process.env.MUT_PART ? `-${process.env.MUT_PART}` : '';
  return {
    ...base,
    mutate,
    incrementalFile: `reports/stryker-incremental-${name}${part}.json`,
    jsonReporter: { fileName: `reports/mutation/mutation-${name}${part}.json` },
    tempDirName: `.stryker-tmp${part}`,
    ignorePatterns: [...base.ignorePatterns, '.stryker-tmp*', 'reports/mutation'],
    reporters: ['json', 'clear-text', 'progress-append-only'],
  };
}
