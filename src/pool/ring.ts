/**
 * The replay ring: how ConntrackPool.replay() keeps its workers busy without a message or a
 * barrier per batch. The layout is declared here, once.
 *
 * The dispatching thread fills `depth` batches (PacketBatch, batch.ts) in turn, computes the flow
 * hash of every packet as it walks the batch (Dispatcher.flows) and writes the packet's party
 * (IX_PART, ringParty below) and the batch's fragment count (BH_FRAGS), then publishes the batch
 * by bumping RG_PUB; batch number s lives in slot s % depth. The parties are the pool's workers
 * (one long 'stream' task each) and, with a caller share, the dispatching thread itself (the last
 * party): each takes the batches in order, decides the packets marked with its number, and
 * publishes its progress (its RT_DONE word, the slot's counter; the last one to finish a batch
 * bumps RG_FIN). The dispatcher reports a batch, and refills its slot, once every party
 * finished it.
 *
 * Order per connection: a flow hashes to one worker, which takes batches in order. A batch with
 * fragments groups packets by address pair instead (dispatch.ts), which may move a flow to
 * another worker for that batch: so it is decided alone (every worker waits until all finished
 * the batches before it, and until all finished it before taking the next).
 *
 * Writers: RG_PUB, RG_END, RG_STOP and RG_WANT only the dispatcher; the task words of w only
 * worker w; RG_FIN and the slot counters every worker (Atomics.add; the dispatcher resets a
 * slot's counter before it publishes the slot again). Every word is read and written with
 * Atomics (they order the batches' plain words: results before RT_DONE and the slot counter, frames before RG_PUB).
 */

/**
 * Batches in the ring: deep enough that a worker rarely runs dry while the dispatching thread
 * waits for a core (a shared machine), at most RING_DATA_BYTES of frames in all.
 */
export const RING_DEPTH = 16;
/**
 * Frame bytes of the whole ring (1 MiB per batch): about 10 ms of two workers' work on full-size
 * segments, for the dispatching thread to be scheduled again before the workers run dry; on a
 * loaded machine that takes longer (8, 16 and 64 MiB measured alike there).
 */
export const RING_DATA_BYTES = 16 << 20;

/** Batches published so far (the dispatcher's Atomics.store + notify after filling one). */
export const RG_PUB = 0;
/** 1: nothing will be published after RG_PUB (end of capture, abort, error). */
export const RG_END = 1;
/** 1: leave now, even inside a batch's barrier (a worker died). */
export const RG_STOP = 2;
/** Batches every worker finished (bumped by the last worker to finish one: they finish in order). */
export const RG_FIN = 3;
/** The dispatcher sleeps until RG_FIN reaches this: workers notify only then (few wake-ups). */
export const RG_WANT = 4;
/** Per slot k: workers that finished the batch in it (Atomics.add; reset by the dispatcher). */
export const RG_SLOT0 = 8;
/** Per task (worker) w: RG_TASK0 + w * RT_WORDS. */
export const RG_TASK0 = RG_SLOT0 + RING_DEPTH;
/** Batches the worker finished (its results are written). */
export const RT_DONE = 0;
/** threadId of the worker that took the task (stored first: tells a dead task's thread). */
export const RT_THREAD = 1;
/** Its table worker record. */
export const RT_WID = 2;
/** Length in bytes of the JSON list of reason strings the registry lacked (ringExtraAt). */
export const RT_EXTRA_LEN = 3;
export const RT_WORDS = 4;
/** Per task: a byte area for that JSON list (rare: tests require registered reasons). */
export const RG_EXTRA_BYTES = 4096;

/**
 * Shares of the flow-hash space: party p decides the flows whose unsigned hash h has
 * bounds[p - 1] <= h < bounds[p]. The workers get equal shares; a caller share (the dispatching
 * thread deciding too: the last party) gets `callerShare` of the space. A flow keeps its party
 * for the whole ring, so each connection's packets are decided in capture order.
 */
export function ringBounds(workers: number, callerShare: number): Float64Array {
  const parts = workers + (callerShare > 0 ? 1 : 0);
  const b = new Float64Array(parts);
  const space = 2 ** 32;
  const perWorker = (space * (1 - callerShare)) / workers;
  for (let p = 0; p < workers; p++) b[p] = Math.floor(perWorker * (p + 1));
  b[parts - 1] = space; // above every hash
  return b;
}

/**
 * The reading thread's own work per packet (reading the file, the flow key, the lists,
 * reporting) relative to deciding one, as it shows with two deciding threads: 0.34 puts the
 * balance for two at a caller share of 0.33. At 0.3, `replay --workers 2` of synthetic
 * captures measured (CTSAB_TIMELINE, bench/README.md) 0.99 s of CPU on the reading thread
 * against 1.07 s on the worker (1 GiB) and 2.78 s against 3.14 s (3 GiB). Alone the reading
 * costs ~0.22 of deciding; the fit absorbs what two deciders add to every decision.
 */
export const READER_COST = 0.34;

/**
 * The caller share that balances `deciders` threads (the reading thread and deciders - 1
 * workers): the reader's share plus its reading work equals each worker's share. 0 when the
 * reading alone is a worker's load (then every decider should be a worker).
 */
export function callerShareFor(deciders: number): number {
  if (deciders < 2) return 0;
  const w = deciders - 1;
  return Math.max(0, (1 / w - READER_COST) / (1 + 1 / w));
}

/** The party of a flow hash (unsigned 32-bit) under ringBounds. */
export function ringParty(h: number, bounds: Float64Array): number {
  let p = 0;
  while (h >= bounds[p]!) p++;
  return p;
}

export function ringWords(tasks: number): number {
  return RG_TASK0 + tasks * RT_WORDS;
}

/** Byte offset of task w's reason list, after the words. */
export function ringExtraAt(tasks: number, w: number): number {
  return ringWords(tasks) * 4 + w * RG_EXTRA_BYTES;
}

export function ringBytes(tasks: number): number {
  return ringExtraAt(tasks, tasks);
}
