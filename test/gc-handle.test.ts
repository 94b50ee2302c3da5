/**
 * The GC worker thread's handle (startGc / GcHandle in src/table/gc.ts): options checked on the
 * caller's thread, a destroy-hook module loaded in the GC thread, failures before and after the
 * thread is ready, a thread killed abruptly (crash recovery, stop() reporting the death), a stale
 * GC word, and bounded waits that fail with ERR_CT_TIMEOUT. A few short-lived threads, ~1 s.
 */
import test from 'ava';
import { BroadcastChannel } from 'node:worker_threads';

import { KILL_EXPIRED } from '../src/table/chains.js';
import { gcCounters, startGc, type GcOptions } from '../src/table/gc.js';
import { E_ID, H_COUNT, H_GC_BUSY_US, H_GC_DEATHS, H_GC_INTERVAL, H_GC_RUNS, H_GC_SWEEPS, H_GC_WID, W_ALIVE, WORKER_WORDS } from '../src/table/layout.js';
import { checkInvariants, formatInvariants } from '../src/table/invariants.js';
import { ConntrackTable } from '../src/table/table.js';
import { Conntrack } from '../src/track/core.js';
import { HOOK_CHANNEL } from './helpers/gc-hook.js';
import { udpOneWay } from './helpers/conns.js';

const FAST: GcOptions = { wallPerClock: 0.001 };

/** A table with `n` one-way UDP entries made at 0 (deadline 30,000); their ids. */
function filled(n: number): { table: ConntrackTable; ids: number[] } {
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const ids: number[] = [];
  for (let i = 0; i < n; i++) ids.push(table.i32[ct.chains.entry(udpOneWay(ct, i, 0).slot) + E_ID]!);
  ct.endBatch();
  ct.close();
  return { table, ids };
}

test('startGc refuses bad options on the calling thread, before any thread starts', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  t.throws(() => startGc(table, { budgetMs: 0 }), { message: /^gc option budgetMs: 0 is out of range/ });
  t.throws(() => startGc(table, { ...FAST, pressurePercent: 101 }), { message: /^gc option pressurePercent/ });
  t.is(Atomics.load(table.i32, H_GC_WID), 0);
});

test('a hook module runs in the GC thread and sees every removed entry; onDestroy gets the same pairs', async (t) => {
  const { table, ids } = filled(3);
  const seen: { id: number; why: number }[] = [];
  const ch = new BroadcastChannel(HOOK_CHANNEL);
  ch.onmessage = (m: unknown) => { seen.push((m as { data: { id: number; why: number } }).data); };
  const reported: [number, number][] = [];
  table.clock = 30_000;
  const gc = startGc(table, {
    ...FAST, hookModule: new URL('./helpers/gc-hook.js', import.meta.url), onDestroy: (id, why) => reported.push([id, why]),
  });
  try {
    await gc.ready;
    await gc.sweep();
    const until = Date.now() + 5000;
    while (seen.length < 3 && Date.now() < until) await new Promise((ok) => setTimeout(ok, 5));
  } finally {
    await gc.stop();
    ch.close();
  }
  t.deepEqual(seen.map((s) => s.id).sort((a, b) => a - b), [...ids].sort((a, b) => a - b));
  t.true(seen.every((s) => s.why === KILL_EXPIRED));
  t.deepEqual(reported.sort((a, b) => a[0] - b[0]), [...ids].sort((a, b) => a - b).map((id) => [id, KILL_EXPIRED]));
  t.false(gc.running);
  t.is(gc.death, null);
});

test('a hook module without createDestroyHook: ready rejects, stop() resolves, the GC word is free again', async (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const gc = startGc(table, { ...FAST, hookModule: new URL('./helpers/conns.js', import.meta.url).href });
  await t.throwsAsync(gc.ready, { message: /does not export createDestroyHook/ });
  // Let the thread finish leaving (its exit clears H_GC_STOP) before stop(): a stop request
  // written after that would stay for the next GC.
  const until = Date.now() + 10_000;
  while (gc.running && Date.now() < until) await new Promise((ok) => setTimeout(ok, 5));
  await gc.stop(); // it never ran: nothing to report
  t.false(gc.running);
  t.is(Atomics.load(table.i32, H_GC_WID), 0);
  t.is(gc.death, null, 'it left the table itself');
  // stop() of a GC that never started must not leave a stop request for the next one.
  const gc2 = startGc(table, FAST);
  try {
    await gc2.ready;
    await gc2.untilRuns(1, 5000);
    t.true(gc2.running);
  } finally {
    await gc2.stop();
  }
});

test('a failure after the GC started is thrown by stop()', async (t) => {
  const { table } = filled(2);
  table.clock = 30_000;
  const gc = startGc(table, { ...FAST, hookModule: new URL('./helpers/gc-hook-throws.js', import.meta.url) });
  t.true(Number.isInteger(await gc.ready));
  // Its first run removes an entry, the hook throws, the thread leaves the table and ends.
  const until = Date.now() + 10_000;
  while (gc.running && Date.now() < until) await new Promise((ok) => setTimeout(ok, 5));
  t.false(gc.running, 'the thread ended by itself');
  await t.throwsAsync(gc.stop(), { message: /destroy hook failed on purpose/ });
  t.is(gc.death, null, 'it left the table through close(): no crash recovery');
  t.is(Atomics.load(table.i32, H_GC_WID), 0);
  // The deletes the failing hook saw were finished: no half-done delete, no slot held back.
  const inv = checkInvariants(table);
  t.true(inv.ok, formatInvariants(inv));
  t.is(Atomics.load(table.i32, H_COUNT), 0);
});

