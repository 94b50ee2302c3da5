/**
 * The fragment queue store (the kernel's inet_frag_queue / fqdir, net/ipv4/inet_fragment.c):
 * reassembly queues keyed by (family, source, destination, id, protocol, zone), their fragments
 * and the bytes those hold, with a memory count bounded like ipfrag_high_thresh.
 *
 * Everything lives in one SharedArrayBuffer, laid out once below, so the pool's packet workers
 * can share one store (any worker may hold or complete a datagram). One lock word (H_LOCK)
 * protects every other word and byte of the store: callers take it around each operation with
 * lock()/unlock() (locks.ts). Nothing is allocated per packet: fragment bytes are copied into a
 * preallocated arena of fixed-size chunks, queue and fragment records come from free lists.
 *
 * Memory accounting (like skb truesize): a queue costs QUEUE_COST bytes, a fragment FRAG_COST
 * plus its chunks. The arena holds `capacity` bytes of chunks, so the count can never pass it.
 *
 * Runs (as inet_frag_queue_insert keeps them): fragments that arrive in order at the tail and
 * touch the previous one extend the last "run"; any other fragment starts a run of its own. The
 * duplicate/overlap test compares a new fragment with whole runs; runs are kept sorted by
 * offset in a list (the kernel's rb-tree of run heads).
 */
import { lock, unlock } from '../../table/locks.js';

// ---------------------------------------------------------------------------------------------
// Layout (int32 words from 0, then the chunk arena bytes).
export const DS_MAGIC = 0x43544652; // 'CTFR'
export const H_MAGIC = 0;
export const H_LOCK = 1; // the store lock (locks.ts); protects everything below
export const H_MEM = 2; // bytes accounted (queues + fragments + chunks)
export const H_QUEUES = 3; // queues in use
export const H_FREE_Q = 4; // free queue records, linked by Q_HNEXT; -1 = none
export const H_FREE_F = 5; // free fragment records, linked by F_NEXT
export const H_FREE_C = 6; // free chunks, linked by their chunk-next word
export const H_OLDEST = 7; // queue list by creation (= by deadline: ipfrag_time is fixed at creation)
export const H_NEWEST = 8;
export const H_NQ = 9; // queue records
export const H_NF = 10; // fragment records
export const H_NC = 11; // chunks
export const H_NB = 12; // hash buckets (power of two)
export const H_CAPACITY = 13; // arena bytes (= the memory bound the store was built for)
export const H_PEAK = 14; // highest H_MEM seen
export const HEADER_WORDS = 16;

// Queue record words.
export const Q_FAMILY = 0;
export const Q_PROTO = 1; // IPv4 protocol; 0 for IPv6 (its key has none, as the kernel's)
export const Q_ID = 2;
export const Q_ZONE = 3;
export const Q_SRC = 4; // 4 words
export const Q_DST = 8; // 4 words
export const Q_FLAGS = 12; // QF_*
export const Q_LEN = 13; // datagram payload length known so far (the kernel's q.len)
export const Q_MEAT = 14; // payload bytes held
export const Q_EXPIRES = 15; // table clock (ms) at which the queue times out
export const Q_FRAGS = 16; // fragment list head (unordered), -1 = none
export const Q_RUNS = 17; // first run head (sorted by offset), -1 = none
export const Q_LAST_RUN = 18; // head of the tail run
export const Q_TAIL_END = 19; // end offset of the tail fragment
export const Q_OLDER = 20; // creation list links
export const Q_NEWER = 21;
export const Q_HNEXT = 22; // hash chain link (free list link when free)
export const Q_MEMW = 23; // bytes accounted to this queue
export const Q_ECN = 24; // OR of the fragments' IPFRAG_ECN_* bits (IPv4)
export const Q_FIRST = 25; // fragment holding offset 0 (with the header), -1 until seen
export const Q_NHOFF = 26; // IPv6: offset (from the header start) of the next-header byte naming the fragment header
export const Q_COUNT = 27; // fragments held
export const QUEUE_WORDS = 28;
export const QF_FIRST_IN = 1;
export const QF_LAST_IN = 2;

// Fragment record words.
export const F_OFF = 0; // payload offset in the datagram
export const F_END = 1; // end of its payload
export const F_CHUNK = 2; // first chunk
export const F_NEXT = 3; // next fragment of the queue (free list link when free)
export const F_RUN_END = 4; // run heads: end of the run; -1 otherwise
export const F_RUN_NEXT = 5; // run heads: next run head by offset
export const F_TAG = 6; // the caller's tag (replay: packet index)
export const F_HDR = 7; // header bytes stored before the payload (first fragment only)
export const FRAG_WORDS = 8;

