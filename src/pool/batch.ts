/**
 * Packet batches in shared memory: how the pool hands frames to its workers and gets
 * decisions back without a message per packet. The layout is declared here, once.
 *
 * A batch is two SharedArrayBuffers:
 *  - `buffer`: header | task records | packet index | packet results | dispatch lists
 *    (all int32 words, offsets below);
 *  - `data`: the frame bytes. Either the batch's own area (frames are copied in with push())
 *    or a buffer the caller already shares, e.g. a whole capture file (frames are referenced
 *    in place with pushRef(), no copy).
 *
 * Writers: the dispatching thread fills the header, index, lists and task records before it
 * posts the tasks; each worker writes the results of the packets of its task only, then bumps
 * BH_DONE (Atomics.add) as its last act; the dispatcher reads results after an Atomics.load of
 * BH_DONE shows every packet done.
 */
import { CTSTATE_NAMES, CT_INVALID, DIR_NAMES } from '../track/verdict.js';
import { reasonString } from '../track/reasons.js';
import { ConntrackError, ConntrackRangeError, rangeError, stateError } from '../errors.js';

export const BATCH_MAGIC = 0x43544242; // 'CTBB'

// ---------------------------------------------------------------------------------------------
// Header (word offsets from 0).
export const BH_MAGIC = 0;
export const BH_CAPACITY = 1; // packets the index can hold
export const BH_COUNT = 2; // packets in the batch now
export const BH_DATA_BYTES = 3; // size of the batch's own data area (0 when data is external)
export const BH_DATA_USED = 4; // bytes of the own data area in use
export const BH_DONE = 5; // packets decided since dispatch; Atomics.add by each worker at task end
export const BH_TASKS = 6; // task records in use for the current dispatch
export const BH_FRAGS = 7; // replay ring: fragments in the batch (then it is decided alone, ring.ts)
export const BATCH_HEADER_WORDS = 16;

// ---------------------------------------------------------------------------------------------
// Task records: one per task of a dispatch (a piscina task = one record).
export const MAX_TASKS = 256;
export const TK_FROM = 0; // first position in the dispatch list
export const TK_TO = 1; // one past the last
export const TK_THREAD = 2; // threadId of the worker that took the task (Atomics.store at start)
export const TK_WID = 3; // that worker's table worker record
export const TK_PROGRESS = 4; // packets of the task decided so far (Atomics.store now and then)
export const TASK_WORDS = 8;

// ---------------------------------------------------------------------------------------------
// Packet index: IX_WORDS words per packet, written by the dispatcher.
export const IX_OFF = 0; // frame offset in `data` (uint32)
export const IX_LEN = 1; // frame length (captured bytes)
export const IX_LINKTYPE = 2; // pcap LINKTYPE_*
export const IX_NOW = 3; // table clock of the packet, ms (int32 wrapping)
export const IX_ZONE = 4; // conntrack zone (16 bits)
export const IX_NS = 5; // network namespace id
export const IX_FLOW = 6; // symmetric flow hash (flow dispatch), else 0
export const IX_PART = 7; // task record the packet was dispatched to
export const IX_WORDS = 8;

// ---------------------------------------------------------------------------------------------
// Packet results: RS_WORDS words per packet, written by the worker that decided it.
export const RS_STATE = 0; // CT_* (verdict.ts)
export const RS_DIR = 1; // 0 original, 1 reply, -1 none
export const RS_REASON = 2; // reason code (reasons.ts); REASON_NONE when valid
export const RS_FLAGS = 3; // RF_* bits
export const RS_TCP = 4; // TCP state after the packet, -1 when none
export const RS_SLOT = 5; // entry slot, -1 when none (valid only while no slot can be reused)
export const RS_L4 = 6; // layer-4 protocol number as parsed, 0 when none
export const RS_TASK = 7; // task record index that decided the packet
export const RS_ID = 8; // conntrack id of the packet's connection (E_ID, as -o id shows), 0 when none
/**
 * A whole cache line per packet: neighbouring packets of a batch are decided by different
 * workers, and results sharing a line made it bounce between their cores on every packet.
 */
export const RS_WORDS = 16;
/** Words per cache line (the results section starts on one). */
const LINE_WORDS = 16;
export const RF_DONE = 1;
export const RF_DROP = 2;
export const RF_NAT_SHIFT = 2; // bits 2-4: what NAT rewrote (nat/nat.ts NAT_REWROTE_*)
/** Verdict.frag (FRAG_*, verdict.ts) in the flags word, from this shift. */
export const RF_FRAG_SHIFT = 5; // bits 5-7
export const RF_FRAG_MASK = 7;

/** Default packets per batch: a round trip costs tens of µs, so thousands per batch. */
export const DEFAULT_BATCH_PACKETS = 4096;
/** Default bytes of own frame data per packet slot. */
export const DEFAULT_BYTES_PER_PACKET = 256;

export interface BatchSections {
  tasks: number;
  index: number;
  results: number;
  lists: number;
  totalWords: number;
}

