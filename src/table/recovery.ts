/**
 * Crash recovery: put the table right after a worker thread died at an arbitrary point
 * (worker.terminate(), an uncaught exception, process.exit in a worker), then give its record back.
 *
 * Protocol. Every write path records what it is doing in its own worker record (layout.ts,
 * W_INTENT .. W_HELD) with Atomics.store. A thread can be stopped between any two statements
 * (observed: even between two Atomics calls), so a record and the shared change it describes are
 * never assumed to happen together: each step is either detectable from shared state, or
 * bracketed by "about to" / "done" records, or repaired by recounting.
 *
 *  - Counters. The entry count is H_COUNT plus every record's W_CNT (layout.ts), and both change
 *    only under a bucket lock stripe (confirm and kill count linked entries; folds take one).
 *    After a crash inside an insert, a delete or with a stripe held, recovery takes every bucket
 *    lock (ascending, after releasing the dead worker's), which freezes every count, recounts
 *    the linked entries and the affected zones from the chains, and sets H_COUNT to linked
 *    minus the other records' W_CNT, the dead one's W_CNT to 0. Without all the locks (another
 *    dead worker holds one) it folds the dead record's W_CNT into H_COUNT with the deltas its
 *    intents imply (best effort; the recovery that gets every lock sets it right).
 *  - Allocator (alloc.ts). alloc() names the slot it hands out in W_INTENT_SLOT before the cache
 *    count drops (so the slot is in the cache or named). refill/spill/drain run under H_FREE_LOCK,
 *    record the free-list head they started from (W_ALLOC_HEAD) and the cache count before
 *    (W_ALLOC_OP), and commit with the cache-count store. Recovery: if the dead worker holds
 *    H_FREE_LOCK with an op recorded and the cache count is still the one before, the list head is
 *    rolled back (slots taken by a refill are still chained from the old head; slots pushed by a
 *    spill are still in the cache); H_FREE_COUNT is then recounted by walking the list.
 *  - Insert (chains.ts newEntry/confirm/discard). W_INTENT_SLOT names the private slot from
 *    alloc() until confirm has linked and counted it (cleared under the bucket locks) or discard
 *    has dropped it. Recovery: no slot named: nothing to do. CONFIRMED set on the named slot: the
 *    dead worker holds both bucket locks and was linking, so the missing tuplehashes are linked
 *    and the counts recounted (roll forward). Otherwise the creator's reference on the private
 *    slot (if any, and not in the cache) is dropped, freeing it when that was the last (roll
 *    back; nothing was counted). discard() sets W_INTENT = INSERT | UNCOUNTED around its
 *    reference drop, with W_RELEASE naming the slot if that was the last reference.
 *  - Delete (chains.ts kill). W_KILL = slot | step: LOCKED (locks held, the entry is ours),
 *    UNLINKED (and uncounted), EMITTING, EMITTED, DROPPING (the table's reference); cleared after the drop.
 *    Recovery rolls forward from the recorded step: DYING, unlink both tuplehashes (each only if
 *    still linked), counters (recounted), reference (a refcount of 0 tells a finished drop).
 *  - Last reference (chains.ts put/kill). W_RELEASE names a slot whose refcount reached zero
 *    until it is in the limbo list ('noref') or the cache ('refcount'); recovery puts it there if
 *    it is in neither.
 *  - Limbo (rcu.ts reclaim). W_RECLAIM names the slot being moved from the limbo head to the
 *    cache (its grace period is over); if it is in neither, recovery frees it. The limbo list is
 *    walked by its links from W_LIMBO_HEAD (retire links a slot before moving the tail).
 *  - Lookup references ('refcount' only): W_HELD names the reference a lookup holds; recovery
 *    drops it. (One plain store per lookup; 'noref' lookups record nothing.)
 *
 *  - Events (ecache.ts recoverProducer): records it reserved and did not publish get tombstones;
 *    a delete it was in whose DESTROY did not get out (KILL_STEP_EMITTING and W_EV_* say how far
 *    it got) has its DESTROY written by recovery, with the reason from W_KILL_WHY.
 *  - The GC: if it was the table's GC, H_GC_WID is cleared so startGc() can start another.
 *
 * Then: every lock word the dead worker owns (all kinds: layout.ts lockRegistry) is released (after the repairs above, which run
 * while its locks still keep everyone else out), its cached free slots and the slots freed above
 * go to the shared free list, its limbo list (and released slots) waits for a grace period on the
 * shared orphan list (H_ORPHAN_*, under H_FREE_LOCK; recovery waits up to graceWaitMs for it,
 * and reclaimOrphans() finishes later), and its record is cleared and released. When
 * H_FREE_LOCK is held by another worker for more than a moment (it died too, and its own recovery
 * is queued behind this one), the slots go to lock-free hand-off stacks (H_PEND_*) instead, which
 * the next holder of the lock splices in: no recovery waits on another dead worker.
 *
 * Recovery takes locks under the dead worker's id (its record stays claimed until the end), so it
 * needs no record of its own. Call it from a thread that is not inside a batch.
 */
