/**
 * Unit tests of src/table/zones.ts on one thread, each against a hand-computed outcome: which
 * entry early_drop inside a zone / namespace picks (dropCandidate), a limit refusing at exactly
 * N, exact counts through the per-worker delta caches and their folding, walkList's slices and
 * marker, rebuildZoneAccounting (crash recovery) restoring counters, lists, dead worker's list
 * locks and live walkers' markers. Written for the survivors of the mutation run (docs/mutation.md).
 */
import test from 'ava';
import { Conntrack } from '../src/track/core.js';
import {
  COUNT_BATCH, E_GEN, E_STATUS, E_TIMEOUT, ENTRY_WORDS, IPS_ASSURED, MARKER_WORDS, MK_LIST, NS_COUNT, NS_WORDS,
  ZA_COUNT, ZA_HEAD, ZA_WORDS, ZC_NS, ZC_SLOTS, ZC_ZONE, zoneRec,
} from '../src/table/layout.js';
import { CtOps } from '../src/ops/ops.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { ConntrackTable } from '../src/table/table.js';
import { lock, lockOwner } from '../src/table/locks.js';
import {
  CONFIRM_NS_LIMIT, CONFIRM_ZONE_LIMIT, LIST_NS, LIST_ZONE, ZONE_DIR_REPL, cachedDelta, cachedDeltas, isNamespaceHandle,
  rebuildZoneAccounting, zoneWord,
} from '../src/table/zones.js';
import { udp4 } from './helpers/frames.js';
import { inv, assuredUdp } from './helpers/table-checks.js';

const NOW = 1_000_000;
const LT = LINKTYPE_RAW;
const FAR = NOW + 1_000_000_000; // every timeout has run out


/** A one-way UDP connection (not ASSURED); its slot. */
function oneWay(ct: Conntrack, a: string, zone: number, ns: number, dir?: number): number {
  const q = udp4({ src: a, dst: '192.0.2.2', sport: 6000, dport: 53 });
  const v = ct.frame(LT, q, 0, q.length, NOW, zone, ns, dir);
  if (v.slot < 0 || v.drop) throw new Error(`not admitted: ${v.reason}`);
  return v.slot;
}

const assured = (ct: Conntrack, a: string, zone: number, ns: number): number => assuredUdp(ct, a, zone, ns, NOW);

test('dropCandidate: the oldest not-ASSURED entry of the namespace; ASSURED only once expired; -1 outside', (t) => {
  const table = ConntrackTable.create({ max: 256, namespaces: 4 });
  const ct = new Conntrack(table);
  const za = ct.chains.zones;
  ct.beginBatch();
  // Zone 7, oldest first: A (ns 1), B (ns 2, ASSURED), C (ns 2), D (ns 2).
  const A = oneWay(ct, '10.1.0.1', 7, 1);
  const B = assured(ct, '10.1.0.2', 7, 2);
  const C = oneWay(ct, '10.1.0.3', 7, 2);
  const D = oneWay(ct, '10.1.0.4', 7, 2);
  ct.endBatch();
  t.is(new Set([A, B, C, D]).size, 4);
  t.is(za.dropCandidate(LIST_ZONE, 7, 2, NOW), C, 'zone 7, namespace 2: B is ASSURED, C the next oldest');
  t.is(za.dropCandidate(LIST_ZONE, 7, 1, NOW), A, 'zone 7, namespace 1: only A');
  t.is(za.dropCandidate(LIST_ZONE, 7, 3, NOW), -1, 'zone 7 has nothing of namespace 3');
  t.is(za.dropCandidate(LIST_NS, 2, 0, NOW), C, 'namespace 2: B ASSURED, C next');
  t.is(za.dropCandidate(LIST_NS, 1, 0, NOW), A);
  t.is(za.dropCandidate(LIST_ZONE, 7, 2, FAR), B, 'an expired ASSURED entry is a candidate');
  t.is(za.dropCandidate(LIST_NS, 2, 0, FAR), B);
  t.is(za.dropCandidate(LIST_ZONE, 8, 2, NOW), -1, 'empty zone');
  t.is(za.dropCandidate(LIST_NS, 3, 0, NOW), -1, 'empty namespace');
  t.is(za.dropCandidate(LIST_NS, 4, 0, FAR), -1, 'namespace without a record');
  t.is(za.dropCandidate(LIST_NS, -1, 0, FAR), -1);
  ct.close();
  inv(t, table);
});

