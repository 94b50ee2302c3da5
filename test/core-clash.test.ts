/**
 * Confirm-time races of create() forced on one thread: two trackers on one table act as two
 * workers. Tracker B is stopped between its lookup (a miss) and its confirm, by a hook on the
 * private step that runs right after its allocation (extCreate); there tracker A handles packets
 * of its own, so B's confirm meets what A inserted. Expectations from the kernel's
 * __nf_conntrack_confirm / nf_ct_resolve_clash (6.x) and, for namespace and zone limits, the rule
 * documented in src/table/zones.ts (at a limit: early_drop inside it, else refuse).
 */
import test from 'ava';

import { Conntrack, LINKTYPE_RAW } from '../src/index.js';
import { E_REFCNT, E_STATUS, E_TIMEOUT, IPS_ASSURED } from '../src/table/layout.js';
import { ConntrackTable } from '../src/table/table.js';
import { R_CLASH, R_NS_LIMIT, R_ZONE_LIMIT } from '../src/track/core.js';
import { R_NAT_CLASH } from '../src/track/nat/nat.js';
import { icmp4, icmp6, ipv4, tcp4, udp4 } from './helpers/frames.js';

const NOW = 1_000_000;

/** Runs `between` once, inside B's next create(), after its lookup and before its confirm. */
function pauseBeforeConfirm(b: Conntrack, between: () => void): void {
  const h = b as unknown as { extCreate: (...a: unknown[]) => void };
  const own = h.extCreate;
  h.extCreate = function (this: Conntrack, ...a: unknown[]): void {
    h.extCreate = own;
    between();
    own.apply(this, a);
  };
}

const stat = (table: ConntrackTable, name: string): number => table.stats().total[name] ?? 0;

/** A UDP query of flow i (zone / namespace given to decide). */
const flow = (i: number): Uint8Array => udp4({ src: `10.3.0.${i}`, dst: '10.3.1.1', sport: 6000 + i, dport: 53, payload: 'q' });

/** A fresh query each time: NAT rewrites the frames it translates in place. */
const query = (): Uint8Array => udp4({ src: '10.1.0.1', dst: '10.1.0.2', sport: 5000, dport: 53, payload: 'q' });

for (const discipline of ['noref', 'refcount'] as const) {
  test(`UDP clash (${discipline}): the later confirm joins the winner (clash_resolve), its own entry given back`, (t) => {
    const table = ConntrackTable.create({ max: 64, discipline });
    const a = new Conntrack(table);
    const b = new Conntrack(table);
    let won = -1;
    pauseBeforeConfirm(b, () => {
      const v = a.decide(query(), { linktype: LINKTYPE_RAW, now: NOW });
      t.is(v.ctstate, 'new');
      won = v.slot;
    });
    const free0 = table.count;
    const v = b.decide(query(), { linktype: LINKTYPE_RAW, now: NOW });
    // __nf_ct_resolve_clash: the packet is attached to the entry that won (still NEW, original).
    t.deepEqual([v.ctstate, v.direction, v.drop, v.slot], ['new', 'original', false, won]);
    t.is(stat(table, 'clash_resolve'), 1);
    t.is(stat(table, 'insert'), 1);
    t.is(stat(table, 'insert_failed'), 0);
    t.is(table.count, free0 + 1, 'one entry: the loser\'s was discarded');
    if (discipline === 'refcount') t.is(Atomics.load(table.i32, a.chains.entry(won) + E_REFCNT), 1, 'only the table\'s reference');
    // The joined packet counted on the winner: a reply now finds it.
    const r = udp4({ src: '10.1.0.2', dst: '10.1.0.1', sport: 53, dport: 5000, payload: 'r' });
    t.is(b.decide(r, { linktype: LINKTYPE_RAW, now: NOW + 1 }).ctstate, 'established');
    a.close();
    b.close();
  });
}

