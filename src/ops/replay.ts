/**
 * Replaying a capture through a table on this thread: the capture's timestamps drive the
 * table clock, so timeouts expire as they did when the traffic was recorded.
 */
import { CaptureError, CaptureStream, GzipError, isGzipMagic, readCapture, type CaptureReader, type CaptureSource } from '../input/capture/reader.js';
import { Conntrack } from '../track/core.js';
import type { EventSink } from '../table/events.js';
import { LINKTYPE_NFLOG } from '../input/packet/packet.js';
import { nflogTimestampMs } from '../input/packet/parse.js';
import { ConntrackTable, type TableOptions } from '../table/table.js';
import { GcEngine } from '../table/gc.js';
import { CTSTATE_NAMES, type Verdict } from '../track/verdict.js';
import type { Packet } from '../input/packet/packet.js';
import { abortError, checkAbort } from '../errors.js';
import type { FragDropped } from '../input/defrag/defrag.js';
import { mark } from '../pool/timeline.js';

/** Options of replay(). */
export interface ReplayOptions {
  /** Table to replay into (default: a new one from `tableOptions`). */
  table?: ConntrackTable;
  tableOptions?: TableOptions;
  /** Called for every packet, in capture order, with the reused verdict and packet. */
  onPacket?: (index: number, v: Verdict, pkt: Packet, tsMs: number) => void;
  /** Receives NEW / UPDATE / DESTROY events. */
  events?: EventSink;
  /** Called with each raw record (and its time, epoch ms) before it is decided (e.g. to read NFLOG labels). */
  onRecord?: (linktype: number, buf: Uint8Array, off: number, len: number, tsMs: number) => void;
  /** Called now and then with bytes read, total bytes (-1 when unknown: a pipe) and packets decided. */
  onProgress?: (done: number, total: number, packets: number) => void;
  /** Called once with the engine before the first packet (to read its fragment reports). */
  onEngine?: (ct: Conntrack) => void;
  /** Packets per batch (read-side section), default 256. */
  batch?: number;
  /**
   * Checked between batches: once aborted (e.g. from onPacket or onProgress), replay() releases
   * its tracker and throws an AbortError (code ABORT_ERR). Packets decided before stay in the table.
   */
  signal?: AbortSignal;
}

/** What a replay produced, on one thread or through the pool. */
export interface ReplayOutcome {
  packets: number;
  /** Packets per ctstate. */
  counts: Record<string, number>;
  /** Set when the capture is corrupt; every packet before `error.offset` was processed. */
  error: CaptureError | null;
  /** Table clock after the last packet. */
  now: number;
  /** Capture time of the last packet, ms since the epoch. */
  lastTsMs: number;
  table: ConntrackTable;
  /**
   * Datagrams whose fragments were still held for reassembly when the capture ended, with the
   * indices of those fragments (single-thread replay; the pool reports none).
   */
  fragmentsIncomplete?: FragDropped[];
}

/** What replay() returns: counts per ctstate, the table, and the tracker it used (still attached). */
export interface ReplayResult extends ReplayOutcome {
  /** The engine used; still attached (call close()). */
  conntrack: Conntrack;
}

/** The table clock for a capture timestamp: epoch ms, wrapped to 32 bits. */
export function clockFromEpochMs(ms: number): number {
  return Math.floor(ms) | 0;
}

/** Decides the records a reader has, section by section (the sync and streaming replays share it). */
class Replayer {
  readonly table: ConntrackTable;
  readonly ct: Conntrack;
  readonly counts: Record<string, number> = {};
  private readonly opts: ReplayOptions;
  private readonly section: number;
  packets = 0;
  now = 0;
  lastTsMs = 0;
  error: CaptureError | null = null;
  /** Set when opts.signal aborted the replay at a section boundary. */
  aborted = false;

  constructor(opts: ReplayOptions) {
    this.opts = opts;
    this.table = opts.table ?? ConntrackTable.create(opts.tableOptions);
    this.ct = new Conntrack(this.table, opts.events ? { events: opts.events } : {});
    for (const n of CTSTATE_NAMES) this.counts[n] = 0;
    this.section = opts.batch ?? 256;
    if (opts.onEngine) opts.onEngine(this.ct);
    mark('replay: tracker ready (first chunk read)');
  }

