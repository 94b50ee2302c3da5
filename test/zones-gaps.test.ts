/**
 * More unit tests of src/table/zones.ts on one thread, for the survivors of its mutation run
 * (docs/mutation/mutzones.md). Every expected value is worked out by hand from layout.ts's
 * documented formulas or from the scenario, never read back from the code under test:
 * which lock stripe a zone / namespace list uses, a dead walker's marker taken off its list, list
 * counts with unfolded deltas, a limit refusal at confirm time after the pre-allocation hint
 * passed (two trackers on one thread as two workers, the second inserting in between), and the
 * list order kept across crash recovery's rebuild.
 */
import test from 'ava';
import { Conntrack } from '../src/track/core.js';
import {
  ENTRY_WORDS, E_NEXT, E_NNEXT, E_NPREV, E_STATUS, E_ZNEXT, E_ZPREV, IPS_ASSURED, MARKER_WORDS, MK_LIST, MK_NEXT, MK_PREV,
  NS_COUNT, NS_WORDS, W_CNT, W_ZC, WORKER_WORDS, ZA_COUNT, ZA_HEAD, ZA_WORDS, ZC_NS, ZC_SLOTS, ZC_ZONE, ZC_ZORIG, zoneRec,
} from '../src/table/layout.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { KILL_DELETE } from '../src/table/chains.js';
import { ConntrackTable } from '../src/table/table.js';
import { lock, lockOwner, unlock } from '../src/table/locks.js';
import { LOCK_STRIDE } from '../src/table/layout.js';
import {
  CONFIRM_NS_LIMIT, CONFIRM_ZONE_LIMIT, LIST_NS, LIST_ZONE, ZoneAccounting, cachedDelta, cachedDeltas, rebuildZoneAccounting,
} from '../src/table/zones.js';
import { udp4 } from './helpers/frames.js';
import { inv, assuredUdp } from './helpers/table-checks.js';

const NOW = 1_000_000;
const LT = LINKTYPE_RAW;

const sorted = (a: number[]): number[] => [...a].sort((x, y) => x - y);


/** A one-way UDP connection (not ASSURED); its slot. */
function oneWay(ct: Conntrack, a: string, zone: number, ns: number, now = NOW): number {
  const q = udp4({ src: a, dst: '192.0.2.2', sport: 6000, dport: 53 });
  const v = ct.frame(LT, q, 0, q.length, now, zone, ns);
  if (v.slot < 0 || v.drop) throw new Error(`not admitted: ${v.reason}`);
  return v.slot;
}

const assured = (ct: Conntrack, a: string, zone: number, ns: number): number => assuredUdp(ct, a, zone, ns, NOW);

/** Linked entries in bucket order, by their original tuplehash (layout.ts: E_NEXT + dir, ref = slot << 1 | dir). */
function bucketOrder(table: ConntrackTable): number[] {
  const i32 = table.i32;
  const out: number[] = [];
  for (let b = 0; b < table.buckets; b++) {
    for (let ref = i32[table.sec.buckets + b]!; ref >= 0; ref = i32[table.sec.entries + (ref >>> 1) * ENTRY_WORDS + E_NEXT + (ref & 1)]!) {
      if ((ref & 1) === 0) out.push(ref >>> 1);
    }
  }
  return out;
}

/**
 * The nodes of a list read straight from the link words (layout.ts: E_ZPREV/E_ZNEXT or
 * E_NPREV/E_NNEXT, markers at capacity + w), newest first, checking every prev link on the way.
 */
function listNodes(table: ConntrackTable, kind: number, key: number): number[] {
  const i32 = table.i32;
  const sec = table.sec;
  const head = kind === LIST_ZONE ? sec.zacct + zoneRec(key) * ZA_WORDS + ZA_HEAD : sec.nsHeads + key;
  const h = i32[head]! - 1;
  if (h < 0) return [];
  const word = (v: number, next: boolean): number => v >= table.capacity
    ? sec.markers + (v - table.capacity) * MARKER_WORDS + (next ? MK_NEXT : MK_PREV)
    : sec.entries + v * ENTRY_WORDS + (kind === LIST_ZONE ? (next ? E_ZNEXT : E_ZPREV) : (next ? E_NNEXT : E_NPREV));
  const out: number[] = [];
  let v = h;
  for (let n = 0; n <= table.capacity + table.maxWorkers; n++) {
    out.push(v);
    const nx = i32[word(v, true)]!;
    if (i32[word(nx, false)] !== v) throw new Error(`broken prev link at ${nx}`);
    if (nx === h) return out;
    v = nx;
  }
  throw new Error('list does not close');
}

test('lockWord: zone z uses stripe z mod 128, namespace n stripe 128 + (n mod 128), each at the word zlStripe gives', (t) => {
  const table = ConntrackTable.create({ max: 64, namespaces: 200 });
  const za = new ZoneAccounting(table, 0);
  const ZL = table.sec.zlocks;
  // layout.ts: stripe s sits at word ((s & 7) << 4) | (s >>> 3); namespaces after the 128 zone stripes.
  // By hand: s 0 -> 0; 9 -> 16 + 1 = 17; 2 -> 32; 127 -> 112 + 15 = 127; 8 -> 1; 3 -> 48.
  t.is(za.lockWord(LIST_ZONE, 0), ZL + 0);
  t.is(za.lockWord(LIST_ZONE, 9), ZL + 17);
  t.is(za.lockWord(LIST_ZONE, 137), ZL + 17, 'zone 137 = 128 + 9');
  t.is(za.lockWord(LIST_ZONE, 130), ZL + 32);
  t.is(za.lockWord(LIST_ZONE, 127), ZL + 127);
  t.is(za.lockWord(LIST_ZONE, 65535), ZL + 127, '65535 mod 128 = 127');
  t.is(za.lockWord(LIST_NS, 0), ZL + 128);
  t.is(za.lockWord(LIST_NS, 8), ZL + 128 + 1);
  t.is(za.lockWord(LIST_NS, 3), ZL + 128 + 48);
  t.is(za.lockWord(LIST_NS, 131), ZL + 128 + 48, 'namespace 131 = 128 + 3');
  t.is(za.lockWord(LIST_NS, 127), ZL + 128 + 127);
  // And the heads: zone z's record at zoneRec(z) = (z & 15) << 12 | z >> 4; namespace n at nsHeads + n.
  t.is(za.headWord(LIST_ZONE, 17), table.sec.zacct + ((1 << 12) | 1) * ZA_WORDS + ZA_HEAD);
  t.is(za.headWord(LIST_NS, 5), table.sec.nsHeads + 5);
});

