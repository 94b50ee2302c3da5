/**
 * The multicore throughput bench (issue 4): `npm run bench [-- --quick] [--json] [--workers 1,2]`
 * or `conntrack-sab bench ...`.
 *
 * Workloads (shaped like Open vSwitch's `ovstest test-conntrack benchmark` / `benchmark-zones`),
 * each with 1 worker and every worker count up to os.availableParallelism(), warmed up, median of
 * `runs` runs (min and max shown), raw frames in shared memory through the whole packet path:
 *   hot    every worker sends one established UDP flow of its own, in batches of 32
 *   zones  N UDP connections in each of 2 zones: insert rate, lookup rate, flush of one zone
 *   mixed  Zipf traffic on a prefilled table (TCP handshakes and closes, UDP, ICMP), GC running,
 *          p99 batch latency
 *   flood  SYN flood into a full table holding ASSURED connections: rate, early drops, ASSURED lost
 * Baselines in the same run: a single-threaded Map tracker and the `sharedmap` package, with the
 * same protocol functions. A pure-lookup microbench and the experiments of bench/README.md.
 */
import { natBench, type NatRow } from './nat.js';
import { availableParallelism, cpus } from 'node:os';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Conntrack } from '../src/track/core.js';
import { CtOps } from '../src/ops/ops.js';
import { GcEngine, startGc } from '../src/table/gc.js';
import { ENTRY_WORDS, E_HASH, E_NEXT, E_STATUS, E_TIMEOUT, E_TUPLE, IPS_ASSURED, TUPLE_WORDS } from '../src/table/layout.js';
import { parseFrame } from '../src/input/packet/parse.js';
import { Packet } from '../src/input/packet/packet.js';
import { ConntrackTable, type Discipline } from '../src/table/table.js';
import { protoWord, tupleFromPacket } from '../src/track/tuple.js';
import { CT_INVALID, CT_NEW } from '../src/track/verdict.js';
import { runWith, type Job, type JobResult } from './engine.js';
import { FrameSet, IX_LEN, IX_OFF, IX_WORDS, LT_RAW } from './frames.js';
import { BenchPool } from './harness.js';
import { chartSvg } from './svg.js';
import {
  MapTracker, OursTracker, SharedMapTracker, ST_DROPPED, createSharedMapBaseline, sharedMapAvailable, sharedMapBytes,
  type SharedMapHandle, type Tracker,
} from './trackers.js';
import { TimingWheel } from './wheel.js';
import { formatRatios, ovsHot, ovsProblem, ovsZones, replayScaling, type ReplayScaling } from './ratios.js';
import {
  T0, ZONE_A, hotFrames, mixedFrames, prefillFlood, prefillMixed, synFlood, tcpConnFrames, zoneFrames,
} from './workloads.js';
import { median } from './stats.js';

export interface BenchOptions {
  quick: boolean;
  json: boolean;
  /** Worker counts to run (default 1 .. availableParallelism()). */
  workers: number[];
  /** Run every job on the main thread (profiling); worker counts above 1 are skipped. */
  inline: boolean;
  runs: number;
  /** Only these sections (hot, zones, mixed, flood, lookup, replay, exp, nat; live: NFQUEUE, root, only when named). */
  only: string[] | null;
  /** Write JSON and SVG here (default bench/results). */
  outDir: string;
  /** Progress lines on stderr. */
  log: (s: string) => void;
  /** Skip the Map and sharedmap baselines (profiling: only our packet code). */
  oursOnly: boolean;
  /** Open vSwitch's ovstest binary (`--ovs PATH`): its conntrack benchmarks run interleaved with ours. */
  ovs?: string | null;
}

export interface WorkloadResult {
  name: string;
  workers: number;
  rate: number;
  unit: string;
  min: number;
  max: number;
  tracker: 'ours' | 'map' | 'sharedmap' | 'ovs';
  note?: string;
  [k: string]: unknown;
}

export interface Experiment {
  name: string;
  question: string;
  a: string;
  b: string;
  rateA: number | null;
  rateB: number | null;
  /** rateA / rateB */
  ratio: number | null;
  unit: string;
  status: 'measured' | 'pending';
  note?: string;
}

export interface BenchReport {
  quick: boolean;
  machine: { cpus: number; model: string; node: string; availableParallelism: number };
  sizes: Record<string, number>;
  runs: number;
  workloads: WorkloadResult[];
  baselines: { map: Record<string, number>; sharedmap: Record<string, number> };
  ratios: { workload: string; workers: number; ours: number; vsMap: number | null; vsSharedmap: number | null }[];
  experiments: Experiment[];
  lookup: { entries: number; hashAndFind: number; findOnly: number; plainWalk: number; unit: string; nativeReference: number | null }[];
  /** A pure-compute loop (hashTuple on private data) with 1 and N threads: the machine's scaling ceiling. */
  scaling: { workers: number; rate: number }[];
  /** The same, measured again at the end of the run. */
  scalingEnd: { workers: number; rate: number }[];
  memory: { bytesPerConnection: number; tableBytesAt1M: number; sharedmapBytesPerConnection: number | null };
  flood: Record<string, unknown>[];
  /** The nat workload (bench/nat.ts): insert and lookup passes, allocation failures, p99. */
  nat?: NatRow[];
  seconds: number;
  sectionSeconds: Record<string, number>;
  /** The C peers and the replay scaling of the closing ratio table (bench/ratios.ts). */
  peers?: { ovs: string | null; replay: ReplayScaling | null };
}

// ---------------------------------------------------------------------------------------------

