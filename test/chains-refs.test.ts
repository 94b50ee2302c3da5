/**
 * Unit tests of src/table/chains.ts on one thread (several trackers as several workers), each
 * against a hand-worked outcome: keyEquals' words past the full hash (protocol, namespace, the
 * direction's zone, every tuple word), confirm's clash result (the clashing tuplehash, never
 * mistaken for a status code; a reference taken and named in W_HELD in 'refcount'), the
 * refcount discipline (find / getRef / put / W_HELD, the last reference freeing the slot, a
 * killed entry still referenced never found), the bucket lock stripes held while confirm and
 * kill change the chains, and the expedited grace periods of allocSlow (a free list emptied by
 * slots waiting in limbo while another worker is inside its batch). Written for the survivors
 * of the mutation run (docs/mutation/mutchains.md).
 */
import test from 'ava';
import { Chains, CONFIRM_CHAIN_TOOLONG, CONFIRM_DYING, CONFIRM_OK, KILL_DELETE } from '../src/table/chains.js';
import { Conntrack } from '../src/track/core.js';
import {
  E_HASH, E_NS, E_PRIV, E_PROTO, E_REFCNT, E_STATUS, E_TIMEOUT, E_TUPLE, E_ZONE, E_GEN, ENTRY_WORDS,
  H_COUNT, H_EPOCH, H_FREE_HEAD, H_GC_WAKE, E_LINK, IPS_ASSURED, IPS_CONFIRMED, IPS_DYING, PRIV_WORDS, TUPLE_WORDS, W_CACHE,
  W_CACHE_COUNT, W_CNT, W_HELD, W_INTENT_SLOT, W_RELEASE, W_RES, WORKER_WORDS, E_MARK, E_EXT,
  LOCK_STRIDE,
} from '../src/table/layout.js';
import { lockOwner } from '../src/table/locks.js';
import { CONFIRM_NS_LIMIT, CONFIRM_ZONE_LIMIT } from '../src/table/zones.js';
import { ConntrackTable } from '../src/table/table.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { udp4 } from './helpers/frames.js';
import { inv, stat, tup } from './helpers/table-checks.js';

const NOW = 1_000_000;
const P = 17 << 8 | 2; // E_PROTO of UDP over IPv4 (l4 << 8 | family); chains only compares it




interface Key { orig: Int32Array; reply: Int32Array; proto?: number; zone?: number; ns?: number; h0?: number; h1?: number }

/**
 * A private entry with this key, its hashes computed as the tracker does (or given, to force a
 * full-hash match between different keys), 30 s to live. Returns the slot.
 */
function make(c: Chains, k: Key): number {
  const i32 = c.i32;
  const proto = k.proto ?? P;
  const zone = k.zone ?? 0;
  const ns = k.ns ?? 0;
  const h0 = k.h0 ?? c.hash(k.orig, 0, proto, zone & 0xffff, ns);
  const slot = c.newEntry(h0, NOW, ns);
  if (slot < 0) return slot;
  const e = c.entry(slot);
  i32.set(k.orig, e + E_TUPLE);
  i32.set(k.reply, e + E_TUPLE + TUPLE_WORDS);
  i32[e + E_PROTO] = proto;
  i32[e + E_ZONE] = zone;
  i32[e + E_NS] = ns;
  i32[e + E_HASH] = h0 | 0;
  i32[e + E_HASH + 1] = (k.h1 ?? c.hash(k.reply, 0, proto, zone >>> 16, ns)) | 0;
  i32[e + E_TIMEOUT] = NOW + 30_000;
  return slot;
}

/** make() and confirm(); the slot (the test fails when confirm refuses). */
function insert(t: { is: (a: unknown, b: unknown, m?: string) => void }, c: Chains, k: Key): number {
  const s = make(c, k);
  t.is(c.confirm(s), CONFIRM_OK, 'confirmed');
  return s;
}

