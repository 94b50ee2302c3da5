/**
 * The hash table proper (the kernel's nf_conntrack_core lookup/confirm/delete): every entry is
 * linked into two chains, one per direction (tuplehash[ORIGINAL] and tuplehash[REPLY]).
 *
 * Concurrency:
 *  - Writers (confirm, delete) hold the lock stripes of both directions' buckets, taken in
 *    ascending order (the kernel's double lock).
 *  - Readers walk chains with Atomics.load and take no lock. In the 'noref' discipline a found
 *    entry stays valid until the reader's batch ends (rcu.ts); in 'refcount' a lookup takes a
 *    reference, re-checks the key and restarts if the slot was recycled meanwhile, and a walk
 *    that ends on another bucket's nulls marker restarts (hlist_nulls).
 *
 * Crash recovery: insert, delete and the last put record what they are doing in this worker's
 * record (W_INTENT / W_INTENT_SLOT, W_KILL, W_RELEASE, W_HELD; see recovery.ts for the
 * protocol). Plain lookups in 'noref' mode record nothing.
 */
import { SlotAllocator } from './alloc.js';
import { tupleHash } from './hash.js';
import {
  COUNT_BATCH, DIR_ORIGINAL, DIR_REPLY, DISCIPLINE_NOREF, ENTRY_WORDS, E_EXT, E_GEN, E_HASH, E_ID, E_LINK,
  E_MARK, E_NEXT, E_NS, E_PRIV, E_PROTO, E_REFCNT, E_STATUS, E_TIMEOUT, E_TUPLE, E_ZONE,
  H_COUNT, H_ID_EPOCH, H_REC_HWM, H_KEY0, H_KEY1, H_MAX_CHAIN, H_NEXT_ID, ID_RANGE, INTENT_INSERT,
  INTENT_NONE, INTENT_UNCOUNTED, IPS_ALLOCATED, IPS_ASSURED, IPS_CONFIRMED,
  IPS_DYING, KILL_STEP_DROPPING, KILL_STEP_LOCKED, KILL_STEP_UNLINKED, PRIV_WORDS, ST_CHAIN_TOOLONG, ST_EARLY_DROP, ST_EXPIRED,
  ST_INSERT_FAILED, ST_SEARCH_RESTART, STAT_WORDS, T_DST, T_PORTS, T_SRC, TUPLE_WORDS, W_CNT, W_RES, W_HELD, W_INTENT, W_INTENT_SLOT,
  W_KILL, W_KILL_WHY, W_RELEASE, WORKER_WORDS, ZC_ZORIG, KILL_STEP_EMITTED, KILL_STEP_EMITTING, H_EPOCH, ST_EXPEDITED, W_EV_D, W_EV_M, W_EV_PARK,
} from './layout.js';
import { lock, unlock } from './locks.js';
import { Qsbr } from './rcu.js';
import { S_MAX } from './sysctl.js';
import { CONFIRM_NS_LIMIT, LIST_NS, LIST_ZONE, ZoneAccounting, zoneKey } from './zones.js';
import { IPS_SRC_NAT_DONE, LOCK_STRIDE } from './layout.js';
import { bysourceAdd, bysourceRemove } from '../track/nat/bysource.js';
import type { ConntrackTable } from './table.js';

/** confirm() results besides a clashing entry's reference (>= 0). */
export const CONFIRM_OK = -1;
export const CONFIRM_CHAIN_TOOLONG = -2;
export const CONFIRM_DYING = -3;

/** Why an entry left the table (for destroy events and statistics). */
export const KILL_DELETE = 0;
export const KILL_EXPIRED = 1;
export const KILL_EARLY_DROP = 2;
export const KILL_GC_EVICT = 3;
export const KILL_REOPEN = 4;
export const KILL_SOFT_RECYCLE = 5;

export type DestroyHook = (e: number, why: number) => void;

/** Expedited grace periods (allocSlow): rounds, and the wall ms yielded between them. */
const EXPEDITE_ROUNDS = 8;
const EXPEDITE_WAIT_MS = 0.25;
const pauseWord = new Int32Array(new SharedArrayBuffer(4));

/** Number of buckets early_drop looks at, from the new entry's own (the kernel's eviction range). */
const EVICTION_RANGE = 8;

export class Chains {
  readonly table: ConntrackTable;
  readonly i32: Int32Array;
  readonly u32: Uint32Array;
  /** First word of the entry slab, bucket array, lock stripes, sysctls, zone counters, our stats. */
  readonly E: number;
  readonly B: number;
  readonly L: number;
  readonly sys: number;
  readonly Z: number;
  readonly st: number;
  readonly mask: number;
  readonly lockMask: number;
  readonly k0: number;
  readonly k1: number;
  readonly noref: boolean;
  readonly wid: number;
  /** This worker's record (recovery intents). */
  readonly W: number;
  readonly alloc: SlotAllocator;
  readonly qsbr: Qsbr;
  /** Namespace / zone limits and entry lists (zones.ts). */
  readonly zones: ZoneAccounting;
  /** Called for every entry this thread removes, while its data is still intact. */
  onDestroy: DestroyHook | null = null;
  /** This thread's range of conntrack ids [idNext, idEnd), taken under H_ID_EPOCH idEpoch. */
  private idNext = 0;
  private idEnd = 0;
  private idEpoch = 0;

