// The tracker part of `npm run mutate` (docs/mutation.md): src/track/core.ts and
// src/track/proto/*, with the settings of stryker.config.json and its own incremental and report
// files, so it can run beside the table/packet part (stryker.table.config.mjs).
//   MUT_PART=NAME MUTATE_INPROC=1 nice -n 10 node scripts/mutate/stryker-run.mjs run stryker.track.config.mjs [--mutate FILE]
// `node scripts/mutate/report.mjs --merge ...` joins the parts.
import { partConfig } from './scripts/mutate/part-config.mjs';

export default partConfig('track', ['src/track/core.ts', 'src/track/proto/**/*.ts']);