test('the list stripe is the one confirm, dropCandidate and dropMarker take: held by another worker, dropMarker gives up after its wait', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 4, maxWorkers: 8 });
  const i32 = table.i32;
  const ct = new Conntrack(table);
  ct.beginBatch();
  const a = oneWay(ct, '10.20.0.1', 9, 1);
  const b = oneWay(ct, '10.20.0.2', 9, 1);
  ct.endBatch();
  // Worker 5 was walking zone 9 and died: its marker is first on the list, MK_LIST names the list.
  const dead = 5;
  const z5 = new ZoneAccounting(table, dead);
  const mk = table.sec.markers + dead * MARKER_WORDS + MK_LIST;
  z5.pushMarker(dead, (LIST_ZONE << 17) | 9);
  i32[mk] = ((LIST_ZONE << 17) | 9) + 1;
  const M = table.capacity + dead;
  t.deepEqual(listNodes(table, LIST_ZONE, 9), [M, b, a]);
  // Zone 9's stripe (word 17, by hand) held by worker 6: dropMarker waits 30 ms and leaves it.
  const stripe = table.sec.zlocks + 17;
  lock(i32, stripe, 6);
  const t0 = Date.now();
  ct.chains.zones.dropMarker(dead, 30);
  t.true(Date.now() - t0 >= 25, 'it waited for the stripe');
  t.deepEqual(listNodes(table, LIST_ZONE, 9), [M, b, a], 'nothing moved without the stripe');
  t.is(i32[mk], ((LIST_ZONE << 17) | 9) + 1);
  // Another zone's stripe held instead: no effect on zone 9.
  unlock(i32, stripe);
  lock(i32, table.sec.zlocks + 18, 6);
  ct.chains.zones.dropMarker(dead, 30);
  t.deepEqual(listNodes(table, LIST_ZONE, 9), [b, a], 'the marker is off');
  t.is(i32[mk], 0);
  unlock(i32, table.sec.zlocks + 18);
  t.is(lockOwner(i32[stripe]!), -1, 'dropMarker released the stripe');
  // dropCandidate takes the same stripe: it returns at once while it is free.
  t.is(ct.chains.zones.dropCandidate(LIST_ZONE, 9, 1, NOW), a);
  ct.close();
  inv(t, table);
});

test('dropMarker: a dead walker\'s marker on a namespace list, on zone 0\'s list, in the middle of a list; nothing to do without one', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 4, maxWorkers: 8 });
  const i32 = table.i32;
  const ct = new Conntrack(table);
  ct.beginBatch();
  const a = oneWay(ct, '10.21.0.1', 0, 2);
  const b = oneWay(ct, '10.21.0.2', 0, 2);
  const c = oneWay(ct, '10.21.0.3', 0, 2);
  ct.endBatch();
  const za = ct.chains.zones;
  const mkOf = (w: number): number => table.sec.markers + w * MARKER_WORDS + MK_LIST;
  // Worker 4: on namespace 2's list, behind c (a walk that passed one entry): list id (1 << 17 | 2) + 1.
  new ZoneAccounting(table, 4).pushMarker(4, (LIST_NS << 17) | 2);
  i32[mkOf(4)] = ((LIST_NS << 17) | 2) + 1;
  // Worker 3: on zone 0's list, whose list id is 0 (stored as 1).
  new ZoneAccounting(table, 3).pushMarker(3, (LIST_ZONE << 17) | 0);
  i32[mkOf(3)] = 1;
  const M3 = table.capacity + 3;
  const M4 = table.capacity + 4;
  t.deepEqual(listNodes(table, LIST_NS, 2), [M4, c, b, a]);
  t.deepEqual(listNodes(table, LIST_ZONE, 0), [M3, c, b, a]);
  // Worker 2 has none: nothing changes.
  za.dropMarker(2, 10);
  t.deepEqual(listNodes(table, LIST_ZONE, 0), [M3, c, b, a]);
  za.dropMarker(4, 100);
  t.deepEqual(listNodes(table, LIST_NS, 2), [c, b, a]);
  t.deepEqual(listNodes(table, LIST_ZONE, 0), [M3, c, b, a], 'only its own list changed');
  t.is(i32[mkOf(4)], 0);
  za.dropMarker(3, 100);
  t.deepEqual(listNodes(table, LIST_ZONE, 0), [c, b, a]);
  t.is(i32[mkOf(3)], 0);
  ct.close();
  inv(t, table);
});

test('the next owner of a dead walker\'s record walks normally: the old marker is dropped first, every entry seen once', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 4, maxWorkers: 8 });
  const i32 = table.i32;
  const ct = new Conntrack(table);
  ct.beginBatch();
  const s = [1, 2, 3, 4].map((i) => oneWay(ct, `10.22.0.${i}`, 23, 1));
  ct.endBatch();
  const w = 6;
  const zw = new ZoneAccounting(table, w);
  zw.pushMarker(w, (LIST_ZONE << 17) | 23);
  i32[table.sec.markers + w * MARKER_WORDS + MK_LIST] = ((LIST_ZONE << 17) | 23) + 1;
  const seen: number[] = [];
  const slots = new Int32Array(2);
  zw.walkList(LIST_ZONE, 23, 2, slots, new Int32Array(2), (n) => { for (let i = 0; i < n; i++) seen.push(slots[i]!); });
  t.deepEqual(seen, [...s].reverse());
  t.deepEqual(listNodes(table, LIST_ZONE, 23), [...s].reverse(), 'no marker left');
  t.is(i32[table.sec.markers + w * MARKER_WORDS + MK_LIST], 0);
  ct.close();
  inv(t, table);
});

test('listCount adds the records\' unfolded deltas mid-batch, for zones and namespaces, and never reads past the namespace records', (t) => {
  const NSN = 3;
  const table = ConntrackTable.create({ max: 256, namespaces: NSN });
  const i32 = table.i32;
  const ct = new Conntrack(table);
  const za = ct.chains.zones;
  ct.beginBatch();
  for (let i = 0; i < 5; i++) oneWay(ct, `10.23.0.${i + 1}`, 24, 1);
  oneWay(ct, '10.23.1.1', 25, 2);
  oneWay(ct, '10.23.2.1', 25, 0);
  oneWay(ct, '10.23.2.2', 25, 0);
  // 5 in zone 24 / namespace 1, all still in this worker's deltas (fewer than COUNT_BATCH).
  t.is(cachedDelta(table, ZC_ZONE, 24), 5);
  t.is(i32[table.sec.zacct + zoneRec(24) * ZA_WORDS + ZA_COUNT], 0);
  t.is(za.listCount(LIST_ZONE, 24), 5);
  t.is(za.listCount(LIST_NS, 1), 5);
  t.is(za.listCount(LIST_NS, 2), 1);
  t.is(za.listCount(LIST_ZONE, 25), 3);
  t.is(za.listCount(LIST_ZONE, 26), 0);
  t.is(za.listCount(LIST_NS, 0), 2, 'namespace 0 has a record');
  // Zone 1 and namespace 24 are other lists: the kind decides which counter is read.
  t.is(za.listCount(LIST_ZONE, 1), 0);
  // A counter word with a value and a delta of the other sign: word + delta.
  i32[table.sec.ns + 1 * NS_WORDS + NS_COUNT] = 7;
  t.is(za.listCount(LIST_NS, 1), 12);
  i32[table.sec.ns + 1 * NS_WORDS + NS_COUNT] = 0;
  // Namespace id NSN has no record: the word its counter would be (after the records: padding
  // before the cache-line-aligned bucket stripes, layout 4) holds a value that must not be counted.
  const past = table.sec.ns + NSN * NS_WORDS + NS_COUNT;
  t.true(past < table.sec.locks);
  ct.endBatch();
  const keep = i32[past]!;
  i32[past] = 7;
  t.is(za.listCount(LIST_NS, NSN), 0);
  t.is(za.listCount(LIST_NS, -1), 0);
  i32[past] = keep;
  t.is(za.listCount(LIST_ZONE, 24), 5);
  ct.close();
  inv(t, table);
});

/**
 * ct1 inserts; between its limit hint (atLimit, before allocation) and its confirm, ct2 (another
 * worker record, same thread) fills the limit. `fill` runs once, right before ct1's confirm.
 */
function raceAtConfirm(ct1: Conntrack, fill: () => void): void {
  const chains = ct1.chains;
  const confirm = chains.confirm.bind(chains);
  let fired = false;
  chains.confirm = (slot: number): number => {
    if (!fired) { fired = true; fill(); }
    return confirm(slot);
  };
}