/** Bytes of fragment data per chunk (about what a small skb costs the kernel: truesize). */
export const CHUNK = 1024;
/** Accounted bytes per queue and per fragment besides its chunks (bookkeeping, like truesize). */
export const QUEUE_COST = 256;
export const FRAG_COST = 128;

/** The 64 KiB limit: largest IP datagram (IPv4 total length, IPv6 payload length). */
export const IP_MAX = 65535;

/** inet_frag_queue_insert results. */
export const INSERT_OK = 0;
export const INSERT_DUP = 1;
export const INSERT_OVERLAP = 2;
export const INSERT_NOMEM = 3;

export interface FragStoreOptions {
  /** Memory bound in bytes (ipfrag_high_thresh; default 4 MiB). */
  capacity?: number;
}

/** What another thread needs to attach: plain data, safe to postMessage. */
export interface FragStoreHandle {
  readonly buffer: SharedArrayBuffer;
}

export class FragStore {
  readonly i32: Int32Array;
  readonly bytes: Uint8Array;
  readonly qBase: number;
  readonly fBase: number;
  readonly cBase: number; // chunk-next words
  readonly bBase: number; // hash buckets
  readonly dataBase: number; // arena byte offset
  readonly nq: number;
  readonly nf: number;
  readonly nc: number;
  readonly nb: number;

  private constructor(readonly buffer: SharedArrayBuffer) {
    this.i32 = new Int32Array(buffer);
    this.bytes = new Uint8Array(buffer);
    const i32 = this.i32;
    if (i32[H_MAGIC] !== DS_MAGIC) throw new Error('not a fragment store');
    this.nq = i32[H_NQ]!;
    this.nf = i32[H_NF]!;
    this.nc = i32[H_NC]!;
    this.nb = i32[H_NB]!;
    this.qBase = HEADER_WORDS;
    this.fBase = this.qBase + this.nq * QUEUE_WORDS;
    this.cBase = this.fBase + this.nf * FRAG_WORDS;
    this.bBase = this.cBase + this.nc;
    this.dataBase = (this.bBase + this.nb) * 4;
  }

  /** A fresh store bounded by `capacity` bytes (records sized so the bound is what runs out). */
  static create(opts: FragStoreOptions = {}): FragStore {
    const capacity = Math.max(CHUNK * 16, Math.min(opts.capacity ?? 4 * 1024 * 1024, 1 << 30));
    const nc = Math.floor(capacity / CHUNK);
    const nf = Math.floor(capacity / (CHUNK + FRAG_COST)) + 1;
    const nq = Math.floor(capacity / (CHUNK + FRAG_COST + QUEUE_COST)) + 1;
    let nb = 16;
    while (nb < nq) nb <<= 1;
    const words = HEADER_WORDS + nq * QUEUE_WORDS + nf * FRAG_WORDS + nc + nb;
    const buffer = new SharedArrayBuffer(words * 4 + nc * CHUNK);
    const i32 = new Int32Array(buffer);
    i32[H_MAGIC] = DS_MAGIC;
    i32[H_NQ] = nq;
    i32[H_NF] = nf;
    i32[H_NC] = nc;
    i32[H_NB] = nb;
    i32[H_CAPACITY] = nc * CHUNK;
    const s = new FragStore(buffer);
    s.reset();
    return s;
  }

  static attach(h: FragStoreHandle): FragStore {
    return new FragStore(h.buffer);
  }

  handle(): FragStoreHandle {
    return { buffer: this.buffer };
  }

  /** Empty every queue and rebuild the free lists (no lock: only before sharing, or under it). */
  reset(): void {
    const i32 = this.i32;
    for (let q = 0; q < this.nq; q++) i32[this.qBase + q * QUEUE_WORDS + Q_HNEXT] = q + 1 < this.nq ? q + 1 : -1;
    for (let f = 0; f < this.nf; f++) i32[this.fBase + f * FRAG_WORDS + F_NEXT] = f + 1 < this.nf ? f + 1 : -1;
    for (let c = 0; c < this.nc; c++) i32[this.cBase + c] = c + 1 < this.nc ? c + 1 : -1;
    for (let b = 0; b < this.nb; b++) i32[this.bBase + b] = -1;
    i32[H_FREE_Q] = 0;
    i32[H_FREE_F] = 0;
    i32[H_FREE_C] = 0;
    i32[H_OLDEST] = -1;
    i32[H_NEWEST] = -1;
    i32[H_MEM] = 0;
    i32[H_QUEUES] = 0;
  }

  lock(owner: number): void {
    lock(this.i32, H_LOCK, owner);
  }