  constructor(table: ConntrackTable, wid: number) {
    this.table = table;
    this.i32 = table.i32;
    this.u32 = table.u32;
    this.E = table.sec.entries;
    this.B = table.sec.buckets;
    this.L = table.sec.locks;
    this.sys = table.sec.sysctl;
    this.Z = table.sec.zones;
    this.st = table.sec.stats + wid * STAT_WORDS;
    this.mask = table.buckets - 1;
    this.lockMask = table.locks - 1;
    this.k0 = table.i32[H_KEY0]!;
    this.k1 = table.i32[H_KEY1]!;
    this.noref = table.discipline === DISCIPLINE_NOREF;
    this.wid = wid;
    this.W = table.sec.workers + wid * WORKER_WORDS;
    this.alloc = new SlotAllocator(table, wid);
    this.qsbr = new Qsbr(table, wid, this.alloc);
    this.zones = new ZoneAccounting(table, wid);
  }

  entry(slot: number): number {
    return this.E + slot * ENTRY_WORDS;
  }

  hash(t: Int32Array, off: number, proto: number, zone: number, ns: number): number {
    return tupleHash(t, off, proto, zone, ns, this.k0, this.k1);
  }

  private stat(i: number): void {
    this.i32[this.st + i] = (this.i32[this.st + i]! + 1) | 0; // single writer: this thread
  }

  /**
   * Does tuplehash `dir` of entry `e` carry this key? `zones`: the key's zone per direction
   * (original | reply << 16); the zone of direction `dir` is compared (nf_ct_zone_equal).
   */
  private keyEquals(
    e: number, dir: number, h: number, t: Int32Array, off: number, proto: number, zones: number, ns: number,
  ): boolean {
    const i32 = this.i32;
    // Key words are written before the entry is published and never change while it is
    // linked (in 'refcount' mode a recycled slot is caught by the caller's re-check).
    if (i32[e + E_HASH + dir] !== (h | 0)) return false;
    const to = e + E_TUPLE + dir * TUPLE_WORDS;
    // The tuple's words written out (a loop measured slower here): ports and IPv4 words first.
    const o = off;
    if (i32[to + T_PORTS] !== t[o + T_PORTS] || i32[to + T_SRC] !== t[o + T_SRC] || i32[to + T_DST] !== t[o + T_DST] ||
      i32[to + T_SRC + 1] !== t[o + T_SRC + 1] || i32[to + T_SRC + 2] !== t[o + T_SRC + 2] || i32[to + T_SRC + 3] !== t[o + T_SRC + 3] ||
      i32[to + T_DST + 1] !== t[o + T_DST + 1] || i32[to + T_DST + 2] !== t[o + T_DST + 2] || i32[to + T_DST + 3] !== t[o + T_DST + 3]) {
      return false;
    }
    if (i32[e + E_PROTO] !== proto || i32[e + E_NS] !== ns) return false;
    const z = i32[e + E_ZONE]!;
    return dir === DIR_ORIGINAL ? (z & 0xffff) === (zones & 0xffff) : (z >>> 16) === (zones >>> 16);
  }

