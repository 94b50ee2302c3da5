/**
 * The event ring (the kernel's nf_conntrack_ecache + ctnetlink event groups), in shared memory.
 *
 * Producers: every thread that changes the table (packet workers, the GC, API callers) writes
 * NEW / UPDATE / DESTROY events. Consumers: subscriptions on any thread (subscribeEvents).
 *
 * Two rings (layout.ts, sections `events` and `destroys`), records REC_WORDS long, each an image
 * of the entry and of its extension block, so a consumer formats an event without touching the
 * entry (which may be recycled by then):
 *  - The main ring takes every event in one global order. A producer reserves a record with
 *    Atomics.add on XC_EV_HEAD and publishes it with the record's sequence word (a seqlock:
 *    ~seq while writing, seq when done). It never waits for consumers: a consumer that falls more
 *    than a ring behind finds its records overwritten and counts them lost (the kernel's ENOBUFS).
 *  - DESTROY events must not be lost. Each is first written to the DESTROY ring, which a
 *    producer may only fill up to the slowest attached subscriber's tail (SB_DTAIL); then a
 *    marker record pointing at it goes to the main ring, so in the normal case consumers see the
 *    DESTROY in global order. A consumer that lost the marker still finds the record in the
 *    DESTROY ring and delivers it late (counted in `late`, not lost).
 *  - When the DESTROY ring is full for some subscriber, a copy of the event (entry and extension
 *    images, the real reason) goes to the park queue (PARK_FACTOR x the DESTROY ring, under
 *    XC_EV_PARK_LOCK); the entry itself is freed as usual, so the table's capacity never depends
 *    on a consumer. Packet workers (each batch end) and the GC (each run) deliver parked events as
 *    room appears. When the park queue is full too, the subscribers that leave no room are
 *    overrun: their DESTROY backlog is dropped and counted (SB_DROPPED, XC_EV_DROPPED), as the
 *    kernel drops events for a listener whose socket is full, and they re-attach on their next
 *    poll. A subscriber that has not polled for the table's stall time (SB_BEAT, H_STALL_MS) is
 *    overrun as soon as it holds the ring up: a dead or stuck consumer costs nothing.
 *  - Crash recovery (recovery.ts, recoverProducer) publishes tombstones (REC_TOMB) for records a
 *    dead producer reserved, and writes the DESTROY of a delete the dead worker did not finish.
 *  - Records start one lap behind (seq r - size), so nothing reads as published before it is.
 *
 * Nothing is produced while no subscriber is attached (XC_EV_SUBS = 0), when the table has no
 * rings (`events: false`) or when nf_conntrack_events is 0.
 */
import { EventEmitter } from 'node:events';
import { EVENT_DESTROY, EVENT_F_PROTOINFO, EVENT_NAMES, EVENT_NEW, EVENT_TYPES_ALL, EVENT_UPDATE, STALL_SUBSCRIBER, STALL_WORKER } from './events.js';
import { readAcct, readLabels, type ConnAcct } from './ext.js';
import {
  ENTRY_WORDS, EV_SUBSCRIBERS, EXT_ACCT, EXT_LABELS, EXT_TSTAMP, EXT_WORDS, E_EXT, E_ID,
  E_MARK, E_PROTO, E_STATUS, E_TIMEOUT, E_ZONE, H_CLOCK, H_EVENTS, H_EV_DESTROY, H_STALLS, H_STALL_MS, PARK_AGE_STALLS, PARK_FACTOR,
  REC_EXT, REC_LINK, REC_MARKER, REC_NOW, REC_PARKED_AT, REC_SEQ, REC_STALL, REC_STALL_KIND, REC_STALL_LIMIT, REC_STALL_SILENT,
  REC_STALL_WHO, REC_TAG, REC_TOMB, REC_TOMB_SKIPPED, REC_TYPE, REC_WHY, REC_WORDS,
  SB_ATTACHED, SB_BEAT, SB_CLAIMED, SB_DROPPED, SB_DTAIL, SB_FREE, SB_OVERRUN, SB_STATE, SUB_WORDS,
  W_EV_D, W_EV_M, W_EV_PARK, W_EV_RETRY, WORKER_WORDS, X_FLAGS, X_TSTAMP,
  XC_EV_DHEAD, XC_EV_DROPPED, XC_EV_EMITTED, XC_EV_HEAD, XC_EV_LOST, XC_EV_OVERRUNS, XC_EV_PARK_FULL,
  XC_EV_PARK_LOCK, XC_EV_PARKED, XC_EV_PARKED_TOTAL, XC_EV_PHEAD, XC_EV_PTAIL, XC_EV_SUBS, XC_EV_TOMBS, XC_SUB,
} from './layout.js';
import { lock, lockFor, unlock } from './locks.js';
import { beatNow, beatSilence, beatStale } from './liveness.js';
import { S_EVENTS } from './sysctl.js';
import type { ConntrackTable } from './table.js';
import { connEntryJson, formatEntry, type ConnEntryJson, type FormatContext, type FormatOptions, type TupleJson } from '../ops/format.js';
import { ConntrackError } from '../errors.js';

const SEQ_MASK = 0x7fffffff;
/** Entries one retry call delivers at most (bounded work per batch end / GC run). */
const RETRY_MAX = 64;
/** A reserved main-ring record not published after this long (wall ms) is skipped as lost (a dead producer). */
const STALL_MS = 2000;
/** The same for a DESTROY record (recovery normally publishes a tombstone or the event long before). */
const DSTALL_MS = 15000;
const E_NO_RING = 'this table has no event ring (created with events: false)';
const E_NO_SUB = `all ${EV_SUBSCRIBERS} event subscriber records are in use`;

/** Words of a stall record a subscriber copies (its header and REC_STALL_* words). */
const STALL_IMG = Math.max(REC_NOW, REC_TAG, REC_STALL_KIND, REC_STALL_WHO, REC_STALL_SILENT, REC_STALL_LIMIT) + 1;

/** Signed distance a - b of two 31-bit sequence numbers. */
function seqDiff(a: number, b: number): number {
  return ((a - b) << 1) >> 1;
}

export { beatNow, beatStale };

/**
 * Mark subscriber record `sb` overrun (it was attached): producers stop keeping DESTROY room for
 * it; it re-attaches with a drop count when it polls again. True if this call did it.
 */
export function overrunSubscriber(i32: Int32Array, xc: number, sb: number, stalled: boolean): boolean {
  // CAS: exactly one thread moves it from attached to overrun.
  if (Atomics.compareExchange(i32, sb + SB_STATE, SB_ATTACHED, SB_OVERRUN) !== SB_ATTACHED) return false;
  // It still counts in XC_EV_SUBS: events go on being written, so that what it misses until it
  // comes back is exactly what passes through the DESTROY ring meanwhile (its drop count).
  Atomics.add(i32, xc + XC_EV_OVERRUNS, 1); // statistics
  if (stalled) Atomics.add(i32, H_STALLS, 1);
  return true;
}

