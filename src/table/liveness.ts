/**
 * Liveness: heartbeats of the threads attached to a table (packet workers and the GC in their
 * worker records, W_BEAT; event subscribers in theirs, SB_BEAT), judged against the table's
 * stall time (H_STALL_MS). A thread silent for longer is stalled: it no longer holds grace
 * periods (rcu.ts) or the DESTROY ring (ecache.ts) up.
 */
import { H_STALL_MS } from './layout.js';

const MASK = 0x7fffffff;

/** Wall ms, low 31 bits: the heartbeat clock (Date.now is the same on every thread). */
export function beatNow(): number {
  return Date.now() & MASK;
}

/** Has a heartbeat `beat` gone silent for more than the table's stall time (H_STALL_MS)? */
export function beatStale(i32: Int32Array, beat: number, now = beatNow()): boolean {
  const ms = Atomics.load(i32, H_STALL_MS); // Atomics.store'd by the owner
  return ms > 0 && ((now - beat) & MASK) > ms;
}

/** Wall ms since heartbeat `beat`. */
export function beatSilence(beat: number, now = beatNow()): number {
  return (now - beat) & MASK;
}