export function batchSections(capacity: number): BatchSections {
  const tasks = BATCH_HEADER_WORDS;
  const index = tasks + MAX_TASKS * TASK_WORDS;
  const results = Math.ceil((index + capacity * IX_WORDS) / LINE_WORDS) * LINE_WORDS;
  const lists = results + capacity * RS_WORDS;
  return { tasks, index, results, lists, totalWords: lists + capacity };
}

/** What a worker needs to attach to a batch (plain data, safe to post). */
export interface BatchHandle {
  readonly buffer: SharedArrayBuffer;
  readonly data: SharedArrayBuffer;
}

/** Options of PacketBatch.create() / ConntrackPool.createBatch(). */
export interface BatchOptions {
  /** Packets the batch can hold (default DEFAULT_BATCH_PACKETS). */
  capacity?: number;
  /** Size of the own frame data area (default capacity * DEFAULT_BYTES_PER_PACKET). */
  dataBytes?: number;
  /** Frames live in this shared buffer already (pushRef only); no own data area. */
  data?: SharedArrayBuffer;
}

/** One packet's decision read back from a batch; reused by read(). Mirrors Verdict's fields. */
export class BatchVerdict {
  state = CT_INVALID;
  dir = -1;
  reason: string | null = null;
  reasonCode = 0;
  slot = -1;
  drop = false;
  protoState = -1;
  l4proto = 0;
  /** conntrack id of the connection (as `-o id` shows), 0 when none. */
  id = 0;
  /** FRAG_* (verdict.ts): what defragmentation did with the packet. */
  frag = 0;
  /** What NAT rewrote (nat/nat.ts NAT_REWROTE_* bits). */
  nat = 0;
  get ctstate(): string {
    return CTSTATE_NAMES[this.state]!;
  }
  get direction(): string | null {
    return this.dir < 0 ? null : DIR_NAMES[this.dir]!;
  }
}

/** Frames and their decisions in shared memory, handed to the pool in one task per worker. */
export class PacketBatch {
  readonly buffer: SharedArrayBuffer;
  readonly data: SharedArrayBuffer;
  /** @internal */
  readonly i32: Int32Array;
  /** @internal */
  readonly u32: Uint32Array;
  /** @internal */
  readonly bytes: Uint8Array;
  /** @internal */
  readonly sec: BatchSections;
  readonly capacity: number;
  /** @internal Reason strings a worker met that the registry lacks, by task (filled by the pool). */
  extras: (readonly string[])[] = [];

  private constructor(buffer: SharedArrayBuffer, data: SharedArrayBuffer) {
    this.buffer = buffer;
    this.data = data;
    this.i32 = new Int32Array(buffer);
    this.u32 = new Uint32Array(buffer);
    this.bytes = new Uint8Array(data);
    if (this.i32[BH_MAGIC] !== BATCH_MAGIC) throw new ConntrackError('ERR_CT_BAD_HANDLE', 'not a packet batch (bad magic)');
    this.capacity = this.i32[BH_CAPACITY]!;
    this.sec = batchSections(this.capacity);
    if (this.sec.totalWords * 4 !== buffer.byteLength) throw new ConntrackError('ERR_CT_BAD_HANDLE', 'packet batch size mismatch');
  }