test('keyEquals: a full hash match is not a match unless the tuple, protocol, namespace and that direction\'s zone agree', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16, namespaces: 4 });
  const ct = new Conntrack(table);
  const c = ct.chains;
  const i32 = table.i32;
  ct.beginBatch();
  const T = tup(1000);
  const R = tup(2000);
  const a = insert(t, c, { orig: T, reply: R });
  const ea = c.entry(a);
  const h0 = i32[ea + E_HASH]!;
  const h1 = i32[ea + E_HASH + 1]!;
  // Each below carries a's two hashes (a forced full-hash match) and differs in one word.
  const same = { orig: T, reply: R, h0, h1 };
  const byProto = insert(t, c, { ...same, proto: P + 0x100 });
  const byNs = insert(t, c, { ...same, ns: 1 });
  const byBothZones = insert(t, c, { ...same, zone: 5 | 6 << 16 });
  const lastWord = (x: Int32Array): Int32Array => { const y = x.slice(); y[TUPLE_WORDS - 1]! += 1; return y; };
  const firstWord = (x: Int32Array): Int32Array => { const y = x.slice(); y[0]! += 1; return y; };
  const byLast = insert(t, c, { orig: lastWord(T), reply: lastWord(R), h0, h1 });
  const byFirst = insert(t, c, { orig: firstWord(T), reply: firstWord(R), h0, h1 });
  t.is(table.count, 6, 'none of them clashed with a');
  // Same original zone, another reply zone: the original tuplehash is a's (a clash there).
  const z1 = make(c, { ...same, zone: 0 | 7 << 16 });
  t.is(c.confirm(z1), a << 1, 'clash on a\'s original tuplehash');
  c.discard(z1);
  // Another original zone, the same reply zone: the reply tuplehash clashes.
  const z2 = make(c, { ...same, zone: 8 | 0 << 16 });
  t.is(c.confirm(z2), (a << 1) | 1, 'clash on a\'s reply tuplehash');
  c.discard(z2);
  // The same key under another full hash (same bucket: bits above the mask differ) is not a's.
  const rehash = insert(t, c, { orig: T, reply: R, h0: h0 ^ 0x100, h1: h1 ^ 0x100 });
  t.is(table.count, 7);
  // Lookups find each by its own key.
  t.is(c.find(T, 0, P, 0, 0, h0, NOW), a << 1, 'a by its key');
  t.is(c.find(T, 0, P + 0x100, 0, 0, h0, NOW), byProto << 1);
  t.is(c.find(T, 0, P, 0, 1, h0, NOW), byNs << 1);
  t.is(c.find(T, 0, P, 5, 0, h0, NOW, 6), byBothZones << 1);
  t.is(c.find(lastWord(T), 0, P, 0, 0, h0, NOW), byLast << 1);
  t.is(c.find(firstWord(T), 0, P, 0, 0, h0, NOW), byFirst << 1);
  t.is(c.find(T, 0, P, 0, 0, h0 ^ 0x100, NOW), rehash << 1);
  t.is(c.find(R, 0, P, 0, 0, h1, NOW), (a << 1) | 1, 'a\'s reply tuplehash');
  t.is(c.find(R, 0, P, 6, 0, h1, NOW, 6), (byBothZones << 1) | 1, 'reply zone 6 (the original zone of that packet is 6 too)');
  t.is(c.find(T, 0, P + 0x200, 0, 0, h0, NOW), -1, 'an unknown protocol');
  t.is(c.find(T, 0, P, 0, 2, h0, NOW), -1, 'an unknown namespace');
  t.is(c.find(T, 0, P, 9, 0, h0, NOW), -1, 'an unknown zone');
  // The forged hashes are not the tuples' own (the invariants would say so): remove those entries.
  for (const s of [byProto, byNs, byBothZones, byLast, byFirst, rehash]) t.true(c.kill(s, KILL_DELETE));
  t.is(table.count, 1);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('confirm: a clash returns the clashing tuplehash (slot << 1 | dir), never one of the status codes, and changes nothing', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16 });
  const ct = new Conntrack(table);
  const c = ct.chains;
  ct.beginBatch();
  // Entries in slots 0 and 1: their tuplehashes are the references 0, 1 (slot 0) and 2, 3 (slot 1),
  // the values a status code would have if its sign were lost.
  const made: number[] = [];
  const bySlot = new Map<number, { orig: Int32Array; reply: Int32Array }>();
  for (let i = 0; i < 200 && !(bySlot.has(0) && bySlot.has(1)); i++) {
    const k = { orig: tup(10_000 + i * 100), reply: tup(50_000 + i * 100) };
    const s = insert(t, c, k);
    made.push(s);
    bySlot.set(s, k);
  }
  t.true(bySlot.has(0) && bySlot.has(1), 'slots 0 and 1 were handed out');
  const n = table.count;
  const cases: [Int32Array, Int32Array, number, number][] = [
    [bySlot.get(0)!.reply, tup(90_000), 1, CONFIRM_OK],
    [bySlot.get(1)!.orig, tup(91_000), 2, CONFIRM_CHAIN_TOOLONG],
    [tup(92_000), bySlot.get(1)!.reply, 3, CONFIRM_DYING],
  ];
  for (const [orig, reply, want, code] of cases) {
    const s = make(c, { orig, reply });
    const r = c.confirm(s);
    t.is(r, want, `clash with tuplehash ${want}`);
    t.not(r, code, 'not a status code');
    t.is(table.i32[c.entry(s) + E_STATUS]! & IPS_CONFIRMED, 0, 'the loser stays unconfirmed');
    t.is(table.i32[table.sec.workers + ct.wid * WORKER_WORDS + W_HELD], 0, '\'noref\' records no reference');
    c.discard(s);
  }
  t.is(table.count, n);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('refcount: a clash takes a reference on the winner and names it in W_HELD; put gives it back', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16, discipline: 'refcount' });
  const ct = new Conntrack(table);
  const c = ct.chains;
  const i32 = table.i32;
  const W = table.sec.workers + ct.wid * WORKER_WORDS;
  ct.beginBatch();
  const a = insert(t, c, { orig: tup(100), reply: tup(200) });
  const b = insert(t, c, { orig: tup(300), reply: tup(400) });
  t.is(i32[c.entry(a) + E_REFCNT], 1, 'the table\'s reference');
  const s = make(c, { orig: tup(400), reply: tup(500) }); // its original is b's reply tuple
  t.is(c.confirm(s), (b << 1) | 1);
  t.is(i32[c.entry(b) + E_REFCNT], 2, 'the clash holds a reference');
  t.is(i32[W + W_HELD], b + 1, 'named for recovery');
  c.discard(s);
  c.put(b);
  t.is(i32[c.entry(b) + E_REFCNT], 1);
  t.is(i32[W + W_HELD], 0);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('refcount: find takes a reference (W_HELD), put drops it; a killed entry lives until the last put, and is never found', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16, discipline: 'refcount' });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  const C = new Conntrack(table);
  const i32 = table.i32;
  const WB = table.sec.workers + B.wid * WORKER_WORDS;
  const ka = { orig: tup(100), reply: tup(200) };
  const kb = { orig: tup(300), reply: tup(400) };
  A.beginBatch();
  const a = insert(t, A.chains, ka);
  const b = insert(t, A.chains, kb);
  A.endBatch();
  const ea = A.chains.entry(a);
  const ha = i32[ea + E_HASH]!;
  const hb = i32[A.chains.entry(b) + E_HASH]!;
  const hr = i32[ea + E_HASH + 1]!;
  B.beginBatch();
  t.is(B.chains.find(ka.orig, 0, P, 0, 0, ha, NOW), a << 1);
  t.is(i32[ea + E_REFCNT], 2);
  t.is(i32[WB + W_HELD], a + 1);
  t.is(B.chains.find(kb.orig, 0, P, 0, 0, hb, NOW), b << 1);
  t.is(i32[WB + W_HELD], b + 1, 'W_HELD names the newest reference');
  B.chains.put(a);
  t.is(i32[WB + W_HELD], b + 1, 'a put of another slot leaves it');
  t.is(i32[ea + E_REFCNT], 1);
  B.chains.put(b);
  t.is(i32[WB + W_HELD], 0);
  // By the reply tuplehash: the reference is on the same slot.
  t.is(B.chains.find(ka.reply, 0, P, 0, 0, hr, NOW), (a << 1) | 1);
  t.is(i32[ea + E_REFCNT], 2);
  t.is(i32[WB + W_HELD], a + 1);
  // A deletes it while B still holds its reference: the slot is not reused yet.
  A.beginBatch();
  t.true(A.chains.kill(a, KILL_DELETE));
  t.is(i32[ea + E_REFCNT], 1, 'only B\'s reference left');
  t.not(i32[ea + E_STATUS]! & IPS_DYING, 0);
  t.is(A.chains.find(ka.orig, 0, P, 0, 0, ha, NOW), -1, 'not found once dying');
  A.endBatch();
  t.false(allocatable(table, a), 'still referenced');
  B.chains.put(a);
  t.is(i32[ea + E_REFCNT], 0);
  t.is(i32[WB + W_HELD], 0);
  t.is(i32[WB + W_RELEASE], 0, 'the release finished');
  t.true(allocatable(table, a), 'the last put freed it');
  t.false(B.chains.getRef(ea), 'no reference on a freed entry');
  t.is(i32[ea + E_REFCNT], 0, 'never resurrected');
  B.endBatch();

  // A lookup that matches an entry, which is then killed (but still referenced by C) before the
  // lookup's reference is taken: the re-check under the reference sees DYING and gives it back.
  C.beginBatch();
  t.is(C.chains.find(kb.orig, 0, P, 0, 0, hb, NOW), b << 1);
  const eb = A.chains.entry(b);
  let raced = false;
  class Overtaken extends Chains {
    override getRef(e: number): boolean {
      if (!raced) {
        raced = true;
        A.beginBatch();
        t.true(A.chains.kill(b, KILL_DELETE));
        A.endBatch();
      }
      return super.getRef(e);
    }
  }
  const wid = table.registerWorker();
  const racy = new Overtaken(table, wid);
  const restarts = (): number => stat(table, 'search_restart');
  const r0 = restarts();
  t.is(racy.find(kb.orig, 0, P, 0, 0, hb, NOW), -1, 'a dying entry is not returned');
  t.true(raced);
  t.is(restarts(), r0 + 1, 'one restart');
  t.is(i32[eb + E_REFCNT], 1, 'the lookup gave its reference back; C\'s is left');
  t.is(i32[table.sec.workers + wid * WORKER_WORDS + W_HELD], 0);
  table.releaseWorker(wid);
  C.chains.put(b);
  C.endBatch();
  t.true(allocatable(table, b));
  inv(t, table);
  A.close();
  B.close();
  C.close();
});

