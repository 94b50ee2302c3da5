/**
 * Boundaries the kernel fixtures do not reach, each checked against a value computed by hand
 * from the kernel's rule (named in each test), never against our own output. Each test kills a
 * mutation that survived the rest of the suite (docs/mutation.md).
 */
import test from 'ava';
import { Worker } from 'node:worker_threads';
import { Conntrack } from '../src/track/core.js';
import { eventStats, subscribeEvents } from '../src/table/ecache.js';
import { startGc, type GcOptions } from '../src/table/gc.js';
import { attachTimeoutPolicyToZone, defineTimeoutPolicy, extStats } from '../src/table/ext.js';
import { STAT_WORDS, ST_PACKETS, E_REFCNT, E_STATUS, E_TIMEOUT, H_COUNT, H_FREE_COUNT, IPS_ASSURED, IPS_CONFIRMED, IPS_DYING, TD_MAXEND, TD_MAXWIN } from '../src/table/layout.js';
import { ConntrackTable } from '../src/table/table.js';
import { LINKTYPE_ETHERNET, LINKTYPE_RAW, TH_ACK, TH_SYN } from '../src/input/packet/packet.js';
import { R_INVALID_NEW, R_NO_PICKUP, R_OVERSHOT, R_SEQ_OVER, TCP_CONNTRACK_FIN_WAIT, tcpState } from '../src/track/proto/tcp.js';
import { CT_INVALID, CT_NEW } from '../src/track/verdict.js';
import { seg, TcpHarness } from './helpers/tcpctx.js';
import { tcpClosing, tcpEstablished } from './helpers/conns.js';
import { fixIpv4Checksum, icmp4, icmp6, icmpError4, icmpError6, ipv4, parsePacket, tcp4, udp4, udp6 } from './helpers/frames.js';
import { udpError, udpliteError } from '../src/track/proto/udp.js';
import { ICMP_INVALID, icmpError } from '../src/track/proto/icmp.js';
import { ProtoResult } from '../src/track/proto/l4proto.js';
import { checkInvariants, formatInvariants } from '../src/table/invariants.js';

function stat(table: ConntrackTable, name: string): number {
  return table.stats().total[name]!;
}

test('TCP window overrun: exactly the receiver\'s max window over is ignored, one byte more is invalid', (t) => {
  // tcp_in_window: a segment past td_maxend is let through (ignored, its end remembered) when
  // overshot = end - sender.td_maxend + 1 <= receiver.td_maxwin; otherwise "SEQ is over".
  // Client ISN 1000, window 1000; server ISN 5000, window 2000: after the handshake the client's
  // td_maxend is 1001 + 2000 = 3001 and the server's td_maxwin is 2000.
  const boundary = (len: number): { verdict: string; reason: string | null } => {
    const h = new TcpHarness();
    h.step(0, seg(TH_SYN, 1000, 0, { win: 1000 }));
    h.step(1, seg(TH_SYN | TH_ACK, 5000, 1001, { win: 2000 }));
    h.step(0, seg(TH_ACK, 1001, 5001, { win: 1000 }));
    t.is(h.td(0, TD_MAXEND), 3001);
    t.is(h.td(1, TD_MAXWIN), 2000);
    // seq 3002 (just past td_maxend): end = 3002 + len; overshot = end - 3001 + 1 = len + 2.
    const r = h.step(0, seg(TH_ACK, 3002, 5001, { len, win: 1000 }));
    return { verdict: r.verdict, reason: r.reason };
  };
  t.deepEqual(boundary(1998), { verdict: 'established', reason: R_OVERSHOT }); // overshot 2000
  t.deepEqual(boundary(1999), { verdict: 'invalid', reason: R_SEQ_OVER }); // overshot 2001
});

test('ICMP types above 18 (NR_ICMP_TYPES) are invalid as such and counted as errors', (t) => {
  // icmp_error: type > NR_ICMP_TYPES (18) is "invalid icmp type", an error; 18 (address mask
  // reply) passes that check and is refused later because it cannot open a connection.
  const table = ConntrackTable.create({ max: 256 });
  const ct = new Conntrack(table);
  for (const type of [19, 20, 30, 40, 41, 127, 255]) {
    const errors = stat(table, 'error');
    const v = ct.decide(icmp4({ src: '10.0.0.1', dst: '10.0.0.2', type }), LINKTYPE_RAW, 1000);
    t.is(v.state, CT_INVALID, `type ${type}`);
    t.is(v.reason, 'invalid ICMP type', `type ${type}`);
    t.is(stat(table, 'error'), errors + 1, `type ${type} counted as an error`);
  }
  const errors = stat(table, 'error');
  const v = ct.decide(icmp4({ src: '10.0.0.1', dst: '10.0.0.2', type: 18 }), LINKTYPE_RAW, 1000);
  t.is(v.state, CT_INVALID);
  t.is(v.reason, 'ICMP type cannot create a connection');
  t.is(stat(table, 'error'), errors, 'type 18 is not a header error');
  t.is(ct.decide(icmp4({ src: '10.0.0.1', dst: '10.0.0.2', type: 17 }), LINKTYPE_RAW, 1000).state, CT_NEW);
  ct.close();
});

test('UDP: ASSURED and the stream timeout only for traffic more than 2 s after the first packet', (t) => {
  // nf_conntrack_udp_packet: a replied flow is a stream once a packet arrives after
  // stream_ts = first packet + 2 s; before that the reply keeps the 30 s unreplied timeout.
  const table = ConntrackTable.create({ max: 256 });
  const ct = new Conntrack(table);
  const q = udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 4000, dport: 53, payload: 'q' });
  const a = udp4({ src: '10.0.0.2', dst: '10.0.0.1', sport: 53, dport: 4000, payload: 'a' });
  const T = 100_000;
  const status = (v: { slot: number }): number => Atomics.load(table.i32, ct.chains.entry(v.slot) + E_STATUS);
  const left = (v: { slot: number }, now: number): number => (table.i32[ct.chains.entry(v.slot) + E_TIMEOUT]! - now) / 1000;
  ct.decide(q, LINKTYPE_RAW, T);
  let v = ct.decide(a, LINKTYPE_RAW, T + 1000);
  t.is(status(v) & IPS_ASSURED, 0);
  v = ct.decide(q, LINKTYPE_RAW, T + 2000); // exactly 2 s: not after stream_ts yet
  t.is(status(v) & IPS_ASSURED, 0, 'at 2.000 s: not a stream');
  t.is(left(v, T + 2000), 30);
  v = ct.decide(q, LINKTYPE_RAW, T + 2001);
  t.truthy(status(v) & IPS_ASSURED, 'at 2.001 s: a stream');
  t.is(left(v, T + 2001), 120);
  ct.close();
});

