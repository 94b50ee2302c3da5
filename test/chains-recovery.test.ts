/**
 * Recovery intents of src/table/chains.ts (W_INTENT_SLOT, W_KILL steps, W_RELEASE, W_HELD), on
 * one thread: a tracker "dies" at a chosen point inside confirm, kill, discard, put or a lookup
 * (a hook on a method it calls throws, and the tracker is never used again), then
 * recoverDeadWorker() runs for its record, as the pool does for a terminated thread. Each test
 * checks the protocol's outcome, worked out from recovery.ts's description: the operation
 * rolled forward or back, the entry count, the slot neither leaked nor reachable twice, and
 * every table invariant (checkInvariants: chains, counts, free lists, no lock or intent left).
 */
import test from 'ava';
import { CONFIRM_OK, KILL_DELETE, KILL_EXPIRED } from '../src/table/chains.js';
import type { Chains } from '../src/table/chains.js';
import { Conntrack } from '../src/track/core.js';
import { checkInvariants, formatInvariants } from '../src/table/invariants.js';
import {
  E_HASH, E_NS, E_PROTO, E_REFCNT, E_STATUS, E_TIMEOUT, E_TUPLE, E_ZONE, ENTRY_WORDS, E_LINK,
  H_FREE_HEAD, IPS_CONFIRMED, KILL_STEP_EMITTING, KILL_STEP_LOCKED, KILL_STEP_UNLINKED,
  TUPLE_WORDS, W_CACHE, W_CACHE_COUNT, W_HELD, W_KILL, W_KILL_WHY, W_LIMBO_HEAD, W_RELEASE, WORKER_WORDS,
} from '../src/table/layout.js';
import { recoverDeadWorker, reclaimOrphans } from '../src/table/recovery.js';
import { ConntrackTable } from '../src/table/table.js';
import { EVENT_DESTROY, subscribeEvents } from '../src/table/ecache.js';
import { inv, tup } from './helpers/table-checks.js';

const NOW = 1_000_000;
const P = 17 << 8 | 2;

class Died extends Error {}



/** A private entry (hashes as the tracker computes them), 30 s to live; its slot. */
function make(c: Chains, n: number, zone = 0): number {
  const i32 = c.i32;
  const orig = tup(1000 + n * 20);
  const reply = tup(500_000 + n * 20);
  const h0 = c.hash(orig, 0, P, zone & 0xffff, 0);
  const slot = c.newEntry(h0, NOW, 0);
  const e = c.entry(slot);
  i32.set(orig, e + E_TUPLE);
  i32.set(reply, e + E_TUPLE + TUPLE_WORDS);
  i32[e + E_PROTO] = P;
  i32[e + E_ZONE] = zone;
  i32[e + E_NS] = 0;
  i32[e + E_HASH] = h0 | 0;
  i32[e + E_HASH + 1] = c.hash(reply, 0, P, zone >>> 16, 0) | 0;
  i32[e + E_TIMEOUT] = NOW + 30_000;
  return slot;
}

/** Is `slot` linked in its original chain? */
function linked(table: ConntrackTable, slot: number): boolean {
  const i32 = table.i32;
  const E = table.sec.entries;
  const b = i32[E + slot * ENTRY_WORDS + E_HASH]! & (table.buckets - 1);
  for (let ref = i32[table.sec.buckets + b]!, n = 0; ref >= 0 && n <= table.capacity; n++) {
    if (ref === slot << 1) return true;
    ref = i32[E + (ref >>> 1) * ENTRY_WORDS + (ref & 1)]!;
  }
  return false;
}

/** Is `slot` free (shared list, a cache) or waiting out a grace period (a limbo list)? */
function reusable(table: ConntrackTable, slot: number): boolean {
  const i32 = table.i32;
  const E = table.sec.entries;
  for (let s = i32[H_FREE_HEAD]!, n = 0; s >= 0 && n <= table.capacity; s = i32[E + s * ENTRY_WORDS + E_LINK]!, n++) {
    if (s === slot) return true;
  }
  for (let w = 0; w < table.maxWorkers; w++) {
    const base = table.sec.workers + w * WORKER_WORDS;
    for (let k = 0, n = Atomics.load(i32, base + W_CACHE_COUNT); k < n; k++) if (i32[base + W_CACHE + k] === slot) return true;
    for (let s = i32[base + W_LIMBO_HEAD]!, n = 0; s >= 0 && n <= table.capacity; s = i32[E + s * ENTRY_WORDS + E_LINK]!, n++) {
      if (s === slot) return true;
    }
  }
  return false;
}

type Disc = 'noref' | 'refcount';

/** A table with `n` confirmed entries made by a live tracker B; A is the tracker that will die. */
function setup(discipline: Disc, n = 3): { table: ConntrackTable; A: Conntrack; B: Conntrack; slots: number[] } {
  const table = ConntrackTable.create({ max: 64, buckets: 16, discipline });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  B.beginBatch();
  const slots: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = make(B.chains, i);
    if (B.chains.confirm(s) !== CONFIRM_OK) throw new Error('setup');
    slots.push(s);
  }
  B.endBatch();
  return { table, A, B, slots };
}