test('a namespace limit refusing at confirm, after the hint passed: early_drop inside it, or refused when all are ASSURED', (t) => {
  const table = ConntrackTable.create({ max: 256, namespaces: 4, maxWorkers: 4 });
  table.setNamespaceLimit(1, 2);
  const ct1 = new Conntrack(table);
  const ct2 = new Conntrack(table);
  t.not(ct1.wid, ct2.wid);
  ct1.beginBatch();
  ct2.beginBatch();
  // ASSURED ones only: 1 of 2 when ct1 looks, 2 of 2 when it confirms; nothing to drop.
  const A = assured(ct2, '10.24.0.1', 0, 1);
  let B = -1;
  raceAtConfirm(ct1, () => { B = assured(ct2, '10.24.0.2', 0, 1); });
  const q = udp4({ src: '10.24.0.3', dst: '192.0.2.2', sport: 6000, dport: 53 });
  const v = ct1.frame(LT, q, 0, q.length, NOW, 0, 1);
  t.true(B >= 0, 'the other worker inserted in between');
  t.true(v.drop);
  t.is(v.reason, 'namespace limit');
  t.is(table.namespaceCount(1), 2);
  const st = (name: string): number => table.stats().total[name]!;
  t.is(st('ns_limit'), 1);
  t.is(st('early_drop'), 0);
  t.is(st('zone_limit'), 0);
  t.deepEqual(listNodes(table, LIST_NS, 1), [B, A]);
  // A one-way entry inserted in between: ct1's confirm is refused, it drops that one (the oldest
  // not-ASSURED of the namespace) and confirms again.
  table.setNamespaceLimit(1, 3);
  let C = -1;
  raceAtConfirm(ct1, () => { C = oneWay(ct2, '10.24.0.4', 0, 1); });
  const q2 = udp4({ src: '10.24.0.5', dst: '192.0.2.2', sport: 6000, dport: 53 });
  const v2 = ct1.frame(LT, q2, 0, q2.length, NOW, 0, 1);
  t.true(C >= 0);
  t.false(v2.drop);
  t.true(v2.slot >= 0);
  t.is(table.namespaceCount(1), 3);
  t.is(st('early_drop'), 1);
  t.is(st('ns_limit'), 1, 'not refused this time');
  const now = listNodes(table, LIST_NS, 1);
  t.false(now.includes(C), 'the one-way entry was dropped');
  t.deepEqual(now, [v2.slot, B, A]);
  ct1.endBatch();
  ct2.endBatch();
  ct1.close();
  ct2.close();
  inv(t, table);
});

test('a zone limit refusing at confirm, after the hint passed: refused with the zone reason, the namespace charge given back', (t) => {
  const table = ConntrackTable.create({ max: 256, namespaces: 4, maxWorkers: 4 });
  table.setZoneLimit(33, 1);
  const ct1 = new Conntrack(table);
  const ct2 = new Conntrack(table);
  ct1.beginBatch();
  ct2.beginBatch();
  let A = -1;
  raceAtConfirm(ct1, () => { A = assured(ct2, '10.25.0.1', 33, 2); });
  const q = udp4({ src: '10.25.0.2', dst: '192.0.2.2', sport: 6000, dport: 53 });
  const v = ct1.frame(LT, q, 0, q.length, NOW, 33, 2);
  t.true(A >= 0);
  t.true(v.drop);
  t.is(v.reason, 'zone limit');
  t.is(table.stats().total.zone_limit, 1);
  t.is(table.stats().total.ns_limit, 0);
  t.is(table.zoneCount(33), 1);
  t.is(table.namespaceCount(2), 1, 'only the other worker\'s entry');
  t.deepEqual(listNodes(table, LIST_ZONE, 33), [A]);
  // A one-way entry in between: dropped (oldest not-ASSURED of namespace 2 in zone 33), then confirmed.
  table.setZoneLimit(33, 2);
  let C = -1;
  raceAtConfirm(ct1, () => { C = oneWay(ct2, '10.25.0.3', 33, 2); });
  const q2 = udp4({ src: '10.25.0.4', dst: '192.0.2.2', sport: 6000, dport: 53 });
  const v2 = ct1.frame(LT, q2, 0, q2.length, NOW, 33, 2);
  t.true(C >= 0);
  t.false(v2.drop);
  t.deepEqual(listNodes(table, LIST_ZONE, 33), [v2.slot, A]);
  t.is(table.stats().total.early_drop, 1);
  t.is(table.zoneCount(33), 2);
  ct1.endBatch();
  ct2.endBatch();
  t.is(table.namespaceCount(2), 2);
  ct1.close();
  ct2.close();
  inv(t, table);
});