  unlock(): void {
    unlock(this.i32, H_LOCK);
  }

  /** Word offset of queue record q. */
  q(q: number): number {
    return this.qBase + q * QUEUE_WORDS;
  }

  /** Word offset of fragment record f. */
  f(f: number): number {
    return this.fBase + f * FRAG_WORDS;
  }

  get mem(): number {
    return Atomics.load(this.i32, H_MEM); // written under the lock; a racy read is a snapshot
  }

  get queues(): number {
    return Atomics.load(this.i32, H_QUEUES); // as mem
  }

  get peak(): number {
    return Atomics.load(this.i32, H_PEAK); // as mem
  }

  get capacity(): number {
    return this.i32[H_CAPACITY]!;
  }

  private bucket(family: number, proto: number, id: number, zone: number, src: Uint32Array, dst: Uint32Array): number {
    let h = Math.imul(id ^ (family << 24) ^ (proto << 16) ^ zone, 0x9e3779b1);
    for (let k = 0; k < 4; k++) {
      h = Math.imul(h ^ src[k]!, 0x85ebca6b);
      h = Math.imul(h ^ dst[k]!, 0xc2b2ae35);
      h ^= h >>> 15;
    }
    return (h >>> 0) & (this.nb - 1);
  }

  /** The queue with this key, or -1. Under the lock. */
  find(family: number, proto: number, id: number, zone: number, src: Uint32Array, dst: Uint32Array): number {
    const i32 = this.i32;
    let q = i32[this.bBase + this.bucket(family, proto, id, zone, src, dst)]!;
    while (q >= 0) {
      const o = this.q(q);
      if (i32[o + Q_ID] === id && i32[o + Q_FAMILY] === family && i32[o + Q_PROTO] === proto && i32[o + Q_ZONE] === zone &&
        (i32[o + Q_SRC]! >>> 0) === src[0] && (i32[o + Q_SRC + 1]! >>> 0) === src[1] &&
        (i32[o + Q_SRC + 2]! >>> 0) === src[2] && (i32[o + Q_SRC + 3]! >>> 0) === src[3] &&
        (i32[o + Q_DST]! >>> 0) === dst[0] && (i32[o + Q_DST + 1]! >>> 0) === dst[1] &&
        (i32[o + Q_DST + 2]! >>> 0) === dst[2] && (i32[o + Q_DST + 3]! >>> 0) === dst[3]) {
        return q;
      }
      q = i32[o + Q_HNEXT]!;
    }
    return -1;
  }

  /** A new queue expiring at `expires`, or -1 when no record or memory is left. Under the lock. */
  create(family: number, proto: number, id: number, zone: number, src: Uint32Array, dst: Uint32Array, expires: number, bound: number): number {
    const i32 = this.i32;
    const q = i32[H_FREE_Q]!;
    if (q < 0 || i32[H_MEM]! + QUEUE_COST > bound) return -1;
    const o = this.q(q);
    i32[H_FREE_Q] = i32[o + Q_HNEXT]!;
    i32[o + Q_FAMILY] = family;
    i32[o + Q_PROTO] = proto;
    i32[o + Q_ID] = id;
    i32[o + Q_ZONE] = zone;
    for (let k = 0; k < 4; k++) {
      i32[o + Q_SRC + k] = src[k]! | 0;
      i32[o + Q_DST + k] = dst[k]! | 0;
    }
    i32[o + Q_FLAGS] = 0;
    i32[o + Q_LEN] = 0;
    i32[o + Q_MEAT] = 0;
    i32[o + Q_EXPIRES] = expires | 0;
    i32[o + Q_FRAGS] = -1;
    i32[o + Q_RUNS] = -1;
    i32[o + Q_LAST_RUN] = -1;
    i32[o + Q_TAIL_END] = 0;
    i32[o + Q_ECN] = 0;
    i32[o + Q_FIRST] = -1;
    i32[o + Q_NHOFF] = 0;
    i32[o + Q_COUNT] = 0;
    i32[o + Q_MEMW] = QUEUE_COST;
    const b = this.bBase + this.bucket(family, proto, id, zone, src, dst);
    i32[o + Q_HNEXT] = i32[b]!;
    i32[b] = q;
    // Newest end of the creation list.
    const newest = i32[H_NEWEST]!;
    i32[o + Q_OLDER] = newest;
    i32[o + Q_NEWER] = -1;
    if (newest >= 0) i32[this.q(newest) + Q_NEWER] = q;
    else i32[H_OLDEST] = q;
    i32[H_NEWEST] = q;
    i32[H_QUEUES]!++;
    this.addMem(QUEUE_COST);
    return q;
  }