  /**
   * Find the tuplehash of this tuple. Returns slot << 1 | direction, or -1.
   * Expired entries met on the way are removed (as the kernel's lookup does).
   * In 'refcount' mode the caller owns a reference on the result and must put() it.
   * `zone` is the packet's zone in the original direction (the one `h` was hashed with),
   * `replyZone` its zone in the reply direction (directional zones; default: the same).
   */
  find(t: Int32Array, off: number, proto: number, zone: number, ns: number, h: number, now: number, replyZone = zone): number {
    const i32 = this.i32;
    const zones = (zone & 0xffff) | ((replyZone & 0xffff) << 16);
    const bucket = h & this.mask;
    for (;;) {
      // Chain words: Atomics.load pairs with the writers' Atomics.store that publish links.
      let ref = Atomics.load(i32, this.B + bucket);
      let found = -1;
      while (ref >= 0) {
        const e = this.E + (ref >>> 1) * ENTRY_WORDS;
        const dir = ref & 1;
        // next read before we judge this entry: it stays valid even if the entry is unlinked now.
        // A plain load (an Atomics.load costs 4-5 ns more here): a stale or reordered value can
        // only lead the walk into another chain, which ends on another bucket's nulls marker and
        // restarts the search below, as the kernel's hlist_nulls walk does.
        const next = i32[e + E_NEXT + dir]!;
        if (this.keyEquals(e, dir, h, t, off, proto, zones, ns)) {
          // DYING/CONFIRMED are set atomically; read plainly, as the kernel tests them: a kill
          // racing with this read could as well come right after an atomic one ('refcount' mode
          // re-checks under its reference below, 'noref' keeps the entry until our grace period).
          const status = i32[e + E_STATUS]!;
          if ((status & (IPS_DYING | IPS_CONFIRMED)) === IPS_CONFIRMED) {
            // The deadline: one word (refresh stores it plainly, as WRITE_ONCE); a racy read sees either value.
            if (((i32[e + E_TIMEOUT]! - now) | 0) <= 0) {
              // The slot's generation, then the key again: kill() re-checks the generation, so a
              // slot recycled since (another thread expired it and reused it for a live
              // connection) is left alone. Read only here, not per hop (an Atomics.load costs 4-5 ns).
              const gen = Atomics.load(i32, e + E_GEN);
              if (this.keyEquals(e, dir, h, t, off, proto, zones, ns)) this.expire(ref >>> 1, gen, now);
            } else {
              found = ref;
              break;
            }
          }
        }
        ref = next;
      }
      if (found < 0 && ref !== ~bucket) {
        // Ended on another bucket's nulls marker: an entry we walked was moved. Start over.
        this.stat(ST_SEARCH_RESTART);
        continue;
      }
      if (found < 0 || this.noref) return found;
      // 'refcount': take a reference, then check the slot still holds what we matched.
      const e = this.E + (found >>> 1) * ENTRY_WORDS;
      if (this.getRef(e)) {
        i32[this.W + W_HELD] = (found >>> 1) + 1; // our reference, for recovery (plain: single writer)
        if (this.keyEquals(e, found & 1, h, t, off, proto, zones, ns) &&
          (Atomics.load(i32, e + E_STATUS) & (IPS_DYING | IPS_CONFIRMED)) === IPS_CONFIRMED) {
          return found;
        }
        this.put(found >>> 1);
      }
      this.stat(ST_SEARCH_RESTART);
    }
  }

  /** Increment-if-not-zero on the entry's refcount. */
  getRef(e: number): boolean {
    const i32 = this.i32;
    for (;;) {
      // the count may change under us; the CAS below decides
      const c = Atomics.load(i32, e + E_REFCNT);
      if (c === 0) return false;
      // CAS: never resurrect an entry whose last reference is gone.
      if (Atomics.compareExchange(i32, e + E_REFCNT, c, c + 1) === c) return true;
    }
  }

  /** Drop a reference; the last one hands the slot to reclamation. */
  put(slot: number): void {
    const i32 = this.i32;
    const e = this.E + slot * ENTRY_WORDS;
    // Forget the reference before dropping it: a crash in between leaks it, never drops it twice.
    if (i32[this.W + W_HELD] === slot + 1) i32[this.W + W_HELD] = 0;
    // Atomics.sub: exactly one thread sees the count reach zero.
    const last = Atomics.sub(i32, e + E_REFCNT, 1) === 1;
    if (last) {
      // The slot is ours to hand on; named until it is in limbo or the cache (recovery.ts).
      Atomics.store(i32, this.W + W_RELEASE, slot + 1);
      this.release(slot);
    }
  }

  /** Hand a slot whose last reference is gone to reclamation; clears W_RELEASE. */
  private release(slot: number): void {
    if (this.noref) this.qsbr.retire(slot);
    else this.alloc.free(slot);
    // It is in this worker's limbo or cache now.
    Atomics.store(this.i32, this.W + W_RELEASE, 0);
  }