test('UDP clash (refcount) when the winner is in slot 0: its lookup result 0 is still a hit, its reference dropped', (t) => {
  // A lookup result is slot << 1 | direction: slot 0's original direction is 0. Which of A's
  // allocations gets slot 0 is learnt on a probe table built the same way.
  const probe = ConntrackTable.create({ max: 64, discipline: 'refcount' });
  const pa = new Conntrack(probe);
  let n = -1;
  for (let i = 0; i < 64 && n < 0; i++) if (pa.decide(flow(i + 10), { linktype: LINKTYPE_RAW, now: NOW }).slot === 0) n = i;
  pa.close();
  if (n < 0) return t.fail('no allocation got slot 0');
  const table = ConntrackTable.create({ max: 64, discipline: 'refcount' });
  const a = new Conntrack(table);
  const b = new Conntrack(table);
  for (let i = 0; i < n; i++) a.decide(flow(i + 10), { linktype: LINKTYPE_RAW, now: NOW });
  let won = -1;
  pauseBeforeConfirm(b, () => {
    won = a.decide(query(), { linktype: LINKTYPE_RAW, now: NOW }).slot;
  });
  const v = b.decide(query(), { linktype: LINKTYPE_RAW, now: NOW });
  t.is(won, 0);
  t.deepEqual([v.ctstate, v.slot], ['new', 0]);
  t.is(stat(table, 'clash_resolve'), 1);
  t.is(Atomics.load(table.i32, a.chains.entry(0) + E_REFCNT), 1, 'only the table\'s reference');
  a.close();
  b.close();
});

test('TCP clash with NAT: the later SYN is dropped (TCP has no allow_clash), insert_failed', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  table.setNatRules(['ip saddr 10.0.0.0/8 snat to 203.0.113.5']);
  const a = new Conntrack(table);
  const b = new Conntrack(table);
  const syn = tcp4({ src: '10.2.0.1', dst: '10.2.0.2', sport: 4000, dport: 80, flags: 'S', seq: 100, win: 1000 });
  let won = -1;
  pauseBeforeConfirm(b, () => {
    won = a.decide(syn, { linktype: LINKTYPE_RAW, now: NOW }).slot;
  });
  const v = b.decide(syn, { linktype: LINKTYPE_RAW, now: NOW });
  t.deepEqual([v.ctstate, v.drop, v.reason], ['invalid', true, R_NAT_CLASH]);
  t.is(stat(table, 'insert_failed'), 1);
  t.is(stat(table, 'clash_resolve'), 0);
  t.is(stat(table, 'insert'), 1);
  t.is(table.count, 1);
  t.true(won >= 0);
  a.close();
  b.close();
});

for (const discipline of ['noref', 'refcount'] as const) {
  test(`TCP clash without NAT (${discipline}): the later SYN is dropped, insert_failed (nf_ct_resolve_clash: TCP has no allow_clash)`, (t) => {
    const table = ConntrackTable.create({ max: 64, discipline });
    const a = new Conntrack(table);
    const b = new Conntrack(table);
    const syn = tcp4({ src: '10.2.0.1', dst: '10.2.0.2', sport: 4000, dport: 80, flags: 'S', seq: 100, win: 1000 });
    let won = -1;
    pauseBeforeConfirm(b, () => {
      won = a.decide(syn, { linktype: LINKTYPE_RAW, now: NOW }).slot;
    });
    const v = b.decide(syn, { linktype: LINKTYPE_RAW, now: NOW });
    t.deepEqual([v.ctstate, v.drop, v.reason], ['invalid', true, R_CLASH]);
    t.deepEqual([stat(table, 'insert_failed'), stat(table, 'drop'), stat(table, 'clash_resolve'), stat(table, 'insert')], [1, 1, 0, 1]);
    t.is(table.count, 1, 'the loser\'s entry was given back');
    if (discipline === 'refcount') t.is(Atomics.load(table.i32, a.chains.entry(won) + E_REFCNT), 1, 'only the table\'s reference');
    // The retransmitted SYN finds the winner's entry (still SYN_SENT: a SYN in the original direction).
    t.is(b.decide(syn, { linktype: LINKTYPE_RAW, now: NOW + 1 }).slot, won);
    a.close();
    b.close();
  });
}

