/**
 * GcEngine.run() driven directly on one thread, with the table clock (H_CLOCK) set by the test
 * and, for the slice budget, a stand-in for performance.now: every expectation is worked out by
 * hand from the kernel's gc_worker rules (an entry is expired when deadline - now <= 0; under
 * pressure it evicts entries that are not ASSURED or are TCP connections closing, never offloaded
 * ones; ORIGINAL tuplehashes only), the GC's documented rules (pressure mark =
 * floor(max * pressurePercent / 100); soft recycling only in a sweep after one that ended above
 * the mark, for an idle time >= nf_conntrack_soft_timeout; interval = the sweep's smallest
 * remaining lifetime clamped to [minIntervalMs, maxIntervalMs], the minimum while over the mark)
 * and the connections' default timeouts (UDP 30 s one-way, TCP ESTABLISHED 5 days).
 */
import test from 'ava';

import { KILL_EXPIRED, KILL_GC_EVICT, KILL_SOFT_RECYCLE } from '../src/table/chains.js';
import { EVENT_DESTROY, eventStats, subscribeEvents, type StallEvent } from '../src/table/ecache.js';
import { GcEngine, type GcOptions } from '../src/table/gc.js';
import { checkInvariants, formatInvariants } from '../src/table/invariants.js';
import { orphanCount, recoverDeadWorker } from '../src/table/recovery.js';
import {
  E_HASH, E_ID, E_NEXT, E_REFCNT, E_STATUS, H_COUNT, H_FREE_COUNT, H_GC_BUSY_US, H_GC_CURSOR,
  H_GC_INTERVAL, H_GC_RUNS, H_GC_SWEEPS, H_GC_WID, IPS_ASSURED, IPS_CONFIRMED, IPS_DYING,
  IPS_FIXED_TIMEOUT, IPS_OFFLOAD, W_ALIVE, W_CACHE_COUNT, W_LIMBO_COUNT, W_LIMBO_HEAD, WORKER_WORDS,
} from '../src/table/layout.js';
import { ConntrackTable, type TableOptions } from '../src/table/table.js';
import { Conntrack } from '../src/track/core.js';
import { tcpClosing, tcpEstablished, tcpSyn, udpAssured, udpOneWay } from './helpers/conns.js';

/** A budget no loaded machine exhausts on these small tables (slicing has its own test). */
const WHOLE: GcOptions = { budgetMs: 60_000 };

function setup(opts: TableOptions): { table: ConntrackTable; ct: Conntrack; i32: Int32Array } {
  const table = ConntrackTable.create(opts);
  return { table, ct: new Conntrack(table), i32: table.i32 };
}

function count(table: ConntrackTable): number {
  return Atomics.load(table.i32, H_COUNT);
}

function stat(table: ConntrackTable, name: string): number {
  return table.stats().total[name]!;
}

function live(ct: Conntrack, slot: number): boolean {
  const s = Atomics.load(ct.table.i32, ct.chains.entry(slot) + E_STATUS);
  return (s & (IPS_CONFIRMED | IPS_DYING)) === IPS_CONFIRMED;
}

function bucketOf(ct: Conntrack, slot: number): number {
  return ct.table.i32[ct.chains.entry(slot) + E_HASH]! & (ct.table.buckets - 1);
}

/** Slots on the shared free list or in a worker cache. */
function freeSlots(table: ConntrackTable): number {
  let n = Atomics.load(table.i32, H_FREE_COUNT);
  for (let w = 0; w < table.maxWorkers; w++) n += Atomics.load(table.i32, table.sec.workers + w * WORKER_WORDS + W_CACHE_COUNT);
  return n;
}