/** Rounds of park / overrun / write before a DESTROY is given up (counted in XC_EV_PARK_FULL). */
const PARK_ATTEMPTS = 16;

/** An overrun subscriber silent this many stall times is presumed dead and detached (reapSubscribers). */
const REAP_STALLS = 10;

/**
 * Detach overrun subscribers that have not polled for REAP_STALLS x the stall time (dead threads
 * that never closed): their records are freed and producers stop writing for them. The GC calls
 * this each run. A subscriber that comes back after that finds its record gone and closes.
 */
export function reapSubscribers(table: ConntrackTable): number {
  const i32 = table.i32;
  const xc = table.sec.xctl;
  const ms = Atomics.load(i32, H_STALL_MS); // Atomics.store'd by the owner
  if (ms <= 0 || i32[H_EVENTS] === 0) return 0;
  const now = beatNow();
  let n = 0;
  for (let k = 0; k < EV_SUBSCRIBERS; k++) {
    const sb = xc + XC_SUB + k * SUB_WORDS;
    if (Atomics.load(i32, sb + SB_STATE) !== SB_OVERRUN) continue; // CAS'ed by producers / subscribers
    if (((now - Atomics.load(i32, sb + SB_BEAT)) & SEQ_MASK) <= ms * REAP_STALLS) continue;
    // CAS: only an overrun record still silent is freed (its owner or a new subscriber may race us).
    if (Atomics.compareExchange(i32, sb + SB_STATE, SB_OVERRUN, SB_FREE) === SB_OVERRUN) {
      Atomics.sub(i32, xc + XC_EV_SUBS, 1); // counted out: producers stop when none is left
      n++;
    }
  }
  return n;
}

/**
 * The producer side, one per thread that changes the table (owned by Conntrack and GcEngine).
 * Also the place where a connection's stop timestamp is taken.
 *
 * Crash recovery (recovery.ts): a DESTROY in progress is named by the worker record's W_EV_D
 * (DESTROY-ring record reserved), W_EV_M (its main-ring marker), W_EV_PARK (park-queue record
 * being committed) and W_EV_RETRY (parked record being delivered), all written before the step
 * they describe and cleared at the start of the next DESTROY, so recovery can tell a delivered
 * event from one to write again, and publish tombstones for records a dead producer reserved.
 */
export class EventProducer {
  private readonly i32: Int32Array;
  private readonly xc: number;
  private readonly ext: number;
  private readonly sys: number;
  private readonly W: number;
  private readonly events: number;
  private readonly destroys: number;
  private readonly parkBase: number;
  private readonly mask: number;
  private readonly dcap: number;
  private readonly dmask: number;
  private readonly pcap: number;
  /** Longest wait for the park lock, ms (-1: as long as it takes; crash recovery bounds it). */
  lockWaitMs = -1;

  constructor(table: ConntrackTable, private readonly wid: number) {
    this.i32 = table.i32;
    this.xc = table.sec.xctl;
    this.ext = table.sec.ext;
    this.sys = table.sec.sysctl;
    this.W = table.sec.workers + wid * WORKER_WORDS;
    this.events = table.sec.events;
    this.destroys = table.sec.destroys;
    this.parkBase = table.sec.parked;
    this.mask = table.i32[H_EVENTS]! - 1; // fixed at creation
    this.dcap = table.i32[H_EV_DESTROY]!;
    this.dmask = this.dcap - 1;
    this.pcap = this.dcap * PARK_FACTOR;
  }

  /** Should events be written at all right now? (Two loads; false without subscribers.) */
  get active(): boolean {
    // XC_EV_SUBS: Atomics.add'ed by subscribers as they attach and leave.
    return this.mask >= 0 && Atomics.load(this.i32, this.xc + XC_EV_SUBS) > 0 &&
      Atomics.load(this.i32, this.sys + S_EVENTS) !== 0; // sysctl words are Atomics.store'd
  }

  /** Write a NEW or UPDATE event of entry `e` (never waits, never fails). */
  emit(type: number, e: number, now: number, tag: number): void {
    if (!this.active) return;
    // Atomics.add reserves a record; the counter's order is the events' global order.
    const seq = Atomics.add(this.i32, this.xc + XC_EV_HEAD, 1) & SEQ_MASK;
    Atomics.store(this.i32, this.W + W_EV_M, seq + 1); // named for recovery until published
    this.write(this.events + (seq & this.mask) * REC_WORDS, seq, type, e, false, now, tag, 0, 0);
    Atomics.store(this.i32, this.W + W_EV_M, 0);
    Atomics.add(this.i32, this.xc + XC_EV_EMITTED, 1); // statistics
  }

  /**
   * Report a thread this one found stalled (liveness.ts): a REC_STALL record in the main ring,
   * delivered to subscribers' 'stall' listeners as a StallEvent. Never waits, never fails.
   */
  stall(kind: number, who: number, silentMs: number): void {
    if (!this.active) return;
    const i32 = this.i32;
    // Atomics.add reserves a record, as for every event.
    const seq = Atomics.add(i32, this.xc + XC_EV_HEAD, 1) & SEQ_MASK;
    Atomics.store(i32, this.W + W_EV_M, seq + 1); // named for recovery until published
    const rec = this.events + (seq & this.mask) * REC_WORDS;
    Atomics.store(i32, rec + REC_SEQ, ~seq); // seqlock open
    i32[rec + REC_TYPE] = REC_STALL;
    i32[rec + REC_NOW] = Atomics.load(i32, H_CLOCK); // written by the driver
    i32[rec + REC_TAG] = this.wid; // who found it
    i32[rec + REC_STALL_KIND] = kind;
    i32[rec + REC_STALL_WHO] = who;
    i32[rec + REC_STALL_SILENT] = silentMs;
    i32[rec + REC_STALL_LIMIT] = Atomics.load(i32, H_STALL_MS); // Atomics.store'd by the owner
    Atomics.store(i32, rec + REC_SEQ, seq); // seqlock close: publishes the stores above
    Atomics.store(i32, this.W + W_EV_M, 0);
    Atomics.add(i32, this.xc + XC_EV_EMITTED, 1); // statistics
  }