test('a GC thread killed abruptly is recovered, stop() reports the death; a stale GC word does not block the next one', async (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const gc = startGc(table, FAST);
  const wid = await gc.ready;
  t.true(gc.running);
  t.is(Atomics.load(table.i32, H_GC_WID), wid + 1);
  await gc.terminate();
  t.false(gc.running);
  t.truthy(gc.death);
  t.is(gc.counters.deaths, 1);
  await t.throwsAsync(gc.stop(), { message: /^the GC worker died \(exit code 1\) without leaving the table; recovered: yes$/ });
  t.is(Atomics.load(table.i32, H_GC_WID), 0);
  t.is(Atomics.load(table.i32, table.sec.workers + wid * WORKER_WORDS + W_ALIVE), 0);

  // A GC word naming a released record (its GC gone without clearing it) is stale: cleared.
  Atomics.store(table.i32, H_GC_WID, 5 + 1);
  const gc2 = startGc(table, FAST);
  const wid2 = await gc2.ready;
  t.is(Atomics.load(table.i32, H_GC_WID), wid2 + 1);
  // One naming a live record is not: refused.
  t.throws(() => startGc(table, FAST), { message: /already runs/ });
  await gc2.untilRuns(gc2.counters.runs + 1);
  await gc2.stop();
  await gc2.stop(); // twice: the same stop
  t.is(Atomics.load(table.i32, H_GC_WID), 0);
});

test('bounded waits: a count not reached in time fails with ERR_CT_TIMEOUT, naming it', async (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const gc = startGc(table, { minIntervalMs: 60_000, maxIntervalMs: 60_000 });
  try {
    await gc.ready;
    await gc.untilRuns(1);
    const runs = gc.counters.runs;
    t.true(runs >= 1);
    const t0 = Date.now();
    await t.throwsAsync(gc.untilSweeps(gc.counters.sweeps + 100, 40), { code: 'ERR_CT_TIMEOUT', message: /^GC did not reach \d+ \(counter \d+\) in 40 ms$/ });
    t.true(Date.now() - t0 >= 39);
    await t.throwsAsync(gc.untilRuns(runs + 100, 20), { code: 'ERR_CT_TIMEOUT' });
  } finally {
    await gc.stop();
  }
});

test('a GC thread ended before it was ready: ready rejects, stop() resolves, nothing to recover', async (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const gc = startGc(table, FAST);
  await gc.terminate();
  await t.throwsAsync(gc.ready, { message: /^GC worker exited before it was ready$/ });
  await gc.stop();
  t.false(gc.running);
  t.is(gc.death, null);
  t.is(gc.counters.deaths, 0);
});

test('gcCounters reads the GC\'s shared words: runs and sweeps unsigned, busy time in ms', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const i32 = table.i32;
  Atomics.store(i32, H_GC_RUNS, -1); // 2^32 - 1 after wrapping
  Atomics.store(i32, H_GC_SWEEPS, -2);
  Atomics.store(i32, H_GC_INTERVAL, 7000);
  Atomics.store(i32, H_GC_BUSY_US, 2500);
  Atomics.store(i32, H_GC_DEATHS, 3);
  t.deepEqual(gcCounters(table), { runs: 4294967295, sweeps: 4294967294, intervalMs: 7000, busyMs: 2.5, deaths: 3 });
});

test('wake() cuts the GC\'s sleep short: a run within the minimum interval, not the 3 s sleep', async (t) => {
  // An empty table: the interval is maxIntervalMs (60 s of table clock = 3 wall s here); a wake
  // brings the next run at minIntervalMs (1 s = 50 wall ms) after the last one.
  const table = ConntrackTable.create({ max: 64 });
  const gc = startGc(table, { minIntervalMs: 1000, maxIntervalMs: 60_000, wallPerClock: 0.05 });
  try {
    await gc.ready;
    await gc.untilRuns(1);
    const runs = gc.counters.runs;
    gc.wake();
    await gc.untilRuns(runs + 1, 2000); // throws ERR_CT_TIMEOUT if the wake was not seen
    t.true(gc.counters.runs > runs);
  } finally {
    await gc.stop();
  }
});

test('startGc refuses while a GC runs in a record other than 0 (its record, not record 0, is checked)', async (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const holder = table.registerWorker(); // record 0 taken, so the GC gets record 1
  const gc = startGc(table, FAST);
  try {
    const wid = await gc.ready;
    t.is(wid, 1);
    table.releaseWorker(holder); // record 0 free again: only record 1 tells that a GC runs
    t.throws(() => startGc(table, FAST), { message: /already runs/ });
    t.is(Atomics.load(table.i32, H_GC_WID), wid + 1, 'the running GC\'s word is kept');
  } finally {
    await gc.stop();
  }
});