const expiry = test.macro((t, discipline: 'noref' | 'refcount') => {
  const { table, ct, i32 } = setup({ max: 64, discipline });
  ct.beginBatch();
  const early = [0, 1, 2].map((i) => udpOneWay(ct, i, 0).slot); // deadline 30,000
  const late = [3, 4].map((i) => udpOneWay(ct, i, 5000).slot); // deadline 35,000
  ct.endBatch();
  const ids = early.map((s) => i32[ct.chains.entry(s) + E_ID]!);
  const why = new Map<number, number>();
  const gc = new GcEngine(table, { ...WHOLE, wallPerClock: 0.5 });
  gc.onDestroy = (e, w) => why.set(i32[e + E_ID]!, w);

  // 1 ms before the first deadline: nothing is due; the interval is the smallest remaining time.
  table.clock = 29_999;
  let r = gc.run();
  t.true(r.sweepDone);
  t.is(r.buckets, table.buckets);
  t.is(r.entries, 5, 'each entry visited once, through its ORIGINAL tuplehash');
  t.is(r.expired, 0);
  t.is(r.intervalMs, 1000, '1 ms left: clamped to minIntervalMs');
  t.is(r.sleepWallMs, 500, 'interval x wallPerClock');

  // At the deadline itself the entry is expired (deadline - now <= 0).
  table.clock = 30_000;
  r = gc.run();
  t.is(r.entries, 5);
  t.is(r.expired, 3);
  t.is(r.evicted + r.recycled, 0);
  t.is(r.reclaimed, discipline === 'noref' ? 3 : 0, 'noref: no other worker online, the grace period ends in the run');
  t.is(r.intervalMs, 5000);
  t.is(r.sleepWallMs, 2500);
  t.is(count(table), 2, 'the GC\'s part of the count is folded into H_COUNT');
  t.is(Atomics.load(i32, table.sec.workers + gc.wid * WORKER_WORDS + W_CACHE_COUNT), 0, 'freed slots go to the shared list');
  t.is(stat(table, 'expired'), 3);
  for (const s of early) t.false(live(ct, s));
  for (const s of late) t.true(live(ct, s));
  t.deepEqual(ids.map((id) => why.get(id)), [KILL_EXPIRED, KILL_EXPIRED, KILL_EXPIRED]);
  t.is(why.size, 3);

  // A new sweep forgets the last one's smallest remaining time: nothing left, so the maximum.
  table.clock = 35_000;
  r = gc.run();
  t.is(r.expired, 2);
  t.is(r.entries, 2);
  t.is(r.intervalMs, 60_000);
  t.is(Atomics.load(i32, H_GC_INTERVAL), 60_000);
  t.is(Atomics.load(i32, H_GC_SWEEPS), 3);
  t.is(Atomics.load(i32, H_GC_RUNS), 3);
  t.is(Atomics.load(i32, H_GC_CURSOR), 0, 'a finished sweep leaves the cursor at bucket 0');
  t.is(count(table), 0);
  // Every slot is reusable again: no reference left behind ('refcount'), no limbo ('noref').
  for (const s of [...early, ...late]) t.is(Atomics.load(i32, ct.chains.entry(s) + E_REFCNT), 0);
  gc.close();
  t.is(freeSlots(table), table.capacity);
  ct.close();
});
test('a run expires exactly the entries due at the table clock and adapts the interval (noref)', expiry, 'noref');
test('a run expires exactly the entries due at the table clock and adapts the interval (refcount)', expiry, 'refcount');

test('the interval: the smallest remaining lifetime within [minIntervalMs, maxIntervalMs]; the minimum while over the mark', (t) => {
  const { table, ct } = setup({ max: 64 });
  ct.beginBatch();
  udpOneWay(ct, 1, 0); // deadline 30,000
  tcpEstablished(ct, 2, 0); // deadline 432,000,000
  ct.endBatch();
  const gc = new GcEngine(table, { ...WHOLE, minIntervalMs: 2000, maxIntervalMs: 7000 });
  table.clock = 24_000;
  t.is(gc.run().intervalMs, 6000);
  table.clock = 18_000;
  t.is(gc.run().intervalMs, 7000, '12 s left: capped at maxIntervalMs');
  table.clock = 28_500;
  t.is(gc.run().intervalMs, 2000, '1.5 s left: raised to minIntervalMs');
  gc.close();
  ct.close();
  // Over the mark (2 entries, max 2: mark 1) the next sweep comes after minIntervalMs, however
  // long the entries have left.
  const s = setup({ max: 2 });
  s.ct.beginBatch();
  tcpEstablished(s.ct, 1, 0);
  tcpEstablished(s.ct, 2, 0);
  s.ct.endBatch();
  const g2 = new GcEngine(s.table, { ...WHOLE, minIntervalMs: 2000, maxIntervalMs: 7000, wallPerClock: 3 });
  const r = g2.run();
  t.is(count(s.table), 2, 'ASSURED, not closing: nothing evicted');
  t.is(r.intervalMs, 2000);
  t.is(r.sleepWallMs, 6000);
  g2.close();
  s.ct.close();
});

test('slices: the budget is checked every 32 buckets against the run\'s start; the cursor carries the sweep over', (t) => {
  const { table, ct, i32 } = setup({ max: 128, buckets: 128 });
  t.is(table.buckets, 128);
  // Entries in buckets 0..31 have 20 s left at 10,000, all others 30 s: the sweep's interval is
  // 20 s only if the first slice's smallest remaining time is kept across the slices.
  ct.beginBatch();
  let firstSlice = 0;
  for (let i = 0; i < 100; i++) {
    const slot = udpOneWay(ct, i, 0).slot;
    if (bucketOf(ct, slot) < 32) firstSlice++;
    else udpOneWay(ct, i, 10_000); // refreshed: deadline 40,000
  }
  ct.endBatch();
  t.true(firstSlice > 0);
  table.clock = 10_000;
  const gc = new GcEngine(table, { budgetMs: 3.5, sliceGapMs: 7 });
  // The stand-in clock: a run's first reading (its start) is 100 ms, every later one 103.5 ms.
  let calls = 0;
  performance.now = () => (calls++ === 0 ? 100 : 103.5);
  t.teardown(() => { delete (performance as { now?: unknown }).now; });
  try {
    const busy0 = Atomics.load(i32, H_GC_BUSY_US);
    let r = gc.run();
    t.is(r.buckets, 32, 'stopped at the first check: 3.5 ms >= the 3.5 ms budget');
    t.false(r.sweepDone);
    t.is(r.sleepWallMs, 7, 'inside a sweep: sliceGapMs');
    t.is(r.intervalMs, 0);
    t.is(Atomics.load(i32, H_GC_CURSOR), 32);
    t.is(Atomics.load(i32, H_GC_SWEEPS), 0);
    t.is(Atomics.load(i32, H_GC_RUNS), 1);
    t.is(Atomics.load(i32, H_GC_BUSY_US) - busy0, 3500, 'busy time: 3.5 ms in microseconds');
    calls = 0;
    r = gc.run();
    t.is(r.buckets, 32);
    t.is(Atomics.load(i32, H_GC_CURSOR), 64);
    calls = 0;
    gc.run();
    calls = 0;
    r = gc.run();
    t.is(r.buckets, 32, 'the last slice ends at the last bucket');
    t.true(r.sweepDone);
    t.is(r.intervalMs, 20_000);
    t.is(Atomics.load(i32, H_GC_CURSOR), 0);
    t.is(Atomics.load(i32, H_GC_SWEEPS), 1);
  } finally {
    delete (performance as { now?: unknown }).now;
  }
  gc.close();
  // A budget of 7 ms passes the check at 32 buckets (3.5 ms after the start) and every later one.
  const whole = new GcEngine(table, { budgetMs: 7 });
  calls = 0;
  performance.now = () => (calls++ === 0 ? 100 : 103.5);
  try {
    const r = whole.run();
    t.is(r.buckets, 128);
    t.true(r.sweepDone);
  } finally {
    delete (performance as { now?: unknown }).now;
  }
  whole.close();
  ct.close();
});