// The kernel's allow_clash per l4proto (6.18): UDP, UDP-Lite, ICMP, ICMPv6 and DCCP set it; TCP,
// SCTP, GRE and the generic tracker do not. UDP-Lite with its checksum switched off (the frame
// builder has no UDP-Lite checksum; 0 would be invalid in any case); DCCP and protocol 253 carry a bare 16-byte payload.
const bare = (proto: number): Uint8Array => ipv4(proto, new Uint8Array(16).fill(7), { src: '10.4.0.1', dst: '10.4.0.2' });
const lite = (): Uint8Array => ipv4(136, Uint8Array.of(0x13, 0x88, 0, 53, 0, 8, 0x12, 0x34), { src: '10.4.0.1', dst: '10.4.0.2' });
for (const [name, frame, joins] of [
  ['UDP-Lite', lite, true], ['ICMP echo', () => icmp4({ type: 8, id: 9 }), true], ['ICMPv6 echo', () => icmp6({ type: 128, id: 9 }), true],
  ['DCCP', () => bare(33), true], ['GRE', () => bare(47), false], ['protocol 253 (generic)', () => bare(253), false],
] as const) {
  test(`clash of ${name}: ${joins ? 'joins the winner' : 'dropped with insert_failed'} (allow_clash ${joins})`, (t) => {
    const table = ConntrackTable.create({ max: 64 });
    table.setSysctl('nf_conntrack_checksum', 0);
    const a = new Conntrack(table);
    const b = new Conntrack(table);
    let won = -1;
    pauseBeforeConfirm(b, () => {
      const w = a.decide(frame(), { linktype: LINKTYPE_RAW, now: NOW });
      t.is(w.ctstate, 'new');
      won = w.slot;
    });
    const v = b.decide(frame(), { linktype: LINKTYPE_RAW, now: NOW });
    if (joins) {
      t.deepEqual([v.ctstate, v.drop, v.slot], ['new', false, won]);
      t.deepEqual([stat(table, 'clash_resolve'), stat(table, 'insert_failed')], [1, 0]);
    } else {
      t.deepEqual([v.ctstate, v.drop, v.reason], ['invalid', true, R_CLASH]);
      t.deepEqual([stat(table, 'clash_resolve'), stat(table, 'insert_failed')], [0, 1]);
    }
    t.is(table.count, 1);
    a.close();
    b.close();
  });
}

test('UDP clash with NAT: the later packet joins the winner (UDP may clash)', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  table.setNatRules(['ip saddr 10.0.0.0/8 snat to 203.0.113.5']);
  const a = new Conntrack(table);
  const b = new Conntrack(table);
  let won = -1;
  pauseBeforeConfirm(b, () => {
    won = a.decide(query(), { linktype: LINKTYPE_RAW, now: NOW }).slot;
  });
  const v = b.decide(query(), { linktype: LINKTYPE_RAW, now: NOW });
  t.deepEqual([v.ctstate, v.drop, v.slot], ['new', false, won]);
  t.is(stat(table, 'clash_resolve'), 1);
  t.is(stat(table, 'insert_failed'), 0);
  t.is(table.count, 1);
  a.close();
  b.close();
});


for (const discipline of ['noref', 'refcount'] as const) test(`NAT (${discipline}): another worker takes our NAT reply tuple between our NAT choice and our confirm: dropped, insert_failed`, (t) => {
  // One translated port: B's query from port 5001 is given 203.0.113.5:40000; before B confirms,
  // A's query from port 5002 (another original tuple) is given the same port, as B's choice is
  // not in the table yet, and confirms. B's confirm then clashes on the reply tuple only: no
  // entry has B's original tuple to join (nf_ct_resolve_clash fails): the packet is dropped.
  const table = ConntrackTable.create({ max: 64, discipline });
  table.setNatRules(['ip saddr 10.0.0.0/8 snat to 203.0.113.5:40000']);
  const a = new Conntrack(table);
  const b = new Conntrack(table);
  const from = (sport: number): Uint8Array => udp4({ src: '10.6.0.1', dst: '10.6.1.1', sport, dport: 53, payload: 'q' });
  const nat = b.nat as unknown as { setup: (e: number, now: number) => string | null };
  const own = nat.setup;
  nat.setup = function (this: unknown, e: number, now: number): string | null {
    nat.setup = own;
    const r = own.call(this, e, now);
    t.is(a.decide(from(5002), { linktype: LINKTYPE_RAW, now: NOW }).ctstate, 'new');
    return r;
  };
  const v = b.decide(from(5001), { linktype: LINKTYPE_RAW, now: NOW });
  t.deepEqual([v.ctstate, v.drop, v.reason], ['invalid', true, R_NAT_CLASH]);
  t.is(stat(table, 'insert_failed'), 1);
  t.is(stat(table, 'nat_failed'), 1);
  t.is(stat(table, 'clash_resolve'), 0);
  t.is(table.count, 1);
  a.close();
  b.close();
});

