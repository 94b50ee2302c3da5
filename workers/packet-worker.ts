/**
 * A ConntrackPool worker (piscina). Attaches the shared table once per thread (from workerData),
 * then decides the packets of each task it is given, reading frames and writing results in the
 * batch's shared memory; the task's answer is only a small summary.
 */
import { threadId, workerData } from 'node:worker_threads';
import {
  BH_DONE, IX_LEN, IX_LINKTYPE, IX_NOW, IX_NS, IX_OFF, IX_WORDS, IX_ZONE, PacketBatch, RF_DONE, RF_DROP, RF_NAT_SHIFT,
  RF_FRAG_SHIFT, RS_DIR, RS_FLAGS, RS_ID, RS_L4, RS_REASON, RS_SLOT, RS_STATE, RS_TASK, RS_TCP, RS_WORDS, TASK_WORDS, TK_FROM,
  TK_PROGRESS, TK_THREAD, TK_TO, TK_WID,
} from '../src/pool/batch.js';
import { Conntrack } from '../src/track/core.js';
import type { PoolTask, PoolWorkerData, TaskSummary } from '../src/pool/pool.js';
import { REASON_EXTRA, REASON_OTHER, reasonCode } from '../src/track/reasons.js';
import { ConntrackTable } from '../src/table/table.js';
import { ENTRY_WORDS, E_ID } from '../src/table/layout.js';
import { Dispatcher } from '../src/pool/dispatch.js';
import { RG_END, RG_EXTRA_BYTES, RG_FIN, RG_PUB, RG_SLOT0, RG_STOP, RG_TASK0, RG_WANT, RT_DONE, RT_EXTRA_LEN, RT_THREAD, RT_WID, RT_WORDS, ringExtraAt } from '../src/pool/ring.js';

/** Packets per read-side section: reclamation may advance between sections. */
const SECTION = 256;
/** Longest sleep in a ring wait before checking RG_STOP again (ms). */
const WAIT_MS = 50;

const init = workerData as PoolWorkerData;
const table = ConntrackTable.attach({ buffer: init.table });
// Reassembly queues shared by every worker of the pool: any of them may complete a datagram.
const ct = new Conntrack(table, init.defrag ? { defragStores: init.defrag } : {});
let closed = false;
/** The replay ring's partitioner (flow hashes; never NAT: the ring is not used with NAT rules). */
const dispatcher = new Dispatcher('flow');

/** Reason strings the registry lacks, met by this thread (their codes: REASON_EXTRA + index). */
let extras: string[] | null = null;

/** Decide packet i of the batch and write its result words; `task` goes to RS_TASK. */
function decideOne(batch: PacketBatch, i: number, task: number): void {
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
    extras ??= [];
    let e = extras.indexOf(v.reason);
    if (e < 0) e = extras.push(v.reason) - 1;
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
  i32[r + RS_ID] = v.slot >= 0 ? table.i32[table.sec.entries + v.slot * ENTRY_WORDS + E_ID]! : 0;
  i32[r + RS_FLAGS] = RF_DONE | (v.drop ? RF_DROP : 0) | (v.nat << RF_NAT_SHIFT) | (v.frag << RF_FRAG_SHIFT);
}

function decide(task: PoolTask): TaskSummary {
  const batch = PacketBatch.attach({ buffer: task.batch, data: task.data });
  const i32 = batch.i32;
  const lists = batch.sec.lists;
  const tr = batch.sec.tasks + task.task * TASK_WORDS;
  // Published first, so that after a crash the pool can tell which thread held this task.
  Atomics.store(i32, tr + TK_WID, ct.wid);
  Atomics.store(i32, tr + TK_THREAD, threadId);
  const from = i32[tr + TK_FROM]!;
  const to = i32[tr + TK_TO]!;
  const crashAt = task.crashAfter ?? -1;
  extras = null;
  let done = 0;
  ct.beginBatch();
  try {
    for (let k = from; k < to; k++) {
      if (done === crashAt) process.exit(70); // test hook: die mid-task
      decideOne(batch, i32[lists + k]!, task.task);
      done++;
      if (done % SECTION === 0) {
        ct.endBatch();
        // Progress for the pool after a crash: results before this point are complete.
        Atomics.store(i32, tr + TK_PROGRESS, done);
        ct.beginBatch();
      }
    }
  } finally {
    ct.endBatch();
  }
  Atomics.store(i32, tr + TK_PROGRESS, done); // read by the pool if a later task of the batch fails
  // Release: every result word above is visible to whoever sees this count (the dispatcher).
  Atomics.add(i32, BH_DONE, done);
  return { wid: ct.wid, threadId, task: task.task, packets: done, extras };
}

/** Wait until every task's RT_DONE reached `k` (or the pool said stop: false). */
function allDone(ring: Int32Array, parts: number, k: number): boolean {
  for (let w = 0; w < parts; w++) {
    const at = RG_TASK0 + w * RT_WORDS + RT_DONE;
    for (;;) {
      const d = Atomics.load(ring, at); // pairs with worker w's store after its results
      if (d >= k) break;
      if (Atomics.load(ring, RG_STOP) !== 0) return false;
      Atomics.wait(ring, at, d, WAIT_MS);
    }
  }
  return true;
}