test('a cursor outside the table starts the sweep at bucket 0', (t) => {
  const { table, i32 } = setup({ max: 64 });
  const gc = new GcEngine(table, WHOLE);
  for (const bad of [table.buckets, table.buckets + 5, -1]) {
    Atomics.store(i32, H_GC_CURSOR, bad);
    const r = gc.run();
    t.is(r.buckets, table.buckets, `cursor ${bad}`);
    t.true(r.sweepDone);
  }
  Atomics.store(i32, H_GC_CURSOR, table.buckets - 1);
  t.is(gc.run().buckets, 1, 'a cursor inside the table is where the sweep goes on');
  gc.close();
});

test('pressure: down to floor(max x pressurePercent / 100), not-ASSURED and closing TCP only, never offloaded', (t) => {
  // max 40 at 90 %: mark 36. 24 ASSURED established TCP, 6 ASSURED UDP streams, 4 closing TCP
  // (ASSURED, FIN_WAIT), 6 one-way UDP: 4 of the 10 evictable go.
  const { table, ct } = setup({ max: 40 });
  ct.beginBatch();
  const keep: number[] = [];
  for (let i = 0; i < 24; i++) keep.push(tcpEstablished(ct, i, 0));
  for (let i = 24; i < 30; i++) keep.push(udpAssured(ct, i, 5000));
  const evictable: number[] = [];
  for (let i = 30; i < 34; i++) evictable.push(tcpClosing(ct, i, 0));
  for (let i = 34; i < 40; i++) evictable.push(udpOneWay(ct, i, 0).slot);
  ct.endBatch();
  t.is(count(table), 40);
  const why: number[] = [];
  const gc = new GcEngine(table, { ...WHOLE, pressurePercent: 90 });
  gc.onDestroy = (_e, w) => why.push(w);
  table.clock = 1000;
  let r = gc.run();
  t.is(r.evicted, 4);
  t.is(r.expired + r.recycled, 0);
  t.is(count(table), 36);
  t.is(stat(table, 'gc_evict'), 4);
  t.deepEqual(why, [KILL_GC_EVICT, KILL_GC_EVICT, KILL_GC_EVICT, KILL_GC_EVICT]);
  for (const s of keep) t.true(live(ct, s));
  t.is(evictable.filter((s) => !live(ct, s)).length, 4);
  r = gc.run();
  t.is(r.evicted, 0, 'at the mark: nothing more');
  gc.close();
  ct.close();

  // Offloaded entries are left alone (gc_worker_can_early_drop refuses offloaded TCP), even not
  // ASSURED ones; the default mark of max 20 is 19.
  const s = setup({ max: 20 });
  s.ct.beginBatch();
  const syns: number[] = [];
  for (let i = 0; i < 20; i++) syns.push(tcpSyn(s.ct, i, 0).slot);
  s.ct.endBatch();
  for (const slot of syns) Atomics.or(s.i32, s.ct.chains.entry(slot) + E_STATUS, IPS_OFFLOAD);
  const g2 = new GcEngine(s.table, WHOLE);
  t.is(g2.run().evicted, 0);
  t.is(count(s.table), 20);
  // Without the flag on one of them: that one goes (20 > 19), and only one.
  Atomics.and(s.i32, s.ct.chains.entry(syns[7]!) + E_STATUS, ~IPS_OFFLOAD);
  t.is(g2.run().evicted, 1);
  t.false(live(s.ct, syns[7]!));
  t.is(count(s.table), 19);
  g2.close();
  s.ct.close();
});

