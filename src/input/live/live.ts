/**
 * Live traffic from the kernel through NFQUEUE: one packet worker per queue, each owning its
 * queue's netlink socket and deciding in its own thread (workers/nfqueue-worker.ts), on one
 * shared table, with the GC worker. The supervisor here restarts a worker that dies: it
 * recovers the dead thread's table state (recoverDeadWorker), closes its socket (the kernel
 * drops the packets it held; TCP retransmits them) and starts a new worker on the same queue.
 */
import { Worker } from 'node:worker_threads';
import { ConntrackTable, type TableHandle } from '../../table/table.js';
import { startGc, type GcHandle } from '../../table/gc.js';
import { recoverDeadWorker, type RecoveryReport } from '../../table/recovery.js';
import type { PolicySpec } from '../../ops/policy.js';
import { Policy } from '../../ops/policy.js';
import { loadLibc, NetlinkSocket } from './netlink.js';
import {
  COUNTER_NAMES, Q_CRASH_AFTER, Q_FD, Q_KERNEL_CT, Q_RESTARTS, Q_STATE, Q_STOP, Q_WID, Q_WORDS, QS_FAILED, QS_STOPPED,
} from './control.js';

/**
 * shadow: the kernel decides, ours is compared with it; enforce: ours decides (policy);
 * accept: accept everything without tracking (the queue's own ceiling, for the bench);
 * monitor: passive, no queue: frames read from interfaces (AF_PACKET, e.g. mirror ports).
 */
export type LiveMode = 'shadow' | 'enforce' | 'accept' | 'monitor';

/** Options of LiveQueues: queues, mode (shadow, enforce, accept, monitor), policy and socket settings. */
export interface LiveOptions {
  table: ConntrackTable;
  /** Queue numbers, one packet worker each (NFQUEUE modes). */
  queues?: number[];
  /** Monitor mode: interfaces to read, one worker each. */
  interfaces?: string[];
  mode: LiveMode;
  policy?: PolicySpec;
  /** Bytes of each packet copied from the kernel (default 0xffff: whole packets). */
  copyRange?: number;
  /** Packets the kernel holds per queue (default 4096). */
  maxLen?: number;
  /** Let packets through when the queue is full (default true). */
  failOpen?: boolean;
  /** Socket receive buffer (default 8 MiB). */
  receiveBuffer?: number;
  /** Conntrack zone of the queued packets (default 0). */
  zone?: number;
  /** Network namespace (name under /run/netns, or a path) whose queues the workers bind. */
  netns?: string;
  /** Run the GC worker (default true). */
  gc?: boolean;
  /** Restart a worker that dies (default true). */
  restart?: boolean;
  /** Called after a dead worker was recovered and replaced. */
  onRestart?: (queue: number, report: RecoveryReport | null, exitCode: number) => void;
  onError?: (queue: number, message: string) => void;
}

/** What a worker gets in workerData. */
export interface LiveWorkerData {
  table: TableHandle;
  control: SharedArrayBuffer;
  index: number;
  queue: number;
  /** Monitor mode: the interface this worker reads. */
  iface: string | null;
  mode: LiveMode;
  policy: PolicySpec;
  copyRange: number;
  maxLen: number;
  failOpen: boolean;
  receiveBuffer: number;
  zone: number;
  netns: string | null;
}

/** Restarts of one queue's worker after which the supervisor gives up on it. */
const MAX_RESTARTS = 100;

/** Per-queue counters of a live run (packets, verdicts, shadow mismatches, errors) with the queue number. */
export type QueueCounters = Record<string, number> & { queue: number };

/** Parse "0-1", "3", "0,2,5-6" into queue numbers. */
export function parseQueues(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) throw new Error(`bad queue list "${s}" (expected e.g. 0-1 or 0,2)`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo || hi > 65535) throw new Error(`bad queue range "${part}"`);
    for (let x = lo; x <= hi; x++) if (!out.includes(x)) out.push(x);
  }
  if (out.length === 0 || out.length > 64) throw new Error('between 1 and 64 queues');
  return out;
}

