/**
 * Futex-style mutexes on Int32Array words of the shared buffer (the kernel's
 * nf_conntrack_locks): spin briefly with compareExchange, then sleep with Atomics.wait.
 *
 * Word values: 0 = unlocked; otherwise (owner + 1) << 2 | LOCK_LOCKED, or | LOCK_CONTENDED when
 * a thread may be sleeping on it. The owner id lets crash recovery release a dead worker's locks.
 */
import { LOCK_CONTENDED, LOCK_LOCKED } from './layout.js';

const SPINS = 100;

/** Take the lock at word `idx` for `owner`. */
export function lock(i32: Int32Array, idx: number, owner: number): void {
  const mine = ((owner + 1) << 2) | LOCK_LOCKED;
  // Fast path: acquire an uncontended lock (CAS is a full barrier: the critical section's
  // reads cannot move above it).
  if (Atomics.compareExchange(i32, idx, 0, mine) === 0) return;
  for (let i = 0; i < SPINS; i++) {
    if (Atomics.load(i32, idx) === 0 && Atomics.compareExchange(i32, idx, 0, mine) === 0) return;
  }
  // Slow path: announce a sleeper, then sleep until the holder's unlock notifies us.
  const contended = ((owner + 1) << 2) | LOCK_CONTENDED;
  for (;;) {
    let v = Atomics.load(i32, idx);
    if (v === 0) {
      // Acquire as contended: other sleepers may still be waiting on this word.
      if (Atomics.compareExchange(i32, idx, 0, contended) === 0) return;
      continue;
    }
    if ((v & 3) === LOCK_LOCKED) {
      // Mark the word contended so the holder's unlock knows to notify.
      const w = (v & ~3) | LOCK_CONTENDED;
      if (Atomics.compareExchange(i32, idx, v, w) !== v) continue;
      v = w;
    }
    Atomics.wait(i32, idx, v, 50); // bounded: a dead holder is released by recovery
  }
}

/** Try once to take the lock; true on success. */
export function tryLock(i32: Int32Array, idx: number, owner: number): boolean {
  // CAS: acquire ordering for the critical section, as in lock().
  return Atomics.compareExchange(i32, idx, 0, ((owner + 1) << 2) | LOCK_LOCKED) === 0;
}

/** Release the lock at `idx`; wakes one sleeper if the word was contended. */
export function unlock(i32: Int32Array, idx: number): void {
  // Exchange publishes every write of the critical section before the lock reads as free.
  const old = Atomics.exchange(i32, idx, 0);
  if ((old & 3) === LOCK_CONTENDED) Atomics.notify(i32, idx, 1);
}

/** Owner id recorded in a lock word, or -1 when unlocked. */
export function lockOwner(word: number): number {
  return word === 0 ? -1 : (word >>> 2) - 1;
}

/** Release a lock on behalf of a dead owner: only if `owner` still holds it. */
export function forceUnlock(i32: Int32Array, idx: number, owner: number): boolean {
  const v = Atomics.load(i32, idx);
  if (v === 0 || lockOwner(v) !== owner) return false;
  // CAS so that we never release a lock someone else took in between.
  if (Atomics.compareExchange(i32, idx, v, 0) !== v) return false;
  Atomics.notify(i32, idx, 1);
  return true;
}

const pauseWord = new Int32Array(new SharedArrayBuffer(4));

/** Take the lock, waiting at most `ms` (crash recovery: the holder may be dead); true if taken. */
export function lockFor(i32: Int32Array, idx: number, owner: number, ms: number): boolean {
  const deadline = Date.now() + ms;
  while (!tryLock(i32, idx, owner)) {
    if (Date.now() > deadline) return false;
    Atomics.wait(pauseWord, 0, 0, 1); // a 1 ms sleep on a private word nobody notifies
  }
  return true;
}