/** A dies inside `f` (which must throw Died); then its record is recovered. */
function dieIn(t: { throws: (f: () => void, o: { instanceOf: typeof Died }) => unknown }, table: ConntrackTable, A: Conntrack, f: () => void): ReturnType<typeof recoverDeadWorker> {
  A.beginBatch();
  t.throws(f, { instanceOf: Died });
  const r = recoverDeadWorker(table, A.wid, { graceWaitMs: 200, lockWaitMs: 200 });
  reclaimOrphans(table, A.wid);
  return r;
}

for (const discipline of ['noref', 'refcount'] as const) {
  test(`${discipline}: a delete that dies with the locks held, before unlinking counts (step LOCKED), is finished by recovery`, (t) => {
    const { table, A, B, slots } = setup(discipline);
    const victim = slots[1]!;
    const z = A.chains.zones;
    z.cacheAdd = () => { throw new Died(); }; // the first call in kill: after DYING and both unlinks
    const r = dieIn(t, table, A, () => A.chains.kill(victim, KILL_EXPIRED));
    t.is(r.killStep, KILL_STEP_LOCKED);
    t.true(r.locksReleased >= 1, 'its bucket stripes');
    t.is(table.count, 2);
    t.false(linked(table, victim));
    t.true(reusable(table, victim), 'the table\'s reference was dropped');
    inv(t, table);
    B.close();
  });

  test(`${discipline}: a delete that dies after unlinking and uncounting, locks still held (step UNLINKED), is finished`, (t) => {
    const { table, A, B, slots } = setup(discipline);
    const victim = slots[0]!;
    // unlockStripes is first called after the UNLINKED step (kill's guards passed).
    (A.chains as unknown as { unlockStripes: () => void }).unlockStripes = () => { throw new Died(); };
    const r = dieIn(t, table, A, () => A.chains.kill(victim, KILL_DELETE));
    t.is(r.killStep, KILL_STEP_UNLINKED);
    t.true(r.locksReleased >= 1);
    t.is(table.count, 2);
    t.false(linked(table, victim));
    t.true(reusable(table, victim));
    inv(t, table);
    B.close();
  });

  test(`${discipline}: a delete that dies in its DESTROY (step EMITTING, reason recorded) is finished`, (t) => {
    const { table, A, B, slots } = setup(discipline);
    const victim = slots[2]!;
    const WA = table.sec.workers + A.wid * WORKER_WORDS;
    let seen: number[] = [];
    A.chains.onDestroy = () => {
      seen = [Atomics.load(table.i32, WA + W_KILL), Atomics.load(table.i32, WA + W_KILL_WHY)];
      throw new Died();
    };
    const r = dieIn(t, table, A, () => A.chains.kill(victim, KILL_EXPIRED));
    t.deepEqual(seen, [(victim + 1) << 4 | KILL_STEP_EMITTING, KILL_EXPIRED], 'W_KILL names the slot and step; W_KILL_WHY the reason');
    t.is(r.killStep, KILL_STEP_EMITTING);
    t.is(r.locksReleased, 0, 'no lock held while emitting');
    t.is(table.count, 2);
    t.true(reusable(table, victim));
    inv(t, table);
    B.close();
  });

  test(`${discipline}: a delete that dies handing its last reference on (W_RELEASE) leaves the slot to recovery`, (t) => {
    const { table, A, B, slots } = setup(discipline);
    const victim = slots[1]!;
    const WA = table.sec.workers + A.wid * WORKER_WORDS;
    let named = -1;
    const die = (): never => { named = Atomics.load(table.i32, WA + W_RELEASE); throw new Died(); };
    if (discipline === 'noref') A.chains.qsbr.retire = die; else A.chains.alloc.free = die;
    const r = dieIn(t, table, A, () => A.chains.kill(victim, KILL_DELETE));
    t.is(named, victim + 1, 'named while being released');
    t.is(r.killStep, 0, 'the delete itself was over');
    t.is(table.count, 2);
    t.true(reusable(table, victim), 'recovery put it where the release would have');
    inv(t, table);
    B.close();
  });

  test(`${discipline}: an insert that dies after linking (CONFIRMED, counted) is rolled forward`, (t) => {
    const { table, A, B } = setup(discipline);
    A.beginBatch();
    const s = make(A.chains, 50, 3);
    A.endBatch();
    A.chains.zones.link = () => { throw new Died(); }; // after both links and the count
    const r = dieIn(t, table, A, () => A.chains.confirm(s));
    t.is(r.insert, 'rolled-forward');
    t.is(table.count, 4);
    t.true(linked(table, s));
    t.is(table.zoneCount(3), 1, 'its zone counts it');
    inv(t, table);
    B.close();
  });

  test(`${discipline}: an insert that dies before linking (at the limit charge) is rolled back; the slot is freed`, (t) => {
    const { table, A, B } = setup(discipline);
    A.beginBatch();
    const s = make(A.chains, 51);
    A.endBatch();
    A.chains.zones.charge = () => { throw new Died(); };
    const r = dieIn(t, table, A, () => A.chains.confirm(s));
    t.is(r.insert, 'rolled-back');
    t.is(table.count, 3);
    t.false(linked(table, s));
    t.is(table.i32[A.chains.entry(s) + E_STATUS]! & IPS_CONFIRMED, 0);
    t.true(reusable(table, s));
    inv(t, table);
    B.close();
  });

  test(`${discipline}: a discard that dies freeing the slot (W_RELEASE) leaves it to recovery`, (t) => {
    const { table, A, B } = setup(discipline);
    A.beginBatch();
    const s = make(A.chains, 52);
    A.endBatch();
    const WA = table.sec.workers + A.wid * WORKER_WORDS;
    let named = -1;
    A.chains.alloc.free = () => { named = Atomics.load(table.i32, WA + W_RELEASE); throw new Died(); };
    const r = dieIn(t, table, A, () => A.chains.discard(s));
    t.is(named, s + 1);
    t.is(r.insert, 'none', 'the insert was given up before');
    t.is(table.i32[A.chains.entry(s) + E_REFCNT], 0);
    t.true(reusable(table, s));
    t.is(table.count, 3);
    inv(t, table);
    B.close();
  });
}

