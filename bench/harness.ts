/**
 * Runs bench jobs on N worker threads at once (workers/bench-worker.ts): every worker attaches
 * first, then all start together on one shared word; the rate of a run is all packets over the
 * longest worker's own elapsed time. `inline` runs the jobs one after another on this thread
 * instead (for profiling: the packet code then shows in the main thread's profile).
 */
import { Worker } from 'node:worker_threads';
import { prepare, type Job, type JobResult } from './engine.js';

type WaitAsyncFn = (a: Int32Array, i: number, v: number, t?: number) => { async: boolean; value: Promise<string> | string };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsyncFn }).waitAsync;

const WORKER_URL = new URL('../workers/bench-worker.js', import.meta.url);

export interface RunResult {
  packets: number;
  /** Longest worker elapsed time, ms. */
  ms: number;
  /** Packets per second over all workers. */
  rate: number;
  results: JobResult[];
}

function combine(results: JobResult[]): RunResult {
  const packets = results.reduce((a, r) => a + r.packets, 0);
  const ms = Math.max(...results.map((r) => r.ms));
  return { packets, ms, rate: packets / (ms / 1000), results };
}

export class BenchPool {
  private readonly workers: Worker[] = [];

  constructor(readonly size: number, readonly inline = false) {
    if (!inline) for (let i = 0; i < size; i++) this.workers.push(new Worker(WORKER_URL));
  }

  /** Run one job per worker (jobs.length <= size), all started together. */
  async run(jobs: Job[]): Promise<RunResult> {
    if (this.inline) {
      const results: JobResult[] = [];
      for (const j of jobs) {
        const p = prepare(j);
        results.push(p.run());
        p.close();
      }
      return combine(results);
    }
    if (jobs.length > this.workers.length) throw new Error(`${jobs.length} jobs for ${this.workers.length} workers`);
    const ctlBuf = new SharedArrayBuffer(8);
    const ctl = new Int32Array(ctlBuf);
    let failed = false;
    const done = jobs.map((job, i) => new Promise<JobResult>((ok, fail) => {
      const w = this.workers[i]!;
      const onErr = (e: Error): void => { failed = true; fail(e); };
      w.once('error', onErr);
      w.once('message', (m: { ok: boolean; result?: JobResult; error?: string }) => {
        w.off('error', onErr);
        if (m.ok) ok(m.result!);
        else { failed = true; fail(new Error(`bench worker ${i}: ${m.error}`)); }
      });
      w.postMessage({ job, ctl: ctlBuf });
    }));
    // Wait until every worker attached (they count themselves in word 0), or one failed (it
    // never will: start the others anyway so they finish, and the run rejects below).
    for (;;) {
      const n = Atomics.load(ctl, 0);
      if (n >= jobs.length || failed) break;
      const r = waitAsync(ctl, 0, n, 100);
      if (r.async) await r.value;
    }
    Atomics.store(ctl, 1, 1); // go
    Atomics.notify(ctl, 1);
    return combine(await Promise.all(done));
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