  private addMem(n: number): void {
    const m = this.i32[H_MEM]! + n;
    this.i32[H_MEM] = m;
    if (m > this.i32[H_PEAK]!) this.i32[H_PEAK] = m;
  }

  /**
   * Insert a fragment's run position (inet_frag_queue_insert): INSERT_OK with the fragment
   * record in `lastFrag`, INSERT_DUP (inside a run: drop the fragment, keep the queue),
   * INSERT_OVERLAP (drop the queue), INSERT_NOMEM (no room left). The bytes
   * src[srcOff, srcOff + hdr + (end - offset)) are copied in: `hdr` header bytes (first
   * fragment only), then the payload. Under the lock.
   */
  insert(q: number, offset: number, end: number, src: Uint8Array, srcOff: number, hdr: number, tag: number, bound: number): number {
    const i32 = this.i32;
    const o = this.q(q);
    const lastRun = i32[o + Q_LAST_RUN]!;
    const tailEnd = i32[o + Q_TAIL_END]!;
    let before = -2; // run head to insert a new run before (-1: at the end); -2: extend the tail run
    if (lastRun < 0) {
      before = -1;
    } else if (tailEnd < end) {
      // The common case: at the end.
      if (offset < tailEnd) return INSERT_OVERLAP;
      before = offset === tailEnd ? -2 : -1;
    } else {
      // Somewhere before the tail: find its place among the runs.
      let r = i32[o + Q_RUNS]!;
      before = -1;
      while (r >= 0) {
        const ro = this.f(r);
        const rs = i32[ro + F_OFF]!;
        const re = i32[ro + F_RUN_END]!;
        if (end <= rs) { before = r; break; }
        if (offset >= re) { r = i32[ro + F_RUN_NEXT]!; continue; }
        return offset >= rs && end <= re ? INSERT_DUP : INSERT_OVERLAP;
      }
    }
    // Room: a record and enough chunks.
    const n = hdr + end - offset;
    const chunks = n > 0 ? Math.ceil(n / CHUNK) : 1;
    const cost = FRAG_COST + chunks * CHUNK;
    if (i32[H_FREE_F]! < 0 || i32[H_MEM]! + cost > bound || !this.haveChunks(chunks)) return INSERT_NOMEM;
    const f = i32[H_FREE_F]!;
    const fo = this.f(f);
    i32[H_FREE_F] = i32[fo + F_NEXT]!;
    i32[fo + F_OFF] = offset;
    i32[fo + F_END] = end;
    i32[fo + F_TAG] = tag;
    i32[fo + F_HDR] = hdr;
    i32[fo + F_RUN_END] = -1;
    i32[fo + F_RUN_NEXT] = -1;
    i32[fo + F_CHUNK] = this.copyIn(src, srcOff, n, chunks);
    i32[fo + F_NEXT] = i32[o + Q_FRAGS]!;
    i32[o + Q_FRAGS] = f;
    i32[o + Q_COUNT]!++;
    i32[o + Q_MEMW]! += cost;
    this.addMem(cost);
    if (before === -2) {
      // Extends the tail run.
      i32[this.f(lastRun) + F_RUN_END] = end;
    } else {
      // A run of its own, linked in offset order.
      i32[fo + F_RUN_END] = end;
      if (before === -1) {
        if (lastRun >= 0) i32[this.f(lastRun) + F_RUN_NEXT] = f;
        else i32[o + Q_RUNS] = f;
      } else {
        i32[fo + F_RUN_NEXT] = before;
        // Link after the run preceding `before`.
        let p = i32[o + Q_RUNS]!;
        if (p === before) i32[o + Q_RUNS] = f;
        else {
          while (i32[this.f(p) + F_RUN_NEXT] !== before) p = i32[this.f(p) + F_RUN_NEXT]!;
          i32[this.f(p) + F_RUN_NEXT] = f;
        }
      }
    }
    if (tailEnd < end || lastRun < 0) {
      i32[o + Q_TAIL_END] = end;
      if (before !== -2) i32[o + Q_LAST_RUN] = f;
    }
    if (offset === 0) i32[o + Q_FIRST] = f;
    return INSERT_OK;
  }

  private haveChunks(n: number): boolean {
    let c = this.i32[H_FREE_C]!;
    for (let k = 0; k < n; k++) {
      if (c < 0) return false;
      c = this.i32[this.cBase + c]!;
    }
    return true;
  }

