// The table/packet part of `npm run mutate` (docs/mutation.md): the same settings as
// stryker.config.json, with its own incremental and report files so it can run beside the
// tracker part (reports/stryker-incremental.json) without either overwriting the other.
//   nice -n 10 npx stryker run stryker.table.config.mjs [--mutate FILE]
// `node scripts/mutate/report.mjs --merge ...` joins the two parts.
import { partConfig } from './scripts/mutate/part-config.mjs';

export default partConfig('table', ['src/table/chains.ts', 'src/table/gc.ts', 'src/table/zones.ts', 'src/input/packet/**/*.ts']);