  static create(opts: BatchOptions = {}): PacketBatch {
    const capacity = opts.capacity ?? DEFAULT_BATCH_PACKETS;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 24) {
      throw rangeError(`batch capacity must be an integer in 1..${1 << 24}, got ${capacity}`);
    }
    const sec = batchSections(capacity);
    const buffer = new SharedArrayBuffer(sec.totalWords * 4);
    const own = opts.data === undefined;
    const dataBytes = own ? opts.dataBytes ?? capacity * DEFAULT_BYTES_PER_PACKET : 0;
    const data = opts.data ?? new SharedArrayBuffer(dataBytes);
    const i32 = new Int32Array(buffer);
    i32[BH_MAGIC] = BATCH_MAGIC;
    i32[BH_CAPACITY] = capacity;
    i32[BH_DATA_BYTES] = dataBytes;
    return new PacketBatch(buffer, data);
  }

  static attach(h: BatchHandle): PacketBatch {
    return new PacketBatch(h.buffer, h.data);
  }

  handle(): BatchHandle {
    return { buffer: this.buffer, data: this.data };
  }

  get count(): number {
    return this.i32[BH_COUNT]!;
  }

  get full(): boolean {
    return this.i32[BH_COUNT]! >= this.capacity;
  }

  /** Empty the batch (the dispatcher only, while no task of it runs). */
  reset(): void {
    this.i32[BH_COUNT] = 0;
    this.i32[BH_DATA_USED] = 0;
    this.i32[BH_DONE] = 0;
    this.i32[BH_TASKS] = 0;
    this.extras = [];
  }

  /** Can a frame of `len` bytes be push()ed now (room in the index and in the own data area)? */
  fits(len: number): boolean {
    const i32 = this.i32;
    return i32[BH_COUNT]! < this.capacity && i32[BH_DATA_USED]! + len <= i32[BH_DATA_BYTES]!;
  }

  /**
   * Copy a frame into the batch's own data area; returns its index. Throws a RangeError
   * (code ERR_CT_BATCH_FULL) when the index or the data area is full: check fits(len) first,
   * or use tryPush(). `now` is the table clock in ms; `zone` and `ns` the packet's zone and
   * namespace.
   */
  push(linktype: number, buf: Uint8Array, off: number, len: number, now: number, zone = 0, ns = 0): number {
    const n = this.tryPush(linktype, buf, off, len, now, zone, ns);
    if (n < 0) {
      throw new ConntrackRangeError('ERR_CT_BATCH_FULL', this.full
        ? `the batch is full (${this.capacity} packets): process() it and reset() it, then push again`
        : `the batch's data area is full (${this.i32[BH_DATA_USED]} of ${this.i32[BH_DATA_BYTES]} bytes used, the frame has ${len}): process() and reset() it, or create it with a larger dataBytes`);
    }
    return n;
  }

  /** push() that returns -1 instead of throwing when the batch is full. */
  tryPush(linktype: number, buf: Uint8Array, off: number, len: number, now: number, zone = 0, ns = 0): number {
    const i32 = this.i32;
    const dataBytes = i32[BH_DATA_BYTES]!;
    if (dataBytes === 0) throw stateError('this batch references external frame data: use pushRef()');
    if (!Number.isInteger(len) || len < 0 || off < 0 || off + len > buf.length) {
      throw rangeError(`frame [${off}, ${off + len}) is outside the ${buf.length}-byte buffer`);
    }
    const used = i32[BH_DATA_USED]!;
    if (i32[BH_COUNT]! >= this.capacity || used + len > dataBytes) return -1;
    this.bytes.set(buf.subarray(off, off + len), used);
    i32[BH_DATA_USED] = used + len;
    return this.pushRef(linktype, used, len, now, zone, ns);
  }

  /**
   * Add a frame that already lies in `data` at [off, off + len); returns its index. Throws a
   * RangeError (code ERR_CT_BATCH_FULL) when the index is full (check `full` first).
   */
  pushRef(linktype: number, off: number, len: number, now: number, zone = 0, ns = 0): number {
    const i32 = this.i32;
    const n = i32[BH_COUNT]!;
    if (n >= this.capacity) {
      throw new ConntrackRangeError('ERR_CT_BATCH_FULL', `the batch is full (${this.capacity} packets): process() it and reset() it, then push again`);
    }
    const x = this.sec.index + n * IX_WORDS;
    this.u32[x + IX_OFF] = off;
    i32[x + IX_LEN] = len;
    i32[x + IX_LINKTYPE] = linktype;
    i32[x + IX_NOW] = now | 0;
    i32[x + IX_ZONE] = zone & 0xffff;
    i32[x + IX_NS] = ns;
    i32[x + IX_FLOW] = 0;
    i32[x + IX_PART] = 0;
    const r = this.sec.results + n * RS_WORDS;
    i32[r + RS_FLAGS] = 0;
    i32[BH_COUNT] = n + 1;
    return n;
  }

  /** @internal Table clock of packet i. */
  now(i: number): number {
    return this.i32[this.sec.index + i * IX_WORDS + IX_NOW]!;
  }

  /** Has every packet been decided? (Acquire: pairs with the workers' Atomics.add.) */
  get complete(): boolean {
    return Atomics.load(this.i32, BH_DONE) >= this.i32[BH_COUNT]!;
  }

  /** Was packet i decided? Call after the dispatch settled (complete or failed). */
  decided(i: number): boolean {
    return (this.i32[this.sec.results + i * RS_WORDS + RS_FLAGS]! & RF_DONE) !== 0;
  }

  /**
   * Read packet i's decision into `out` (pass one BatchVerdict and reuse it: no allocation).
   * Throws a RangeError (code ERR_CT_OUT_OF_RANGE) when i is not in 0..count-1.
   */
  read(i: number, out: BatchVerdict = new BatchVerdict()): BatchVerdict {
    const i32 = this.i32;
    if (!(i >= 0 && i < i32[BH_COUNT]!) || !Number.isInteger(i)) {
      throw rangeError(`packet index ${i} is outside the batch (it holds ${i32[BH_COUNT]} packets)`);
    }
    const r = this.sec.results + i * RS_WORDS;
    out.state = i32[r + RS_STATE]!;
    out.dir = i32[r + RS_DIR]!;
    out.reasonCode = i32[r + RS_REASON]!;
    out.reason = reasonString(out.reasonCode, this.extras[i32[r + RS_TASK]!]);
    out.slot = i32[r + RS_SLOT]!;
    out.drop = (i32[r + RS_FLAGS]! & RF_DROP) !== 0;
    out.frag = (i32[r + RS_FLAGS]! >>> RF_FRAG_SHIFT) & RF_FRAG_MASK;
    out.nat = (i32[r + RS_FLAGS]! >>> RF_NAT_SHIFT) & 7;
    out.protoState = i32[r + RS_TCP]!;
    out.l4proto = i32[r + RS_L4]!;
    out.id = i32[r + RS_ID]! >>> 0;
    return out;
  }
}