  /**
   * Allocate a private (unconfirmed) entry. Checks nf_conntrack_max first and, when the table
   * is full, evicts a not-ASSURED entry of namespace `ns` near `h` (early_drop; -1: of any
   * namespace). Returns -1 when full. The entry is counted when confirm() links it.
   */
  newEntry(h: number, now: number, ns = -1): number {
    const i32 = this.i32;
    const max = i32[this.sys + S_MAX]!;
    // The count as a percpu_counter reads it: the folded part (Atomics.load: folders add to it)
    // plus ours. Others' unfolded parts are below COUNT_BATCH each; only when they could matter
    // is every record summed, with the entries other workers are creating that close to the
    // limit (W_RES): each announces its own before it counts (seq-cst store, then loads), so of
    // two racing inserts at least one sees the other, and the table never passes max.
    let count = Atomics.load(i32, H_COUNT) + i32[this.W + W_CNT]!;
    // The others' slack: below COUNT_BATCH per record ever claimed (H_REC_HWM: raised by CAS).
    if (count + (Atomics.load(i32, H_REC_HWM) - 1) * (COUNT_BATCH - 1) >= max) {
      Atomics.store(i32, this.W + W_RES, 1);
      count = this.reservedCount();
    }
    if (count >= max && !this.earlyDrop(h, now, ns)) {
      this.unreserve();
      this.table.wakeGc(); // early_drop found nothing: let the GC worker make room
      return -1;
    }
    // alloc() names the slot in W_INTENT_SLOT (recovery intent: an insert is in progress).
    let slot = this.alloc.alloc();
    if (slot < 0) slot = this.allocSlow();
    if (slot < 0) {
      this.unreserve();
      return -1;
    }
    const e = this.E + slot * ENTRY_WORDS;
    // The slot is private until confirm() publishes it; plain stores suffice until then.
    i32[e + E_NEXT] = -1;
    i32[e + E_NEXT + 1] = -1;
    i32[e + E_MARK] = 0;
    i32[e + E_EXT] = 0;
    i32[e + E_LINK] = -1;
    i32[e + E_GEN] = (i32[e + E_GEN]! + 1) | 0;
    i32[e + E_ID] = this.nextId();
    i32.fill(0, e + E_PRIV, e + E_PRIV + PRIV_WORDS);
    Atomics.store(i32, e + E_REFCNT, 1); // the table's (or creator's) reference
    Atomics.store(i32, e + E_STATUS, IPS_ALLOCATED);
    return slot;
  }

  /** A conntrack id, unique across threads: from this thread's range of ID_RANGE ids. */
  private nextId(): number {
    const i32 = this.i32;
    // H_ID_EPOCH: Atomics.add'ed by a restore that raised H_NEXT_ID past our range.
    const epoch = Atomics.load(i32, H_ID_EPOCH);
    if (this.idNext === this.idEnd || epoch !== this.idEpoch) {
      this.idEpoch = epoch;
      this.idNext = Atomics.add(i32, H_NEXT_ID, ID_RANGE); // the range is ours alone
      this.idEnd = (this.idNext + ID_RANGE) | 0;
    }
    const id = this.idNext;
    this.idNext = (id + 1) | 0;
    return id;
  }

  /** Entries in the table: H_COUNT plus every record's unfolded part (racy while threads insert). */
  exactCount(): number {
    const i32 = this.i32;
    const hwm = Atomics.load(i32, H_REC_HWM); // CAS'd up by registerWorker; records above it were never claimed
    let n = Atomics.load(i32, H_COUNT); // Atomics.add'ed by folders
    // W_CNT: plain stores by each owner; a racy read gives a value it held.
    for (let w = 0; w < hwm; w++) n += i32[this.table.sec.workers + w * WORKER_WORDS + W_CNT]!;
    return n;
  }

  /** exactCount plus the entries other workers are creating close to the limit (W_RES). */
  private reservedCount(): number {
    const i32 = this.i32;
    let n = 0;
    // Reservations first: one cleared after its entry was counted (W_CNT's plain store, then
    // this Atomics.store) is then seen counted, never neither.
    const hwm = Atomics.load(i32, H_REC_HWM); // records above it never claimed
    for (let w = 0; w < hwm; w++) {
      if (w !== this.wid) n += Atomics.load(i32, this.table.sec.workers + w * WORKER_WORDS + W_RES);
    }
    return n + this.exactCount();
  }

  /** Our entry close to the limit is counted or given up: no longer announced (W_RES). */
  private unreserve(): void {
    if (this.i32[this.W + W_RES] !== 0) Atomics.store(this.i32, this.W + W_RES, 0); // ours; others Atomics.load it
  }

  /** Our own view of the count: the folded part plus our unfolded part (GC pressure checks). */
  get approxCount(): number {
    return Atomics.load(this.i32, H_COUNT) + this.i32[this.W + W_CNT]!; // H_COUNT: folders' Atomics.add
  }

  /**
   * Add `d` to this record's part of the entry count; caller holds a bucket lock stripe (which
   * keeps recovery's recount out). Folds into H_COUNT at +-COUNT_BATCH.
   */
  private countBy(d: number): void {
    const i32 = this.i32;
    const c = i32[this.W + W_CNT]! + d;
    this.zones.dirty = true;
    if (c >= COUNT_BATCH || c <= -COUNT_BATCH) {
      i32[this.W + W_CNT] = 0; // plain: single writer, ordered for recovery by the stripe we hold
      Atomics.add(i32, H_COUNT, c); // the fold: the global part, shared by every thread
    } else {
      i32[this.W + W_CNT] = c;
    }
  }

