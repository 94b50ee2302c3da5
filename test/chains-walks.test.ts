/**
 * Chain walks of src/table/chains.ts on one thread, against hand-worked outcomes: early_drop's
 * window (the kernel's: the new entry's bucket and the 7 after it, NF_CT_EVICTION_RANGE 8,
 * either tuplehash of a victim counting; expired entries met there removed and counted as room),
 * forEach visiting each live entry once by its original tuplehash, a lookup that ends on
 * another bucket's nulls marker (an entry moved under it) restarting, and conntrack ids (one
 * range of ID_RANGE per worker, in order, a new range after a restore's epoch bump).
 */
import test from 'ava';
import { Chains, CONFIRM_OK, KILL_DELETE } from '../src/table/chains.js';
import { Conntrack } from '../src/track/core.js';
import {
  E_HASH, E_ID, E_NS, E_PROTO, E_STATUS, E_TIMEOUT, E_TUPLE, E_ZONE, H_ID_EPOCH, ID_RANGE, IPS_ASSURED, IPS_DYING,
  TUPLE_WORDS,
} from '../src/table/layout.js';
import { ConntrackTable } from '../src/table/table.js';
import { CONFIRM_ZONE_LIMIT } from '../src/table/zones.js';
import { inv, stat, tup } from './helpers/table-checks.js';

const NOW = 1_000_000;
const P = 17 << 8 | 2;
const NB = 16;




/** Key n: its tuples, and the buckets of its two tuplehashes. */
function key(c: Chains, n: number): { orig: Int32Array; reply: Int32Array; b0: number; b1: number } {
  const orig = tup(3000 + n * 20);
  const reply = tup(700_000 + n * 20);
  return { orig, reply, b0: c.hash(orig, 0, P, 0, 0) & (NB - 1), b1: c.hash(reply, 0, P, 0, 0) & (NB - 1) };
}

function insert(c: Chains, n: number, opts: { assured?: boolean; timeout?: number } = {}, at = -1): number {
  const i32 = c.i32;
  const k = key(c, n);
  const h0 = c.hash(k.orig, 0, P, 0, 0);
  const slot = at >= 0 ? at : c.newEntry(h0, NOW, 0);
  const e = c.entry(slot);
  i32.set(k.orig, e + E_TUPLE);
  i32.set(k.reply, e + E_TUPLE + TUPLE_WORDS);
  i32[e + E_PROTO] = P;
  i32[e + E_ZONE] = 0;
  i32[e + E_NS] = 0;
  i32[e + E_HASH] = h0 | 0;
  i32[e + E_HASH + 1] = c.hash(k.reply, 0, P, 0, 0) | 0;
  i32[e + E_TIMEOUT] = opts.timeout ?? NOW + 30_000;
  if (opts.assured) i32[e + E_STATUS] = i32[e + E_STATUS]! | IPS_ASSURED; // private: a plain store
  if (c.confirm(slot) !== CONFIRM_OK) throw new Error('insert refused');
  return slot;
}

const inWindow = (start: number, b: number): boolean => ((b - start) & (NB - 1)) < 8;