test('dropCandidate scans the 32 oldest only: behind 32 ASSURED entries a not-ASSURED one is not found', (t) => {
  const table = ConntrackTable.create({ max: 256, namespaces: 2 });
  const ct = new Conntrack(table);
  const za = ct.chains.zones;
  ct.beginBatch();
  for (let i = 0; i < 31; i++) assured(ct, `10.2.0.${i + 1}`, 9, 1);
  const x = oneWay(ct, '10.2.1.1', 9, 1); // the 32nd oldest: still scanned
  ct.endBatch();
  t.is(za.dropCandidate(LIST_NS, 1, 0, NOW), x);
  t.is(za.dropCandidate(LIST_ZONE, 9, 1, NOW), x);
  ct.beginBatch();
  assured(ct, '10.2.0.100', 10, 0); // another namespace and zone: changes nothing
  ct.endBatch();
  const t2 = ConntrackTable.create({ max: 256, namespaces: 2 });
  const c2 = new Conntrack(t2);
  c2.beginBatch();
  for (let i = 0; i < 32; i++) assured(c2, `10.2.0.${i + 1}`, 9, 1);
  oneWay(c2, '10.2.1.1', 9, 1); // the 33rd oldest: past the scan
  c2.endBatch();
  t.is(c2.chains.zones.dropCandidate(LIST_NS, 1, 0, NOW), -1);
  t.is(c2.chains.zones.dropCandidate(LIST_ZONE, 9, 1, NOW), -1);
  ct.close();
  c2.close();
  inv(t, table);
  inv(t, t2);
});

test('a namespace limit of 3 admits exactly 3; the 4th evicts the oldest not-ASSURED of that namespace', (t) => {
  const table = ConntrackTable.create({ max: 256, namespaces: 4 });
  table.setNamespaceLimit(1, 3);
  const ct = new Conntrack(table);
  const za = ct.chains.zones;
  ct.beginBatch();
  oneWay(ct, '10.3.0.9', 0, 2); // namespace 2: not a candidate
  const A = assured(ct, '10.3.0.1', 0, 1);
  t.is(za.atLimit(1, 0), 0);
  const B = oneWay(ct, '10.3.0.2', 0, 1);
  t.is(za.atLimit(1, 0), 0, '2 of 3');
  const C = oneWay(ct, '10.3.0.3', 0, 1);
  t.is(za.atLimit(1, 0), CONFIRM_NS_LIMIT, '3 of 3');
  t.is(table.namespaceCount(1), 3);
  const D = oneWay(ct, '10.3.0.4', 0, 1);
  ct.endBatch();
  t.is(table.namespaceCount(1), 3);
  t.is(table.namespaceCount(2), 1);
  t.is(za.listCount(LIST_NS, 1), 3);
  const dump = (slot: number): number => table.i32[table.sec.entries + slot * ENTRY_WORDS + E_STATUS]!;
  t.not(dump(A) & IPS_ASSURED, 0, 'the ASSURED one stays');
  // B was evicted: walking namespace 1 gives D, C, A.
  const slots = new Int32Array(8);
  const seen: number[] = [];
  za.walkList(LIST_NS, 1, 8, slots, new Int32Array(8), (n) => { for (let i = 0; i < n; i++) seen.push(slots[i]!); });
  t.deepEqual(seen, [D, C, A]);
  t.false(seen.includes(B));
  // Zone limit 2 on zone 11 (no namespace limit for namespace 3).
  table.setZoneLimit(11, 2);
  ct.beginBatch();
  assured(ct, '10.3.1.1', 11, 3);
  assured(ct, '10.3.1.2', 11, 3);
  t.is(za.atLimit(3, 11), CONFIRM_ZONE_LIMIT);
  t.is(za.atLimit(3, 12), 0);
  const q = udp4({ src: '10.3.1.3', dst: '192.0.2.2', sport: 6000, dport: 53 });
  const v = ct.frame(LT, q, 0, q.length, NOW, 11, 3);
  t.is(v.reason, 'zone limit');
  t.is(table.zoneCount(11), 2);
  t.is(table.namespaceCount(3), 2, 'the refused insert gave its namespace charge back');
  ct.endBatch();
  t.is(table.namespaceCount(3), 2);
  ct.close();
  inv(t, table);
});

