/**
 * The dedicated garbage collector (the kernel's conntrack gc_worker), as a worker thread.
 *
 * GcEngine is the thread-agnostic part: one run() scans buckets from H_GC_CURSOR for at most
 * `budgetMs` of wall time and leaves the cursor where it stopped, so packet workers never wait
 * on a whole-table walk. A run:
 *   - removes expired entries (KILL_EXPIRED, counted as ST_EXPIRED by Chains.kill);
 *   - above `pressurePercent` of nf_conntrack_max (the entry count: H_COUNT plus the records' unfolded parts) evicts entries that are
 *     not ASSURED or are TCP connections closing (the kernel's gc_worker_can_early_drop),
 *     KILL_GC_EVICT / ST_GC_EVICT, while the table stays above that mark;
 *   - when a whole sweep of such evictions was not enough (the count is still above the mark at
 *     the end of a sweep), the next sweep also recycles ASSURED entries idle for at least
 *     nf_conntrack_soft_timeout seconds (KILL_SOFT_RECYCLE / ST_SOFT_RECYCLE); never earlier;
 *   - completes grace periods: its own limbo (quiesce), and the limbo and slot cache that a
 *     worker which left the table (record released) could not hand back;
 *   - returns its slot cache to the shared free list, so freed slots are visible to everyone.
 * The GC is online (QSBR) only while it walks chains.
 *
 * Idle time of an ASSURED entry is derived without per-packet work: the last packet that
 * refreshed the entry set deadline = t + T with T one of the timeouts its protocol can apply in
 * its current state, and T >= deadline - now. The smallest such T (with a clock-skew allowance)
 * gives a lower bound of the idle time, T - (deadline - now), so an entry is never recycled
 * before the soft timeout (while the timeout sysctls are not raised at run time).
 *
 * startGc() runs the engine in a node:worker_threads Worker (dist/workers/gc-worker.js) that
 * sleeps between runs on the H_GC_WAKE futex word with an adaptive interval.
 */
import { Worker } from 'node:worker_threads';
import { Chains, KILL_EXPIRED, KILL_GC_EVICT, KILL_SOFT_RECYCLE, type DestroyHook } from './chains.js';
import {
  ENTRY_WORDS, E_NEXT, E_PROTO, E_STATUS, E_TIMEOUT, H_CLOCK, H_GC_BUSY_US, H_GC_DEATHS,
  H_GC_CURSOR, H_GC_INTERVAL, H_GC_RUNS, H_GC_STOP, H_GC_SWEEPS, H_GC_WID, IPS_ASSURED,
  IPS_CONFIRMED, IPS_DYING, IPS_FIXED_TIMEOUT, IPS_OFFLOAD, ST_GC_EVICT, ST_SOFT_RECYCLE, W_ALIVE,
  W_CACHE_COUNT, W_LIMBO_HEAD, W_STATE, WORKER_WORDS, E_PRIV, GRE_TIMEOUT, GRE_STREAM_TIMEOUT,
} from './layout.js';
import { SlotAllocator } from './alloc.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from '../input/packet/packet.js';
import type { TrackerContext } from '../track/proto/l4proto.js';
import { tcpIsClosing, tcpState, tcpStateTimeout } from '../track/proto/tcp.js';
import { IPPROTO_UDPLITE } from '../track/proto/udp.js';
import { IPPROTO_GRE } from '../track/proto/gre.js';
import { IPPROTO_SCTP, sctpStateTimeout } from '../track/proto/sctp.js';
import { EventProducer, reapSubscribers } from './ecache.js';
import { Qsbr } from './rcu.js';
import { reclaimOrphans, recoverDeadWorker, type RecoveryReport } from './recovery.js';
import {
  S_GENERIC_TIMEOUT, S_ICMPV6_TIMEOUT, S_ICMP_TIMEOUT, S_MAX, S_SOFT_TIMEOUT, S_TCP_TIMEOUT_CLOSE,
  S_TCP_TIMEOUT_MAX_RETRANS, S_TCP_TIMEOUT_UNACKNOWLEDGED, S_UDP_TIMEOUT, S_UDP_TIMEOUT_STREAM,
} from './sysctl.js';
import { ConntrackTable, wakeGc, type TableHandle } from './table.js';
import { ConntrackError, rangeError, stateError } from '../errors.js';

