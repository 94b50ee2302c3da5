/**
 * A hashed timing wheel with one timer per connection: the kernel's design before its GC
 * worker (a timer_list per nf_conn, re-armed by every packet, firing in softirq context).
 * Used by experiment (iv) to compare with the GC worker's table walk.
 *
 * Timers are slots (0 .. capacity-1) linked into doubly linked lists, one per tick bucket; a
 * timer further away than one turn of the wheel waits for later turns (checked when its bucket
 * comes round). Single-threaded, as a per-CPU kernel wheel is.
 */
export class TimingWheel {
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly deadline: Int32Array;
  private readonly heads: Int32Array;
  private readonly mask: number;
  /** Last tick processed. */
  private tick: number;
  armed = 0;

  constructor(capacity: number, readonly tickMs = 1, buckets = 1 << 16, now = 0) {
    this.next = new Int32Array(capacity).fill(-2); // -2: not armed
    this.prev = new Int32Array(capacity).fill(-1);
    this.deadline = new Int32Array(capacity);
    this.heads = new Int32Array(buckets).fill(-1);
    this.mask = buckets - 1;
    this.tick = Math.floor(now / tickMs);
  }

  private unlink(s: number): void {
    const n = this.next[s]!;
    const p = this.prev[s]!;
    if (p >= 0) this.next[p] = n;
    else this.heads[(Math.floor(this.deadline[s]! / this.tickMs)) & this.mask] = n;
    if (n >= 0) this.prev[n] = p;
    this.next[s] = -2;
    this.armed--;
  }

  /** (Re-)arm slot's timer for `deadlineMs` (mod_timer). */
  arm(s: number, deadlineMs: number): void {
    if (this.next[s] !== -2) this.unlink(s);
    this.deadline[s] = deadlineMs;
    const b = Math.floor(deadlineMs / this.tickMs) & this.mask;
    const h = this.heads[b]!;
    this.next[s] = h;
    this.prev[s] = -1;
    if (h >= 0) this.prev[h] = s;
    this.heads[b] = s;
    this.armed++;
  }

  cancel(s: number): void {
    if (this.next[s] !== -2) this.unlink(s);
  }

  /**
   * Run every tick up to `now`, calling fire(slot) for each expired timer. Returns the number
   * fired; `maxTickMs` receives the longest single tick's wall time.
   */
  advance(now: number, fire: (slot: number) => void, stats?: { maxTickMs: number }): number {
    const end = Math.floor(now / this.tickMs);
    let fired = 0;
    // Ticks past one full turn visit the same buckets again: cap the walk at one turn.
    let t = this.tick + 1;
    if (end - t > this.mask) t = end - this.mask;
    for (; t <= end; t++) {
      const t0 = stats ? performance.now() : 0;
      let s = this.heads[t & this.mask]!;
      while (s >= 0) {
        const n = this.next[s]!;
        if (((this.deadline[s]! - now) | 0) <= 0) {
          this.unlink(s);
          fire(s);
          fired++;
        }
        s = n;
      }
      if (stats) {
        const d = performance.now() - t0;
        if (d > stats.maxTickMs) stats.maxTickMs = d;
      }
    }
    this.tick = end;
    return fired;
  }
}
