/**
 * Deciding a batch's packets and writing their results (batch.ts): what a pool worker does for
 * a task, and what every party of the replay ring (ring.ts) does for its share of a batch, be it
 * a worker thread or the thread that reads the capture (the "caller share").
 */
import {
  IX_LEN, IX_LINKTYPE, IX_NOW, IX_NS, IX_OFF, IX_WORDS, IX_ZONE, PacketBatch, RF_DONE, RF_DROP, RF_FRAG_SHIFT, RF_NAT_SHIFT,
  RS_DIR, RS_FLAGS, RS_ID, RS_L4, RS_REASON, RS_SLOT, RS_STATE, RS_TASK, RS_TCP, RS_WORDS, TASK_WORDS, TK_FROM, TK_TO,
} from './batch.js';
import { RG_EXTRA_BYTES, RG_FIN, RG_SLOT0, RG_TASK0, RG_WANT, RT_DONE, RT_EXTRA_LEN, RT_WORDS } from './ring.js';
import type { Conntrack } from '../track/core.js';
import { REASON_EXTRA, REASON_OTHER, reasonCode } from '../track/reasons.js';
import { ENTRY_WORDS, E_ID } from '../table/layout.js';

/** Packets per read-side section: reclamation may advance between sections. */
export const SECTION = 256;

/** One thread's decisions into batches: its tracker and the reason strings the registry lacks. */
export class BatchDecider {
  /** Reason strings the registry lacks, met by this thread (their codes: REASON_EXTRA + index). */
  extras: string[] | null = null;
  /** How many of `extras` the ring was told about (publishExtras). */
  private extrasSent = 0;

  constructor(readonly ct: Conntrack) {}

  /** Decide packet i of the batch and write its result words; `task` goes to RS_TASK. */
  decideOne(batch: PacketBatch, i: number, task: number): void {
    const ct = this.ct;
    const i32 = batch.i32;
    const x = batch.sec.index + i * IX_WORDS;
    ct.eventTag = i32[x + IX_OFF]!; // events of this packet carry its frame offset (capture order in a replay)
    ct.fragTag = ct.eventTag; // and so do fragments held for reassembly
    const v = ct.frame(i32[x + IX_LINKTYPE]!, batch.bytes, batch.u32[x + IX_OFF]!, i32[x + IX_LEN]!, i32[x + IX_NOW]!,
      i32[x + IX_ZONE]!, i32[x + IX_NS]!);
    const r = batch.sec.results + i * RS_WORDS;
    let code = reasonCode(v.reason);
    if (code === REASON_OTHER && v.reason !== null) {
      // Not in the registry: report the text with the summary (rare; tests forbid it).
      this.extras ??= [];
      let e = this.extras.indexOf(v.reason);
      if (e < 0) e = this.extras.push(v.reason) - 1;
      code = REASON_EXTRA + e;
    }
    i32[r + RS_STATE] = v.state;
    i32[r + RS_DIR] = v.dir;
    i32[r + RS_REASON] = code;
    i32[r + RS_TCP] = v.protoState;
    i32[r + RS_SLOT] = v.slot;
    i32[r + RS_L4] = ct.pkt.l4proto;
    i32[r + RS_TASK] = task;
    // The slot is valid until endBatch: read its id now (it may be reused after the batch).
    const t = ct.table;
    i32[r + RS_ID] = v.slot >= 0 ? t.i32[t.sec.entries + v.slot * ENTRY_WORDS + E_ID]! : 0;
    i32[r + RS_FLAGS] = RF_DONE | (v.drop ? RF_DROP : 0) | (v.nat << RF_NAT_SHIFT) | (v.frag << RF_FRAG_SHIFT);
  }

  /**
   * A ring party's share of a batch: the packets of its list (task record `me`, written by the
   * dispatching thread, ring.ts), in batch order, in read-side sections of SECTION packets.
   * `crashAt` (test hook): exit the thread when `before` + decided reaches it. Returns packets
   * decided.
   */
  decideShare(b: PacketBatch, me: number, before: number, crashAt: number): number {
    const ct = this.ct;
    const i32 = b.i32;
    const lists = b.sec.lists;
    const tr = b.sec.tasks + me * TASK_WORDS;
    const from = i32[tr + TK_FROM]!;
    const to = i32[tr + TK_TO]!;
    let done = 0;
    let inSection = 0;
    ct.beginBatch();
    try {
      for (let k = from; k < to; k++) {
        if (before + done === crashAt) process.exit(70); // test hook: die mid-batch
        this.decideOne(b, i32[lists + k]!, me);
        done++;
        if (++inSection === SECTION) {
          ct.endBatch(); // reclamation may advance between sections
          inSection = 0;
          ct.beginBatch();
        }
      }
    } finally {
      ct.endBatch();
    }
    return done;
  }

  /**
   * A ring party finished batch s: publish its reason list (if it grew), then its progress; the
   * last party to finish the batch counts it finished and wakes the dispatcher when it waits for
   * that count (RG_WANT).
   */
  finishRingBatch(ring: Int32Array, extraBytes: Uint8Array, me: number, s: number, parts: number, depth: number): void {
    const rt = RG_TASK0 + me * RT_WORDS;
    const ex = this.extras;
    if (ex !== null && ex.length !== this.extrasSent) {
      // Before RT_DONE: the dispatcher reads the list when it reports this batch.
      const json = new TextEncoder().encode(JSON.stringify(ex));
      if (json.length <= RG_EXTRA_BYTES) {
        extraBytes.set(json);
        Atomics.store(ring, rt + RT_EXTRA_LEN, json.length); // read after RT_DONE / RG_FIN below
      }
      this.extrasSent = ex.length;
    }
    // Release: this batch's result words are visible to whoever sees the new count.
    Atomics.store(ring, rt + RT_DONE, s + 1);
    Atomics.notify(ring, rt + RT_DONE); // a party waiting at a fragment batch
    // The last party to finish the batch counts it finished; the dispatcher sleeps until a count
    // it names (RG_WANT), so it is woken once per few batches, not per party and batch.
    if (Atomics.add(ring, RG_SLOT0 + (s % depth), 1) + 1 === parts) {
      const fin = Atomics.add(ring, RG_FIN, 1) + 1; // batches finished by all, in order
      if (fin >= Atomics.load(ring, RG_WANT)) Atomics.notify(ring, RG_FIN);
    }
  }

  /** Start of a ring: no reason list sent yet. */
  resetExtras(): void {
    this.extras = null;
    this.extrasSent = 0;
  }
}
