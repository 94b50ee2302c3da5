// The table/packet part of `npm run mutate` (docs/mutation.md): the same settings as
// stryker.config.json, with its own incremental and report files so it can run beside the
// tracker part (reports/stryker-incremental.json) without either overwriting the other.
//   nice -n 10 npx stryker run stryker.table.config.mjs [--mutate FILE]
// `node scripts/mutate/report.mjs --merge ...` joins the two parts.
import { readFileSync } from 'node:fs';

const base = JSON.parse(readFileSync(new URL('./stryker.config.json', import.meta.url), 'utf8'));
delete base.$schema;
delete base._comment;
// MUT_PART=NAME: a run in parallel with another (own temp dir, incremental and report files),
// joined afterwards with report.mjs --merge.
const part = process.env.MUT_PART ? `-${process.env.MUT_PART}` : '';
export default {
  ...base,
  mutate: ['src/table/chains.ts', 'src/table/gc.ts', 'src/table/zones.ts', 'src/input/packet/**/*.ts'],
  incrementalFile: `reports/stryker-incremental-table${part}.json`,
  jsonReporter: { fileName: `reports/mutation/mutation-table${part}.json` },
  tempDirName: `.stryker-tmp${part}`,
  ignorePatterns: [...base.ignorePatterns, '.stryker-tmp*', 'reports/mutation'],
  reporters: ['json', 'clear-text', 'progress-append-only'],
};