/** A TCP handshake of flow i by `ct`: ESTABLISHED and ASSURED. */
function assured(ct: Conntrack, i: number, opts: { zone?: number; ns?: number }): number {
  const c = { src: `10.4.0.${i}`, dst: '10.4.1.1', sport: 7000 + i, dport: 80 };
  const s = { src: '10.4.1.1', dst: `10.4.0.${i}`, sport: 80, dport: 7000 + i };
  const o = { linktype: LINKTYPE_RAW, now: NOW, ...opts };
  const slot = ct.decide(tcp4({ ...c, flags: 'S', seq: 100, win: 1000 }), o).slot;
  ct.decide(tcp4({ ...s, flags: 'SA', seq: 500, ack: 101, win: 1000 }), o);
  ct.decide(tcp4({ ...c, flags: 'A', seq: 101, ack: 501, win: 1000 }), o);
  return slot;
}

for (const kind of ['zone', 'namespace'] as const) {
  const opts = kind === 'zone' ? { zone: 11 } : { ns: 1 };
  const limit = (table: ConntrackTable, n: number): void => {
    if (kind === 'zone') table.setZoneLimit(11, n);
    else table.setNamespaceLimit(1, n);
  };

  test(`${kind} limit reached between B's check and its confirm: one early_drop inside it makes room`, (t) => {
    const table = ConntrackTable.create({ max: 64, namespaces: 4 });
    limit(table, 2);
    const a = new Conntrack(table);
    const b = new Conntrack(table);
    const old = a.decide(flow(1), { linktype: LINKTYPE_RAW, now: NOW, ...opts });
    t.is(old.ctstate, 'new');
    pauseBeforeConfirm(b, () => {
      t.is(a.decide(flow(2), { linktype: LINKTYPE_RAW, now: NOW + 1, ...opts }).ctstate, 'new');
    });
    const v = b.decide(flow(3), { linktype: LINKTYPE_RAW, now: NOW + 2, ...opts });
    t.deepEqual([v.ctstate, v.drop, v.reason], ['new', false, null]);
    t.is(stat(table, 'early_drop'), 1);
    t.is(stat(table, `${kind === 'zone' ? 'zone' : 'ns'}_limit`), 0);
    t.is(table.count, 2);
    // The oldest not-ASSURED entry of the limit went (flow 1): flows 2 and 3 are still there,
    // found without an insert.
    for (const i of [2, 3]) t.is(b.decide(flow(i), { linktype: LINKTYPE_RAW, now: NOW + 3, ...opts }).ctstate, 'new');
    t.is(stat(table, 'insert'), 3);
    t.is(stat(table, 'found'), 2);
    a.close();
    b.close();
  });

  test(`${kind} limit reached between B's check and its confirm, all ASSURED: refused`, (t) => {
    const table = ConntrackTable.create({ max: 64, namespaces: 4 });
    limit(table, 2);
    const a = new Conntrack(table);
    const b = new Conntrack(table);
    const s1 = assured(a, 1, opts);
    t.not(Atomics.load(table.i32, a.chains.entry(s1) + E_STATUS) & IPS_ASSURED, 0);
    pauseBeforeConfirm(b, () => {
      assured(a, 2, opts);
    });
    const v = b.decide(flow(3), { linktype: LINKTYPE_RAW, now: NOW + 2, ...opts });
    t.deepEqual([v.ctstate, v.drop, v.reason], ['invalid', true, kind === 'zone' ? R_ZONE_LIMIT : R_NS_LIMIT]);
    t.is(stat(table, `${kind === 'zone' ? 'zone' : 'ns'}_limit`), 1);
    t.is(stat(table, 'early_drop'), 0);
    t.is(table.count, 2);
    a.close();
    b.close();
  });
}

