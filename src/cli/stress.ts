/**
 * `conntrack-sab stress`: N worker threads run a concurrent insert/lookup/delete/expiry mix on
 * one shared table (with the GC worker), then the table is quiesced and its invariants checked.
 */
import { Worker } from 'node:worker_threads';
import { usageLine } from './common.js';
import { checkInvariants, formatInvariants, type InvariantReport } from '../table/invariants.js';
import { ConntrackTable, type Discipline } from '../table/table.js';
import type { StressWorkerData, StressWorkerDone } from '../../workers/stress-worker.js';

export interface StressOptions {
  workers: number;
  /** Run for this long (wall seconds), or ... */
  seconds?: number;
  /** ... this many operations per worker. */
  opsPerWorker?: number;
  max?: number;
  discipline?: Discipline;
  /** Run the GC worker (default true when src/table/gc.ts provides startGc). */
  gc?: boolean;
  seed?: number;
  /** Virtual table-clock ms per wall ms (default 50: UDP's 30 s timeout passes in 0.6 s). */
  speed?: number;
  /**
   * Wall ms after which a worker that has not finished is terminated and the run rejects with an
   * error naming it (a lock never released, a chain walk that never ends): a failure, not a hang.
   * Default: none.
   */
  deadlineMs?: number;
}

export interface StressResult {
  ok: boolean;
  workers: number;
  discipline: Discipline;
  max: number;
  seconds: number;
  operations: number;
  opsPerSecond: number;
  inserts: number;
  lookups: number;
  deletes: number;
  expired: number;
  earlyDrops: number;
  gcEvicted: number;
  gracePeriods: number;
  slotsRecycled: number;
  /** 'running' when the GC worker ran, else why not. */
  gc: string;
  entriesAtEnd: number;
  invariants: { name: string; ok: boolean; detail?: string }[];
  slots: InvariantReport['slots'];
}

/** The GC starter from src/table/gc.ts, when that module exists (looked up at run time). */
interface GcLike { stop(): Promise<void>; ready?: Promise<number> }
type StartGc = (table: ConntrackTable, opts?: Record<string, unknown>) => GcLike;

async function findStartGc(): Promise<StartGc | string> {
  try {
    const mod = (await import(new URL('../table/gc.js', import.meta.url).href)) as { startGc?: unknown };
    return typeof mod.startGc === 'function' ? (mod.startGc as StartGc) : 'src/table/gc.ts has no startGc';
  } catch (e) {
    return `no GC module (${(e as Error).message.split('\n')[0]})`;
  }
}

const WORKER_URL = new URL('../../workers/stress-worker.js', import.meta.url);

/** Run the stress mix and check the invariants at the end. */
export async function runStress(o: StressOptions): Promise<StressResult> {
  const max = o.max ?? 65536;
  const discipline = o.discipline ?? 'noref';
  const table = ConntrackTable.create({ max, discipline, maxWorkers: o.workers + 4 });
  let gcState = 'disabled';
  let gc: GcLike | null = null;
  if (o.gc !== false) {
    const startGc = await findStartGc();
    if (typeof startGc === 'string') {
      gcState = startGc;
    } else {
      // Short intervals: the virtual clock runs `speed` times faster than the wall.
      gc = startGc(table, { minIntervalMs: 500, maxIntervalMs: 5000, wallPerClock: 1 / (o.speed ?? 50) });
      if (gc.ready) await gc.ready;
      gcState = 'running';
    }
  }
  const t0 = Date.now();
  const seed = o.seed ?? ((Math.random() * 0x7fffffff) | 0);
  const started = performance.now();
  const dones = await Promise.all(Array.from({ length: o.workers }, (_, i) => new Promise<StressWorkerDone>((ok, fail) => {
    const wd: StressWorkerData = {
      buffer: table.buffer,
      mode: o.opsPerWorker !== undefined ? 'ops' : 'timed',
      seconds: o.seconds ?? 1,
      ops: o.opsPerWorker ?? 0,
      seed: (seed + i * 0x9e3779b1) | 0,
      flows: Math.max(64, max * 2),
      t0,
      speed: o.speed ?? 50,
      publishClock: i === 0,
    };
    const w = new Worker(WORKER_URL, { workerData: wd });
    let result: StressWorkerDone | null = null;
    let late = false;
    const timer = o.deadlineMs === undefined ? null : setTimeout(() => {
      late = true;
      void w.terminate();
    }, o.deadlineMs);
    w.on('message', (m: { type: string }) => { if (m.type === 'done') result = m as StressWorkerDone; });
    w.once('error', fail);
    w.once('exit', (code) => {
      if (timer) clearTimeout(timer);
      if (late) fail(new Error(`stress worker ${i} did not finish within ${o.deadlineMs} ms (a lock never released or a chain walk that never ends?): terminated`));
      else if (result) ok(result);
      else fail(new Error(`stress worker ${i} exited with code ${code}`));
    });
  })));
  const elapsed = (performance.now() - started) / 1000;
  if (gc) await gc.stop();

  const inv = checkInvariants(table);
  const st = table.stats().total;
  const operations = dones.reduce((a, d) => a + d.operations, 0);
  return {
    ok: inv.ok,
    workers: o.workers,
    discipline,
    max,
    seconds: Math.round(elapsed * 1000) / 1000,
    operations,
    opsPerSecond: Math.round(operations / Math.max(elapsed, 1e-6)),
    inserts: st['insert'] ?? 0,
    lookups: dones.reduce((a, d) => a + d.lookups, 0),
    deletes: dones.reduce((a, d) => a + d.deletes, 0),
    expired: st['expired'] ?? 0,
    earlyDrops: st['early_drop'] ?? 0,
    gcEvicted: st['gc_evict'] ?? 0,
    gracePeriods: st['grace_periods'] ?? 0,
    slotsRecycled: st['slots_recycled'] ?? 0,
    gc: gcState,
    entriesAtEnd: inv.slots.linked,
    invariants: inv.invariants,
    slots: inv.slots,
  };
}