  /**
   * Copy an entry (`img` false: entry words at `src` and its extension block) or a record image
   * (`img` true: REC_WORDS at `src`) into the record at `rec` and publish it as `seq`.
   */
  private write(rec: number, seq: number, type: number, src: number, img: boolean, now: number, tag: number, link: number, why: number): void {
    const i32 = this.i32;
    // Seqlock open: readers that see ~seq (or a changed word after copying) discard the copy.
    Atomics.store(i32, rec + REC_SEQ, ~seq);
    if (img) {
      i32.copyWithin(rec + 1, src + 1, src + REC_WORDS);
    } else if (src >= 0) {
      i32.copyWithin(rec + 1, src + 1, src + ENTRY_WORDS); // a snapshot; racing word updates are fine
      const b = i32[src + E_EXT]!;
      if (b !== 0) i32.copyWithin(rec + REC_EXT, this.ext + b * EXT_WORDS, this.ext + (b + 1) * EXT_WORDS);
      i32[rec + E_EXT] = b !== 0 ? 1 : 0;
    }
    i32[rec + REC_TYPE] = type;
    i32[rec + REC_NOW] = now;
    i32[rec + REC_TAG] = tag;
    i32[rec + REC_LINK] = link;
    i32[rec + REC_WHY] = why;
    // Seqlock close: every plain store above is visible to a reader that loads seq.
    Atomics.store(i32, rec + REC_SEQ, seq);
  }

  /**
   * Entry `e` has just been removed (Chains.onDestroy, before the table's reference is dropped).
   * Takes the stop timestamp and writes the DESTROY event, or parks a copy of it.
   */
  destroyed(e: number, now: number, why: number, tag: number): void {
    const i32 = this.i32;
    const b = i32[e + E_EXT]!;
    if (b !== 0) {
      const x = this.ext + b * EXT_WORDS;
      // Only the killing thread writes stop (kill() lets exactly one thread get here).
      if (Atomics.load(i32, x + X_FLAGS) & EXT_TSTAMP) Atomics.store(i32, x + X_TSTAMP + 1, now | 0 || 1);
    }
    if (!this.active) return;
    // A new DESTROY: forget the previous one's records (recovery reads these, see the class comment).
    Atomics.store(i32, this.W + W_EV_D, 0);
    Atomics.store(i32, this.W + W_EV_M, 0);
    Atomics.store(i32, this.W + W_EV_PARK, 0);
    if (this.writeDestroy(e, false, now, why, tag)) return;
    this.park(e, now, why, tag);
  }

  /**
   * The DESTROY ring is full for some subscriber: queue a copy of the event (the entry's slot is
   * not kept). When the queue is full too, the subscribers holding the ring up are overrun
   * (their backlog dropped with a count, as the kernel drops events for a full socket).
   */
  private park(e: number, now: number, why: number, tag: number): void {
    const i32 = this.i32;
    const lk = this.xc + XC_EV_PARK_LOCK;
    for (let attempt = 0; attempt < PARK_ATTEMPTS; attempt++) {
      if (this.lockWaitMs < 0) lock(i32, lk, this.wid);
      else if (!lockFor(i32, lk, this.wid, this.lockWaitMs)) break; // held by another dead worker: not waited on
      const ph = i32[this.xc + XC_EV_PHEAD]!; // XC_EV_PARK_LOCK held
      const pt = i32[this.xc + XC_EV_PTAIL]!;
      if (((pt - ph) | 0) < this.pcap) {
        Atomics.store(i32, this.W + W_EV_PARK, pt + 1); // recovery: committed once PTAIL passes it
        const rec = this.parkBase + (pt % this.pcap) * REC_WORDS;
        i32.copyWithin(rec + 1, e + 1, e + ENTRY_WORDS);
        const b = i32[e + E_EXT]!;
        if (b !== 0) i32.copyWithin(rec + REC_EXT, this.ext + b * EXT_WORDS, this.ext + (b + 1) * EXT_WORDS);
        i32[rec + E_EXT] = b !== 0 ? 1 : 0;
        i32[rec + REC_NOW] = now;
        i32[rec + REC_TAG] = tag;
        i32[rec + REC_WHY] = why; // the real reason, delivered with the event
        i32[rec + REC_PARKED_AT] = beatNow(); // its age bounds how long it may wait (retryParked)
        // The commit (Atomics.store: lock-free readers of the queue length).
        Atomics.store(i32, this.xc + XC_EV_PTAIL, (pt + 1) | 0);
        Atomics.add(i32, this.xc + XC_EV_PARKED, 1);
        Atomics.add(i32, this.xc + XC_EV_PARKED_TOTAL, 1);
        unlock(i32, lk);
        return;
      }
      unlock(i32, lk);
      // The queue is full: overrun every subscriber that leaves no room (their drop counts cover
      // what they miss from here), then write; other producers may take the room first: again.
      this.overrunLaggards();
      if (this.writeDestroy(e, false, now, why, tag)) return;
    }
    Atomics.add(i32, this.xc + XC_EV_PARK_FULL, 1); // statistics: a DESTROY nobody could take
  }

  /** Overrun the attached subscribers whose DESTROY backlog fills the ring. */
  private overrunLaggards(): void {
    const i32 = this.i32;
    const d = Atomics.load(i32, this.xc + XC_EV_DHEAD); // CAS'ed by producers
    for (let k = 0; k < EV_SUBSCRIBERS; k++) {
      const sb = this.xc + XC_SUB + k * SUB_WORDS;
      if (Atomics.load(i32, sb + SB_STATE) !== SB_ATTACHED) continue;
      if (this.dcap - seqDiff(d, Atomics.load(i32, sb + SB_DTAIL)) <= 0) overrunSubscriber(i32, this.xc, sb, false);
    }
  }

  /** Reserve a DESTROY record if every subscriber has room, write it and its marker. */
  private writeDestroy(src: number, img: boolean, now: number, why: number, tag: number): boolean {
    const i32 = this.i32;
    if (this.dcap === 0) return true; // no DESTROY ring: DESTROY events go the lossy way
    let d: number;
    for (;;) {
      d = Atomics.load(i32, this.xc + XC_EV_DHEAD); // CAS'ed by producers
      let room = this.dcap;
      for (let k = 0; k < EV_SUBSCRIBERS; k++) {
        const sb = this.xc + XC_SUB + k * SUB_WORDS;
        if (Atomics.load(i32, sb + SB_STATE) !== SB_ATTACHED) continue; // attached subscribers only
        const r = this.dcap - seqDiff(d, Atomics.load(i32, sb + SB_DTAIL)); // tail: Atomics.store'd by its reader
        // A subscriber that stopped polling (dead or stalled) does not hold the ring up.
        if (r <= 0) {
          const beat = Atomics.load(i32, sb + SB_BEAT); // Atomics.store'd by its reader
          if (beatStale(i32, beat) && overrunSubscriber(i32, this.xc, sb, true)) {
            this.stall(STALL_SUBSCRIBER, k, beatSilence(beat));
            continue;
          }
        }
        if (r < room) room = r;
      }
      if (room <= 0) return false;
      // CAS: claim record d only if no other producer took it meanwhile.
      if (Atomics.compareExchange(i32, this.xc + XC_EV_DHEAD, d, (d + 1) & SEQ_MASK) === d) break;
    }
    Atomics.store(i32, this.W + W_EV_D, d + 1); // ours until published (recovery.ts)
    // The global position (Atomics.add, as for every event), then the record, then the marker.
    const seq = Atomics.add(i32, this.xc + XC_EV_HEAD, 1) & SEQ_MASK;
    Atomics.store(i32, this.W + W_EV_M, seq + 1);
    const t = img ? i32[src + REC_TAG]! : tag;
    const w = img ? i32[src + REC_WHY]! : why;
    const at = img ? i32[src + REC_NOW]! : now;
    this.write(this.destroys + (d & this.dmask) * REC_WORDS, d, EVENT_DESTROY, src, img, at, t, seq, w);
    this.write(this.events + (seq & this.mask) * REC_WORDS, seq, EVENT_DESTROY | REC_MARKER, -1, false, at, t, d, w);
    Atomics.add(i32, this.xc + XC_EV_EMITTED, 1); // statistics
    return true;
  }