test('above 95% of nf_conntrack_max the GC evicts closing TCP connections even when ASSURED', async (t) => {
  // gc_worker_can_early_drop: not ASSURED, or a TCP connection that is closing. Here every
  // entry is ASSURED; only the 10 FIN_WAIT ones are closing: 100 entries, mark 95 -> 5 of them go.
  const table = ConntrackTable.create({ max: 100 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const keep: number[] = [];
  for (let i = 0; i < 90; i++) keep.push(tcpEstablished(ct, i, 0));
  const closing: number[] = [];
  for (let i = 90; i < 100; i++) closing.push(tcpClosing(ct, i, 0));
  ct.endBatch();
  const live = (s: number): boolean => (Atomics.load(table.i32, ct.chains.entry(s) + E_STATUS) & (IPS_CONFIRMED | IPS_DYING)) === IPS_CONFIRMED;
  for (const s of closing) {
    t.truthy(Atomics.load(table.i32, ct.chains.entry(s) + E_STATUS) & IPS_ASSURED);
    t.is(tcpState({ i32: table.i32, u32: table.u32, sys: table.sec.sysctl }, ct.chains.entry(s)), TCP_CONNTRACK_FIN_WAIT);
  }
  t.is(Atomics.load(table.i32, H_COUNT), 100);
  table.clock = 1000;
  const gc = startGc(table, { wallPerClock: 0.001 } satisfies GcOptions);
  try {
    await gc.ready;
    await gc.sweep();
    t.is(Atomics.load(table.i32, H_COUNT), 95);
    t.is(stat(table, 'gc_evict'), 5);
    t.true(keep.every(live), 'ESTABLISHED ASSURED entries are kept');
    t.is(closing.filter((s) => !live(s)).length, 5);
  } finally {
    await gc.stop();
    ct.close();
  }
});

test('an empty first fragment of a protocol without ports is invalid and creates nothing', (t) => {
  // Offset 0 with more-fragments set and no layer-4 byte. With reassembly (the default, as
  // nf_defrag_ipv4) ip_fragment.c drops an empty fragment; without it (nf_conntrack_defrag=0)
  // there is nothing to track. The same packet unfragmented is a new generic connection.
  for (const [defrag, reason] of [[1, 'empty fragment (dropped)'], [0, 'non-first fragment (no reassembly)']] as const) {
    const table = ConntrackTable.create({ max: 256, sysctls: { nf_conntrack_defrag: defrag } });
    const ct = new Conntrack(table);
    for (const proto of [47, 253]) {
      const frag = ipv4(proto, new Uint8Array(0), { src: '10.0.0.1', dst: '10.0.0.2', mf: true });
      const v = ct.decide(frag, LINKTYPE_RAW, 1000);
      t.is(v.state, CT_INVALID, `protocol ${proto}, defrag ${defrag}`);
      t.is(v.reason, reason);
    }
    t.is(Atomics.load(table.i32, H_COUNT), 0);
    t.is(ct.decide(ipv4(253, new Uint8Array(0), { src: '10.0.0.1', dst: '10.0.0.2' }), LINKTYPE_RAW, 1000).state, CT_NEW);
    ct.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Header checks and per-protocol rules the mutation run found unchecked (docs/mutation.md).
// Reasons are written out as text here, never imported: a changed message must fail.

function ctxOf(table: ConntrackTable): { i32: Int32Array; u32: Uint32Array; sys: number } {
  return { i32: table.i32, u32: table.u32, sys: table.sec.sysctl };
}

test('udp_error: length field, short header, zero checksum, checksum only when nf_conntrack_checksum is on', (t) => {
  // udp_error: fewer than 8 bytes is "short"; a length field above the bytes present or below 8
  // is "truncated/malformed"; checksum 0 is "none" over IPv4; a wrong one fails only with the sysctl on.
  const table = ConntrackTable.create({ max: 64 });
  const ctx = ctxOf(table);
  const frame = udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2, payload: 'abcd' }); // 12 UDP bytes
  const at = (len: number | null, check: number | null, l4len?: number): string | null => {
    const f = Uint8Array.from(frame);
    const p = parsePacket(f);
    const o = p.l4off;
    if (len !== null) { f[o + 4] = len >> 8; f[o + 5] = len & 255; }
    if (check !== null) { f[o + 6] = check >> 8; f[o + 7] = check & 255; }
    if (l4len !== undefined) p.l4len = l4len;
    return udpError(ctx, p);
  };
  t.is(at(null, null), null);
  t.is(at(null, null, 7), 'short UDP packet');
  t.is(at(8, 0, 8), null, 'exactly a header');
  t.is(at(7, null), 'truncated/malformed UDP packet');
  t.is(at(13, null), 'truncated/malformed UDP packet');
  t.is(at(12, 0), null, 'zero checksum: none, not wrong');
  t.is(at(null, 0x1234), 'bad UDP checksum');
  // Wrong checksums with one zero byte (the source address 10.0.0.1 has zero bytes beside the
  // header): still wrong, not "none".
  t.is(at(null, 0x1200), 'bad UDP checksum');
  t.is(at(null, 0x0012), 'bad UDP checksum');
  table.setSysctl('nf_conntrack_checksum', 0);
  t.is(at(null, 0x1234), null);
});

test('ICMP: a bad checksum is invalid only with nf_conntrack_checksum on; short headers; ICMPv6 reasons', (t) => {
  // icmp_error / icmpv6_error: fewer than 8 bytes is short; the checksum is verified when the
  // sysctl is on; ICMPv6 types that cannot open a connection (an echo reply first) are invalid.
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const bad4 = icmp4({ src: '10.0.0.1', dst: '10.0.0.2', type: 8 });
  bad4[bad4.length - 7]! ^= 0xff; // inside the ICMP header (the checksum), after the IP header
  const bad6 = icmp6({ src: 'fd00::1', dst: 'fd00::2', type: 128 });
  bad6[bad6.length - 7]! ^= 0xff;
  let v = ct.decide(bad4, LINKTYPE_RAW, 1000);
  t.deepEqual([v.state, v.reason], [CT_INVALID, 'bad ICMP checksum']);
  v = ct.decide(bad6, LINKTYPE_RAW, 1000);
  t.deepEqual([v.state, v.reason], [CT_INVALID, 'ICMPv6 checksum failed']);
  v = ct.decide(icmp6({ src: 'fd00::1', dst: 'fd00::2', type: 129 }), LINKTYPE_RAW, 1000);
  t.deepEqual([v.state, v.reason], [CT_INVALID, 'ICMPv6 type cannot create a connection']);
  table.setSysctl('nf_conntrack_checksum', 0);
  t.is(ct.decide(bad4, LINKTYPE_RAW, 1000).state, CT_NEW);
  t.is(ct.decide(bad6, LINKTYPE_RAW, 1000).state, CT_NEW);
  ct.close();
  const ctx = ctxOf(table);
  const res = new ProtoResult();
  const p4 = parsePacket(icmp4({ src: '10.0.0.1', dst: '10.0.0.2' }));
  p4.l4len = 7;
  t.is(icmpError(ctx, p4, res), ICMP_INVALID);
  t.is(res.reason, 'short ICMP packet');
  const p6 = parsePacket(icmp6({ src: 'fd00::1', dst: 'fd00::2' }));
  p6.l4len = 7;
  t.is(icmpError(ctx, p6, res), ICMP_INVALID);
  t.is(res.reason, 'short ICMPv6 packet');
});

test('UDP-Lite: header checks name their reason; ASSURED reported once, on the first packet after a reply', (t) => {
  // udplite_error: under 8 bytes short; coverage 1..7 or above the datagram invalid, equal to it
  // fine; a zero checksum is "missing". udplite_packet: ASSURED (one event) once a reply was seen.
  const table = ConntrackTable.create({ max: 64 });
  const ctx = ctxOf(table);
  const base = udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2, payload: 'abcd' });
  base[9] = 136; // the same bytes as UDP-Lite (the checksum is not verified with the sysctl off)
  fixIpv4Checksum(base);
  table.setSysctl('nf_conntrack_checksum', 0);
  const at = (cscov: number | null, check: number | null, l4len?: number): string | null => {
    const f = Uint8Array.from(base);
    const p = parsePacket(f);
    const o = p.l4off;
    if (cscov !== null) { f[o + 4] = cscov >> 8; f[o + 5] = cscov & 255; }
    if (check !== null) { f[o + 6] = check >> 8; f[o + 7] = check & 255; }
    if (l4len !== undefined) p.l4len = l4len;
    return udpliteError(ctx, p);
  };
  t.is(at(0, 0x0001), null);
  t.is(at(0, 0x0001, 8), null, 'exactly a header');
  t.is(at(0, 0x0001, 7), 'short UDP-Lite packet');
  t.is(at(12, 0x0100), null, 'coverage = the datagram');
  t.is(at(13, 0x0001), 'invalid UDP-Lite checksum coverage');
  t.is(at(7, 0x0001), 'invalid UDP-Lite checksum coverage');
  t.is(at(0, 0), 'UDP-Lite checksum missing');
  table.setSysctl('nf_conntrack_checksum', 1);
  t.is(at(0, 0x0001), 'bad UDP-Lite checksum');
  table.setSysctl('nf_conntrack_checksum', 0);

  const events: string[] = [];
  const ct = new Conntrack(table, { events: { event: (type, e, now) => events.push(`${type}@${now}:${Atomics.load(table.i32, e + E_STATUS) & IPS_ASSURED ? 'A' : '-'}`) } });
  const rev = Uint8Array.from(base);
  rev.set(base.subarray(16, 20), 12); rev.set(base.subarray(12, 16), 16);
  rev.set([0, 2, 0, 1], 20);
  ct.decide(base, LINKTYPE_RAW, 1000);
  ct.decide(rev, LINKTYPE_RAW, 1001);
  ct.decide(base, LINKTYPE_RAW, 1002);
  ct.decide(base, LINKTYPE_RAW, 1003);
  ct.decide(rev, LINKTYPE_RAW, 1004);
  // NEW, then the reply (UPDATE: seen reply), then one UPDATE for ASSURED on the first packet
  // after the reply, then nothing more.
  t.deepEqual(events, ['1@1000:-', '2@1001:-', '2@1002:A']);
  ct.close();
});

test('GRE: timeouts fixed at creation (a later sysctl change does not apply); side-by-side entries stay intact', (t) => {
  // gre_packet: an unconfirmed entry copies the unreplied / stream timeouts from the sysctls.
  const table = ConntrackTable.create({ max: 256 });
  const ct = new Conntrack(table);
  const gre = (src: string, dst: string, key: number): Uint8Array => {
    const b = new Uint8Array(8);
    b.set([0x20, 0, 0x88, 0x0b, 0, 0, key >> 8, key & 255]); // version 0, key present, PPP... key field
    return ipv4(47, b, { src, dst });
  };
  const slots: number[] = [];
  for (let i = 0; i < 20; i++) slots.push(ct.decide(gre(`10.7.0.${i + 1}`, '10.7.1.1', i), LINKTYPE_RAW, 1000).slot);
  table.setSysctl('nf_conntrack_gre_timeout', 5);
  table.setSysctl('nf_conntrack_gre_timeout_stream', 50);
  const left = (s: number, now: number): number => ((table.i32[ct.chains.entry(s) + E_TIMEOUT]! - now) | 0) / 1000;
  for (let i = 0; i < 20; i++) {
    const v = ct.decide(gre(`10.7.0.${i + 1}`, '10.7.1.1', i), LINKTYPE_RAW, 2000);
    t.is(v.slot, slots[i]);
    t.is(left(v.slot, 2000), 30, 'the unreplied timeout of its creation');
    const w = ct.decide(gre('10.7.1.1', `10.7.0.${i + 1}`, i), LINKTYPE_RAW, 3000);
    t.is(`${w.ctstate}/${w.direction}`, 'established/reply');
    t.is(left(w.slot, 3000), 30, 'the reply itself: SEEN_REPLY is set after the tracker ran');
    ct.decide(gre(`10.7.0.${i + 1}`, '10.7.1.1', i), LINKTYPE_RAW, 4000);
    t.is(left(w.slot, 4000), 180, 'the stream timeout of its creation');
  }
  const inv = checkInvariants(table);
  t.true(inv.ok, formatInvariants(inv));
  ct.close();
});

test('ICMP types that cannot open a connection never do, whatever entries sit next to theirs', (t) => {
  // icmp_new: only echo, timestamp, info and address-mask requests open a connection; an echo
  // reply (type 0) seen first is invalid. Interleaved with new UDP entries so that each refused
  // entry lands on a different slot with different neighbours.
  const table = ConntrackTable.create({ max: 1024 });
  const ct = new Conntrack(table);
  for (let i = 0; i < 100; i++) {
    t.is(ct.decide(udp4({ src: '10.8.0.1', dst: '10.8.0.2', sport: 1000 + i, dport: 53 }), LINKTYPE_RAW, 1000).state, CT_NEW);
    const v = ct.decide(icmp4({ src: '10.8.0.1', dst: '10.8.0.2', type: 0, id: i }), LINKTYPE_RAW, 1000);
    if (v.state !== CT_INVALID || v.reason !== 'ICMP type cannot create a connection') {
      t.fail(`echo reply ${i}: ${v.ctstate} ${v.reason}`);
      break;
    }
  }
  t.is(Atomics.load(table.i32, H_COUNT), 100);
  ct.close();
});

// ---------------------------------------------------------------------------------------------
// nf_conntrack_in's own paths (core.ts): verdict fields, reasons and counters, written out.

test('core: invalid verdicts carry no slot; not-IP is untracked and counted as ignore, a bad IP header as invalid and error', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const before = table.stats().total;
  const arp = new Uint8Array(42);
  arp.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06]);
  let v = ct.decide(arp, LINKTYPE_ETHERNET, 1000);
  t.deepEqual([v.ctstate, v.reason, v.slot], ['untracked', 'not an IP packet', -1]);
  const bad = udp4({ src: '10.0.0.1', dst: '10.0.0.2', badIpChecksum: true });
  v = ct.decide(bad, LINKTYPE_RAW, 1000);
  t.deepEqual([v.ctstate, v.direction, v.slot], ['invalid', null, -1]);
  const after = table.stats().total;
  t.deepEqual(
    ['ignore', 'invalid', 'error', 'packets', 'insert'].map((n) => after[n]! - before[n]!),
    [1, 1, 1, 2, 0],
  );
  ct.close();
});