function pct(xs: Float64Array, p: number): number {
  const s = Float64Array.from(xs).sort();
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))]! : 0;
}
function summary(xs: number[]): { rate: number; min: number; max: number } {
  return { rate: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

interface Runner<T> {
  key: string;
  run: () => Promise<T>;
}

/** Min..max of both sides and the run-by-run ratios, for judging the noise of a ratio. */
function spread(xa: number[], xb: number[]): string {
  const rr = xa.map((x, i) => x / xb[i]!);
  return `A ${fmt(Math.min(...xa))}..${fmt(Math.max(...xa))}, B ${fmt(Math.min(...xb))}..${fmt(Math.max(...xb))}, per-run ratios ${rr.map((x) => x.toFixed(2)).join(' ')}`;
}

function split(from: number, to: number, parts: number, k: number): [number, number] {
  const n = to - from;
  return [from + Math.floor((n * k) / parts), from + Math.floor((n * (k + 1)) / parts)];
}

/** Feed frames through a tracker on this thread in 64k chunks (prefill; untimed). */
function feed(tr: Tracker, fs: FrameSet): number[] {
  return runWith(tr, { frames: fs.handle(), from: 0, to: fs.count, repeat: 1, batch: 256 }).states;
}

function prefill(tr: Parameters<typeof feed>[0], n: number, gen: (a: number, b: number) => FrameSet): void {
  const CH = 65536;
  for (let f = 0; f < n; f += CH) feed(tr, gen(f, Math.min(n, f + CH)));
}

function assuredCount(table: ConntrackTable): number {
  const ct = new Conntrack(table);
  let n = 0;
  ct.beginBatch();
  ct.chains.forEach((e) => { if (Atomics.load(table.i32, e + E_STATUS) & IPS_ASSURED) n++; });
  ct.endBatch();
  ct.close();
  return n;
}

/** Remove every connection of one zone through its entry list. */
export function flushZone(ct: Conntrack, zone: number): number {
  // CtOps walks the zone's own entry list: the cost follows what is removed, not the table.
  const ops = new CtOps(ct.table);
  try {
    return ops.flush({ zone });
  } finally {
    ops.close();
  }
}

// ---------------------------------------------------------------------------------------------

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  // The worker threads are stopped whatever happens, so a failed bench never keeps the process alive.
  const pool = new BenchPool(Math.max(...o.workers), o.inline);
  try {
    return await benchBody(o, pool);
  } finally {
    await pool.close();
  }
}

async function benchBody(o: BenchOptions, pool: BenchPool): Promise<BenchReport> {
  const started = performance.now();
  const q = o.quick;
  const R = o.runs;
  const maxW = Math.max(...o.workers);
  // The sharedmap baseline is a dev dependency: an installed package may not have it.
  const noSm = o.oursOnly || !sharedMapAvailable();
  if (!o.oursOnly && noSm) o.log('sharedmap baseline: the optional package "sharedmap" is not installed; its runs are skipped');
  const sectionSeconds: Record<string, number> = {};
  let sectionT = performance.now();
  const want = (s: string): boolean => {
    const now = performance.now();
    sectionSeconds[s] = 0;
    sectionT = now;
    return o.only === null || o.only.includes(s);
  };
  const endSection = (s: string): void => {
    sectionSeconds[s] = Math.round((performance.now() - sectionT) / 100) / 10;
  };
  const log = o.log;
  const sizes = {
    hotPackets: q ? 300_000 : 2_000_000,
    zonesPerZone: q ? 20_000 : 100_000,
    mixedConnections: q ? 100_000 : 1_000_000,
    mixedPackets: q ? 120_000 : 1_000_000,
    floodTable: q ? 100_000 : 1_000_000,
    floodPackets: q ? 50_000 : 500_000,
    lookupOps: q ? 300_000 : 3_000_000,
    sharedmapScale: 4, // sharedmap runs 1/4 of the packets (it is slower); rates stay comparable
  };
  const workloads: WorkloadResult[] = [];
  const experiments: Experiment[] = [];
  const floodInfo: Record<string, unknown>[] = [];
  const lookups: BenchReport['lookup'] = [];
  const add = (w: WorkloadResult): void => {
    workloads.push(w);
    log(`  ${w.tracker.padEnd(9)} ${w.name.padEnd(13)} ${String(w.workers).padStart(2)}w  ${fmt(w.rate)} ${w.unit}  [${fmt(w.min)} .. ${fmt(w.max)}]`);
  };
  /** Warm-up, then R runs of fn; returns the R values. */
  const measure = async (fn: (run: number) => Promise<number> | number): Promise<number[]> => {
    await fn(-1);
    const xs: number[] = [];
    for (let r = 0; r < R; r++) xs.push(await fn(r));
    return xs;
  };
  /** Side by side: warm-up each, then alternate A and B R times. */
  const sideBySide = async (a: () => Promise<number> | number, b: () => Promise<number> | number): Promise<[number, number, string]> => {
    await a(); await b();
    const xa: number[] = [], xb: number[] = [];
    for (let r = 0; r < R; r++) { xa.push(await a()); xb.push(await b()); }
    return [median(xa), median(xb), spread(xa, xb)];
  };
  /**
   * Warm each runner up once, then R rounds that run every runner once (starting each round one
   * further along), so a change in the machine's load hits every runner alike.
   */
  const interleave = async <T,>(runners: Runner<T>[]): Promise<Map<string, T[]>> => {
    for (const r of runners) await r.run();
    const out = new Map<string, T[]>(runners.map((r) => [r.key, []]));
    for (let round = 0; round < R; round++) {
      for (let k = 0; k < runners.length; k++) {
        const r = runners[(k + round) % runners.length]!;
        out.get(r.key)!.push(await r.run());
      }
    }
    return out;
  };
  const ourJob = (table: ConntrackTable, fs: FrameSet, from: number, to: number, repeat: number, batch = 32, latency = false): Job =>
    ({ kind: 'track', tracker: 'ours', table: table.buffer, frames: fs.handle(), from, to, repeat, batch, latency });
  const smJob = (sm: SharedMapHandle, owner: number, fs: FrameSet, from: number, to: number, repeat: number, batch = 32, latency = false): Job =>
    ({ kind: 'track', tracker: 'sharedmap', sm, owner, frames: fs.handle(), from, to, repeat, batch, latency });
  const W = o.workers;
  // Open vSwitch's benchmarks (--ovs): checked once; null when not given or not runnable.
  const ovsNote = ovsProblem(o.ovs ?? null);
  const ovsPath = ovsNote === null ? o.ovs ?? null : null;
  log(ovsNote === null ? `OVS: ${ovsPath} test-conntrack benchmarks run interleaved with ours` : `OVS: ${ovsNote}`);

  // -------------------------------------------------------------------------------- scaling ceiling
  const scaling: BenchReport['scaling'] = [];
  const scalingEnd: BenchReport['scaling'] = [];
  // (Not inline: the spin loop would show in the profile.)
  for (const w of o.inline ? [] : W) {
    const xs = await measure(async () => (await pool.run(Array.from({ length: w }, () => ({ kind: 'spin', ops: q ? 2_000_000 : 5_000_000 } as Job)))).rate);
    scaling.push({ workers: w, rate: median(xs) });
    log(`scaling ceiling (pure compute, no shared memory): ${w}w ${fmt(median(xs))} hashes/s`);
  }

  // -------------------------------------------------------------------------------- hot
  const hf = hotFrames(Math.max(maxW, 2));
  const hotSetup = (disc: Discipline, shared: boolean, w: number): { run: () => Promise<number>; close: () => void } => {
    const table = ConntrackTable.create({ max: 65536, discipline: disc });
    table.clock = T0;
    const m = new OursTracker(table);
    for (let k = 0; k < Math.max(maxW, 2); k++) feedRange(m, hf.fs, ...hf.establish(k));
    const repeat = Math.ceil(sizes.hotPackets / w / 32);
    return {
      run: async () => (await pool.run(Array.from({ length: w }, (_, k) => ourJob(table, hf.fs, ...hf.burst(shared ? 0 : k), repeat)))).rate,
      close: () => m.close(),
    };
  };
  const hotOurs = async (disc: Discipline, shared: boolean, w: number): Promise<number[]> => {
    const h = hotSetup(disc, shared, w);
    const xs = await measure(h.run);
    h.close();
    return xs;
  };
  if (want('hot')) {
    log('hot: one established UDP flow per worker, batches of 32 (ours, Map and sharedmap runs interleaved)');
    const runners: Runner<number>[] = [];
    const closers: (() => void)[] = [];
    for (const w of W) {
      const h = hotSetup('noref', false, w);
      closers.push(h.close);
      runners.push({ key: `ours@${w}`, run: h.run });
    }
    const mt = new MapTracker(65536);
    feedRange(mt, hf.fs, ...hf.establish(0));
    const [hb0, hb1] = hf.burst(0);
    if (!o.oursOnly) runners.push({ key: 'map@1', run: async () => {
      const r = runWith(mt, { frames: hf.fs.handle(), from: hb0, to: hb1, repeat: Math.ceil(sizes.hotPackets / 32), batch: 32 });
      return r.packets / (r.ms / 1000);
    } });
    const sm = noSm ? null : createSharedMapBaseline(65536);
    if (sm) {
      const smMain = new SharedMapTracker(sm, 200);
      for (let k = 0; k < Math.max(maxW, 2); k++) feedRange(smMain, hf.fs, ...hf.establish(k));
    }
    for (const w of sm === null ? [] : W) {
      const repeat = Math.ceil(sizes.hotPackets / sizes.sharedmapScale / w / 32);
      runners.push({ key: `sharedmap@${w}`, run: async () => (await pool.run(
        Array.from({ length: w }, (_, k) => smJob(sm!, k, hf.fs, ...hf.burst(k), repeat)))).rate });
    }
    // OVS's benchmark: one UDP flow per thread, 32 per batch, `hotPackets` in all.
    for (const w of ovsPath === null ? [] : W) runners.push({ key: `ovs@${w}`, run: async () => ovsHot(ovsPath!, w, Math.ceil(sizes.hotPackets / w), 32) });
    const res = await interleave(runners);
    for (const c of closers) c();
    for (const [key, xs] of res) {
      const [tracker, w] = key.split('@') as [WorkloadResult['tracker'], string];
      add({ name: 'hot', workers: Number(w), unit: 'pkt/s', tracker, ...summary(xs) });
    }
  }
  endSection('hot');

  // -------------------------------------------------------------------------------- zones
  const N = sizes.zonesPerZone;
  const zf = zoneFrames(N);
  const zonesSetup = (disc: Discipline, w: number): { run: () => Promise<{ ins: number; look: number; flush: number }>; close: () => void } => {
    const table = ConntrackTable.create({ max: Math.ceil(2 * N * 1.05), discipline: disc });
    table.clock = T0;
    const main = new Conntrack(table);
    const jobs = (): Job[] => Array.from({ length: w }, (_, k) => ourJob(table, zf, ...split(0, zf.count, w, k), 1));
    return {
      run: async () => {
        const a = await pool.run(jobs());
        const b = await pool.run(jobs());
        const t0 = performance.now();
        const n = flushZone(main, ZONE_A);
        const fl = performance.now() - t0;
        if (n !== N) throw new Error(`zone flush removed ${n} of ${N}`);
        main.flush();
        return { ins: a.rate, look: b.rate, flush: fl };
      },
      close: () => main.close(),
    };
  };
  const zonesOurs = async (disc: Discipline, w: number): Promise<{ ins: number[]; look: number[]; flush: number[] }> => {
    const z = zonesSetup(disc, w);
    const ins: number[] = [], look: number[] = [], flush: number[] = [];
    await measure(async (r) => {
      const x = await z.run();
      if (r >= 0) { ins.push(x.ins); look.push(x.look); flush.push(x.flush); }
      return x.ins;
    });
    z.close();
    return { ins, look, flush };
  };
  if (want('zones')) {
    log(`zones: ${N} UDP connections in each of 2 zones (ours, Map and sharedmap runs interleaved)`);
    type Z = { ins: number; look: number; flush: number };
    const runners: Runner<Z>[] = [];
    const closers: (() => void)[] = [];
    for (const w of W) {
      const z = zonesSetup('noref', w);
      closers.push(z.close);
      runners.push({ key: `ours@${w}`, run: z.run });
    }
    if (!o.oursOnly) runners.push({ key: 'map@1', run: async () => {
      const mt = new MapTracker(Math.ceil(2 * N * 1.05));
      const a = runWith(mt, { frames: zf.handle(), from: 0, to: zf.count, repeat: 1, batch: 32 });
      const b = runWith(mt, { frames: zf.handle(), from: 0, to: zf.count, repeat: 1, batch: 32 });
      const t0 = performance.now();
      mt.flushZone(ZONE_A);
      return { ins: a.packets / (a.ms / 1000), look: b.packets / (b.ms / 1000), flush: performance.now() - t0 };
    } });
    for (const w of noSm ? [] : W) {
      runners.push({ key: `sharedmap@${w}`, run: async () => {
        const sm = createSharedMapBaseline(Math.ceil(2 * N * 1.05));
        const jobs = (): Job[] => Array.from({ length: w }, (_, k) => smJob(sm, k, zf, ...split(0, zf.count, w, k), 1));
        const a = await pool.run(jobs());
        const b = await pool.run(jobs());
        let fl = NaN;
        if (w === 1) {
          const t0 = performance.now();
          new SharedMapTracker(sm, 200).flushZone(ZONE_A);
          fl = performance.now() - t0;
        }
        return { ins: a.rate, look: b.rate, flush: fl };
      } });
    }
    // OVS's benchmark-zones: N connections in zones 0 and 1; one iteration flushes zone 1, refills it, looks it up.
    if (ovsPath !== null) runners.push({ key: 'ovs@1', run: async () => ovsZones(ovsPath!, N, 1) });
    const res = await interleave(runners);
    for (const c of closers) c();
    for (const [key, xs] of res) {
      const [tracker, ws] = key.split('@') as [WorkloadResult['tracker'], string];
      const w = Number(ws);
      add({ name: 'zones-insert', workers: w, unit: 'conn/s', tracker, ...summary(xs.map((x) => x.ins)) });
      add({ name: 'zones-lookup', workers: w, unit: 'pkt/s', tracker, ...summary(xs.map((x) => x.look)) });
      if (w === 1) {
        add({ name: 'zones-flush', workers: 1, unit: 'ms', tracker, ...summary(xs.map((x) => x.flush)),
          ...(tracker === 'ours' ? { note: `one zone of ${N} connections, CtOps.flush({ zone }) over the zone's list` } : {}) });
      }
    }
  }
  endSection('zones');

  // -------------------------------------------------------------------------------- mixed
  const MN = sizes.mixedConnections;
  const MP = sizes.mixedPackets;
  let mixedNoGcP99: number | null = null;
  let mixedGcP99: number | null = null;
  // Each pass over a worker count's frames opens ~0.11 new connections per packet (TCP
  // handshakes, UDP, ICMP; later passes reuse their tuples): room for them, so nothing is dropped.
  const mixedMax = MN + Math.ceil(0.15 * MP * (W.length + 1));
  const mixedNote = q ? `quick: ${MN} prefilled connections (the full bench uses 1,000,000), nf_conntrack_max ${mixedMax}` : `${MN} prefilled connections, nf_conntrack_max ${mixedMax}`;
  const latOf = (rs: JobResult[]): Float64Array => {
    const all = rs.map((r) => r.lat!).filter((x) => x);
    const n = all.reduce((a, x) => a + x.length, 0);
    const out = new Float64Array(n);
    let o2 = 0;
    for (const x of all) { out.set(x, o2); o2 += x.length; }
    return out;
  };
  if (want('mixed')) {
    log(`mixed: ${mixedNote}, ${MP} packets per run, Zipf flows, GC worker running`);
    const table = ConntrackTable.create({ max: mixedMax });
    table.clock = T0;
    const m = new OursTracker(table);
    prefill(m, MN, prefillMixed);
    m.close();
    log(`  prefilled ${table.stats().total['insert']} connections`);
    type M = { rate: number; p99: number; invalid: number };
    const framesOf = new Map<number, ReturnType<typeof mixedFrames>>();
    for (const w of W) framesOf.set(w, mixedFrames(MN, w, MP, 11 + w));
    // The GC worker runs for 'ours' runs; 'ours-nogc' (experiment iv) and the baselines run
    // without it (the baselines expire entries on lookup only).
    let gc: ReturnType<typeof startGc> | null = null;
    const gcOn = async (on: boolean): Promise<void> => {
      if (on && !gc) { gc = startGc(table, {}); await gc.ready; }
      if (!on && gc) { await gc.stop(); gc = null; }
    };
    const oursRun = (w: number, withGc: boolean) => async (): Promise<M> => {
      await gcOn(withGc);
      const frames = framesOf.get(w)!;
      const res = await pool.run(Array.from({ length: w }, (_, k) => ourJob(table, frames.fs, ...frames.range(k), 1, 32, true)));
      return { rate: res.rate, p99: pct(latOf(res.results), 0.99), invalid: res.results.reduce((a, x) => a + x.states[CT_INVALID]!, 0) };
    };
    const runners: Runner<M>[] = W.map((w) => ({ key: `ours@${w}`, run: oursRun(w, true) }));
    runners.push({ key: 'ours-nogc@1', run: oursRun(1, false) });
    const res = await interleave(runners);
    await gcOn(false);
    for (const [key, xs] of res) {
      const [name, ws] = key.split('@') as [string, string];
      const p = median(xs.map((x) => x.p99));
      if (name === 'ours-nogc') { mixedNoGcP99 = p; continue; }
      if (ws === '1') mixedGcP99 = p;
      add({ name: 'mixed', workers: Number(ws), unit: 'pkt/s', tracker: 'ours', ...summary(xs.map((x) => x.rate)), p99BatchUs: Math.round(p), batch: 32,
        invalidPerRun: Math.round(xs.reduce((a, x) => a + x.invalid, 0) / xs.length), note: mixedNote });
    }
    // Baselines, interleaved with each other (no GC thread running).
    if (!o.oursOnly) {
    const mt = new MapTracker(mixedMax);
    prefill(mt, MN, prefillMixed);
    const sm = noSm ? null : createSharedMapBaseline(mixedMax);
    if (sm) prefill(new SharedMapTracker(sm, 200), MN, prefillMixed);
    const base: Runner<M>[] = [{ key: 'map@1', run: async () => {
      const f1 = framesOf.get(1) ?? mixedFrames(MN, 1, MP, 12);
      framesOf.set(1, f1);
      const r = runWith(mt, { frames: f1.fs.handle(), from: 0, to: f1.fs.count, repeat: 1, batch: 32, latency: true });
      return { rate: r.packets / (r.ms / 1000), p99: pct(r.lat!, 0.99), invalid: r.states[CT_INVALID]! };
    } }];
    for (const w of sm === null ? [] : W) {
      base.push({ key: `sharedmap@${w}`, run: async () => {
        const frames = framesOf.get(w)!;
        const r = await pool.run(Array.from({ length: w }, (_, k) => {
          const [a, b] = frames.range(k);
          return smJob(sm!, k, frames.fs, a, a + Math.floor((b - a) / sizes.sharedmapScale), 1, 32, true);
        }));
        return { rate: r.rate, p99: pct(latOf(r.results), 0.99), invalid: r.results.reduce((a, x) => a + x.states[CT_INVALID]!, 0) };
      } });
    }
    for (const [key, xs] of await interleave(base)) {
      const [tracker, ws] = key.split('@') as [WorkloadResult['tracker'], string];
      add({ name: 'mixed', workers: Number(ws), unit: 'pkt/s', tracker, ...summary(xs.map((x) => x.rate)), p99BatchUs: Math.round(median(xs.map((x) => x.p99))),
        note: `${mixedNote}; expiry on lookup, no GC thread` });
    }
    }
  }

  endSection('mixed');

  // -------------------------------------------------------------------------------- flood
  const FN = sizes.floodTable;
  const FP = sizes.floodPackets;
  let floodSrc = 0;
  if (want('flood')) {
    log(`flood: SYN flood into a full table of ${FN} (half ASSURED TCP, half SYN_SENT; ours, Map and sharedmap runs interleaved)`);
    const table = ConntrackTable.create({ max: FN });
    table.clock = T0 + 1000;
    const m = new OursTracker(table);
    prefill(m, FN, prefillFlood);
    m.close();
    const before = assuredCount(table);
    const mt = new MapTracker(FN);
    prefill(mt, FN, prefillFlood);
    const mapBefore = mt.countAssured();
    const sm = noSm ? null : createSharedMapBaseline(FN);
    const smMain = sm ? new SharedMapTracker(sm, 200) : null;
    if (smMain) prefill(smMain, FN, prefillFlood);
    const smBefore = smMain ? smMain.countAssured() : 0;
    type F = { rate: number; packets: number; early: number; drops: number };
    const runners: Runner<F>[] = [];
    for (const w of W) {
      runners.push({ key: `ours@${w}`, run: async () => {
        const fs = synFlood(floodSrc, FP);
        floodSrc += FP;
        const s0 = table.stats().total;
        const r = await pool.run(Array.from({ length: w }, (_, k) => ourJob(table, fs, ...split(0, fs.count, w, k), 1)));
        const s1 = table.stats().total;
        return { rate: r.rate, packets: r.packets, early: s1['early_drop']! - s0['early_drop']!, drops: s1['drop']! - s0['drop']! };
      } });
    }
    runners.push({ key: 'map@1', run: async () => {
      const fs = synFlood(floodSrc, FP);
      floodSrc += FP;
      const r = runWith(mt, { frames: fs.handle(), from: 0, to: fs.count, repeat: 1, batch: 32 });
      return { rate: r.packets / (r.ms / 1000), packets: r.packets, early: r.states[CT_NEW]!, drops: r.states[ST_DROPPED]! };
    } });
    for (const w of sm === null ? [] : W) {
      runners.push({ key: `sharedmap@${w}`, run: async () => {
        const fs = synFlood(floodSrc, Math.floor(FP / sizes.sharedmapScale));
        floodSrc += FP;
        const r = await pool.run(Array.from({ length: w }, (_, k) => smJob(sm!, k, fs, ...split(0, fs.count, w, k), 1)));
        let early = 0, drops = 0;
        for (const x of r.results) { drops += x.states[ST_DROPPED]!; early += x.states[CT_NEW]!; }
        return { rate: r.rate, packets: r.packets, early, drops };
      } });
    }
    const res = await interleave(runners);
    const lost = { ours: before - assuredCount(table), map: mapBefore - mt.countAssured(), sharedmap: smMain ? smBefore - smMain.countAssured() : 0 };
    for (const [key, xs] of res) {
      const [tracker, ws] = key.split('@') as [WorkloadResult['tracker'], string];
      const sum = (k: keyof F): number => xs.reduce((a, x) => a + x[k], 0);
      const info = { tracker, workers: Number(ws), packets: sum('packets'), earlyDrops: sum('early'), drops: sum('drops'), assuredLost: lost[tracker as keyof typeof lost],
        note: tracker === 'ours' ? 'early drops from the table statistics' : 'baseline: every insert into the full table evicted one entry (counted as an early drop)' };
      floodInfo.push(info);
      add({ name: 'flood', workers: Number(ws), unit: 'pkt/s', tracker, ...summary(xs.map((x) => x.rate)), earlyDrops: info.earlyDrops, drops: info.drops, assuredLost: info.assuredLost });
    }
    log(`  ASSURED connections lost over all runs: ours ${lost.ours} (of ${before}), Map ${lost.map}, sharedmap ${lost.sharedmap}`);
  }
  endSection('flood');

  // -------------------------------------------------------------------------------- lookup microbench
  if (want('lookup')) {
    for (const n of q ? [100_000] : [100_000, 1_000_000]) {
      log(`lookup: Chains.find on a table of ${n} entries`);
      lookups.push(lookupBench(n, sizes.lookupOps, R));
      const l = lookups[lookups.length - 1]!;
      log(`  hash+find ${fmt(l.hashAndFind)}/s, find only ${fmt(l.findOnly)}/s, plain JS walk ${fmt(l.plainWalk)}/s (native C loop ${l.nativeReference === null ? 'not measured: no cc' : `${fmt(l.nativeReference)}/s, measured`})`);
    }
  }

  endSection('lookup');

  // -------------------------------------------------------------------------------- replay scaling
  let replay: ReplayScaling | null = null;
  if (want('replay') && !o.inline) {
    const bytes = q ? 150 << 20 : 1 << 30;
    log(`replay: a ${bytes >> 20} MiB synthetic capture, --workers 1 and --workers 2 alternately (child processes, wall time)`);
    replay = await replayScaling(bytes, q ? 3 : R, log);
    if (replay) log(`  ${replay.packets} packets: 1w ${replay.w1.toFixed(2)} s, 2w ${replay.w2.toFixed(2)} s, 2w/1w ${replay.ratio.toFixed(2)} (per round ${replay.rounds.map((x) => x.toFixed(2)).join(' ')})`);
  }
  endSection('replay');

  // -------------------------------------------------------------------------------- experiments
  if (want('exp')) {
    log('experiment (i): refcount vs noref (side by side: both tables exist, runs alternate)');
    for (const w of [1, 2].filter((x) => W.includes(x) || (x === 2 && maxW >= 2))) {
      if (w > maxW) continue;
      // Side by side: both tables exist at once and the runs alternate.
      const ha = hotSetup('noref', true, w), hb = hotSetup('refcount', true, w);
      const [a, b, sp] = await sideBySide(ha.run, hb.run);
      ha.close(); hb.close();
      experiments.push({ name: `i-hot-shared-${w}w`, question: 'i', a: 'noref (grace periods)', b: 'refcount', rateA: a, rateB: b, ratio: a / b, unit: 'pkt/s', status: 'measured', note: `hot, one flow shared by all workers; ${sp}` });
      const za = zonesSetup('noref', w), zb = zonesSetup('refcount', w);
      const xa: { ins: number; look: number }[] = [], xb: { ins: number; look: number }[] = [];
      await za.run(); await zb.run();
      for (let r = 0; r < R; r++) { xa.push(await za.run()); xb.push(await zb.run()); }
      za.close(); zb.close();
      const mi = (xs: { ins: number; look: number }[], k: 'ins' | 'look'): number => median(xs.map((x) => x[k]));
      const sp2 = (k: 'ins' | 'look'): string => spread(xa.map((x) => x[k]), xb.map((x) => x[k]));
      experiments.push({ name: `i-zones-insert-${w}w`, question: 'i', a: 'noref', b: 'refcount', rateA: mi(xa, 'ins'), rateB: mi(xb, 'ins'), ratio: mi(xa, 'ins') / mi(xb, 'ins'), unit: 'conn/s', status: 'measured', note: sp2('ins') });
      experiments.push({ name: `i-zones-lookup-${w}w`, question: 'i', a: 'noref', b: 'refcount', rateA: mi(xa, 'look'), rateB: mi(xb, 'look'), ratio: mi(xa, 'look') / mi(xb, 'look'), unit: 'pkt/s', status: 'measured', note: sp2('look') });
      for (const e of experiments.slice(-3)) log(`  ${e.name}: ${fmt(e.rateA!)} vs ${fmt(e.rateB!)} = ${e.ratio!.toFixed(2)} (${e.note})`);
    }

    log('experiment (ii): TCP state lock: bucket stripe vs a lock word in the entry');
    const K = q ? 2048 : 8192;
    for (const w of [1, 2]) {
      if (w > maxW) continue;
      const tc = tcpConnFrames(w, K);
      const table = ConntrackTable.create({ max: 65536 });
      table.clock = T0;
      const m = new OursTracker(table);
      feed(m, tc.prefill);
      m.close();
      const repeat = Math.max(1, Math.round((q ? 150_000 : 1_500_000) / w / (2 * K)));
      const job = (variant: 'bucket' | 'entry') => async (): Promise<number> => (await pool.run(Array.from({ length: w }, (_, k) =>
        ({ kind: 'tcplock', variant, table: table.buffer, frames: tc.acks.handle(), from: tc.range(k)[0], to: tc.range(k)[1], repeat, batch: 32 } as Job)))).rate;
      const [a, b, sp] = await sideBySide(job('entry'), job('bucket'));
      experiments.push({ name: `ii-tcp-lock-${w}w`, question: 'ii', a: 'lock word in the entry', b: 'bucket lock stripe (core.ts today)', rateA: a, rateB: b, ratio: a / b, unit: 'pkt/s', status: 'measured', note: `${K} established TCP connections per worker, ACKs both ways; find + lock + tcpPacket + unlock + refresh; ${sp}` });
      log(`  ${experiments[experiments.length - 1]!.name}: ${fmt(a)} vs ${fmt(b)} = ${(a / b).toFixed(2)} (${sp})`);
    }

    // (iii) NAT placement is measured by the nat section (bench/nat.ts).
    if (o.only !== null && !o.only.includes('nat')) {
      experiments.push({ name: 'iii-nat-placement', question: 'iii', a: 'NAT data inside the entry', b: 'NAT data in an extension area', rateA: null, rateB: null, ratio: null, unit: 'pkt/s', status: 'pending', note: 'measured by the nat section (--only nat)' });
    }

    log('experiment (iv): GC worker walk vs a timer per connection (timing wheel)');
    const iv = gcVsWheel(q ? 50_000 : 1_000_000, R);
    experiments.push(...iv);
    if (mixedGcP99 !== null && mixedNoGcP99 !== null) {
      experiments.push({ name: 'iv-mixed-p99-gc-on-vs-off', question: 'iv', a: 'mixed 1 worker, GC worker running', b: 'mixed 1 worker, no GC', rateA: mixedGcP99, rateB: mixedNoGcP99, ratio: mixedGcP99 / mixedNoGcP99, unit: 'µs p99 per 32-packet batch', status: 'measured' });
    }
    for (const e of iv) log(`  ${e.name}: ${fmt(e.rateA!)} vs ${fmt(e.rateB!)} ${e.unit} = ${e.ratio!.toFixed(2)}`);
  }

  endSection('exp');

  // -------------------------------------------------------------------------------- nat
  let natRows: NatRow[] = [];
  if (want('nat') && !o.inline) {
    log('nat: SNAT behind one address up to exhaustion, DNAT to 16 backends; placement experiment (iii)');
    const nb = await natBench(pool, W, q, R, log);
    natRows = nb.rows;
    for (const traffic of ['snat', 'null-binding'] as const) {
      const a = nb.placement.find((x) => x.traffic === traffic && x.placement === 'inline')!;
      const b = nb.placement.find((x) => x.traffic === traffic && x.placement === 'extension')!;
      const base = { question: 'iii', a: 'NAT state inline (bysource link in E_LINK)', b: 'NAT data in an extension block', status: 'measured' as const };
      experiments.push({ ...base, name: `iii-nat-placement-memory-${traffic}`, rateA: a.bytesPerConnection, rateB: b.bytesPerConnection, ratio: a.bytesPerConnection / b.bytesPerConnection, unit: 'bytes per connection (lower is better)' });
      experiments.push({ ...base, name: `iii-nat-placement-insert-${traffic}`, rateA: a.insertRate, rateB: b.insertRate, ratio: a.insertRate / b.insertRate, unit: 'conn/s' });
      experiments.push({ ...base, name: `iii-nat-placement-lookup-${traffic}`, rateA: a.lookupRate, rateB: b.lookupRate, ratio: a.lookupRate / b.lookupRate, unit: 'pkt/s' });
    }
  }
  endSection('nat');
  // The ceiling again at the end: the machine is shared, its spare capacity changes.
  for (const w of o.inline ? [] : W) {
    const xs = await measure(async () => (await pool.run(Array.from({ length: w }, () => ({ kind: 'spin', ops: q ? 2_000_000 : 5_000_000 } as Job)))).rate);
    scalingEnd.push({ workers: w, rate: median(xs) });
  }

  // -------------------------------------------------------------------------------- report
  const baselines: BenchReport['baselines'] = { map: {}, sharedmap: {} };
  for (const w of workloads) {
    if (w.tracker === 'map') baselines.map[w.name] = w.rate;
    if (w.tracker === 'sharedmap') baselines.sharedmap[`${w.name}@${w.workers}`] = w.rate;
  }
  const ratios: BenchReport['ratios'] = [];
  for (const w of workloads.filter((x) => x.tracker === 'ours')) {
    const lower = w.unit === 'ms'; // smaller is better: ratio = baseline / ours
    const r = (base: number | undefined): number | null => base === undefined || !Number.isFinite(base) ? null : lower ? base / w.rate : w.rate / base;
    ratios.push({
      workload: w.name, workers: w.workers, ours: w.rate,
      vsMap: r(baselines.map[w.name]),
      vsSharedmap: r(baselines.sharedmap[`${w.name}@${w.workers}`] ?? baselines.sharedmap[`${w.name}@1`]),
    });
  }
  const t1m = ConntrackTable.create({ max: 1_000_000 }); // (shows in profiles as table.js create)
  const smProbe = !noSm && (o.only === null || o.only.includes('zones')) ? createSharedMapBaseline(100_000) : null;
  const report: BenchReport = {
    quick: q,
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? '?', node: process.version, availableParallelism: availableParallelism() },
    sizes,
    runs: R,
    workloads,
    baselines,
    ratios,
    experiments,
    lookup: lookups,
    scaling,
    scalingEnd,
    memory: {
      bytesPerConnection: Math.round(t1m.bytesPerConnection() * 10) / 10,
      tableBytesAt1M: t1m.byteLength,
      sharedmapBytesPerConnection: smProbe ? Math.round(sharedMapBytes(smProbe) / 100_000) : null,
    },
    flood: floodInfo,
    nat: natRows,
    seconds: Math.round((performance.now() - started) / 100) / 10,
    sectionSeconds,
    peers: { ovs: ovsNote, replay },
  };
  return report;
}

