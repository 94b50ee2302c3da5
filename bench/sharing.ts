/**
 * Shared cache lines written per insert, counted (not timed): what makes inserts scale or not
 * with workers, measured the same on a busy machine as on a quiet one.
 *
 *   node dist/bench/sharing.js [DIST ...]
 *
 * For each build (`dist/` folders; default this one), two Conntracks on this thread stand for
 * two workers (their own worker records, each inside its 32-packet batches), inserting new UDP
 * connections packet by packet in turn (the finest interleaving two cores can produce): in two
 * zones (one each, the bench's zones workload) and in one zone (zone 0, as the new connections
 * of the mixed workload). Every write to the table (Atomics read-modify-writes and stores, and
 * plain stores through a Proxy of the table's Int32Array) is recorded by the 64-byte line it
 * lands on and the worker doing it. Prints per insert: all writes (and how many are Atomics); transfers (writes to a line
 * whose last writer was the other worker: on two cores each is a cache-line transfer), and of
 * these the ones on hot lines (written in more than 10% of inserts: counters, list heads, list
 * locks; the rest, bucket locks, buckets and entries, are random accesses that the kernel's
 * table shares alike), by section.
 */
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface Mods {
  Table: { create(o: { max: number }): { i32: Int32Array; clock: number; sec: Record<string, number> } };
  Conntrack: new (t: unknown) => { frame(...a: number[] | unknown[]): unknown; beginBatch(): void; endBatch(): void; close(): void };
  W: { T0: number; zoneFrames(n: number): FS };
  F: { IX_OFF: number; IX_LEN: number; IX_NOW: number; IX_ZONE: number; IX_WORDS: number; LT_RAW: number };
}
interface FS { ix: Int32Array; bytes: Uint8Array; count: number; zone: number; now: number; udp(a: number, b: number, c: number, d: number): number }

let current = -1; // the worker (0, 1) writing now; -1: setup, not recorded
let rec: Map<number, number[]> | null = null; // line -> [writes, transfers, last writer + 1]
let realOf: WeakMap<object, Int32Array> = new WeakMap();
let atomicWrites = 0; // Atomics read-modify-writes and stores on the table by the two workers

function note(index: number): void {
  if (rec === null || current < 0) return;
  const line = index >>> 4;
  let w = rec.get(line);
  if (!w) rec.set(line, (w = [0, 0, 0]));
  w[0]!++;
  if (w[2] !== 0 && w[2] !== current + 1) w[1]!++;
  w[2] = current + 1;
}

// Atomics with the table's Proxy unwrapped, recording writes.
const A = Atomics as unknown as Record<string, (...a: unknown[]) => unknown>;
const orig: Record<string, (...a: unknown[]) => unknown> = {};
for (const k of ['add', 'sub', 'and', 'or', 'xor', 'exchange', 'compareExchange', 'store', 'load', 'wait', 'notify']) {
  orig[k] = A[k]!.bind(Atomics);
  A[k] = (ta: unknown, i: unknown, ...rest: unknown[]): unknown => {
    const real = realOf.get(ta as object);
    if (real && k !== 'load' && k !== 'wait' && k !== 'notify') {
      note(i as number);
      if (rec !== null && current >= 0) atomicWrites++;
    }
    return orig[k]!(real ?? ta, i, ...rest);
  };
}