  /** DESTROY events waiting for room in the DESTROY ring (a hint, read without the lock). */
  get parked(): number {
    return Atomics.load(this.i32, this.xc + XC_EV_PARKED); // Atomics.add'ed by parkers/retriers
  }

  /** Deliver parked DESTROY events while there is room. Returns the number delivered. */
  retryParked(): number {
    const i32 = this.i32;
    if (this.parked === 0) return 0;
    const lk = this.xc + XC_EV_PARK_LOCK;
    let n = 0;
    lock(i32, lk, this.wid);
    let ph = i32[this.xc + XC_EV_PHEAD]!; // XC_EV_PARK_LOCK held
    const pt = i32[this.xc + XC_EV_PTAIL]!;
    if (Atomics.load(i32, this.xc + XC_EV_SUBS) === 0) {
      n = (pt - ph) | 0; // every subscriber left: nothing to deliver to
      ph = pt;
      Atomics.store(i32, this.xc + XC_EV_PHEAD, ph);
    } else {
      // The age bound: a DESTROY parked for PARK_AGE_STALLS stall times overruns the subscribers
      // that leave it no room (they are too slow), as a full queue does.
      const maxAge = PARK_AGE_STALLS * Atomics.load(i32, H_STALL_MS); // Atomics.store'd by the owner
      while (ph !== pt && n < RETRY_MAX) {
        Atomics.store(i32, this.W + W_EV_D, 0);
        Atomics.store(i32, this.W + W_EV_M, 0);
        Atomics.store(i32, this.W + W_EV_RETRY, ph + 1); // recovery: delivered once W_EV_D is published
        const rec = this.parkBase + (ph % this.pcap) * REC_WORDS;
        if (!this.writeDestroy(rec, true, 0, 0, 0)) {
          if (maxAge <= 0 || beatSilence(i32[rec + REC_PARKED_AT]!) <= maxAge) break;
          this.overrunLaggards();
          if (!this.writeDestroy(rec, true, 0, 0, 0)) break;
        }
        ph = (ph + 1) | 0;
        Atomics.store(i32, this.xc + XC_EV_PHEAD, ph); // one at a time: a crash repeats none
        n++;
      }
      Atomics.store(i32, this.W + W_EV_RETRY, 0);
    }
    if (n > 0) Atomics.sub(i32, this.xc + XC_EV_PARKED, n);
    unlock(i32, lk);
    return n;
  }
}

/**
 * Crash recovery of a dead producer's event obligations (recovery.ts calls this while it still
 * owns the dead worker's record and before releasing its locks). `inDestroy`: the dead worker
 * was removing an entry and had not finished writing its DESTROY (KILL_STEP_EMITTING). Returns
 * true when that DESTROY reached the ring or the park queue (else the caller writes it again).
 * Reserved records it left unpublished get tombstones, so no subscriber waits on them.
 */
export function recoverProducer(table: ConntrackTable, wid: number, holdsParkLock: boolean): { delivered: boolean; tombs: number } {
  const i32 = table.i32;
  const xc = table.sec.xctl;
  const W = table.sec.workers + wid * WORKER_WORDS;
  const dcap = i32[H_EV_DESTROY]!;
  const cap = i32[H_EVENTS]!;
  let tombs = 0;
  let delivered = false;
  const tomb = (rec: number, seq: number, skipped = false): void => {
    Atomics.store(i32, rec + REC_SEQ, ~seq); // seqlock open, as a producer does
    i32[rec + REC_TYPE] = skipped ? REC_TOMB | REC_TOMB_SKIPPED : REC_TOMB;
    Atomics.store(i32, rec + REC_SEQ, seq); // published: readers skip it
    tombs++;
  };
  // The words below were written by the dead thread with Atomics.store.
  const d = Atomics.load(i32, W + W_EV_D) - 1;
  let dPublished = false;
  if (d >= 0 && dcap > 0) {
    const rec = table.sec.destroys + (d & (dcap - 1)) * REC_WORDS;
    const s = Atomics.load(i32, rec + REC_SEQ);
    const p = s >= 0 ? s : ~s;
    // Unpublished (an older lap, or ~d: being written) is still ours: no tail passes it. A newer
    // lap means ours was published and read long ago (W_EV_D is kept until the next DESTROY).
    if (s !== d && seqDiff(p, d) <= 0) tomb(rec, d);
    else dPublished = delivered = true;
  }
  const m = Atomics.load(i32, W + W_EV_M) - 1;
  if (m >= 0 && cap > 0) {
    const rec = table.sec.events + (m & (cap - 1)) * REC_WORDS;
    const s = Atomics.load(i32, rec + REC_SEQ);
    const p = s >= 0 ? s : ~s;
    // Not published, and not lapped by a newer event: skip marker. Readers count it skipped
    // (their `lost`) unless it was the marker of a DESTROY record tombed above, which is
    // written again: a NEW/UPDATE it stood for is lost; a published DESTROY is delivered late.
    if (s !== m && seqDiff(p, m) <= 0) tomb(rec, m, d < 0 || dPublished);
  }
  const park = Atomics.load(i32, W + W_EV_PARK) - 1;
  if (park >= 0 && seqDiff(Atomics.load(i32, xc + XC_EV_PTAIL), park) > 0) delivered = true; // the commit happened
  const retry = Atomics.load(i32, W + W_EV_RETRY) - 1;
  if (holdsParkLock && retry >= 0 && dPublished && Atomics.load(i32, xc + XC_EV_PHEAD) === retry) {
    // It delivered the parked head but died before moving past it (XC_EV_PARK_LOCK is its).
    Atomics.store(i32, xc + XC_EV_PHEAD, (retry + 1) | 0);
    Atomics.sub(i32, xc + XC_EV_PARKED, 1);
  }
  for (const w of [W_EV_D, W_EV_M, W_EV_PARK, W_EV_RETRY]) Atomics.store(i32, W + w, 0);
  if (tombs > 0) Atomics.add(i32, xc + XC_EV_TOMBS, tombs); // statistics
  return { delivered, tombs };
}