export { wakeGc };

export { KILL_SOFT_RECYCLE } from './chains.js';

/** Tuning of the GC (slice sizes, intervals, eviction threshold). */
export interface GcOptions {
  /** Wall time one run may scan for, ms (default 10, the kernel's GC_SCAN_MAX_DURATION). */
  budgetMs?: number;
  /** Shortest interval between sweeps, table-clock ms (default 1000). */
  minIntervalMs?: number;
  /** Longest interval between sweeps, table-clock ms (default 60000). */
  maxIntervalMs?: number;
  /**
   * Wall-clock ms slept per table-clock ms of interval (default 1). Tests and fast replays set
   * it small so a 60 s interval is a few wall ms; expiry decisions always use H_CLOCK.
   */
  wallPerClock?: number;
  /** Wall ms between the runs of one unfinished sweep (default 0: go on at once, as the kernel). */
  sliceGapMs?: number;
  /** Table-clock ms a packet's time may be ahead of H_CLOCK; makes idle estimates smaller (default 10000). */
  clockSkewMs?: number;
  /** Pressure mark, percent of nf_conntrack_max (default 95). */
  pressurePercent?: number;
}

/** Resolved options (every field set). */
export type GcConfig = Required<GcOptions>;

export function gcConfig(o: GcOptions = {}): GcConfig {
  const c: GcConfig = {
    budgetMs: o.budgetMs ?? 10,
    minIntervalMs: o.minIntervalMs ?? 1000,
    maxIntervalMs: o.maxIntervalMs ?? 60000,
    wallPerClock: o.wallPerClock ?? 1,
    sliceGapMs: o.sliceGapMs ?? 0,
    clockSkewMs: o.clockSkewMs ?? 10000,
    pressurePercent: o.pressurePercent ?? 95,
  };
  const check = (name: keyof GcConfig, lo: number, hi: number): void => {
    const v = c[name];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) {
      throw rangeError(`gc option ${name}: ${String(v)} is out of range ${lo}..${hi}`);
    }
  };
  check('budgetMs', 0.01, 60000);
  check('minIntervalMs', 1, 0x3fffffff);
  check('maxIntervalMs', c.minIntervalMs, 0x3fffffff);
  check('wallPerClock', 0, 1000);
  check('sliceGapMs', 0, 60000);
  check('clockSkewMs', 0, 0x3fffffff);
  check('pressurePercent', 1, 100);
  return c;
}

/** What one run did; reused between runs. */
export class GcRunResult {
  /** Buckets scanned and entries (original tuplehashes) visited. */
  buckets = 0;
  entries = 0;
  expired = 0;
  evicted = 0;
  recycled = 0;
  /** Slots this run made reusable (own limbo after its grace period, and adopted ones). */
  reclaimed = 0;
  /** The run finished a sweep over every bucket. */
  sweepDone = false;
  /** Wall ms to wait before the next run (sliceGapMs inside a sweep, else the interval). */
  sleepWallMs = 0;
  /** Next interval in table-clock ms (valid when sweepDone). */
  intervalMs = 0;
  reset(): void {
    this.buckets = 0;
    this.entries = 0;
    this.expired = 0;
    this.evicted = 0;
    this.recycled = 0;
    this.reclaimed = 0;
    this.sweepDone = false;
    this.sleepWallMs = 0;
    this.intervalMs = 0;
  }
}

const ACT_NONE = 0;
const ACT_EXPIRE = 1;
const ACT_EVICT = 2;
const ACT_RECYCLE = 3;


/**
 * A lower bound of how long entry `e` has gone without a packet refreshing it, in table ms, or
 * 0 when it cannot be told. `remaining` = deadline - now (> 0). No per-packet state is needed:
 * the timeout T applied by the last refresh is one of a few values for the entry's protocol
 * and state, and T >= remaining (minus the clock skew allowance); the smallest such T bounds
 * the idle time T - remaining from below.
 */