test('soft recycling: armed by a sweep that ended over the mark; idle >= nf_conntrack_soft_timeout; never fixed-timeout entries or with the soft timeout 0', (t) => {
  // 20 ASSURED ESTABLISHED entries, last packet at 0 (deadline 432,000,000 = 5 days); max 20,
  // mark 19; soft timeout 100 s. Their idle time at clock c is exactly c (the bound is exact for
  // ESTABLISHED beyond the 300 s retransmission cap: remaining > 300 s).
  const { table, ct, i32 } = setup({ max: 20, sysctls: { nf_conntrack_soft_timeout: 100 } });
  ct.beginBatch();
  const slots: number[] = [];
  for (let i = 0; i < 20; i++) slots.push(tcpEstablished(ct, i, 0));
  ct.endBatch();
  for (const s of slots) t.truthy(Atomics.load(i32, ct.chains.entry(s) + E_STATUS) & IPS_ASSURED);
  const why: number[] = [];
  const gc = new GcEngine(table, WHOLE);
  gc.onDestroy = (_e, w) => why.push(w);

  table.clock = 100_000;
  let r = gc.run();
  t.is(r.recycled, 0, 'the first sweep is not armed, however idle the entries are');
  t.is(r.intervalMs, 1000, 'it ended over the mark');
  r = gc.run();
  t.is(r.recycled, 1, 'the next one recycles down to the mark');
  t.is(count(table), 19);
  t.is(stat(table, 'soft_recycle'), 1);
  t.deepEqual(why, [KILL_SOFT_RECYCLE]);

  // That sweep ended at the mark: disarmed. A 20th entry (new, idle 0) and all others idle
  // 99,999 ms at 199,999: not recycled, armed again by this sweep; 1 ms later one goes.
  ct.beginBatch();
  const fresh = tcpEstablished(ct, 100, 100_000);
  ct.endBatch();
  t.is(count(table), 20);
  table.clock = 199_999; // the 19 old entries: idle 199,999; the new one: 99,999
  // Old entries only if idle >= 100 s: they are, but the sweep is not armed yet.
  r = gc.run();
  t.is(r.recycled, 0, 'disarmed by the sweep that ended at the mark');
  // Mark every old entry fixed-timeout: only the new one is a candidate, 1 ms short of 100 s.
  const old = slots.filter((s) => live(ct, s));
  t.is(old.length, 19);
  for (const s of old) Atomics.or(i32, ct.chains.entry(s) + E_STATUS, IPS_FIXED_TIMEOUT);
  r = gc.run();
  t.is(r.recycled, 0, 'fixed-timeout entries are never recycled; the new one is idle 99,999 ms');
  table.clock = 200_000;
  r = gc.run();
  t.is(r.recycled, 1, 'idle exactly the soft timeout: recycled');
  t.false(live(ct, fresh));
  t.is(count(table), 19);

  // Soft timeout 0 switches recycling off (an idle time of 0 would otherwise qualify).
  for (const s of old) Atomics.and(i32, ct.chains.entry(s) + E_STATUS, ~IPS_FIXED_TIMEOUT);
  ct.beginBatch();
  tcpEstablished(ct, 101, 200_000);
  ct.endBatch();
  table.setSysctl('nf_conntrack_soft_timeout', 0);
  gc.run();
  r = gc.run();
  t.is(r.recycled, 0);
  t.is(count(table), 20);
  gc.close();
  ct.close();
});

test('DESTROY events of the GC: the reason, tag -1, the table clock as stop time; parked ones delivered by a later run', (t) => {
  const { table, ct } = setup({ max: 64, events: { ring: 64, destroyRing: 16 }, sysctls: { nf_conntrack_timestamp: 1 } });
  const sub = subscribeEvents(table);
  ct.beginBatch();
  for (let i = 0; i < 20; i++) udpOneWay(ct, i, 0);
  ct.endBatch();
  sub.poll(); // the NEW events
  const gc = new GcEngine(table, WHOLE);
  table.clock = 30_000;
  t.is(gc.run().expired, 20);
  // The DESTROY ring holds 16: 4 were parked. A run with nothing to kill delivers them once
  // the subscriber has made room.
  let got = sub.poll().filter((ev) => ev.type === EVENT_DESTROY);
  t.is(got.length, 16);
  table.clock = 31_000;
  gc.run();
  got = got.concat(sub.poll().filter((ev) => ev.type === EVENT_DESTROY));
  t.is(got.length, 20);
  t.is(sub.lost, 0);
  for (const ev of got) {
    t.is(ev.why, KILL_EXPIRED);
    t.is(ev.tag, -1, 'not a packet\'s event: no tag');
    t.is(ev.timestamps?.stop, 30_000, 'stopped at the clock of the run that removed it');
  }
  t.is(new Set(got.map((ev) => ev.id)).size, 20);
  sub.close();
  gc.close();
  ct.close();
});