import {
  ALLOC_OP_DRAIN, ALLOC_OP_REFILL, ALLOC_OP_SPILL, DIR_ORIGINAL, DIR_REPLY, DISCIPLINE_NOREF,
  ENTRY_WORDS, E_EXT, E_HASH, E_LINK, E_NEXT, E_REFCNT, E_RETIRE, E_STATUS, E_ZONE, H_COUNT, H_EPOCH,
  H_FREE_COUNT, H_FREE_HEAD, H_FREE_LOCK, H_ORPHAN_COUNT, H_ORPHAN_HEAD,
  INTENT_UNCOUNTED, IPS_CONFIRMED, IPS_DYING,
  KILL_STEP_DROPPING, KILL_STEP_LOCKED, KILL_STEP_UNLINKED, W_ALIVE, W_CNT, W_RES, W_ALLOC_HEAD, W_ALLOC_OP, W_CACHE, W_CACHE_COUNT, W_HELD, W_INTENT,
  W_INTENT_SLOT, W_KILL, W_LIMBO_COUNT, W_LIMBO_HEAD, W_LIMBO_TAIL, W_RECLAIM, W_RELEASE, W_STATE,
  WORKER_WORDS, XC_EXT_LOCK, ZL_LOCKS, H_PEND_FREE, H_PEND_ORPHAN, H_GC_WID, H_GC_STOP, H_GC_DEATHS,
  W_KILL_WHY, KILL_STEP_EMITTING, KILL_STEP_EMITTED, XC_EV_PARK_LOCK, XC_EV_PARKED, XC_EV_PHEAD, XC_EV_PTAIL,
  H_CLOCK, lockRegistry, zoneRec,
} from './layout.js';
import { pushPending, splicePendingFree, takePending } from './alloc.js';
import { EventProducer, recoverProducer } from './ecache.js';
import { extRelease } from './ext.js';
import { rebuildZoneAccounting, ZoneAccounting } from './zones.js';
import { forceUnlock, lockOwner, tryLock, unlock } from './locks.js';
import { LOCK_STRIDE, NAT_LOCK_COUNT } from './layout.js';
import type { ConntrackTable } from './table.js';
import { rangeError } from '../errors.js';

/** Options of recoverDeadWorker(): how long to wait for grace periods and locks. */
export interface RecoveryOptions {
  /** How long to wait for the grace period of the dead worker's limbo, ms (default 1000). */
  graceWaitMs?: number;
  /** How long to wait for a lock held by another thread before giving up, ms (default 10000). */
  lockWaitMs?: number;
}

/** What recoverDeadWorker() found and did. */
export interface RecoveryReport {
  wid: number;
  /** False when the record was not claimed (nothing to do, e.g. recovered already). */
  recovered: boolean;
  /** Lock words the dead worker held, released. */
  locksReleased: number;
  /** The allocator operation it was in ('refill', 'spill', 'drain') or null. */
  allocOp: string | null;
  /** That operation had moved the list head but not committed: the head was rolled back. */
  allocRolledBack: boolean;
  /** The insert it was in: 'none', 'rolled-back' (private entry freed), 'rolled-forward' (linked). */
  insert: 'none' | 'rolled-back' | 'rolled-forward';
  /** The delete it was in, finished from this step (KILL_STEP_*), or 0 for none. */
  killStep: number;
  /** References it held that were dropped (lookup references, the table's in a delete). */
  referencesDropped: number;
  /** H_COUNT decrements made on its behalf. */
  countsReturned: number;
  /** Slots put on the shared free list at once (its cache, its private entry, half-freed slots). */
  slotsFreed: number;
  /** Slots from its limbo (or released by it) that needed a grace period. */
  limboSlots: number;
  /** Orphan slots (any dead worker's) recycled by this call after their grace period. */
  orphansReclaimed: number;
  /** Orphan slots still waiting for a grace period when this call returned (see reclaimOrphans). */
  orphansPending: number;
  /** The DESTROY event of the delete it was in, written by recovery (it had not been). */
  destroyEmitted: boolean;
  /** Event records it had reserved and not published, published as tombstones. */
  tombstones: number;
  /** It was the table's GC worker: the GC word was cleared, so startGc() can start a new one. */
  gcReleased: boolean;
  /** H_FREE_LOCK was held by another (dead) worker: the slots went to the lock-free hand-off stacks. */
  handedOff: boolean;
}

class RecoveryBlocked extends Error {}

const sleepWord = new Int32Array(new SharedArrayBuffer(4));
function sleepMs(ms: number): void {
  Atomics.wait(sleepWord, 0, 0, ms); // nobody notifies this private word: a plain sleep
}

