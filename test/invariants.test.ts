import test from 'ava';
import { Conntrack } from '../src/track/core.js';
import { checkInvariants, INVARIANT_NAMES, type InvariantReport } from '../src/table/invariants.js';
import {
  E_HASH, E_LINK, E_NEXT, E_STATUS, ENTRY_WORDS, H_COUNT, H_FREE_COUNT, H_FREE_HEAD, H_FREE_LOCK, IPS_DYING, zoneRec,
  PARK_AGE_STALLS,
} from '../src/table/layout.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { ConntrackTable } from '../src/table/table.js';
import { udp4 } from './helpers/frames.js';
import { KILL_DELETE } from '../src/table/chains.js';
import { eventStats, subscribeEvents } from '../src/table/ecache.js';

/** A quiescent table with `n` UDP connections (two of them in zone 7). */
function healthy(n = 40, discipline: 'noref' | 'refcount' = 'noref'): { table: ConntrackTable; slots: number[] } {
  const table = ConntrackTable.create({ max: 256, discipline, hashKey: [1, 2] });
  const ct = new Conntrack(table);
  const slots: number[] = [];
  ct.beginBatch();
  for (let i = 0; i < n; i++) {
    const f = udp4({ src: `10.0.${i >> 8}.${i & 255}`, dst: '192.168.0.1', sport: 1000 + i, dport: 53 });
    const v = ct.frame(LINKTYPE_RAW, f, 0, f.length, 1000, i < 2 ? 7 : 0);
    slots.push(v.slot);
  }
  // A few deletes, so limbo and the cache hold slots too.
  for (let i = n - 5; i < n; i++) ct.chains.kill(slots[i]!, 0);
  ct.endBatch();
  ct.close();
  return { table, slots: slots.slice(0, n - 5) };
}

function failed(r: InvariantReport): string[] {
  return r.invariants.filter((x) => !x.ok).map((x) => x.name);
}

function entry(t: ConntrackTable, slot: number): number {
  return t.sec.entries + slot * ENTRY_WORDS;
}

test('a healthy table passes every invariant', (t) => {
  for (const d of ['noref', 'refcount'] as const) {
    const { table } = healthy(40, d);
    const r = checkInvariants(table);
    t.deepEqual(failed(r), [], JSON.stringify(r.invariants));
    t.true(r.ok);
    t.deepEqual(r.invariants.map((x) => x.name), [...INVARIANT_NAMES]);
    t.is(r.slots.linked, 35);
    t.is(r.slots.leaked, 0);
    t.is(r.slots.linked + r.slots.freeList + r.slots.cached + r.slots.limbo + r.slots.orphan + r.slots.held, table.capacity);
  }
  // An empty table too.
  t.true(checkInvariants(ConntrackTable.create({ max: 64 })).ok);
});

test('an entry counted but unlinked is caught', (t) => {
  const { table, slots } = healthy();
  const i32 = table.i32;
  const slot = slots[3]!;
  const e = entry(table, slot);
  // Unlink both tuplehashes by hand (the zone counter too) but leave H_COUNT as it is.
  for (let dir = 0; dir < 2; dir++) {
    const b = i32[e + E_HASH + dir]! & (table.buckets - 1);
    let prev = table.sec.buckets + b;
    while (i32[prev] !== ((slot << 1) | dir)) {
      const r = i32[prev]!;
      prev = entry(table, r >>> 1) + E_NEXT + (r & 1);
    }
    i32[prev] = i32[e + E_NEXT + dir]!;
  }
  i32[table.sec.zones + zoneRec(0)]!--;
  const r = checkInvariants(table);
  t.false(r.ok);
  t.deepEqual(failed(r), ['count-matches-linked']);
  t.is(r.slots.held, 1); // still allocated with the table's reference: held, not leaked
  t.regex(r.invariants.find((x) => x.name === 'count-matches-linked')!.detail!, /H_COUNT is 35, 34/);
});

test('a cycle in a chain is caught', (t) => {
  const { table, slots } = healthy();
  const i32 = table.i32;
  const slot = slots[5]!;
  const e = entry(table, slot);
  i32[e + E_NEXT + 0] = slot << 1; // original tuplehash points at itself
  const r = checkInvariants(table);
  t.false(r.ok);
  t.true(failed(r).includes('chains-terminate'));
  t.regex(r.invariants.find((x) => x.name === 'chains-terminate')!.detail!, /cycle/);
});

test('a wrong nulls marker and a misplaced hash are caught', (t) => {
  const { table, slots } = healthy();
  const i32 = table.i32;
  const e = entry(table, slots[6]!);
  i32[e + E_HASH] = i32[e + E_HASH]! ^ 1; // now names the neighbouring bucket
  const r = checkInvariants(table);
  t.true(failed(r).includes('chain-hashes'));
  const { table: t2 } = healthy();
  const B = t2.sec.buckets;
  let empty = 0;
  while (t2.i32[B + empty] !== ~empty) empty++;
  t2.i32[B + empty] = ~((empty + 1) & (t2.buckets - 1)); // ends with the next bucket's marker
  const r2 = checkInvariants(t2);
  t.deepEqual(failed(r2), ['chains-terminate']);
  t.regex(r2.invariants.find((x) => x.name === 'chains-terminate')!.detail!, /nulls marker of bucket/);
});