  /**
   * Fold this record's unfolded count into H_COUNT, and its namespace and zone deltas into their
   * counters (at the end of a batch, so a table at rest counts exactly). Takes this worker's own
   * bucket stripe for it (see countBy).
   */
  foldCount(): void {
    if (!this.zones.dirty) return; // nothing counted since the last fold: a batch without inserts or deletes
    this.zones.dirty = false;
    const i32 = this.i32;
    const c = i32[this.W + W_CNT]!;
    if (c === 0 && !this.zones.pending) return;
    const l = this.L + (this.wid & this.lockMask) * LOCK_STRIDE;
    lock(i32, l, this.wid);
    if (c !== 0) {
      i32[this.W + W_CNT] = 0;
      Atomics.add(i32, H_COUNT, c); // under the stripe, as in countBy
    }
    this.zones.foldAll(); // namespace and zone deltas too (zones.ts)
    unlock(i32, l);
  }

  /**
   * No free slot: the slots are waiting out grace periods (early_drop's victims in limbo). An
   * expedited grace period: advance the epoch at once (threads entering a batch from now on no
   * longer hold our limbo up), reclaim, and if other threads are still inside batches, give them
   * the CPU for a moment (oversubscribed cores: they are descheduled mid-batch) and try again, a
   * bounded number of times. 'refcount' frees at once: one reclaim is all there is to do.
   */
  private allocSlow(): number {
    const i32 = this.i32;
    for (let round = 0; round < EXPEDITE_ROUNDS; round++) {
      if (this.noref) Atomics.add(i32, H_EPOCH, 2); // the expedited grace period starts here
      this.qsbr.reclaim();
      const slot = this.alloc.alloc();
      if (slot >= 0 || !this.noref || this.qsbr.pending === 0) {
        if (round > 0) this.stat(ST_EXPEDITED);
        return slot;
      }
      // A short sleep on a private word: lets descheduled readers run to the end of their batch.
      Atomics.wait(pauseWord, 0, 0, EXPEDITE_WAIT_MS);
    }
    this.stat(ST_EXPEDITED);
    return -1;
  }

  /** Free an entry that was never confirmed (never counted either). */
  discard(slot: number): void {
    const i32 = this.i32;
    // Recovery intent: the creator's reference is being dropped (may or may not be done).
    Atomics.store(i32, this.W + W_INTENT, INTENT_INSERT | INTENT_UNCOUNTED);
    // Drop the creator's reference with a sub, never a store of 0: in 'refcount' mode a stale
    // lookup may hold a transient reference on the slot, and its put() then frees it.
    const last = Atomics.sub(i32, this.E + slot * ENTRY_WORDS + E_REFCNT, 1) === 1;
    // After the sub: the slot is named by W_RELEASE, no longer by the insert (recovery.ts tells
    // a crash between the two from the refcount).
    if (last) Atomics.store(i32, this.W + W_RELEASE, slot + 1);
    Atomics.store(i32, this.W + W_INTENT_SLOT, 0);
    Atomics.store(i32, this.W + W_INTENT, INTENT_NONE);
    this.unreserve();
    if (last) {
      this.alloc.free(slot); // never published: no grace period needed
      Atomics.store(i32, this.W + W_RELEASE, 0); // it is in our cache
    }
  }

  private lockStripes(b0: number, b1: number): void {
    const l0 = b0 & this.lockMask;
    const l1 = b1 & this.lockMask;
    // Fixed order (lower stripe first) so two writers never wait on each other in a cycle.
    if (l0 === l1) lock(this.i32, this.L + l0 * LOCK_STRIDE, this.wid);
    else if (l0 < l1) { lock(this.i32, this.L + l0 * LOCK_STRIDE, this.wid); lock(this.i32, this.L + l1 * LOCK_STRIDE, this.wid); }
    else { lock(this.i32, this.L + l1 * LOCK_STRIDE, this.wid); lock(this.i32, this.L + l0 * LOCK_STRIDE, this.wid); }
  }

  private unlockStripes(b0: number, b1: number): void {
    const l0 = b0 & this.lockMask;
    const l1 = b1 & this.lockMask;
    unlock(this.i32, this.L + l0 * LOCK_STRIDE);
    if (l1 !== l0) unlock(this.i32, this.L + l1 * LOCK_STRIDE);
  }

  /** Lock stripe word guarding the original tuple's bucket of entry `e` (TCP state lock). */
  stateLock(e: number): number {
    return this.L + ((this.i32[e + E_HASH]! & this.mask) & this.lockMask) * LOCK_STRIDE;
  }