test('early_drop looks at the new entry\'s bucket and the 7 after it, by either tuplehash of the victim', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: NB });
  const ct = new Conntrack(table);
  const c = ct.chains;
  ct.beginBatch();
  // ASSURED entries around the table, never evicted.
  for (let i = 0; i < 12; i++) insert(c, 100 + i, { assured: true });
  // The victim: the first entry made in a fresh table sits in slot 0 (its original tuplehash is
  // reference 0, which a walk must not take for the end of a chain).
  const fresh = ConntrackTable.create({ max: 64, buckets: NB });
  const fct = new Conntrack(fresh);
  const fc = fct.chains;
  fct.beginBatch();
  let vn = 1;
  while (key(fc, vn).b0 === key(fc, vn).b1) vn++;
  const v = key(fc, vn);
  // From a bucket whose window holds the victim's original tuplehash (reference 0) only.
  let only0 = 0;
  while (!(inWindow(only0, v.b0) && !inWindow(only0, v.b1))) only0++;
  // Private entries until the allocator hands out slot 0; the victim goes there.
  const priv: number[] = [];
  for (let s = fc.newEntry(0, NOW, 0); s !== 0 && priv.length < fresh.capacity; s = fc.newEntry(0, NOW, 0)) priv.push(s);
  t.is(insert(fc, vn, {}, 0), 0, 'the victim is in slot 0');
  for (const s of priv) fc.discard(s);
  t.true(fc.earlyDrop(only0, NOW), `from bucket ${only0}: the victim\'s original tuplehash in bucket ${v.b0}`);
  let drops = 1;
  for (let start = 0; start < NB; start++) {
    const s = insert(fc, vn);
    const want = inWindow(start, v.b0) || inWindow(start, v.b1);
    t.is(fc.earlyDrop(start, NOW), want, `from bucket ${start}: victim in buckets ${v.b0}/${v.b1}`);
    if (want) drops++;
    else t.true(fc.kill(s, KILL_DELETE));
  }
  t.is(stat(fresh, 'early_drop'), drops);
  fct.endBatch();
  inv(t, fresh);
  fct.close();
  // In the busy table: the same rule, the ASSURED ones never taken.
  const w = key(c, 2);
  for (let start = 0; start < NB; start++) {
    const s = insert(c, 2);
    const want = inWindow(start, w.b0) || inWindow(start, w.b1);
    t.is(c.earlyDrop(start, NOW), want, `busy table, from bucket ${start}`);
    if (!want) t.true(c.kill(s, KILL_DELETE));
  }
  t.is(table.count, 12, 'only the victims went');
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('early_drop removes the expired entries of its window and counts that as room (expired, not early_drop)', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: NB });
  const ct = new Conntrack(table);
  const c = ct.chains;
  ct.beginBatch();
  const x = key(c, 5);
  for (let start = 0; start < NB; start++) {
    // An ASSURED entry that expired one ms ago: never an early_drop victim, but gone when met.
    const s = insert(c, 5, { assured: true, timeout: NOW - 1 });
    const want = inWindow(start, x.b0) || inWindow(start, x.b1);
    const e0 = stat(table, 'expired');
    t.is(c.earlyDrop(start, NOW), want, `from bucket ${start}: expired entry in buckets ${x.b0}/${x.b1}`);
    t.is(stat(table, 'expired') - e0, want ? 1 : 0);
    if (!want) t.true(c.kill(s, KILL_DELETE));
  }
  t.is(stat(table, 'early_drop'), 0);
  // At its deadline exactly it has expired (the kernel's nf_ct_is_expired: timeout - now <= 0).
  const s = insert(c, 6, { assured: true, timeout: NOW });
  const k6 = key(c, 6);
  t.true(c.earlyDrop(k6.b0, NOW));
  t.is(table.count, 0, `slot ${s} expired at its deadline`);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('forEach visits every live entry once, by its original tuplehash, also while the visitor deletes', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: NB });
  const ct = new Conntrack(table);
  const c = ct.chains;
  ct.beginBatch();
  const slots = new Set<number>();
  for (let i = 0; i < 20; i++) slots.add(insert(c, 200 + i));
  const seen: number[] = [];
  c.forEach((e, s) => {
    t.is(e, c.entry(s));
    seen.push(s);
  });
  t.deepEqual(seen.slice().sort((a, b) => a - b), [...slots].sort((a, b) => a - b));
  const killed: number[] = [];
  c.forEach((_e, s) => { if (c.kill(s, KILL_DELETE)) killed.push(s); });
  t.is(killed.length, 20, 'every entry once, though each visit unlinks it');
  t.is(table.count, 0);
  let n = 0;
  c.forEach(() => { n++; });
  t.is(n, 0);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('refcount: a lookup that ends on another bucket\'s nulls marker (an entry moved under it) restarts and finds its entry', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: NB, discipline: 'refcount' });
  const A = new Conntrack(table);
  const c = A.chains;
  A.beginBatch();
  // Three keys whose original tuplehashes share bucket b: chain b = X -> Y -> W (newest first).
  const byBucket = new Map<number, number[]>();
  let b = -1;
  for (let n = 0; n < 400 && b < 0; n++) {
    const k = key(c, 1000 + n);
    if (k.b1 === k.b0) continue;
    const l = byBucket.get(k.b0) ?? [];
    l.push(1000 + n);
    byBucket.set(k.b0, l);
    if (l.length === 3) b = k.b0;
  }
  t.true(b >= 0);
  const [nw, ny, nx] = byBucket.get(b)!;
  const wSlot = insert(c, nw!);
  const ySlot = insert(c, ny!);
  insert(c, nx!);
  // Z: a key whose original tuplehash lives in another bucket.
  let nz = 5000;
  while (key(c, nz).b0 === b || key(c, nz).b1 === b) nz++;
  const wk = key(c, nw!);
  const h = c.hash(wk.orig, 0, P, 0, 0);
  let moved = false;
  const B = new Conntrack(table);
  // When the walk stands on X (it has read X's next: Y), Y is deleted and its slot reused by Z in
  // another bucket: the walk follows Z's chain and ends on that bucket's nulls marker.
  const wid = table.registerWorker();
  const walker = new Chains(table, wid);
  const keyEquals = (Chains.prototype as unknown as { keyEquals: (...a: unknown[]) => boolean }).keyEquals;
  (walker as unknown as { keyEquals: (...a: unknown[]) => boolean }).keyEquals = function (this: Chains, ...a: unknown[]): boolean {
    if (!moved) {
      moved = true;
      B.beginBatch();
      t.true(B.chains.kill(ySlot, KILL_DELETE)); // refcount: the slot goes to B's cache at once
      const z = insert(B.chains, nz); // and B's next insert takes it back
      B.endBatch();
      t.is(z, ySlot, 'Y\'s slot was reused by Z');
    }
    return keyEquals.apply(this, a);
  };
  const r0 = stat(table, 'search_restart');
  const found = walker.find(wk.orig, 0, P, 0, 0, h, NOW);
  t.true(moved);
  t.is(found, wSlot << 1, 'W is found after the restart');
  t.is(stat(table, 'search_restart') - r0, 1, 'one restart');
  walker.put(wSlot);
  table.releaseWorker(wid);
  A.endBatch();
  inv(t, table);
  A.close();
  B.close();
});