export function idleLowerBound(ctx: TrackerContext, e: number, remaining: number, skewMs: number): number {
  const i32 = ctx.i32;
  const sys = ctx.sys;
  const l4 = (i32[e + E_PROTO]! >>> 8) & 0xff;
  // Candidate timeouts (seconds) the protocol may have applied at the last refresh; 0 = none.
  let a: number;
  let b = 0;
  let c = 0;
  let d = 0;
  if (l4 === IPPROTO_TCP) {
    // The state only changes together with a refresh, so it is the state of the last one.
    const tNew = tcpStateTimeout(ctx, tcpState(ctx, e));
    a = tNew;
    b = Math.min(tNew, i32[sys + S_TCP_TIMEOUT_MAX_RETRANS]!); // retransmissions or zero window
    c = Math.min(tNew, i32[sys + S_TCP_TIMEOUT_UNACKNOWLEDGED]!); // unacknowledged data
    d = i32[sys + S_TCP_TIMEOUT_CLOSE]!; // an RST that left the state as it was
  } else if (l4 === IPPROTO_UDP || l4 === IPPROTO_UDPLITE) {
    // UDP-Lite shares UDP's timeouts (the kernel's udplite part of nf_conntrack_proto_udp).
    a = i32[sys + S_UDP_TIMEOUT]!;
    b = i32[sys + S_UDP_TIMEOUT_STREAM]!;
  } else if (l4 === IPPROTO_ICMP) {
    a = i32[sys + S_ICMP_TIMEOUT]!;
  } else if (l4 === IPPROTO_ICMPV6) {
    a = i32[sys + S_ICMPV6_TIMEOUT]!;
  } else if (l4 === IPPROTO_GRE) {
    // Copied into the entry at creation (gre.ts): unreplied, then stream.
    a = i32[e + E_PRIV + GRE_TIMEOUT]!;
    b = i32[e + E_PRIV + GRE_STREAM_TIMEOUT]!;
  } else if (l4 === IPPROTO_SCTP) {
    a = sctpStateTimeout(ctx, e);
  } else {
    a = i32[sys + S_GENERIC_TIMEOUT]!;
  }
  const need = remaining - skewMs;
  let t = -1;
  if (a > 0 && a * 1000 >= need) t = a;
  if (b > 0 && b * 1000 >= need && (t < 0 || b < t)) t = b;
  if (c > 0 && c * 1000 >= need && (t < 0 || c < t)) t = c;
  if (d > 0 && d * 1000 >= need && (t < 0 || d < t)) t = d;
  if (t < 0) return 0; // a timeout longer than any we know (sysctl lowered since): unknown
  const idle = t * 1000 - remaining;
  return idle > 0 ? idle : 0;
}

/** Destroy hook factory exported by a `hookModule` (runs inside the GC thread). */
export type DestroyHookFactory = (table: ConntrackTable, chains: Chains) => DestroyHook;

/**
 * The GC proper, usable on any thread (the worker thread runs it; tests may drive it directly).
 * It owns a worker record of the table for as long as it lives.
 */
export class GcEngine {
  readonly table: ConntrackTable;
  readonly chains: Chains;
  readonly wid: number;
  readonly cfg: GcConfig;
  /** Called for each entry the GC removes, with the entry's data intact (then `why`); if it throws, run() throws that after the run. */
  onDestroy: DestroyHook | null = null;
  private readonly i32: Int32Array;
  private readonly ctx: TrackerContext;
  private readonly st: number;
  private readonly nb: number;
  private readonly res = new GcRunResult();
  /** Smallest remaining lifetime seen in the sweep so far (table ms). */
  private sweepMinRemaining = 0x3fffffff;
  /** This sweep may recycle idle ASSURED entries: the previous one ended above the mark. */
  private softArmed = false;
  /** Settings of the current run. */
  private now = 0;
  private mark = 0;
  private softMs = 0;
  private closed = false;
  /** The first exception a destroy hook threw in the current run (thrown when the run ends). */
  private hookError: { err: unknown } | null = null;
  /** DESTROY events of the entries this GC removes, and parked ones it retries (ecache.ts). */
  private readonly ring: EventProducer;

