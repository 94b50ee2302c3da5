/**
 * Replaying a capture through a table on this thread: the capture's timestamps drive the
 * table clock, so timeouts expire as they did when the traffic was recorded.
 */
import { CaptureError, readCapture } from '../input/capture/reader.js';
import { Conntrack } from '../track/core.js';
import type { EventSink } from '../table/events.js';
import { LINKTYPE_NFLOG } from '../input/packet/packet.js';
import { nflogTimestampMs } from '../input/packet/parse.js';
import { ConntrackTable, type TableOptions } from '../table/table.js';
import { CTSTATE_NAMES, type Verdict } from '../track/verdict.js';
import type { Packet } from '../input/packet/packet.js';
import type { FragDropped } from '../input/defrag/defrag.js';

export interface ReplayOptions {
  /** Table to replay into (default: a new one from `tableOptions`). */
  table?: ConntrackTable;
  tableOptions?: TableOptions;
  /** Called for every packet, in capture order, with the reused verdict and packet. */
  onPacket?: (index: number, v: Verdict, pkt: Packet, tsMs: number) => void;
  /** Receives NEW / UPDATE / DESTROY events. */
  events?: EventSink;
  /** Called with each raw record before it is decided (e.g. to read NFLOG labels). */
  onRecord?: (linktype: number, buf: Uint8Array, off: number, len: number) => void;
  /** Called now and then with bytes done and total. */
  onProgress?: (done: number, total: number) => void;
  /** Called once with the engine before the first packet (to read its fragment reports). */
  onEngine?: (ct: Conntrack) => void;
  /** Packets per batch (read-side section), default 256. */
  batch?: number;
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

export interface ReplayResult extends ReplayOutcome {
  /** The engine used; still attached (call close()). */
  conntrack: Conntrack;
}

/** The table clock for a capture timestamp: epoch ms, wrapped to 32 bits. */
export function clockFromEpochMs(ms: number): number {
  return Math.floor(ms) | 0;
}

export function replay(bytes: Uint8Array, opts: ReplayOptions = {}): ReplayResult {
  const reader = readCapture(bytes);
  const table = opts.table ?? ConntrackTable.create(opts.tableOptions);
  const ct = new Conntrack(table, opts.events ? { events: opts.events } : {});
  const counts: Record<string, number> = {};
  for (const n of CTSTATE_NAMES) counts[n] = 0;
  const batch = opts.batch ?? 256;
  if (opts.onEngine) opts.onEngine(ct);
  let i = 0;
  let now = 0;
  let lastTsMs = 0;
  let error: CaptureError | null = null;
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
      if (opts.onRecord) opts.onRecord(rec.linktype, rec.buf, rec.off, rec.len);
      lastTsMs = ts;
      now = clockFromEpochMs(ts);
      ct.fragTag = i; // fragments held for reassembly are reported back by index
      const v = ct.frame(rec.linktype, rec.buf, rec.off, rec.len, now);
      counts[CTSTATE_NAMES[v.state]!]!++;
      if (opts.onPacket) opts.onPacket(i, v, ct.pkt, ts);
      i++;
      if (i % batch === 0) {
        table.clock = now;
        ct.endBatch();
        ct.beginBatch();
        if (opts.onProgress && i % (batch * 64) === 0) opts.onProgress(reader.offset, bytes.length);
      }
    }
  } catch (err) {
    if (!(err instanceof CaptureError)) throw err;
    error = err;
  } finally {
    table.clock = now;
    ct.endBatch();
  }
  if (opts.onProgress) opts.onProgress(bytes.length, bytes.length);
  const fragmentsIncomplete = ct.drainFragments();
  return { packets: i, counts, error, now, lastTsMs, table, conntrack: ct, fragmentsIncomplete };
}