/** Take a lock for `owner`, waiting at most `ms`; throws naming the holder on timeout. */
function lockWithin(i32: Int32Array, idx: number, owner: number, ms: number, what: string): void {
  const deadline = Date.now() + ms;
  while (!tryLock(i32, idx, owner)) {
    if (Date.now() > deadline) {
      const holder = lockOwner(Atomics.load(i32, idx)); // diagnostic read
      throw new RecoveryBlocked(`recovery: ${what} is still held by worker ${holder} after ${ms} ms ` +
        '(if that worker died too, recover it first or use recoverDeadWorkers)');
    }
    sleepMs(1);
  }
}

/** How long recovery waits for H_FREE_LOCK before handing its slots off lock-free, ms. */
const HANDOFF_WAIT_MS = 200;

/** Try to take a lock for `owner` for at most `ms`; false on timeout. */
function tryLockWithin(i32: Int32Array, idx: number, owner: number, ms: number): boolean {
  const deadline = Date.now() + ms;
  while (!tryLock(i32, idx, owner)) {
    if (Date.now() > deadline) return false;
    sleepMs(1);
  }
  return true;
}

/** Does the chain of `bucket` hold `ref`? Bounded by the slab size. */
function chainHas(table: ConntrackTable, bucket: number, ref: number): boolean {
  const i32 = table.i32;
  let cur = Atomics.load(i32, table.sec.buckets + bucket); // pairs with the writers' stores
  for (let n = 0; cur >= 0 && n <= 2 * table.capacity; n++) {
    if (cur === ref) return true;
    cur = Atomics.load(i32, table.sec.entries + (cur >>> 1) * ENTRY_WORDS + E_NEXT + (cur & 1)); // as above
  }
  return false;
}

/** Bypass `ref` in the chain of `bucket` if it is there (caller holds that bucket's lock). */
function unlinkRef(table: ConntrackTable, bucket: number, ref: number): void {
  const i32 = table.i32;
  const E = table.sec.entries;
  let prev = table.sec.buckets + bucket;
  let cur = i32[prev]!;
  for (let n = 0; cur >= 0 && cur !== ref && n <= 2 * table.capacity; n++) {
    prev = E + (cur >>> 1) * ENTRY_WORDS + E_NEXT + (cur & 1);
    cur = i32[prev]!;
  }
  if (cur !== ref) return;
  // Publish the bypass; the entry's own next word stays for readers standing on it.
  Atomics.store(i32, prev, i32[E + (ref >>> 1) * ENTRY_WORDS + E_NEXT + (ref & 1)]!);
}

/** Link `ref` at the head of `bucket` (caller holds that bucket's lock). */
function linkRef(table: ConntrackTable, bucket: number, ref: number): void {
  const i32 = table.i32;
  const hb = table.sec.buckets + bucket;
  // Next first, then the head, as confirm() does: readers never see a half link.
  Atomics.store(i32, table.sec.entries + (ref >>> 1) * ENTRY_WORDS + E_NEXT + (ref & 1), i32[hb]!);
  Atomics.store(i32, hb, ref);
}

/** The oldest epoch an online worker other than `skip` may still read under. */
function graceMin(table: ConntrackTable, skip: number): number {
  const i32 = table.i32;
  let min = (Atomics.load(i32, H_EPOCH) + 2) | 0; // seq-cst: after the retirements we check
  for (let k = 0; k < table.maxWorkers; k++) {
    if (k === skip) continue;
    const s = Atomics.load(i32, table.sec.workers + k * WORKER_WORDS + W_STATE); // QSBR state
    if (s !== 0 && ((s - min) | 0) < 0) min = s;
  }
  return min;
}

/** Push slots on the shared free list; caller holds H_FREE_LOCK. */
function pushFree(table: ConntrackTable, slots: Iterable<number>, owner: number): number {
  const i32 = table.i32;
  const E = table.sec.entries;
  let head = i32[H_FREE_HEAD]!; // H_FREE_LOCK held
  let n = 0;
  for (const s of slots) {
    const e = E + s * ENTRY_WORDS;
    // Its extension block goes back with it, as SlotAllocator.free does (idempotent exchange).
    if (i32[e + E_EXT] !== 0) extRelease(table, owner, s);
    Atomics.store(i32, e + E_REFCNT, 0); // no reference survives the free
    Atomics.store(i32, e + E_STATUS, 0); // reads as free before it is reachable from the list
    i32[e + E_LINK] = head;
    head = s;
    n++;
  }
  i32[H_FREE_HEAD] = head;
  i32[H_FREE_COUNT] = i32[H_FREE_COUNT]! + n;
  return n;
}