  constructor(tableOrHandle: ConntrackTable | TableHandle, opts: GcOptions = {}) {
    this.cfg = gcConfig(opts);
    this.table = tableOrHandle instanceof ConntrackTable ? tableOrHandle : ConntrackTable.attach(tableOrHandle);
    this.i32 = this.table.i32;
    this.wid = this.table.registerWorker();
    // CAS: at most one GC per table; the word names our record while we run.
    if (Atomics.compareExchange(this.i32, H_GC_WID, 0, this.wid + 1) !== 0) {
      this.table.releaseWorker(this.wid);
      throw stateError('a GC worker already runs on this table');
    }
    this.chains = new Chains(this.table, this.wid);
    this.ctx = { i32: this.table.i32, u32: this.table.u32, sys: this.table.sec.sysctl };
    this.st = this.chains.st;
    this.nb = this.table.buckets;
    this.ring = new EventProducer(this.table, this.wid);
    this.chains.qsbr.onStall = (kind, wid, ms) => this.ring.stall(kind, wid, ms); // stall events (liveness.ts)
    this.chains.onDestroy = (e, why) => {
      this.ring.destroyed(e, this.now, why, -1); // stop timestamp; DESTROY event (ecache.ts)
      if (this.onDestroy) {
        // A hook that throws must not leave Chains.kill half done (the entry's slot would never
        // be freed): the delete goes on, and run() throws the run's first hook error at its end.
        try {
          this.onDestroy(e, why);
        } catch (err) {
          if (this.hookError === null) this.hookError = { err };
        }
      }
    };
  }

  private stat(i: number): void {
    this.i32[this.st + i] = (this.i32[this.st + i]! + 1) | 0; // single writer: the GC thread
  }

  /**
   * One bounded slice of the sweep. The result object is reused by the next call. Throws the
   * first error a destroy hook threw, once the slice is done (every delete finished).
   */
  run(): GcRunResult {
    const i32 = this.i32;
    const cfg = this.cfg;
    const res = this.res;
    res.reset();
    const t0 = performance.now();
    const budget = cfg.budgetMs;
    const sys = this.table.sec.sysctl;
    // Table clock published by the drivers (Atomics.load: the newest value any thread stored).
    this.now = Atomics.load(i32, H_CLOCK) | 0;
    // Sysctls are Atomics.store'd by setSysctl; read once per run.
    const max = Atomics.load(i32, sys + S_MAX);
    this.mark = Math.floor((max * cfg.pressurePercent) / 100);
    this.softMs = Atomics.load(i32, sys + S_SOFT_TIMEOUT) * 1000;

    const q = this.chains.qsbr;
    q.online();
    // Only the GC writes the cursor; Atomics.load pairs with our own earlier store across restarts.
    let b = Atomics.load(i32, H_GC_CURSOR);
    if (b < 0 || b >= this.nb) b = 0;
    if (b === 0) this.sweepMinRemaining = 0x3fffffff;
    for (;;) {
      q.resumeIfExpelled(); // between buckets we hold no entry (rcu.ts: stall expulsion)
      this.scanBucket(b);
      res.buckets++;
      b++;
      if (b >= this.nb) {
        b = 0;
        res.sweepDone = true;
        break;
      }
      // Look at the wall clock every 32 buckets only.
      if ((res.buckets & 31) === 0 && performance.now() - t0 >= budget) break;
    }
    Atomics.store(i32, H_GC_CURSOR, b); // read back by the next run (possibly a restarted GC)
    reapSubscribers(this.table); // dead subscribers that never closed (ecache.ts)
    if (this.ring.parked > 0) this.ring.retryParked(); // DESTROY events that found the ring full
    q.offline();
    this.chains.foldCount(); // our part of the entry count (chains.ts), exact at rest

    res.reclaimed += q.quiesce();
    res.reclaimed += this.adoptLeftovers();
    // Limbo of dead workers whose grace period had not passed when they were recovered.
    res.reclaimed += reclaimOrphans(this.table, this.wid);
    // Slots freed into our cache go to the shared list, where every inserter finds them.
    this.chains.alloc.drain();

    const over = this.chains.exactCount() > this.mark; // H_COUNT and every record's unfolded part
    if (res.sweepDone) {
      // A whole sweep of early-drop evictions was not enough: let the next one soft-recycle.
      this.softArmed = over;
      let iv = over ? cfg.minIntervalMs : this.sweepMinRemaining;
      if (iv < cfg.minIntervalMs) iv = cfg.minIntervalMs;
      if (iv > cfg.maxIntervalMs) iv = cfg.maxIntervalMs;
      res.intervalMs = iv;
      res.sleepWallMs = iv * cfg.wallPerClock;
      Atomics.store(i32, H_GC_INTERVAL, iv); // informational, for stats readers
      Atomics.add(i32, H_GC_SWEEPS, 1); // completed sweeps, read by waiters
    } else {
      res.sleepWallMs = cfg.sliceGapMs;
    }
    Atomics.add(i32, H_GC_BUSY_US, Math.round((performance.now() - t0) * 1000)); // busy time, for stats
    Atomics.add(i32, H_GC_RUNS, 1); // completed runs; then wake anyone waiting for one
    Atomics.notify(i32, H_GC_RUNS);
    const failed = this.hookError;
    if (failed !== null) {
      this.hookError = null;
      throw failed.err;
    }
    return res;
  }

