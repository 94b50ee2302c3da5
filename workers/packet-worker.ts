/**
 * A ConntrackPool worker (piscina). Attaches the shared table once per thread (from workerData),
 * then decides the packets of each task it is given, reading frames and writing results in the
 * batch's shared memory; the task's answer is only a small summary.
 */
import { threadId, workerData } from 'node:worker_threads';
import { BH_DONE, BH_FRAGS, PacketBatch, TASK_WORDS, TK_FROM, TK_PROGRESS, TK_THREAD, TK_TO, TK_WID } from '../src/pool/batch.js';
import { Conntrack } from '../src/track/core.js';
import type { PoolTask, PoolWorkerData, TaskSummary } from '../src/pool/pool.js';
import { ConntrackTable } from '../src/table/table.js';
import { BatchDecider, SECTION } from '../src/pool/decide.js';
import { TIMELINE, mark } from '../src/pool/timeline.js';
import { RG_END, RG_EXTRA_BYTES, RG_PUB, RG_STOP, RG_TASK0, RT_DONE, RT_THREAD, RT_WID, RT_WORDS, ringExtraAt } from '../src/pool/ring.js';
/** Longest sleep in a ring wait before checking RG_STOP again (ms). */
const WAIT_MS = 50;

mark('worker: modules loaded');
const init = workerData as PoolWorkerData;
const table = ConntrackTable.attach({ buffer: init.table });
// Reassembly queues shared by every worker of the pool: any of them may complete a datagram.
const ct = new Conntrack(table, init.defrag ? { defragStores: init.defrag } : {});
mark('worker: table attached');
let closed = false;
const decider = new BatchDecider(ct);

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
  decider.resetExtras();
  let done = 0;
  ct.beginBatch();
  try {
    for (let k = from; k < to; k++) {
      if (done === crashAt) process.exit(70); // test hook: die mid-task
      decider.decideOne(batch, i32[lists + k]!, task.task);
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
  return { wid: ct.wid, threadId, task: task.task, packets: done, extras: decider.extras };
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
 * party `task.task`, publish progress; return when the ring ends.
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
  decider.resetExtras();
  let packets = 0;
  mark('stream: task start');
  // CTSAB_TIMELINE: wall ms waiting for batches, how often.
  let tWait = 0, t0 = 0, waits = 0;
  const end = (): TaskSummary => {
    if (TIMELINE) mark(`stream: end packets=${packets} wait-wall=${tWait.toFixed(1)} waits=${waits}`);
    return summary(me, packets);
  };
  for (let s = 0; ; s++) {
    // Wait for batch s.
    if (TIMELINE) t0 = performance.now();
    for (;;) {
      if (Atomics.load(ring, RG_STOP) !== 0) return end();
      const pub = Atomics.load(ring, RG_PUB); // acquire: the batch's frames, index and parties
      if (pub > s) break;
      if (Atomics.load(ring, RG_END) !== 0 && Atomics.load(ring, RG_PUB) <= s) return end();
      if (TIMELINE) waits++;
      Atomics.wait(ring, RG_PUB, pub, WAIT_MS);
    }
    if (TIMELINE) { tWait += performance.now() - t0; if (s === 0) mark('stream: first batch published'); }
    const b = slots[s % depth]!;
    // A batch with fragments may move a flow to another party: decided alone.
    const frags = b.i32[BH_FRAGS]!;
    if (frags > 0 && !allDone(ring, parts, s)) return end();
    packets += decider.decideShare(b, me, packets, crashAt);
    if (TIMELINE && (s === 0 || s === 15 || s === 63)) mark(`stream: batch ${s} done`);
    decider.finishRingBatch(ring, extraBytes, me, s, parts, depth);
    if (frags > 0 && !allDone(ring, parts, s + 1)) return end();
  }
}

function summary(task: number, packets: number): TaskSummary {
  return { wid: ct.wid, threadId, task, packets, extras: decider.extras };
}

/**
 * Leave the table (pool shutdown): give the worker record back, then wait at the barrier until
 * every worker has arrived, so each of the pool's threads takes exactly one close task.
 */
function leave(task: PoolTask): TaskSummary {
  mark('worker: leave');
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