/** Is `slot` on the shared free list or in any worker's cache (allocatable)? */
function allocatable(table: ConntrackTable, slot: number): boolean {
  const i32 = table.i32;
  for (let s = i32[H_FREE_HEAD]!, n = 0; s >= 0 && n <= table.capacity; s = i32[table.sec.entries + s * ENTRY_WORDS + E_LINK]!, n++) {
    if (s === slot) return true;
  }
  for (let w = 0; w < table.maxWorkers; w++) {
    const base = table.sec.workers + w * WORKER_WORDS;
    const n = Atomics.load(i32, base + W_CACHE_COUNT);
    for (let k = 0; k < n; k++) if (i32[base + W_CACHE + k] === slot) return true;
  }
  return false;
}

test('confirm and kill change the chains holding both buckets\' lock stripes (one stripe when they share it)', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16 });
  const ct = new Conntrack(table);
  const c = ct.chains;
  const i32 = table.i32;
  const L = table.sec.locks;
  const lockMask = table.locks - 1;
  t.is(table.locks, 16, 'one stripe a bucket here');
  let seen: number[] = [];
  const z = c.zones;
  const charge = z.charge.bind(z);
  const unlink = z.unlink.bind(z);
  const owners = (): number[] => {
    const out: number[] = [];
    for (let l = 0; l <= lockMask; l++) if (lockOwner(Atomics.load(i32, L + l * LOCK_STRIDE)) === ct.wid) out.push(l);
    return out;
  };
  z.charge = (ns, zk) => { seen = owners(); return charge(ns, zk); };
  z.unlink = (s, ns, zk) => { seen = owners(); unlink(s, ns, zk); };
  // The order stripes are taken in: every compare-exchange taking a free stripe word.
  let taken: number[] = [];
  const cas = Atomics.compareExchange;
  (Atomics as { compareExchange: typeof cas }).compareExchange = ((a: Int32Array, idx: number, expected: number, v: number): number => {
    if (a === i32 && idx >= L && idx <= L + lockMask * LOCK_STRIDE && (idx - L) % LOCK_STRIDE === 0 && expected === 0) taken.push((idx - L) / LOCK_STRIDE);
    return cas(a, idx, expected, v);
  }) as typeof cas;
  t.teardown(() => { (Atomics as { compareExchange: typeof cas }).compareExchange = cas; });
  ct.beginBatch();
  let lt = 0;
  let gt = 0;
  let eq = 0;
  for (let i = 0; i < 400 && (lt < 2 || gt < 2 || eq < 1); i++) {
    const k = { orig: tup(7000 + i * 20), reply: tup(90_000 + i * 20) };
    const s = make(c, k);
    const e = c.entry(s);
    const l0 = i32[e + E_HASH]! & lockMask;
    const l1 = i32[e + E_HASH + 1]! & lockMask;
    const kind = l0 < l1 ? 'lt' : l0 > l1 ? 'gt' : 'eq';
    if ((kind === 'lt' && lt >= 2) || (kind === 'gt' && gt >= 2) || (kind === 'eq' && eq >= 1)) { c.discard(s); continue; }
    if (kind === 'lt') lt++; else if (kind === 'gt') gt++; else eq++;
    const expect = l0 === l1 ? [l0] : [Math.min(l0, l1), Math.max(l0, l1)];
    seen = [];
    taken = [];
    t.is(c.confirm(s), CONFIRM_OK);
    t.deepEqual(seen, expect, `confirm holds stripes ${expect.join(',')}`);
    t.deepEqual(taken, expect, 'taken in ascending order (the double lock\'s rule against deadlock)');
    t.deepEqual(owners(), [], 'released after confirm');
    seen = [];
    taken = [];
    t.true(c.kill(s, KILL_DELETE));
    t.deepEqual(seen, expect, `kill holds stripes ${expect.join(',')}`);
    t.deepEqual(taken, expect, 'ascending order');
    t.deepEqual(owners(), [], 'released after kill');
  }
  (Atomics as { compareExchange: typeof cas }).compareExchange = cas;
  t.deepEqual([lt, gt, eq], [2, 2, 1]);
  // stateLock: the stripe of the original tuple's bucket.
  const s = make(c, { orig: tup(1), reply: tup(2) });
  const e = c.entry(s);
  t.is(c.stateLock(e), L + ((i32[e + E_HASH]! & table.buckets - 1) & lockMask) * LOCK_STRIDE);
  c.discard(s);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('newEntry: a reused slot starts clean (private words zero, generation + 1, unlinked, one reference)', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16, discipline: 'refcount' });
  const ct = new Conntrack(table);
  const c = ct.chains;
  const i32 = table.i32;
  ct.beginBatch();
  const s = insert(t, c, { orig: tup(1), reply: tup(2) });
  const e = c.entry(s);
  const gen = i32[e + E_GEN]!;
  i32.fill(-7, e + E_PRIV, e + E_PRIV + PRIV_WORDS); // a tracker's private words
  i32[e + E_MARK] = 0x55; // a ct mark the old connection had
  t.true(c.kill(s, KILL_DELETE)); // refcount: freed at once, to our cache (reused first)
  const s2 = c.newEntry(0, NOW, 0);
  t.is(s2, s, 'the slot comes back');
  t.is(i32[e + E_GEN], (gen + 1) | 0, 'generation bumped by one');
  t.deepEqual([...i32.subarray(e + E_PRIV, e + E_PRIV + PRIV_WORDS)], new Array(PRIV_WORDS).fill(0));
  t.is(i32[e + E_MARK], 0, 'no mark carried over');
  t.is(i32[e + E_EXT], 0, 'no extension block');
  t.is(i32[e + E_REFCNT], 1);
  c.discard(s2);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