// ---------------------------------------------------------------------------------------------
// Consumers.

/** One event, with a private copy of what the entry held at the time. */
export class ConnEvent {
  /** EVENT_NEW, EVENT_UPDATE or EVENT_DESTROY. */
  readonly type: number;
  /** Table clock of the event (ms, uint32 wrapping). */
  readonly now: number;
  /** Producer's tag: in a pool, the frame's offset in the batch data (replay: in the capture); -1 none. */
  readonly tag: number;
  /** Position in the global event order (31-bit, wrapping). */
  readonly seq: number;
  /** DESTROY: why the entry left (chains.ts KILL_*). */
  readonly why: number;
  /** @internal The entry image (ENTRY_WORDS words) and its extension image after it. */
  readonly image: Int32Array;
  /** Delivered out of global order (its DESTROY marker was lost). */
  readonly late: boolean;

  /** @internal */
  constructor(image: Int32Array, seq: number, late: boolean) {
    this.image = image;
    this.type = image[REC_TYPE]! & 0xff;
    this.now = image[REC_NOW]!;
    this.tag = image[REC_TAG]!;
    this.why = image[REC_WHY]!;
    this.seq = seq;
    this.late = late;
  }

  get typeName(): string {
    return EVENT_NAMES[this.type] ?? '?';
  }
  get id(): number {
    return this.image[E_ID]! >>> 0;
  }
  get status(): number {
    return this.image[E_STATUS]!;
  }
  get mark(): number {
    return this.image[E_MARK]! >>> 0;
  }
  get zone(): number {
    return this.image[E_ZONE]! & 0xffff;
  }
  get proto(): number {
    return (this.image[E_PROTO]! >>> 8) & 0xff;
  }
  /** Seconds left until the entry's timeout at the time of the event (0 when expired). */
  get timeout(): number {
    const left = (this.image[E_TIMEOUT]! - this.now) | 0;
    return left > 0 ? Math.floor(left / 1000) : 0;
  }
  private get extFlags(): number {
    return this.image[E_EXT] ? this.image[REC_EXT + X_FLAGS]! : 0;
  }
  /** Accounting counters, when the connection had accounting. */
  get acct(): ConnAcct | null {
    return this.extFlags & EXT_ACCT ? readAcct(this.image, REC_EXT) : null;
  }
  /** Start / stop timestamps (table clock ms), when the connection had timestamps. */
  get timestamps(): { start: number; stop: number } | null {
    return this.extFlags & EXT_TSTAMP
      ? { start: this.image[REC_EXT + X_TSTAMP]! >>> 0, stop: this.image[REC_EXT + X_TSTAMP + 1]! >>> 0 }
      : null;
  }
  get labels(): bigint {
    return this.extFlags & EXT_LABELS ? readLabels(this.image, REC_EXT) : 0n;
  }
  /** The `conntrack -E` line, without the event-type and timestamp prefix (see format.ts). */
  body(opts: FormatOptions = {}): string {
    const ctx: FormatContext = {
      i32: this.image, u32: new Uint32Array(this.image.buffer), sys: 0, ext: REC_EXT - EXT_WORDS,
    };
    return formatEntry(ctx, 0, this.now, {
      ...opts, use: false, destroy: this.type === EVENT_DESTROY,
      noState: this.type === EVENT_UPDATE && (this.image[REC_TYPE]! & EVENT_F_PROTOINFO) === 0,
    });
  }

  // Typed view: the same JSON shape as a listed entry (format.ts connEntryJson), built on demand.

  /** The connection as a listed entry shows it (CtOps dump().json(), `-o json`), at the event's time; built once, treat it as read-only. */
  get entry(): ConnEntryJson {
    if (this.json === null) {
      const ctx = { i32: this.image, u32: new Uint32Array(this.image.buffer, this.image.byteOffset, this.image.length), sys: 0 };
      this.json = connEntryJson(ctx, 0, this.now, this.image, this.image[E_EXT] ? REC_EXT : -1);
    }
    return this.json;
  }
  /** The entry's JSON, built on first use (the image never changes). */
  private json: ConnEntryJson | null = null;
  /** 'new', 'update' or 'destroy'. */
  get event(): ConnEventKind {
    return this.type === EVENT_NEW ? 'new' : this.type === EVENT_UPDATE ? 'update' : 'destroy';
  }
  /** The original-direction tuple. */
  get original(): TupleJson {
    return this.entry.original;
  }
  /** The reply-direction tuple. */
  get reply(): TupleJson {
    return this.entry.reply;
  }
  /** The TCP or SCTP state name at the time of the event (e.g. 'ESTABLISHED'); null for other protocols. */
  get state(): string | null {
    return this.entry.state ?? null;
  }
  /** `{ event, ...entry }`: JSON.stringify(ev) gives one JSON line per event. */
  toJSON(): ConnEventJson {
    return { event: this.event, ...this.entry };
  }
}

/**
 * A thread found stalled (liveness.ts): a packet worker or the GC silent inside a batch for
 * longer than the table's stall time (it was expelled from grace periods), or a subscriber that
 * stopped polling while it held the DESTROY ring up (it was overrun). Delivered to every
 * subscription's 'stall' listeners (`sub.on('stall', (ev) => ...)`), in the global event order.
 */
export class StallEvent {
  readonly event = 'stall' as const;
  /** 'worker' (packet worker or GC: its worker record id) or 'subscriber' (its subscriber record index). */
  readonly kind: StallKind;
  /** The stalled thread's worker record id ('worker') or subscriber record index ('subscriber'). */
  readonly id: number;
  /** Wall ms since its last heartbeat when it was found. */
  readonly silentMs: number;
  /** The table's stall time (stallMs) then. */
  readonly stallMs: number;
  /** Worker record id of the thread that found it. */
  readonly by: number;
  /** Table clock when it was found (ms, uint32 wrapping). */
  readonly now: number;
  /** Position in the global event order (31-bit, wrapping). */
  readonly seq: number;

  /** @internal */
  constructor(rec: Int32Array, seq: number) {
    this.kind = rec[REC_STALL_KIND] === STALL_SUBSCRIBER ? 'subscriber' : 'worker';
    this.id = rec[REC_STALL_WHO]!;
    this.silentMs = rec[REC_STALL_SILENT]!;
    this.stallMs = rec[REC_STALL_LIMIT]!;
    this.by = rec[REC_TAG]!;
    this.now = rec[REC_NOW]! >>> 0;
    this.seq = seq;
  }