/**
 * A replay's long task (ring.ts): take every published batch in order, decide the packets of
 * partition `task.task`, publish progress; return when the ring ends.
 */
function stream(task: PoolTask): TaskSummary {
  const ring = new Int32Array(task.ring!);
  const slots = task.slots!.map((h) => PacketBatch.attach(h));
  const depth = slots.length;
  const me = task.task;
  const parts = task.parties!;
  const crashAt = task.crashAfter ?? -1;
  const rt = RG_TASK0 + me * RT_WORDS;
  Atomics.store(ring, rt + RT_WID, ct.wid);
  Atomics.store(ring, rt + RT_THREAD, threadId); // before deciding anything (a crash names it)
  const extraBytes = new Uint8Array(task.ring!, ringExtraAt(parts, me), RG_EXTRA_BYTES);
  extras = null;
  let extrasSent = 0;
  let flows = new Int32Array(0);
  let packets = 0;
  for (let s = 0; ; s++) {
    // Wait for batch s.
    for (;;) {
      if (Atomics.load(ring, RG_STOP) !== 0) return summary(me, packets);
      const pub = Atomics.load(ring, RG_PUB); // acquire: the batch's frames and index
      if (pub > s) break;
      if (Atomics.load(ring, RG_END) !== 0 && Atomics.load(ring, RG_PUB) <= s) return summary(me, packets);
      Atomics.wait(ring, RG_PUB, pub, WAIT_MS);
    }
    const b = slots[s % depth]!;
    const n = b.count;
    if (flows.length < n) flows = new Int32Array(b.capacity);
    const frags = dispatcher.flows(b, flows);
    // A batch with fragments may move a flow to another worker: decided alone.
    if (frags > 0 && !allDone(ring, parts, s)) return summary(me, packets);
    let inSection = 0;
    ct.beginBatch();
    try {
      for (let i = 0; i < n; i++) {
        if ((flows[i]! >>> 0) % parts !== me) continue;
        if (packets === crashAt) process.exit(70); // test hook: die mid-batch
        decideOne(b, i, me);
        packets++;
        if (++inSection === SECTION) {
          ct.endBatch(); // reclamation may advance between sections
          inSection = 0;
          ct.beginBatch();
        }
      }
    } finally {
      ct.endBatch();
    }
    const ex = extras as string[] | null; // decideOne may have added to it
    if (ex !== null && ex.length !== extrasSent) {
      // Before RT_DONE: the dispatcher reads the list when it reports this batch.
      const json = new TextEncoder().encode(JSON.stringify(ex));
      if (json.length <= RG_EXTRA_BYTES) {
        extraBytes.set(json);
        Atomics.store(ring, rt + RT_EXTRA_LEN, json.length);
      }
      extrasSent = ex.length;
    }
    // Release: this batch's result words are visible to whoever sees the new count.
    Atomics.store(ring, rt + RT_DONE, s + 1);
    Atomics.notify(ring, rt + RT_DONE); // a worker waiting at a fragment batch
    // The last worker to finish the batch counts it finished; the dispatcher sleeps until a
    // count it names (RG_WANT), so it is woken once per few batches, not per worker and batch.
    if (Atomics.add(ring, RG_SLOT0 + (s % depth), 1) + 1 === parts) {
      const fin = Atomics.add(ring, RG_FIN, 1) + 1;
      if (fin >= Atomics.load(ring, RG_WANT)) Atomics.notify(ring, RG_FIN);
    }
    if (frags > 0 && !allDone(ring, parts, s + 1)) return summary(me, packets);
  }
}

function summary(task: number, packets: number): TaskSummary {
  return { wid: ct.wid, threadId, task, packets, extras };
}

/**
 * Leave the table (pool shutdown): give the worker record back, then wait at the barrier until
 * every worker has arrived, so each of the pool's threads takes exactly one close task.
 */
function leave(task: PoolTask): TaskSummary {
  const wid = ct.wid;
  if (!closed) {
    closed = true;
    ct.close();
  }
  const bar = new Int32Array(task.barrier!);
  // Count this thread in; the last one wakes the others.
  if (Atomics.add(bar, 0, 1) + 1 >= task.parties!) Atomics.notify(bar, 0);
  for (let spins = 0; spins < 50; spins++) {
    const seen = Atomics.load(bar, 0); // arrivals so far
    if (seen >= task.parties!) break;
    Atomics.wait(bar, 0, seen, 100);
  }
  return { wid, threadId, task: -1, packets: 0, extras: null };
}

export default function run(task: PoolTask): TaskSummary {
  if (task.kind === 'close') return leave(task);
  if (closed) throw new Error(`packet worker ${threadId} has left the table`);
  return task.kind === 'stream' ? stream(task) : decide(task);
}