test('core: counters land in each tracker\'s own row', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const a = new Conntrack(table);
  const b = new Conntrack(table);
  a.decide(udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 1 }), LINKTYPE_RAW, 1000);
  b.decide(udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 2 }), LINKTYPE_RAW, 1000);
  b.decide(udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 3 }), LINKTYPE_RAW, 1000);
  const row = (w: number): number => Atomics.load(table.i32, table.sec.stats + w * STAT_WORDS + ST_PACKETS);
  t.deepEqual([row(a.wid), row(b.wid)], [1, 2]);
  t.is(table.stats().total['packets'], 3);
  a.close();
  b.close();
});

test('core: ICMP errors are RELATED only to a known connection, from its peer\'s side, quoting a whole tuple', (t) => {
  // nf_conntrack_inet_error: the quoted packet's inverse tuple must find a connection, and the
  // error's destination must be that connection's (its source, as the quoted packet travelled).
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const out = udp4({ src: '10.0.0.1', dst: '10.9.0.1', sport: 5000, dport: 53, payload: 'q' });
  const other = udp4({ src: '10.0.0.1', dst: '10.9.0.1', sport: 5001, dport: 53, payload: 'q' });
  t.is(ct.decide(out, LINKTYPE_RAW, 1000).state, CT_NEW);
  const ok = ct.decide(icmpError4(3, 3, out, { src: '10.9.0.1', dst: '10.0.0.1' }), LINKTYPE_RAW, 1001);
  t.deepEqual([ok.ctstate, ok.direction], ['related', 'reply']);
  const v1 = ct.decide(icmpError4(3, 3, other, { src: '10.9.0.1', dst: '10.0.0.1' }), LINKTYPE_RAW, 1001);
  t.deepEqual([v1.ctstate, v1.reason, v1.slot], ['invalid', 'ICMP error for no known connection', -1]);
  const v2 = ct.decide(icmpError4(3, 3, out, { src: '10.9.0.1', dst: '10.0.0.77' }), LINKTYPE_RAW, 1001);
  t.deepEqual([v2.ctstate, v2.reason], ['invalid', 'ICMP error: outer destination is not the connection\'s']);
  const v3 = ct.decide(icmpError4(3, 3, out, { src: '10.9.0.1', dst: '10.0.0.1', quote: 12 }), LINKTYPE_RAW, 1001);
  t.deepEqual([v3.ctstate, v3.reason], ['invalid', 'truncated inner IP header']);
  // A protocol without ports (253): the quoted bytes after its header are not part of the tuple.
  const gen = ipv4(253, Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]), { src: '10.0.0.1', dst: '10.9.0.1' });
  t.is(ct.decide(gen, LINKTYPE_RAW, 1000).state, CT_NEW);
  const g = ct.decide(icmpError4(3, 2, gen, { src: '10.9.0.1', dst: '10.0.0.1' }), LINKTYPE_RAW, 1001);
  t.deepEqual([g.ctstate, g.direction], ['related', 'reply']);
  ct.close();
});