  /** Copy n bytes into `chunks` chunks taken from the free list; returns the first. */
  private copyIn(src: Uint8Array, srcOff: number, n: number, chunks: number): number {
    const i32 = this.i32;
    const first = i32[H_FREE_C]!;
    let c = first;
    let last = first;
    for (let k = 0; k < chunks; k++) {
      const m = Math.min(CHUNK, n - k * CHUNK);
      const at = this.dataBase + c * CHUNK;
      const from = srcOff + k * CHUNK;
      // memcpy through a view (one short-lived object per chunk: a byte loop was 10x slower).
      this.bytes.set(src.subarray(from, from + m), at);
      last = c;
      c = i32[this.cBase + c]!;
    }
    i32[H_FREE_C] = c;
    i32[this.cBase + last] = -1;
    return first;
  }

  /**
   * Copy fragment f's bytes out: `skip` bytes from its start (0 for the whole, its F_HDR to skip
   * the header), `n` bytes, to out[at...]. Under the lock.
   */
  copyOut(f: number, skip: number, n: number, out: Uint8Array, at: number): void {
    const i32 = this.i32;
    let c = i32[this.f(f) + F_CHUNK]!;
    // Skip whole chunks.
    while (skip >= CHUNK) {
      c = i32[this.cBase + c]!;
      skip -= CHUNK;
    }
    let done = 0;
    while (done < n && c >= 0) {
      const start = this.dataBase + c * CHUNK + skip;
      const m = Math.min(CHUNK - skip, n - done);
      out.set(this.bytes.subarray(start, start + m), at + done); // memcpy, as in copyIn
      done += m;
      skip = 0;
      c = i32[this.cBase + c]!;
    }
  }

  /** Remove queue q and free its fragments. Under the lock. */
  kill(q: number): void {
    const i32 = this.i32;
    const o = this.q(q);
    // Off its hash chain.
    const b = this.bBase + this.bucket(i32[o + Q_FAMILY]!, i32[o + Q_PROTO]!, i32[o + Q_ID]!, i32[o + Q_ZONE]!,
      this.keySrc(o), this.keyDst(o));
    let p = i32[b]!;
    if (p === q) i32[b] = i32[o + Q_HNEXT]!;
    else {
      while (p >= 0 && i32[this.q(p) + Q_HNEXT] !== q) p = i32[this.q(p) + Q_HNEXT]!;
      if (p >= 0) i32[this.q(p) + Q_HNEXT] = i32[o + Q_HNEXT]!;
    }
    // Off the creation list.
    const older = i32[o + Q_OLDER]!;
    const newer = i32[o + Q_NEWER]!;
    if (older >= 0) i32[this.q(older) + Q_NEWER] = newer;
    else i32[H_OLDEST] = newer;
    if (newer >= 0) i32[this.q(newer) + Q_OLDER] = older;
    else i32[H_NEWEST] = older;
    // Fragments and chunks back to their free lists.
    let f = i32[o + Q_FRAGS]!;
    while (f >= 0) {
      const fo = this.f(f);
      const next = i32[fo + F_NEXT]!;
      let c = i32[fo + F_CHUNK]!;
      while (c >= 0) {
        const cn = i32[this.cBase + c]!;
        i32[this.cBase + c] = i32[H_FREE_C]!;
        i32[H_FREE_C] = c;
        c = cn;
      }
      i32[fo + F_NEXT] = i32[H_FREE_F]!;
      i32[H_FREE_F] = f;
      f = next;
    }
    i32[H_MEM]! -= i32[o + Q_MEMW]!;
    i32[o + Q_HNEXT] = i32[H_FREE_Q]!;
    i32[H_FREE_Q] = q;
    i32[H_QUEUES]!--;
  }

  private readonly ks = new Uint32Array(4);
  private readonly kd = new Uint32Array(4);

  private keySrc(o: number): Uint32Array {
    for (let k = 0; k < 4; k++) this.ks[k] = this.i32[o + Q_SRC + k]! >>> 0;
    return this.ks;
  }

  private keyDst(o: number): Uint32Array {
    for (let k = 0; k < 4; k++) this.kd[k] = this.i32[o + Q_DST + k]! >>> 0;
    return this.kd;
  }

  /** The oldest queue (first to expire or to be evicted), or -1. Under the lock. */
  oldest(): number {
    return this.i32[H_OLDEST]!;
  }

  /** Tags of queue q's fragments into out (at most out.length); returns how many. Under the lock. */
  tags(q: number, out: Int32Array, at: number): number {
    const i32 = this.i32;
    let f = i32[this.q(q) + Q_FRAGS]!;
    let n = 0;
    while (f >= 0 && at + n < out.length) {
      out[at + n] = i32[this.f(f) + F_TAG]!;
      n++;
      f = i32[this.f(f) + F_NEXT]!;
    }
    return n;
  }
}
