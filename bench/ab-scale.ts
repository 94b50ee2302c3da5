/**
 * Paired A/B of two builds with worker threads: how inserts scale from 1 worker to 2 (issue 13),
 * measured on a machine too busy for separate runs to compare.
 *
 *   node dist/bench/ab-scale.js BASE_DIST [NEW_DIST] [--rounds 7] [--only zones,mixed]
 *
 * Workloads of the quick bench (bench/run.ts), batches of 32: `zones` inserts 20,000 UDP
 * connections in each of 2 zones into a fresh table per run (with 2 workers each inserts one
 * zone, as the bench splits it); `mixed` sends 120,000 packets of Zipf traffic with new TCP, UDP
 * and ICMP connections to a table prefilled with 100,000 connections, the GC worker running
 * (one table per build, kept across runs, as in the bench). Each runs with 1 and with 2 worker
 * threads, for each build, in a rotating order within every round, beside the machine's own
 * ceiling (the same pure-compute loop on 1 and 2 threads). Each build has its own pair of
 * threads (its own JIT feedback), kept for every round. Per run it reports
 *   - wall: inserts / wall time from the start signal to the last thread done (what the bench
 *     reports); 2w/1w of it can only be read against the ceiling of the same round;
 *   - cpu: inserts / on-CPU time of the threads (/proc/thread-self/schedstat): a thread waiting
 *     for a core does not count, one stalled on cache lines written by the other does. The
 *     2w/1w of cpu rates is what the build would scale to on two free cores (1.0 = no cost of
 *     sharing). Linux only.
 * Prints medians and per-round ratios.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { distModuleUrl, importBuild, median, takeOption } from './stats.js';

const WORKER_SRC = `
const { parentPort, workerData } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
function cpuNs() {
  try { return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]); } catch { return NaN; }
}
(async () => {
  const u = (p) => new URL(p, 'file://' + workerData.dist.replace(/\\/?$/, '/')).href;
  const Table = (await import(u('src/table/table.js'))).ConntrackTable;
  const Conntrack = (await import(u('src/track/core.js'))).Conntrack;
  const F = await import(u('bench/frames.js'));
  function loop(ct, bytes, ix, from, to) {
    let n = 0;
    ct.beginBatch();
    for (let i = from; i < to; i++) {
      const x = i * F.IX_WORDS;
      ct.frame(F.LT_RAW, bytes, ix[x + F.IX_OFF], ix[x + F.IX_LEN], ix[x + F.IX_NOW], ix[x + F.IX_ZONE]);
      if ((++n & 31) === 0) { ct.endBatch(); ct.beginBatch(); }
    }
    ct.endBatch();
    return n;
  }
  function spin(k) {
    let h = 0x811c9dc5;
    for (let i = 0; i < k; i++) h = Math.imul(h ^ i, 16777619);
    return h;
  }
  parentPort.on('message', (m) => {
    const go = new Int32Array(m.go);
    let ct = null;
    if (m.kind === 'frames') ct = new Conntrack(Table.attach({ buffer: m.buffer }));
    parentPort.postMessage({ ready: true });
    Atomics.wait(go, 0, 0);
    const c0 = cpuNs(), t0 = performance.now();
    let n;
    if (m.kind === 'frames') n = loop(ct, new Uint8Array(m.data), new Int32Array(m.index), m.from, m.to);
    else { spin(m.spin); n = m.spin; }
    const t1 = performance.now(), c1 = cpuNs();
    if (ct) ct.close();
    parentPort.postMessage({ n, wallMs: t1 - t0, cpuMs: (c1 - c0) / 1e6, end: performance.timeOrigin + t1 });
  });
  parentPort.postMessage({ loaded: true });
})();
`;

interface Result { n: number; wallMs: number; cpuMs: number; end: number }
interface Rate { wall: number; cpu: number }

class Pair {
  readonly threads: Worker[];
  private constructor(readonly dist: string) {
    this.threads = [0, 1].map(() => new Worker(WORKER_SRC, { eval: true, workerData: { dist } }));
  }
  static async start(dist: string): Promise<Pair> {
    const p = new Pair(dist);
    await Promise.all(p.threads.map((t) => once(t)));
    return p;
  }
  /** One run on `k` threads. */
  async run(k: number, job: (i: number) => Record<string, unknown>): Promise<Rate> {
    const go = new SharedArrayBuffer(4);
    const ts = this.threads.slice(0, k);
    const readies = ts.map((t) => once(t));
    ts.forEach((t, i) => t.postMessage({ ...job(i), go }));
    await Promise.all(readies);
    const results = ts.map((t) => once(t) as Promise<Result>);
    const start = performance.timeOrigin + performance.now();
    Atomics.store(new Int32Array(go), 0, 1); // the start signal: every thread is waiting on it
    Atomics.notify(new Int32Array(go), 0);
    const rs = await Promise.all(results);
    const n = rs.reduce((a, r) => a + r.n, 0);
    return {
      wall: n / ((Math.max(...rs.map((r) => r.end)) - start) / 1000),
      cpu: n / (rs.reduce((a, r) => a + r.cpuMs, 0) / 1000),
    };
  }
  close(): void {
    for (const t of this.threads) void t.terminate();
  }
}