test('core: a first fragment carrying its UDP header is tracked without reassembly (its ports are there), held with it', (t) => {
  const first = udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 7, dport: 9, payload: 'x'.repeat(16), mf: true });
  // nf_conntrack_defrag=0: the core tracks the first fragment by its own headers.
  const table = ConntrackTable.create({ max: 64, sysctls: { nf_conntrack_defrag: 0 } });
  const ct = new Conntrack(table);
  const v = ct.decide(first, LINKTYPE_RAW, 1000);
  t.deepEqual([v.ctstate, v.direction], ['new', 'original']);
  ct.close();
  // With reassembly (the default) it waits for the rest of its datagram, as nf_defrag_ipv4 does.
  const t2 = ConntrackTable.create({ max: 64 });
  const ct2 = new Conntrack(t2);
  t.is(ct2.decide(first, LINKTYPE_RAW, 1000).ctstate, 'held');
  t.is(Atomics.load(t2.i32, H_COUNT), 0);
  ct2.close();
});

test('core: a chain longer than the limit refuses the insert, dropped and counted (chaintoolong)', (t) => {
  // __nf_conntrack_confirm: a chain already longer than nf_conntrack_max_chain refuses the new
  // entry (NF_DROP, chaintoolong). 16 buckets, limit 1, 40 connections (80 links): by pigeonhole
  // some are refused, and every refusal is a drop counted once.
  const table = ConntrackTable.create({ max: 64, buckets: 16, maxChain: 1 });
  const ct = new Conntrack(table);
  let refused = 0;
  for (let i = 0; i < 40; i++) {
    const v = ct.decide(udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 100 + i }), LINKTYPE_RAW, 1000);
    if (v.state === CT_NEW) continue;
    refused++;
    t.deepEqual([v.ctstate, v.reason, v.drop, v.slot], ['invalid', 'hash chain too long', true, -1]);
  }
  t.true(refused > 0);
  const s = table.stats().total;
  t.deepEqual([s['chaintoolong'], s['drop'], s['insert']], [refused, refused, 40 - refused]);
  t.is(Atomics.load(table.i32, H_COUNT), 40 - refused);
  const inv = checkInvariants(table);
  t.true(inv.ok, formatInvariants(inv));
  ct.close();
});