/** Move orphans whose grace period has passed to the free list; caller holds H_FREE_LOCK. */
function reclaimOrphansLocked(table: ConntrackTable, min: number, owner: number): number {
  const i32 = table.i32;
  const E = table.sec.entries;
  // Hand-off stacks of recoveries that could not take the lock: onto the lists they were meant for.
  if (Atomics.load(i32, H_PEND_FREE) !== 0) splicePendingFree(table);
  if (Atomics.load(i32, H_PEND_ORPHAN) !== 0) {
    const add = takePending(table, H_PEND_ORPHAN);
    let head = i32[H_ORPHAN_HEAD]! - 1; // H_FREE_LOCK held
    for (const o of add) {
      i32[E + o * ENTRY_WORDS + E_LINK] = head;
      head = o;
    }
    i32[H_ORPHAN_HEAD] = head + 1;
    i32[H_ORPHAN_COUNT] = i32[H_ORPHAN_COUNT]! + add.length;
  }
  let prevLink = -1; // word holding the link to `cur` (-1: H_ORPHAN_HEAD, stored + 1)
  let cur = i32[H_ORPHAN_HEAD]! - 1;
  let n = 0;
  const freed: number[] = [];
  for (let guard = 0; cur >= 0 && guard <= table.capacity; guard++) {
    const e = E + cur * ENTRY_WORDS;
    const next = i32[e + E_LINK]!;
    if (((i32[e + E_RETIRE]! - min) | 0) <= 0) {
      if (prevLink < 0) i32[H_ORPHAN_HEAD] = next + 1;
      else i32[prevLink] = next;
      freed.push(cur);
      n++;
    } else {
      prevLink = e + E_LINK;
    }
    cur = next;
  }
  if (n > 0) {
    i32[H_ORPHAN_COUNT] = i32[H_ORPHAN_COUNT]! - n;
    pushFree(table, freed, owner);
  }
  return n;
}

/**
 * Recycle the orphaned limbo slots (of dead workers) whose grace period has passed. `owner` is a
 * worker id the caller owns (used as the lock owner; call it between batches).
 * Returns the number of slots recycled. Cheap when there are no orphans.
 */
export function reclaimOrphans(table: ConntrackTable, owner: number, lockWaitMs = 10000): number {
  const i32 = table.i32;
  // Racy peeks; the lists are read under the lock.
  if (Atomics.load(i32, H_ORPHAN_HEAD) === 0 && Atomics.load(i32, H_PEND_ORPHAN) === 0 && Atomics.load(i32, H_PEND_FREE) === 0) return 0;
  const min = graceMin(table, -1);
  lockWithin(i32, H_FREE_LOCK, owner, lockWaitMs, 'the free-list lock');
  try {
    return reclaimOrphansLocked(table, min, owner);
  } finally {
    unlock(i32, H_FREE_LOCK);
  }
}

/** Orphaned limbo slots still waiting for a grace period. */
export function orphanCount(table: ConntrackTable): number {
  return Atomics.load(table.i32, H_ORPHAN_COUNT); // written under H_FREE_LOCK
}

const ALLOC_OP_NAMES: Record<number, string> = {
  [ALLOC_OP_REFILL]: 'refill', [ALLOC_OP_SPILL]: 'spill', [ALLOC_OP_DRAIN]: 'drain',
};

/**
 * Recover after worker `wid` died: finish or undo what it was doing, release its locks, return
 * its slots and its record. Idempotent: a record that is not claimed is left alone.
 */