/** Live traffic: one packet worker per NFQUEUE queue (or AF_PACKET interface) deciding on a shared table, with the GC worker. */
export class LiveQueues {
  readonly table: ConntrackTable;
  readonly queues: readonly number[];
  readonly control: SharedArrayBuffer;
  private readonly ctl: Int32Array;
  private readonly workers: Array<Worker | null>;
  private readonly opts: LiveOptions;
  private gc: GcHandle | null = null;
  private stopping = false;
  private readonly exits: Array<Promise<void>>;
  private pendingRestarts = 0;
  /** Dead workers recovered so far. */
  readonly recoveries: Array<{ queue: number; exitCode: number; report: RecoveryReport | null }> = [];

  /** Monitor mode: the interfaces (index i reads interfaces[i]); else empty. */
  readonly interfaces: readonly string[];

  private constructor(opts: LiveOptions) {
    this.opts = opts;
    this.table = opts.table;
    this.interfaces = opts.mode === 'monitor' ? opts.interfaces ?? [] : [];
    // Monitor workers are numbered like queues (0..n-1) in the counters.
    this.queues = opts.mode === 'monitor' ? this.interfaces.map((_x, i) => i) : opts.queues ?? [];
    const n = this.queues.length;
    if (n === 0) throw new Error(opts.mode === 'monitor' ? 'monitor mode needs interfaces' : 'no queues');
    this.control = new SharedArrayBuffer(n * Q_WORDS * 4);
    this.ctl = new Int32Array(this.control);
    this.workers = this.queues.map(() => null);
    this.exits = this.queues.map(() => Promise.resolve());
    for (let i = 0; i < n; i++) Atomics.store(this.ctl, i * Q_WORDS + Q_CRASH_AFTER, -1); // disarmed; read by the workers
  }

  /** Start one worker per queue (resolves when every queue is bound) and the GC worker. */
  static async start(opts: LiveOptions): Promise<LiveQueues> {
    await loadLibc(); // a clear error here when koffi is missing
    new Policy(opts.policy ?? {}); // and for a bad policy
    const lq = new LiveQueues(opts);
    try {
      await Promise.all(lq.queues.map((_q, i) => lq.spawn(i)));
      if (opts.gc !== false) {
        lq.gc = startGc(opts.table);
        await lq.gc.ready;
      }
    } catch (e) {
      await lq.stop().catch(() => {});
      throw e;
    }
    return lq;
  }

  private data(i: number): LiveWorkerData {
    const o = this.opts;
    return {
      table: this.table.handle(), control: this.control, index: i, queue: this.queues[i]!,
      iface: this.interfaces[i] ?? null, mode: o.mode,
      policy: o.policy ?? {}, copyRange: o.copyRange ?? 0xffff, maxLen: o.maxLen ?? 4096,
      failOpen: o.failOpen ?? true, receiveBuffer: o.receiveBuffer ?? 8 << 20, zone: o.zone ?? 0,
      netns: o.netns ?? null,
    };
  }

  private spawn(i: number): Promise<void> {
    const file = this.opts.mode === 'monitor' ? 'capture-worker.js' : 'nfqueue-worker.js';
    const w = new Worker(new URL(`../../../workers/${file}`, import.meta.url), { workerData: this.data(i) });
    this.workers[i] = w;
    // Fresh record: Atomics.store, read by the new worker (it starts after this).
    Atomics.store(this.ctl, i * Q_WORDS + Q_STOP, 0);
    Atomics.store(this.ctl, i * Q_WORDS + Q_FD, -1);
    Atomics.store(this.ctl, i * Q_WORDS + Q_WID, -1);
    let ready: () => void = () => {};
    let fail: (e: Error) => void = () => {};
    const started = new Promise<void>((ok, no) => { ready = ok; fail = no; });
    let up = false;
    w.on('message', (m: { type: string; message?: string }) => {
      if (m.type === 'ready') { up = true; ready(); }
      else if (m.type === 'error') {
        const err = new Error(`queue ${this.queues[i]}: ${m.message}`);
        if (!up) fail(err);
        else this.opts.onError?.(this.queues[i]!, err.message);
      }
    });
    w.on('error', (e) => { if (!up) fail(e); else this.opts.onError?.(this.queues[i]!, e.message); });
    this.exits[i] = new Promise<void>((done) => {
      w.once('exit', (code) => {
        if (!up) fail(new Error(`queue ${this.queues[i]}: worker exited (${code}) before binding`));
        void this.exited(i, w, code, up).finally(done);
      });
    });
    return started;
  }

