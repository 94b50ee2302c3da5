/**
 * Quiescent-state-based reclamation (RCU-style grace periods) over the shared buffer.
 *
 * A packet worker is "online" while inside a batch: its record's W_STATE holds the global epoch
 * it saw on entry; 0 means offline (idle), which never holds a grace period up. A deleted
 * entry is retired with tag = epoch + 2 and kept in the retiring worker's limbo list (FIFO, so
 * tags never decrease along it). It may be reused once every online worker's state is >= its
 * tag: such a worker entered its batch after the epoch passed the tag, hence after the unlink.
 * The epoch is odd and advances by 2, so it is never 0; comparisons are wrap-safe.
 */
import {
  ENTRY_WORDS, E_LINK, E_RETIRE, H_EPOCH, ST_GRACE_PERIODS, ST_SLOTS_RECYCLED, STAT_WORDS,
  W_LIMBO_COUNT, W_LIMBO_HEAD, W_LIMBO_TAIL, W_RECLAIM, W_STATE, WORKER_WORDS,
} from './layout.js';
import type { SlotAllocator } from './alloc.js';
import { beatNow, beatSilence, beatStale } from './liveness.js';
import { STALL_WORKER } from './events.js';
import { H_STALLS, H_STALL_MS, ST_RESUMED, ST_STALL_EXPELLED, W_BEAT } from './layout.js';
import type { ConntrackTable } from './table.js';

export class Qsbr {
  private readonly i32: Int32Array;
  private readonly w: number;
  private readonly workers: number;
  private readonly maxWorkers: number;
  private readonly entries: number;
  private readonly stats: number;
  private retiredInBatch = false;
  /** Told of each worker this thread expels as stalled (STALL_WORKER, its id, ms silent): the owner's event producer. */
  onStall: ((kind: number, wid: number, silentMs: number) => void) | null = null;
  private inSection = false;

  constructor(table: ConntrackTable, private readonly wid: number, private readonly alloc: SlotAllocator) {
    this.i32 = table.i32;
    this.workers = table.sec.workers;
    this.w = table.sec.workers + wid * WORKER_WORDS;
    this.maxWorkers = table.maxWorkers;
    this.entries = table.sec.entries;
    this.stats = table.sec.stats + wid * STAT_WORDS;
  }

  /** Enter a read-side section (a batch): from here on, reachable entries stay valid. */
  online(): void {
    Atomics.store(this.i32, this.w + W_BEAT, beatNow()); // heartbeat: liveness for reclaimers
    // Seq-cst store: ordered before every chain read of the batch.
    Atomics.store(this.i32, this.w + W_STATE, Atomics.load(this.i32, H_EPOCH));
    this.inSection = true;
  }

  /**
   * Inside a section, at a point where this thread holds no entry: was it expelled (stalled for
   * the table's stall time, see reclaim())? Then re-enter at the current epoch. True if it was.
   */
  resumeIfExpelled(): boolean {
    // W_STATE is CAS'ed to 0 by a reclaimer that found us stalled.
    if (!this.inSection || Atomics.load(this.i32, this.w + W_STATE) !== 0) return false;
    this.i32[this.stats + ST_RESUMED]!++; // single writer: this thread
    this.online();
    return true;
  }

  /** Leave the read-side section: this worker holds no entry pointers any more. */
  offline(): void {
    // Seq-cst store: ordered after every chain read of the batch.
    Atomics.store(this.i32, this.w + W_STATE, 0);
    this.inSection = false;
  }

  get isOnline(): boolean {
    return Atomics.load(this.i32, this.w + W_STATE) !== 0;
  }

