// The tracker part of `npm run mutate` (docs/mutation.md): src/track/core.ts and
// src/track/proto/*, with the settings of stryker.config.json and its own incremental and report
// files, so it can run beside the table/packet part (stryker.table.config.mjs).
//   MUT_PART=NAME MUTATE_INPROC=1 nice -n 10 node scripts/mutate/stryker-run.mjs run stryker.track.config.mjs [--mutate FILE]
// `node scripts/mutate/report.mjs --merge ...` joins the parts.
import { readFileSync } from 'node:fs';

const base = JSON.parse(readFileSync(new URL('./stryker.config.json', import.meta.url), 'utf8'));
delete base.$schema;
delete base._comment;
// MUT_PART=NAME: a run in parallel with another (own temp dir, incremental and report files).
const part = process.env.MUT_PART ? `-${process.env.MUT_PART}` : '';
export default {
  ...base,
  mutate: ['src/track/core.ts', 'src/track/proto/**/*.ts'],
  incrementalFile: `reports/stryker-incremental-track${part}.json`,
  jsonReporter: { fileName: `reports/mutation/mutation-track${part}.json` },
  tempDirName: `.stryker-tmp${part}`,
  ignorePatterns: [...base.ignorePatterns, '.stryker-tmp*', 'reports/mutation'],
  reporters: ['json', 'clear-text', 'progress-append-only'],
};