  /**
   * Publish a private entry in both chains (the kernel's __nf_conntrack_confirm). The entry's
   * tuples, hashes, protocol, zone, namespace and timeout must be set. Returns CONFIRM_OK, the
   * reference of an entry already holding one of the tuples (a clash: the caller discards its
   * own and joins that one; in 'refcount' mode the caller owns a reference on it),
   * CONFIRM_CHAIN_TOOLONG, or CONFIRM_NS_LIMIT / CONFIRM_ZONE_LIMIT (zones.ts: the entry's
   * namespace or zone is at its limit; nothing was changed).
   */
  confirm(slot: number): number {
    const i32 = this.i32;
    const e = this.E + slot * ENTRY_WORDS;
    const h0 = i32[e + E_HASH]!;
    const h1 = i32[e + E_HASH + 1]!;
    const b0 = h0 & this.mask;
    const b1 = h1 & this.mask;
    const proto = i32[e + E_PROTO]!;
    const ns = i32[e + E_NS]!;
    const z = i32[e + E_ZONE]!;
    const maxChain = i32[H_MAX_CHAIN]!;
    this.lockStripes(b0, b1);
    let clash = -1;
    let len = 0;
    let tooLong = false;
    for (let ref = i32[this.B + b0]!; ref >= 0; ref = i32[this.E + (ref >>> 1) * ENTRY_WORDS + E_NEXT + (ref & 1)]!) {
      if (this.keyEquals(this.E + (ref >>> 1) * ENTRY_WORDS, ref & 1, h0, i32, e + E_TUPLE, proto, z, ns)) { clash = ref; break; }
      if (++len >= maxChain) { tooLong = true; break; } // a chain already at the cap takes no more
    }
    // Both tuplehashes in one bucket: that chain grows by two.
    if (b0 === b1 && len + 2 > maxChain) tooLong = true;
    if (clash < 0 && !tooLong) {
      len = 0;
      for (let ref = i32[this.B + b1]!; ref >= 0; ref = i32[this.E + (ref >>> 1) * ENTRY_WORDS + E_NEXT + (ref & 1)]!) {
        if (this.keyEquals(this.E + (ref >>> 1) * ENTRY_WORDS, ref & 1, h1, i32, e + E_TUPLE + TUPLE_WORDS, proto, z, ns)) { clash = ref; break; }
        if (++len >= maxChain) { tooLong = true; break; }
      }
    }
    if (clash >= 0) {
      const ce = this.E + (clash >>> 1) * ENTRY_WORDS;
      // clashing entry: DYING is set under these same locks, so this read is exact
      const ok = (Atomics.load(i32, ce + E_STATUS) & IPS_DYING) === 0 && (this.noref || this.getRef(ce));
      if (ok && !this.noref) i32[this.W + W_HELD] = (clash >>> 1) + 1; // our reference, for recovery
      this.unlockStripes(b0, b1);
      return ok ? clash : CONFIRM_DYING;
    }
    if (tooLong) {
      this.unlockStripes(b0, b1);
      this.stat(ST_CHAIN_TOOLONG);
      this.stat(ST_INSERT_FAILED);
      return CONFIRM_CHAIN_TOOLONG;
    }
    // Namespace and zone limits (zones.ts): charged under the bucket locks, never past a limit.
    const zk = zoneKey(z);
    const limited = this.zones.charge(ns, zk);
    if (limited !== 0) {
      this.unlockStripes(b0, b1);
      return limited; // CONFIRM_NS_LIMIT or CONFIRM_ZONE_LIMIT
    }
    // CONFIRMED before the links: a reader that finds the entry sees it confirmed.
    Atomics.or(i32, e + E_STATUS, IPS_CONFIRMED);
    // Each link: next first, then the head, so a reader never sees a half link. The next word is
    // a plain store: only a walker that arrived by that direction's tuplehash reads it, and none
    // can before the head's Atomics.store below publishes it (with everything written before).
    i32[e + E_NEXT + DIR_REPLY] = i32[this.B + b1]!;
    Atomics.store(i32, this.B + b1, (slot << 1) | DIR_REPLY);
    i32[e + E_NEXT + DIR_ORIGINAL] = i32[this.B + b0]!;
    // publishes the entry in its original chain (after the reply link, above)
    Atomics.store(i32, this.B + b0, (slot << 1) | DIR_ORIGINAL);
    this.countBy(1); // the entry count (our W_CNT), under the bucket locks
    this.zones.cacheAdd(ZC_ZORIG, z & 0xffff, 1); // per-zone count (our delta), under the bucket locks
    this.zones.link(slot, ns, zk); // zone and namespace entry lists, also under the bucket locks
    // NAT bysource link (nat/bysource.ts), under the bucket locks like its removal in kill.
    if (Atomics.load(i32, e + E_STATUS) & IPS_SRC_NAT_DONE) bysourceAdd(this.table, this.wid, slot);
    // Before the locks go: the entry belongs to the table now (recovery.ts recounts the counts,
    // so a crash just before is fine; after the unlock the slot may be another's).
    Atomics.store(i32, this.W + W_INTENT_SLOT, 0);
    this.unreserve(); // counted (countBy above)
    this.unlockStripes(b0, b1);
    return CONFIRM_OK;
  }