function recorder(real: Int32Array): Int32Array {
  const p = new Proxy(real, {
    get(t, key) {
      if (typeof key === 'string' && key.length > 0 && key.charCodeAt(0) <= 57 && key.charCodeAt(0) >= 48) return t[Number(key)];
      const v = Reflect.get(t, key, t) as unknown;
      if (key === 'fill') return (val: number, a = 0, b = t.length) => { for (let i = a; i < b; i++) note(i); return t.fill(val, a, b); };
      if (key === 'set') return (src: ArrayLike<number>, off = 0) => { for (let i = 0; i < src.length; i++) note(off + i); t.set(src, off); };
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
    set(t, key, val) {
      if (typeof key === 'string') { note(Number(key)); t[Number(key)] = val as number; }
      return true;
    },
  });
  realOf.set(p, real);
  return p;
}

async function load(dist: string): Promise<Mods> {
  const u = (p: string): string => pathToFileURL(`${resolve(dist)}/${p}`).href;
  return {
    Table: (await import(u('src/table/table.js'))).ConntrackTable,
    Conntrack: (await import(u('src/track/core.js'))).Conntrack,
    W: await import(u('bench/workloads.js')),
    F: await import(u('bench/frames.js')),
  } as Mods;
}

function sectionOf(sec: Record<string, number>, index: number): string {
  let best = 'header';
  let at = -1;
  for (const [k, v] of Object.entries(sec)) if (k !== 'totalWords' && v <= index && v > at) { best = k; at = v; }
  return best;
}

async function measure(dist: string, oneZone: boolean): Promise<string> {
  const b = await load(dist);
  const N = 4000;
  const fsets: FS[] = [0, 1].map((w) => {
    const fs = b.W.zoneFrames(1) as FS; // a FrameSet with room for 2; build our own below
    void fs;
    const FrameSet = (fs as unknown as { constructor: new (n: number) => FS }).constructor;
    const f = new FrameSet(N);
    f.now = b.W.T0;
    f.zone = oneZone ? 0 : w + 1;
    for (let i = 0; i < N; i++) f.udp((0x0a000000 + (w << 20) + i) >>> 0, 0xc0000201, 1024 + (i % 60000), 53);
    return f;
  });
  const t = b.Table.create({ max: 4 * N });
  t.clock = b.W.T0;
  const real = t.i32;
  (t as { i32: Int32Array }).i32 = recorder(real);
  const cts = [new b.Conntrack(t), new b.Conntrack(t)];
  rec = new Map();
  const F = b.F;
  let inserts = 0;
  atomicWrites = 0;
  for (const ct of cts) ct.beginBatch();
  for (let i = 0; i < N; i++) {
    for (let w = 0; w < 2; w++) {
      current = w;
      const fs = fsets[w]!;
      const x = i * F.IX_WORDS;
      cts[w]!.frame(F.LT_RAW, fs.bytes, fs.ix[x + F.IX_OFF], fs.ix[x + F.IX_LEN], fs.ix[x + F.IX_NOW], fs.ix[x + F.IX_ZONE]);
      inserts++;
      if ((i & 31) === 31) { cts[w]!.endBatch(); cts[w]!.beginBatch(); }
    }
  }
  for (let w = 0; w < 2; w++) { current = w; cts[w]!.endBatch(); }
  current = -1;
  const hot = new Map<string, number>();
  const all = new Map<string, number>();
  let writes = 0;
  let moves = 0;
  let hotMoves = 0;
  for (const [line, [n, tr]] of rec) {
    const s = sectionOf(t.sec, line << 4);
    writes += n!;
    moves += tr!;
    all.set(s, (all.get(s) ?? 0) + tr!);
    if (n! > inserts / 10) {
      hot.set(s, (hot.get(s) ?? 0) + tr!);
      hotMoves += tr!;
    }
  }
  rec = null;
  for (const ct of cts) ct.close();
  const by = (m: Map<string, number>): string => [...m].filter(([, n]) => n / inserts >= 0.01).sort((x, y) => y[1] - x[1])
    .map(([k, n]) => `${k} ${(n / inserts).toFixed(2)}`).join(', ');
  return `  ${oneZone ? 'one zone (0)' : 'two zones   '}: writes ${(writes / inserts).toFixed(1)} (atomic ${(atomicWrites / inserts).toFixed(1)}), transfers ${(moves / inserts).toFixed(2)} (${by(all)}); ` +
    `on hot lines ${(hotMoves / inserts).toFixed(2)} (${by(hot)})`;
}

const dists = process.argv.slice(2);
if (dists.length === 0) dists.push(fileURLToPath(new URL('../', import.meta.url)));
for (const d of dists) {
  process.stdout.write(`${d}\n`);
  for (const one of [false, true]) process.stdout.write(`${await measure(d, one)}\n`);
}