test('counts are exact through the delta caches: folded at COUNT_BATCH, more zones than slots, at batch end', (t) => {
  const table = ConntrackTable.create({ max: 1024, namespaces: 4 });
  const ct = new Conntrack(table);
  const nsWord = table.sec.ns + 1 * NS_WORDS + NS_COUNT;
  const zaWord = (z: number): number => table.sec.zacct + zoneRec(z) * ZA_WORDS + ZA_COUNT;
  ct.beginBatch();
  const N = COUNT_BATCH + 8;
  for (let i = 0; i < N; i++) oneWay(ct, `10.4.0.${i + 1}`, 20, 1);
  t.is(table.namespaceCount(1), N);
  t.is(table.zoneCount(20), N);
  t.is(table.i32[nsWord], COUNT_BATCH, 'one fold of COUNT_BATCH');
  t.is(cachedDelta(table, ZC_NS, 1), 8);
  t.is(table.i32[zaWord(20)], COUNT_BATCH);
  t.is(cachedDelta(table, ZC_ZONE, 20), 8);
  // More zones than cache slots: each charge evicts (folds) another; every count stays exact.
  const Z = ZC_SLOTS + 5;
  for (let z = 0; z < Z; z++) for (let k = 0; k <= z % 3; k++) oneWay(ct, `10.5.${z}.${k + 1}`, 100 + z, 2);
  for (let z = 0; z < Z; z++) t.is(table.zoneCount(100 + z), (z % 3) + 1, `zone ${100 + z}`);
  t.is(table.namespaceCount(2), [...Array(Z).keys()].reduce((s, z) => s + (z % 3) + 1, 0));
  ct.endBatch();
  t.is(table.i32[nsWord], N, 'batch end folds the rest');
  t.is(cachedDelta(table, ZC_NS, 1), 0);
  for (let z = 0; z < Z; z++) t.is(table.i32[zaWord(100 + z)], (z % 3) + 1);
  t.is(ct.chains.zones.listCount(LIST_ZONE, 20), N);
  t.is(ct.chains.zones.listCount(LIST_NS, 1), N);
  t.is(ct.chains.zones.listCount(LIST_NS, 4), 0, 'no record');
  t.is(ct.chains.zones.listCount(LIST_NS, -1), 0);
  // A limit set now folds nothing twice: the count stays N and the limit refuses at N + 2.
  table.setNamespaceLimit(1, N + 2);
  t.is(table.namespaceCount(1), N);
  ct.close();
  inv(t, table);
});