test('conntrack ids: consecutive within a worker\'s range of ID_RANGE, disjoint between workers, a new range after an epoch bump', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: NB });
  const A = new Conntrack(table);
  const B = new Conntrack(table);
  const id = (ct: Conntrack): number => {
    const s = ct.chains.newEntry(0, NOW, 0);
    const v = table.i32[ct.chains.entry(s) + E_ID]!;
    ct.chains.discard(s);
    return v;
  };
  A.beginBatch();
  B.beginBatch();
  const a0 = id(A);
  t.is(id(A), a0 + 1);
  const b0 = id(B);
  t.true(b0 >= a0 + ID_RANGE || b0 + ID_RANGE <= a0, 'another range');
  t.is(id(B), b0 + 1);
  // Use up A's range: the next id comes from a new one.
  for (let k = 2; k < ID_RANGE; k++) t.is(id(A), a0 + k);
  const a1 = id(A);
  t.true(a1 >= Math.max(a0, b0) + ID_RANGE, 'a fresh range past both');
  t.is(id(A), a1 + 1);
  // A restore raising H_NEXT_ID bumps H_ID_EPOCH: every worker leaves its old range.
  Atomics.add(table.i32, H_ID_EPOCH, 1);
  const b1 = id(B);
  t.true(b1 >= a1 + ID_RANGE, 'B took a new range after the bump');
  t.is(id(B), b1 + 1, 'and stays in it');
  A.endBatch();
  B.endBatch();
  inv(t, table);
  A.close();
  B.close();
});

