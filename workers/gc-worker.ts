/**
 * The GC worker thread: runs GcEngine (src/table/gc.ts) in bounded slices and sleeps between them on
 * the H_GC_WAKE futex word. Started by startGc(); stopped through H_GC_STOP.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { E_ID, H_GC_STOP, H_GC_WAKE } from '../src/table/layout.js';
import {
  GcEngine, gcConfig, type DestroyHookFactory, type GcMessage, type GcWorkerData,
} from '../src/table/gc.js';
import type { DestroyHook } from '../src/table/chains.js';

function post(m: GcMessage, transfer?: ArrayBuffer[]): void {
  parentPort?.postMessage(m, transfer);
}

async function main(): Promise<void> {
  const data = workerData as GcWorkerData;
  const cfg = gcConfig(data.opts);
  let engine: GcEngine;
  try {
    engine = new GcEngine(data.handle, data.opts);
  } catch (err) {
    post({ type: 'error', message: err instanceof Error ? err.message : String(err) });
    return;
  }
  const i32 = engine.table.i32;
  try {
    let hook: DestroyHook | null = null;
    if (data.hookModule !== null) {
      const mod = (await import(data.hookModule)) as { createDestroyHook?: DestroyHookFactory };
      if (typeof mod.createDestroyHook !== 'function') {
        throw new Error(`${data.hookModule} does not export createDestroyHook`);
      }
      hook = mod.createDestroyHook(engine.table, engine.chains);
    }
    // Destroyed (id, why) pairs of the current run; grown by doubling, sent once per run.
    let pairs = new Int32Array(data.report ? 1024 : 0);
    let n = 0;
    const h = hook;
    if (h || data.report) {
      engine.onDestroy = (e, why) => {
        if (h) h(e, why);
        if (!data.report) return;
        if (n + 2 > pairs.length) {
          const bigger = new Int32Array(pairs.length * 2);
          bigger.set(pairs);
          pairs = bigger;
        }
        pairs[n++] = i32[e + E_ID]!; // fixed while the entry is linked; we still hold it
        pairs[n++] = why;
      };
    }
    post({ type: 'ready', wid: engine.wid });

    // Wake counter value seen last; a different value means an inserter asked for a run.
    let wakeSeen = Atomics.load(i32, H_GC_WAKE);
    const wakeGapMs = cfg.minIntervalMs * cfg.wallPerClock;
    // H_GC_STOP: Atomics.store'd by stop() before its wake.
    while (Atomics.load(i32, H_GC_STOP) === 0) {
      const t0 = performance.now();
      const r = engine.run();
      if (n > 0) {
        const out = pairs.slice(0, n);
        n = 0;
        post({ type: 'destroyed', pairs: out }, [out.buffer as ArrayBuffer]);
      }
      let deadline = t0 + r.sleepWallMs;
      // A wake cuts the sleep short, but woken runs come at most once per minimum interval.
      const wakeAt = t0 + Math.min(r.sleepWallMs, wakeGapMs);
      for (;;) {
        if (Atomics.load(i32, H_GC_STOP) !== 0) break; // stop requested
        const w = Atomics.load(i32, H_GC_WAKE); // the futex word's current value
        if (w !== wakeSeen) {
          wakeSeen = w;
          if (wakeAt < deadline) deadline = wakeAt;
        }
        const left = deadline - performance.now();
        if (left <= 0) break;
        // Sleep until the interval ends or an inserter / stop() changes and notifies the word.
        Atomics.wait(i32, H_GC_WAKE, w, left);
      }
    }
  } catch (err) {
    post({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  } finally {
    Atomics.store(i32, H_GC_STOP, 0); // cleared before close() frees H_GC_WID for the next GC
    engine.close();
    post({ type: 'closed' });
  }
}

void main();