test('after crash recovery\'s rebuild the lists are still oldest-last: early_drop in a full zone drops the oldest not-ASSURED entry', (t) => {
  const table = ConntrackTable.create({ max: 512, namespaces: 3, maxWorkers: 4 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  // 40 one-way entries in zone 34 / namespace 2, in this order; their slots do not follow the
  // insertion order in the buckets, so a rebuild in bucket order would mix them.
  const s: number[] = [];
  for (let i = 0; i < 40; i++) s.push(oneWay(ct, `10.26.${i}.1`, 34, 2));
  ct.endBatch();
  const newestFirst = [...s].reverse();
  t.deepEqual(listNodes(table, LIST_ZONE, 34), newestFirst);
  rebuildZoneAccounting(table);
  t.deepEqual(listNodes(table, LIST_ZONE, 34), newestFirst, 'zone list order kept');
  t.deepEqual(listNodes(table, LIST_NS, 2), newestFirst, 'namespace list order kept');
  t.is(ct.chains.zones.dropCandidate(LIST_ZONE, 34, 2, NOW), s[0]);
  // The zone at its limit: the next insert evicts s[0], the oldest.
  table.setZoneLimit(34, 40);
  ct.beginBatch();
  const x = oneWay(ct, '10.26.99.1', 34, 2);
  ct.endBatch();
  t.deepEqual(listNodes(table, LIST_ZONE, 34), [x, ...newestFirst.slice(0, 39)], 'the oldest, s[0], was evicted');
  t.is(table.stats().total.early_drop, 1);
  ct.close();
  inv(t, table);
});

test('the rebuild reads the old order through a half-removed entry and a live walker\'s marker; a damaged list keeps what it can', (t) => {
  const table = ConntrackTable.create({ max: 512, namespaces: 2, maxWorkers: 4 });
  const i32 = table.i32;
  const ct = new Conntrack(table);
  const E = table.sec.entries;
  ct.beginBatch();
  const s: number[] = [];
  for (let i = 0; i < 12; i++) s.push(oneWay(ct, `10.27.${i}.1`, 36, 1));
  const zero = [oneWay(ct, '10.27.50.1', 0, 0), oneWay(ct, '10.27.50.2', 0, 0)]; // zone 0's list
  // A kill of s[5] that died between its two link writes (zones.ts remove(): the newer
  // neighbour's next first, then the older neighbour's prev): s[4]'s prev still names s[5].
  t.true(ct.chains.kill(s[5]!, KILL_DELETE));
  i32[E + s[4]! * ENTRY_WORDS + E_ZPREV] = s[5]!;
  ct.endBatch();
  const live = s.filter((x) => x !== s[5]);
  // A live walker (worker 1) inside a slice, its marker after the eight newest entries.
  const w2 = new ZoneAccounting(table, 1);
  const slots = new Int32Array(8);
  let rebuilt = false;
  let during: number[] = [];
  w2.walkList(LIST_ZONE, 36, 8, slots, new Int32Array(8), () => {
    if (rebuilt) return;
    rebuilt = true;
    rebuildZoneAccounting(table); // crash recovery for some other worker, mid-walk
    during = listNodes(table, LIST_ZONE, 36);
  });
  t.true(rebuilt);
  t.deepEqual(during, [table.capacity + 1, ...[...live].reverse()], 'the marker first (its walk starts over), then every entry newest first');
  t.deepEqual(listNodes(table, LIST_ZONE, 0), [...zero].reverse(), 'zone 0\'s list as it was');
  t.deepEqual(listNodes(table, LIST_ZONE, 36), [...live].reverse());
  t.deepEqual(listNodes(table, LIST_NS, 1), [...live].reverse());
  t.is(table.zoneCount(36), 11);
  inv(t, table);
  // A damaged list: s[8]'s prev names an entry of another zone. The walk keeps the order up to
  // there (s[0]..s[8] without s[5]) and the rest (s[9]..s[11]) go in front, the newest part.
  ct.beginBatch();
  const other = oneWay(ct, '10.27.99.1', 37, 1);
  ct.endBatch();
  i32[E + s[8]! * ENTRY_WORDS + E_ZPREV] = other;
  // And namespace 1's old head names a node past the table: that list is rebuilt in bucket order
  // only; zone 37's names a node far past it: the same.
  i32[table.sec.nsHeads + 1] = table.capacity + table.maxWorkers + 1;
  i32[table.sec.zacct + zoneRec(37) * ZA_WORDS + ZA_HEAD] = 1 << 30;
  rebuildZoneAccounting(table);
  const z = listNodes(table, LIST_ZONE, 36);
  t.is(z.length, 11);
  t.deepEqual(z.slice(3), [s[8], s[7], s[6], s[4], s[3], s[2], s[1], s[0]], 'the part read from the old links keeps its order, oldest last');
  // Entries the walk did not reach go first in bucket order (each pushed in front: the list shows
  // them reversed). The bucket order, read here from the chains' original tuplehashes:
  const inBuckets = bucketOrder(table);
  t.deepEqual(z.slice(0, 3), inBuckets.filter((x) => [s[9], s[10], s[11]].includes(x)).reverse());
  t.deepEqual(listNodes(table, LIST_NS, 1), inBuckets.filter((x) => [...live, other].includes(x)).reverse());
  t.deepEqual(listNodes(table, LIST_ZONE, 37), [other]);
  inv(t, table);
  ct.close();
});

test('cachedDeltas / foldAllCaches: exact per-id sums over every worker record, zero slots left out; a limit folds only namespace and zone deltas', (t) => {
  const table = ConntrackTable.create({ max: 512, namespaces: 4, maxWorkers: 4 });
  const i32 = table.i32;
  const ct1 = new Conntrack(table);
  const ct2 = new Conntrack(table);
  ct1.beginBatch();
  ct2.beginBatch();
  oneWay(ct1, '10.28.0.1', 40, 0);
  oneWay(ct1, '10.28.0.2', 40, 0);
  oneWay(ct1, '10.28.0.3', 41, 1);
  for (let i = 0; i < 3; i++) oneWay(ct2, `10.28.1.${i + 1}`, 40, 0);
  // 32 = COUNT_BATCH into zone 42 / namespace 2 from ct2: folded at once, its slots left with
  // delta 0 (ct2 uses 6 keys, ct1 6: fewer than ZC_SLOTS, so nothing is evicted).
  for (let i = 0; i < 32; i++) oneWay(ct2, `10.28.2.${i + 1}`, 42, 2);
  const asObj = (m: Map<number, number>): Record<number, number> => Object.fromEntries([...m].sort((a, b) => a[0] - b[0]));
  t.deepEqual(asObj(cachedDeltas(table, ZC_ZONE)), { 40: 5, 41: 1 });
  t.deepEqual(asObj(cachedDeltas(table, ZC_NS)), { 0: 5, 1: 1 });
  t.deepEqual(asObj(cachedDeltas(table, ZC_ZORIG)), { 40: 5, 41: 1 });
  t.is(i32[table.sec.zacct + zoneRec(42) * ZA_WORDS + ZA_COUNT], 32);
  // A limit on namespace 3: every record's namespace and zone deltas go into their words first.
  table.setNamespaceLimit(3, 10);
  t.is(i32[table.sec.ns + 0 * NS_WORDS + NS_COUNT], 5);
  t.is(i32[table.sec.ns + 1 * NS_WORDS + NS_COUNT], 1);
  t.is(i32[table.sec.ns + 2 * NS_WORDS + NS_COUNT], 32);
  t.is(i32[table.sec.zacct + zoneRec(40) * ZA_WORDS + ZA_COUNT], 5);
  t.is(i32[table.sec.zacct + zoneRec(41) * ZA_WORDS + ZA_COUNT], 1);
  t.is(cachedDeltas(table, ZC_ZONE).size, 0);
  t.is(cachedDeltas(table, ZC_NS).size, 0);
  // Their slots are free again (key word 0) in both records; the original-zone deltas stay.
  for (const w of [ct1.wid, ct2.wid]) {
    const base = table.sec.workers + w * WORKER_WORDS + W_ZC;
    for (let s = 0; s < ZC_SLOTS; s++) {
      const k = i32[base + 2 * s]! - 1;
      if (k >= 0) t.is(k >>> 17, ZC_ZORIG, `record ${w} slot ${s} holds only an original-zone key`);
    }
  }
  t.deepEqual(asObj(cachedDeltas(table, ZC_ZORIG)), { 40: 5, 41: 1 });
  t.is(i32[table.sec.zones + zoneRec(40)], 0, 'not folded by a limit');
  t.is(table.zoneCount(40), 5);
  ct1.endBatch();
  ct2.endBatch();
  t.is(i32[table.sec.zones + zoneRec(40)], 5);
  ct1.close();
  ct2.close();
  inv(t, table);
});

test('the counters read and fold the worker records\' deltas only, never the words after the last record (the zones section)', (t) => {
  const table = ConntrackTable.create({ max: 256, namespaces: 4, maxWorkers: 2 });
  const i32 = table.i32;
  // layout.ts: the zones section (one counter per original zone, at zoneRec(z)) follows the last
  // worker record. A record's W_ZC slot s is its words W_ZC + 2s, W_ZC + 2s + 1: one record past
  // the last would be zone records 80 + 2s, 81 + 2s; one slot past a record's 8 slots is the next
  // record's words 0, 1 (for the last record: zone records 0, 1).
  t.is(table.sec.workers + table.maxWorkers * WORKER_WORDS, table.sec.zones);
  t.is(W_ZC + 2 * ZC_SLOTS, WORKER_WORDS);
  // zoneRec(z) = (z & 15) << 12 | z >> 4: record 80 is zone 1280, 81 zone 1296, 0 zone 0, 1 zone 16.
  t.deepEqual([1280, 1296, 0, 16].map(zoneRec), [80, 81, 0, 1]);
  const ct = new Conntrack(table);
  ct.beginBatch();
  // Counter values that read as a key would be namespace 1's ((ZC_NS << 17 | 1) + 1 = 2), its "delta" the next.
  for (const [z, n] of [[1280, 2], [1296, 3], [0, 2], [16, 3]] as const) {
    for (let i = 0; i < n; i++) oneWay(ct, `10.29.${z & 255}.${i + 1}`, z, 0);
  }
  ct.endBatch();
  t.deepEqual([80, 81, 0, 1].map((r) => i32[table.sec.zones + r]), [2, 3, 2, 3]);
  t.is(table.namespaceCount(1), 0);
  t.is(cachedDelta(table, ZC_NS, 1), 0);
  t.is(cachedDeltas(table, ZC_NS).size, 0);
  t.is(ct.chains.zones.listCount(LIST_NS, 1), 0);
  table.setNamespaceLimit(2, 7); // folds every record: nothing past them
  t.deepEqual([80, 81, 0, 1].map((r) => i32[table.sec.zones + r]), [2, 3, 2, 3]);
  t.is(table.namespaceCount(0), 10);
  ct.close();
  inv(t, table);
});

test('a record\'s leftover deltas (a previous owner\'s) are folded at its new owner\'s first batch end, even with no insert', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 4 });
  const i32 = table.i32;
  const a = new Conntrack(table);
  a.beginBatch();
  for (let i = 0; i < 3; i++) oneWay(a, `10.30.0.${i + 1}`, 44, 1);
  a.endBatch();
  a.close();
  const nsw = table.sec.ns + 1 * NS_WORDS + NS_COUNT;
  t.is(i32[nsw], 3);
  const b = new Conntrack(table);
  // What a previous owner of b's record left unfolded: 2 of namespace 1's count still in slot 0.
  const base = table.sec.workers + b.wid * WORKER_WORDS + W_ZC;
  i32[base] = ((ZC_NS << 17) | 1) + 1;
  i32[base + 1] = 2;
  i32[nsw] = 1;
  t.is(table.namespaceCount(1), 3);
  b.beginBatch();
  b.endBatch();
  t.is(i32[nsw], 3, 'folded: the word alone is exact at rest');
  t.is(i32[base + 1], 0);
  b.close();
  inv(t, table);
});