test('an entry another thread is deleting (DYING, still linked) is not found, not early-dropped, not visited', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: NB });
  const ct = new Conntrack(table);
  const c = ct.chains;
  const i32 = table.i32;
  ct.beginBatch();
  const s = insert(c, 77);
  const k = key(c, 77);
  const e = c.entry(s);
  const h = c.hash(k.orig, 0, P, 0, 0);
  t.is(c.find(k.orig, 0, P, 0, 0, h, NOW), s << 1);
  // As a kill on another thread leaves it between setting DYING and unlinking (its locks held).
  Atomics.or(i32, e + E_STATUS, IPS_DYING);
  t.is(c.find(k.orig, 0, P, 0, 0, h, NOW), -1, 'not found');
  t.false(c.earlyDrop(k.b0, NOW), 'no victim');
  t.false(c.earlyDrop(k.b0, NOW + 60_000), 'not expired either: it is on its way out already');
  let n = 0;
  c.forEach(() => { n++; });
  t.is(n, 0, 'not visited');
  t.is(stat(table, 'expired') + stat(table, 'early_drop'), 0);
  Atomics.and(i32, e + E_STATUS, ~IPS_DYING);
  t.is(c.find(k.orig, 0, P, 0, 0, h, NOW), s << 1, 'found again once the flag is gone');
  t.true(c.earlyDrop(k.b0, NOW));
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('a delete unlinks its entry from behind slot 0\'s original tuplehash (reference 0) in the same chain', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: NB });
  const ct = new Conntrack(table);
  const c = ct.chains;
  ct.beginBatch();
  // Two keys whose original tuplehashes share a bucket (and whose replies are elsewhere).
  const seen = new Map<number, number>();
  let pair: [number, number] | null = null;
  for (let n = 2000; n < 3000 && !pair; n++) {
    const k = key(c, n);
    if (k.b0 === k.b1) continue;
    const m = seen.get(k.b0);
    if (m !== undefined && key(c, m).b1 !== k.b1) pair = [m, n];
    else seen.set(k.b0, n);
  }
  t.truthy(pair);
  const [ny, nx] = pair!;
  const y = insert(c, ny); // older: behind X in the chain
  const priv: number[] = [];
  for (let s = c.newEntry(0, NOW, 0); s !== 0 && priv.length < table.capacity; s = c.newEntry(0, NOW, 0)) priv.push(s);
  t.is(insert(c, nx, {}, 0), 0, 'X in slot 0, at the head of the chain');
  for (const s of priv) c.discard(s);
  t.true(c.kill(y, KILL_DELETE));
  t.is(c.find(key(c, ny).orig, 0, P, 0, 0, c.hash(key(c, ny).orig, 0, P, 0, 0), NOW), -1);
  t.is(table.count, 1);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('a delete counts nothing but its own reason and writes no other worker\'s words; a Chains without a destroy hook deletes too', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: NB, maxWorkers: 2 });
  const A = new Conntrack(table); // worker 0: the words before its record are worker 1's statistics
  const B = new Conntrack(table);
  const c = A.chains;
  A.beginBatch();
  const s1 = insert(c, 11);
  const s2 = insert(c, 12);
  const before = JSON.stringify(table.stats().total);
  t.true(c.kill(s1, KILL_DELETE));
  t.is(JSON.stringify(table.stats().total), before, 'no statistic moved');
  A.endBatch();
  B.close();
  const w = table.registerWorker();
  const bare = new Chains(table, w);
  t.is(bare.onDestroy, null);
  bare.qsbr.online();
  t.true(bare.kill(s2, KILL_DELETE));
  bare.qsbr.offline();
  bare.qsbr.quiesce();
  t.is(table.count, 0);
  inv(t, table);
  table.releaseWorker(w);
  A.close();
});

test('early_drop inside a zone limit takes the zone\'s own oldest entry, not an older one of another zone of the namespace', (t) => {
  const table = ConntrackTable.create({ max: 64, buckets: NB, namespaces: 2 });
  const ct = new Conntrack(table);
  const c = ct.chains;
  ct.beginBatch();
  const mk = (n: number, zone: number): number => {
    const k = key(c, n);
    const h0 = c.hash(k.orig, 0, P, zone, 0);
    const s = c.newEntry(h0, NOW, 0);
    const e = c.entry(s);
    c.i32.set(k.orig, e + E_TUPLE);
    c.i32.set(k.reply, e + E_TUPLE + TUPLE_WORDS);
    c.i32[e + E_PROTO] = P;
    c.i32[e + E_ZONE] = zone | zone << 16;
    c.i32[e + E_NS] = 0;
    c.i32[e + E_HASH] = h0 | 0;
    c.i32[e + E_HASH + 1] = c.hash(k.reply, 0, P, zone, 0) | 0;
    c.i32[e + E_TIMEOUT] = NOW + 30_000;
    t.is(c.confirm(s), CONFIRM_OK);
    return s;
  };
  const old0 = mk(1, 0); // the namespace's oldest, zone 0
  const z7 = mk(2, 7);
  mk(3, 7);
  t.true(c.earlyDropWithin(CONFIRM_ZONE_LIMIT, 0, 7, NOW));
  t.is(table.zoneCount(7), 1, 'zone 7 gave one');
  t.is(table.zoneCount(0), 1, 'zone 0 kept its entry');
  t.not(c.i32[c.entry(z7) + E_STATUS]! & IPS_DYING, 0, 'zone 7\'s oldest went');
  t.is(c.i32[c.entry(old0) + E_STATUS]! & IPS_DYING, 0);
  // A candidate another thread deletes first: the kill refuses, so no room was made.
  const z = c.zones;
  const pick = z.dropCandidate.bind(z);
  z.dropCandidate = (...a: Parameters<typeof pick>): number => {
    const s = pick(...a);
    if (s >= 0) t.true(c.kill(s, KILL_DELETE)); // the other thread's delete
    return s;
  };
  t.false(c.earlyDropWithin(CONFIRM_ZONE_LIMIT, 0, 7, NOW), 'the candidate was gone');
  t.is(stat(table, 'early_drop'), 1);
  z.dropCandidate = pick;
  ct.endBatch();
  inv(t, table);
  ct.close();
});