  /** Visit every entry of bucket `b` through its ORIGINAL tuplehash. */
  private scanBucket(b: number): void {
    const i32 = this.i32;
    const c = this.chains;
    const E = c.E;
    const B = c.B;
    for (let attempt = 0; attempt < 2; attempt++) {
      // Chain words: Atomics.load pairs with the writers' Atomics.store that publish links.
      let ref = Atomics.load(i32, B + b);
      while (ref >= 0) {
        const slot = ref >>> 1;
        const e = E + slot * ENTRY_WORDS;
        // Load next before any kill: an unlinked entry keeps its own next word intact.
        const next = Atomics.load(i32, e + E_NEXT + (ref & 1));
        if ((ref & 1) === 0) this.visit(slot, e);
        ref = next;
      }
      // 'refcount' slots may be recycled under us: a walk that ended in another bucket's chain
      // missed part of ours; walk it once more (missing an entry until the next sweep is fine).
      if (ref === ~b || c.noref) return;
    }
  }

  /** What the GC would do to entry `e` now. */
  private decide(e: number, status: number): number {
    if ((status & (IPS_DYING | IPS_CONFIRMED)) !== IPS_CONFIRMED) return ACT_NONE;
    // E_TIMEOUT: Atomics.load pairs with the packet path's Atomics.store of a new deadline.
    const remaining = (Atomics.load(this.i32, e + E_TIMEOUT) - this.now) | 0;
    if (remaining <= 0) return ACT_EXPIRE;
    if (remaining < this.sweepMinRemaining) this.sweepMinRemaining = remaining;
    // Evict only while above the mark (H_COUNT plus our unfolded part: within the count's slack).
    if (this.chains.approxCount <= this.mark) return ACT_NONE;
    if (status & IPS_OFFLOAD) return ACT_NONE;
    if ((status & IPS_ASSURED) === 0) return ACT_EVICT;
    if (((this.i32[e + E_PROTO]! >>> 8) & 0xff) === IPPROTO_TCP && tcpIsClosing(this.ctx, e)) return ACT_EVICT;
    if (!this.softArmed || this.softMs <= 0 || (status & IPS_FIXED_TIMEOUT)) return ACT_NONE;
    return idleLowerBound(this.ctx, e, remaining, this.cfg.clockSkewMs) >= this.softMs ? ACT_RECYCLE : ACT_NONE;
  }

  private visit(slot: number, e: number): void {
    const i32 = this.i32;
    const c = this.chains;
    this.res.entries++;
    // E_STATUS bits are set with Atomics.or by several threads.
    let act = this.decide(e, Atomics.load(i32, e + E_STATUS));
    if (act === ACT_NONE) return;
    if (!c.noref) {
      // 'refcount': pin the slot, then decide again on what it holds now (it may be reused).
      if (!c.getRef(e)) return;
      act = this.decide(e, Atomics.load(i32, e + E_STATUS)); // re-read after taking the reference
      if (act !== ACT_NONE) this.act(slot, act);
      c.put(slot);
      return;
    }
    // 'noref': we are online, so the slot cannot be reused under us.
    this.act(slot, act);
  }