test('slots a departed worker left: its cache and its limbo are adopted and counted; live records are left alone', (t) => {
  const { table, i32 } = setup({ max: 64 });
  const cacheOf = (w: number): number => Atomics.load(i32, table.sec.workers + w * WORKER_WORDS + W_CACHE_COUNT);
  const limboOf = (w: number): number => Atomics.load(i32, table.sec.workers + w * WORKER_WORDS + W_LIMBO_COUNT);
  // Worker a: creates and kills 3 entries (limbo 3: its grace period is held by b, online), keeps
  // its slot cache, and leaves without handing anything back.
  const a = new Conntrack(table);
  const b = new Conntrack(table);
  // Worker c owns its record (alive) throughout: its cache is its own. The GC registers before a
  // leaves, so it does not take over a's record.
  const c = new Conntrack(table);
  const gc = new GcEngine(table, WHOLE);
  a.beginBatch();
  const made = Array.from({ length: 30 }, (_, i) => udpOneWay(a, i, 0).slot);
  a.endBatch();
  // Slot 0 first, so that it heads the limbo (slot numbers start at 0).
  t.true(made.includes(0));
  const slots = [0, ...made.filter((s) => s !== 0).slice(0, 2)];
  b.beginBatch();
  a.beginBatch();
  for (const s of slots) t.true(a.chains.kill(s, KILL_EXPIRED));
  a.endBatch();
  t.is(i32[table.sec.workers + a.wid * WORKER_WORDS + W_LIMBO_HEAD], 0);
  const cached = cacheOf(a.wid);
  t.true(cached > 0);
  t.is(limboOf(a.wid), 3);
  table.releaseWorker(a.wid);
  c.beginBatch();
  udpOneWay(c, 500, 0);
  c.endBatch();
  const cCached = cacheOf(c.wid);
  t.true(cCached > 0);

  table.clock = 1000;
  let r = gc.run();
  t.is(r.reclaimed, cached, 'the cache comes back at once; the limbo waits for b');
  t.is(cacheOf(a.wid), 0);
  t.is(limboOf(a.wid), 3);
  t.is(Atomics.load(i32, table.sec.workers + a.wid * WORKER_WORDS + W_ALIVE), 0, 'record released again');
  b.endBatch();
  r = gc.run();
  t.is(r.reclaimed, 3, 'b left its batch: the grace period is over');
  t.is(limboOf(a.wid), 0);
  t.is(cacheOf(c.wid), cCached, 'a live record is not touched');
  // 27 of a's entries and c's 1 in the table; every other slot is free somewhere.
  t.is(freeSlots(table), table.capacity - 28);
  gc.close();
  b.close();
  c.close();
});

test('close(): hands back the cache, clears the GC word and the record; twice is harmless', (t) => {
  const { table, ct, i32 } = setup({ max: 64 });
  ct.beginBatch();
  for (let i = 0; i < 5; i++) udpOneWay(ct, i, 0);
  ct.endBatch();
  ct.close();
  const gc = new GcEngine(table, WHOLE);
  t.is(Atomics.load(i32, H_GC_WID), gc.wid + 1);
  table.clock = 30_000;
  t.is(gc.run().expired, 5);
  gc.close();
  t.is(Atomics.load(i32, H_GC_WID), 0);
  t.is(Atomics.load(i32, table.sec.workers + gc.wid * WORKER_WORDS + W_ALIVE), 0);
  t.is(freeSlots(table), table.capacity);
  t.is(Atomics.load(i32, table.sec.workers + gc.wid * WORKER_WORDS + W_CACHE_COUNT), 0);
  // A second GC now owns the word; closing the first again must not clear it.
  const gc2 = new GcEngine(table, WHOLE);
  gc.close();
  t.is(Atomics.load(i32, H_GC_WID), gc2.wid + 1);
  gc2.close();
  t.is(Atomics.load(i32, H_GC_WID), 0);
});

const strayWalk = test.macro((t, discipline: 'noref' | 'refcount') => {
  // What another worker can do between two steps of the GC's walk, done here from the GC's
  // destroy hook: delete the entry the walk goes to next and create a connection of another
  // bucket. 'refcount': the slot is free at once and reused, the walk ends in that bucket's chain,
  // and the entries of its own bucket after that point must still be expired in this run (the
  // kernel's gc_worker skips them until the next scan; this GC walks the bucket once more).
  // 'noref': the GC is online (inside a read-side section) while it walks, so the deleted slot
  // stays in limbo and cannot be reused under it.
  const opts: TableOptions = { max: 64, buckets: 16, discipline, hashKey: [0x2545f491, 0x6a09e667] };
  const { table, ct, i32 } = setup(opts);
  const c = ct.chains;
  ct.beginBatch();
  for (let i = 0; i < 48; i++) udpOneWay(ct, i, 0);
  ct.endBatch();
  const refs = (b: number): number[] => {
    const out: number[] = [];
    for (let ref = Atomics.load(i32, c.B + b); ref >= 0; ref = i32[c.entry(ref >>> 1) + E_NEXT + (ref & 1)]!) out.push(ref);
    return out;
  };
  // Where connection k's direction-d tuplehash would go, from a probe table with the same key.
  const probe = setup(opts);
  probe.ct.beginBatch();
  const probeBucket = (k: number, d: number): number => {
    const s = udpOneWay(probe.ct, k, 0).slot;
    return probe.i32[probe.ct.chains.entry(s) + E_HASH + d]! & (table.buckets - 1);
  };
  // A bucket whose chain starts with an ORIGINAL ref X, then any ref Y, then at least one more
  // ORIGINAL ref; and a new connection whose tuplehash of Y's direction lands elsewhere.
  let b = -1;
  for (let k = 0; k < table.buckets && b < 0; k++) {
    const r = refs(k);
    if (r.length >= 3 && (r[0]! & 1) === 0 && r.slice(2).some((x) => (x & 1) === 0)) b = k;
  }
  t.true(b >= 0, 'such a bucket exists with this key');
  const chain = refs(b);
  const x = chain[0]! >>> 1;
  const y = chain[1]! >>> 1;
  const yDir = chain[1]! & 1;
  let k = 1000;
  while (probeBucket(k, yDir) === b) k++;
  probe.ct.endBatch();
  probe.ct.close();
  const behind = chain.slice(2).filter((r) => (r & 1) === 0).length;
  t.true(behind >= 1);

  const gc = new GcEngine(table, WHOLE);
  let reused = -1;
  gc.onDestroy = (e) => {
    if (e !== c.entry(x) || reused >= 0) return;
    ct.beginBatch();
    t.true(c.kill(y, KILL_EXPIRED));
    ct.endBatch(); // its grace period ('noref'): over unless the GC still reads
    ct.beginBatch();
    reused = udpOneWay(ct, k, 30_000).slot;
    ct.endBatch();
  };
  table.clock = 30_000;
  const r = gc.run();
  if (discipline === 'refcount') {
    t.is(reused, y, 'the slot was reused at once');
    t.not(i32[c.entry(y) + E_HASH + yDir]! & (table.buckets - 1), b);
  } else {
    t.true(reused >= 0);
    t.not(reused, y, 'not reused while the GC may still read it');
  }
  t.is(r.expired, 47, 'every old entry but the one the other worker deleted, in this run');
  t.is(count(table), 1);
  t.true(live(ct, reused));
  gc.close();
  ct.close();
});
test('refcount: a walk that strays into another chain (the next slot was recycled meanwhile) walks its bucket again', strayWalk, 'refcount');
test('noref: a slot deleted ahead of the GC\'s walk is not reused under it (the GC walks online)', strayWalk, 'noref');

