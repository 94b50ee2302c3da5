/**
 * Entry slot allocator: a per-worker cache of free slots (in the worker's shared record, so
 * crash recovery can see it) in front of one shared free list protected by H_FREE_LOCK.
 * The shared list is only touched under its lock, so it has no ABA problem; a worker moves
 * CACHE_SLOTS / 2 slots per visit, which keeps the lock off the per-packet path.
 *
 * Crash recovery (recovery.ts): alloc() names the slot it hands out in W_INTENT_SLOT before the
 * slot leaves the cache; refill/spill/drain record the free-list head they started from in
 * W_ALLOC_HEAD / W_ALLOC_OP while they hold H_FREE_LOCK, and commit with the cache count store,
 * so recovery can tell whether the list or the cache holds the slots they were moving.
 */
import {
  ALLOC_OP_DRAIN, ALLOC_OP_REFILL, ALLOC_OP_SPILL, CACHE_SLOTS, ENTRY_WORDS, E_EXT, E_LINK, E_STATUS,
  H_FREE_COUNT, H_FREE_HEAD, H_FREE_LOCK, H_PEND_FREE, W_ALLOC_HEAD, W_ALLOC_OP, W_CACHE, W_CACHE_COUNT,
  W_INTENT_SLOT, WORKER_WORDS,
} from './layout.js';
import { extRelease } from './ext.js';
import { lock, unlock } from './locks.js';
import type { ConntrackTable } from './table.js';

const BATCH = CACHE_SLOTS / 2;

/**
 * Push `slots` on a hand-off stack (H_PEND_FREE or H_PEND_ORPHAN) without any lock: crash
 * recovery uses it when another dead worker holds H_FREE_LOCK. Links are slot + 1 (0 ends).
 */
export function pushPending(table: ConntrackTable, word: number, slots: readonly number[]): void {
  if (slots.length === 0) return;
  const i32 = table.i32;
  const E = table.sec.entries;
  for (let k = 0; k + 1 < slots.length; k++) i32[E + slots[k]! * ENTRY_WORDS + E_LINK] = slots[k + 1]! + 1;
  const last = E + slots[slots.length - 1]! * ENTRY_WORDS + E_LINK;
  for (;;) {
    const head = Atomics.load(i32, word);
    i32[last] = head; // plain: published by the CAS below
    // CAS publishes the links above to whoever takes the stack (Atomics.exchange).
    if (Atomics.compareExchange(i32, word, head, slots[0]! + 1) === head) return;
  }
}

/** Take the whole hand-off stack at `word` (Atomics.exchange: no ABA); its slots in order. */
export function takePending(table: ConntrackTable, word: number): number[] {
  const i32 = table.i32;
  const out: number[] = [];
  for (let s = Atomics.exchange(i32, word, 0) - 1; s >= 0 && out.length <= table.capacity;) {
    out.push(s);
    s = i32[table.sec.entries + s * ENTRY_WORDS + E_LINK]! - 1;
  }
  return out;
}

/** Put the slots of H_PEND_FREE on the free list. Caller holds H_FREE_LOCK. */
export function splicePendingFree(table: ConntrackTable): number {
  const i32 = table.i32;
  const slots = takePending(table, H_PEND_FREE);
  let head = i32[H_FREE_HEAD]!; // H_FREE_LOCK held
  for (const s of slots) {
    i32[table.sec.entries + s * ENTRY_WORDS + E_LINK] = head;
    head = s;
  }
  i32[H_FREE_HEAD] = head;
  i32[H_FREE_COUNT] = i32[H_FREE_COUNT]! + slots.length;
  return slots.length;
}

export class SlotAllocator {
  private readonly i32: Int32Array;
  private readonly w: number; // this worker's record
  private readonly entries: number;

  private readonly table: ConntrackTable;

  constructor(table: ConntrackTable, private readonly wid: number) {
    this.table = table;
    this.i32 = table.i32;
    this.w = table.sec.workers + wid * WORKER_WORDS;
    this.entries = table.sec.entries;
  }

  /** A free slot, or -1 when none is left. The slot's status is 0 (not allocated). */
  alloc(): number {
    const i32 = this.i32;
    // The cache words are written by this worker only; Atomics make them readable by recovery.
    let n = Atomics.load(i32, this.w + W_CACHE_COUNT);
    if (n === 0) {
      n = this.refill();
      if (n === 0) return -1;
    }
    const slot = i32[this.w + W_CACHE + n - 1]!;
    // Named before it leaves the cache: a crash in between leaves it findable (recovery.ts).
    Atomics.store(i32, this.w + W_INTENT_SLOT, slot + 1);
    Atomics.store(i32, this.w + W_CACHE_COUNT, n - 1);
    return slot;
  }

