/**
 * ConntrackPool: packet workers (piscina) deciding batches of packets against one shared table.
 *
 *   const table = ConntrackTable.create();
 *   const pool = new ConntrackPool({ table, workers: 4, dispatch: 'flow' });
 *   const batch = pool.createBatch();
 *   batch.push(linktype, frame, 0, frame.length, nowMs);   // ... thousands of frames
 *   await pool.process(batch);                              // results are in the batch now
 *   batch.read(0, out);                                     // out: a reused BatchVerdict
 *   await pool.close();
 *
 * One task per partition of a batch (dispatch.ts); the pool dispatches a batch only after the
 * previous one it dispatched settled, so 'flow' mode decides every packet as one thread would.
 *
 * Worker death: piscina replaces a worker thread that dies. The dead thread's table worker
 * record stays claimed (W_ALIVE, its threadId in W_PID), holding its cached slots, its limbo
 * list and possibly an online QSBR state. The pool notices the death (the thread's 'exit'),
 * finds the record, runs recovery and the `onWorkerDeath` hook, and rejects the batch whose
 * task died with a WorkerDeathError (after recovery ran). That batch is not redone: the packets
 * before the crash point were applied to the table, the one in progress maybe partly, so a
 * replay would not be the same. `batch.decided(i)` tells which packets have results.
 */