  /** Remove tuplehash `ref` from its chain; caller holds that bucket's stripe. */
  private unlinkOne(slot: number, dir: number, bucket: number): void {
    const i32 = this.i32;
    const ref = (slot << 1) | dir;
    const e = this.E + slot * ENTRY_WORDS;
    const next = i32[e + E_NEXT + dir]!;
    let prevWord = this.B + bucket;
    let cur = i32[prevWord]!;
    while (cur >= 0 && cur !== ref) {
      prevWord = this.E + (cur >>> 1) * ENTRY_WORDS + E_NEXT + (cur & 1);
      cur = i32[prevWord]!;
    }
    // Bypass the entry; its own next word stays intact for readers standing on it.
    if (cur === ref) Atomics.store(i32, prevWord, next);
  }

  /**
   * Remove an entry from the table (the kernel's nf_ct_delete). Returns false when another
   * thread removed it first. The table's reference is dropped; the slot is reused after a
   * grace period ('noref') or when the last reference goes ('refcount').
   */
  kill(slot: number, why: number, gen?: number, expiredAt?: number): boolean {
    const i32 = this.i32;
    const e = this.E + slot * ENTRY_WORDS;
    const b0 = i32[e + E_HASH]! & this.mask;
    const b1 = i32[e + E_HASH + 1]! & this.mask;
    this.lockStripes(b0, b1);
    // DYING/CONFIRMED only change under both bucket locks, which we hold
    const status = Atomics.load(i32, e + E_STATUS);
    // A caller without a reference ('refcount') may name a slot recycled since it read the
    // hashes: only remove the entry if it still lives in the buckets we locked, is still the
    // entry the caller saw (`gen`: E_GEN is bumped on every reuse) and, for an expiry, is still
    // expired at `expiredAt` (a packet may have refreshed it; E_TIMEOUT is Atomics.store'd).
    if ((status & (IPS_DYING | IPS_CONFIRMED)) !== IPS_CONFIRMED ||
      (i32[e + E_HASH]! & this.mask) !== b0 || (i32[e + E_HASH + 1]! & this.mask) !== b1 ||
      (gen !== undefined && Atomics.load(i32, e + E_GEN) !== gen) ||
      (expiredAt !== undefined && ((Atomics.load(i32, e + E_TIMEOUT) - expiredAt) | 0) > 0)) {
      this.unlockStripes(b0, b1);
      return false;
    }
    const W = this.W;
    const tag = (slot + 1) << 4;
    // The DESTROY's reason, for recovery. Only this thread writes its record: skipping a store of
    // the value already there (a flush's every kill is KILL_DELETE) leaves the same word.
    if (i32[W + W_KILL_WHY] !== why) Atomics.store(i32, W + W_KILL_WHY, why);
    // Recovery intent: the locks are ours and the entry is ours to remove.
    Atomics.store(i32, W + W_KILL, tag | KILL_STEP_LOCKED);
    // DYING first: readers that already hold the entry see it is on its way out.
    Atomics.or(i32, e + E_STATUS, IPS_DYING);
    this.unlinkOne(slot, DIR_ORIGINAL, b0);
    this.unlinkOne(slot, DIR_REPLY, b1);
    if (status & IPS_SRC_NAT_DONE) bysourceRemove(this.table, this.wid, slot); // before E_LINK goes back to off-table use
    this.zones.cacheAdd(ZC_ZORIG, i32[e + E_ZONE]! & 0xffff, -1); // under the bucket locks, like the add
    const ens = i32[e + E_NS]!;
    const ezk = zoneKey(i32[e + E_ZONE]!);
    this.zones.unlink(slot, ens, ezk); // zone and namespace lists and charges, like confirm's
    this.zones.uncharge(ens, ezk);
    this.countBy(-1); // the entry count (our W_CNT), under the bucket locks like confirm's
    Atomics.store(i32, W + W_KILL, tag | KILL_STEP_UNLINKED); // recovery recounts the counts
    this.unlockStripes(b0, b1);
    if (why === KILL_EXPIRED) this.stat(ST_EXPIRED);
    // Recovery intent around the DESTROY event: a crash inside it is finished by recovery. The
    // previous DESTROY's event words are cleared first, so recovery never takes them for this one's.
    // (Our own words, read plainly: with no event subscriber they stay 0 and need no store.)
    if ((i32[W + W_EV_D]! | i32[W + W_EV_M]! | i32[W + W_EV_PARK]!) !== 0) {
      Atomics.store(i32, W + W_EV_D, 0);
      Atomics.store(i32, W + W_EV_M, 0);
      Atomics.store(i32, W + W_EV_PARK, 0);
    }
    Atomics.store(i32, W + W_KILL, tag | KILL_STEP_EMITTING);
    if (this.onDestroy) this.onDestroy(e, why);
    Atomics.store(i32, W + W_KILL, tag | KILL_STEP_EMITTED);
    // Drop the table's reference (not put(): that is for lookup references).
    Atomics.store(i32, W + W_KILL, tag | KILL_STEP_DROPPING); // recovery intent: around the sub
    const last = Atomics.sub(i32, e + E_REFCNT, 1) === 1; // exactly one thread sees zero
    // After the sub: the kill is done; a last reference is named by W_RELEASE (recovery.ts tells
    // a crash in between from the refcount).
    if (last) Atomics.store(i32, W + W_RELEASE, slot + 1);
    Atomics.store(i32, W + W_KILL, 0);
    if (last) this.release(slot);
    return true;
  }