test('a record released while still online (a dead worker awaiting recovery) is not adopted; a recovered one\'s orphaned limbo is reclaimed', (t) => {
  const { table, i32 } = setup({ max: 64 });
  const cacheOf = (w: number): number => Atomics.load(i32, table.sec.workers + w * WORKER_WORDS + W_CACHE_COUNT);
  const gc = new GcEngine(table, WHOLE);
  const d = new Conntrack(table);
  d.beginBatch();
  udpOneWay(d, 1, 0);
  const cached = cacheOf(d.wid);
  t.true(cached > 0);
  table.releaseWorker(d.wid); // gone inside its batch: its QSBR state still says online
  const r = gc.run();
  t.is(r.reclaimed, 0);
  t.is(cacheOf(d.wid), cached, 'its cache is left for crash recovery');
  t.is(Atomics.load(i32, table.sec.workers + d.wid * WORKER_WORDS + W_ALIVE), 0);
  gc.close();

  // Orphans: a worker dies with 2 slots in its limbo while b is online; recovery cannot finish
  // their grace period and leaves them as orphans; the GC's next run after b leaves recycles them.
  const s = setup({ max: 64 });
  const g2 = new GcEngine(s.table, WHOLE);
  const a = new Conntrack(s.table);
  const b = new Conntrack(s.table);
  a.beginBatch();
  const slots = [1, 2].map((i) => udpOneWay(a, i, 0).slot);
  a.endBatch();
  b.beginBatch();
  a.beginBatch();
  for (const slot of slots) t.true(a.chains.kill(slot, KILL_EXPIRED));
  const rep = recoverDeadWorker(s.table, a.wid, { graceWaitMs: 0 });
  t.is(rep.orphansPending, 2);
  t.is(orphanCount(s.table), 2);
  t.is(g2.run().reclaimed, 0, 'b is still in its batch');
  b.endBatch();
  t.is(g2.run().reclaimed, 2);
  t.is(orphanCount(s.table), 0);
  t.is(freeSlots(s.table), s.table.capacity);
  g2.close();
  b.close();
});

test('pressure with only closing TCP connections evictable: they go (gc_worker_can_early_drop via the TCP state)', (t) => {
  // max 20, mark 19: 16 ASSURED ESTABLISHED and 4 ASSURED in FIN_WAIT; one closing one goes.
  const { table, ct } = setup({ max: 20 });
  ct.beginBatch();
  const est = Array.from({ length: 16 }, (_, i) => tcpEstablished(ct, i, 0));
  const closing = Array.from({ length: 4 }, (_, i) => tcpClosing(ct, 100 + i, 0));
  ct.endBatch();
  const gc = new GcEngine(table, WHOLE);
  table.clock = 1000;
  t.is(gc.run().evicted, 1);
  t.is(closing.filter((s) => !live(ct, s)).length, 1);
  t.true(est.every((s) => live(ct, s)));
  gc.close();
  ct.close();
});

test('close() waits at most ~1 s for its limbo\'s grace period, then leaves it to be adopted', (t) => {
  const { table, ct, i32 } = setup({ max: 64 });
  ct.beginBatch();
  for (let i = 0; i < 2; i++) udpOneWay(ct, i, 0);
  ct.endBatch();
  const b = new Conntrack(table);
  const gc = new GcEngine(table, WHOLE);
  b.beginBatch(); // a reader that stays in its batch: the GC's limbo cannot be recycled
  table.clock = 30_000;
  const r = gc.run();
  t.is(r.expired, 2);
  t.is(r.reclaimed, 0);
  const t0 = performance.now();
  gc.close();
  const waited = performance.now() - t0;
  t.true(waited >= 900, `waited ${waited.toFixed(0)} ms (1,000 waits of 1 ms)`);
  t.is(Atomics.load(i32, table.sec.workers + gc.wid * WORKER_WORDS + W_LIMBO_COUNT), 2, 'left in its released record');
  t.is(Atomics.load(i32, H_GC_WID), 0);
  b.endBatch();
  // The next owner of that record (here the next GC) or an adopter recycles it.
  const g2 = new GcEngine(table, WHOLE);
  t.is(g2.run().reclaimed, 2);
  t.is(Atomics.load(i32, table.sec.workers + gc.wid * WORKER_WORDS + W_LIMBO_COUNT), 0);
  g2.close();
  b.close();
  ct.close();
});

