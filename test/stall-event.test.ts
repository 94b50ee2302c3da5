/**
 * Stall events (liveness.ts, ecache.ts): a thread found stalled is reported to every subscriber
 * as a typed StallEvent ('stall' listeners), besides the statistic and the process warning.
 * Real worker threads; every wait bounded.
 */
import test from 'ava';
import { Worker } from 'node:worker_threads';
import { KILL_DELETE } from '../src/table/chains.js';
import { StallEvent, subscribeEvents } from '../src/table/ecache.js';
import { ConntrackTable } from '../src/table/table.js';
import { Conntrack } from '../src/track/core.js';
import { udpOneWay } from './helpers/conns.js';
import type { FaultWorkerData } from './helpers/fault-worker.js';

const WORKER = new URL('./helpers/fault-worker.js', import.meta.url);
const sleep = (ms: number): Promise<void> => new Promise((ok) => setTimeout(ok, ms));

/** Short-lived connections: create, delete, a batch per 64. */
function churn(ct: Conntrack, n: number, base: number): void {
  ct.beginBatch();
  for (let i = 0; i < n; i++) {
    const v = udpOneWay(ct, base + (i % 60000), 1000);
    if (v.slot >= 0) ct.chains.kill(v.slot, KILL_DELETE);
    if (i % 64 === 63) { ct.endBatch(); ct.beginBatch(); }
  }
  ct.endBatch();
}

test('a packet worker stalled inside a batch is reported to subscribers as a stall event', async (t) => {
  const table = ConntrackTable.create({ max: 4096, stallMs: 200 });
  const sub = subscribeEvents(table);
  const stalls: StallEvent[] = [];
  sub.on('stall', (ev) => stalls.push(ev));
  const control = new SharedArrayBuffer(4);
  const w = new Worker(WORKER, { workerData: { buffer: table.buffer, mode: 'stall', control } satisfies FaultWorkerData });
  w.on('error', () => {});
  const ready = await Promise.race([
    new Promise<{ wid: number }>((ok) => w.on('message', (m: { type: string; wid: number }) => { if (m.type === 'ready') ok(m); })),
    sleep(20000).then(() => null),
  ]);
  t.truthy(ready, 'the worker is inside its batch');
  const readyAt = performance.now();
  const ct = new Conntrack(table);
  churn(ct, 500, 0); // before the stall time: it holds our grace periods up, nobody reports it
  sub.poll();
  if (performance.now() - readyAt < 150) t.is(stalls.length, 0, 'no report before the stall time');
  else t.log('machine too slow to check that nothing is reported before the stall time');
  await sleep(300);
  churn(ct, 500, 1000); // our reclaim finds it silent for longer than the stall time
  sub.poll();
  t.is(stalls.length, 1, 'one report for one stall');
  const ev = stalls[0]!;
  t.true(ev instanceof StallEvent);
  t.is(ev.event, 'stall');
  t.is(ev.kind, 'worker');
  t.is(ev.id, ready!.wid, 'names the stalled worker');
  t.is(ev.by, ct.wid, 'and the thread that found it');
  t.is(ev.stallMs, 200);
  t.true(ev.silentMs > 200 && ev.silentMs < 20000, `silent ${ev.silentMs} ms`);
  t.deepEqual(Object.keys(ev.toJSON()), ['event', 'kind', 'id', 'silentMs', 'stallMs', 'by']);
  t.is(sub.stallCount, 1);
  t.is(table.stats().total['stall_expelled'], 1, 'the statistic agrees');
  // Events of other types go on as before; the stall record is not delivered as a connection event.
  const evs = sub.poll();
  t.false(evs.some((e) => (e as unknown) instanceof StallEvent));
  Atomics.store(new Int32Array(control), 0, 1);
  Atomics.notify(new Int32Array(control), 0);
  await w.terminate();
  ct.close();
  sub.close();
});

test('a subscriber that stops polling while it holds the DESTROY ring up is reported as a stall', async (t) => {
  const table = ConntrackTable.create({ max: 4096, stallMs: 100, events: { ring: 1024, destroyRing: 64 } });
  const watcher = subscribeEvents(table);
  const stalls: StallEvent[] = [];
  watcher.once('stall', (ev) => stalls.push(ev));
  const silent = subscribeEvents(table); // never polls
  const ct = new Conntrack(table);
  churn(ct, 50, 0); // less than the DESTROY ring: nobody is held up
  watcher.poll();
  t.is(stalls.length, 0);
  await sleep(150);
  watcher.poll(); // the watcher keeps up: only the silent one is stalled
  // The ring fills for the silent one; it has not polled for the stall time: overrun, reported.
  for (let i = 0; i < 10 && stalls.length === 0; i++) {
    churn(ct, 100, 1000 + i * 100);
    watcher.poll();
  }
  t.is(stalls.length, 1);
  t.is(stalls[0]!.kind, 'subscriber');
  t.is(stalls[0]!.id, silent.index, 'names its subscriber record');
  t.true(stalls[0]!.silentMs > 100);
  silent.poll();
  t.true(silent.dropped > 0, 'it finds its backlog dropped, with a count');
  t.is(watcher.dropped, 0, 'the watcher lost nothing');
  ct.close();
  watcher.close();
  silent.close();
});