test('nsLimit: 0 for a namespace without a record, whatever the words around the records hold', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 3 });
  const i32 = table.i32;
  const za = new ZoneAccounting(table, 0);
  table.setNamespaceLimit(2, 9);
  t.is(za.nsLimit(2), 9);
  // layout.ts: namespace 3's limit word would be past the records (padding before the bucket
  // stripes, layout 4); namespace -1's the last word of the zones section (zone 65535's counter,
  // zoneRec(65535) = 65535). Both hold values here.
  const past = table.sec.ns + 3 * NS_WORDS + 1;
  t.true(past < table.sec.locks);
  t.is(table.sec.ns - NS_WORDS + 1, table.sec.zones + zoneRec(65535));
  i32[past] = 9;
  i32[table.sec.zones + 65535] = 4;
  t.is(za.nsLimit(3), 0);
  t.is(za.nsLimit(-1), 0);
  t.is(za.atLimit(3, 0), 0);
  i32[past] = 0;
  i32[table.sec.zones + 65535] = 0;
});

test('deletes fold at -COUNT_BATCH: the 32nd delete of a batch moves the counter words', (t) => {
  const table = ConntrackTable.create({ max: 256, namespaces: 4 });
  const i32 = table.i32;
  const ct = new Conntrack(table);
  ct.beginBatch();
  const s: number[] = [];
  for (let i = 0; i < 40; i++) s.push(oneWay(ct, `10.31.0.${i + 1}`, 45, 1));
  ct.endBatch();
  const nsw = table.sec.ns + 1 * NS_WORDS + NS_COUNT;
  const zw = table.sec.zacct + zoneRec(45) * ZA_WORDS + ZA_COUNT;
  t.is(i32[nsw], 40);
  ct.beginBatch();
  for (let i = 0; i < 31; i++) t.true(ct.chains.kill(s[i]!, KILL_DELETE));
  t.is(i32[nsw], 40, '31 deletes: still in the delta');
  t.is(cachedDelta(table, ZC_NS, 1), -31);
  t.is(i32[zw], 40, 'the unlimited zone too');
  t.true(ct.chains.kill(s[31]!, KILL_DELETE));
  t.is(i32[nsw], 8, 'the 32nd folds');
  t.is(i32[zw], 8);
  t.is(cachedDelta(table, ZC_NS, 1), 0);
  t.is(table.namespaceCount(1), 8);
  ct.endBatch();
  t.is(table.zoneCount(45), 8);
  ct.close();
  inv(t, table);
});

test('the rebuild drops every record\'s namespace, zone and original-zone deltas and recounts the words', (t) => {
  const table = ConntrackTable.create({ max: 256, namespaces: 4, maxWorkers: 4 });
  const i32 = table.i32;
  const ct1 = new Conntrack(table);
  const ct2 = new Conntrack(table);
  ct1.beginBatch();
  ct2.beginBatch();
  for (let i = 0; i < 3; i++) oneWay(ct1, `10.32.0.${i + 1}`, 46 + i, i);
  for (let i = 0; i < 4; i++) oneWay(ct2, `10.32.1.${i + 1}`, 46 + i, i);
  t.true(cachedDeltas(table, ZC_ZORIG).size > 0);
  rebuildZoneAccounting(table);
  for (const k of [ZC_NS, ZC_ZONE, ZC_ZORIG]) t.is(cachedDeltas(table, k).size, 0, `kind ${k}`);
  for (const w of [ct1.wid, ct2.wid]) {
    const base = table.sec.workers + w * WORKER_WORDS + W_ZC;
    for (let s = 0; s < 2 * ZC_SLOTS; s++) t.is(i32[base + s], 0, `record ${w} word ${s}`);
  }
  // By hand: zone / namespace 46+i / i got one entry from ct1 (i < 3) and one from ct2.
  t.deepEqual([0, 1, 2, 3].map((i) => i32[table.sec.ns + i * NS_WORDS + NS_COUNT]), [2, 2, 2, 1]);
  t.deepEqual([46, 47, 48, 49].map((z) => i32[table.sec.zacct + zoneRec(z) * ZA_WORDS + ZA_COUNT]), [2, 2, 2, 1]);
  t.deepEqual([46, 47, 48, 49].map((z) => i32[table.sec.zones + zoneRec(z)]), [2, 2, 2, 1]);
  ct1.endBatch();
  ct2.endBatch();
  ct1.close();
  ct2.close();
  inv(t, table);
});

/**
 * Another thread takes lock word `idx` (as owner 7), says so, holds it `ms` ms, sets `flag[0]`
 * and releases it. Resolves once it holds the lock; `done` resolves when the thread has exited.
 */
async function holdElsewhere(buffer: SharedArrayBuffer, idx: number, ms: number): Promise<{ flag: Int32Array; done: Promise<unknown> }> {
  const { Worker } = await import('node:worker_threads');
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const w = new Worker(`
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.locks).then(({ lock, unlock }) => {
      const i32 = new Int32Array(workerData.buf);
      lock(i32, workerData.idx, 7);
      parentPort.postMessage('held');
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.ms);
      Atomics.store(workerData.flag, 0, 1); // released from here on
      unlock(i32, workerData.idx);
    });
  `, { eval: true, workerData: { buf: buffer, idx, ms, flag, locks: new URL('../src/table/locks.js', import.meta.url).href } });
  const done = new Promise((res) => w.once('exit', res));
  await new Promise<void>((res, rej) => { w.once('message', () => res()); w.once('error', rej); });
  return { flag, done };
}