// allocSlow: every slot in the creator's limbo (deleted inside one batch, 'noref'), the shared
// list and caches empty, count far below max. The creator's next insert must wait for a grace
// period: with no other worker inside a batch it is there at once; with one that stays inside,
// 8 expedited rounds fail ("table full"); one that leaves and re-enters during round r lets
// round r succeed (it entered after that round's epoch bump).
function exhaust(t: { is: (a: unknown, b: unknown, m?: string) => void }, table: ConntrackTable, A: Conntrack): void {
  let n = 0;
  for (let i = 0; i < table.capacity; i++) {
    const q = udp4({ src: `10.9.${i >> 8}.${i & 255}`, dst: '192.0.2.2', sport: 6000, dport: 53 });
    const v = A.frame(LINKTYPE_RAW, q, 0, q.length, NOW, 0, 0);
    if (v.drop) break;
    t.is(A.chains.kill(v.slot, KILL_DELETE), true);
    n++;
  }
  t.is(n, table.capacity, 'every slot was used once');
  t.is(table.count, 0);
}

function nextInsert(A: Conntrack): ReturnType<Conntrack['frame']> {
  const q = udp4({ src: '10.8.0.1', dst: '192.0.2.2', sport: 6000, dport: 53 });
  return A.frame(LINKTYPE_RAW, q, 0, q.length, NOW, 0, 0);
}

for (const at of [-1, 0, 1, 8] as const) {
  const title = at < 0 ? 'allocSlow: no other worker in a batch: the limbo is reclaimed at once, no expedited grace period counted'
    : at === 8 ? 'allocSlow: another worker stays in its batch: 8 expedited rounds, then table full'
      : `allocSlow: the other worker re-enters its batch during round ${at}: that round gets the slot`;
  test(title, (t) => {
    const table = ConntrackTable.create({ max: 16, buckets: 16, maxWorkers: 2 });
    const A = new Conntrack(table);
    const B = new Conntrack(table);
    if (at >= 0) B.beginBatch();
    A.beginBatch();
    exhaust(t, table, A);
    const e0 = Atomics.load(table.i32, H_EPOCH);
    let calls = 0;
    const q = A.chains.qsbr;
    const reclaim = q.reclaim.bind(q);
    q.reclaim = () => {
      if (calls++ === at) { B.endBatch(); B.beginBatch(); }
      return reclaim();
    };
    const v = nextInsert(A);
    if (at === 8) {
      t.is(v.reason, 'table full');
      t.is(calls, 8, 'eight rounds');
      t.is(Atomics.load(table.i32, H_EPOCH) - e0, 16, 'one epoch step (2) a round');
      t.is(stat(table, 'expedited_gp'), 1);
      t.is(table.count, 0);
    } else {
      t.false(v.drop, 'inserted');
      t.is(calls, at < 0 ? 1 : at + 1);
      t.is(Atomics.load(table.i32, H_EPOCH) - e0, at < 0 ? 2 : 2 * (at + 1));
      t.is(stat(table, 'expedited_gp'), at > 0 ? 1 : 0, 'counted only when a round had to wait');
      t.is(table.count, 1);
    }
    A.endBatch();
    if (at >= 0) B.endBatch();
    inv(t, table);
    A.close();
    B.close();
  });
}