test('core: the verdict reports the TCP state after an accepted segment, none after a refused one', (t) => {
  // The kernel's numbering (enum tcp_conntrack): SYN_SENT 1, SYN_RECV 2, ESTABLISHED 3.
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const c = { src: '10.0.0.1', dst: '10.0.0.2', sport: 4000, dport: 80 };
  const s = { src: '10.0.0.2', dst: '10.0.0.1', sport: 80, dport: 4000 };
  t.is(ct.decide(tcp4({ ...c, flags: 'S', seq: 100, win: 1000 }), LINKTYPE_RAW, 1000).protoState, 1);
  t.is(ct.decide(tcp4({ ...s, flags: 'SA', seq: 500, ack: 101, win: 1000 }), LINKTYPE_RAW, 1000).protoState, 2);
  t.is(ct.decide(tcp4({ ...c, flags: 'A', seq: 101, ack: 501, win: 1000 }), LINKTYPE_RAW, 1000).protoState, 3);
  const bad = ct.decide(tcp4({ ...c, flags: 'A', seq: 900000, ack: 501, win: 1000, payload: 'x' }), LINKTYPE_RAW, 1000);
  t.deepEqual([bad.ctstate, bad.protoState], ['invalid', -1]);
  t.is(ct.decide(udp4({ src: '10.0.0.1', dst: '10.0.0.2' }), LINKTYPE_RAW, 1000).protoState, -1);
  ct.close();
});

test('core: an ICMP type without a reply opens nothing; an error quoting one names it', (t) => {
  // The kernel's ICMP inverse map pairs only echo, timestamp, info and address-mask request and
  // reply: a router advertisement (9) has no inverse tuple.
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const adv = icmp4({ src: '10.0.0.1', dst: '10.9.0.1', type: 9 });
  const v = ct.decide(adv, LINKTYPE_RAW, 1000);
  t.deepEqual([v.ctstate, v.reason], ['invalid', 'tuple has no inverse (ICMP type without a reply)']);
  const e = ct.decide(icmpError4(3, 3, adv, { src: '10.9.0.1', dst: '10.0.0.1' }), LINKTYPE_RAW, 1000);
  t.deepEqual([e.ctstate, e.reason], ['invalid', 'ICMP error quotes a packet without a tuple']);
  ct.close();
});

test('core: events of a tracker outside the pool carry tag -1; DESTROYs parked on a full ring all arrive', (t) => {
  const table = ConntrackTable.create({ max: 256, events: { ring: 64, destroyRing: 4 } });
  const sub = subscribeEvents(table);
  const ct = new Conntrack(table);
  ct.decide(udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 1 }), LINKTYPE_RAW, 1000);
  const first = sub.poll();
  t.deepEqual(first.map((ev) => [ev.typeName, ev.tag]), [['NEW', -1]]);
  for (let i = 0; i < 19; i++) ct.decide(udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 100 + i }), LINKTYPE_RAW, 1000);
  sub.poll();
  // 20 entries flushed: 20 DESTROYs; the DESTROY ring (4 asked, rounded up to 16 records) holds
  // 16, the other 4 are parked until a batch end finds room (after the poll below).
  t.is(ct.flush(), 20);
  t.is(eventStats(table).parked, 4);
  let destroys = 0;
  for (let round = 0; round < 10 && destroys < 20; round++) {
    destroys += sub.poll().filter((ev) => ev.typeName === 'DESTROY').length;
    ct.beginBatch();
    ct.endBatch();
  }
  t.is(destroys, 20);
  t.is(eventStats(table).parked, 0);
  // Again, delivered this time by retryParkedEvents() (returns how many are still parked).
  for (let i = 0; i < 20; i++) ct.decide(udp4({ src: '10.0.0.1', dst: '10.0.0.3', sport: 200 + i }), LINKTYPE_RAW, 1000);
  sub.poll();
  t.is(ct.flush(), 20);
  t.is(sub.poll().filter((ev) => ev.typeName === 'DESTROY').length, 16);
  t.is(eventStats(table).parked, 4);
  t.is(ct.retryParkedEvents(), 0);
  t.is(sub.poll().filter((ev) => ev.typeName === 'DESTROY').length, 4);
  sub.close();
  ct.close();
});