  toJSON(): StallEventJson {
    return { event: 'stall', kind: this.kind, id: this.id, silentMs: this.silentMs, stallMs: this.stallMs, by: this.by };
  }
}

/** Which kind of thread a StallEvent is about. */
export type StallKind = 'worker' | 'subscriber';

/** A StallEvent as JSON. */
export interface StallEventJson {
  event: 'stall';
  kind: StallKind;
  id: number;
  silentMs: number;
  stallMs: number;
  by: number;
}

/** An event's kind, as ConnEvent.event and ConnEventJson.event give it. */
export type ConnEventKind = 'new' | 'update' | 'destroy';

/** A ConnEvent as JSON: the listed-entry shape (ConnEntryJson) plus the event's kind. */
export interface ConnEventJson extends ConnEntryJson {
  event: ConnEventKind;
}

/** Options of subscribeEvents(). */
export interface SubscribeOptions {
  /** Event types to deliver (EVENT_* bits; default all). Others are still read, not delivered. */
  types?: number;
  /** Polling interval of the emitter / iterator pump, wall ms (default 5). */
  intervalMs?: number;
}

/** The subscription's listener events, typed ('event', 'stall', 'overrun', 'lost', 'close'). */
export interface EventSubscription {
  on(event: 'event', listener: (ev: ConnEvent) => void): this;
  on(event: 'stall', listener: (ev: StallEvent) => void): this;
  /** `dropped`: DESTROY events it will not get; `tailBlockedMs`: how long its tail had waited on a producer's unpublished record (0: it was behind). */
  on(event: 'overrun', listener: (dropped: number, tailBlockedMs: number) => void): this;
  on(event: 'lost', listener: (count: number) => void): this;
  on(event: 'close', listener: () => void): this;
  on(event: string | symbol, listener: (...args: never[]) => void): this;
  once(event: 'event', listener: (ev: ConnEvent) => void): this;
  once(event: 'stall', listener: (ev: StallEvent) => void): this;
  once(event: 'overrun', listener: (dropped: number, tailBlockedMs: number) => void): this;
  once(event: 'lost', listener: (count: number) => void): this;
  once(event: 'close', listener: () => void): this;
  once(event: string | symbol, listener: (...args: never[]) => void): this;
}

/**
 * A subscription to a table's events, usable on any thread:
 *   const sub = subscribeEvents(table, { types: EVENT_NEW | EVENT_DESTROY });
 *   for await (const ev of sub) ...      // or sub.on('event', fn), or sub.poll()
 *   sub.close();
 * `lost` counts NEW/UPDATE events overwritten before they were read; DESTROY events are never
 * lost (see the module comment).
 */
export class EventSubscription extends EventEmitter {
  readonly table: ConntrackTable;
  readonly types: number;
  private readonly i32: Int32Array;
  private readonly xc: number;
  private readonly sb: number;
  private readonly k: number;
  private readonly cap: number;
  private readonly mask: number;
  private readonly dmask: number;
  private readonly delivered: Uint8Array;
  private readonly intervalMs: number;
  private mainNext: number;
  private dTail: number;
  private skipped = 0;
  private lateCount = 0;
  private reportedLost = 0;
  private waitingSince = 0;
  private dWaitingSince = 0;
  /** DESTROY records skipped after DSTALL_MS unpublished (a dead producer nobody recovered). */
  lostDestroys = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly queue: ConnEvent[] = [];
  private readonly waiters: ((r: IteratorResult<ConnEvent>) => void)[] = [];
  private iterating = 0;
  /** Events delivered so far (of the subscribed types). */
  deliveredCount = 0;

  constructor(table: ConntrackTable, opts: SubscribeOptions = {}) {
    super();
    const i32 = table.i32;
    if (i32[H_EVENTS] === 0) throw new ConntrackError('ERR_CT_UNSUPPORTED', E_NO_RING);
    this.table = table;
    this.i32 = i32;
    this.types = opts.types ?? EVENT_TYPES_ALL;
    this.intervalMs = opts.intervalMs ?? 5;
    this.xc = table.sec.xctl;
    this.cap = i32[H_EVENTS]!;
    this.mask = this.cap - 1;
    this.dmask = i32[H_EV_DESTROY]! - 1;
    this.delivered = new Uint8Array(Math.max(1, i32[H_EV_DESTROY]!));
    let k = 0;
    let counted = false; // a taken-over record is still counted in XC_EV_SUBS
    for (; k < EV_SUBSCRIBERS; k++) {
      const sb = this.xc + XC_SUB + k * SUB_WORDS;
      // CAS claims a free subscriber record.
      if (Atomics.compareExchange(i32, sb + SB_STATE, SB_FREE, SB_CLAIMED) === SB_FREE) break;
      // An overrun record whose owner has been silent for the stall time is presumed dead: reuse
      // it (CAS: if the owner comes back it finds the record gone and closes).
      if (Atomics.load(i32, sb + SB_STATE) === SB_OVERRUN && beatStale(i32, Atomics.load(i32, sb + SB_BEAT)) &&
        Atomics.compareExchange(i32, sb + SB_STATE, SB_OVERRUN, SB_CLAIMED) === SB_OVERRUN) { counted = true; break; }
    }
    if (k === EV_SUBSCRIBERS) throw new ConntrackError('ERR_CT_NO_RESOURCE', E_NO_SUB);
    this.k = k;
    this.sb = this.xc + XC_SUB + k * SUB_WORDS;
    Atomics.store(i32, this.sb + SB_DROPPED, 0);
    // Start at the current heads: we see events produced from now on.
    this.mainNext = 0;
    this.dTail = 0;
    this.attach(true, !counted);
    this.on('newListener', (name: string) => {
      if (name === 'event') this.startPump();
    });
  }

  /** (Re-)attach at the current heads; the record is ours (SB_CLAIMED). */
  private attach(fresh: boolean, count: boolean): void {
    const i32 = this.i32;
    this.dTail = Atomics.load(i32, this.xc + XC_EV_DHEAD);
    this.delivered.fill(0);
    Atomics.store(i32, this.sb + SB_DTAIL, this.dTail); // before attaching: producers honour it at once
    Atomics.store(i32, this.sb + SB_BEAT, beatNow()); // alive as of now
    Atomics.store(i32, this.sb + SB_STATE, SB_ATTACHED);
    if (count) Atomics.add(i32, this.xc + XC_EV_SUBS, 1); // producers start writing after this
    if (fresh) this.mainNext = Atomics.load(i32, this.xc + XC_EV_HEAD) & SEQ_MASK;
  }