function feedRange(tr: Parameters<typeof feed>[0], fs: FrameSet, from: number, to: number): void {
  runWith(tr, { frames: fs.handle(), from, to, repeat: 1, batch: 32 });
}

// ---------------------------------------------------------------------------------------------
// Pure lookups: hash + Chains.find on a populated table.

let nativeBinary: string | null | undefined;
/**
 * The same lookup loop in C (bench/native/lookup.c, built with `cc -O2` on first use): lookups
 * per second on a table of n entries, measured here; null when there is no C compiler.
 */
function nativeLookupRate(n: number, runs: number): number | null {
  if (nativeBinary === undefined) {
    nativeBinary = null;
    const src = fileURLToPath(new URL('../../bench/native/lookup.c', import.meta.url));
    if (existsSync(src) && spawnSync('cc', ['--version']).status === 0) {
      const bin = join(mkdtempSync(join(tmpdir(), 'ctsab-bench-')), 'lookup');
      if (spawnSync('cc', ['-O2', '-o', bin, src]).status === 0) nativeBinary = bin;
    }
  }
  if (nativeBinary === null) return null;
  const r = spawnSync(nativeBinary, [String(n), String(Math.max(3, Math.min(runs, 9)))], { encoding: 'utf8' });
  const rate = Number(r.stdout.trim());
  return r.status === 0 && rate > 0 ? rate : null;
}

