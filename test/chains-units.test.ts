/**
 * Unit tests of src/table/chains.ts on one thread, each against a hand-computed outcome: kill()'s
 * guards (generation, still expired at `expiredAt`, already dying), the chain-length cap on
 * confirm (including both tuplehashes in one bucket), a lookup removing the expired entry it
 * meets, early_drop inside a limit counting an expired victim as expired, the global early_drop
 * staying in its namespace. Written for the survivors of the mutation run (docs/mutation.md).
 */
import test from 'ava';
import { Conntrack } from '../src/track/core.js';
import { E_GEN, E_HASH, E_STATUS, E_TIMEOUT, E_TUPLE, ENTRY_WORDS, H_KEY0, H_KEY1, IPS_ASSURED, IPS_DYING, T_DST, T_PORTS, T_SRC } from '../src/table/layout.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { ConntrackTable } from '../src/table/table.js';
import { KILL_DELETE, KILL_EXPIRED } from '../src/table/chains.js';
import { CONFIRM_NS_LIMIT, LIST_NS } from '../src/table/zones.js';
import { udp4, udp6 } from './helpers/frames.js';
import { inv, stat } from './helpers/table-checks.js';

const NOW = 1_000_000;
const LT = LINKTYPE_RAW;


function addr(i: number): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

/** A one-way UDP frame from source address i; its verdict. */
function send(ct: Conntrack, i: number, ns = 0, now = NOW): ReturnType<Conntrack['frame']> {
  const q = udp4({ src: addr(i), dst: '192.0.2.2', sport: 6000, dport: 53 });
  return ct.frame(LT, q, 0, q.length, now, 0, ns);
}

function assured(ct: Conntrack, i: number, ns: number): number {
  const a = addr(i);
  const q = udp4({ src: a, dst: '192.0.2.2', sport: 6000, dport: 53 });
  const r = udp4({ src: '192.0.2.2', dst: a, sport: 53, dport: 6000 });
  const v0 = ct.frame(LT, q, 0, q.length, NOW - 2500, 0, ns);
  ct.frame(LT, r, 0, r.length, NOW - 2500, 0, ns);
  ct.frame(LT, q, 0, q.length, NOW, 0, ns);
  return v0.slot;
}


test('kill: refuses a stale generation, an entry refreshed past expiredAt, a second kill; counts exact', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const c = ct.chains;
  ct.beginBatch();
  const a = send(ct, 1).slot;
  const b = send(ct, 2).slot;
  ct.endBatch();
  const e = (s: number): number => table.sec.entries + s * ENTRY_WORDS;
  const gen = table.i32[e(a) + E_GEN]!;
  const to = table.i32[e(a) + E_TIMEOUT]!;
  t.is(table.count, 2);
  ct.beginBatch();
  t.false(c.kill(a, KILL_DELETE, (gen + 1) | 0), 'another generation');
  t.false(c.kill(a, KILL_EXPIRED, gen, to - 1), 'not expired yet at to - 1');
  t.is(table.count, 2);
  t.is(stat(table, 'expired'), 0);
  t.true(c.kill(a, KILL_EXPIRED, gen, to), 'expired at its timeout');
  t.is(stat(table, 'expired'), 1);
  t.not(table.i32[e(a) + E_STATUS]! & IPS_DYING, 0);
  t.false(c.kill(a, KILL_DELETE), 'already dying');
  t.is(table.count, 1);
  t.true(c.kill(b, KILL_DELETE));
  t.is(stat(table, 'expired'), 1, 'a delete is not an expiry');
  ct.endBatch();
  t.is(table.count, 0);
  inv(t, table);
  ct.close();
});

test('a lookup meeting its expired entry removes it and makes a new one (expired stat +1)', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const v = send(ct, 3);
  const s0 = v.slot;
  const to = table.i32[table.sec.entries + s0 * ENTRY_WORDS + E_TIMEOUT]!;
  const again = send(ct, 3, 0, to - 1);
  t.is(again.slot, s0, 'one ms before its timeout: the same entry');
  const to2 = table.i32[table.sec.entries + s0 * ENTRY_WORDS + E_TIMEOUT]!;
  const after = send(ct, 3, 0, to2);
  t.false(after.drop);
  ct.endBatch();
  t.is(stat(table, 'expired'), 1);
  t.is(table.count, 1);
  t.is(stat(table, 'new'), 2, 'the second is a new connection');
  inv(t, table);
  ct.close();
});