test('allocSlow in \'refcount\': nothing waits for a grace period; an empty free list fails at once', (t) => {
  const table = ConntrackTable.create({ max: 16, buckets: 16, maxWorkers: 2, discipline: 'refcount' });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  const i32 = table.i32;
  A.beginBatch();
  B.beginBatch();
  // Every slot held by a lookup reference of B after its deletion: none free, count 0.
  const held: number[] = [];
  for (let i = 0; i < table.capacity; i++) {
    const k = { orig: tup(100_000 + i * 20), reply: tup(300_000 + i * 20) };
    const s = make(A.chains, k);
    if (s < 0) break;
    t.is(A.chains.confirm(s), CONFIRM_OK);
    const h = i32[A.chains.entry(s) + E_HASH]!;
    t.is(B.chains.find(k.orig, 0, P, 0, 0, h, NOW), s << 1);
    t.true(A.chains.kill(s, KILL_DELETE));
    held.push(s);
  }
  t.is(held.length, table.capacity);
  const e0 = Atomics.load(i32, H_EPOCH);
  const v = nextInsert(A);
  t.is(v.reason, 'table full');
  t.is(Atomics.load(i32, H_EPOCH), e0, 'no epoch bump in refcount');
  t.is(stat(table, 'expedited_gp'), 0);
  for (const s of held) B.chains.put(s);
  t.false(nextInsert(A).drop, 'the puts freed the slots');
  A.endBatch();
  B.endBatch();
  inv(t, table);
  A.close();
  B.close();
});

test('confirm finds a clash with slot 0\'s original tuplehash (reference 0) in either chain', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16 });
  const ct = new Conntrack(table);
  const c = ct.chains;
  ct.beginBatch();
  const priv: number[] = [];
  for (let s = c.newEntry(0, NOW, 0); s !== 0 && priv.length < table.capacity; s = c.newEntry(0, NOW, 0)) priv.push(s);
  // Slot 0 is ours (private); fill and confirm it, then give the others back.
  const k0 = { orig: tup(4000), reply: tup(5000) };
  const i32 = table.i32;
  const e0 = c.entry(0);
  i32.set(k0.orig, e0 + E_TUPLE);
  i32.set(k0.reply, e0 + E_TUPLE + TUPLE_WORDS);
  i32[e0 + E_PROTO] = P;
  i32[e0 + E_ZONE] = 0;
  i32[e0 + E_NS] = 0;
  i32[e0 + E_HASH] = c.hash(k0.orig, 0, P, 0, 0) | 0;
  i32[e0 + E_HASH + 1] = c.hash(k0.reply, 0, P, 0, 0) | 0;
  i32[e0 + E_TIMEOUT] = NOW + 30_000;
  t.is(c.confirm(0), CONFIRM_OK);
  for (const s of priv) c.discard(s);
  const viaOrig = make(c, { orig: k0.orig, reply: tup(6000) });
  t.is(c.confirm(viaOrig), 0, 'its original tuple is slot 0\'s original');
  c.discard(viaOrig);
  const viaReply = make(c, { orig: tup(7000), reply: k0.orig });
  t.is(c.confirm(viaReply), 0, 'its reply tuple is slot 0\'s original');
  c.discard(viaReply);
  // Both tuples taken, by different entries: the original direction's clash is the one
  // reported (the kernel's __nf_conntrack_confirm searches that chain first and stops there).
  const other = insert(t, c, { orig: tup(8000), reply: tup(8100) });
  const both = make(c, { orig: k0.orig, reply: tup(8000) });
  t.is(c.confirm(both), 0, 'slot 0\'s tuplehash, not the reply clash');
  c.discard(both);
  const both2 = make(c, { orig: tup(8100), reply: k0.orig });
  t.is(c.confirm(both2), (other << 1) | 1, 'the original clash with the other entry\'s reply tuplehash');
  c.discard(both2);
  t.true(c.kill(other, KILL_DELETE));
  t.is(c.find(k0.orig, 0, P, 0, 0, i32[e0 + E_HASH]!, NOW), 0, 'and a lookup finds reference 0');
  ct.endBatch();
  t.is(table.count, 1);
  inv(t, table);
  ct.close();
});