function lookupBench(n: number, ops: number, runs: number): BenchReport['lookup'][number] {
  const table = ConntrackTable.create({ max: n });
  table.clock = T0;
  const ct = new Conntrack(table);
  const tr = { begin: () => ct.beginBatch(), end: () => ct.endBatch(), frame: (lt: number, b: Uint8Array, off: number, len: number, now: number, zone: number) => ct.frame(lt, b, off, len, now, zone).state, close: () => {} };
  const keys = new Int32Array(n * TUPLE_WORDS);
  const pkt = new Packet();
  let proto = 0;
  for (let f = 0; f < n; f += 65536) {
    const m = Math.min(n, f + 65536);
    const fs = new FrameSet(m - f);
    fs.now = T0;
    for (let i = f; i < m; i++) fs.udp((0x0d000000 + i) >>> 0, 0xc0a80101, 1024 + (i % 60000), 53);
    feed(tr, fs);
    const ix = fs.ix;
    for (let i = f; i < m; i++) {
      const x = (i - f) * IX_WORDS;
      parseFrame(LT_RAW, fs.bytes, ix[x + IX_OFF]!, ix[x + IX_LEN]!, pkt);
      tupleFromPacket(pkt, keys, i * TUPLE_WORDS);
      proto = protoWord(pkt.family, pkt.l4proto);
    }
  }
  // Random order (a permutation), so the walk misses the cache as real traffic does.
  const order = new Int32Array(ops);
  let x = 12345;
  for (let i = 0; i < ops; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; order[i] = (x >>> 0) % n; }
  const c = ct.chains;
  const hashes = new Int32Array(n);
  for (let i = 0; i < n; i++) hashes[i] = c.hash(keys, i * TUPLE_WORDS, proto, 0, 0) | 0;
  const now = T0 + 1;
  const once = (withHash: boolean): number => {
    let found = 0;
    ct.beginBatch();
    const t0 = performance.now();
    for (let i = 0; i < ops; i++) {
      const k = order[i]!;
      const h = withHash ? c.hash(keys, k * TUPLE_WORDS, proto, 0, 0) : hashes[k]! >>> 0;
      if (c.find(keys, k * TUPLE_WORDS, proto, 0, 0, h, now) >= 0) found++;
    }
    const ms = performance.now() - t0;
    ct.endBatch();
    if (found !== ops) throw new Error(`lookup bench: found ${found} of ${ops}`);
    return ops / (ms / 1000);
  };
  // The same walk written plainly (no Atomics, no expiry or status checks): what JS itself
  // costs on this memory, to tell Chains.find's own overhead from the memory's.
  const i32 = table.i32, B = c.B, E = c.E, mask = c.mask;
  const walk = (t: Int32Array, off: number, h: number): number => {
    let ref = i32[B + (h & mask)]!;
    while (ref >= 0) {
      const e = E + (ref >>> 1) * ENTRY_WORDS;
      const dir = ref & 1;
      if (i32[e + E_HASH + dir] === (h | 0)) {
        const to = e + E_TUPLE + dir * TUPLE_WORDS;
        let ok = true;
        for (let k = 0; k < TUPLE_WORDS; k++) if (i32[to + k] !== t[off + k]) { ok = false; break; }
        if (ok) return ref;
      }
      ref = i32[e + E_NEXT + dir]!;
    }
    return -1;
  };
  const plain = (): number => {
    let found = 0;
    const t0 = performance.now();
    for (let i = 0; i < ops; i++) {
      const k = order[i]!;
      if (walk(keys, k * TUPLE_WORDS, hashes[k]! >>> 0) >= 0) found++;
    }
    const ms = performance.now() - t0;
    if (found !== ops) throw new Error(`lookup bench (plain walk): found ${found} of ${ops}`);
    return ops / (ms / 1000);
  };
  once(true); once(false); plain();
  const a: number[] = [], b: number[] = [], p: number[] = [];
  for (let r = 0; r < runs; r++) { a.push(once(true)); b.push(once(false)); p.push(plain()); }
  ct.close();
  return { entries: n, hashAndFind: median(a), findOnly: median(b), plainWalk: median(p), unit: 'lookups/s per thread', nativeReference: nativeLookupRate(n, runs) };
}