test('a leaked slot is caught', (t) => {
  const { table } = healthy();
  const i32 = table.i32;
  // Take the head of the free list off the list, keeping the count consistent.
  const head = i32[H_FREE_HEAD]!;
  i32[H_FREE_HEAD] = i32[entry(table, head) + E_LINK]!;
  i32[H_FREE_COUNT]!--;
  const r = checkInvariants(table);
  t.deepEqual(failed(r), ['no-leaked-slot']);
  t.is(r.slots.leaked, 1);
  t.regex(r.invariants.find((x) => x.name === 'no-leaked-slot')!.detail!, new RegExp(`slot ${head} `));
});

test('a wrong zone counter is caught', (t) => {
  const { table } = healthy();
  t.is(table.i32[table.sec.zones + zoneRec(7)], 2);
  table.i32[table.sec.zones + zoneRec(7)] = 3;
  const r = checkInvariants(table);
  t.deepEqual(failed(r), ['zone-counters']);
  t.regex(r.invariants.find((x) => x.name === 'zone-counters')!.detail!, /zone 7: counter 3, linked entries 2/);
});

test('a linked slot on the free list, a DYING linked entry, a held lock, a bad free count', (t) => {
  {
    const { table, slots } = healthy();
    const i32 = table.i32;
    // Push a linked slot on the free list.
    i32[entry(table, slots[0]!) + E_LINK] = i32[H_FREE_HEAD]!;
    i32[H_FREE_HEAD] = slots[0]!;
    i32[H_FREE_COUNT]!++;
    t.true(failed(checkInvariants(table)).includes('free-not-linked'));
  }
  {
    const { table, slots } = healthy();
    Atomics.or(table.i32, entry(table, slots[1]!) + E_STATUS, IPS_DYING);
    t.deepEqual(failed(checkInvariants(table)), ['no-dying-linked']);
  }
  {
    const { table } = healthy();
    table.i32[H_FREE_LOCK] = (3 << 2) | 1;
    t.deepEqual(failed(checkInvariants(table)), ['no-lock-held']);
  }
  {
    const { table } = healthy();
    table.i32[H_FREE_COUNT]!++;
    t.deepEqual(failed(checkInvariants(table)), ['free-count']);
  }
  {
    const { table } = healthy();
    table.i32[H_COUNT]!++;
    t.deepEqual(failed(checkInvariants(table)), ['count-matches-linked']);
  }
});

test('a parked DESTROY held longer than the age bound is caught; delivery enforces the bound', async (t) => {
  // stallMs 250: delivery overruns whoever holds a parked DESTROY for PARK_AGE_STALLS x 250 ms
  // (wide enough that a loaded machine's scheduling gaps neither stall `sub` nor age the entries early).
  const stallMs = 250;
  const table = ConntrackTable.create({ max: 1024, stallMs, events: { ring: 1024, destroyRing: 64 } });
  const sub = subscribeEvents(table);
  const ct = new Conntrack(table);
  ct.beginBatch();
  for (let i = 0; i < 64 + 10; i++) {
    const f = udp4({ src: `10.9.0.${i}`, dst: '192.168.0.1', sport: 1000 + i, dport: 53 });
    const v = ct.frame(LINKTYPE_RAW, f, 0, f.length, 1000);
    ct.chains.kill(v.slot, KILL_DELETE); // 64 fill the DESTROY ring for `sub`, 10 are parked
  }
  ct.endBatch();
  const parkedAt = Date.now();
  t.is(eventStats(table).parked, 10);
  t.deepEqual(failed(checkInvariants(table)), [], 'young parked entries are fine');
  // `sub` stays alive (heartbeats: poll(0) reads nothing) and holds the ring full; nobody delivers.
  const sleep = (ms: number): Promise<void> => new Promise((ok) => setTimeout(ok, ms));
  for (let k = 0; k < 4; k++) { sub.poll(0); await sleep(40); }
  const r = checkInvariants(table, { parkedMaxAgeMs: 100 });
  t.deepEqual(failed(r), ['event-rings']);
  t.regex(r.invariants.find((x) => x.name === 'event-rings')!.detail!, /parked DESTROY 0 held \d+ ms \(bound 100 ms\)/);
  // Still within the table's bound (10 x 250 ms): delivery waits for the live subscriber.
  sub.poll(0);
  t.is(ct.retryParkedEvents(), 10, 'all still parked');
  while (Date.now() - parkedAt <= PARK_AGE_STALLS * stallMs + 50) { sub.poll(0); await sleep(40); }
  // Past it: the next delivery overruns `sub` (alive, but too slow) and delivers every parked DESTROY.
  sub.poll(0); // alive just now: the overrun is the age bound's, not the stall detection's
  t.is(ct.retryParkedEvents(), 0, 'none left parked');
  t.is(eventStats(table).overruns, 1);
  t.deepEqual(failed(checkInvariants(table)), []);
  sub.poll();
  t.true(sub.dropped > 0, 'the subscriber that held them is told, with a count');
  ct.close();
  sub.close();
});