  private act(slot: number, act: number): void {
    const c = this.chains;
    if (act === ACT_EXPIRE) {
      if (c.kill(slot, KILL_EXPIRED, undefined, this.now)) this.res.expired++; // only if still expired; kill() counts ST_EXPIRED
    } else if (act === ACT_EVICT) {
      if (c.kill(slot, KILL_GC_EVICT)) {
        this.res.evicted++;
        this.stat(ST_GC_EVICT);
      }
    } else if (c.kill(slot, KILL_SOFT_RECYCLE)) {
      this.res.recycled++;
      this.stat(ST_SOFT_RECYCLE);
    }
  }

  /**
   * Hand back what workers that left the table could not: the limbo (after its grace period)
   * and cached free slots of released records. The record is claimed with the same CAS as
   * registerWorker() for the duration, so no new owner can start using it meanwhile.
   * Records still owned (alive) are left alone: see the reply for the limbo-lock protocol.
   */
  private adoptLeftovers(): number {
    const i32 = this.i32;
    const t = this.table;
    let n = 0;
    for (let k = 0; k < t.maxWorkers; k++) {
      if (k === this.wid) continue;
      const w = t.sec.workers + k * WORKER_WORDS;
      // Cheap pre-checks (Atomics.load: words written by other threads).
      if (Atomics.load(i32, w + W_ALIVE) !== 0) continue;
      if (Atomics.load(i32, w + W_LIMBO_HEAD) < 0 && Atomics.load(i32, w + W_CACHE_COUNT) === 0) continue;
      // CAS claims the released record (as registerWorker does); its words are ours after this.
      if (Atomics.compareExchange(i32, w + W_ALIVE, 0, 1) !== 0) continue;
      if (Atomics.load(i32, w + W_STATE) === 0) {
        // Reclaim into our own cache (then drained to the shared list by run()).
        if (i32[w + W_LIMBO_HEAD]! >= 0) {
          const q = new Qsbr(t, k, this.chains.alloc);
          q.onStall = this.chains.qsbr.onStall; // a stall it finds is reported as ours are
          n += q.reclaim();
        }
        if (Atomics.load(i32, w + W_CACHE_COUNT) > 0) {
          const cached = Atomics.load(i32, w + W_CACHE_COUNT);
          new SlotAllocator(t, k).drain();
          n += cached;
        }
      }
      t.releaseWorker(k); // Atomics.store inside: publishes our writes to the next owner
    }
    return n;
  }