test('each run reaps subscribers that were overrun and stayed silent for 10 stall times (dead threads that never closed)', (t) => {
  // stallMs 1: a DESTROY parked for more than 10 ms overruns the subscriber that holds the ring
  // up; an overrun subscriber silent for more than 10 ms is detached by the next GC run.
  const { table, ct } = setup({ max: 64, events: { ring: 64, destroyRing: 16 }, stallMs: 1 });
  const sub = subscribeEvents(table);
  ct.beginBatch();
  for (let i = 0; i < 20; i++) udpOneWay(ct, i, 0);
  ct.endBatch();
  sub.poll();
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const gc = new GcEngine(table, WHOLE);
  table.clock = 30_000;
  t.is(eventStats(table).subscribers, 1);
  t.is(gc.run().expired, 20); // 16 DESTROYs in the ring, 4 parked
  // Parked too long (a run, or the wait, passes 10 ms): the silent subscriber is overrun; silent
  // 10 ms more: the next run detaches it. (When each step happens depends on the wall clock;
  // two waits of 30 ms cover both.)
  for (let k = 0; k < 2; k++) {
    Atomics.wait(pause, 0, 0, 30);
    gc.run();
  }
  t.true(eventStats(table).overruns >= 1);
  t.is(eventStats(table).subscribers, 0, 'reaped');
  sub.close();
  gc.close();
  ct.close();
});

test('a GC expelled from its grace period for stalling re-enters before the next bucket', (t) => {
  // stallMs 1: the destroy hook stalls 5 ms inside the walk, then another worker's grace period
  // (its own delete) expels the GC; the GC must go online again before walking on.
  const { table, ct } = setup({ max: 64, stallMs: 1 });
  ct.beginBatch();
  const slots = Array.from({ length: 10 }, (_, i) => udpOneWay(ct, i, 0).slot);
  const other = udpOneWay(ct, 100, 20_000).slot; // not expired at 30,000
  ct.endBatch();
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const gc = new GcEngine(table, WHOLE);
  let fired = false;
  gc.onDestroy = () => {
    if (fired) return;
    fired = true;
    Atomics.wait(pause, 0, 0, 5);
    ct.beginBatch();
    t.true(ct.chains.kill(other, KILL_EXPIRED));
    ct.endBatch();
  };
  table.clock = 30_000;
  const r = gc.run(); // emits the CTSAB_WORKER_STALLED process warning
  t.true(fired);
  t.is(r.expired, 10);
  t.is(stat(table, 'stall_expelled'), 1);
  t.is(stat(table, 'stall_resumed'), 1);
  t.false(live(ct, slots[0]!));
  gc.close();
  ct.close();
});

test('a worker the GC expels from its grace period (stalled inside a batch) is reported to subscribers as a stall', (t) => {
  const { table, ct } = setup({ max: 64, stallMs: 1 });
  const sub = subscribeEvents(table);
  const stalls: StallEvent[] = [];
  sub.on('stall', (ev: StallEvent) => stalls.push(ev));
  ct.beginBatch();
  for (let i = 0; i < 2; i++) udpOneWay(ct, i, 0);
  ct.endBatch();
  sub.poll();
  const b = new Conntrack(table);
  b.beginBatch(); // and then silent for 5 ms: stalled
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
  const gc = new GcEngine(table, WHOLE);
  table.clock = 30_000;
  const r = gc.run(); // emits the CTSAB_WORKER_STALLED process warning
  t.is(r.expired, 2);
  t.is(r.reclaimed, 2, 'b no longer holds the grace period up');
  sub.poll();
  t.is(stalls.length, 1);
  t.like(stalls[0]!.toJSON(), { kind: 'worker', id: b.wid, by: gc.wid, stallMs: 1 });
  t.true(stalls[0]!.silentMs >= 5);
  b.endBatch();
  b.close();
  sub.close();
  gc.close();
  ct.close();
});

test('a destroy hook that throws leaves no delete half done: the run finishes, then throws the first error', (t) => {
  const { table, ct } = setup({ max: 64 });
  ct.beginBatch();
  for (let i = 0; i < 3; i++) udpOneWay(ct, i, 0);
  ct.endBatch();
  ct.close();
  const gc = new GcEngine(table, WHOLE);
  let n = 0;
  gc.onDestroy = () => { throw new Error(`hook failure ${n++}`); };
  table.clock = 30_000;
  t.throws(() => gc.run(), { message: 'hook failure 0' });
  t.is(n, 3, 'the hook saw every removed entry');
  t.is(count(table), 0);
  t.is(stat(table, 'expired'), 3);
  t.is(Atomics.load(table.i32, H_GC_RUNS), 1, 'the run was counted');
  t.notThrows(() => gc.run(), 'the error is thrown once');
  gc.close();
  const inv = checkInvariants(table);
  t.true(inv.ok, formatInvariants(inv));
  t.is(freeSlots(table), table.capacity);
});