  /** Decide every complete record the reader holds; false once the capture ended or broke. */
  feed(reader: CaptureReader): boolean {
    const { ct, opts, table, counts, section } = this;
    let i = this.packets;
    let now = this.now;
    ct.beginBatch();
    try {
      for (;;) {
        const rec = reader.next();
        if (rec === null) break;
        let ts = rec.tsMs;
        if (rec.linktype === LINKTYPE_NFLOG) {
          // The kernel's own time of the packet, when the log carries it.
          const k = nflogTimestampMs(rec.buf, rec.off, rec.len);
          if (k !== null) ts = k;
        }
        if (opts.onRecord) opts.onRecord(rec.linktype, rec.buf, rec.off, rec.len, ts);
        this.lastTsMs = ts;
        now = clockFromEpochMs(ts);
        ct.fragTag = i; // fragments held for reassembly are reported back by index
        const v = ct.frame(rec.linktype, rec.buf, rec.off, rec.len, now);
        counts[CTSTATE_NAMES[v.state]!]!++;
        if (opts.onPacket) opts.onPacket(i, v, ct.pkt, ts);
        i++;
        if (i % section === 0) {
          table.clock = now;
          if (opts.signal?.aborted) { this.aborted = true; break; }
          ct.endBatch();
          ct.beginBatch();
        }
      }
    } catch (err) {
      if (!(err instanceof CaptureError)) throw err;
      this.error = err;
    } finally {
      this.packets = i;
      this.now = now;
      table.clock = now;
      ct.endBatch();
    }
    return this.error === null && !reader.done && !this.aborted;
  }

  /** Throws an AbortError (after releasing the tracker) once the signal aborted the replay. */
  throwIfAborted(): void {
    const signal = this.opts.signal;
    if (!this.aborted && !signal?.aborted) return;
    this.ct.close();
    throw abortError(signal!, 'replay');
  }

  result(): ReplayResult {
    return {
      packets: this.packets, counts: this.counts, error: this.error, now: this.now, lastTsMs: this.lastTsMs,
      table: this.table, conntrack: this.ct, fragmentsIncomplete: this.ct.drainFragments(),
    };
  }
}

/**
 * Replay a capture. Bytes in memory: synchronously. A path (`-`: stdin), a Readable or an async
 * iterable of chunks: streamed (gzip too), memory flat whatever the capture's size; resolves
 * once the capture ended. A corrupt capture sets `error` after every packet before it was
 * decided; I/O errors (and a start that is not a capture) reject.
 */
export function replay(bytes: Uint8Array, opts?: ReplayOptions): ReplayResult;
export function replay(source: string | NodeJS.ReadableStream | AsyncIterable<Uint8Array>, opts?: ReplayOptions): Promise<ReplayResult>;
export function replay(source: CaptureSource, opts?: ReplayOptions): ReplayResult | Promise<ReplayResult>;
export function replay(source: CaptureSource, opts: ReplayOptions = {}): ReplayResult | Promise<ReplayResult> {
  checkAbort(opts.signal, 'replay');
  if (source instanceof Uint8Array && !isGzipMagic(source)) {
    const reader = readCapture(source);
    const r = new Replayer(opts);
    r.feed(reader);
    r.throwIfAborted();
    if (opts.onProgress) opts.onProgress(source.length, source.length, r.packets);
    return r.result();
  }
  return replayStream(source, opts);
}

async function replayStream(source: CaptureSource, opts: ReplayOptions): Promise<ReplayResult> {
  const cs = new CaptureStream(source);
  let r: Replayer | null = null;
  try {
    for (let reader = await cs.pull(); reader !== null; reader = await cs.pull()) {
      r ??= new Replayer(opts);
      const more = r.feed(reader);
      r.throwIfAborted();
      if (opts.onProgress) opts.onProgress(cs.bytesRead, cs.totalBytes, r.packets);
      if (!more) break;
    }
  } catch (e) {
    if (!(e instanceof GzipError) || r === null) throw e;
    r.error = e; // the packets before the damage were decided
  } finally {
    await cs.close();
  }
  r ??= new Replayer(opts);
  return r.result();
}

/**
 * The kernel's gc_worker for a replay, run on the replaying thread between chunks or batches:
 * a replay has no GC thread, so connections that timed out would stay counted until a packet
 * of theirs came back, and a long capture would fill the table with dead entries (early drops,
 * "table full" drops the kernel never had). Sweeps run only once the table is `startPercent`
 * full (90%), so small captures are replayed exactly as without it.
 */
export class ReplayGc {
  private engine: GcEngine | null = null;
  private readonly threshold: number;

  constructor(
    private readonly table: ConntrackTable,
    /** Called for each entry the GC removes (data intact): DESTROY events. */
    private readonly onDestroy: ((e: number, why: number) => void) | null = null,
    startPercent = 90,
  ) {
    this.threshold = Math.floor((table.max * startPercent) / 100);
  }

  /** Would the table be past the threshold after `extra` more entries? (A pool replay's sweep.) */
  due(extra = 0): boolean {
    // The entry count (H_COUNT plus the records' unfolded parts; racy reads).
    return this.table.count + extra >= this.threshold;
  }

  /** Sweep the whole table once if it is past the threshold. Call outside any batch. */
  maybeRun(): void {
    if (!this.due()) return;
    if (!this.engine) {
      this.engine = new GcEngine(this.table, { budgetMs: 1000 });
      if (this.onDestroy) this.engine.onDestroy = this.onDestroy;
    }
    for (let k = 0; k < 64; k++) if (this.engine.run().sweepDone) break;
  }

  close(): void {
    this.engine?.close();
    this.engine = null;
  }
}