test('walkList: slices newest first, every entry once, gens, the marker off the list after (also on a throw)', (t) => {
  const table = ConntrackTable.create({ max: 256, namespaces: 4 });
  const ct = new Conntrack(table);
  const za = ct.chains.zones;
  ct.beginBatch();
  const s = [0, 1, 2, 3, 4].map((i) => oneWay(ct, `10.6.0.${i + 1}`, 30, 1));
  oneWay(ct, '10.6.1.1', 31, 1); // another zone
  ct.endBatch();
  const slots = new Int32Array(8);
  const gens = new Int32Array(8);
  const sizes: number[] = [];
  const seen: number[] = [];
  za.walkList(LIST_ZONE, 30, 2, slots, gens, (n) => {
    sizes.push(n);
    for (let i = 0; i < n; i++) {
      seen.push(slots[i]!);
      t.is(gens[i], table.i32[table.sec.entries + slots[i]! * ENTRY_WORDS + E_GEN]);
    }
  });
  t.deepEqual(sizes, [2, 2, 1]);
  t.deepEqual(seen, [...s].reverse());
  const mk = table.sec.markers + za.wid * MARKER_WORDS + MK_LIST;
  t.is(table.i32[mk], 0);
  t.is(table.i32[table.sec.zacct + zoneRec(30) * ZA_WORDS + ZA_HEAD]! - 1, s[4], 'the head is the newest entry again');
  // Slice larger than the list: one batch.
  const all: number[] = [];
  za.walkList(LIST_NS, 1, 8, slots, gens, (n) => { all.push(n); });
  t.deepEqual(all, [6]);
  // Out-of-range namespace: nothing.
  let called = 0;
  za.walkList(LIST_NS, 4, 8, slots, gens, () => { called++; });
  za.walkList(LIST_NS, -1, 8, slots, gens, () => { called++; });
  za.walkList(LIST_ZONE, 32, 8, slots, gens, () => { called++; });
  t.is(called, 0);
  t.throws(() => za.walkList(LIST_ZONE, 30, 2, slots, gens, () => { throw new Error('stop'); }), { message: 'stop' });
  t.is(table.i32[mk], 0, 'marker removed after a throw');
  inv(t, table);
  ct.close();
});