test('core: an ICMP error about a reply packet is RELATED in the original direction', (t) => {
  // The server's answer bounces: the error goes back to the server and quotes the answer, whose
  // inverse is the original tuple.
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const q = udp4({ src: '10.0.0.1', dst: '10.9.0.1', sport: 5000, dport: 53, payload: 'q' });
  const a = udp4({ src: '10.9.0.1', dst: '10.0.0.1', sport: 53, dport: 5000, payload: 'a' });
  const v = ct.decide(q, LINKTYPE_RAW, 1000);
  ct.decide(a, LINKTYPE_RAW, 1001);
  const e = ct.decide(icmpError4(3, 3, a, { src: '10.0.0.1', dst: '10.9.0.1' }), LINKTYPE_RAW, 1002);
  t.deepEqual([e.ctstate, e.direction, e.slot], ['related', 'original', v.slot]);
  ct.close();
});

// ---------------------------------------------------------------------------------------------
// Gaps left by the mutation run over core.ts (docs/mutation.md).

test('core, refcount discipline: between packets a connection holds only the table\'s reference', (t) => {
  // nf_conntrack_in takes a reference for the packet (the skb's) and drops it with the packet:
  // after every kind of packet (new, reply, RELATED, invalid, reopened) each live entry is back
  // at 1, and a reopened connection's old entry is freed, not leaked.
  const table = ConntrackTable.create({ max: 64, discipline: 'refcount' });
  const ct = new Conntrack(table);
  const ref = (slot: number): number => Atomics.load(table.i32, ct.chains.entry(slot) + E_REFCNT);
  const q = udp4({ src: '10.0.0.1', dst: '10.9.0.1', sport: 5000, dport: 53, payload: 'q' });
  const a = udp4({ src: '10.9.0.1', dst: '10.0.0.1', sport: 53, dport: 5000, payload: 'a' });
  const u = ct.decide(q, LINKTYPE_RAW, 1000).slot;
  t.is(ref(u), 1, 'new');
  t.is(ct.decide(a, LINKTYPE_RAW, 1001).ctstate, 'established');
  t.is(ref(u), 1, 'reply');
  t.is(ct.decide(icmpError4(3, 3, q, { src: '10.9.0.1', dst: '10.0.0.1' }), LINKTYPE_RAW, 1002).ctstate, 'related');
  t.is(ref(u), 1, 'related');
  const c = { src: '10.0.0.1', dst: '10.0.0.2', sport: 4000, dport: 80 };
  const s = { src: '10.0.0.2', dst: '10.0.0.1', sport: 80, dport: 4000 };
  const tc = ct.decide(tcp4({ ...c, flags: 'S', seq: 100, win: 1000 }), LINKTYPE_RAW, 1000).slot;
  ct.decide(tcp4({ ...s, flags: 'SA', seq: 500, ack: 101, win: 1000 }), LINKTYPE_RAW, 1000);
  ct.decide(tcp4({ ...c, flags: 'A', seq: 101, ack: 501, win: 1000 }), LINKTYPE_RAW, 1000);
  t.is(ct.decide(tcp4({ ...c, flags: 'A', seq: 900000, ack: 501, win: 1000, payload: 'x' }), LINKTYPE_RAW, 1000).ctstate, 'invalid');
  t.is(ref(tc), 1, 'invalid');
  // FIN, FIN/ACK, ACK: TIME_WAIT; a new SYN reopens (the old entry is killed, a new one made).
  ct.decide(tcp4({ ...c, flags: 'FA', seq: 101, ack: 501, win: 1000 }), LINKTYPE_RAW, 1000);
  ct.decide(tcp4({ ...s, flags: 'FA', seq: 501, ack: 102, win: 1000 }), LINKTYPE_RAW, 1000);
  ct.decide(tcp4({ ...c, flags: 'A', seq: 102, ack: 502, win: 1000 }), LINKTYPE_RAW, 1000);
  const before = Atomics.load(table.i32, H_COUNT);
  const re = ct.decide(tcp4({ ...c, flags: 'S', seq: 90000, win: 1000 }), LINKTYPE_RAW, 2000);
  t.is(re.ctstate, 'new');
  t.is(ref(re.slot), 1, 'reopened');
  t.is(Atomics.load(table.i32, H_COUNT), before, 'the old entry went, the new one came');
  // No reference left anywhere but the table's own, one per live entry: the old entry is freed.
  let held = 0;
  for (let slot = 0; slot < table.capacity; slot++) if (ref(slot) > 0) held++;
  t.is(held, Atomics.load(table.i32, H_COUNT));
  ct.beginBatch();
  ct.endBatch();
  const inv = checkInvariants(table);
  t.true(inv.ok, formatInvariants(inv));
  ct.close();
});