test('setting a limit waits for every bucket stripe: a stripe held by another thread delays it until released', async (t) => {
  const table = ConntrackTable.create({ max: 64, namespaces: 2 });
  const idx = table.sec.locks + (table.locks - 1) * LOCK_STRIDE; // the last stripe: the whole range is taken
  const h = await holdElsewhere(table.buffer, idx, 300);
  table.setNamespaceLimit(1, 5);
  t.is(Atomics.load(h.flag, 0), 1, 'the limit was stored only after the other thread released its stripe');
  t.is(table.namespaceLimit(1), 5);
  await h.done;
  t.is(lockOwner(table.i32[idx]!), -1);
});

test('the rebuild waits for a list stripe a live walker holds (inside a slice), and rebuilds after it', async (t) => {
  const table = ConntrackTable.create({ max: 64, namespaces: 2 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const a = oneWay(ct, '10.38.0.1', 9, 1);
  ct.endBatch();
  // Zone 9's stripe (word 17 by hand), held by a live walker on another thread for 300 ms.
  const idx = table.sec.zlocks + 17;
  const h = await holdElsewhere(table.buffer, idx, 300);
  rebuildZoneAccounting(table);
  t.is(Atomics.load(h.flag, 0), 1, 'the rebuild ran only after the walker released the stripe');
  await h.done;
  t.is(lockOwner(table.i32[idx]!), -1);
  t.deepEqual(listNodes(table, LIST_ZONE, 9), [a]);
  ct.close();
  inv(t, table);
});

test('namespace id = namespaces (no record): dropCandidate, walkList and unlink use no word past the namespace heads', (t) => {
  // With 16 namespaces the word after the heads is zone 0's list stripe (layout.ts: heads, then
  // the zone-list stripes aligned to 16 words; zone 0's stripe at word zlStripe(0) = 0).
  const NSN = 16;
  const table = ConntrackTable.create({ max: 128, namespaces: NSN });
  const i32 = table.i32;
  t.is(table.sec.nsHeads + NSN, table.sec.zlocks);
  const ct = new Conntrack(table);
  ct.beginBatch();
  const s = [1, 2, 3, 4, 5, 6].map((i) => oneWay(ct, `10.33.0.${i}`, 5, 1));
  ct.endBatch();
  // Hold zone 0's stripe as an owner whose lock word, read as a head (slot + 1), names one of them:
  // the word is ((owner + 1) << 2) | 1, so the slot would be (owner + 1) * 4.
  const owner = s.map((x) => x / 4 - 1).find((o) => Number.isInteger(o) && o >= 0)!;
  t.true(owner !== undefined);
  lock(i32, table.sec.zlocks, owner);
  const word = i32[table.sec.zlocks]!;
  const za = ct.chains.zones;
  t.is(za.dropCandidate(LIST_NS, NSN, 0, NOW), -1);
  let called = 0;
  za.walkList(LIST_NS, NSN, 8, new Int32Array(8), new Int32Array(8), () => { called++; });
  t.is(called, 0);
  t.is(i32[table.sec.zlocks], word, 'the stripe word is untouched');
  unlock(i32, table.sec.zlocks);
  t.deepEqual(listNodes(table, LIST_NS, 1), [...s].reverse());
  // unlink of an entry without a namespace record whose namespace links are stale (its slot was
  // on namespace 1's list before): nothing of namespace 1's list may change.
  ct.beginBatch();
  t.true(ct.chains.kill(s[2]!, KILL_DELETE)); // its links keep naming s[3] and s[1]
  t.true(ct.chains.kill(s[1]!, KILL_DELETE));
  ct.endBatch();
  ct.beginBatch();
  ct.endBatch(); // a grace period: the slots are free again
  ct.beginBatch();
  const again: number[] = [];
  for (let i = 0; i < 4; i++) again.push(oneWay(ct, `10.33.1.${i + 1}`, 6, NSN));
  t.true(again.includes(s[2]!), 'a freed slot is reused');
  const before = listNodes(table, LIST_NS, 1);
  t.deepEqual(before, [s[5], s[4], s[3], s[0]]);
  t.true(ct.chains.kill(s[2]!, KILL_DELETE));
  ct.endBatch();
  t.deepEqual(listNodes(table, LIST_NS, 1), before);
  ct.close();
  inv(t, table);
});

test('a batch whose entry count nets to 0 still folds its namespace and zone deltas; the last record folds nothing past its slots', (t) => {
  const table = ConntrackTable.create({ max: 256, namespaces: 4, maxWorkers: 2 });
  const i32 = table.i32;
  const first = new Conntrack(table);
  const ct = new Conntrack(table);
  t.is(ct.wid, table.maxWorkers - 1, 'the last record');
  // As in the test above: original zones 0 and 16 (zone records 0 and 1, the words right after
  // the last record's slots) get counts 2 and 3, which read as a slot would be namespace 1's key and a delta.
  first.beginBatch();
  const theirs = [1, 2, 3, 4].map((i) => oneWay(first, `10.34.9.${i}`, 47, 2));
  first.endBatch();
  ct.beginBatch();
  const old = oneWay(ct, '10.34.0.1', 47, 2);
  ct.endBatch();
  ct.beginBatch();
  for (const [z, n] of [[0, 2], [16, 3]] as const) for (let i = 0; i < n; i++) oneWay(ct, `10.34.${z + 1}.${i + 1}`, z, 3);
  for (const x of [old, ...theirs]) t.true(ct.chains.kill(x, KILL_DELETE));
  t.is(i32[table.sec.workers + ct.wid * WORKER_WORDS + W_CNT], 0, 'ct: 5 inserts, 5 deletes');
  ct.endBatch();
  t.deepEqual([0, 1].map((r) => i32[table.sec.zones + r]), [2, 3]);
  t.is(i32[table.sec.ns + 3 * NS_WORDS + NS_COUNT], 5, 'folded at batch end');
  t.is(i32[table.sec.zacct + zoneRec(0) * ZA_WORDS + ZA_COUNT], 2);
  t.is(i32[table.sec.zacct + zoneRec(16) * ZA_WORDS + ZA_COUNT], 3);
  t.is(table.namespaceCount(1), 0);
  t.is(i32[table.sec.ns + 1 * NS_WORDS + NS_COUNT], 0);
  t.is(i32[table.sec.ns + 2 * NS_WORDS + NS_COUNT], 0);
  t.is(i32[table.sec.zacct + zoneRec(47) * ZA_WORDS + ZA_COUNT], 0);
  t.is(i32[table.sec.zones + zoneRec(47)], 0);
  first.close();
  ct.close();
  inv(t, table);
});

test('setting a limit takes exactly the bucket stripes: the word after the last one (here bucket 0\'s head) is left alone', (t) => {
  // max 64 with 8 namespaces: the stripes end on a 16-word boundary, so the buckets follow at once.
  const table = ConntrackTable.create({ max: 64, namespaces: 8 });
  t.is(table.sec.locks + table.locks * LOCK_STRIDE, table.sec.buckets);
  const ct = new Conntrack(table);
  ct.beginBatch();
  for (let i = 0; i < 20; i++) oneWay(ct, `10.35.0.${i + 1}`, 0, 1);
  ct.endBatch();
  const head0 = table.i32[table.sec.buckets]!;
  table.setNamespaceLimit(1, 30);
  table.setZoneLimit(3, 5);
  t.is(table.i32[table.sec.buckets], head0);
  for (let l = 0; l < table.locks; l++) t.is(table.i32[table.sec.locks + l * LOCK_STRIDE], 0, `stripe ${l} released`);
  t.is(table.namespaceCount(1), 20);
  ct.close();
  inv(t, table);
});

test('namespace -1 (no record): charge, link, unlink, dropCandidate, walkList and listCount touch no word before the namespace records', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 4 });
  const i32 = table.i32;
  // layout.ts: namespace -1's count / limit words would be the zones section's last two (zone
  // records 65534, 65535: zones 65519 and 65535); its list head the word before the heads, zone
  // record 65535's ZA_HEAD (zone 65535's list).
  t.deepEqual([65519, 65535].map(zoneRec), [65534, 65535]);
  t.is(table.sec.nsHeads - 1, table.sec.zacct + 65535 * ZA_WORDS + ZA_HEAD);
  const watch = [table.sec.zones + 65534, table.sec.zones + 65535, table.sec.nsHeads - 1,
    table.sec.zacct + 65535 * ZA_WORDS + ZA_COUNT, table.sec.zacct + 65534 * ZA_WORDS + ZA_HEAD];
  const ct = new Conntrack(table);
  ct.beginBatch();
  const s = [1, 2, 3].map((i) => oneWay(ct, `10.36.0.${i}`, 48, -1));
  const other = oneWay(ct, '10.36.1.1', 65535, 1); // zone 65535's own list: one entry
  oneWay(ct, '10.36.1.2', 65519, 1); // and one in zone 65519
  t.true(ct.chains.kill(s[1]!, KILL_DELETE));
  ct.endBatch();
  const zw = watch.map((w) => i32[w]);
  t.deepEqual(zw.slice(0, 2), [1, 1], 'zones 65519 and 65535 count one each');
  t.is(zw[2], other + 1, 'zone 65535\'s head is its own entry');
  t.deepEqual(listNodes(table, LIST_ZONE, 48), [s[2], s[0]]);
  t.deepEqual(listNodes(table, LIST_ZONE, 65535), [other]);
  t.is(table.zoneCount(48), 2);
  const za = ct.chains.zones;
  t.is(za.listCount(LIST_NS, -1), 0);
  t.is(za.dropCandidate(LIST_NS, -1, 0, NOW), -1);
  let called = 0;
  za.walkList(LIST_NS, -1, 8, new Int32Array(8), new Int32Array(8), () => { called++; });
  t.is(called, 0);
  t.is(za.charge(-1, 49), 0);
  za.uncharge(-1, 49);
  t.deepEqual(watch.map((w) => i32[w]), zw, 'nothing of zone 65519 / 65535 changed');
  t.deepEqual(listNodes(table, LIST_ZONE, 65535), [other]);
  ct.close();
  inv(t, table);
});