test('confirm caps a chain at maxChain tuplehashes; an entry with both tuplehashes in the bucket needs room for two', (t) => {
  const MAXC = 3;
  const table = ConntrackTable.create({ max: 4096, buckets: 16, maxChain: MAXC });
  // A probe table with the same hash keys tells which frames hash where.
  const probe = ConntrackTable.create({ max: 4096, buckets: 16, maxChain: 65536 });
  probe.i32[H_KEY0] = table.i32[H_KEY0]!;
  probe.i32[H_KEY1] = table.i32[H_KEY1]!;
  const pc = new Conntrack(probe);
  pc.beginBatch();
  const TARGET = 5;
  const single: number[] = []; // original in TARGET, reply elsewhere, each reply bucket once
  const both: number[] = []; // both tuplehashes in TARGET
  const replyUsed = new Set<number>();
  const replyOnly: [number, number][] = []; // [frame, original bucket]: reply tuplehash in TARGET
  // Searched until every kind is found: the hash keys are random, so a fixed count of frames
  // (or of reply-only candidates) sometimes left none whose original bucket was free.
  const replyFree = (): boolean => replyOnly.some(([, b]) => !replyUsed.has(b));
  for (let i = 1; i < 50_000 && (single.length < 4 || both.length < 1 || !replyFree()); i++) {
    const s = send(pc, i).slot;
    const h0 = probe.i32[probe.sec.entries + s * ENTRY_WORDS + E_HASH]! & 15;
    const h1 = probe.i32[probe.sec.entries + s * ENTRY_WORDS + E_HASH + 1]! & 15;
    if (h0 !== TARGET) { if (h1 === TARGET) replyOnly.push([i, h0]); continue; }
    if (h1 === TARGET) both.push(i);
    else if (single.length < 4 && !replyUsed.has(h1)) { replyUsed.add(h1); single.push(i); }
  }
  pc.endBatch();
  pc.close();
  t.true(single.length >= 4 && both.length >= 1, 'found frames for the bucket');
  // One whose original bucket holds none of the above's reply tuplehashes.
  const viaReply = replyOnly.find(([, b]) => !replyUsed.has(b));
  t.truthy(viaReply);
  const ct = new Conntrack(table);
  ct.beginBatch();
  // Chain TARGET counts tuplehashes: a both-in-one-bucket entry needs len + 2 <= 3.
  t.false(send(ct, single[0]!).drop); // 1
  const vb = send(ct, both[0]!);
  t.false(vb.drop, '1 + 2 = 3: fits'); // 3
  const bslot = vb.slot; // the verdict object is reused by the next frame
  t.is(send(ct, single[1]!).reason, 'hash chain too long', 'at the cap');
  t.true(ct.chains.kill(bslot, KILL_DELETE)); // 1
  t.false(send(ct, single[1]!).drop); // 2
  t.is(send(ct, both[0]!).reason, 'hash chain too long', '2 + 2 > 3');
  t.false(send(ct, single[2]!).drop, 'a single tuplehash still fits: 3 of 3');
  t.is(send(ct, single[3]!).reason, 'hash chain too long', 'the chain is at the cap');
  const vr = send(ct, viaReply![0]);
  t.is(vr.reason, 'hash chain too long', `its reply chain is at the cap (${JSON.stringify({ viaReply, single, both, slot: vr.slot, st: vr.state })})`);
  ct.endBatch();
  t.is(table.count, 3);
  t.is(stat(table, 'chaintoolong'), 4);
  t.is(stat(table, 'insert_failed'), 4);
  inv(t, table);
  ct.close();
});