  /**
   * Remove an entry found expired (the kernel's nf_ct_gc_expired): only if the slot still holds
   * generation `gen` (when given) and the entry is still expired at `now`.
   */
  expire(slot: number, gen?: number, now?: number): boolean {
    return this.kill(slot, KILL_EXPIRED, gen, now);
  }

  /**
   * Evict one not-ASSURED entry from the EVICTION_RANGE buckets starting at `h`'s
   * (the kernel's early_drop), of namespace `ns` only (-1: any; the kernel checks net_eq).
   * Expired entries met are removed too, whatever their namespace. True if room was made.
   */
  earlyDrop(h: number, now: number, ns = -1): boolean {
    const i32 = this.i32;
    let bucket = h & this.mask;
    let freed = false;
    for (let i = 0; i < EVICTION_RANGE; i++) {
      // chain head and links: lock-free read side, paired with writers' Atomics.store
      for (let ref = Atomics.load(i32, this.B + bucket); ref >= 0;) {
        const slot = ref >>> 1;
        const e = this.E + slot * ENTRY_WORDS;
        // next before a possible kill: unlinking leaves this entry's own next intact
        const next = Atomics.load(i32, e + E_NEXT + (ref & 1));
        // status bits are set by other threads with Atomics.or
        const gen = Atomics.load(i32, e + E_GEN); // before the status: kill() re-checks it
        const status = Atomics.load(i32, e + E_STATUS);
        if ((status & (IPS_DYING | IPS_CONFIRMED)) === IPS_CONFIRMED) {
          if (((Atomics.load(i32, e + E_TIMEOUT) - now) | 0) <= 0) {
            if (this.expire(slot, gen, now)) freed = true;
          } else if ((status & IPS_ASSURED) === 0 && (ns < 0 || i32[e + E_NS] === ns) && this.kill(slot, KILL_EARLY_DROP, gen)) {
            this.stat(ST_EARLY_DROP);
            return true;
          }
        }
        ref = next;
      }
      if (freed) return true;
      bucket = (bucket + 1) & this.mask;
    }
    return false;
  }

  /**
   * early_drop inside a namespace or zone at its limit (`limit`: CONFIRM_NS_LIMIT or
   * CONFIRM_ZONE_LIMIT): evict the oldest expired or not-ASSURED entry of namespace `ns` (and,
   * for a zone, of zone `zk`) from its list. Never another namespace's entry. Must run online
   * ('noref'). True if room was made.
   */
  earlyDropWithin(limit: number, ns: number, zk: number, now: number): boolean {
    const kind = limit === CONFIRM_NS_LIMIT ? LIST_NS : LIST_ZONE;
    const slot = this.zones.dropCandidate(kind, kind === LIST_NS ? ns : zk, ns, now);
    if (slot < 0) return false;
    // E_TIMEOUT: Atomics.store by the packet path.
    const expired = ((Atomics.load(this.i32, this.E + slot * ENTRY_WORDS + E_TIMEOUT) - now) | 0) <= 0;
    if (!this.kill(slot, expired ? KILL_EXPIRED : KILL_EARLY_DROP, undefined, expired ? now : undefined)) return false;
    if (!expired) this.stat(ST_EARLY_DROP);
    return true;
  }

  /** Confirmed entries in the table right now (exactCount: racy while other threads insert). */
  get count(): number {
    return this.exactCount();
  }

  /**
   * Visit every confirmed, live entry once (through its ORIGINAL tuplehash). The caller must
   * be online (inside a batch) in 'noref' mode; the visitor must not keep `e` past the batch.
   */
  forEach(visit: (e: number, slot: number) => void): void {
    const i32 = this.i32;
    const nb = this.mask + 1;
    for (let b = 0; b < nb; b++) {
      // lock-free walk, as in find()
      for (let ref = Atomics.load(i32, this.B + b); ref >= 0;) {
        const e = this.E + (ref >>> 1) * ENTRY_WORDS;
        // next before visiting: the visitor may kill this entry
        const next = Atomics.load(i32, e + E_NEXT + (ref & 1));
        if ((ref & 1) === DIR_ORIGINAL &&
          (Atomics.load(i32, e + E_STATUS) & (IPS_DYING | IPS_CONFIRMED)) === IPS_CONFIRMED) {
          visit(e, ref >>> 1);
        }
        ref = next;
      }
    }
  }
}