test('a limited namespace or zone is counted in its word only: a delete frees room at once, a refused charge leaves no delta', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 4 });
  const i32 = table.i32;
  table.setNamespaceLimit(1, 2);
  table.setZoneLimit(50, 2);
  const ct = new Conntrack(table);
  const za = ct.chains.zones;
  const nsw = table.sec.ns + 1 * NS_WORDS + NS_COUNT;
  const zw = table.sec.zacct + zoneRec(50) * ZA_WORDS + ZA_COUNT;
  ct.beginBatch();
  const a = oneWay(ct, '10.37.0.1', 51, 1);
  const b = oneWay(ct, '10.37.0.2', 51, 1);
  const c = oneWay(ct, '10.37.1.1', 50, 2);
  const d = oneWay(ct, '10.37.1.2', 50, 2);
  t.is(i32[nsw], 2);
  t.is(i32[zw], 2);
  // Delete one of each mid-batch: the words drop at once (no delta), so an insert fits without early_drop.
  t.true(ct.chains.kill(a, KILL_DELETE));
  t.true(ct.chains.kill(c, KILL_DELETE));
  t.is(i32[nsw], 1);
  t.is(i32[zw], 1);
  t.is(cachedDelta(table, ZC_NS, 1), 0);
  t.is(cachedDelta(table, ZC_ZONE, 50), 0);
  t.is(za.atLimit(1, 51), 0);
  t.is(za.atLimit(2, 50), 0);
  const e = oneWay(ct, '10.37.0.3', 51, 1);
  const f = oneWay(ct, '10.37.1.3', 50, 2);
  t.is(table.stats().total.early_drop, 0);
  t.deepEqual(listNodes(table, LIST_NS, 1), [e, b]);
  t.deepEqual(listNodes(table, LIST_ZONE, 50), [f, d]);
  // Zone 50 full again: a charge for namespace 1 (full too) is refused by the namespace first;
  // with room in namespace 1 (limit 3) the zone refuses and the namespace word is given back.
  t.is(za.charge(1, 50), CONFIRM_NS_LIMIT);
  table.setNamespaceLimit(1, 3);
  t.is(za.charge(1, 50), CONFIRM_ZONE_LIMIT);
  t.is(i32[nsw], 2, 'given back in the word');
  t.is(cachedDelta(table, ZC_NS, 1), 0, 'not as a delta');
  // A namespace without a record refused by the zone: nothing to give back, no word touched.
  const header = Array.from(i32.subarray(0, table.sec.zacct));
  t.is(za.charge(4, 50), CONFIRM_ZONE_LIMIT);
  t.is(i32[zw], 2);
  t.deepEqual(Array.from(i32.subarray(0, table.sec.zacct)), header, 'no word before the zone records changed');
  ct.endBatch();
  ct.close();
  inv(t, table);
});

test('the rebuild under the caller\'s bucket stripes: they stay held, limits stay; a cyclic chain does not stop it', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 4 });
  const i32 = table.i32;
  table.setZoneLimit(52, 9);
  table.setNamespaceLimit(2, 7);
  const ct = new Conntrack(table);
  ct.beginBatch();
  const s = [1, 2, 3].map((i) => oneWay(ct, `10.39.0.${i}`, 52, 2));
  oneWay(ct, '10.39.1.1', 53, 4); // namespaces without a record
  oneWay(ct, '10.39.1.2', 53, -1);
  ct.endBatch();
  // Recovery holds every bucket stripe around the rebuild (as owner 3 here). A second worker is
  // online (inside a batch): its record's words other than its delta slots must not change.
  const ct2 = new Conntrack(table);
  ct2.beginBatch();
  const rec = (w: number): number[] => Array.from(i32.subarray(table.sec.workers + w * WORKER_WORDS, table.sec.workers + w * WORKER_WORDS + W_ZC));
  const recs = [ct.wid, ct2.wid].map(rec);
  t.not(recs[1]![0], 0, 'ct2 is online');
  for (let l = 0; l < table.locks; l++) lock(i32, table.sec.locks + l, 3);
  rebuildZoneAccounting(table);
  t.deepEqual([ct.wid, ct2.wid].map(rec), recs, 'the records outside their delta slots are untouched');
  ct2.endBatch();
  ct2.close();
  t.is(i32[table.sec.zacct + 65535 * ZA_WORDS + ZA_HEAD], 0, 'zone 65535 has no list: nothing of namespace -1 was linked there');
  for (let l = 0; l < table.locks; l++) t.is(lockOwner(i32[table.sec.locks + l]!), 3, `stripe ${l} still the caller's`);
  for (let l = 0; l < table.locks; l++) unlock(i32, table.sec.locks + l);
  t.deepEqual(table.zoneLimit(52), { limit: 9, own: true });
  t.is(table.namespaceLimit(2), 7);
  t.deepEqual(listNodes(table, LIST_ZONE, 52), [...s].reverse());
  // A chain that loops on itself (s[0]'s original next names its own original tuplehash): the
  // rebuild's walk of that bucket is bounded and it returns.
  const e0 = table.sec.entries + s[0]! * ENTRY_WORDS;
  const saved = i32[e0 + E_NEXT]!;
  i32[e0 + E_NEXT] = s[0]! << 1;
  rebuildZoneAccounting(table);
  t.pass('returned');
  i32[e0 + E_NEXT] = saved;
  rebuildZoneAccounting(table);
  t.is(table.zoneCount(52), 3);
  t.is(table.zoneCount(53), 2);
  ct.close();
  inv(t, table);
});