  /**
   * Producers overran us (we stopped polling for the stall time, or fell more than the DESTROY
   * ring and the park queue behind): count the DESTROY events we will not get and re-attach.
   * False when the record was taken over meanwhile (we were presumed dead): then we close.
   */
  private recoverOverrun(): boolean {
    const i32 = this.i32;
    // CAS: take the record back (a new subscriber may have claimed it as a dead one's).
    if (Atomics.compareExchange(i32, this.sb + SB_STATE, SB_OVERRUN, SB_CLAIMED) !== SB_OVERRUN) {
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
      this.emit('close');
      return false;
    }
    // Skipped unread: the records from our tail to the head, less those already delivered through
    // their markers (our tail waits behind one not yet published, e.g. a descheduled producer's:
    // that is how a subscriber that keeps up can be overrun, and those it got are not dropped).
    // A tombstone (a dead producer's record) was no event either.
    const ahead = seqDiff(Atomics.load(i32, this.xc + XC_EV_DHEAD), this.dTail);
    const base = this.table.sec.destroys;
    let n = ahead;
    for (let k = 0, w = Math.min(ahead, this.delivered.length); k < w; k++) {
      const d = (this.dTail + k) & SEQ_MASK;
      const rec = base + (d & this.dmask) * REC_WORDS;
      if (this.delivered[d & this.dmask] || (Atomics.load(i32, rec + REC_SEQ) === d && (i32[rec + REC_TYPE]! & REC_TOMB))) n--;
    }
    // How long our tail had waited on an unpublished record: a dead or descheduled producer held
    // every subscriber's tail, so the ring and the park queue filled behind it.
    const blockedMs = this.dWaitingSince === 0 ? 0 : Math.max(1, Math.round(performance.now() - this.dWaitingSince));
    this.dWaitingSince = 0;
    this.dropped += n;
    this.overruns++;
    Atomics.add(i32, this.sb + SB_DROPPED, n);
    Atomics.add(i32, this.xc + XC_EV_DROPPED, n); // table-wide statistic
    this.attach(false, false); // still counted in XC_EV_SUBS while overrun
    if (this.listenerCount('overrun') > 0) this.emit('overrun', n, blockedMs);
    process.emitWarning(`conntrack-sab: event subscriber ${this.k} was overrun (${blockedMs > 0
      ? `its DESTROY tail waited ${blockedMs} ms on a producer's unpublished record` : 'stalled or too slow'}): ` +
      `${n} DESTROY events dropped`, { code: 'CTSAB_EVENTS_OVERRUN' });
    return true;
  }

  /** DESTROY events dropped for this subscriber because it was overrun (stalled or too slow). */
  dropped = 0;
  /** Stall reports read (each also emitted as a 'stall' event, a StallEvent). */
  stallCount = 0;
  /** Times this subscriber was overrun. */
  overruns = 0;

  /** NEW/UPDATE events this subscriber lost (overwritten before it read them). */
  get lost(): number {
    return this.skipped - this.lateCount;
  }

  /** DESTROY events delivered out of order because their marker was overwritten. */
  get late(): number {
    return this.lateCount;
  }

  /** Read what is available now (at most `max` events of the subscribed types). */
  poll(max = Infinity): ConnEvent[] {
    const out: ConnEvent[] = [];
    if (this.closed) return out;
    const i32 = this.i32;
    let stalls: StallEvent[] | null = null;
    // Our state: Atomics.compareExchange'd by producers that overrun us.
    if (Atomics.load(i32, this.sb + SB_STATE) === SB_OVERRUN && !this.recoverOverrun()) return out;
    Atomics.store(i32, this.sb + SB_BEAT, beatNow()); // heartbeat: we are polling
    const evBase = this.table.sec.events;
    while (out.length < max) {
      const head = Atomics.load(i32, this.xc + XC_EV_HEAD) & SEQ_MASK; // reservations so far
      const avail = seqDiff(head, this.mainNext);
      if (avail <= 0) break;
      if (avail > this.cap) {
        // Lapped: everything older than one ring is gone.
        this.skipped += avail - this.cap;
        this.mainNext = (head - this.cap) & SEQ_MASK;
        continue;
      }
      const rec = evBase + (this.mainNext & this.mask) * REC_WORDS;
      const s1 = Atomics.load(i32, rec + REC_SEQ); // seqlock open
      if (s1 === this.mainNext) {
        const type = i32[rec + REC_TYPE]!;
        if (type & REC_TOMB) {
          // A dead producer's record, published by recovery: nothing to deliver.
          if (type & REC_TOMB_SKIPPED) this.skipped++; // as if overwritten unread (see recoverProducer)
        } else if (type & REC_STALL) {
          const img = i32.slice(rec, rec + STALL_IMG);
          if (Atomics.load(i32, rec + REC_SEQ) !== s1) { this.skip(); continue; } // overwritten while copying
          (stalls ??= []).push(new StallEvent(img, s1));
        } else if (type & REC_MARKER) {
          const d = i32[rec + REC_LINK]!;
          if (Atomics.load(i32, rec + REC_SEQ) !== s1) { this.skip(); continue; } // torn: the DESTROY ring still has it
          // Before our tail: dropped by an overrun (counted), or a tombstone already passed.
          if (seqDiff(d, this.dTail) >= 0) this.takeDestroy(d, out, false);
        } else if ((type & this.types) !== 0) {
          const img = i32.slice(rec, rec + REC_WORDS);
          if (Atomics.load(i32, rec + REC_SEQ) !== s1) { this.skip(); continue; } // overwritten while copying
          out.push(new ConnEvent(img, s1, false));
        }
        this.mainNext = (this.mainNext + 1) & SEQ_MASK;
        this.waitingSince = 0;
        continue;
      }
      const p = s1 >= 0 ? s1 : ~s1;
      if (seqDiff(p, this.mainNext) > 0) { this.skip(); continue; } // a newer event took the record
      // Reserved but not yet published: wait, unless its producer seems dead.
      const t = performance.now();
      if (this.waitingSince === 0) this.waitingSince = t;
      if (t - this.waitingSince > STALL_MS) { this.skip(); continue; }
      break;
    }
    this.drainDestroys(out);
    const lostNow = this.lost;
    if (lostNow !== this.reportedLost) {
      Atomics.add(i32, this.xc + XC_EV_LOST, lostNow - this.reportedLost); // table-wide statistic
      this.reportedLost = lostNow;
    }
    this.deliveredCount += out.length;
    if (stalls !== null) {
      this.stallCount += stalls.length;
      if (this.listenerCount('stall') > 0) for (const st of stalls) this.emit('stall', st);
    }
    return out;
  }

  private skip(): void {
    this.skipped++;
    this.mainNext = (this.mainNext + 1) & SEQ_MASK;
    this.waitingSince = 0;
  }

