/**
 * Single-thread replay speed: every bundled capture (the sample and the kernel fixtures)
 * replayed through a fresh table, median of 5 runs after a warm-up. Timed: reading, parsing and
 * deciding every packet; not timed: allocating each empty table.
 *   node dist/bench/replay-speed.js [--runs N] [capture ...]
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { replay } from '../src/ops/replay.js';
import { ConntrackTable } from '../src/table/table.js';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const args = process.argv.slice(2);
let runs = 5;
const files: string[] = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--runs') runs = Number(args[++i]);
  else files.push(args[i]!);
}
if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs needs a positive integer');
if (files.length === 0) {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const sample = `${root}bench/samples/sample.pcap`;
  if (existsSync(sample)) files.push(sample);
  const fx = `${root}test/fixtures/kernel`;
  if (existsSync(fx)) for (const d of readdirSync(fx).sort()) files.push(`${fx}/${d}/capture.pcap`);
}
// All captures as one workload: each replayed from an empty table, created outside the timed
// region (a table is allocated once per process in real use; here it would dominate small captures).
const inputs = files.map((f) => readFileSync(f));
const total = (): { packets: number; ms: number } => {
  let packets = 0;
  let ms = 0;
  for (const b of inputs) {
    const table = ConntrackTable.create({ max: 65536 });
    const t0 = performance.now();
    const r = replay(b, { table });
    ms += performance.now() - t0;
    packets += r.packets;
    r.conntrack.close();
  }
  return { packets, ms };
};
total(); // warm-up
const rates: number[] = [];
let packets = 0;
for (let r = 0; r < runs; r++) {
  const x = total();
  packets = x.packets;
  rates.push((x.packets / x.ms) * 1000);
}
console.log(JSON.stringify({
  captures: files.length, packets, runs,
  ppsMedian: Math.round(median(rates)), ppsMin: Math.round(Math.min(...rates)), ppsMax: Math.round(Math.max(...rates)),
}));