test('the rebuild leaves a stripe held by another dead holder alone (after its 2 s wait) and reads a list that loops', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 4, maxWorkers: 8 });
  const i32 = table.i32;
  const ct = new Conntrack(table);
  ct.beginBatch();
  const s = [1, 2, 3, 4, 5].map((i) => oneWay(ct, `10.40.0.${i}`, 54, 1));
  ct.endBatch();
  // Zone 54's old list loops: s[3]'s prev names s[1] (s1 -> s2 -> s3 -> s1 ...) instead of s[4].
  i32[table.sec.entries + s[3]! * ENTRY_WORDS + E_ZPREV] = s[1]!;
  // Worker 5 died holding zone 200's stripe (200 & 127 = 72: word (0 << 4) | 9 = 9); worker 6 is the one recovered.
  lock(i32, table.sec.zlocks + 9, 5);
  rebuildZoneAccounting(table, 6);
  t.is(lockOwner(i32[table.sec.zlocks + 9]!), 5, 'still worker 5\'s: left to its own recovery');
  // The loop is read once around (s[0]..s[3] in order); s[4], not reached, goes in front.
  t.deepEqual(listNodes(table, LIST_ZONE, 54), [s[4], s[3], s[2], s[1], s[0]]);
  unlock(i32, table.sec.zlocks + 9);
  ct.close();
  inv(t, table);
});

test('namespace 0 is a namespace with a record like the others: its limit, its early_drop, its list walk', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 2 });
  table.setNamespaceLimit(0, 2);
  const ct = new Conntrack(table);
  const za = ct.chains.zones;
  ct.beginBatch();
  const a = oneWay(ct, '10.41.0.1', 55, 0);
  const b = oneWay(ct, '10.41.0.2', 55, 0);
  t.is(za.nsLimit(0), 2);
  t.is(za.atLimit(0, 55), CONFIRM_NS_LIMIT);
  t.is(za.dropCandidate(LIST_NS, 0, 0, NOW), a);
  const c = oneWay(ct, '10.41.0.3', 56, 0); // evicts a, the oldest not-ASSURED of namespace 0
  ct.endBatch();
  t.is(table.namespaceCount(0), 2);
  t.is(table.stats().total.early_drop, 1);
  const seen: number[] = [];
  const slots = new Int32Array(4);
  za.walkList(LIST_NS, 0, 4, slots, new Int32Array(4), (n) => { for (let i = 0; i < n; i++) seen.push(slots[i]!); });
  t.deepEqual(seen, [c, b]);
  ct.close();
  inv(t, table);
});

test('slot 0 as a list\'s newest entry (head word 1): early_drop finds it, the rebuild reads that list', (t) => {
  const table = ConntrackTable.create({ max: 64, namespaces: 2 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  // Allocate until slot 0 comes out, each in its own zone; then slot 0's zone gets an older entry first.
  let z0 = -1;
  for (let i = 0; i < table.capacity && z0 < 0; i++) {
    if (oneWay(ct, `10.42.${i >> 8}.${i & 255}`, 100 + i, 1) === 0) z0 = 100 + i;
  }
  ct.endBatch();
  t.true(z0 >= 0, 'slot 0 was handed out');
  t.deepEqual(listNodes(table, LIST_ZONE, z0), [0]);
  t.is(table.i32[table.sec.zacct + zoneRec(z0) * ZA_WORDS + ZA_HEAD], 1);
  t.is(ct.chains.zones.dropCandidate(LIST_ZONE, z0, 1, NOW), 0);
  t.is(ct.chains.zones.dropCandidate(LIST_NS, 1, 0, NOW) >= 0, true);
  // The namespace list: slot 0 is its newest entry too. Its order survives the rebuild.
  const nsBefore = listNodes(table, LIST_NS, 1);
  t.is(nsBefore[0], 0);
  rebuildZoneAccounting(table);
  t.deepEqual(listNodes(table, LIST_NS, 1), nsBefore);
  t.deepEqual(listNodes(table, LIST_ZONE, z0), [0]);
  ct.close();
  inv(t, table);
});

test('the rebuild reads an old list through worker 0\'s marker (node number = capacity)', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 2, maxWorkers: 4 });
  const i32 = table.i32;
  const ct = new Conntrack(table);
  ct.beginBatch();
  const s = [1, 2, 3].map((i) => oneWay(ct, `10.43.0.${i}`, 57, 1));
  ct.endBatch();
  // Worker 0 is walking zone 57 (its marker first), then six more entries come in front of it.
  const w0 = new ZoneAccounting(table, 0);
  w0.pushMarker(0, (LIST_ZONE << 17) | 57);
  i32[table.sec.markers + MK_LIST] = ((LIST_ZONE << 17) | 57) + 1;
  ct.beginBatch();
  for (let i = 4; i <= 9; i++) s.push(oneWay(ct, `10.43.0.${i}`, 57, 1));
  ct.endBatch();
  t.deepEqual(listNodes(table, LIST_ZONE, 57), [...s.slice(3).reverse(), table.capacity, ...s.slice(0, 3).reverse()]);
  rebuildZoneAccounting(table);
  t.deepEqual(listNodes(table, LIST_ZONE, 57), [table.capacity, ...[...s].reverse()], 'every entry in its order, the marker first');
  w0.dropMarker(0, 100);
  ct.close();
  inv(t, table);
});

test('the end-of-batch fold sees a delta in any slot, also when the first slots hold none', (t) => {
  const table = ConntrackTable.create({ max: 128, namespaces: 4 });
  const i32 = table.i32;
  const ct = new Conntrack(table);
  ct.beginBatch();
  const x = oneWay(ct, '10.44.0.1', 58, 0); // slots 0-2: namespace 0, zone 58, original zone 58
  const w = oneWay(ct, '10.44.0.2', 60, 1); // slots 3-5: namespace 1, zone 60, original zone 60
  ct.endBatch();
  ct.beginBatch();
  t.true(ct.chains.kill(x, KILL_DELETE)); // slots 0-2: -1
  t.true(ct.chains.kill(w, KILL_DELETE)); // slots 3-5: -1
  // Zone 59 / namespace 1: slot 3 back to 0, then zone 59 takes the first free or zero-delta
  // slot (3), original zone 59 the next (6, free).
  oneWay(ct, '10.44.0.4', 59, 1);
  oneWay(ct, '10.44.0.3', 58, 0); // slots 0-2 back to 0
  const base = table.sec.workers + ct.wid * WORKER_WORDS + W_ZC;
  t.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map((s) => i32[base + 2 * s + 1]), [0, 0, 0, 1, -1, -1, 1, 0]);
  t.is(i32[table.sec.workers + ct.wid * WORKER_WORDS + W_CNT], 0, 'two inserts, two deletes');
  ct.endBatch();
  t.is(i32[table.sec.zacct + zoneRec(60) * ZA_WORDS + ZA_COUNT], 0);
  t.is(i32[table.sec.zacct + zoneRec(59) * ZA_WORDS + ZA_COUNT], 1);
  t.is(i32[table.sec.zones + zoneRec(60)], 0);
  t.is(i32[table.sec.zones + zoneRec(59)], 1);
  ct.close();
  inv(t, table);
});
