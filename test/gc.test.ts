/**
 * The GC worker thread (src/table/gc.ts, workers/gc-worker.ts) on real tables filled with real packets:
 * expiry, early_drop on insert, the GC's eviction above 95% of nf_conntrack_max, and the soft
 * timeout for ASSURED entries. The table clock is driven by the test (H_CLOCK); the GC sleeps
 * a thousandth of a wall ms per table ms, so its 1..60 s intervals are 1..60 wall ms.
 */
import test from 'ava';

import { KILL_EXPIRED, KILL_GC_EVICT } from '../src/table/chains.js';
import { Conntrack } from '../src/track/core.js';
import { GcEngine, KILL_SOFT_RECYCLE, idleLowerBound, startGc, wakeGc, type GcOptions } from '../src/table/gc.js';
import {
  E_ID, E_STATUS, E_TIMEOUT, H_COUNT, H_FREE_COUNT, H_GC_WID, IPS_ASSURED, IPS_CONFIRMED, IPS_DYING,
  W_ALIVE, W_CACHE_COUNT, W_LIMBO_COUNT, WORKER_WORDS,
} from '../src/table/layout.js';
import { ConntrackTable } from '../src/table/table.js';
import { CT_INVALID, CT_NEW } from '../src/track/verdict.js';
import { tcpClosing, tcpEstablished, tcpSyn, udpAssured, udpOneWay } from './helpers/conns.js';

const FAST: GcOptions = { wallPerClock: 0.001 };

function count(table: ConntrackTable): number {
  return Atomics.load(table.i32, H_COUNT);
}

/** Slots on the shared free list or in some worker's cache; and slots still in some limbo. */
function freeSlots(table: ConntrackTable): { free: number; limbo: number } {
  const i32 = table.i32;
  let free = Atomics.load(i32, H_FREE_COUNT);
  let limbo = 0;
  for (let w = 0; w < table.maxWorkers; w++) {
    const base = table.sec.workers + w * WORKER_WORDS;
    free += Atomics.load(i32, base + W_CACHE_COUNT);
    limbo += Atomics.load(i32, base + W_LIMBO_COUNT);
  }
  return { free, limbo };
}

function stat(table: ConntrackTable, name: string): number {
  return table.stats().total[name]!;
}

function live(table: ConntrackTable, ct: Conntrack, slot: number): boolean {
  const s = Atomics.load(table.i32, ct.chains.entry(slot) + E_STATUS);
  return (s & (IPS_CONFIRMED | IPS_DYING)) === IPS_CONFIRMED;
}

const emptiesExpired = test.macro(async (t, discipline: 'noref' | 'refcount') => {
  const table = ConntrackTable.create({ max: 2048, discipline });
  const ct = new Conntrack(table);
  const ids = new Set<number>();
  ct.beginBatch();
  for (let i = 0; i < 1500; i++) {
    const v = udpOneWay(ct, i, 0);
    t.is(v.state, CT_NEW);
    ids.add(table.i32[ct.chains.entry(v.slot) + E_ID]!);
  }
  ct.endBatch();
  t.is(count(table), 1500);
  table.clock = 30_001; // nf_conntrack_udp_timeout is 30 s

  const destroyed = new Map<number, number>();
  const gc = startGc(table, { ...FAST, onDestroy: (id, why) => destroyed.set(id, why) });
  const wid = await gc.ready;
  t.is(Atomics.load(table.i32, H_GC_WID), wid + 1);
  await gc.sweep();
  t.is(count(table), 0);
  t.is(stat(table, 'expired'), 1500);
  t.is(table.stats().perWorker.find((r) => r.expired! > 0)?.expired, 1500, 'counted in the GC\'s own row');
  // Nothing left to expire: the adaptive interval goes to its maximum.
  t.is(gc.counters.intervalMs, 60_000);
  await gc.stop();
  t.is(Atomics.load(table.i32, H_GC_WID), 0);
  t.is(Atomics.load(table.i32, table.sec.workers + wid * WORKER_WORDS + W_ALIVE), 0, 'GC record released');

  t.is(destroyed.size, 1500, 'destroy hook called once per entry');
  for (const id of ids) t.is(destroyed.get(id), KILL_EXPIRED);
  const s = freeSlots(table);
  t.is(s.limbo, 0, 'grace periods completed');
  t.is(s.free, table.capacity, 'every slot is free again');
  ct.close();
});
test('the GC worker empties a table of expired entries and every slot comes back (noref)', emptiesExpired, 'noref');
test('the GC worker empties a table of expired entries and every slot comes back (refcount)', emptiesExpired, 'refcount');

