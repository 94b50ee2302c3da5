/** Shared words and shapes of the chaos test (chaos.ts) and its threads (chaos-worker.ts). */

/** Word offsets in the control buffer. */
export const C_STOP = 0; // 1: finish
export const C_WRONGFUL = 1; // refusals ("table full") seen below 90 % of nf_conntrack_max
export const C_REFUSED = 2; // all refusals
export const C_CREATED = 3; // connections created (all zones)
export const C_PROGRESS = 8; // + role index: progress counter
export const C_STALL = 24; // + role index: stall for this many ms (set by the checker)
export const C_PENDING = 40; // + worker index: flow + 1 the worker is changing (uncertain after a kill)
export const C_WORDS = 64;
/** Flows per packet worker in zone 0 (must-exist bookkeeping) and zone 1 (flushed). */
export const FLOWS = 400;

export interface ChaosWorkerData {
  readonly buffer: SharedArrayBuffer;
  readonly control: SharedArrayBuffer;
  /** Per flow of zone 0: 1 = this worker created it and has not deleted it. */
  readonly state: SharedArrayBuffer;
  readonly role: 'packet' | 'flusher' | 'subscriber';
  readonly index: number;
  readonly seed: number;
  readonly now: number;
}

/** Source address of flow f of worker w in zone z (distinct for every w, z, f). */
export function flowSrc(w: number, z: number, f: number): string {
  return `10.${64 + w * 3 + z}.${(f >> 8) & 255}.${f & 255}`;
}