  /**
   * Leave the table: wait (bounded) for the grace period of our limbo, give cached slots back,
   * release the record and the GC word.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const q = this.chains.qsbr;
    if (q.isOnline) q.offline();
    this.chains.foldCount();
    const pause = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; i < 1000 && q.pending > 0; i++) {
      q.quiesce();
      // A wait on a private word: a 1 ms sleep while other workers leave their batches.
      if (q.pending > 0) Atomics.wait(pause, 0, 0, 1);
    }
    this.chains.alloc.drain();
    // Clear the GC word before the record: a new GC may start as soon as it reads 0.
    Atomics.compareExchange(this.i32, H_GC_WID, this.wid + 1, 0);
    this.table.releaseWorker(this.wid);
  }
}

// ---------------------------------------------------------------------------------------------
// The worker thread, seen from the thread that starts it.

/** Options of startGc(). */
export interface StartGcOptions extends GcOptions {
  /**
   * ES module (path or URL) loaded inside the GC thread, exporting
   * `createDestroyHook: DestroyHookFactory`; the hook sees each removed entry's data intact.
   */
  hookModule?: string | URL;
  /** Called on this thread, after each run, for each entry the GC removed: its id and why. */
  onDestroy?: (id: number, why: number) => void;
}

/** Plain data passed to the worker thread. */
export interface GcWorkerData {
  readonly handle: TableHandle;
  readonly opts: GcOptions;
  readonly hookModule: string | null;
  readonly report: boolean;
}

/** Messages from the GC thread. */
export type GcMessage =
  | { readonly type: 'ready'; readonly wid: number }
  | { readonly type: 'destroyed'; readonly pairs: Int32Array } // id, why, id, why, ...
  | { readonly type: 'error'; readonly message: string }
  | { readonly type: 'closed' };

/** The GC's counters (runs, sweeps, entries expired and evicted). */
export interface GcCounters {
  /** Runs (slices) and full sweeps completed. */
  runs: number;
  sweeps: number;
  /** Current adaptive interval, table-clock ms. */
  intervalMs: number;
  /** Wall time spent inside runs, ms (wraps after ~71 minutes of busy time). */
  busyMs: number;
  /** GC workers that died without leaving the table and were recovered. */
  deaths: number;
}

type WaitAsyncFn = (a: Int32Array, i: number, v: number, t?: number) => { async: boolean; value: Promise<string> | string };
const waitAsync: WaitAsyncFn | undefined = (Atomics as unknown as { waitAsync?: WaitAsyncFn }).waitAsync;

/** Read the GC's shared counters of a table (any thread). */
export function gcCounters(table: ConntrackTable): GcCounters {
  const i32 = table.i32;
  return {
    // Atomics.load: words Atomics.add'ed/stored by the GC thread.
    runs: Atomics.load(i32, H_GC_RUNS) >>> 0,
    sweeps: Atomics.load(i32, H_GC_SWEEPS) >>> 0,
    intervalMs: Atomics.load(i32, H_GC_INTERVAL),
    busyMs: (Atomics.load(i32, H_GC_BUSY_US) >>> 0) / 1000,
    deaths: Atomics.load(i32, H_GC_DEATHS), // Atomics.add'ed by recovery
  };
}

/** A running GC worker thread. */
export class GcHandle {
  readonly table: ConntrackTable;
  /** Resolves with the GC's worker record once it runs; rejects if it could not start. */
  readonly ready: Promise<number>;
  private readonly worker: Worker;
  private readonly exited: Promise<void>;
  private wid = -1;
  /** An error the GC thread reported after it started, or its death (thrown by stop()). */
  private failure: Error | null = null;
  private stopping: Promise<void> | null = null;
  /** The thread said goodbye (left the table through GcEngine.close()). */
  private closedCleanly = false;
  /** It died without leaving the table (terminate(), a crash): what recovery did. */
  private deathReport: RecoveryReport | null = null;

  constructor(table: ConntrackTable, opts: StartGcOptions = {}) {
    this.table = table;
    const { hookModule, onDestroy, ...gcOpts } = opts;
    gcConfig(gcOpts); // throw here, on the caller's thread, for bad options
    const data: GcWorkerData = {
      handle: table.handle(),
      opts: gcOpts,
      hookModule: hookModule === undefined ? null : String(hookModule instanceof URL ? hookModule.href : hookModule),
      report: onDestroy !== undefined,
    };
    this.worker = new Worker(new URL('../../workers/gc-worker.js', import.meta.url), { workerData: data });
    let readyOk: (wid: number) => void = () => {};
    let readyFail: (err: Error) => void = () => {};
    this.ready = new Promise<number>((ok, fail) => { readyOk = ok; readyFail = fail; });
    this.ready.catch(() => {}); // observed through stop() or by the caller
    this.worker.on('message', (m: GcMessage) => {
      if (m.type === 'ready') {
        this.wid = m.wid;
        readyOk(m.wid);
      } else if (m.type === 'destroyed') {
        if (onDestroy) for (let k = 0; k + 1 < m.pairs.length; k += 2) onDestroy(m.pairs[k]!, m.pairs[k + 1]!);
      } else if (m.type === 'error') {
        const err = new Error(m.message);
        if (this.wid >= 0) this.failure = err;
        readyFail(err);
      } else if (m.type === 'closed') {
        this.closedCleanly = true;
      }
    });
    this.worker.once('exit', () => { this.alive = false; });
    this.exited = new Promise<void>((ok) => {
      this.worker.once('exit', (code: number) => {
        readyFail(new Error('GC worker exited before it was ready'));
        if (this.wid >= 0 && !this.closedCleanly) {
          // Died inside the table: recover its record (locks, half-done delete, GC word), so
          // that a new GC can start, and report the death through stop().
          try {
            // A short grace wait: this runs on the owner's thread (the orphans are finished by the next GC).
            this.deathReport = recoverDeadWorker(table, this.wid, { graceWaitMs: 100 });
          } catch (err) {
            this.failure ??= err instanceof Error ? err : new Error(String(err));
          }
          this.failure ??= new Error(`the GC worker died (exit code ${code}) without leaving the table; ` +
            `recovered: ${this.deathReport ? 'yes' : 'no'}`);
        }
        ok();
      });
      this.worker.once('error', (err: Error) => readyFail(err));
    });
  }

