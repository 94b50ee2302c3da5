/**
 * A bench worker thread: for each job message it attaches what the job needs, says it is ready
 * (a counter in the control buffer), waits for the start word, runs the packet loop of
 * bench/engine.ts over frames in shared memory, and posts the result. One message per job, so
 * messaging costs nothing per packet.
 */
import { parentPort } from 'node:worker_threads';
import { prepare, type Job } from '../bench/engine.js';

/** Control words (Int32Array over `ctl`). */
export const CTL_READY = 0;
export const CTL_GO = 1;

export interface BenchWorkerMessage {
  job: Job;
  ctl: SharedArrayBuffer;
}

parentPort?.on('message', (m: BenchWorkerMessage) => {
  try {
    const ctl = new Int32Array(m.ctl);
    const p = prepare(m.job);
    Atomics.add(ctl, CTL_READY, 1); // counted by the harness
    Atomics.notify(ctl, CTL_READY);
    while (Atomics.load(ctl, CTL_GO) === 0) Atomics.wait(ctl, CTL_GO, 0, 1000); // the start word
    const r = p.run();
    p.close();
    parentPort?.postMessage({ ok: true, result: r }, r.lat ? [r.lat.buffer as ArrayBuffer] : []);
  } catch (err) {
    parentPort?.postMessage({ ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
});