test('core: an ICMP error is RELATED to the connection in slot 0 too (its lookup reference is 0)', (t) => {
  // A lookup result is slot << 1 | direction: slot 0's original direction is 0, still a hit.
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  let q: Uint8Array | null = null;
  for (let i = 0; i < 64 && q === null; i++) {
    const p = udp4({ src: '10.0.0.1', dst: '10.9.0.1', sport: 5000 + i, dport: 53, payload: 'q' });
    if (ct.decide(p, LINKTYPE_RAW, 1000).slot === 0) q = p;
  }
  if (q === null) return t.fail('no connection got slot 0');
  // The server's unreachable quotes the query: its inverse is the reply tuple, direction 1.
  let e = ct.decide(icmpError4(3, 3, q, { src: '10.9.0.1', dst: '10.0.0.1' }), LINKTYPE_RAW, 1001);
  t.deepEqual([e.ctstate, e.direction, e.slot], ['related', 'reply', 0]);
  // An error about the answer travels to the server: its inverse is the original tuple, ref 0.
  const ans = udp4({ src: '10.9.0.1', dst: '10.0.0.1', sport: 53, dport: (q[20]! << 8 | q[21]!), payload: 'a' });
  e = ct.decide(icmpError4(3, 3, ans, { src: '10.0.0.1', dst: '10.9.0.1' }), LINKTYPE_RAW, 1002);
  t.deepEqual([e.ctstate, e.direction, e.slot], ['related', 'original', 0]);
  ct.close();
});

test('core: a tracker bound to namespace 0 ignores the ns it is given', (t) => {
  // A namespace view's tracker is that namespace's (zones.test.ts shows namespace 2); 0 is one too.
  const table = ConntrackTable.create({ max: 64, namespaces: 4 });
  const bound = new Conntrack(table.namespace(0).handle());
  const free = new Conntrack(table);
  const q = udp4({ src: '10.0.0.1', dst: '10.9.0.1', sport: 5000, dport: 53, payload: 'q' });
  const a = udp4({ src: '10.9.0.1', dst: '10.0.0.1', sport: 53, dport: 5000, payload: 'a' });
  t.is(bound.decide(q, { linktype: LINKTYPE_RAW, now: 1000, ns: 3 }).ctstate, 'new');
  t.is(table.namespaceCount(0), 1);
  t.is(table.namespaceCount(3), 0);
  t.is(free.decide(a, { linktype: LINKTYPE_RAW, now: 1001, ns: 0 }).ctstate, 'established');
  bound.close();
  free.close();
});

test('core: an out-of-window FIN answered by an out-of-window FIN shortens the timeout to unacknowledged', (t) => {
  // nf_tcp_handle_invalid (6.x): on an ASSURED connection, an invalid FIN/RST in one direction
  // after one in the other lowers a timeout of 120 s or more to timeouts[UNACK] (300 s), though
  // the packet itself is invalid; ESTABLISHED's is 5 days.
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const c = { src: '10.0.0.1', dst: '10.0.0.2', sport: 4000, dport: 80 };
  const s = { src: '10.0.0.2', dst: '10.0.0.1', sport: 80, dport: 4000 };
  const slot = ct.decide(tcp4({ ...c, flags: 'S', seq: 100, win: 1000 }), LINKTYPE_RAW, 1000).slot;
  ct.decide(tcp4({ ...s, flags: 'SA', seq: 500, ack: 101, win: 1000 }), LINKTYPE_RAW, 1000);
  ct.decide(tcp4({ ...c, flags: 'A', seq: 101, ack: 501, win: 1000 }), LINKTYPE_RAW, 1000);
  ct.decide(tcp4({ ...s, flags: 'A', seq: 501, ack: 101, win: 1000 }), LINKTYPE_RAW, 1000);
  const left = (now: number): number => ((table.i32[ct.chains.entry(slot) + E_TIMEOUT]! - now) | 0) / 1000;
  t.is(left(1000), 432000);
  t.is(ct.decide(tcp4({ ...c, flags: 'FA', seq: 900000, ack: 501, win: 1000 }), LINKTYPE_RAW, 2000).ctstate, 'invalid');
  t.is(left(2000), 431999, 'the first one changes nothing');
  t.is(ct.decide(tcp4({ ...s, flags: 'FA', seq: 900000, ack: 101, win: 1000 }), LINKTYPE_RAW, 3000).ctstate, 'invalid');
  t.is(left(3000), 300);
  ct.close();
});

test('core: a zone\'s timeout policy applies per TCP state', (t) => {
  // nf_ct_timeout_lookup: a policy's timeout for the state the connection is in, the default
  // (sysctl) for states it leaves unset: SYN_SENT 11 s, SYN_RECV unset (60 s), ESTABLISHED 77 s.
  const table = ConntrackTable.create({ max: 64 });
  defineTimeoutPolicy(table, 'first', { udp: 9 });
  defineTimeoutPolicy(table, 'tcp-short', { tcp: { SYN_SENT: 11, ESTABLISHED: 77 } });
  attachTimeoutPolicyToZone(table, 5, 'tcp-short');
  const ct = new Conntrack(table);
  const c = { src: '10.0.0.1', dst: '10.0.0.2', sport: 4000, dport: 80 };
  const s = { src: '10.0.0.2', dst: '10.0.0.1', sport: 80, dport: 4000 };
  const o = { linktype: LINKTYPE_RAW, now: 1000, zone: 5 };
  const slot = ct.decide(tcp4({ ...c, flags: 'S', seq: 100, win: 1000 }), o).slot;
  const left = (): number => ((table.i32[ct.chains.entry(slot) + E_TIMEOUT]! - 1000) | 0) / 1000;
  t.is(left(), 11);
  ct.decide(tcp4({ ...s, flags: 'SA', seq: 500, ack: 101, win: 1000 }), o);
  t.is(left(), 60);
  ct.decide(tcp4({ ...c, flags: 'A', seq: 101, ack: 501, win: 1000 }), o);
  t.is(left(), 77);
  // Zone 6 has no policy: the sysctl defaults.
  const s6 = ct.decide(tcp4({ ...c, flags: 'S', seq: 100, win: 1000 }), { ...o, zone: 6 }).slot;
  t.is(((table.i32[ct.chains.entry(s6) + E_TIMEOUT]! - 1000) | 0) / 1000, 120);
  t.is(extStats(table).inUse, 1, 'only the zone-5 connection carries a policy block');
  ct.close();
});