test('departed workers with only cached slots, or only a limbo, are adopted too (records after the first)', (t) => {
  const { table, i32 } = setup({ max: 64 });
  const rec = (w: number, word: number): number => Atomics.load(i32, table.sec.workers + w * WORKER_WORDS + word);
  const first = new Conntrack(table); // record 0 stays with a live owner
  const a = new Conntrack(table); // leaves with cached slots only
  const b = new Conntrack(table); // leaves with a limbo only
  const gc = new GcEngine(table, WHOLE);
  a.beginBatch();
  udpOneWay(a, 1, 0);
  a.endBatch();
  b.beginBatch();
  const bs = [2, 3].map((i) => udpOneWay(b, i, 0).slot);
  b.endBatch();
  first.beginBatch(); // holds b's grace period up for now
  b.beginBatch();
  for (const s of bs) t.true(b.chains.kill(s, KILL_EXPIRED));
  b.endBatch();
  b.chains.alloc.drain();
  const aCached = rec(a.wid, W_CACHE_COUNT);
  t.true(aCached > 0);
  t.is(rec(a.wid, W_LIMBO_COUNT), 0);
  t.is(rec(b.wid, W_CACHE_COUNT), 0);
  t.is(rec(b.wid, W_LIMBO_COUNT), 2);
  table.releaseWorker(a.wid);
  table.releaseWorker(b.wid);
  first.endBatch();
  const r = gc.run();
  t.is(r.reclaimed, aCached + 2);
  t.is(rec(a.wid, W_CACHE_COUNT), 0);
  t.is(rec(b.wid, W_LIMBO_COUNT), 0);
  t.is(freeSlots(table), table.capacity - 1, 'only a\'s entry is left');
  gc.close();
  first.close();
});

test('refcount: a bucket is walked at most twice; what a second stray walk skipped is left to the next run', (t) => {
  // As above, twice in one bucket: both walks end in other chains. The GC gives up after the
  // second walk (bounded work per bucket, as the kernel's gc_worker never re-walks); the entries
  // behind the second stray point are expired by the next run.
  const opts: TableOptions = { max: 128, buckets: 16, discipline: 'refcount', hashKey: [0x2545f491, 0x6a09e667] };
  const { table, ct, i32 } = setup(opts);
  const c = ct.chains;
  const mask = table.buckets - 1;
  ct.beginBatch();
  for (let i = 0; i < 64; i++) udpOneWay(ct, i, 0);
  ct.endBatch();
  const refsFrom = (ref: number): number[] => {
    const out: number[] = [];
    for (; ref >= 0; ref = i32[c.entry(ref >>> 1) + E_NEXT + (ref & 1)]!) out.push(ref);
    return out;
  };
  // A bucket: ORIGINAL ref at the head, one more ref, then ORIGINAL, another ref, ORIGINAL.
  let b = -1;
  for (let k = 0; k < table.buckets && b < 0; k++) {
    const r = refsFrom(Atomics.load(i32, c.B + k));
    const i = r.findIndex((x, j) => j >= 2 && (x & 1) === 0);
    if ((r[0]! & 1) === 0 && i >= 2 && r.slice(i + 2).some((x) => (x & 1) === 0)) b = k;
  }
  t.true(b >= 0, 'such a bucket exists with this key');
  // New connections whose two tuplehashes both land outside b (from a probe table, same key).
  const probe = setup(opts);
  probe.ct.beginBatch();
  const fresh: number[] = [];
  for (let k = 1000; fresh.length < 2; k++) {
    const pe = probe.ct.chains.entry(udpOneWay(probe.ct, k, 0).slot);
    if ((probe.i32[pe + E_HASH]! & mask) !== b && (probe.i32[pe + E_HASH + 1]! & mask) !== b) fresh.push(k);
  }
  probe.ct.endBatch();
  probe.ct.close();
  const x1 = refsFrom(Atomics.load(i32, c.B + b))[0]! >>> 1;
  let strays = 0;
  let skipped = -1;
  const gc = new GcEngine(table, WHOLE);
  gc.onDestroy = (e) => {
    // The first removal in b's first walk, then the first removal of b's own entries after it.
    if (strays >= 2 || (strays === 0 && e !== c.entry(x1)) || (i32[e + E_HASH]! & mask) !== b) return;
    const next = i32[e + E_NEXT]!; // the ORIGINAL ref after the removed entry (kept intact)
    if (strays === 1) skipped = refsFrom(i32[c.entry(next >>> 1) + E_NEXT + (next & 1)]!).filter((x) => (x & 1) === 0).length;
    ct.beginBatch();
    t.true(c.kill(next >>> 1, KILL_EXPIRED));
    t.is(udpOneWay(ct, fresh[strays]!, 30_000).slot, next >>> 1, 'reused at once');
    ct.endBatch();
    strays++;
  };
  table.clock = 30_000;
  const r = gc.run();
  t.is(strays, 2);
  t.true(skipped >= 1, 'entries of b behind the second stray point');
  t.is(r.expired, 64 - 2 - skipped);
  t.is(gc.run().expired, skipped, 'the next run takes them');
  t.is(count(table), 2);
  gc.close();
  ct.close();
});