  /** Return a slot that no thread can reach any more. */
  free(slot: number): void {
    const i32 = this.i32;
    // The entry's extension block goes with it (ext.ts): nobody can reach the entry any more.
    if (i32[this.entries + slot * ENTRY_WORDS + E_EXT] !== 0) extRelease(this.table, this.wid, slot);
    // Status 0 first: once in the cache the slot reads as free to everyone.
    Atomics.store(i32, this.entries + slot * ENTRY_WORDS + E_STATUS, 0);
    let n = Atomics.load(i32, this.w + W_CACHE_COUNT);
    if (n === CACHE_SLOTS) n = this.spill();
    i32[this.w + W_CACHE + n] = slot;
    Atomics.store(i32, this.w + W_CACHE_COUNT, n + 1);
  }

  /** Free slots in this worker's cache. */
  get cached(): number {
    return Atomics.load(this.i32, this.w + W_CACHE_COUNT);
  }

  /** Move BATCH slots from the shared list into the (empty) cache; returns the new count. */
  private refill(): number {
    const i32 = this.i32;
    lock(i32, H_FREE_LOCK, this.wid);
    // Slots a crash recovery handed over without the lock (a cheap load when there are none).
    if (Atomics.load(i32, H_PEND_FREE) !== 0) splicePendingFree(this.table);
    let head = i32[H_FREE_HEAD]!; // H_FREE_HEAD, H_FREE_COUNT and free slots' E_LINK: H_FREE_LOCK
    this.begin(ALLOC_OP_REFILL, 0, head);
    let n = 0;
    while (n < BATCH && head >= 0) {
      i32[this.w + W_CACHE + n++] = head;
      head = i32[this.entries + head * ENTRY_WORDS + E_LINK]!;
    }
    i32[H_FREE_HEAD] = head;
    i32[H_FREE_COUNT] = i32[H_FREE_COUNT]! - n;
    // The commit: once the cache count shows the slots, they are the cache's (recovery.ts).
    Atomics.store(i32, this.w + W_CACHE_COUNT, n);
    this.end();
    return n;
  }

  /** Push BATCH slots from the (full) cache to the shared list; returns the new count. */
  private spill(): number {
    const i32 = this.i32;
    const keep = CACHE_SLOTS - BATCH;
    lock(i32, H_FREE_LOCK, this.wid);
    let head = i32[H_FREE_HEAD]!;
    this.begin(ALLOC_OP_SPILL, CACHE_SLOTS, head);
    for (let k = keep; k < CACHE_SLOTS; k++) {
      const slot = i32[this.w + W_CACHE + k]!;
      i32[this.entries + slot * ENTRY_WORDS + E_LINK] = head;
      head = slot;
    }
    i32[H_FREE_HEAD] = head;
    i32[H_FREE_COUNT] = i32[H_FREE_COUNT]! + BATCH;
    // The commit: the slots left the cache (recovery.ts rolls the head back before this store).
    Atomics.store(i32, this.w + W_CACHE_COUNT, keep);
    this.end();
    return keep;
  }

  /** Give every cached slot back to the shared list (when the worker leaves). */
  drain(): void {
    const i32 = this.i32;
    const n = Atomics.load(i32, this.w + W_CACHE_COUNT);
    if (n === 0) return;
    lock(i32, H_FREE_LOCK, this.wid);
    let head = i32[H_FREE_HEAD]!;
    this.begin(ALLOC_OP_DRAIN, n, head);
    for (let k = 0; k < n; k++) {
      const slot = i32[this.w + W_CACHE + k]!;
      i32[this.entries + slot * ENTRY_WORDS + E_LINK] = head;
      head = slot;
    }
    i32[H_FREE_HEAD] = head;
    i32[H_FREE_COUNT] = i32[H_FREE_COUNT]! + n;
    // The commit, as in spill().
    Atomics.store(i32, this.w + W_CACHE_COUNT, 0);
    this.end();
  }

  /** Record the list operation starting under H_FREE_LOCK (for recovery.ts). */
  private begin(op: number, cacheBefore: number, head: number): void {
    // Head first, then the op word that makes it meaningful; both before any list change.
    Atomics.store(this.i32, this.w + W_ALLOC_HEAD, head);
    Atomics.store(this.i32, this.w + W_ALLOC_OP, op | (cacheBefore << 4));
  }

  /** The operation is complete: clear its record, then release H_FREE_LOCK. */
  private end(): void {
    // Cleared while the lock is still held, so a held lock with no record means "nothing changed".
    Atomics.store(this.i32, this.w + W_ALLOC_OP, 0);
    unlock(this.i32, H_FREE_LOCK);
  }
}