  /** Queue an unlinked entry for reuse after a grace period. */
  retire(slot: number): void {
    const i32 = this.i32;
    const e = this.entries + slot * ENTRY_WORDS;
    // Loaded after the unlink (seq-cst): any reader whose state reaches this tag came later.
    i32[e + E_RETIRE] = (Atomics.load(i32, H_EPOCH) + 2) | 0;
    i32[e + E_LINK] = -1;
    const tail = i32[this.w + W_LIMBO_TAIL]!; // limbo words: owned by this worker
    if (tail < 0) i32[this.w + W_LIMBO_HEAD] = slot;
    else i32[this.entries + tail * ENTRY_WORDS + E_LINK] = slot;
    i32[this.w + W_LIMBO_TAIL] = slot;
    Atomics.add(i32, this.w + W_LIMBO_COUNT, 1); // read by recovery and stats
    this.retiredInBatch = true;
  }

  /**
   * At the end of a batch: advance the epoch if this batch retired anything, then reuse what
   * every other worker has moved past. Returns the number of slots freed.
   */
  quiesce(): number {
    if (this.retiredInBatch) {
      this.retiredInBatch = false;
      // One epoch step per batch, not per delete: keeps the epoch's cache line cool.
      Atomics.add(this.i32, H_EPOCH, 2);
    }
    if (this.i32[this.w + W_LIMBO_HEAD]! < 0) return 0;
    return this.reclaim();
  }

  /** Free the limbo prefix whose grace period has passed. */
  reclaim(): number {
    const i32 = this.i32;
    // The oldest epoch any other online worker may still be reading under.
    let min = (Atomics.load(i32, H_EPOCH) + 2) | 0;
    let now = 0;
    for (let k = 0; k < this.maxWorkers; k++) {
      if (k === this.wid) continue;
      const wk = this.workers + k * WORKER_WORDS;
      const s = Atomics.load(i32, wk + W_STATE);
      if (s !== 0 && ((s - min) | 0) < 0) {
        // Holding our grace period up. Stalled inside one section for the stall time (its
        // heartbeat is that old)? Expel it: CAS its state to offline; it re-enters when it
        // resumes (resumeIfExpelled), holding no entry from before.
        if (now === 0) now = beatNow();
        const beat = Atomics.load(i32, wk + W_BEAT); // Atomics.store'd by its owner
        if (beatStale(i32, beat, now) && Atomics.compareExchange(i32, wk + W_STATE, s, 0) === s) {
          // Reported three ways: statistics, a process warning, and a stall event to subscribers.
          Atomics.add(i32, H_STALLS, 1); // table-wide statistic
          i32[this.stats + ST_STALL_EXPELLED]!++; // single writer: this thread
          const silent = beatSilence(beat, now);
          process.emitWarning(`conntrack-sab: worker ${k} stalled inside a batch for more than ` +
            `${Atomics.load(i32, H_STALL_MS)} ms (${silent} ms): it no longer holds grace periods up`, { code: 'CTSAB_WORKER_STALLED' });
          this.onStall?.(STALL_WORKER, k, silent);
          continue;
        }
        min = s;
      }
    }
    let head = i32[this.w + W_LIMBO_HEAD]!;
    let n = 0;
    while (head >= 0) {
      const e = this.entries + head * ENTRY_WORDS;
      if (((i32[e + E_RETIRE]! - min) | 0) > 0) break;
      const next = i32[e + E_LINK]!;
      // Crash recovery (recovery.ts): name the slot, then take it off the limbo head, then free
      // it; a crash anywhere leaves it in the limbo list, the cache, or named by W_RECLAIM.
      Atomics.store(i32, this.w + W_RECLAIM, head + 1);
      Atomics.store(i32, this.w + W_LIMBO_HEAD, next);
      this.alloc.free(head);
      n++;
      head = next;
    }
    if (n > 0) {
      // The freed prefix is gone from the list: forget the slot being freed.
      Atomics.store(i32, this.w + W_RECLAIM, 0);
      if (head < 0) i32[this.w + W_LIMBO_TAIL] = -1;
      Atomics.sub(i32, this.w + W_LIMBO_COUNT, n);
      i32[this.stats + ST_GRACE_PERIODS]!++;
      i32[this.stats + ST_SLOTS_RECYCLED] += n;
    }
    return n;
  }

  /** Slots waiting in this worker's limbo. */
  get pending(): number {
    return Atomics.load(this.i32, this.w + W_LIMBO_COUNT);
  }
}