test('core: close() waits out its grace periods and hands every slot back; a second close() does nothing', (t) => {
  // A worker leaving (close) frees what it retired once no other worker can still read it, and
  // returns its cached slots: with the table empty and every tracker closed, all slots are on
  // the shared free list again (conntrack -F leaves room for nf_conntrack_max connections).
  const table = ConntrackTable.create({ max: 64 });
  const a = new Conntrack(table);
  const b = new Conntrack(table);
  for (let i = 0; i < 20; i++) a.decide(udp4({ src: '10.0.0.1', dst: '10.9.0.1', sport: 5000 + i, payload: 'q' }), LINKTYPE_RAW, 1000);
  b.beginBatch(); // b reads under the old epoch: a's flushed slots wait for b's grace period
  t.is(a.flush(), 20);
  t.is(Atomics.load(table.i32, H_COUNT), 0);
  t.true(a.chains.qsbr.pending > 0, 'a still holds retired slots');
  b.endBatch();
  a.close();
  t.is(a.chains.qsbr.pending, 0);
  // The record a gave back is taken by the next tracker; closing a again must not free it.
  const c = new Conntrack(table);
  t.is(c.wid, a.wid);
  a.close();
  const d = new Conntrack(table);
  t.not(d.wid, c.wid, 'a second close() released a record it no longer owns');
  for (const x of [b, c, d]) x.close();
  t.is(Atomics.load(table.i32, H_FREE_COUNT), table.capacity);
});

test('core: close() inside a batch leaves it; close() waits (bounded) for another thread\'s batch to end', async (t) => {
  // A leaving worker must not hold grace periods up (it is offline once closed), and what it
  // retired is freed once the last reader that could see it has moved on: close() sleeps in
  // 1 ms steps (at most 1000) for that instead of giving up at once.
  const table = ConntrackTable.create({ max: 64 });
  const a = new Conntrack(table);
  const b = new Conntrack(table);
  a.beginBatch();
  a.close(); // inside a batch
  for (let i = 0; i < 5; i++) b.decide(udp4({ src: '10.0.0.1', dst: '10.9.0.1', sport: 5000 + i, payload: 'q' }), LINKTYPE_RAW, 1000);
  t.is(b.flush(), 5);
  t.is(b.chains.qsbr.pending, 0, 'the closed tracker holds no grace period');
  // Another thread stays 200 ms inside a batch while b's retired slots wait for it.
  for (let i = 0; i < 5; i++) b.decide(udp4({ src: '10.0.0.1', dst: '10.9.0.1', sport: 6000 + i, payload: 'q' }), LINKTYPE_RAW, 1000);
  const flags = new Int32Array(new SharedArrayBuffer(4));
  const w = new Worker(new URL('./helpers/timed-batch-worker.js', import.meta.url), {
    workerData: { handle: table.handle(), flags: flags.buffer, ms: 200 },
  });
  const exited = new Promise<void>((ok, fail) => { w.once('error', fail); w.once('exit', () => ok()); });
  for (let k = 0; k < 500 && Atomics.load(flags, 0) === 0; k++) await new Promise((ok) => setTimeout(ok, 10));
  t.is(Atomics.load(flags, 0), 1, 'the worker is inside its batch');
  t.is(b.flush(), 5);
  t.true(b.chains.qsbr.pending > 0);
  b.close(); // blocks until the worker's batch ends (about 200 ms)
  t.is(b.chains.qsbr.pending, 0, 'close() waited for the grace period');
  await exited;
  t.is(Atomics.load(table.i32, H_FREE_COUNT), table.capacity);
});

test('core: an ICMPv6 error is RELATED when its outer destination is the connection\'s source (all four address words)', (t) => {
  // nf_conntrack_inet_error: the error must go to the address the quoted packet came from.
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const q = udp6({ src: 'fd00::1', dst: 'fd00:9::1', sport: 5000, dport: 53, payload: 'q' });
  const v = ct.decide(q, LINKTYPE_RAW, 1000);
  const e = ct.decide(icmpError6(1, 4, q, { src: 'fd00:9::1', dst: 'fd00::1' }), LINKTYPE_RAW, 1001);
  t.deepEqual([e.ctstate, e.direction, e.slot], ['related', 'reply', v.slot]);
  const w = ct.decide(icmpError6(1, 4, q, { src: 'fd00:9::1', dst: 'fd00::2' }), LINKTYPE_RAW, 1001);
  t.deepEqual([w.ctstate, w.reason], ['invalid', 'ICMP error: outer destination is not the connection\'s']);
  ct.close();
});

test('core: a full table drops the new connection; a TCP first packet tcp_new refuses creates nothing', (t) => {
  // early_drop finds nothing to evict among ASSURED entries: the packet is dropped (NF_DROP).
  const table = ConntrackTable.create({ max: 16 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  for (let i = 0; i < table.capacity; i++) tcpEstablished(ct, i, 1000);
  ct.endBatch();
  const v = ct.decide(udp4({ src: '10.0.0.1', dst: '10.9.0.1', sport: 5000, payload: 'q' }), LINKTYPE_RAW, 1000);
  t.deepEqual([v.ctstate, v.reason, v.drop], ['invalid', 'table full', true]);
  ct.close();
  // tcp_new: a FIN is no first packet; with nf_conntrack_tcp_loose 0 only a SYN is.
  const t2 = ConntrackTable.create({ max: 64, sysctls: { nf_conntrack_tcp_loose: 0 } });
  const c2 = new Conntrack(t2);
  const c = { src: '10.0.0.1', dst: '10.0.0.2', sport: 4000, dport: 80 };
  let r = c2.decide(tcp4({ ...c, flags: 'FA', seq: 100, ack: 1, win: 1000 }), LINKTYPE_RAW, 1000);
  t.deepEqual([r.ctstate, r.reason], ['invalid', R_INVALID_NEW]);
  r = c2.decide(tcp4({ ...c, flags: 'A', seq: 100, ack: 1, win: 1000 }), LINKTYPE_RAW, 1000);
  t.deepEqual([r.ctstate, r.reason], ['invalid', R_NO_PICKUP]);
  t.is(Atomics.load(t2.i32, H_COUNT), 0);
  c2.close();
});