import { once } from 'node:events';
import type { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import {
  BatchVerdict, BH_DATA_BYTES, BH_DATA_USED, BH_FRAGS, DEFAULT_BATCH_PACKETS, IX_FLOW, IX_LEN, IX_LINKTYPE, IX_OFF, IX_PART, IX_WORDS, MAX_TASKS, PacketBatch, TASK_WORDS, TK_FROM, TK_PROGRESS, TK_THREAD, TK_TO, TK_WID,
  type BatchHandle, type BatchOptions,
} from './batch.js';
import { CaptureError, CaptureStream, GzipError, MAX_CAPLEN, type CaptureReader, type CaptureRecord, type CaptureSource } from '../input/capture/reader.js';
import { Dispatcher, type DispatchMode } from './dispatch.js';
import { NatDispatchKey } from '../track/nat/dispatch-key.js';
import { DirectPcapFeeder } from './direct-pcap.js';
import {
  RG_END, RG_EXTRA_BYTES, RG_FIN, RG_PUB, RG_SLOT0, RG_STOP, RG_TASK0, RG_WANT, RING_DATA_BYTES, RING_DEPTH, RT_DONE, RT_EXTRA_LEN, RT_THREAD,
  RT_WID, RT_WORDS, ringBounds, ringBytes, ringExtraAt, ringParty,
} from './ring.js';
import { BatchDecider } from './decide.js';
import { Conntrack } from '../track/core.js';
import { W_ALIVE, W_PID, WORKER_WORDS } from '../table/layout.js';
import { mark } from './timeline.js';
import { LINKTYPE_NFLOG } from '../input/packet/packet.js';
import { nflogTimestampMs } from '../input/packet/parse.js';
import { clockFromEpochMs, type ReplayOutcome } from '../ops/replay.js';
import { ConntrackTable } from '../table/table.js';
import { CTSTATE_NAMES } from '../track/verdict.js';
import { Defrag, type DefragStores } from '../input/defrag/defrag.js';
import { FragStore, H_LOCK } from '../input/defrag/store.js';
import { forceUnlock, lockOwner } from '../table/locks.js';
import { recoverDeadWorker, type RecoveryReport } from '../table/recovery.js';
import { ConntrackError, abortError, argError, checkAbort, rangeError, stateError } from '../errors.js';

/** Passed to every worker thread as workerData. */
export interface PoolWorkerData {
  table: SharedArrayBuffer;
  /** Reassembly queues shared by the workers (src/input/defrag). */
  defrag?: DefragStores;
}

/** One piscina task. */
export interface PoolTask {
  kind: 'decide' | 'close' | 'stream';
  batch: SharedArrayBuffer;
  data: SharedArrayBuffer;
  /** Task record index in the batch. */
  task: number;
  /** Test hook: the worker exits after deciding this many packets of the task. */
  crashAfter?: number;
  /** 'close' tasks: barrier word and number of parties ('stream': number of partitions). */
  barrier?: SharedArrayBuffer;
  parties?: number;
  /** 'stream' tasks (a replay): the ring's control block and its batches (ring.ts). */
  ring?: SharedArrayBuffer;
  slots?: BatchHandle[];
}

/** What a worker answers for a task. */
export interface TaskSummary {
  wid: number;
  threadId: number;
  task: number;
  packets: number;
  /** Reason strings missing from the registry, by code - REASON_EXTRA; null when none. */
  extras: string[] | null;
}

/** A pool worker that died, and what recovery did about it. */
export interface WorkerDeath {
  /** Table worker record of the dead thread (-1 when it had not attached yet). */
  wid: number;
  threadId: number;
  exitCode: number;
  /** What recoverDeadWorker did (null when the thread had no record, or recovery threw). */
  recovery: RecoveryReport | null;
  /** Why recovery failed, when it threw. */
  recoveryError?: unknown;
}

/** Options of new ConntrackPool(). */
export interface PoolOptions {
  /** The shared table; the pool's workers attach to it. */
  table: ConntrackTable;
  /** Worker threads (default 2). */
  workers?: number;
  /** 'flow' (default): as one thread would decide; 'free': any worker, any packet. */
  dispatch?: DispatchMode;
  /**
   * Called after a worker thread died, once its table record was recovered. A batch whose task
   * died rejects only after this returned (or its promise settled).
   */
  onWorkerDeath?: (death: WorkerDeath) => void | Promise<void>;
  /** Worker module (default: the compiled workers/packet-worker.js). */
  workerFile?: string | URL;
}

/** Options of ConntrackPool.process(). */
export interface ProcessOptions {
  /**
   * Checked when the batch is about to be dispatched: an aborted signal rejects with an
   * AbortError (code ABORT_ERR) and no packet of the batch is decided. A batch already handed
   * to the workers runs to its end (a batch is bounded; stopping a worker mid-batch would be
   * a worker death).
   */
  signal?: AbortSignal;
  /** @internal Test hook: the worker of the first task exits after deciding this many of its packets. */
  crashAfter?: number;
}

/** What ConntrackPool.process() resolves to. */
export interface BatchResult {
  packets: number;
  tasks: number;
  /** Worker records that decided packets of the batch. */
  wids: number[];
  /** Reason strings that were not in the registry (empty unless a module added new ones). */
  unregisteredReasons: string[];
}

/** A pool worker died during a batch (code ERR_CT_WORKER_DIED); its table record was recovered. */
export class WorkerDeathError extends ConntrackError {
  constructor(readonly deaths: WorkerDeath[], readonly decided: number, readonly packets: number) {
    super('ERR_CT_WORKER_DIED', `a packet worker died during the batch (${deaths.map((d) => `thread ${d.threadId}, worker record ${d.wid}, exit code ${d.exitCode}`).join('; ') || 'thread unknown'}); ` +
      `${decided} of ${packets} packets were decided, the batch was not retried`);
    this.name = 'WorkerDeathError';
  }
}

/** Options of ConntrackPool.replay(). */
export interface PoolReplayOptions {
  /** Called for every packet in capture order with a reused BatchVerdict. */
  onPacket?: (index: number, v: BatchVerdict, tsMs: number) => void;
  /** Called after each batch with bytes read, total bytes (-1 when unknown) and packets decided. */
  onProgress?: (done: number, total: number, packets: number) => void;
  /**
   * Called when a batch was decided, before the next one is dispatched: the table's event ring
   * holds every event of the packets so far and none of later ones. Given, it makes the replay
   * decide one batch at a time (a barrier per batch); without it, and without NAT rules, flow
   * dispatch keeps several batches in flight (ring.ts).
   */
  onBatch?: (batch: PacketBatch, times: Float64Array) => void;
  /**
   * Table-wide work that needs no batch in flight (the replay's GC sweep). After each batch,
   * `due(0)` says whether to `run()` now; a batch is dispatched ahead of others only while
   * `due(n)` is false for n = the packets in flight with it (each packet inserts at most one
   * entry), so it runs after the same batches as with one batch at a time.
   */
  sweep?: { due(extra: number): boolean; run(): void };
  /** Called before onPacket with the packet's frame (still in the batch's data). */
  onFrame?: (linktype: number, buf: Uint8Array, off: number, len: number) => void;
  /** Packets per batch (default DEFAULT_BATCH_PACKETS). */
  batch?: number;
  /**
   * Stops the replay between batches: the batch in flight finishes, then the call rejects with
   * an AbortError (code ABORT_ERR). Packets decided before stay in the table.
   */
  signal?: AbortSignal;
  /** @internal Test hook: with the ring, the first worker exits after deciding this many packets. */
  crashAfter?: number;
  /**
   * With the ring: the share of the flows (0..1) that the calling thread decides itself, between
   * reading the capture and reporting, as one more party (ring.ts). 0 (default): only the pool's
   * workers decide. `replay --workers N` runs N - 1 workers and gives this thread its share:
   * one worker isolate fewer to start and warm up.
   */
  callerShare?: number;
}

/** What ConntrackPool.replay() returns. */
export interface PoolReplayResult extends ReplayOutcome {
  /** Reason strings a worker met that the registry (reasons.ts) did not know. */
  unregisteredReasons: string[];
}

/** Table clock time of a capture record: NFLOG's own timestamp when it carries one. */
export function recordTimeMs(linktype: number, buf: Uint8Array, off: number, len: number, tsMs: number): number {
  if (linktype === LINKTYPE_NFLOG) {
    const k = nflogTimestampMs(buf, off, len);
    if (k !== null) return k;
  }
  return tsMs;
}

/** Own data bytes per packet of a replay batch: a full-size Ethernet frame. */
const REPLAY_BYTES_PER_PACKET = 1536;

function defaultWorkerFile(): URL {
  // dist/src/pool.js -> dist/workers/packet-worker.js
  return new URL('../../workers/packet-worker.js', import.meta.url);
}

/** Packet worker threads (piscina) deciding shared-memory batches against one table. */
export class ConntrackPool {
  readonly table: ConntrackTable;
  readonly workers: number;
  readonly dispatch: DispatchMode;
  private readonly piscina: Piscina<PoolTask, TaskSummary>;
  /** Reassembly queues shared by the workers. */
  readonly defragStores: DefragStores;
  private readonly dispatcher: Dispatcher;
  private readonly onDeath: ((d: WorkerDeath) => void | Promise<void>) | null;
  /** threadId -> worker record, learnt from task summaries. */
  private readonly wids = new Map<number, number>();
  /** Deaths by threadId, settled once recovery and the hook ran. */
  private readonly deaths = new Map<number, { death: WorkerDeath; handled: Promise<void> }>();
  private readonly watched = new WeakSet<Worker>();
  /** Batches queued or in flight (dispatched one after another) and the last one's settling. */
  private active = 0;
  private tail: Promise<void> = Promise.resolve();
  private closing = false;
  private closed = false;

  constructor(opts: PoolOptions) {
    if (!(opts.table instanceof ConntrackTable)) throw argError('ConntrackPool needs { table: ConntrackTable }');
    const n = opts.workers ?? 2;
    if (!Number.isInteger(n) || n < 1 || n > MAX_TASKS) throw rangeError(`workers must be an integer in 1..${MAX_TASKS}, got ${n}`);
    if (n >= opts.table.maxWorkers) {
      throw new ConntrackError('ERR_CT_NO_RESOURCE', `${n} workers need ${n + 1} table worker records (workers + a caller); the table has ${opts.table.maxWorkers} (raise maxWorkers)`);
    }
    const mode = opts.dispatch ?? 'flow';
    if (mode !== 'flow' && mode !== 'free') throw argError(`dispatch must be 'flow' or 'free', got ${String(mode)}`);
    this.table = opts.table;
    this.workers = n;
    this.dispatch = mode;
    this.dispatcher = new Dispatcher(mode);
    if (mode === 'flow') this.dispatcher.nat = new NatDispatchKey(opts.table); // idle unless NAT rules are set
    this.onDeath = opts.onWorkerDeath ?? null;
    const file = opts.workerFile ?? defaultWorkerFile();
    // One set of reassembly queues for all workers: fragments of a datagram may reach any of
    // them from one batch to the next; flow dispatch keeps them together inside a batch.
    this.defragStores = Defrag.createStores(opts.table.i32, opts.table.sec.sysctl);
    const data: PoolWorkerData = { table: opts.table.buffer, defrag: this.defragStores };
    this.piscina = new Piscina<PoolTask, TaskSummary>({
      filename: typeof file === 'string' ? file : file.href,
      minThreads: n,
      maxThreads: n,
      idleTimeout: Number.POSITIVE_INFINITY,
      concurrentTasksPerWorker: 1,
      workerData: data,
    });
    this.piscina.on('workerCreate', () => { mark('pool: a worker is online'); this.watchThreads(); });
    // Errors outside any task (a worker dying idle): handled through the thread's exit.
    this.piscina.on('error', () => {});
  }

  /** A batch sized for this pool (frames copied in with push(), or referenced with pushRef()). */
  createBatch(opts: BatchOptions = {}): PacketBatch {
    return PacketBatch.create(opts);
  }

  /** Listen for the exit of every thread piscina runs now. */
  private watchThreads(): void {
    for (const w of this.piscina.threads) {
      if (this.watched.has(w)) continue;
      this.watched.add(w);
      const threadId = w.threadId; // -1 after exit: capture it now
      w.once('exit', (code: number) => this.workerExited(threadId, code));
    }
  }

  /** The table worker record a thread owns: from its summaries, else by W_PID. */
  private widOf(threadId: number): number {
    const known = this.wids.get(threadId);
    if (known !== undefined) return known;
    const t = this.table;
    for (let w = 0; w < t.maxWorkers; w++) {
      const base = t.sec.workers + w * WORKER_WORDS;
      // Loads: the record was claimed by another thread (CAS on W_ALIVE, store of W_PID).
      if (Atomics.load(t.i32, base + W_ALIVE) === 1 && Atomics.load(t.i32, base + W_PID) === threadId) return w;
    }
    return -1;
  }

  private workerExited(threadId: number, exitCode: number): void {
    if (this.closing) return; // shutdown: the workers left the table themselves
    const death: WorkerDeath = { wid: this.widOf(threadId), threadId, exitCode, recovery: null };
    this.wids.delete(threadId);
    const handled = (async () => {
      if (death.wid >= 0) {
        // Finish or undo what the dead thread was doing in the table, give its record back.
        try {
          death.recovery = recoverDeadWorker(this.table, death.wid);
        } catch (e) {
          death.recoveryError = e;
        }
        // A thread that died holding a reassembly store's lock may have left it half-changed:
        // empty that store (reassembly state is soft: the datagrams in it are lost) and free it.
        for (const h of [this.defragStores.v4, this.defragStores.v6]) {
          const store = FragStore.attach(h);
          if (lockOwner(Atomics.load(store.i32, H_LOCK)) === death.wid) { // the dead owner cannot change it now
            store.reset();
            forceUnlock(store.i32, H_LOCK, death.wid);
          }
        }
      }
      if (this.onDeath) await this.onDeath(death);
    })();
    handled.catch(() => {}); // surfaced through the failing batch
    this.deaths.set(threadId, { death, handled });
  }

  /**
   * Decide every packet of the batch. Resolves when all results are in the batch; rejects with
   * WorkerDeathError when a worker died (after recovery), or with the worker's error.
   */
  process(batch: PacketBatch, opts: ProcessOptions = {}): Promise<BatchResult> {
    if (this.closing || this.closed) return Promise.reject(stateError('the pool is closed'));
    // Dispatch at once (synchronously, so the caller can fill another batch meanwhile) when no
    // batch is queued or in flight; otherwise after the last one settled.
    const start = (): Promise<BatchResult> => this.run(batch, opts).finally(() => { this.active--; });
    const p = this.active > 0 ? this.tail.then(start, start) : start();
    this.active++;
    this.tail = p.then(() => {}, () => {});
    return p;
  }

  private async run(batch: PacketBatch, opts: ProcessOptions): Promise<BatchResult> {
    checkAbort(opts.signal, 'pool.process');
    const n = batch.count;
    if (n === 0) return { packets: 0, tasks: 0, wids: [], unregisteredReasons: [] };
    const ntasks = this.dispatcher.split(batch, this.workers);
    const runs: Promise<TaskSummary>[] = [];
    for (let t = 0; t < ntasks; t++) {
      const task: PoolTask = { kind: 'decide', batch: batch.buffer, data: batch.data, task: t };
      if (t === 0 && opts.crashAfter !== undefined) task.crashAfter = opts.crashAfter;
      runs.push(this.piscina.run(task));
    }
    const out = await Promise.allSettled(runs);
    const wids = new Set<number>();
    const extras: (readonly string[])[] = [];
    const unregistered = new Set<string>();
    let failed: unknown = null;
    const deaths: WorkerDeath[] = [];
    for (let t = 0; t < ntasks; t++) {
      const r = out[t]!;
      if (r.status === 'fulfilled') {
        const s = r.value;
        this.wids.set(s.threadId, s.wid);
        wids.add(s.wid);
        extras[t] = s.extras ?? [];
        for (const e of s.extras ?? []) unregistered.add(e);
        continue;
      }
      extras[t] = [];
      // Which thread held the task (it stores its threadId before deciding anything).
      const tr = batch.sec.tasks + t * TASK_WORDS;
      const tid = Atomics.load(batch.i32, tr + TK_THREAD); // pairs with the worker's store
      const d = tid !== 0 ? await this.deathOf(tid) : null;
      if (d) deaths.push(d);
      else failed ??= r.reason;
    }
    batch.extras = extras;
    if (deaths.length > 0 || failed !== null) {
      let decided = 0;
      for (let t = 0; t < ntasks; t++) {
        decided += Atomics.load(batch.i32, batch.sec.tasks + t * TASK_WORDS + TK_PROGRESS); // published by the worker
      }
      if (deaths.length > 0) throw new WorkerDeathError(deaths, decided, n);
      throw failed;
    }
    if (!batch.complete) throw new ConntrackError('ERR_CT_INTERNAL', 'internal: batch tasks finished but not every packet was decided');
    return { packets: n, tasks: ntasks, wids: [...wids].sort((a, b) => a - b), unregisteredReasons: [...unregistered] };
  }

  /** The death record of a thread, after its handling finished; null if it did not die. */
  private async deathOf(threadId: number): Promise<WorkerDeath | null> {
    // piscina rejects the task from its own 'exit' listener; ours (registered later) runs in
    // the same dispatch, so the record exists by now. Give it a turn in case it does not.
    let d = this.deaths.get(threadId);
    if (!d) {
      await new Promise((r) => setImmediate(r));
      d = this.deaths.get(threadId);
    }
    if (!d) return null;
    await d.handled.catch(() => {});
    return d.death;
  }

  /** Deaths seen so far. */
  get workerDeaths(): WorkerDeath[] {
    return [...this.deaths.values()].map((d) => d.death);
  }

  /**
   * Replay a capture through the pool: capture timestamps drive the table clock. The capture is
   * streamed (bytes in memory, a path, `-`, a Readable or async chunks; gzip too): frames are
   * copied into a few batches' own shared data areas (a classic pcap file is read straight into
   * them), so memory stays flat whatever the capture's size. With flow dispatch, no NAT rules
   * and no `onBatch`, the workers take the batches from a ring (ring.ts): each decides its own
   * flows of every batch, with no message and no barrier per batch, while this thread reads
   * ahead and reports in capture order. Otherwise batches are dispatched one after another (the
   * next is filled while the workers decide the current).
   */
  async replay(source: CaptureSource, opts: PoolReplayOptions = {}): Promise<PoolReplayResult> {
    // A classic pcap file is read straight into the batches (no copy on this thread); any other
    // source is streamed through CaptureStream.
    mark('pool.replay: start');
    const direct = typeof source === 'string' ? DirectPcapFeeder.open(source) : null;
    const cs = direct === null ? new CaptureStream(source) : null;
    const cap = opts.batch ?? DEFAULT_BATCH_PACKETS;
    const ring = this.dispatch === 'flow' && opts.onBatch === undefined && !(this.dispatcher.nat?.active() ?? false);
    const depth = ring ? RING_DEPTH : 2;
    // Room for full-size Ethernet frames (the ring: within its byte budget); a bigger frame, or
    // a full data area, closes the batch early.
    const dataBytes = Math.max(Math.min(cap * REPLAY_BYTES_PER_PACKET, ring ? RING_DATA_BYTES / depth : Infinity), MAX_CAPLEN);
    const batches: PacketBatch[] = [];
    const ts: Float64Array[] = [];
    for (let k = 0; k < depth; k++) {
      batches.push(PacketBatch.create({ capacity: cap, dataBytes }));
      ts.push(new Float64Array(cap));
    }
    const counts: Record<string, number> = {};
    for (const s of CTSTATE_NAMES) counts[s] = 0;
    const unregistered = new Set<string>();
    let error: CaptureError | null = null;
    let eof = false;
    let packets = 0;
    let now = 0;
    let lastTsMs = 0;
    let reader: CaptureReader | null = null;
    /** A record read but not pushed (its batch was full); the reader is not pulled on meanwhile. */
    let held: CaptureRecord | null = null;

    /** Room for one more frame of `len` bytes (count and own data area). */
    const fits = (b: PacketBatch, len: number): boolean =>
      b.count < b.capacity && b.i32[BH_DATA_USED]! + len <= b.i32[BH_DATA_BYTES]!;

    const fill = async (k: number): Promise<number> => {
      const b = batches[k]!;
      const times = ts[k]!;
      if (direct !== null) {
        if (eof) { b.reset(); return 0; }
        const r = direct.fill(b, times, recordTimeMs, clockFromEpochMs);
        if (r.error !== null) error = r.error;
        if (r.eof || r.error !== null) eof = true;
        return b.count;
      }
      b.reset();
      while (!eof) {
        if (reader === null) {
          try {
            reader = await cs!.pull();
          } catch (e) {
            if (!(e instanceof GzipError)) throw e; // I/O errors, not a capture: the replay rejects
            error = e;
            eof = true;
            break;
          }
          if (reader === null) { eof = true; break; }
        }
        let rec: CaptureRecord | null;
        try {
          rec = held ?? reader.next();
        } catch (e) {
          if (!(e instanceof CaptureError)) throw e;
          error = e;
          eof = true;
          break;
        }
        held = null;
        if (rec === null) {
          if (reader.done) { eof = true; break; }
          reader = null; // drained: read more (the frames pushed so far were copied out)
          continue;
        }
        if (!fits(b, rec.len)) {
          if (b.count === 0) {
            error = new CaptureError(`record at offset ${rec.recordOffset}: captured length ${rec.len} is too large for a pool batch (${b.i32[BH_DATA_BYTES]!} bytes)`, rec.recordOffset);
            eof = true;
            break;
          }
          held = rec;
          break;
        }
        const t = recordTimeMs(rec.linktype, rec.buf, rec.off, rec.len, rec.tsMs);
        times[b.count] = t;
        b.push(rec.linktype, rec.buf, rec.off, rec.len, clockFromEpochMs(t));
      }
      return b.count;
    };

    const totalBytes = direct !== null ? direct.totalBytes : cs!.totalBytes;
    const bytesRead = (): number => (direct !== null ? direct.bytesRead : cs!.bytesRead);
    const v = new BatchVerdict();
    const report = (k: number): void => {
      const b = batches[k]!;
      const times = ts[k]!;
      const m = b.count;
      const ix = b.sec.index;
      for (let i = 0; i < m; i++) {
        b.read(i, v);
        if (opts.onFrame) {
          const x = ix + i * IX_WORDS;
          opts.onFrame(b.i32[x + IX_LINKTYPE]!, b.bytes, b.u32[x + IX_OFF]!, b.i32[x + IX_LEN]!);
        }
        counts[CTSTATE_NAMES[v.state]!]!++;
        if (opts.onPacket) opts.onPacket(packets + i, v, times[i]!);
      }
      packets += m;
      lastTsMs = times[m - 1]!;
      now = b.now(m - 1);
    };
    const sweep = opts.sweep ?? null;

    checkAbort(opts.signal, 'pool.replay');
    try {
      if (ring) {
        const r = await this.replayRing(batches, fill, (k) => {
          report(k);
          if (opts.onProgress) opts.onProgress(bytesRead(), totalBytes, packets);
        }, sweep, opts.signal, opts.crashAfter, opts.callerShare ?? 0);
        for (const e of r) unregistered.add(e);
      } else {
        let cur = 0;
        await fill(cur);
        let pending: Promise<BatchResult> | null = batches[cur]!.count > 0 ? this.process(batches[cur]!) : null;
        while (pending) {
          const next = 1 - cur;
          await fill(next); // while the workers decide `cur`
          const r = await pending;
          if (opts.signal?.aborted) {
            this.table.clock = batches[cur]!.now(batches[cur]!.count - 1);
            throw abortError(opts.signal, 'pool.replay'); // between batches: none in flight
          }
          for (const e of r.unregisteredReasons) unregistered.add(e);
          // The table clock as of the last packet decided (read by GC and destroy events).
          this.table.clock = batches[cur]!.now(batches[cur]!.count - 1);
          if (sweep !== null && sweep.due(0)) sweep.run();
          // Every event of `cur` is in the table's event ring now, none of `next` yet.
          if (opts.onBatch) opts.onBatch(batches[cur]!, ts[cur]!);
          pending = batches[next]!.count > 0 ? this.process(batches[next]!) : null;
          report(cur);
          if (opts.onProgress) opts.onProgress(bytesRead(), totalBytes, packets);
          cur = next;
        }
      }
    } finally {
      direct?.close();
      await cs?.close();
    }
    if (opts.onProgress) opts.onProgress(bytesRead(), totalBytes, packets);
    return { packets, counts, error, now, lastTsMs, table: this.table, unregisteredReasons: [...unregistered] };
  }

  /**
   * The ring (ring.ts): one long 'stream' task per worker; this thread fills slot after slot
   * (`fill`), marks each packet's party, publishes, and hands each batch that every party
   * finished to `report`, in order, before refilling its slot. With `callerShare` > 0 this thread
   * is a party too (the last one): between fills and reports it decides its own flows of the
   * oldest batch it has not decided, on its own tracker (a table worker record of its own).
   * Resolves with the reason strings the registry lacked; rejects with an AbortError (the
   * batches in flight finish first), a WorkerDeathError (after recovery) or a worker's error.
   */
  private async replayRing(
    batches: PacketBatch[], fill: (k: number) => Promise<number>, report: (k: number) => void,
    sweep: { due(extra: number): boolean; run(): void } | null, signal: AbortSignal | undefined, crashAfter: number | undefined,
    callerShare: number,
  ): Promise<string[]> {
    if (this.closing || this.closed) throw stateError('the pool is closed');
    const depth = batches.length;
    const nw = this.workers;
    const parts = nw + (callerShare > 0 ? 1 : 0);
    const bounds = ringBounds(nw, callerShare);
    const ctl = new SharedArrayBuffer(ringBytes(parts));
    const rg = new Int32Array(ctl);
    // Queued behind any batch of process() still in flight; close() waits for the ring.
    const prev = this.tail;
    let settle!: () => void;
    this.tail = new Promise<void>((r) => { settle = r; });
    this.active++;
    await prev;
    const slots = batches.map((b) => b.handle());
    const tasks: Promise<TaskSummary>[] = [];
    for (let t = 0; t < nw; t++) {
      const task: PoolTask = { kind: 'stream', batch: ctl, data: ctl, task: t, parties: parts, ring: ctl, slots };
      if (t === 0 && crashAfter !== undefined) task.crashAfter = crashAfter;
      tasks.push(this.piscina.run(task));
    }
    mark('ring: tasks posted');
    // Settles (never resolves) when a task failed: every wait below races it.
    let failure: unknown = null;
    const failed = new Promise<never>((_, reject) => {
      for (const p of tasks) p.catch((e: unknown) => { failure ??= e; reject(e); });
    });
    failed.catch(() => {});
    const waitAsync = (Atomics as unknown as {
      waitAsync(a: Int32Array, i: number, v: number, t?: number): { async: boolean; value: Promise<string> | string };
    }).waitAsync;
    const extras: (string[] | null)[] = new Array<string[] | null>(parts).fill(null);
    const extraLen = new Int32Array(parts);
    const readExtras = (): void => {
      for (let w = 0; w < parts; w++) {
        const len = Atomics.load(rg, RG_TASK0 + w * RT_WORDS + RT_EXTRA_LEN); // stored before the party's RT_DONE
        if (len === extraLen[w]) continue;
        extraLen[w] = len;
        extras[w] = JSON.parse(new TextDecoder().decode(new Uint8Array(ctl, ringExtraAt(parts, w), len))) as string[];
      }
    };
    const end = (): void => {
      Atomics.store(rg, RG_END, 1); // nothing after RG_PUB
      Atomics.notify(rg, RG_PUB);
    };
    /** Sleep until RG_FIN (batches every party finished) reaches `want`; returns it. */
    const waitFin = async (want: number): Promise<number> => {
      Atomics.store(rg, RG_WANT, want); // before reading RG_FIN: a party past it notifies
      for (;;) {
        if (failure !== null) throw failure;
        const fin = Atomics.load(rg, RG_FIN); // acquire: the finished batches' results
        if (fin >= want) return fin;
        const w = waitAsync(rg, RG_FIN, fin, 1000);
        if (w.async) await Promise.race([w.value, failed]);
      }
    };
    // Each packet's party, from its flow hash (the same walk the dispatcher's split does), and
    // each party's list of its packets (task record p: [TK_FROM, TK_TO) of the batch's lists).
    const hashes = new Int32Array(batches[0]!.capacity);
    const counts = new Int32Array(parts + 1);
    const partition = (b: PacketBatch): void => {
      const frags = this.dispatcher.flows(b, hashes);
      const i32 = b.i32;
      const { index, lists, tasks: tk } = b.sec;
      const n = b.count;
      counts.fill(0);
      for (let i = 0; i < n; i++) {
        const h = hashes[i]! >>> 0;
        const x = index + i * IX_WORDS;
        const p = ringParty(h, bounds);
        i32[x + IX_FLOW] = h | 0;
        i32[x + IX_PART] = p;
        counts[p + 1]!++;
      }
      for (let p = 0; p < parts; p++) {
        counts[p + 1]! += counts[p]!;
        i32[tk + p * TASK_WORDS + TK_FROM] = counts[p]!;
        i32[tk + p * TASK_WORDS + TK_TO] = counts[p + 1]!;
      }
      for (let i = 0; i < n; i++) i32[lists + counts[i32[index + i * IX_WORDS + IX_PART]!]!++] = i; // capture order per party
      i32[BH_FRAGS] = frags;
    };
    // The caller share: this thread's tracker and its party number.
    const me = nw;
    const decider = callerShare > 0 ? new BatchDecider(new Conntrack(this.table, { defragStores: this.defragStores })) : null;
    const callerExtras = decider !== null ? new Uint8Array(ctl, ringExtraAt(parts, me), RG_EXTRA_BYTES) : null;
    if (decider !== null) Atomics.store(rg, RG_TASK0 + me * RT_WORDS + RT_WID, decider.ct.wid); // RT_THREAD stays 0: no pool thread
    let filled = 0;
    let published = 0;
    let reported = 0;
    /** Batches this thread decided its share of (caller share). */
    let mine = 0;
    let minePackets = 0;
    /** The last batch this thread decided held fragments: the next waits for every party. */
    let mineAfterFrags = false;
    /** Packets of the batches published and not reported. */
    let inFlight = 0;
    let ended = false;
    let out: PromiseSettledResult<TaskSummary>[];
    try {
      for (;;) {
        // Publish what is filled, unless a sweep may come due before the batch is decided.
        while (published < filled) {
          const b = batches[published % depth]!;
          if (published > reported && sweep !== null && sweep.due(inFlight + b.count)) break;
          inFlight += b.count;
          Atomics.store(rg, RG_SLOT0 + (published % depth), 0); // every party finished its last use
          published++;
          Atomics.store(rg, RG_PUB, published); // release: the batch's frames, index and parties
          Atomics.notify(rg, RG_PUB);
        }
        if (ended && published === filled) end();
        // Read ahead into a free slot.
        if (!ended && filled - reported < depth) {
          const k = filled % depth;
          if (await fill(k) === 0) ended = true;
          else {
            partition(batches[k]!);
            filled++;
          }
          if (filled === 1 && published === 0) mark('ring: first batch filled');
          continue;
        }
        let fin = Atomics.load(rg, RG_FIN); // batches every party finished (in order)
        // This thread's share of the oldest batch it has not decided; a batch with fragments (or
        // the one after it) only once every party finished the batches before it.
        let blocked = false;
        if (decider !== null && mine < published) {
          const b = batches[mine % depth]!;
          const frags = b.i32[BH_FRAGS]! > 0;
          blocked = (frags || mineAfterFrags) && fin < mine;
          if (!blocked && fin <= reported) {
            minePackets += decider.decideShare(b, me, minePackets, -1);
            decider.finishRingBatch(rg, callerExtras!, me, mine, parts, depth);
            mineAfterFrags = frags;
            mine++;
            if (mine === 1) mark('ring: caller share of the first batch decided');
            continue;
          }
        }
        if (reported === published) break; // (then everything was filled and published)
        // Wait until every party finished batch `reported`: with the ring full and nothing of its
        // own to decide, until a quarter of it is (then report and refill those), so this thread
        // wakes once per few batches.
        if (fin <= reported) {
          // (With a share of its own left, this thread waits only at a fragment barrier.)
          fin = await waitFin(blocked ? mine : reported + (published - reported === depth ? depth >> 2 : 1));
          if (fin <= reported) continue; // (a fragment barrier: decide now)
        }
        const k = reported % depth;
        const b = batches[k]!;
        inFlight -= b.count;
        readExtras();
        b.extras = extras.map((e) => e ?? []);
        reported++;
        // The table clock as of the last packet reported (read by GC and destroy events).
        this.table.clock = b.now(b.count - 1);
        if (signal?.aborted) throw abortError(signal, 'pool.replay');
        if (sweep !== null && reported === published && sweep.due(0)) sweep.run(); // no batch in flight
        report(k);
      }
      end();
      mark('ring: every batch reported');
      out = await Promise.allSettled(tasks); // every task returns once the ring ended
      mark('ring: tasks returned');
    } catch (e) {
      // Let the workers finish what was published (an abort: "the batch in flight finishes"),
      // or leave at once when one died.
      end();
      if (failure !== null || !(e instanceof ConntrackError && e.code === 'ABORT_ERR')) {
        Atomics.store(rg, RG_STOP, 1); // leave, even from a fragment batch's wait
        Atomics.notify(rg, RG_PUB);
        for (let w = 0; w < parts; w++) Atomics.notify(rg, RG_TASK0 + w * RT_WORDS + RT_DONE);
      } else if (decider !== null) {
        // An abort: this thread's share of what was published, so that every batch in flight
        // finishes as it would without the caller share (fragment barriers: the workers wait).
        try {
          while (mine < published) {
            const b = batches[mine % depth]!;
            const frags = b.i32[BH_FRAGS]! > 0;
            if (frags || mineAfterFrags) await waitFin(mine);
            minePackets += decider.decideShare(b, me, minePackets, -1);
            decider.finishRingBatch(rg, callerExtras!, me, mine, parts, depth);
            mineAfterFrags = frags;
            mine++;
          }
        } catch {
          // a worker failed meanwhile: reported below
        }
      }
      const settled = await Promise.allSettled(tasks);
      if (failure !== null) throw await this.ringFailure(settled, rg, nw, failure, reported, published, batches);
      throw e;
    } finally {
      decider?.ct.close(); // gives its table worker record back
      this.active--;
      settle(); // after the tasks returned: close() may run its own tasks now
    }
    const unregistered = new Set<string>(decider?.extras ?? []);
    for (const r of out) {
      if (r.status === 'rejected') throw await this.ringFailure(out, rg, nw, r.reason, reported, published, batches);
      this.wids.set(r.value.threadId, r.value.wid);
      for (const x of r.value.extras ?? []) unregistered.add(x);
    }
    return [...unregistered];
  }

  /** The error of a ring whose task failed: a WorkerDeathError when a worker died (after recovery). */
  private async ringFailure(
    out: PromiseSettledResult<TaskSummary>[], rg: Int32Array, workers: number, first: unknown,
    reported: number, published: number, batches: PacketBatch[],
  ): Promise<unknown> {
    const deaths: WorkerDeath[] = [];
    for (let t = 0; t < workers; t++) {
      if (out[t]!.status !== 'rejected') continue;
      const tid = Atomics.load(rg, RG_TASK0 + t * RT_WORDS + RT_THREAD); // stored by the worker first
      const d = tid !== 0 ? await this.deathOf(tid) : null;
      if (d) deaths.push(d);
    }
    if (deaths.length === 0) return first;
    let decided = 0, total = 0;
    for (let s = 0; s < published; s++) {
      const b = batches[s % batches.length]!;
      if (s < reported) { decided += b.count; total += b.count; continue; }
      if (s >= reported + batches.length) break;
      total += b.count;
      for (let i = 0; i < b.count; i++) if (b.decided(i)) decided++;
    }
    return new WorkerDeathError(deaths, decided, total);
  }

  /**
   * Wait for the batch in flight, let every worker leave the table (give its cached slots and
   * record back), then stop the threads.
   */
  async close(): Promise<void> {
    if (this.closed || this.closing) return;
    await this.tail;
    this.closing = true;
    try {
      const n = this.piscina.threads.length;
      if (n > 0) {
        const barrier = new SharedArrayBuffer(4);
        const empty = new SharedArrayBuffer(4);
        const leaving: Promise<TaskSummary>[] = [];
        for (let k = 0; k < n; k++) {
          leaving.push(this.piscina.run({ kind: 'close', batch: empty, data: empty, task: -1, barrier, parties: n }));
        }
        await Promise.allSettled(leaving);
      }
    } finally {
      const threads = [...this.piscina.threads];
      await this.piscina.destroy();
      await Promise.all(threads.map((w) => (w.threadId >= 0 ? once(w, 'exit').catch(() => {}) : undefined)));
      this.closed = true;
    }
  }
}
