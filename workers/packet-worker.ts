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

/** Packets per read-side section: reclamation may advance between sections. */
const SECTION = 256;

const init = workerData as PoolWorkerData;
const table = ConntrackTable.attach({ buffer: init.table });
// Reassembly queues shared by every worker of the pool: any of them may complete a datagram.
const ct = new Conntrack(table, init.defrag ? { defragStores: init.defrag } : {});
let closed = false;

function decide(task: PoolTask): TaskSummary {
  const batch = PacketBatch.attach({ buffer: task.batch, data: task.data });
  const i32 = batch.i32;
  const u32 = batch.u32;
  const bytes = batch.bytes;
  const { index, results, lists } = batch.sec;
  const tr = batch.sec.tasks + task.task * TASK_WORDS;
  // Published first, so that after a crash the pool can tell which thread held this task.
  Atomics.store(i32, tr + TK_WID, ct.wid);
  Atomics.store(i32, tr + TK_THREAD, threadId);
  const from = i32[tr + TK_FROM]!;
  const to = i32[tr + TK_TO]!;
  const crashAt = task.crashAfter ?? -1;
  let extras: string[] | null = null;
  let done = 0;
  ct.beginBatch();
  try {
    for (let k = from; k < to; k++) {
      if (done === crashAt) process.exit(70); // test hook: die mid-task
      const i = i32[lists + k]!;
      const x = index + i * IX_WORDS;
      ct.eventTag = i32[x + IX_OFF]!; // events of this packet carry its frame offset (capture order in a replay)
      ct.fragTag = ct.eventTag; // and so do fragments held for reassembly
      const v = ct.frame(i32[x + IX_LINKTYPE]!, bytes, u32[x + IX_OFF]!, i32[x + IX_LEN]!, i32[x + IX_NOW]!,
        i32[x + IX_ZONE]!, i32[x + IX_NS]!);
      const r = results + i * RS_WORDS;
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
      i32[r + RS_TASK] = task.task;
      // The slot is valid until endBatch: read its id now (it may be reused after the batch).
      i32[r + RS_ID] = v.slot >= 0 ? table.i32[table.sec.entries + v.slot * ENTRY_WORDS + E_ID]! : 0;
      i32[r + RS_FLAGS] = RF_DONE | (v.drop ? RF_DROP : 0) | (v.nat << RF_NAT_SHIFT) | (v.frag << RF_FRAG_SHIFT);
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
  return decide(task);
}
