/**
 * The machine's own N-thread ceiling: a pure compute loop on 1 and on N threads at once (no
 * shared memory), N-thread throughput ÷ 1-thread throughput. A 2w ÷ 1w figure means nothing
 * above it (bench/replay-speed.ts, bench/replay-scale.ts).
 */
import { Worker } from 'node:worker_threads';
import { median } from './stats.js';

/**
 * A pure compute loop on `threads` threads at once: iterations per second. About a second per
 * thread on a quiet machine, as long as a replay: on a loaded one, short bursts of two threads
 * were served far better than seconds of them.
 */
export async function ceiling(threads: number, iters = 300_000_000): Promise<number> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    let h = workerData.seed | 0;
    const t0 = performance.now();
    for (let i = 0; i < workerData.iters; i++) { h ^= h >>> 15; h = Math.imul(h, 0x2c1b3c6d) + i | 0; }
    parentPort.postMessage({ ms: performance.now() - t0, h });`;
  const ws = Array.from({ length: threads }, (_, k) => new Worker(code, { eval: true, workerData: { iters, seed: k + 1 } }));
  const ms = await Promise.all(ws.map((w) => new Promise<number>((res, rej) => {
    w.once('message', (m: { ms: number }) => res(m.ms));
    w.once('error', rej);
  })));
  await Promise.all(ws.map((w) => w.terminate()));
  return (threads * iters) / (Math.max(...ms) / 1000);
}

/** Median of `rounds` alternating 1-thread and n-thread runs: the n-thread ÷ 1-thread ratio. */
export async function ceilingRatio(n: number, rounds = 2): Promise<number> {
  const a: number[] = [], b: number[] = [];
  for (let k = 0; k < rounds; k++) { a.push(await ceiling(1)); b.push(await ceiling(n)); }
  return median(b) / median(a);
}