test('the GC interval adapts to the shortest remaining lifetime', async (t) => {
  const table = ConntrackTable.create({ max: 256 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  for (let i = 0; i < 10; i++) udpOneWay(ct, i, 0); // 30 s left each
  for (let i = 10; i < 20; i++) tcpEstablished(ct, i, 0); // 5 days left each
  ct.endBatch();
  table.clock = 12_000;
  const gc = startGc(table, FAST);
  await gc.ready;
  await gc.sweep();
  t.is(gc.counters.intervalMs, 18_000);
  t.is(count(table), 20);
  await gc.stop();
  ct.close();
});

test('early_drop: a full table of not-ASSURED entries admits new ones', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  for (let i = 0; i < 64; i++) t.is(udpOneWay(ct, i, 0).state, CT_NEW);
  t.is(count(table), 64);
  for (let i = 0; i < 10; i++) {
    const v = tcpSyn(ct, 1000 + i, 1000);
    t.is(v.state, CT_NEW, `insert ${i} admitted`);
    t.false(v.drop);
  }
  ct.endBatch();
  t.is(count(table), 64);
  t.is(stat(table, 'early_drop'), 10);
  t.is(stat(table, 'drop'), 0);
  ct.close();
});

test('above 95% of nf_conntrack_max the GC evicts not-ASSURED and closing entries only', async (t) => {
  const table = ConntrackTable.create({ max: 100 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const keep: number[] = [];
  for (let i = 0; i < 70; i++) keep.push(tcpEstablished(ct, i, 0));
  for (let i = 70; i < 80; i++) keep.push(udpAssured(ct, i, 0));
  const evictable = new Set<number>();
  for (let i = 80; i < 85; i++) evictable.add(tcpClosing(ct, i, 0));
  for (let i = 85; i < 100; i++) evictable.add(udpOneWay(ct, i, 0).slot);
  ct.endBatch();
  for (const s of keep) t.truthy(Atomics.load(table.i32, ct.chains.entry(s) + E_STATUS) & IPS_ASSURED);
  t.is(count(table), 100);
  table.clock = 1000;

  const why: number[] = [];
  const gc = startGc(table, { ...FAST, onDestroy: (_id, w) => why.push(w) });
  await gc.ready;
  await gc.sweep();
  t.is(count(table), 95, 'evicted down to the 95% mark, not further');
  t.is(stat(table, 'gc_evict'), 5);
  t.is(stat(table, 'soft_recycle'), 0);
  t.is(stat(table, 'expired'), 0);
  for (const s of keep) t.true(live(table, ct, s), 'ASSURED, not closing: kept');
  let gone = 0;
  for (const s of evictable) if (!live(table, ct, s)) gone++;
  t.is(gone, 5);
  await gc.sweep();
  t.is(count(table), 95, 'at the mark: no more evictions');
  await gc.stop();
  t.deepEqual(why, [KILL_GC_EVICT, KILL_GC_EVICT, KILL_GC_EVICT, KILL_GC_EVICT, KILL_GC_EVICT]);
  ct.close();
});

test('soft timeout: a full table of idle ASSURED entries refuses inserts until the soft timeout has passed', async (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const SOFT = table.getSysctl('nf_conntrack_soft_timeout') * 1000;
  t.is(SOFT, 3_600_000);
  ct.beginBatch();
  for (let i = 0; i < 64; i++) {
    const slot = tcpEstablished(ct, i, 0);
    t.truthy(Atomics.load(table.i32, ct.chains.entry(slot) + E_STATUS) & IPS_ASSURED);
  }
  ct.endBatch();
  t.is(count(table), 64);

  const why: number[] = [];
  const gc = startGc(table, { ...FAST, onDestroy: (_id, w) => why.push(w) });
  await gc.ready;
  let n = 1000;
  const tryInsert = (now: number): ReturnType<Conntrack['frame']> => {
    table.clock = now;
    ct.beginBatch();
    const v = tcpSyn(ct, n++, now);
    ct.endBatch();
    return v;
  };
  // Just before the soft timeout: refused, and the GC recycles nothing however often it runs.
  for (const now of [1000, SOFT - 1000, SOFT - 1]) {
    const v = tryInsert(now);
    t.is(v.state, CT_INVALID);
    t.is(v.reason, 'table full');
    t.true(v.drop);
    wakeGc(table); // what chains.newEntry does when early_drop fails
    await gc.sweep();
    await gc.sweep();
    t.is(count(table), 64);
    t.is(stat(table, 'soft_recycle'), 0, `nothing recycled at ${now} ms`);
  }
  t.is(stat(table, 'drop'), 3);

  // Past the soft timeout: the GC recycles down to the 95% mark, then inserts succeed.
  table.clock = SOFT;
  await gc.sweep();
  await gc.sweep();
  t.is(count(table), 60);
  t.is(stat(table, 'soft_recycle'), 4);
  t.deepEqual(why, [KILL_SOFT_RECYCLE, KILL_SOFT_RECYCLE, KILL_SOFT_RECYCLE, KILL_SOFT_RECYCLE], 'destroyed as soft recycling');
  for (let k = 0; k < 4; k++) t.is(tryInsert(SOFT + 10).state, CT_NEW);
  t.is(count(table), 64);
  t.is(stat(table, 'early_drop'), 0);
  await gc.stop();
  ct.close();
});

test('idle estimate: never more than the real idle time, exact for ESTABLISHED', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const est = tcpEstablished(ct, 1, 5000);
  const udp = udpAssured(ct, 2, 5000);
  ct.endBatch();
  const ctx = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl };
  const e = ct.chains.entry(est);
  const deadline = table.i32[e + E_TIMEOUT]!;
  t.is(deadline, 5000 + 432_000_000);
  for (const idle of [0, 1, 60_000, 3_600_000, 400_000_000]) {
    t.is(idleLowerBound(ctx, e, deadline - (5000 + idle), 10_000), idle);
  }
  // Within the last 300 s it may have had the 300 s retransmission timeout: the bound uses that.
  t.is(idleLowerBound(ctx, e, 200_000, 10_000), 100_000);
  // A packet time up to the skew allowance ahead of H_CLOCK never inflates the estimate.
  t.is(idleLowerBound(ctx, e, 305_000, 10_000), 0);
  const u = ct.chains.entry(udp);
  const ud = table.i32[u + E_TIMEOUT]!;
  t.true(idleLowerBound(ctx, u, ud - 6000, 10_000) <= 1000);
  ct.close();
});

test('one GC per table; the engine can be driven directly', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  // A budget no loaded machine can exhaust on 64 buckets: this test is about ownership, not slicing.
  const engine = new GcEngine(table, { ...FAST, budgetMs: 60_000 });
  t.throws(() => startGc(table), { message: /already runs/ });
  t.throws(() => new GcEngine(table), { message: /already runs/ });
  const r = engine.run();
  t.true(r.sweepDone);
  t.is(r.buckets, table.buckets);
  engine.close();
  t.is(Atomics.load(table.i32, H_GC_WID), 0);
});