test('early_drop within a namespace limit: an expired victim counts as expired, a live one as early_drop', (t) => {
  const table = ConntrackTable.create({ max: 64, namespaces: 2 });
  table.setNamespaceLimit(1, 2);
  const ct = new Conntrack(table);
  ct.beginBatch();
  const a = assured(ct, 10, 1);
  assured(ct, 11, 1);
  const to = table.i32[table.sec.entries + a * ENTRY_WORDS + E_TIMEOUT]!;
  // At `to` entry a has expired: it is the victim, counted as an expiry.
  t.true(ct.chains.earlyDropWithin(CONFIRM_NS_LIMIT, 1, 0, to));
  t.is(stat(table, 'expired'), 1);
  t.is(stat(table, 'early_drop'), 0);
  t.is(table.namespaceCount(1), 1);
  // Both ASSURED and live: nothing to drop.
  send(ct, 12, 1);
  t.is(table.namespaceCount(1), 2);
  const b = ct.chains.zones.dropCandidate(LIST_NS, 1, 1, NOW);
  t.true(b >= 0);
  t.true(ct.chains.earlyDropWithin(CONFIRM_NS_LIMIT, 1, 0, NOW), 'the one-way entry is dropped');
  t.is(stat(table, 'early_drop'), 1);
  t.is(stat(table, 'expired'), 1);
  t.false(ct.chains.earlyDropWithin(CONFIRM_NS_LIMIT, 1, 0, NOW), 'only ASSURED live ones left');
  // The namespace's list is searched whatever zone the new connection is in.
  const q = udp4({ src: addr(13), dst: '192.0.2.2', sport: 6000, dport: 53 });
  t.false(ct.frame(LT, q, 0, q.length, NOW, 9, 1).drop); // zone 9, namespace 1
  t.is(table.namespaceCount(1), 2, 'at its limit again');
  t.true(ct.chains.earlyDropWithin(CONFIRM_NS_LIMIT, 1, 3, NOW), 'zone 3 is empty; namespace 1 has a one-way entry');
  t.is(stat(table, 'early_drop'), 2);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('the global early_drop (table full) takes a not-ASSURED entry of the inserting namespace only', (t) => {
  const table = ConntrackTable.create({ max: 16, namespaces: 4, buckets: 16 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  // 8 ASSURED of namespace 1, 8 one-way of namespace 2: full.
  for (let i = 0; i < 8; i++) assured(ct, 100 + i, 1);
  for (let i = 0; i < 8; i++) send(ct, 200 + i, 2);
  t.is(table.count, 16);
  const v1 = send(ct, 300, 1);
  t.is(v1.reason, 'table full', 'namespace 1 has only ASSURED entries');
  t.is(table.namespaceCount(2), 8);
  const v2 = send(ct, 301, 2);
  t.false(v2.drop, 'namespace 2 evicts one of its own');
  t.is(table.namespaceCount(2), 8);
  t.is(table.namespaceCount(1), 8);
  t.is(stat(table, 'early_drop'), 1);
  let assuredLeft = 0;
  for (let s = 0; s < table.capacity; s++) {
    const st = table.i32[table.sec.entries + s * ENTRY_WORDS + E_STATUS]!;
    if ((st & IPS_ASSURED) !== 0 && (st & IPS_DYING) === 0) assuredLeft++;
  }
  t.is(assuredLeft, 8);
  ct.endBatch();
  inv(t, table);
  ct.close();
});

test('a lookup compares every tuple word, not only the hash: one word changed in the stored tuple is a miss', (t) => {
  // The stored 32-bit hash still matches, so only the word comparison can tell the tuples apart
  // (the kernel's nf_ct_key_equal compares the whole tuple after the hash picked the chain).
  const words = [
    ['source word 0', T_SRC], ['source word 1', T_SRC + 1], ['source word 2', T_SRC + 2], ['source word 3', T_SRC + 3],
    ['destination word 0', T_DST], ['destination word 1', T_DST + 1], ['destination word 2', T_DST + 2],
    ['destination word 3', T_DST + 3], ['ports', T_PORTS],
  ] as const;
  const frame = (): Uint8Array => udp6({ src: '2001:db8:1:2:3:4:5:6', dst: '2001:db8:a:b:c:d:e:f', sport: 4000, dport: 53, payload: 'q' });
  for (const [name, w] of words) {
    const table = ConntrackTable.create({ max: 64 });
    const ct = new Conntrack(table);
    const first = ct.decide(frame(), { linktype: LINKTYPE_RAW, now: 1000 });
    t.is(first.ctstate, 'new');
    const slot = first.slot; // the verdict object is reused by the next decide
    t.is(ct.decide(frame(), { linktype: LINKTYPE_RAW, now: 1001 }).slot, slot, 'the same tuple finds its entry');
    const at = ct.chains.entry(slot) + E_TUPLE + w;
    table.i32[at] = table.i32[at]! ^ 0x100;
    // The lookup must miss (the insert that follows then meets the stored entry's unchanged reply
    // tuple and is refused); had the word not been compared, the packet would land on it.
    const v = ct.decide(frame(), { linktype: LINKTYPE_RAW, now: 1002 });
    t.not(v.slot, slot, `${name} differs: the lookup missed`);
    ct.close();
  }
});