test('rebuildZoneAccounting restores counters and lists, frees the dead worker\'s list lock and marker, relinks live markers', (t) => {
  const table = ConntrackTable.create({ max: 512, namespaces: 3, maxWorkers: 8 });
  const ct = new Conntrack(table);
  const i32 = table.i32;
  const exp = { ns: [0, 0, 0], zone: new Map<number, number>() };
  ct.beginBatch();
  for (let i = 0; i < 40; i++) {
    const ns = i % 3;
    const zone = 40 + (i % 4);
    oneWay(ct, `10.7.${ns}.${i + 1}`, zone, ns);
    exp.ns[ns]!++;
    exp.zone.set(zone, (exp.zone.get(zone) ?? 0) + 1);
  }
  // A reply-only zone: its zone id is the reply zone (zoneKey), its original zone 0.
  oneWay(ct, '10.7.9.1', 50, 2, ZONE_DIR_REPL);
  exp.ns[2]!++;
  exp.zone.set(50, 1);
  // Mid-batch: the deltas are still in this worker's cache; the rebuild drops and recounts them.
  t.true(cachedDelta(table, ZC_NS, 0) !== 0);
  // Corrupt counters and heads.
  i32[table.sec.ns + 1 * NS_WORDS + NS_COUNT] = 999;
  i32[table.sec.zacct + zoneRec(41) * ZA_WORDS + ZA_COUNT] = 77;
  i32[table.sec.zacct + zoneRec(42) * ZA_WORDS + ZA_HEAD] = 0;
  i32[table.sec.nsHeads + 2] = 0;
  i32[table.sec.zones + zoneRec(43)] = 5;
  // Dead worker 6 held a list stripe and was walking; live worker 3 is walking zone 40.
  const dead = 6;
  lock(i32, table.sec.zlocks + 5, dead);
  lock(i32, table.sec.zlocks + 200, dead);
  i32[table.sec.markers + dead * MARKER_WORDS + MK_LIST] = ((LIST_ZONE << 17) | 41) + 1;
  i32[table.sec.markers + 3 * MARKER_WORDS + MK_LIST] = ((LIST_ZONE << 17) | 40) + 1;
  rebuildZoneAccounting(table, dead);
  for (let ns = 0; ns < 3; ns++) t.is(table.namespaceCount(ns), exp.ns[ns], `namespace ${ns}`);
  for (const [z, n] of exp.zone) t.is(table.zoneCount(z), n, `zone ${z}`);
  t.is(i32[table.sec.ns + 0 * NS_WORDS + NS_COUNT], exp.ns[0], 'counted into the word, deltas dropped');
  t.is(cachedDelta(table, ZC_NS, 0), 0);
  for (let z = 40; z < 44; z++) t.is(i32[table.sec.zones + zoneRec(z)], 10, `original-zone counter ${z}`);
  t.is(i32[table.sec.zones + zoneRec(0)], 1, 'the reply-only entry counts in original zone 0 (its delta was still cached)');
  t.is(lockOwner(i32[table.sec.zlocks + 5]!), -1);
  t.is(lockOwner(i32[table.sec.zlocks + 200]!), -1);
  t.is(i32[table.sec.markers + dead * MARKER_WORDS + MK_LIST], 0, 'the dead walker\'s walk is over');
  t.is(i32[table.sec.markers + 3 * MARKER_WORDS + MK_LIST], ((LIST_ZONE << 17) | 40) + 1);
  t.is(i32[table.sec.zacct + zoneRec(40) * ZA_WORDS + ZA_HEAD]! - 1, table.capacity + 3, 'live marker first on its list');
  // Walk zone 42 and namespace 2 (heads were cleared): all their entries are back.
  const za = ct.chains.zones;
  const slots = new Int32Array(64);
  const gens = new Int32Array(64);
  let n42 = 0;
  za.walkList(LIST_ZONE, 42, 64, slots, gens, (n) => { n42 += n; });
  t.is(n42, 10);
  let n2 = 0;
  za.walkList(LIST_NS, 2, 64, slots, gens, (n) => { n2 += n; });
  t.is(n2, exp.ns[2]);
  // Take the live marker off (as its walker would) before the invariants.
  za.dropMarker(3, 100);
  t.is(i32[table.sec.markers + 3 * MARKER_WORDS + MK_LIST], 0);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('zoneWord / isNamespaceHandle', (t) => {
  t.is(zoneWord(5), 5 | (5 << 16));
  t.is(zoneWord(5, ZONE_DIR_REPL), 5 << 16);
  const table = ConntrackTable.create({ max: 64, namespaces: 2 });
  t.true(isNamespaceHandle(table.namespace(1).handle()));
  t.false(isNamespaceHandle(table.handle()));
  t.false(isNamespaceHandle(null));
  t.false(isNamespaceHandle('ns'));
  t.false(isNamespaceHandle({ buffer: table.buffer, ns: '1' }));
  t.true(CONFIRM_NS_LIMIT < 0);
  t.true(CONFIRM_ZONE_LIMIT < 0);
});

test('dropCandidate: an ASSURED entry is a candidate from the instant its timeout is reached, not one ms before', (t) => {
  const table = ConntrackTable.create({ max: 64, namespaces: 2 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const B = assured(ct, '10.8.0.1', 12, 1);
  ct.endBatch();
  const to = table.i32[table.sec.entries + B * ENTRY_WORDS + E_TIMEOUT]!;
  t.is(ct.chains.zones.dropCandidate(LIST_NS, 1, 0, to - 1), -1);
  t.is(ct.chains.zones.dropCandidate(LIST_NS, 1, 0, to), B);
  t.is(ct.chains.zones.dropCandidate(LIST_ZONE, 12, 1, to), B);
  ct.close();
});

test('entries of a namespace without a record (id = namespaces): on their zone list only, no namespace word written', (t) => {
  const NSN = 4;
  const table = ConntrackTable.create({ max: 128, namespaces: NSN });
  const i32 = table.i32;
  // The words just past the namespace records and heads: nothing may count into or link through them.
  const past = [table.sec.ns + NSN * NS_WORDS + NS_COUNT, table.sec.nsHeads + NSN];
  const before = past.map((w) => i32[w]);
  const ct = new Conntrack(table);
  ct.beginBatch();
  oneWay(ct, '10.9.0.3', 13, 1);
  oneWay(ct, '10.9.0.4', 14, 1);
  oneWay(ct, '10.9.0.5', 14, 1);
  const a = oneWay(ct, '10.9.0.1', 13, NSN);
  const b = oneWay(ct, '10.9.0.2', 13, NSN);
  t.deepEqual([...cachedDeltas(table, ZC_NS).keys()], [1]);
  ct.endBatch();
  t.deepEqual(past.map((w) => i32[w]), before);
  t.is(ct.chains.zones.dropCandidate(LIST_ZONE, 13, NSN, NOW), a, 'early_drop in zone 13 for that namespace: its oldest');
  // (The rebuild below keeps each list's age order: zones-gaps tests that.)
  rebuildZoneAccounting(table); // crash recovery's rebuild: the same lists, nothing past the records
  t.deepEqual(past.map((w) => i32[w]), before);
  t.is(table.namespaceCount(1), 3);
  t.is(table.zoneCount(13), 3);
  inv(t, table);
  t.is(ct.chains.zones.listCount(LIST_NS, NSN), 0);
  // Deleting them gives nothing back to a namespace word either.
  const ops = new CtOps(table);
  t.is(ops.flush({ ns: NSN }), 2);
  ops.close();
  t.deepEqual(past.map((w) => i32[w]), before);
  t.is(table.zoneCount(13), 1);
  t.is(table.namespaceCount(1), 3);
  t.not(a, b);
  inv(t, table);
  ct.close();
});

test('rebuildZoneAccounting for dead worker 0 frees its list stripes', (t) => {
  const table = ConntrackTable.create({ max: 64, namespaces: 2, maxWorkers: 4 });
  const i32 = table.i32;
  lock(i32, table.sec.zlocks + 3, 0);
  lock(i32, table.sec.zlocks + 140, 0);
  rebuildZoneAccounting(table, 0);
  t.is(lockOwner(i32[table.sec.zlocks + 3]!), -1);
  t.is(lockOwner(i32[table.sec.zlocks + 140]!), -1);
  inv(t, table);
});

test('charge / uncharge called at a limit (the race atLimit cannot see): refused with nothing kept, given back exactly', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 4 });
  table.setNamespaceLimit(1, 2);
  table.setZoneLimit(15, 1);
  const ct = new Conntrack(table);
  const za = ct.chains.zones;
  ct.beginBatch();
  oneWay(ct, '10.10.0.1', 15, 3); // zone 15 full (1 of 1); namespace 3 has no limit
  oneWay(ct, '10.10.0.2', 16, 1);
  oneWay(ct, '10.10.0.3', 16, 1); // namespace 1 full (2 of 2)
  t.is(za.charge(3, 15), CONFIRM_ZONE_LIMIT);
  t.is(table.namespaceCount(3), 1, 'the cached namespace charge was given back');
  t.is(table.zoneCount(15), 1);
  t.is(za.charge(1, 16), CONFIRM_NS_LIMIT);
  t.is(table.namespaceCount(1), 2);
  t.is(table.zoneCount(16), 2);
  table.setNamespaceLimit(2, 5);
  t.is(za.charge(2, 15), CONFIRM_ZONE_LIMIT);
  t.is(table.namespaceCount(2), 0, 'the CAS-charged namespace count was given back');
  t.is(za.charge(2, 17), 0);
  t.is(table.namespaceCount(2), 1);
  t.is(table.zoneCount(17), 1);
  za.uncharge(2, 17);
  t.is(table.namespaceCount(2), 0);
  t.is(table.zoneCount(17), 0);
  // A limited zone's counter is charged and given back in its word, never through a delta.
  const zw15 = table.sec.zacct + zoneRec(15) * ZA_WORDS + ZA_COUNT;
  t.is(table.i32[zw15], 1);
  za.uncharge(3, 15);
  t.is(table.i32[zw15], 0);
  t.is(cachedDelta(table, ZC_ZONE, 15), 0);
  t.is(za.charge(3, 15), 0); // the entry is still linked: charge it again
  t.is(table.i32[zw15], 1);
  ct.endBatch();
  t.is(table.namespaceCount(3), 1);
  t.is(table.zoneCount(15), 1);
  inv(t, table);
  ct.close();
});
