// Where a GC slice's time goes (docs/mutation.md, GC slice budget): wall vs CPU time of each
// GcEngine.run() over N expired UDP entries (default 262,144), and the part spent after the
// budgeted scan loop (quiesce + drain). Usage: npx tsc && node scripts/gc-slice.mjs . [N]
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const D = pathToFileURL(resolve(process.argv[2] ?? '.')).href;
const { ConntrackTable } = await import(`${D}/dist/src/table/table.js`);
const { Conntrack } = await import(`${D}/dist/src/track/core.js`);
const { GcEngine } = await import(`${D}/dist/src/table/gc.js`);
const { FrameSet, IX_WORDS, LT_RAW } = await import(`${D}/dist/bench/frames.js`);
const n = Number(process.argv[3] ?? 262144);
const T0 = 1_000_000;
const table = ConntrackTable.create({ max: n });
table.clock = T0;
const ct = new Conntrack(table);
for (let f = 0; f < n; f += 65536) {
  const m = Math.min(n, f + 65536);
  const fs = new FrameSet(m - f);
  for (let i = f; i < m; i++) { fs.now = T0 + Math.floor((i * 1000) / n); fs.udp((0x0e000000 + i) >>> 0, 0xc0a80201, 1024 + (i % 60000), 53); }
  ct.beginBatch();
  for (let i = 0; i < fs.count; i++) { const x = i * IX_WORDS; ct.frame(LT_RAW, fs.bytes, fs.ix[x], fs.ix[x + 1], fs.ix[x + 2], 0); }
  ct.endBatch();
}
const gc = new GcEngine(table);
// instrument: time quiesce + drain (the epilogue) separately
const q = gc.chains.qsbr, al = gc.chains.alloc;
let epi = 0;
for (const [o, k] of [[q, 'quiesce'], [al, 'drain']]) { const f = o[k].bind(o); o[k] = (...a) => { const t = performance.now(); const r = f(...a); epi += performance.now() - t; return r; }; }
table.clock = T0 + 32_000;
const rows = [];
for (;;) {
  epi = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = gc.run();
  const all = performance.now() - t0;
  const cu = process.cpuUsage(c0);
  rows.push([all, epi, r.expired, r.buckets, (cu.user + cu.system) / 1000]);
  if (r.sweepDone) break;
}
rows.sort((a, b) => b[0] - a[0]);
console.log('slices', rows.length, 'longest 5 [total ms, quiesce+drain ms, expired, buckets, cpu ms]:', rows.slice(0, 5).map((r) => r.map((x) => +x.toFixed(2))));
const med = (i) => rows.map((r) => r[i]).sort((a, b) => a - b)[rows.length >> 1];
console.log('median total', med(0).toFixed(2), 'median epilogue', med(1).toFixed(2), 'median expired', med(2));
gc.close(); ct.close();
console.log('median cpu', med(4).toFixed(2), 'max cpu', Math.max(...rows.map((r) => r[4])).toFixed(2));