  /** False once the thread has exited (stopped, crashed or terminated). */
  get running(): boolean {
    return this.alive;
  }
  private alive = true;

  /** What crash recovery did after the GC died without leaving the table (null otherwise). */
  get death(): RecoveryReport | null {
    return this.deathReport;
  }

  /**
   * Kill the GC thread abruptly, as a crash would (fault injection): its record is recovered and
   * stop() then rejects with the death. Resolves once it is gone and recovered.
   */
  async terminate(): Promise<void> {
    await this.worker.terminate();
    await this.exited;
  }

  /** Wake the GC now (as an inserter that found the table full does). */
  wake(): void {
    wakeGc(this.table);
  }

  get counters(): GcCounters {
    return gcCounters(this.table);
  }

  /** Resolves once `n` sweeps have completed in all (see counters.sweeps). */
  async untilSweeps(n: number, timeoutMs = 10000): Promise<void> {
    await this.until(H_GC_SWEEPS, n, timeoutMs);
  }

  /** Resolves once `n` runs have completed in all (see counters.runs). */
  async untilRuns(n: number, timeoutMs = 10000): Promise<void> {
    await this.until(H_GC_RUNS, n, timeoutMs);
  }

  /** Resolves after a full sweep that began after this call. */
  async sweep(timeoutMs = 10000): Promise<void> {
    const s = gcCounters(this.table).sweeps;
    this.wake();
    await this.untilSweeps(s + 2, timeoutMs);
  }

  private async until(word: number, n: number, timeoutMs: number): Promise<void> {
    const i32 = this.table.i32;
    const end = performance.now() + timeoutMs;
    for (;;) {
      // Runs counter: Atomics.add'ed and notified by the GC after each run.
      const runs = Atomics.load(i32, H_GC_RUNS);
      if (((Atomics.load(i32, word) - n) | 0) >= 0) return; // the awaited counter (wrap-safe)
      const left = end - performance.now();
      if (left <= 0) throw new ConntrackError('ERR_CT_TIMEOUT', `GC did not reach ${n} (counter ${Atomics.load(i32, word)}) in ${timeoutMs} ms`);
      const r = waitAsync ? waitAsync(i32, H_GC_RUNS, runs, Math.min(left, 50)) : null;
      if (r && r.async) await r.value;
      else await new Promise((ok) => setTimeout(ok, 1));
    }
  }

  /** Stop the GC thread; resolves when it has left the table. */
  stop(): Promise<void> {
    if (!this.stopping) this.stopping = this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    const started = await this.ready.then(() => true, () => false);
    if (started) {
      const i32 = this.table.i32;
      // Only stop the GC we started (H_GC_WID names its record while it runs).
      if (Atomics.load(i32, H_GC_WID) === this.wid + 1) {
        Atomics.store(i32, H_GC_STOP, 1); // seen by the GC's loop after the wake below
        wakeGc(this.table);
      }
    }
    await this.exited;
    if (this.failure) throw this.failure;
  }
}

/** Start the GC worker thread for `table`. Stop it with `await gc.stop()`. */
export function startGc(table: ConntrackTable, opts: StartGcOptions = {}): GcHandle {
  const i32 = table.i32;
  // Atomics.load: the GC word is CAS'ed by a starting GC; this early check only gives a clear error.
  const g = Atomics.load(i32, H_GC_WID);
  if (g !== 0) {
    // A GC word naming a released record is stale (its GC died and its record was recovered or
    // given back without the word): clear it (CAS) so a new GC can start.
    const alive = Atomics.load(i32, table.sec.workers + (g - 1) * WORKER_WORDS + W_ALIVE) === 1;
    if (alive || Atomics.compareExchange(i32, H_GC_WID, g, 0) !== g) throw stateError('a GC worker already runs on this table');
  }
  return new GcHandle(table, opts);
}