test('refcount: a lookup of slot 0\'s original tuplehash (reference 0) takes its reference too', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16, discipline: 'refcount' });
  const ct = new Conntrack(table);
  const c = ct.chains;
  const i32 = table.i32;
  ct.beginBatch();
  const priv: number[] = [];
  for (let s = c.newEntry(0, NOW, 0); s !== 0 && priv.length < table.capacity; s = c.newEntry(0, NOW, 0)) priv.push(s);
  const k0 = { orig: tup(4000), reply: tup(5000) };
  const e0 = c.entry(0);
  i32.set(k0.orig, e0 + E_TUPLE);
  i32.set(k0.reply, e0 + E_TUPLE + TUPLE_WORDS);
  i32[e0 + E_PROTO] = P;
  i32[e0 + E_HASH] = c.hash(k0.orig, 0, P, 0, 0) | 0;
  i32[e0 + E_HASH + 1] = c.hash(k0.reply, 0, P, 0, 0) | 0;
  i32[e0 + E_TIMEOUT] = NOW + 30_000;
  t.is(c.confirm(0), CONFIRM_OK);
  for (const s of priv) c.discard(s);
  t.is(c.find(k0.orig, 0, P, 0, 0, i32[e0 + E_HASH]!, NOW), 0);
  t.is(i32[e0 + E_REFCNT], 2, 'the table\'s and ours');
  t.is(i32[table.sec.workers + ct.wid * WORKER_WORDS + W_HELD], 1);
  c.put(0);
  t.is(i32[e0 + E_REFCNT], 1);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('kill re-checks the buckets under the locks: a slot whose hashes changed meanwhile (recycled) is left alone', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16, discipline: 'refcount' });
  const ct = new Conntrack(table);
  const c = ct.chains;
  const i32 = table.i32;
  ct.beginBatch();
  const s = insert(t, c, { orig: tup(100), reply: tup(200) });
  const e = c.entry(s);
  const lk = c as unknown as { lockStripes: (b0: number, b1: number) => void };
  const orig = lk.lockStripes;
  for (const dir of [0, 1]) {
    const saved = i32[e + E_HASH + dir]!;
    let once = true;
    // Between the caller's read of the hashes and its locks, the slot "became" another entry.
    lk.lockStripes = function (this: Chains, b0: number, b1: number): void {
      orig.call(this, b0, b1);
      if (once) { once = false; i32[e + E_HASH + dir] = saved ^ 1; }
    };
    t.false(c.kill(s, KILL_DELETE), `tuplehash ${dir} moved to another bucket`);
    i32[e + E_HASH + dir] = saved;
    t.is(i32[e + E_STATUS]! & IPS_DYING, 0, 'not touched');
    t.is(table.count, 1);
  }
  lk.lockStripes = orig;
  t.true(c.kill(s, KILL_DELETE));
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('nf_conntrack_max holds across workers whose counts are not folded yet; a refusal wakes the GC', (t) => {
  const table = ConntrackTable.create({ max: 16, buckets: 16, maxWorkers: 4 });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  const i32 = table.i32;
  const assuredInsert = (c: Chains, n: number): number => {
    const s = make(c, { orig: tup(10_000 + n * 20), reply: tup(40_000 + n * 20) });
    if (s < 0) return s;
    i32[c.entry(s) + E_STATUS] = i32[c.entry(s) + E_STATUS]! | IPS_ASSURED; // never early-dropped
    t.is(c.confirm(s), CONFIRM_OK);
    return s;
  };
  A.beginBatch();
  B.beginBatch();
  for (let n = 0; n < 10; n++) t.true(assuredInsert(A.chains, n) >= 0);
  t.is(i32[H_COUNT], 0, 'A\'s 10 are in its own unfolded part');
  let b = 0;
  while (assuredInsert(B.chains, 100 + b) >= 0) b++;
  t.is(b, 6, 'B stops at 16 in all');
  t.is(table.count, 16);
  const wake = Atomics.load(i32, H_GC_WAKE);
  t.is(A.chains.newEntry(0, NOW, 0), -1, 'A is refused too');
  t.is(Atomics.load(i32, H_GC_WAKE), wake + 1, 'the GC was woken');
  for (let w = 0; w < table.maxWorkers; w++) t.is(i32[table.sec.workers + w * WORKER_WORDS + W_RES], 0, `no reservation left (worker ${w})`);
  A.endBatch();
  B.endBatch();
  // At rest the count is folded: H_COUNT alone is exact, every W_CNT 0.
  t.is(i32[H_COUNT], 16);
  for (let w = 0; w < table.maxWorkers; w++) t.is(i32[table.sec.workers + w * WORKER_WORDS + W_CNT], 0);
  // Deletes fold too.
  A.beginBatch();
  let k = 0;
  A.chains.forEach((_e, s) => { if (k++ < 5) A.chains.kill(s, KILL_DELETE); });
  A.endBatch();
  t.is(i32[H_COUNT], 11);
  t.is(i32[table.sec.workers + A.wid * WORKER_WORDS + W_CNT], 0);
  inv(t, table);
  A.close();
  B.close();
});

test('foldCount takes the worker\'s own bucket stripe for the fold', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16, maxWorkers: 4 });
  const cts = [new Conntrack(table), new Conntrack(table), new Conntrack(table)];
  const i32 = table.i32;
  for (const ct of cts) {
    let owner = -2;
    const z = ct.chains.zones;
    const foldAll = z.foldAll.bind(z);
    z.foldAll = () => { owner = lockOwner(Atomics.load(i32, table.sec.locks + (ct.wid & (table.locks - 1)) * LOCK_STRIDE)); foldAll(); };
    ct.beginBatch();
    insert(t, ct.chains, { orig: tup(1000 + ct.wid * 100), reply: tup(2000 + ct.wid * 100) });
    ct.endBatch();
    t.is(owner, ct.wid, `worker ${ct.wid} held stripe ${ct.wid}`);
    t.is(lockOwner(Atomics.load(i32, table.sec.locks + ct.wid * LOCK_STRIDE)), -1, 'released');
  }
  t.is(i32[H_COUNT], 3);
  inv(t, table);
  for (const ct of cts) ct.close();
});

test('refcount: discarding a private entry a stale lookup still holds leaves the slot to that lookup\'s put', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16, discipline: 'refcount' });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  const i32 = table.i32;
  A.beginBatch();
  B.beginBatch();
  const s = make(A.chains, { orig: tup(100), reply: tup(200) });
  const e = A.chains.entry(s);
  // B's lookup matched the slot's previous entry and takes its reference now (getRef succeeds:
  // the creator's reference is there), before its re-check fails.
  t.true(B.chains.getRef(e));
  A.chains.discard(s);
  t.is(i32[e + E_REFCNT], 1, 'B\'s reference');
  t.false(allocatable(table, s), 'not freed under B');
  B.chains.put(s);
  t.is(i32[e + E_REFCNT], 0);
  t.true(allocatable(table, s), 'B\'s put freed it');
  A.endBatch();
  B.endBatch();
  inv(t, table);
  A.close();
  B.close();
});