function once(w: Worker): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: unknown): void => { w.off('error', onErr); resolve(m); };
    const onErr = (e: Error): void => { w.off('message', onMsg); reject(e); };
    w.once('message', onMsg);
    w.once('error', onErr);
  });
}


interface FrameSetLike { data: SharedArrayBuffer; index: SharedArrayBuffer; count: number; bytes: Uint8Array; ix: Int32Array }
interface TableLike { buffer: SharedArrayBuffer; clock: number; count?: number }
interface BuildMods {
  Table: { create(o: { max: number }): TableLike };
  Conntrack: new (t: TableLike) => { frame(...a: number[] | unknown[]): unknown; beginBatch(): void; endBatch(): void; close(): void };
  startGc: (t: TableLike, o: object) => { ready: Promise<unknown>; stop(): Promise<unknown> };
  W: {
    T0: number; zoneFrames(n: number): FrameSetLike; prefillMixed(a: number, b: number): FrameSetLike;
    mixedFrames(flows: number, workers: number, packets: number, seed: number): { fs: FrameSetLike; range(k: number): [number, number] };
  };
  F: { IX_OFF: number; IX_LEN: number; IX_NOW: number; IX_ZONE: number; IX_WORDS: number; LT_RAW: number };
}

async function load(dist: string): Promise<BuildMods> {
  return { ...(await importBuild(dist)), startGc: (await import(distModuleUrl(dist, 'src/table/gc.js'))).startGc } as BuildMods;
}