test('a tracker on the table itself is bound to no namespace (boundNs -1)', (t) => {
  const table = ConntrackTable.create({ max: 64, namespaces: 4 });
  const ct = new Conntrack(table);
  t.is(ct.boundNs, -1);
  t.is(new Conntrack(table.namespace(2).handle()).boundNs, 2);
  t.is(new Conntrack(table.handle()).boundNs, -1, 'a handle of the whole table');
  ct.close();
});

test('at a zone limit of ASSURED entries a first packet is refused for the limit before its tracker looks at it', (t) => {
  // The room is checked before the entry is allocated (as the kernel's nf_conntrack_alloc comes
  // before tcp_new): a SYN/ACK, which tcp_new refuses as a first packet, gets the limit's verdict.
  const table = ConntrackTable.create({ max: 64 });
  table.setZoneLimit(12, 1);
  const ct = new Conntrack(table);
  assured(ct, 1, { zone: 12 });
  const synack = tcp4({ src: '10.4.0.9', dst: '10.4.1.1', sport: 7009, dport: 80, flags: 'SA', seq: 1, ack: 1, win: 1000 });
  const v = ct.decide(synack, { linktype: LINKTYPE_RAW, now: NOW + 1, zone: 12 });
  t.deepEqual([v.ctstate, v.drop, v.reason], ['invalid', true, R_ZONE_LIMIT]);
  t.is(stat(table, 'zone_limit'), 1);
  // Without the limit the same SYN/ACK is tcp_new's to refuse (not dropped).
  const w = ct.decide(synack, { linktype: LINKTYPE_RAW, now: NOW + 1, zone: 13 });
  t.is(w.ctstate, 'invalid');
  t.false(w.drop);
  t.not(w.reason, R_ZONE_LIMIT);
  ct.close();
});

test('a timeout sysctl of 0 refreshes to now: an accepted packet and an invalid FIN (nf_tcp_handle_invalid) alike', (t) => {
  // nf_ct_refresh(ct, 0) and WRITE_ONCE(ct->timeout, now + 0): the entry expires now.
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const left = (slot: number, now: number): number => ((table.i32[ct.chains.entry(slot) + E_TIMEOUT]! - now) | 0) / 1000;
  const u = ct.decide(query(), { linktype: LINKTYPE_RAW, now: 1000 }).slot;
  t.is(left(u, 1000), 30);
  table.setSysctl('nf_conntrack_udp_timeout', 0);
  t.is(ct.decide(query(), { linktype: LINKTYPE_RAW, now: 2000 }).ctstate, 'new');
  t.is(left(u, 2000), 0);
  // ESTABLISHED and ASSURED, then invalid FINs from both sides: 5 days lowered to UNACK = 0.
  table.setSysctl('nf_conntrack_tcp_timeout_unacknowledged', 0);
  const c = { src: '10.0.0.1', dst: '10.0.0.2', sport: 4000, dport: 80 };
  const s = { src: '10.0.0.2', dst: '10.0.0.1', sport: 80, dport: 4000 };
  const o = (now: number) => ({ linktype: LINKTYPE_RAW, now });
  const slot = ct.decide(tcp4({ ...c, flags: 'S', seq: 100, win: 1000 }), o(1000)).slot;
  ct.decide(tcp4({ ...s, flags: 'SA', seq: 500, ack: 101, win: 1000 }), o(1000));
  ct.decide(tcp4({ ...c, flags: 'A', seq: 101, ack: 501, win: 1000 }), o(1000));
  ct.decide(tcp4({ ...s, flags: 'A', seq: 501, ack: 101, win: 1000 }), o(1000));
  t.is(left(slot, 1000), 432000);
  t.is(ct.decide(tcp4({ ...c, flags: 'FA', seq: 900000, ack: 501, win: 1000 }), o(2000)).ctstate, 'invalid');
  t.is(ct.decide(tcp4({ ...s, flags: 'FA', seq: 900000, ack: 101, win: 1000 }), o(3000)).ctstate, 'invalid');
  t.is(left(slot, 3000), 0);
  ct.close();
});