// ---------------------------------------------------------------------------------------------
// Experiment (iv): GC walk vs timing wheel.

function gcVsWheel(n: number, runs: number): Experiment[] {
  const build = (): { table: ConntrackTable; ct: Conntrack; slots: Int32Array } => {
    const table = ConntrackTable.create({ max: n });
    table.clock = T0;
    const ct = new Conntrack(table);
    const slots = new Int32Array(n);
    let k = 0;
    for (let f = 0; f < n; f += 65536) {
      const m = Math.min(n, f + 65536);
      const fs = new FrameSet(m - f);
      for (let i = f; i < m; i++) {
        fs.now = T0 + Math.floor((i * 1000) / n); // created over one second: deadlines spread over 1000 ticks
        fs.udp((0x0e000000 + i) >>> 0, 0xc0a80201, 1024 + (i % 60000), 53);
      }
      ct.beginBatch();
      for (let i = 0; i < fs.count; i++) {
        const x = i * IX_WORDS;
        slots[k++] = ct.frame(LT_RAW, fs.bytes, fs.ix[x]!, fs.ix[x + 1]!, fs.ix[x + 2]!, 0).slot;
      }
      ct.endBatch();
    }
    return { table, ct, slots };
  };
  const gcRun = (): { perEntryNs: number; expired: number; idlePerEntryNs: number } => {
    const { table, ct } = build();
    const gc = new GcEngine(table, { budgetMs: 60000 });
    table.clock = T0 + 10_000; // nothing expired yet: the cost of a sweep that finds nothing
    let t0 = performance.now();
    gc.run();
    const idle = performance.now() - t0;
    table.clock = T0 + 31_000 + 1000; // every UDP entry (30 s) has expired
    t0 = performance.now();
    let expired = 0;
    for (;;) { const r = gc.run(); expired += r.expired; if (r.sweepDone) break; }
    const ms = performance.now() - t0;
    gc.close();
    ct.close();
    return { perEntryNs: (ms * 1e6) / Math.max(1, expired), expired, idlePerEntryNs: (idle * 1e6) / n };
  };
  // The GC as it runs for real: default slice budget, every entry expired; the longest slice.
  const sliceRun = (): { maxSliceMs: number; slices: number } => {
    const { table, ct } = build();
    const gc = new GcEngine(table);
    table.clock = T0 + 31_000 + 1000;
    let maxSliceMs = 0;
    let slices = 0;
    for (;;) {
      const t0 = performance.now();
      const r = gc.run();
      maxSliceMs = Math.max(maxSliceMs, performance.now() - t0);
      slices++;
      if (r.sweepDone) break;
    }
    gc.close();
    ct.close();
    return { maxSliceMs, slices };
  };
  const wheelRun = (): { perEntryNs: number; expired: number; armNs: number; maxTickMs: number } => {
    const { table, ct, slots } = build();
    const c = ct.chains;
    const i32 = table.i32;
    const wheel = new TimingWheel(table.capacity, 1, 1 << 16, T0);
    for (let i = 0; i < n; i++) wheel.arm(slots[i]!, i32[c.entry(slots[i]!) + E_TIMEOUT]!);
    // Re-arm cost, as every packet pays it (mod_timer): n re-arms in random order.
    let x = 99;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      const s = slots[(x >>> 0) % n]!;
      wheel.arm(s, i32[c.entry(s) + E_TIMEOUT]!); // same deadline: the list work only
    }
    const armNs = ((performance.now() - t0) * 1e6) / n;
    const stats = { maxTickMs: 0 };
    ct.beginBatch();
    const t1 = performance.now();
    const expired = wheel.advance(T0 + 32_000, (s) => { c.kill(s, 1); }, stats);
    const ms = performance.now() - t1;
    ct.endBatch();
    ct.close();
    return { perEntryNs: (ms * 1e6) / Math.max(1, expired), expired, armNs, maxTickMs: stats.maxTickMs };
  };
  // Refresh as the GC design does it: one Atomics.store of the deadline.
  const storeNs = (): number => {
    const i32 = new Int32Array(new SharedArrayBuffer(n * 4 * 48));
    let x = 7;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; Atomics.store(i32, ((x >>> 0) % n) * 48 + 7, i); }
    return ((performance.now() - t0) * 1e6) / n;
  };
  gcRun(); wheelRun();
  const g: ReturnType<typeof gcRun>[] = [], w: ReturnType<typeof wheelRun>[] = [], s: number[] = [];
  const sl: ReturnType<typeof sliceRun>[] = [];
  for (let r = 0; r < Math.min(runs, 5); r++) { g.push(gcRun()); w.push(wheelRun()); s.push(storeNs()); sl.push(sliceRun()); }
  const gm = median(g.map((v) => v.perEntryNs)), wm = median(w.map((v) => v.perEntryNs));
  const idle = median(g.map((v) => v.idlePerEntryNs));
  const arm = median(w.map((v) => v.armNs)), st = median(s);
  const tick = median(w.map((v) => v.maxTickMs));
  const slice = median(sl.map((v) => v.maxSliceMs));
  const slices = median(sl.map((v) => v.slices));
  return [
    { name: 'iv-expire-cpu-per-entry', question: 'iv', a: 'GC worker sweep', b: 'timing wheel', rateA: gm, rateB: wm, ratio: gm / wm, unit: 'ns per expired entry (lower is better)', status: 'measured', note: `${n} UDP entries all expired; both include Chains.kill; GC sweep that expires nothing costs ${idle.toFixed(1)} ns per entry` },
    { name: 'iv-refresh-cost-per-packet', question: 'iv', a: 'timer re-arm (wheel)', b: 'Atomics.store of the deadline (GC design)', rateA: arm, rateB: st, ratio: arm / st, unit: 'ns per packet (lower is better)', status: 'measured', note: 'the wheel also needs a lock per wheel (or per CPU) once several threads re-arm' },
    { name: 'iv-worst-inline-expiry', question: 'iv', a: 'longest wheel tick (runs inline, in a packet batch)', b: 'longest GC slice, default 10 ms budget (runs on its own thread)', rateA: tick, rateB: slice, ratio: tick / slice, unit: 'ms', status: 'measured', note: `${n} entries created over 1 s expire over 1000 ticks of 1 ms; the GC expired them all in ${slices} slices (median of runs)` },
  ];
}

