/**
 * SYN flood on oversubscribed cores (issue 9): T flood threads (default 6, on a machine with
 * fewer cores) send SYNs from random sources into a full table, for S seconds; each new SYN must
 * early_drop an unreplied entry and take a slot. Prints the share of new connections refused
 * "table full". `node dist/bench/flood-oversub.js [--threads 6] [--seconds 5] [--discipline noref|refcount]`
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { ConntrackTable, type Discipline } from '../src/table/table.js';
import { Conntrack, R_TABLE_FULL } from '../src/track/core.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';

interface FloodData { buffer: SharedArrayBuffer; stop: SharedArrayBuffer; seed: number }

/** A TCP SYN from `src` in `b` (IPv4 + TCP, 40 bytes), header checksum fixed. */
function syn(b: Uint8Array, src: number, sport: number): void {
  b.fill(0);
  b[0] = 0x45; b[3] = 40; b[8] = 64; b[9] = 6;
  b[12] = src >>> 24; b[13] = (src >>> 16) & 255; b[14] = (src >>> 8) & 255; b[15] = src & 255;
  b[16] = 192; b[17] = 0; b[18] = 2; b[19] = 80;
  b[20] = sport >> 8; b[21] = sport & 255; b[23] = 80;
  b[27] = 1; b[32] = 0x50; b[33] = 0x02; b[34] = 0xff; b[35] = 0xff;
  let s = 0;
  for (let i = 0; i < 20; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  b[10] = (~s >> 8) & 255; b[11] = ~s & 255;
}

if (!isMainThread) {
  const d = workerData as FloodData;
  const ct = new Conntrack({ buffer: d.buffer });
  const stop = new Int32Array(d.stop);
  // Started: wait for the go (word 1), so thread start-up on a loaded machine is not timed.
  parentPort!.postMessage({ type: 'ready' });
  while (Atomics.load(stop, 1) === 0) Atomics.wait(stop, 1, 0, 1000); // notified by runFlood
  const b = new Uint8Array(40);
  let seed = d.seed | 1;
  let sent = 0;
  let refused = 0;
  const now = 1000;
  while (Atomics.load(stop, 0) === 0) {
    ct.beginBatch();
    for (let k = 0; k < 64; k++) {
      seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
      syn(b, (10 << 24) | (seed & 0xffffff), 1024 + ((seed >>> 24) & 0xff));
      const v = ct.frame(LINKTYPE_RAW, b, 0, 40, now);
      sent++;
      if (v.reason === R_TABLE_FULL) refused++;
    }
    ct.endBatch();
    Atomics.add(stop, 2, 64); // SYNs sent by all threads (runFlood's minSent)
  }
  ct.close();
  parentPort!.postMessage({ type: 'done', sent, refused });
}

export interface FloodResult { discipline: Discipline; threads: number; seconds: number; sent: number; refused: number; rate: number; expedited: number }

/**
 * One flood: `threads` threads for `seconds` on a full 16,384-entry table; with `minSent`, on
 * until that many SYNs were sent (at most 60 s more), so a slow machine still fills the table.
 */
export async function runFlood(discipline: Discipline, threads: number, seconds: number, minSent = 0): Promise<FloodResult> {
  const table = ConntrackTable.create({ max: 16384, discipline, sysctls: { nf_conntrack_checksum: 0 } });
  table.clock = 1000;
  const stop = new SharedArrayBuffer(12); // word 0: stop, word 1: go, word 2: SYNs sent
  const ws = Array.from({ length: threads }, (_, i) => new Worker(new URL(import.meta.url), {
    workerData: { buffer: table.buffer, stop, seed: 0x9e3779b9 * (i + 1) } satisfies FloodData,
  }));
  type Msg = { type: string; sent: number; refused: number };
  const ready = ws.map((w) => new Promise<void>((ok) => w.on('message', (m: Msg) => { if (m.type === 'ready') ok(); })));
  const done = ws.map((w) => new Promise<Msg>((ok) => w.on('message', (m: Msg) => { if (m.type === 'done') ok(m); })));
  // Every thread attached before the clock starts (bounded: a thread that never starts fails the run).
  const started = await Promise.race([Promise.all(ready).then(() => true), new Promise<false>((ok) => setTimeout(() => ok(false), 60000))]);
  const w32 = new Int32Array(stop);
  Atomics.store(w32, 1, 1);
  Atomics.notify(w32, 1); // go
  if (!started) Atomics.store(w32, 0, 1);
  await new Promise((ok) => setTimeout(ok, started ? seconds * 1000 : 0));
  for (let waited = 0; started && Atomics.load(w32, 2) < minSent && waited < 60000; waited += 20) {
    await new Promise((ok) => setTimeout(ok, 20));
  }
  Atomics.store(w32, 0, 1);
  const rs = await Promise.all(done);
  const sent = rs.reduce((a, r) => a + r.sent, 0);
  const refused = rs.reduce((a, r) => a + r.refused, 0);
  return { discipline, threads, seconds, sent, refused, rate: refused / Math.max(1, sent), expedited: table.stats().total['expedited_gp']! };
}

if (isMainThread && process.argv[1] !== undefined && process.argv[1].endsWith('flood-oversub.js')) {
  const args = process.argv.slice(2);
  const opt = (n: string, def: string): string => { const i = args.indexOf(`--${n}`); return i >= 0 ? args[i + 1]! : def; };
  const threads = Number(opt('threads', '6'));
  const seconds = Number(opt('seconds', '5'));
  for (const discipline of opt('discipline', 'noref,refcount').split(',') as Discipline[]) {
    const r = await runFlood(discipline, threads, seconds);
    console.log(`${discipline}: ${threads} threads, ${seconds} s: ${r.sent} SYNs, ${r.refused} refused "table full" ` +
      `(${(100 * r.rate).toFixed(2)} %), expedited grace periods ${r.expedited}`);
  }
}