export function recoverDeadWorker(table: ConntrackTable, wid: number, opts: RecoveryOptions = {}): RecoveryReport {
  if (!Number.isInteger(wid) || wid < 0 || wid >= table.maxWorkers) {
    throw rangeError(`worker id ${wid} is out of range 0..${table.maxWorkers - 1}`);
  }
  const graceWaitMs = opts.graceWaitMs ?? 1000;
  const lockWaitMs = opts.lockWaitMs ?? 10000;
  const i32 = table.i32;
  const E = table.sec.entries;
  const L = table.sec.locks;
  const mask = table.buckets - 1;
  const lockMask = table.locks - 1;
  const noref = table.discipline === DISCIPLINE_NOREF;
  const W = table.sec.workers + wid * WORKER_WORDS;
  const report: RecoveryReport = {
    wid, recovered: false, locksReleased: 0, allocOp: null, allocRolledBack: false, insert: 'none',
    killStep: 0, referencesDropped: 0, countsReturned: 0, slotsFreed: 0, limboSlots: 0,
    orphansReclaimed: 0, orphansPending: 0, destroyEmitted: false, tombstones: 0, gcReleased: false, handedOff: false,
  };
  if (Atomics.load(i32, W + W_ALIVE) !== 1) return report; // claimed records only
  report.recovered = true;

  // 1. Offline: a dead thread holds no entry pointers, so it must not hold up grace periods.
  Atomics.store(i32, W + W_STATE, 0);

  // 2. The allocator operation, while its H_FREE_LOCK still keeps everyone else off the list.
  // The intent words were written by the dead thread; these loads read its last stores.
  const cacheCount = (): number => Atomics.load(i32, W + W_CACHE_COUNT);
  if (lockOwner(Atomics.load(i32, H_FREE_LOCK)) === wid) {
    const op = Atomics.load(i32, W + W_ALLOC_OP);
    if (op !== 0) {
      report.allocOp = ALLOC_OP_NAMES[op & 15] ?? `op ${op & 15}`;
      const before = op >>> 4;
      const oldHead = Atomics.load(i32, W + W_ALLOC_HEAD);
      if (cacheCount() === before && i32[H_FREE_HEAD] !== oldHead) {
        i32[H_FREE_HEAD] = oldHead; // not committed: the list as it was (H_FREE_LOCK is held)
        report.allocRolledBack = true;
      }
    }
    // Recount: the count store may or may not have happened.
    let n = 0;
    for (let s = i32[H_FREE_HEAD]!; s >= 0 && n <= table.capacity; s = i32[E + s * ENTRY_WORDS + E_LINK]!) n++;
    i32[H_FREE_COUNT] = n;
    if (forceUnlock(i32, H_FREE_LOCK, wid)) report.locksReleased++;
  }
  if (forceUnlock(i32, table.sec.xctl + XC_EXT_LOCK, wid)) report.locksReleased++;

  // 2b. Event obligations: reserved records get tombstones, a half-delivered parked record is
  // moved past, and we learn whether a DESTROY it was writing got out (ecache.ts).
  const parkLock = table.sec.xctl + XC_EV_PARK_LOCK;
  const holdsPark = lockOwner(Atomics.load(i32, parkLock)) === wid;
  const ev = recoverProducer(table, wid, holdsPark);
  report.tombstones = ev.tombs;
  if (holdsPark) {
    // The queue length hint may miss its last add/sub: recount it while the lock is still its.
    Atomics.store(i32, table.sec.xctl + XC_EV_PARKED,
      (Atomics.load(i32, table.sec.xctl + XC_EV_PTAIL) - Atomics.load(i32, table.sec.xctl + XC_EV_PHEAD)) | 0);
    if (forceUnlock(i32, parkLock, wid)) report.locksReleased++;
  }

  // 2c. The GC's identity: a dead GC must not keep startGc() from starting a new one.
  if (Atomics.compareExchange(i32, H_GC_WID, wid + 1, 0) === wid + 1) {
    Atomics.store(i32, H_GC_STOP, 0); // a stop request meant for it
    Atomics.add(i32, H_GC_DEATHS, 1); // statistics
    report.gcReleased = true;
  }

  // What the dead worker's cache and limbo hold now.
  const cache = new Set<number>();
  for (let k = 0, n = cacheCount(); k < n; k++) cache.add(i32[W + W_CACHE + k]!);
  const limbo: number[] = [];
  const inLimbo = new Set<number>();
  for (let s = Atomics.load(i32, W + W_LIMBO_HEAD); s >= 0 && limbo.length <= table.capacity;) {
    if (inLimbo.has(s)) break; // defensive: never loop
    limbo.push(s);
    inLimbo.add(s);
    s = i32[E + s * ENTRY_WORDS + E_LINK]!;
  }
  const toFree = new Set<number>(); // grace period not needed (never published, or already past)
  const toRetire = new Set<number>(); // released by the dead worker, grace period not started

  const releaseSlot = (slot: number): void => {
    // Its last reference is gone: to limbo ('noref') or the free list ('refcount'), unless it
    // got to one of them (a discarded private entry goes to the cache in both modes).
    if (inLimbo.has(slot) || cache.has(slot)) return;
    if (noref) toRetire.add(slot); else toFree.add(slot);
  };
  const dropRef = (slot: number): void => {
    report.referencesDropped++;
    // Atomics.sub: exactly one thread sees the count reach zero.
    if (Atomics.sub(i32, E + slot * ENTRY_WORDS + E_REFCNT, 1) === 1) releaseSlot(slot);
  };

  // 3. Inside an insert or a delete. The entry's two bucket locks are still the dead worker's
  // when it was linking or unlinking (KILL_STEP_LOCKED, CONFIRMED without LINKED), so the
  // chain repairs below run with everyone else kept out of those buckets.
  const kill = Atomics.load(i32, W + W_KILL);
  const intent = Atomics.load(i32, W + W_INTENT);
  const insertSlot = Atomics.load(i32, W + W_INTENT_SLOT) - 1;
  const inInsert = insertSlot >= 0;
  // A bucket stripe it held may have been held for a fold of its W_CNT (chains.ts foldCount).
  let heldStripe = false;
  for (let l = 0; l < table.locks && !heldStripe; l++) heldStripe = lockOwner(Atomics.load(i32, L + l * LOCK_STRIDE)) === wid; // lock words: CAS'd by owners
  const repair = kill !== 0 || inInsert || heldStripe;
  const zonesToRecount = new Set<number>();
  const zoneDelta = new Map<number, number>(); // fallback when the recount cannot be done
  // The refcount tells whether a reference drop happened: 0 means the last one is gone.
  const refGone = (slot: number): boolean => Atomics.load(i32, E + slot * ENTRY_WORDS + E_REFCNT) === 0;
  let countDelta = 0; // the count's excess left by the dead worker, by its record (fallback only)

  // 3a. A delete: roll forward from the recorded step.
  if (kill !== 0) {
    const slot = (kill >>> 4) - 1;
    const step = kill & 15;
    const e = E + slot * ENTRY_WORDS;
    report.killStep = step;
    if (step === KILL_STEP_LOCKED) {
      Atomics.or(i32, e + E_STATUS, IPS_DYING); // readers holding it see it leaving
      unlinkRef(table, i32[e + E_HASH]! & mask, (slot << 1) | DIR_ORIGINAL);
      unlinkRef(table, i32[e + E_HASH + 1]! & mask, (slot << 1) | DIR_REPLY);
    }
    if (step === KILL_STEP_LOCKED) zoneDelta.set(i32[e + E_ZONE]! & 0xffff, -1);
    if (step <= KILL_STEP_UNLINKED) zonesToRecount.add(i32[e + E_ZONE]! & 0xffff);
    if (step === KILL_STEP_LOCKED) countDelta++; // unlinked by us, still counted (W_CNT drops before UNLINKED)
    // Its DESTROY event, unless it got out: the entry's words are intact while the table's
    // reference is held (dropped below). Written in the dead worker's name (its record is ours).
    if (step < KILL_STEP_EMITTED && !(step === KILL_STEP_EMITTING && ev.delivered)) {
      const producer = new EventProducer(table, wid);
      producer.lockWaitMs = lockWaitMs;
      if (producer.active) {
        producer.destroyed(e, Atomics.load(i32, H_CLOCK), Atomics.load(i32, W + W_KILL_WHY), -1);
        report.destroyEmitted = true;
      }
    }
    // The table's reference. Before KILL_STEP_DROPPING it is still held: drop it. During the
    // drop, a count of 0 means it went (and was the last); above 0 it is still held in 'noref'
    // (the only reference), while in 'refcount' a lookup may hold another, so it is left
    // (a possible leak of one slot, never a double drop).
    if (step < KILL_STEP_DROPPING) dropRef(slot);
    else if (refGone(slot)) releaseSlot(slot);
    else if (noref) dropRef(slot);
  }

  // 3b. An insert.
  if (inInsert) {
    const slot = insertSlot;
    const e = E + slot * ENTRY_WORDS;
    if ((Atomics.load(i32, e + E_STATUS) & IPS_CONFIRMED) !== 0) {
      // Confirm was linking it under both bucket locks: finish the job.
      let linkedNow = false;
      if (!chainHas(table, i32[e + E_HASH + 1]! & mask, (slot << 1) | DIR_REPLY)) {
        linkRef(table, i32[e + E_HASH + 1]! & mask, (slot << 1) | DIR_REPLY);
        linkedNow = true;
      }
      if (!chainHas(table, i32[e + E_HASH]! & mask, (slot << 1) | DIR_ORIGINAL)) {
        linkRef(table, i32[e + E_HASH]! & mask, (slot << 1) | DIR_ORIGINAL);
        linkedNow = true;
      }
      zonesToRecount.add(i32[e + E_ZONE]! & 0xffff);
      zoneDelta.set(i32[e + E_ZONE]! & 0xffff, 1);
      // Confirm counts (W_CNT) after both links: one still missing means not counted yet.
      if (linkedNow) countDelta--;
      report.insert = 'rolled-forward';
    } else {
      if (!cache.has(slot)) {
        // Private, never published. Refcount 0: newEntry had not taken the creator's reference
        // yet, or discard() dropped it (no lookup takes one from 0). Else drop the creator's; a
        // stale 'refcount' lookup may still hold one and frees the slot with its put().
        // With INTENT_UNCOUNTED the drop itself may have happened: above 0 the reference is
        // still ours in 'noref'; in 'refcount' the slot is left (a possible leak, never a
        // double drop).
        const dropping = (intent & INTENT_UNCOUNTED) !== 0;
        if (refGone(slot)) toFree.add(slot);
        else if (!dropping || noref) {
          if (Atomics.sub(i32, e + E_REFCNT, 1) === 1) toFree.add(slot); // the last one
        }
      }
      report.insert = 'rolled-back';
    }
  }

  // 4. Counters. Release the dead worker's bucket locks (live workers may wait on them while
  // holding a lower stripe), then take every bucket lock in ascending order, as writers do:
  // with all of them held no link, unlink or zone count moves, and the counters are recounted.
  for (let l = 0; l < table.locks; l++) if (forceUnlock(i32, L + l * LOCK_STRIDE, wid)) report.locksReleased++;
  // Its zone/namespace list locks too: a live writer may wait on one while holding a bucket
  // stripe we are about to take. The lists it may have left half-linked are rebuilt below.
  for (let l = 0; l < ZL_LOCKS; l++) if (forceUnlock(i32, table.sec.zlocks + l, wid)) report.locksReleased++;
  // A walk it left unfinished: its marker comes off that list (the record's next owner would
  // link it again). The list's stripe is taken as the dead worker, like the bucket locks below.
  new ZoneAccounting(table, wid).dropMarker(wid, lockWaitMs);
  for (let l = 0; l < NAT_LOCK_COUNT; l++) if (forceUnlock(i32, table.sec.natLocks + l, wid)) report.locksReleased++;
  let all = false;
  if (repair) {
    try {
      for (let l = 0; l < table.locks; l++) lockWithin(i32, L + l * LOCK_STRIDE, wid, lockWaitMs, `bucket lock ${l}`);
      all = true;
    } catch (err) {
      if (!(err instanceof RecoveryBlocked)) throw err;
      // Another dead worker holds a bucket lock: fall back to the deltas of this one's record.
      for (let l = 0; l < table.locks; l++) forceUnlock(i32, L + l * LOCK_STRIDE, wid);
    }
  }
  if (repair && !all) {
    for (const [z, d] of zoneDelta) Atomics.add(i32, table.sec.zones + zoneRec(z), d); // best effort
    // Its unfolded namespace and zone deltas go into their counters (zones.ts), and its part of
    // the entry count into H_COUNT, less the excess its intents imply (best effort).
    new ZoneAccounting(table, wid).foldAll();
    const own = i32[W + W_CNT]!; // its owner's last plain store; the owner is dead
    i32[W + W_CNT] = 0;
    if (own - countDelta !== 0) Atomics.add(i32, H_COUNT, own - countDelta);
    report.countsReturned = countDelta;
  }
  if (all) {
    let linked = 0;
    const zoneCount = new Map<number, number>();
    for (const z of zonesToRecount) zoneCount.set(z, 0);
    for (let b = 0; b < table.buckets; b++) {
      let ref = i32[table.sec.buckets + b]!; // bucket lock held
      for (let n = 0; ref >= 0 && n <= 2 * table.capacity; n++) {
        const e = E + (ref >>> 1) * ENTRY_WORDS;
        if ((ref & 1) === DIR_ORIGINAL) {
          linked++;
          const z = i32[e + E_ZONE]! & 0xffff;
          const c = zoneCount.get(z);
          if (c !== undefined) zoneCount.set(z, c + 1);
        }
        ref = i32[e + E_NEXT + (ref & 1)]!;
      }
    }
    // Zone counters change only under bucket locks: the recount is the truth.
    for (const [z, c] of zoneCount) Atomics.store(i32, table.sec.zones + zoneRec(z), c);
    // The count = linked entries. Every part of it (H_COUNT, each record's W_CNT) changes only
    // under a bucket stripe, and we hold them all: H_COUNT takes what the other records do not
    // hold, the dead record's part goes.
    let others = 0;
    for (let k = 0; k < table.maxWorkers; k++) {
      if (k !== wid) others += i32[table.sec.workers + k * WORKER_WORDS + W_CNT]!; // frozen: every stripe is ours
    }
    const before = Atomics.load(i32, H_COUNT) + others + i32[W + W_CNT]!;
    i32[W + W_CNT] = 0;
    Atomics.store(i32, H_COUNT, linked - others); // nobody folds while we hold every stripe
    report.countsReturned = before - linked;
    // Namespace/zone counts and lists change only inside confirm/kill, which our locks exclude:
    // rebuild them from the chains, and release the dead worker's list locks.
    rebuildZoneAccounting(table, wid);
    for (let l = 0; l < table.locks; l++) unlock(i32, L + l * LOCK_STRIDE);
  }

  // 5. A slot whose last reference it dropped, and a limbo slot it was freeing.
  const rel = Atomics.load(i32, W + W_RELEASE) - 1;
  if (rel >= 0) releaseSlot(rel);
  const rec = Atomics.load(i32, W + W_RECLAIM) - 1;
  if (rec >= 0 && !inLimbo.has(rec) && !cache.has(rec)) toFree.add(rec); // its grace period was over

  // 6. A lookup reference ('refcount').
  const held = Atomics.load(i32, W + W_HELD) - 1;
  if (held >= 0 && !noref) dropRef(held);

  // 7. Every lock word it still owns, of every kind (layout.ts lockRegistry; the repairs above
  // are published first by the CAS).
  for (const k of lockRegistry(table.sec, table.locks)) {
    for (let l = 0; l < k.count; l++) if (forceUnlock(i32, k.base + l * k.stride, wid)) report.locksReleased++;
  }

  // 8. Free list and orphan limbo, under H_FREE_LOCK taken in the dead worker's name.
  for (const s of cache) toFree.add(s);
  for (const s of limbo) toFree.delete(s); // defensive: a slot goes to exactly one place
  for (const s of toRetire) toFree.delete(s);
  const retireTag = (Atomics.load(i32, H_EPOCH) + 2) | 0; // read after the unlinks (seq-cst)
  for (const s of toRetire) i32[E + s * ENTRY_WORDS + E_RETIRE] = retireTag; // limbo slots keep their own tag
  const orphans = [...limbo, ...toRetire];
  // The free-list lock: a live holder releases it within a few instructions; a holder that died
  // too (two workers killed together, its recovery still to come) never does, so after a short
  // wait the slots go to the lock-free hand-off stacks, spliced in by the next holder.
  const freeWait = Math.min(lockWaitMs, HANDOFF_WAIT_MS);
  if (tryLockWithin(i32, H_FREE_LOCK, wid, freeWait)) {
    try {
      report.slotsFreed = pushFree(table, toFree, wid);
      let head = i32[H_ORPHAN_HEAD]! - 1;
      for (const s of orphans) {
        i32[E + s * ENTRY_WORDS + E_LINK] = head;
        head = s;
      }
      i32[H_ORPHAN_HEAD] = head + 1;
      i32[H_ORPHAN_COUNT] = i32[H_ORPHAN_COUNT]! + orphans.length;
    } finally {
      unlock(i32, H_FREE_LOCK);
    }
  } else {
    report.handedOff = true;
    const free = [...toFree];
    for (const s of free) {
      const e = E + s * ENTRY_WORDS;
      if (i32[e + E_EXT] !== 0) extRelease(table, wid, s); // as pushFree does
      Atomics.store(i32, e + E_REFCNT, 0); // no reference survives the free
      Atomics.store(i32, e + E_STATUS, 0); // reads as free before it is reachable
    }
    pushPending(table, H_PEND_FREE, free);
    pushPending(table, H_PEND_ORPHAN, orphans);
    report.slotsFreed = free.length;
  }
  report.limboSlots = orphans.length;

  // 9. Grace period for the orphans: a new epoch, then wait for every online worker to pass it.
  if (Atomics.load(i32, H_ORPHAN_HEAD) !== 0 || Atomics.load(i32, H_PEND_ORPHAN) !== 0) {
    Atomics.add(i32, H_EPOCH, 2); // workers entering a batch from now on are past every tag
    const deadline = Date.now() + graceWaitMs;
    for (;;) {
      const min = graceMin(table, -1);
      if (tryLockWithin(i32, H_FREE_LOCK, wid, freeWait)) {
        try {
          report.orphansReclaimed += reclaimOrphansLocked(table, min, wid);
        } finally {
          unlock(i32, H_FREE_LOCK);
        }
      }
      if ((Atomics.load(i32, H_ORPHAN_HEAD) === 0 && Atomics.load(i32, H_PEND_ORPHAN) === 0) || Date.now() >= deadline) break;
      sleepMs(1);
    }
  }
  // 10. Clear and release the record (its id was our lock owner until now).
  Atomics.store(i32, W + W_CACHE_COUNT, 0);
  Atomics.store(i32, W + W_LIMBO_HEAD, -1);
  Atomics.store(i32, W + W_LIMBO_TAIL, -1);
  Atomics.store(i32, W + W_LIMBO_COUNT, 0);
  for (const w of [W_INTENT, W_INTENT_SLOT, W_KILL, W_RELEASE, W_RECLAIM, W_ALLOC_OP, W_HELD, W_KILL_WHY, W_RES]) {
    Atomics.store(i32, W + w, 0); // no intent: a fresh record
  }
  table.releaseWorker(wid);

  report.orphansPending = orphanCount(table);
  return report;
}

/**
 * Recover several workers that died together: all go offline first (so none holds up the others'
 * grace periods), the holder of the free-list lock (if any) is recovered first.
 */
export function recoverDeadWorkers(table: ConntrackTable, wids: readonly number[], opts: RecoveryOptions = {}): RecoveryReport[] {
  const i32 = table.i32;
  for (const w of wids) {
    const base = table.sec.workers + w * WORKER_WORDS;
    if (Atomics.load(i32, base + W_ALIVE) === 1) Atomics.store(i32, base + W_STATE, 0); // offline
  }
  const freeHolder = lockOwner(Atomics.load(i32, H_FREE_LOCK)); // a snapshot is enough
  const order = [...wids].sort((a, b) => (a === freeHolder ? -1 : b === freeHolder ? 1 : 0));
  return order.map((w) => recoverDeadWorker(table, w, opts));
}