  private async exited(i: number, w: Worker, code: number, up: boolean): Promise<void> {
    if (this.workers[i] === w) this.workers[i] = null;
    const rec = i * Q_WORDS;
    const st = Atomics.load(this.ctl, rec + Q_STATE); // written by the worker
    if (st === QS_STOPPED) return; // a clean exit
    // Failed or died: recover its table state and close its socket. One that failed before it
    // bound its queue is reported by start(); one that died afterwards is replaced (at most
    // MAX_RESTARTS times per queue).
    // The dead worker's last stores (its table record and socket), visible now that it exited.
    const wid = Atomics.load(this.ctl, rec + Q_WID);
    const fd = Atomics.load(this.ctl, rec + Q_FD);
    let report: RecoveryReport | null = null;
    if (wid >= 0) report = recoverDeadWorker(this.table, wid);
    if (fd >= 0) await NetlinkSocket.closeFd(fd); // unbinds the queue; the kernel drops what it held
    Atomics.store(this.ctl, rec + Q_WID, -1); // recovered: the supervisor's own record word now
    Atomics.store(this.ctl, rec + Q_FD, -1);
    if (!up) return;
    this.recoveries.push({ queue: this.queues[i]!, exitCode: code, report });
    Atomics.add(this.ctl, rec + Q_RESTARTS, 1); // supervisor-owned counter
    if (this.stopping || this.opts.restart === false) return;
    if (Atomics.load(this.ctl, rec + Q_RESTARTS) > MAX_RESTARTS) { // supervisor-owned
      this.opts.onError?.(this.queues[i]!, `not restarted: ${MAX_RESTARTS} restarts already`);
      return;
    }
    this.pendingRestarts++;
    try {
      Atomics.store(this.ctl, rec + Q_CRASH_AFTER, -1); // the test hook fired: disarm it for the new worker
      await this.spawn(i);
      this.opts.onRestart?.(this.queues[i]!, report, code);
    } catch (e) {
      this.opts.onError?.(this.queues[i]!, `restart failed: ${(e as Error).message}`);
    } finally {
      this.pendingRestarts--;
    }
  }

  /** Test hook: the worker of queue index `i` exits after `n` more packets, holding its batch. */
  crashAfter(i: number, n: number): void {
    Atomics.store(this.ctl, i * Q_WORDS + Q_CRASH_AFTER, n); // read by the worker at its next turn
  }

  /** Terminate the worker of queue index `i` (as a crash: it is recovered and replaced). */
  async kill(i: number): Promise<void> {
    const w = this.workers[i];
    if (!w) return;
    const ex = this.exits[i];
    await w.terminate();
    await ex;
  }

  /** Wait until every restart in progress finished. */
  async settled(): Promise<void> {
    for (let k = 0; k < 500 && this.pendingRestarts > 0; k++) await new Promise((r) => setTimeout(r, 10));
  }

  /** Whether the kernel attaches its conntrack info (NFQA_CT) on queue index i. */
  kernelConntrack(i: number): boolean {
    return Atomics.load(this.ctl, i * Q_WORDS + Q_KERNEL_CT) === 1; // set by the worker before 'ready'
  }

  counters(): QueueCounters[] {
    return this.queues.map((queue, i) => {
      const o: QueueCounters = { queue };
      for (const [name, w] of COUNTER_NAMES) o[name] = Atomics.load(this.ctl, i * Q_WORDS + w); // worker-published
      return o;
    });
  }

  totals(): Record<string, number> {
    const t: Record<string, number> = {};
    for (const c of this.counters()) for (const [k, v] of Object.entries(c)) if (k !== 'queue') t[k] = (t[k] ?? 0) + v;
    return t;
  }

  /**
   * Stop: every worker gives verdicts for the packets it received, closes its socket and
   * leaves the table; then the GC worker stops.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.settled();
    for (let i = 0; i < this.queues.length; i++) Atomics.store(this.ctl, i * Q_WORDS + Q_STOP, 1); // read by the worker each turn
    const deadline = new Promise<void>((r) => setTimeout(r, 3000).unref());
    await Promise.race([Promise.all(this.exits), deadline]);
    for (const w of this.workers) if (w) await w.terminate();
    await Promise.all(this.exits);
    if (this.gc) await this.gc.stop();
  }
}