/** Feed a frame set through a Conntrack on this thread (prefill). */
function feed(b: BuildMods, ct: InstanceType<BuildMods['Conntrack']>, fs: FrameSetLike): void {
  ct.beginBatch();
  for (let i = 0; i < fs.count; i++) {
    const x = i * b.F.IX_WORDS;
    ct.frame(b.F.LT_RAW, fs.bytes, fs.ix[x + b.F.IX_OFF], fs.ix[x + b.F.IX_LEN], fs.ix[x + b.F.IX_NOW], fs.ix[x + b.F.IX_ZONE]);
    if ((i & 31) === 31) { ct.endBatch(); ct.beginBatch(); }
  }
  ct.endBatch();
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, def: string): string => takeOption(args, name, def);
  const rounds = Number(opt('--rounds', '7'));
  const only = opt('--only', 'zones,mixed').split(',');
  const here = fileURLToPath(new URL('../', import.meta.url));
  // Absolute folders: ab-scale's worker threads build their module URLs from them too.
  const [baseDir, newDir = here] = args.map((a) => resolve(a));
  if (!baseDir || !Number.isInteger(rounds) || rounds < 1 || only.some((w) => w !== 'zones' && w !== 'mixed')) {
    process.stderr.write('usage: node dist/bench/ab-scale.js BASE_DIST [NEW_DIST] [--rounds N] [--only zones,mixed]\n');
    process.exitCode = 2;
    return;
  }
  try {
    readFileSync('/proc/thread-self/schedstat');
  } catch {
    process.stderr.write('ab-scale: /proc/thread-self/schedstat is not readable: cpu rates will be NaN\n');
  }
  const mods = { base: await load(baseDir), new: await load(newDir) };
  const pairs = { base: await Pair.start(baseDir), new: await Pair.start(newDir) };
  const ZN = 20_000, MN = 100_000, MP = 120_000;
  const zf = mods.new.W.zoneFrames(ZN);
  const frameJob = (t: TableLike, fs: FrameSetLike, from: number, to: number): Record<string, unknown> =>
    ({ kind: 'frames', buffer: t.buffer, data: fs.data, index: fs.index, from, to });
  const zonesRun = (k: 'base' | 'new', w: number): Promise<Rate> => {
    const b = mods[k];
    const t = b.Table.create({ max: Math.ceil(zf.count * 1.05) });
    t.clock = b.W.T0;
    const per = Math.ceil(zf.count / w);
    return pairs[k].run(w, (i) => frameJob(t, zf, i * per, Math.min(zf.count, (i + 1) * per)));
  };
  // mixed: one prefilled table per build with its GC worker, kept across runs (as the bench).
  const mixed: Partial<Record<'base' | 'new', { t: TableLike; gc: { stop(): Promise<unknown> } }>> = {};
  const mf = { 1: mods.new.W.mixedFrames(MN, 1, MP, 12), 2: mods.new.W.mixedFrames(MN, 2, MP, 13) } as const;
  if (only.includes('mixed')) {
    for (const k of ['base', 'new'] as const) {
      const b = mods[k];
      const t = b.Table.create({ max: MN + Math.ceil(0.15 * MP * 3) });
      t.clock = b.W.T0;
      const ct = new b.Conntrack(t);
      for (let f = 0; f < MN; f += 65536) feed(b, ct, b.W.prefillMixed(f, Math.min(MN, f + 65536)));
      ct.close();
      const gc = b.startGc(t, {});
      await gc.ready;
      mixed[k] = { t, gc };
    }
  }
  const mixedRun = (k: 'base' | 'new', w: 1 | 2): Promise<Rate> => {
    const m = mixed[k]!;
    const fr = mf[w];
    return pairs[k].run(w, (i) => frameJob(m.t, fr.fs, ...fr.range(i)));
  };
  const SPIN = 20_000_000;
  const spinRun = (w: number): Promise<Rate> => pairs.new.run(w, () => ({ kind: 'spin', spin: SPIN }));
  const fmt = (x: number): string => x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : `${(x / 1e3).toFixed(1)}k`;
  for (const wl of only) {
    const cells = ['base@1', 'base@2', 'new@1', 'new@2', 'ceil@1', 'ceil@2'];
    const vals: Record<string, Rate[]> = Object.fromEntries(cells.map((c) => [c, []]));
    const runCell = (c: string): Promise<Rate> => {
      const [k, ws] = c.split('@') as [string, string];
      const w = Number(ws) as 1 | 2;
      if (k === 'ceil') return spinRun(w);
      return wl === 'zones' ? zonesRun(k as 'base' | 'new', w) : mixedRun(k as 'base' | 'new', w);
    };
    for (const c of cells) await runCell(c); // warm-up
    for (let r = 0; r < rounds; r++) {
      const order = [...cells.slice(r % cells.length), ...cells.slice(0, r % cells.length)];
      for (const c of order) vals[c]!.push(await runCell(c));
    }
    const per = (a: string, b: string, m: 'wall' | 'cpu'): number[] => vals[a]!.map((x, i) => x[m] / vals[b]![i]![m]);
    const line = (label: string, r: number[]): string => `${label} ${median(r).toFixed(2)} [${r.map((x) => x.toFixed(2)).join(' ')}]`;
    process.stdout.write(`${wl === 'zones' ? `zones insert (${ZN} per zone x 2 zones)` : `mixed (${MN} prefilled, ${MP} packets, GC running)`}, ${rounds} rounds; medians, per-round ratios in brackets\n`);
    for (const k of ['base', 'new'] as const) {
      for (const m of ['wall', 'cpu'] as const) {
        process.stdout.write(`  ${k.padEnd(4)} ${m.padEnd(4)} 1w ${fmt(median(vals[`${k}@1`]!.map((x) => x[m])))}/s  2w ${fmt(median(vals[`${k}@2`]!.map((x) => x[m])))}/s  ` +
          `${line('2w/1w', per(`${k}@2`, `${k}@1`, m))}\n`);
      }
    }
    for (const m of ['wall', 'cpu'] as const) process.stdout.write(`  ${line(`ceiling ${m.padEnd(4)} 2w/1w`, per('ceil@2', 'ceil@1', m))}\n`);
    for (const w of [1, 2]) {
      for (const m of ['wall', 'cpu'] as const) process.stdout.write(`  ${line(`new/base ${w}w ${m.padEnd(4)}`, per(`new@${w}`, `base@${w}`, m))}\n`);
    }
  }
  for (const m of Object.values(mixed)) await m.gc.stop();
  pairs.base.close();
  pairs.new.close();
}

await main();