// ---------------------------------------------------------------------------------------------
// Output.

export function fmt(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
  if (a >= 100) return v.toFixed(0);
  return v.toFixed(2);
}

export function formatReport(r: BenchReport): string {
  const lines: string[] = [];
  lines.push(`conntrack-sab bench (${r.quick ? 'quick' : 'full'}): ${r.machine.cpus} CPUs (${r.machine.model}), node ${r.machine.node}, median of ${r.runs} runs after a warm-up, ${r.seconds} s (${Object.entries(r.sectionSeconds).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v} s`).join(', ')})`);
  lines.push('');
  const head = ['workload', 'tracker', 'workers', 'median', 'min', 'max', 'unit', 'extra'];
  const rows: string[][] = [head];
  for (const w of r.workloads) {
    const extra: string[] = [];
    if (w['p99BatchUs'] !== undefined) extra.push(`p99 batch ${w['p99BatchUs']} µs`);
    if (w['earlyDrops'] !== undefined) extra.push(`early drops ${w['earlyDrops']}, drops ${w['drops']}, ASSURED lost ${w['assuredLost']}`);
    if (w['invalidPerRun']) extra.push(`invalid/run ${w['invalidPerRun']}`);
    rows.push([w.name, w.tracker, String(w.workers), fmt(w.rate), fmt(w.min), fmt(w.max), w.unit, extra.join('; ')]);
  }
  lines.push(...table(rows));
  const notes = [...new Set(r.workloads.filter((w) => w.tracker === 'ours' && w.note).map((w) => `${w.name}: ${w.note}`))];
  for (const n of notes) lines.push(`  note: ${n}`);
  if (r.scaling.length > 1) {
    const f = (xs: { workers: number; rate: number }[]): string => xs.map((x) => `${x.workers}w ${(x.rate / xs[0]!.rate).toFixed(2)}x`).join(', ');
    lines.push(`  machine scaling ceiling (pure compute, no shared memory): at the start ${f(r.scaling)}; at the end ${f(r.scalingEnd)}`);
  }
  lines.push('');
  lines.push('Ours against the baselines (>1: ours is better; for zones-flush the time ratio):');
  const rr: string[][] = [['workload', 'workers', 'ours', 'x Map (1 thread)', 'x sharedmap (same workers)']];
  for (const x of r.ratios) rr.push([x.workload, String(x.workers), fmt(x.ours), x.vsMap === null ? 'n/a' : x.vsMap.toFixed(2), x.vsSharedmap === null ? 'n/a' : x.vsSharedmap.toFixed(2)]);
  lines.push(...table(rr));
  if (r.lookup.length) {
    lines.push('');
    lines.push('Pure lookups (hash + Chains.find, random order, one thread):');
    const lr: string[][] = [['entries', 'hash+find/s', 'find only/s', 'plain JS walk/s', 'native C loop /s (measured, cc -O2)', 'find only / C']];
    for (const l of r.lookup) lr.push([String(l.entries), fmt(l.hashAndFind), fmt(l.findOnly), fmt(l.plainWalk), l.nativeReference === null ? 'not measured' : fmt(l.nativeReference), l.nativeReference === null ? 'n/a' : (l.findOnly / l.nativeReference).toFixed(2)]);
    lines.push(...table(lr));
  }
  if (r.nat && r.nat.length) {
    lines.push('');
    lines.push('NAT (bench/nat.ts):');
    const nr: string[][] = [['workload', 'pass', 'workers', 'median', 'min', 'max', 'nat_failed', 'p99 batch µs']];
    for (const x of r.nat) nr.push([x.name, x.pass, String(x.workers), fmt(x.rate), fmt(x.min), fmt(x.max), `${x.natFailed} of ${x.flows}`, x.p99us.toFixed(1)]);
    lines.push(...table(nr));
  }
  if (r.experiments.length) {
    lines.push('');
    lines.push('Experiments (ratio = A / B, measured side by side):');
    const er: string[][] = [['experiment', 'A', 'B', 'A value', 'B value', 'ratio', 'unit']];
    for (const e of r.experiments) er.push([e.name, e.a, e.b, e.rateA === null ? 'pending' : fmt(e.rateA), e.rateB === null ? 'pending' : fmt(e.rateB), e.ratio === null ? 'pending' : e.ratio.toFixed(2), e.unit]);
    lines.push(...table(er));
  }
  lines.push('');
  lines.push(...formatRatios({
    workloads: r.workloads, scaling: r.scaling, scalingEnd: r.scalingEnd, zonesPerZone: r.sizes['zonesPerZone'] ?? 0,
    lookup: r.lookup,
    // The C lookup loop measured in the lookup section (cc -O2), when a compiler was there.
    cLoop: r.lookup.some((l) => l.nativeReference !== null)
      ? r.lookup.filter((l) => l.nativeReference !== null).map((l) => ({ entries: l.entries, rate: l.nativeReference! }))
      : null,
    ovs: r.peers?.ovs ?? null, replay: r.peers?.replay ?? null,
  }));
  lines.push('');
  lines.push(`Memory: ${r.memory.bytesPerConnection} bytes per connection (table.bytesPerConnection()); a table for 1,000,000 connections is ${(r.memory.tableBytesAt1M / 2 ** 20).toFixed(1)} MiB` +
    (r.memory.sharedmapBytesPerConnection ? `; the sharedmap baseline uses ${r.memory.sharedmapBytesPerConnection} bytes per connection` : ''));
  return lines.join('\n');
}

function table(rows: string[][]): string[] {
  const wd = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  // Right-align the columns whose cells (below the header) all look like numbers.
  const numeric = rows[0]!.map((_, i) => rows.slice(1).every((r) => /^(-?[\d.]+[kM]?|n\/a|pending)$/.test(r[i] ?? '')));
  return rows.map((r, k) => {
    const s = r.map((c, i) => (numeric[i] && k > 0 ? c.padStart(wd[i]!) : c.padEnd(wd[i]!))).join('  ').trimEnd();
    return k === 0 ? `${s}\n${'-'.repeat(s.length)}` : s;
  });
}

// ---------------------------------------------------------------------------------------------
// Command line.

/** bench/results in a checkout; ./conntrack-sab-bench from an installed package (which ships no bench/). */
function defaultOutDir(): string {
  const inRepo = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  return existsSync(fileURLToPath(new URL('../../bench/run.ts', import.meta.url))) ? inRepo : join(process.cwd(), 'conntrack-sab-bench');
}

export function parseBenchArgs(argv: string[]): BenchOptions {
  const o: BenchOptions = {
    quick: false, json: false, workers: [], inline: false, runs: 5, only: null, oursOnly: false,
    outDir: defaultOutDir(),
    log: (s) => process.stderr.write(s + '\n'),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--json') o.json = true;
    else if (a === '--inline') o.inline = true;
    else if (a === '--workers') o.workers = val().split(',').map((x) => {
      const n = Number(x);
      if (!Number.isInteger(n) || n < 1 || n > 64) throw new Error(`--workers: bad worker count "${x}"`);
      return n;
    });
    else if (a === '--runs') {
      o.runs = Number(val());
      if (!Number.isInteger(o.runs) || o.runs < 1) throw new Error('--runs needs a positive integer');
    } else if (a === '--only') o.only = val().split(',');
    else if (a === '--out') o.outDir = val();
    else if (a === '--quiet') o.log = () => {};
    else if (a === '--ours-only') o.oursOnly = true;
    else if (a === '--ovs') o.ovs = val();
    else throw new Error(`unknown option ${a}`);
  }
  if (o.workers.length === 0) {
    const n = availableParallelism();
    o.workers = Array.from({ length: n }, (_, i) => i + 1);
  }
  if (o.inline) o.workers = [1];
  o.workers = [...new Set(o.workers)].sort((a, b) => a - b);
  if (o.runs < 5 && !o.quick) o.log('warning: fewer than 5 runs');
  return o;
}

export async function benchMain(argv: string[]): Promise<number> {
  let o: BenchOptions;
  try {
    o = parseBenchArgs(argv);
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\n`);
    return 2;
  }
  if (o.only?.includes('live')) {
    // Live traffic through NFQUEUE (root only; bench/live.ts), reported on its own.
    const { runLiveBench, formatLiveBench } = await import('./live.js');
    const lr = await runLiveBench({ quick: o.quick, log: o.log });
    mkdirSync(o.outDir, { recursive: true });
    writeFileSync(`${o.outDir.replace(/\/?$/, '/')}bench-live${o.quick ? '-quick' : ''}.json`, JSON.stringify(lr, null, 2) + '\n');
    process.stdout.write((o.json ? JSON.stringify(lr) : formatLiveBench(lr)) + '\n');
    o.only = o.only.filter((s) => s !== 'live');
    if (o.only.length === 0) return 0;
  }
  let r: BenchReport;
  try {
    r = await runBench(o);
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\n`);
    return 1;
  }
  mkdirSync(o.outDir, { recursive: true });
  const tag = o.inline ? 'inline' : r.quick ? 'quick' : 'full';
  const jsonPath = `${o.outDir.replace(/\/?$/, '/')}bench-${tag}.json`;
  const svgPath = `${o.outDir.replace(/\/?$/, '/')}throughput-${tag}.svg`;
  writeFileSync(jsonPath, JSON.stringify(r, null, 2) + '\n');
  writeFileSync(svgPath, chartSvg(r));
  if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
  else process.stdout.write(formatReport(r) + `\n\nwrote ${jsonPath} and ${svgPath}\n`);
  return 0;
}

// Run directly: node dist/bench/run.js [...]
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = await benchMain(process.argv.slice(2));
}