export interface StressCliOptions {
  workers?: string;
  seconds?: string;
  json?: boolean;
  max?: string;
  discipline?: string;
  gc?: boolean;
}

function parseIntIn(name: string, raw: string | undefined, def: number, lo: number, hi: number): number {
  if (raw === undefined) return def;
  if (!/^\d+$/.test(raw.trim())) throw new Error(`--${name} expects an integer, got "${raw}"`);
  const v = Number(raw);
  if (v < lo || v > hi) throw new Error(`--${name} must be in ${lo}..${hi}, got ${v}`);
  return v;
}

/** The command: returns the exit code (0 ok, 1 an invariant failed, 2 bad options). */
export async function runStressCli(raw: Record<string, unknown>): Promise<number> {
  const opts = raw as StressCliOptions;
  let workers: number, seconds: number, max: number;
  let discipline: Discipline;
  try {
    workers = parseIntIn('workers', opts.workers, 2, 1, 64);
    max = parseIntIn('max', opts.max, 65536, 16, 1 << 24);
    const s = opts.seconds ?? '10';
    if (!/^\d+(\.\d+)?$/.test(s.trim()) || Number(s) <= 0 || Number(s) > 86400) {
      throw new Error(`--seconds expects a positive number of seconds (at most 86400), got "${s}"`);
    }
    seconds = Number(s);
    const d = opts.discipline ?? 'noref';
    if (d !== 'noref' && d !== 'refcount') throw new Error(`--discipline must be noref or refcount, got "${d}"`);
    discipline = d;
  } catch (e) {
    process.stderr.write(usageLine('stress', (e as Error).message));
    return 2;
  }
  if (!opts.json) {
    process.stdout.write(`stress: ${workers} worker(s), ${seconds} s, nf_conntrack_max ${max}, discipline ${discipline}\n`);
  }
  const r = await runStress({ workers, seconds, max, discipline, gc: opts.gc !== false });
  if (opts.json) {
    process.stdout.write(JSON.stringify(r) + '\n');
  } else {
    process.stdout.write(
      `operations: ${r.operations} in ${r.seconds} s (${r.opsPerSecond}/s): ${r.inserts} inserts, ` +
      `${r.lookups} lookups, ${r.deletes} deletes, ${r.expired} expired, ${r.earlyDrops} early drops, ` +
      `${r.gcEvicted} GC evictions\n` +
      `grace periods: ${r.gracePeriods}, slots recycled: ${r.slotsRecycled}, GC: ${r.gc}\n` +
      `invariants (table quiesced, ${r.entriesAtEnd} entries):\n` +
      formatInvariants({ ok: r.ok, invariants: r.invariants, slots: r.slots }) + '\n' +
      (r.ok ? 'all invariants hold\n' : 'INVARIANT VIOLATED\n'),
    );
  }
  return r.ok ? 0 : 1;
}