test('early_drop with a namespace (0 included) and newEntry without one (any namespace)', (t) => {
  const table = ConntrackTable.create({ max: 4, buckets: 16, namespaces: 4 });
  const ct = new Conntrack(table);
  const c = ct.chains;
  ct.beginBatch();
  // Four not-ASSURED entries of namespace 2: the table is full.
  const keys = [0, 1, 2, 3].map((n) => ({ orig: tup(100 + n * 20), reply: tup(900 + n * 20), ns: 2 }));
  for (const k of keys) insert(t, c, k);
  // From the first one's bucket: its window holds it.
  const h0 = c.hash(keys[0]!.orig, 0, P, 0, 2);
  t.false(c.earlyDrop(h0, NOW, 0), 'namespace 0 has no entry to give');
  t.false(c.earlyDrop(h0, NOW, 1), 'nor namespace 1');
  t.is(c.newEntry(h0, NOW, 0), -1, 'an insert of namespace 0 is refused');
  const s = c.newEntry(h0, NOW);
  t.true(s >= 0, 'without a namespace any not-ASSURED entry may go');
  t.is(table.count, 3);
  c.discard(s);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('the count reads the claimed worker records only (every record claimed, entries in zones 1120 and 1136)', (t) => {
  // With every record claimed, the words past the last record are the per-zone counters
  // (layout.ts: zone z at word zoneRec(z); W_CNT 70 and W_RES 71 fall on zones 1120 and 1136):
  // the count must not read them as a record's part.
  const table = ConntrackTable.create({ max: 64, buckets: 16, maxWorkers: 1 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  for (let n = 0; n < 5; n++) insert(t, ct.chains, { orig: tup(100 + n * 20), reply: tup(900 + n * 20), zone: 1120 | 1120 << 16 });
  for (let n = 0; n < 3; n++) insert(t, ct.chains, { orig: tup(3100 + n * 20), reply: tup(3900 + n * 20), zone: 1136 | 1136 << 16 });
  ct.endBatch();
  t.is(table.zoneCount(1120), 5);
  t.is(table.zoneCount(1136), 3);
  t.is(table.count, 8);
  t.is(ct.chains.count, 8);
  t.is(ct.chains.approxCount, 8);
  inv(t, table);
  ct.close();
});

test('near nf_conntrack_max the reservations are read from the claimed records only (zone 1136 holds entries)', (t) => {
  const table = ConntrackTable.create({ max: 16, buckets: 16, maxWorkers: 2 });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  const i32 = table.i32;
  A.beginBatch();
  for (let n = 0; n < 3; n++) {
    const s = make(A.chains, { orig: tup(100 + n * 20), reply: tup(900 + n * 20), zone: 1136 | 1136 << 16 });
    i32[A.chains.entry(s) + E_STATUS] = i32[A.chains.entry(s) + E_STATUS]! | IPS_ASSURED;
    t.is(A.chains.confirm(s), CONFIRM_OK);
  }
  A.endBatch();
  t.is(table.zoneCount(1136), 3);
  B.beginBatch();
  let n = 0;
  for (;; n++) {
    const s = make(B.chains, { orig: tup(5000 + n * 20), reply: tup(9000 + n * 20) });
    if (s < 0) break;
    i32[B.chains.entry(s) + E_STATUS] = i32[B.chains.entry(s) + E_STATUS]! | IPS_ASSURED;
    t.is(B.chains.confirm(s), CONFIRM_OK);
  }
  B.endBatch();
  t.is(n, 13, '3 + 13 = 16');
  t.is(table.count, 16);
  inv(t, table);
  A.close();
  B.close();
});

test('an entry another worker is creating close to nf_conntrack_max is counted (W_RES): two inserts never pass max together', (t) => {
  const table = ConntrackTable.create({ max: 16, buckets: 16, maxWorkers: 2 });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  const i32 = table.i32;
  const assured = (c: Chains, s: number): number => { i32[c.entry(s) + E_STATUS] = i32[c.entry(s) + E_STATUS]! | IPS_ASSURED; return s; };
  A.beginBatch();
  B.beginBatch();
  // B (worker 1) inserts 10 and allocates its 11th, not confirmed yet; A (worker 0) then fills.
  for (let n = 0; n < 10; n++) t.is(B.chains.confirm(assured(B.chains, make(B.chains, { orig: tup(100 + n * 20), reply: tup(900 + n * 20) }))), CONFIRM_OK);
  const pending = assured(B.chains, make(B.chains, { orig: tup(3000), reply: tup(3100) }));
  t.true(pending >= 0);
  t.is(i32[table.sec.workers + B.wid * WORKER_WORDS + W_RES], 1, 'announced');
  let n = 0;
  for (;; n++) {
    const s = make(A.chains, { orig: tup(5000 + n * 20), reply: tup(9000 + n * 20) });
    if (s < 0) break;
    t.is(A.chains.confirm(assured(A.chains, s)), CONFIRM_OK);
  }
  t.is(n, 5, '10 + B\'s pending one + 5 = 16');
  t.is(B.chains.confirm(pending), CONFIRM_OK);
  t.is(i32[table.sec.workers + B.wid * WORKER_WORDS + W_RES], 0, 'counted: no longer announced');
  t.is(table.count, 16, 'never past max');
  A.endBatch();
  B.endBatch();
  inv(t, table);
  A.close();
  B.close();
});

test('a worker\'s count part folds into H_COUNT at +COUNT_BATCH and at -COUNT_BATCH (deletes), exactly', (t) => {
  const table = ConntrackTable.create({ max: 256, buckets: 64 });
  const ct = new Conntrack(table);
  const c = ct.chains;
  const i32 = table.i32;
  const W = table.sec.workers + ct.wid * WORKER_WORDS;
  ct.beginBatch();
  const slots: number[] = [];
  for (let n = 0; n < 40; n++) {
    slots.push(insert(t, c, { orig: tup(100 + n * 20), reply: tup(5000 + n * 20) }));
    if (n === 30) t.deepEqual([i32[H_COUNT], i32[W + W_CNT]], [0, 31], '31 unfolded');
    if (n === 31) t.deepEqual([i32[H_COUNT], i32[W + W_CNT]], [32, 0], 'folded at 32');
  }
  t.deepEqual([i32[H_COUNT], i32[W + W_CNT]], [32, 8]);
  ct.endBatch();
  t.deepEqual([i32[H_COUNT], i32[W + W_CNT]], [40, 0], 'folded at the batch end');
  ct.beginBatch();
  for (let n = 0; n < 33; n++) {
    t.true(c.kill(slots[n]!, KILL_DELETE));
    if (n === 30) t.deepEqual([i32[H_COUNT], i32[W + W_CNT]], [40, -31], '-31 unfolded');
    if (n === 31) t.deepEqual([i32[H_COUNT], i32[W + W_CNT]], [8, 0], 'folded at -32');
  }
  t.deepEqual([i32[H_COUNT], i32[W + W_CNT]], [8, -1]);
  t.is(table.count, 7);
  ct.endBatch();
  t.deepEqual([i32[H_COUNT], i32[W + W_CNT]], [7, 0]);
  inv(t, table);
  ct.close();
});

test('allocSlow: a round that frees only part of the limbo returns the slot it got (the rest waits)', (t) => {
  const table = ConntrackTable.create({ max: 16, buckets: 16, maxWorkers: 2 });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  B.beginBatch();
  A.beginBatch();
  // Half the slots retired while B is in its batch from before; then B re-enters (after an epoch
  // step) and the other half is retired: a grace period frees the first half only.
  const half = Math.floor(table.capacity / 2);
  const cycle = (i: number): void => {
    const q = udp4({ src: `10.9.${i >> 8}.${i & 255}`, dst: '192.0.2.2', sport: 6000, dport: 53 });
    const v = A.frame(LINKTYPE_RAW, q, 0, q.length, NOW, 0, 0);
    t.false(v.drop);
    t.true(A.chains.kill(v.slot, KILL_DELETE));
  };
  for (let i = 0; i < half; i++) cycle(i);
  A.endBatch(); // an epoch step (it retired slots); B holds them in limbo
  A.beginBatch();
  B.endBatch();
  B.beginBatch(); // B now holds only what is retired from here on
  for (let i = half; i < table.capacity; i++) cycle(i);
  const e0 = Atomics.load(table.i32, H_EPOCH);
  const v = nextInsert(A);
  t.false(v.drop, 'the first round found a slot');
  t.is(Atomics.load(table.i32, H_EPOCH) - e0, 2, 'one round');
  t.true(A.chains.qsbr.pending > 0, 'the second half still waits');
  t.is(stat(table, 'expedited_gp'), 0);
  A.endBatch();
  B.endBatch();
  inv(t, table);
  A.close();
  B.close();
});

test('allocSlow: no free slot and nothing in limbo (the free slots sit in another worker\'s cache): -1 at once', (t) => {
  const table = ConntrackTable.create({ max: 16, buckets: 16, maxWorkers: 2 });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  A.beginBatch();
  B.beginBatch();
  // B takes a cache refill; A holds every other slot as a private (uncounted) entry.
  const b = B.chains.newEntry(0, NOW, 0);
  B.chains.discard(b);
  const held: number[] = [];
  for (let s = A.chains.newEntry(0, NOW, 0); s >= 0; s = A.chains.newEntry(0, NOW, 0)) held.push(s);
  t.true(held.length > 0 && held.length < table.capacity, `A got ${held.length} of ${table.capacity}`);
  t.is(A.chains.qsbr.pending, 0);
  const e0 = Atomics.load(table.i32, H_EPOCH);
  t.is(A.chains.newEntry(0, NOW, 0), -1);
  t.is(Atomics.load(table.i32, H_EPOCH) - e0, 2, 'one round, no waiting');
  t.is(stat(table, 'expedited_gp'), 0);
  for (const s of held) A.chains.discard(s);
  A.endBatch();
  B.endBatch();
  inv(t, table);
  A.close();
  B.close();
});

test('confirm refuses an entry whose namespace or zone is at its limit (the race the atLimit hint cannot see) and links nothing', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16, namespaces: 4 });
  table.setNamespaceLimit(1, 1);
  table.setZoneLimit(7, 1);
  const ct = new Conntrack(table);
  const c = ct.chains;
  ct.beginBatch();
  insert(t, c, { orig: tup(100), reply: tup(200), ns: 1 });
  insert(t, c, { orig: tup(300), reply: tup(400), zone: 7 | 7 << 16 });
  const a = make(c, { orig: tup(500), reply: tup(600), ns: 1 });
  t.is(c.confirm(a), CONFIRM_NS_LIMIT);
  t.is(table.i32[c.entry(a) + E_STATUS]! & IPS_CONFIRMED, 0);
  c.discard(a);
  const b = make(c, { orig: tup(700), reply: tup(800), zone: 7 | 7 << 16 });
  t.is(c.confirm(b), CONFIRM_ZONE_LIMIT);
  c.discard(b);
  t.is(table.count, 2);
  t.is(table.namespaceCount(1), 1);
  t.is(table.zoneCount(7), 1);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('confirm clears its own record\'s W_INTENT_SLOT and no other worker\'s words (worker 0 with 7 zone deltas pending)', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: 16, maxWorkers: 2 });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  const i32 = table.i32;
  A.beginBatch();
  B.beginBatch();
  // A's zone-delta cache: namespace 0, and the entry and zone counts of zones 1, 2, 3 (7 slots).
  for (let z = 1; z <= 3; z++) insert(t, A.chains, { orig: tup(100 * z), reply: tup(100 * z + 50), zone: z | z << 16 });
  const s = insert(t, B.chains, { orig: tup(5000), reply: tup(5100) });
  t.is(i32[table.sec.workers + B.wid * WORKER_WORDS + W_INTENT_SLOT], 0, 'the insert is over');
  t.true(s >= 0);
  A.endBatch();
  B.endBatch();
  for (let z = 1; z <= 3; z++) t.is(table.zoneCount(z), 1, `zone ${z}`);
  t.is(table.count, 4);
  inv(t, table);
  A.close();
  B.close();
});

test('nf_conntrack_max at the fast path\'s edge: another worker\'s 31 unfolded entries fill a table of max 31', (t) => {
  // Each record's unfolded part is below COUNT_BATCH (32), so with two records a view of 0 means
  // at most 31 in the table: at max 31 that may be full, and the exact count must be taken.
  const table = ConntrackTable.create({ max: 31, buckets: 32, maxWorkers: 2 });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  const i32 = table.i32;
  A.beginBatch();
  B.beginBatch();
  for (let n = 0; n < 31; n++) {
    const s = make(A.chains, { orig: tup(100 + n * 20), reply: tup(5000 + n * 20) });
    i32[A.chains.entry(s) + E_STATUS] = i32[A.chains.entry(s) + E_STATUS]! | IPS_ASSURED;
    t.is(A.chains.confirm(s), CONFIRM_OK);
  }
  t.deepEqual([i32[H_COUNT], i32[table.sec.workers + A.wid * WORKER_WORDS + W_CNT]], [0, 31], 'all unfolded');
  t.is(B.chains.newEntry(0, NOW, 0), -1, 'B sees the table full');
  t.is(table.count, 31);
  A.endBatch();
  B.endBatch();
  inv(t, table);
  A.close();
  B.close();
});