  /** Deliver DESTROY record `d` (kept for us until our tail passes it). */
  private takeDestroy(d: number, out: ConnEvent[], late: boolean): void {
    const i32 = this.i32;
    const rec = this.table.sec.destroys + (d & this.dmask) * REC_WORDS;
    if (Atomics.load(i32, rec + REC_SEQ) !== d || (i32[rec + REC_TYPE]! & REC_TOMB)) return; // drainDestroys' to judge
    this.delivered[d & this.dmask] = 1;
    if (late) this.lateCount++;
    if ((EVENT_DESTROY & this.types) === 0) return;
    // Not overwritten before our tail passes it (the seq word was published before the marker)
    // unless producers overran us meanwhile: then the copy may be another event's. Re-check.
    const img = i32.slice(rec, rec + REC_WORDS);
    if (Atomics.load(i32, rec + REC_SEQ) !== d) {
      this.dropped++; // counted as the overrun's (the next poll re-attaches us)
      Atomics.add(i32, this.sb + SB_DROPPED, 1);
      Atomics.add(i32, this.xc + XC_EV_DROPPED, 1);
      return;
    }
    out.push(new ConnEvent(img, img[REC_LINK]!, late));
  }

  /** Advance our DESTROY-ring tail over what was delivered, delivering records whose marker we lost. */
  private drainDestroys(out: ConnEvent[]): void {
    const i32 = this.i32;
    const base = this.table.sec.destroys;
    const dh = Atomics.load(i32, this.xc + XC_EV_DHEAD); // reservations so far
    while (this.dTail !== dh) {
      const rec = base + (this.dTail & this.dmask) * REC_WORDS;
      const idx = this.dTail & this.dmask;
      if (Atomics.load(i32, rec + REC_SEQ) !== this.dTail) {
        // Not yet published: wait, unless its producer died and nobody recovered it.
        const t = performance.now();
        if (this.dWaitingSince === 0) this.dWaitingSince = t;
        if (t - this.dWaitingSince <= DSTALL_MS) break;
        this.lostDestroys++;
      } else if (i32[rec + REC_TYPE]! & REC_TOMB) {
        // Recovery's tombstone for a dead producer's record (the event was written again).
      } else if (this.delivered[idx]) {
        this.delivered[idx] = 0;
      } else if (seqDiff(i32[rec + REC_LINK]!, this.mainNext) < 0) {
        this.takeDestroy(this.dTail, out, true); // its marker was passed without being read
        this.delivered[idx] = 0;
      } else {
        break; // its marker is still ahead of us
      }
      this.delivered[idx] = 0;
      this.dWaitingSince = 0;
      this.dTail = (this.dTail + 1) & SEQ_MASK;
    }
    Atomics.store(i32, this.sb + SB_DTAIL, this.dTail); // frees DESTROY records for producers
  }

  private pump = (): void => {
    this.timer = null;
    if (this.closed) return;
    const evs = this.poll();
    for (const ev of evs) {
      if (this.listenerCount('event') > 0) this.emit('event', ev);
      if (this.iterating > 0) {
        const w = this.waiters.shift();
        if (w) w({ value: ev, done: false });
        else this.queue.push(ev);
      }
    }
    const lost = this.lost;
    if (lost > 0 && this.listenerCount('lost') > 0) this.emit('lost', lost);
    this.startPump();
  };

  private startPump(): void {
    if (this.closed || this.timer) return;
    if (this.listenerCount('event') === 0 && this.iterating === 0) return;
    this.timer = setTimeout(this.pump, this.intervalMs);
  }

  [Symbol.asyncIterator](): AsyncIterator<ConnEvent> {
    this.iterating++;
    this.startPump();
    return {
      next: (): Promise<IteratorResult<ConnEvent>> => {
        const ev = this.queue.shift();
        if (ev) return Promise.resolve({ value: ev, done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((ok) => this.waiters.push(ok));
      },
      return: (): Promise<IteratorResult<ConnEvent>> => {
        this.iterating--;
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  /** Detach: producers stop reserving DESTROY room for us; iterators end. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const i32 = this.i32;
    // CAS: attached or overrun -> free counts us out (unless the record was taken over).
    if (Atomics.compareExchange(i32, this.sb + SB_STATE, SB_ATTACHED, SB_FREE) === SB_ATTACHED ||
      Atomics.compareExchange(i32, this.sb + SB_STATE, SB_OVERRUN, SB_FREE) === SB_OVERRUN) {
      Atomics.sub(i32, this.xc + XC_EV_SUBS, 1); // producers may stop writing
    }
    for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
    this.emit('close');
  }

  /** Subscriber record index (diagnostics). */
  get index(): number {
    return this.k;
  }
}

/** Subscribe to `table`'s events (any thread). */
export function subscribeEvents(table: ConntrackTable, opts: SubscribeOptions = {}): EventSubscription {
  return new EventSubscription(table, opts);
}

/** Counters of the event rings (eventStats()). */
export interface EventRingStats {
  /** Events written, NEW/UPDATE lost by subscribers, entries parked now and ever, subscribers. */
  emitted: number;
  lost: number;
  parked: number;
  parkedTotal: number;
  /** Subscribers overrun (stalled, dead or too slow) and the DESTROY events dropped for them. */
  overruns: number;
  dropped: number;
  /** DESTROY events that found the ring and the park queue full with no subscriber to overrun. */
  parkFull: number;
  /** Records recovery published as tombstones for dead producers. */
  tombstones: number;
  subscribers: number;
  ring: number;
  destroyRing: number;
}

/** The event rings' counters: emitted, lost, parked DESTROY events. */
export function eventStats(table: ConntrackTable): EventRingStats {
  const i32 = table.i32;
  const xc = table.sec.xctl;
  // Atomics.load: counters Atomics.add'ed by producers and subscribers.
  return {
    emitted: Atomics.load(i32, xc + XC_EV_EMITTED) >>> 0,
    lost: Atomics.load(i32, xc + XC_EV_LOST),
    parked: Atomics.load(i32, xc + XC_EV_PARKED),
    parkedTotal: Atomics.load(i32, xc + XC_EV_PARKED_TOTAL),
    overruns: Atomics.load(i32, xc + XC_EV_OVERRUNS),
    dropped: Atomics.load(i32, xc + XC_EV_DROPPED),
    parkFull: Atomics.load(i32, xc + XC_EV_PARK_FULL),
    tombstones: Atomics.load(i32, xc + XC_EV_TOMBS),
    subscribers: Atomics.load(i32, xc + XC_EV_SUBS),
    ring: i32[H_EVENTS]!,
    destroyRing: i32[H_EV_DESTROY]!,
  };
}

export { EVENT_DESTROY, EVENT_NEW, EVENT_UPDATE, STALL_SUBSCRIBER, STALL_WORKER };