test('refcount: a lookup reference held by a dead worker (W_HELD) is dropped by recovery; the slot is freed after the delete', (t) => {
  const { table, A, B, slots } = setup('refcount');
  const victim = slots[0]!;
  const i32 = table.i32;
  const e = A.chains.entry(victim);
  const WA = table.sec.workers + A.wid * WORKER_WORDS;
  A.beginBatch();
  const orig = i32.slice(e + E_TUPLE, e + E_TUPLE + TUPLE_WORDS);
  t.is(A.chains.find(orig, 0, P, 0, 0, i32[e + E_HASH]!, NOW), victim << 1);
  t.is(i32[WA + W_HELD], victim + 1);
  // B deletes it: A's reference keeps the slot.
  B.beginBatch();
  t.true(B.chains.kill(victim, KILL_DELETE));
  B.endBatch();
  t.is(i32[e + E_REFCNT], 1);
  t.false(reusable(table, victim));
  // A dies holding it.
  const r = recoverDeadWorker(table, A.wid, { graceWaitMs: 200, lockWaitMs: 200 });
  t.is(r.referencesDropped, 1);
  t.is(i32[e + E_REFCNT], 0);
  t.true(reusable(table, victim));
  t.is(table.count, 2);
  inv(t, table);
  B.close();
});

test('refcount: a last put that dies handing the slot on (W_RELEASE) leaves it to recovery', (t) => {
  const { table, A, B, slots } = setup('refcount');
  const victim = slots[2]!;
  const i32 = table.i32;
  const e = A.chains.entry(victim);
  const WA = table.sec.workers + A.wid * WORKER_WORDS;
  A.beginBatch();
  const orig = i32.slice(e + E_TUPLE, e + E_TUPLE + TUPLE_WORDS);
  t.is(A.chains.find(orig, 0, P, 0, 0, i32[e + E_HASH]!, NOW), victim << 1);
  B.beginBatch();
  t.true(B.chains.kill(victim, KILL_DELETE));
  B.endBatch();
  let named = -1;
  let held = -1;
  A.chains.alloc.free = () => {
    named = Atomics.load(i32, WA + W_RELEASE);
    held = Atomics.load(i32, WA + W_HELD);
    throw new Died();
  };
  t.throws(() => A.chains.put(victim), { instanceOf: Died });
  t.is(named, victim + 1, 'the slot is named');
  t.is(held, 0, 'the reference was forgotten before it was dropped');
  const r = recoverDeadWorker(table, A.wid, { graceWaitMs: 200, lockWaitMs: 200 });
  t.is(r.referencesDropped, 0, 'nothing dropped twice');
  t.true(reusable(table, victim));
  inv(t, table);
  B.close();
});

test('a delete that dies in its DESTROY gets its event from recovery, though the worker\'s previous DESTROY got out', (t) => {
  const { table, A, B, slots } = setup('noref');
  const sub = subscribeEvents(table, { types: EVENT_DESTROY });
  // A's first delete publishes its DESTROY (its record keeps that event's words until the next one).
  A.beginBatch();
  t.true(A.chains.kill(slots[0]!, KILL_DELETE));
  A.endBatch();
  t.is(sub.poll().length, 1);
  // Its second dies inside the DESTROY: recovery must not take the first one's words for it.
  A.chains.onDestroy = () => { throw new Died(); };
  const r = dieIn(t, table, A, () => A.chains.kill(slots[1]!, KILL_DELETE));
  t.is(r.killStep, KILL_STEP_EMITTING);
  t.true(r.destroyEmitted, 'written by recovery');
  t.is(sub.poll().length, 1, 'the second DESTROY arrives');
  t.is(table.count, 1);
  inv(t, table);
  sub.close();
  B.close();
});
