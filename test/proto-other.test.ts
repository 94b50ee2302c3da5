/**
 * Trackers besides TCP/UDP/ICMP, with hand-built packets: SCTP (state machine, verification
 * tags, CRC32c), GRE, UDP-Lite (coverage and checksum rules), DCCP (generic in 6.x kernels), and
 * ICMP errors quoting only the bytes the kernel needs.
 */
import test from 'ava';

import { Conntrack } from '../src/track/core.js';
import { formatEntry } from '../src/ops/format.js';
import { E_STATUS, E_TIMEOUT, IPS_ASSURED } from '../src/table/layout.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { crc32c } from '../src/input/packet/checksum.js';
import * as parse from '../src/input/packet/parse.js';
import * as sctp from '../src/track/proto/sctp.js';
import * as udp from '../src/track/proto/udp.js';
import { REASON_OTHER, reasonCode } from '../src/track/reasons.js';
import { ConntrackTable } from '../src/table/table.js';
import type { Verdict } from '../src/track/verdict.js';
import { icmpError4, inetChecksum, ip4, ip6Bytes, ipv4, ipv6, tcp4 } from './helpers/frames.js';

const A = '10.0.0.1';
const B = '10.0.0.2';
const T0 = 1_000_000;

interface Run {
  ct: Conntrack;
  /** Decide a raw IP frame at time `now` (ms); returns a snapshot of the verdict. */
  send(frame: Uint8Array, now?: number): { state: string; dir: string | null; reason: string | null; slot: number };
  /** Seconds left on the entry of `slot` at time `now`. */
  left(slot: number, now?: number): number;
  assured(slot: number): boolean;
  line(slot: number, now?: number): string;
}

function run(sysctls: Record<string, number> = {}): Run {
  const table = ConntrackTable.create({ sysctls });
  const ct = new Conntrack(table);
  const snap = (v: Verdict) => ({ state: v.ctstate, dir: v.direction, reason: v.reason, slot: v.slot });
  return {
    ct,
    send(frame, now = T0) {
      ct.beginBatch();
      try {
        return snap(ct.frame(LINKTYPE_RAW, frame, 0, frame.length, now));
      } finally {
        ct.endBatch();
      }
    },
    left(slot, now = T0) {
      return ((table.i32[ct.chains.entry(slot) + E_TIMEOUT]! - now) | 0) / 1000;
    },
    assured(slot) {
      return (Atomics.load(table.i32, ct.chains.entry(slot) + E_STATUS) & IPS_ASSURED) !== 0;
    },
    line(slot, now = T0) {
      return formatEntry({ i32: table.i32, u32: table.u32, sys: table.sec.sysctl }, ct.chains.entry(slot), now);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// SCTP packets

/** Bitwise CRC32c, independent of the table-driven one under test. */
function crc32cSlow(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const x of b) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

interface Chunk { type: number; flags?: number; body?: Uint8Array }

const INIT = 1;
const INIT_ACK = 2;
const DATA = 0;
const SACK = 3;
const HEARTBEAT = 4;
const HEARTBEAT_ACK = 5;
const ABORT = 6;
const SHUTDOWN = 7;
const SHUTDOWN_ACK = 8;
const COOKIE_ECHO = 10;
const COOKIE_ACK = 11;
const SHUTDOWN_COMPLETE = 14;

function initBody(tag: number): Uint8Array {
  const b = new Uint8Array(16);
  new DataView(b.buffer).setUint32(0, tag);
  new DataView(b.buffer).setUint32(4, 65536);
  new DataView(b.buffer).setUint16(8, 1);
  new DataView(b.buffer).setUint16(10, 1);
  new DataView(b.buffer).setUint32(12, 1);
  return b;
}

function sctpPayload(sport: number, dport: number, vtag: number, chunks: Chunk[], badCrc = false, zeroLen = false): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const c of chunks) {
    const body = c.body ?? new Uint8Array(0);
    const len = 4 + body.length;
    const padded = new Uint8Array((len + 3) & ~3);
    padded[0] = c.type;
    padded[1] = c.flags ?? 0;
    new DataView(padded.buffer).setUint16(2, zeroLen ? 0 : len);
    padded.set(body, 4);
    parts.push(padded);
  }
  const n = 12 + parts.reduce((s, p) => s + p.length, 0);
  const b = new Uint8Array(n);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, sport);
  dv.setUint16(2, dport);
  dv.setUint32(4, vtag >>> 0);
  let o = 12;
  for (const p of parts) { b.set(p, o); o += p.length; }
  dv.setUint32(8, (crc32cSlow(b) ^ (badCrc ? 1 : 0)) >>> 0, true); // least significant byte first
  return b;
}

const TAG_A = 0x11111111; // A's initiate tag: what B puts in its packets
const TAG_B = 0x22222222; // B's initiate tag: what A puts in its packets

function a2b(vtag: number, chunks: Chunk[], sport = 40000, opts: { badCrc?: boolean; zeroLen?: boolean } = {}): Uint8Array {
  return ipv4(sctp.IPPROTO_SCTP, sctpPayload(sport, 5000, vtag, chunks, opts.badCrc, opts.zeroLen), { src: A, dst: B });
}
function b2a(vtag: number, chunks: Chunk[], dport = 40000): Uint8Array {
  return ipv4(sctp.IPPROTO_SCTP, sctpPayload(5000, dport, vtag, chunks), { src: B, dst: A });
}

/** INIT, INIT ACK, COOKIE ECHO, COOKIE ACK; returns the connection's slot. */
function associate(r: Run, t: { is: (a: unknown, b: unknown, m?: string) => void }, sport = 40000): number {
  const v = r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }], sport));
  t.is(v.state, 'new');
  t.is(r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(TAG_B) }], sport)).state, 'established');
  t.is(r.send(a2b(TAG_B, [{ type: COOKIE_ECHO, body: new Uint8Array(8) }], sport)).dir, 'original');
  t.is(r.send(b2a(TAG_A, [{ type: COOKIE_ACK }], sport)).dir, 'reply');
  return v.slot;
}

test('crc32c matches the RFC 3720 check value and a bitwise CRC', (t) => {
  const s = new TextEncoder().encode('123456789');
  t.is(crc32c(s, 0, s.length, -4), 0xe3069283);
  const b = new Uint8Array(1000).map((_, i) => (i * 7 + 3) & 0xff);
  const z = b.slice();
  z.fill(0, 100, 104);
  t.is(crc32c(b, 0, b.length, 100), crc32cSlow(z));
});

test('SCTP: open, ASSURED at ESTABLISHED, DATA both ways, close; per-state timeouts', (t) => {
  const r = run();
  const v = r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }]));
  t.is(v.state, 'new');
  t.is(v.dir, 'original');
  t.is(r.left(v.slot), 10); // CLOSED
  t.regex(r.line(v.slot), /^sctp +132 10 CLOSED src=10\.0\.0\.1 dst=10\.0\.0\.2 sport=40000 dport=5000 \[UNREPLIED\]/);
  let w = r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(TAG_B) }]));
  t.deepEqual([w.state, w.dir, w.slot], ['established', 'reply', v.slot]);
  t.is(r.left(v.slot), 3); // COOKIE_WAIT
  r.send(a2b(TAG_B, [{ type: COOKIE_ECHO, body: new Uint8Array(8) }]));
  t.true(r.line(v.slot).includes(' COOKIE_ECHOED '));
  t.false(r.assured(v.slot));
  r.send(b2a(TAG_A, [{ type: COOKIE_ACK }]));
  t.true(r.assured(v.slot));
  t.is(r.left(v.slot), 210);
  t.regex(r.line(v.slot), / ESTABLISHED .*\[ASSURED\]/);
  w = r.send(a2b(TAG_B, [{ type: DATA, body: new Uint8Array(16) }]));
  t.deepEqual([w.state, w.dir], ['established', 'original']);
  w = r.send(b2a(TAG_A, [{ type: SACK, body: new Uint8Array(12) }, { type: DATA, body: new Uint8Array(4) }]));
  t.deepEqual([w.state, w.dir], ['established', 'reply']);
  // Heartbeats keep ESTABLISHED.
  t.is(r.send(a2b(TAG_B, [{ type: HEARTBEAT, body: new Uint8Array(8) }])).state, 'established');
  t.is(r.send(b2a(TAG_A, [{ type: HEARTBEAT_ACK, body: new Uint8Array(8) }])).state, 'established');
  t.true(r.line(v.slot).includes(' ESTABLISHED '));
  r.send(a2b(TAG_B, [{ type: SHUTDOWN, body: new Uint8Array(4) }]));
  t.true(r.line(v.slot).includes(' SHUTDOWN_SENT '));
  t.is(r.left(v.slot), 3);
  r.send(b2a(TAG_A, [{ type: SHUTDOWN_ACK }]));
  t.true(r.line(v.slot).includes(' SHUTDOWN_ACK_SENT '));
  w = r.send(a2b(TAG_B, [{ type: SHUTDOWN_COMPLETE }]));
  t.is(w.state, 'established');
  t.true(r.line(v.slot).includes(' CLOSED '));
  t.is(r.left(v.slot), 10);
  // A retransmitted INIT on the closed association passes but does not refresh the timeout.
  t.is(r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }]), T0 + 4000).state, 'established');
  t.is(r.left(v.slot, T0 + 4000), 6);
});

test('SCTP: ports are part of the tuple; sysctl timeouts apply', (t) => {
  const r = run({ nf_conntrack_sctp_timeout_established: 77 });
  const s1 = associate(r, t, 40001);
  const s2 = associate(r, t, 40002);
  t.not(s1, s2);
  t.is(r.left(s1), 77);
  t.regex(r.line(s2), /sport=40002 dport=5000 src=10\.0\.0\.2 dst=10\.0\.0\.1 sport=5000 dport=40002/);
});

test('SCTP: invalid packets (sctp_error, chunk checks, verification tags, OOTB)', (t) => {
  const r = run();
  associate(r, t);
  // DATA with the wrong tag on a live association.
  let v = r.send(a2b(TAG_B + 1, [{ type: DATA, body: new Uint8Array(8) }]));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_VTAG]);
  // DATA without an association cannot open one.
  v = r.send(a2b(TAG_B, [{ type: DATA, body: new Uint8Array(8) }], 41000));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_NEW]);
  // INIT must carry tag 0.
  v = r.send(a2b(0x1234, [{ type: INIT, body: initBody(1) }], 41001));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_INIT_VTAG]);
  // Bad CRC32c, unless checksums are off.
  v = r.send(a2b(0, [{ type: INIT, body: initBody(5) }], 41002, { badCrc: true }));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_CRC]);
  const off = run({ nf_conntrack_checksum: 0 });
  t.is(off.send(a2b(0, [{ type: INIT, body: initBody(5) }], 41002, { badCrc: true })).state, 'new');
  // INIT bundled with another chunk, COOKIE ECHO not first, a zero-length chunk.
  v = r.send(a2b(0, [{ type: INIT, body: initBody(6) }, { type: DATA, body: new Uint8Array(4) }], 41003));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_CHUNKS]);
  v = r.send(a2b(TAG_B, [{ type: DATA, body: new Uint8Array(4) }, { type: COOKIE_ECHO, body: new Uint8Array(4) }]));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_CHUNKS]);
  v = r.send(a2b(TAG_B, [{ type: DATA, body: new Uint8Array(4) }], 40000, { zeroLen: true }));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_CHUNKS]);
  // No chunk at all.
  v = r.send(a2b(TAG_B, []));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_CHUNKS]);
  // ABORT / SHUTDOWN COMPLETE / COOKIE ACK out of the blue.
  for (const type of [ABORT, SHUTDOWN_COMPLETE, COOKIE_ACK]) {
    v = r.send(a2b(0, [{ type }], 41004));
    t.deepEqual([v.state, v.reason], ['invalid', sctp.R_OOTB]);
  }
  // Short headers: fewer than 4 bytes give no tuple, fewer than 12 no SCTP header.
  v = r.send(ipv4(sctp.IPPROTO_SCTP, new Uint8Array([0x9c, 0x40, 0x13]), { src: A, dst: B }));
  t.deepEqual([v.state, v.reason], ['invalid', parse.R_TRUNC_PORTS]);
  v = r.send(ipv4(sctp.IPPROTO_SCTP, new Uint8Array(11), { src: A, dst: B }));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_SHORT]);
  // ABORT with the right tag closes; with the T flag it must carry the peer's tag.
  v = r.send(b2a(TAG_B, [{ type: ABORT, flags: 1 }]));
  t.deepEqual([v.state, v.dir], ['established', 'reply']);
  t.true(r.line(v.slot).includes(' CLOSED '));
});

test('SCTP: a HEARTBEAT opens HEARTBEAT_SENT; its ACK establishes', (t) => {
  const r = run();
  const v = r.send(a2b(0x5555, [{ type: HEARTBEAT, body: new Uint8Array(8) }], 42000));
  t.is(v.state, 'new');
  t.true(r.line(v.slot).includes(' HEARTBEAT_SENT '));
  t.is(r.left(v.slot), 30);
  const w = r.send(b2a(0x6666, [{ type: HEARTBEAT_ACK, body: new Uint8Array(8) }], 42000));
  t.deepEqual([w.state, w.dir], ['established', 'reply']);
  t.true(r.line(v.slot).includes(' ESTABLISHED '));
  t.true(r.assured(v.slot));
});

// ---------------------------------------------------------------------------------------------
// GRE

function gre0(): Uint8Array {
  return new Uint8Array([0, 0, 0x08, 0x00, 0x45, 0, 0, 20]);
}
function pptp(callId: number, proto = 0x880b): Uint8Array {
  return new Uint8Array([0x20, 0x01, proto >> 8, proto & 0xff, 0, 4, callId >> 8, callId & 0xff, 1, 2, 3, 4]);
}

test('GRE version 0 both ways: 30 s unreplied, 180 s and ASSURED after a reply', (t) => {
  const r = run();
  const v = r.send(ipv4(47, gre0(), { src: A, dst: B }));
  t.deepEqual([v.state, v.dir], ['new', 'original']);
  t.is(r.left(v.slot), 30);
  t.regex(r.line(v.slot), /^gre +47 30 src=10\.0\.0\.1 dst=10\.0\.0\.2 srckey=0x0 dstkey=0x0 \[UNREPLIED\] src=10\.0\.0\.2 dst=10\.0\.0\.1 srckey=0x0 dstkey=0x0/);
  let w = r.send(ipv4(47, gre0(), { src: B, dst: A }));
  t.deepEqual([w.state, w.dir, w.slot], ['established', 'reply', v.slot]);
  t.is(r.left(v.slot), 30); // the reply itself still sees no SEEN_REPLY
  t.false(r.assured(v.slot));
  w = r.send(ipv4(47, gre0(), { src: A, dst: B }));
  t.deepEqual([w.state, w.dir], ['established', 'original']);
  t.is(r.left(v.slot), 180);
  t.true(r.assured(v.slot));
  // GRE over IPv6 goes through the same tracker.
  const x = r.send(ipv6(47, gre0(), { src: 'fd00::1', dst: 'fd00::2' }));
  t.is(x.state, 'new');
  t.is(r.left(x.slot), 30);
  // The timeouts come from the sysctls at creation.
  const r2 = run({ nf_conntrack_gre_timeout: 5, nf_conntrack_gre_timeout_stream: 50 });
  const y = r2.send(ipv4(47, gre0(), { src: A, dst: B }));
  t.is(r2.left(y.slot), 5);
  r2.send(ipv4(47, gre0(), { src: B, dst: A }));
  r2.send(ipv4(47, gre0(), { src: A, dst: B }));
  t.is(r2.left(y.slot), 50);
});

test('GRE version 1 (PPTP): keyed by the call id; not PPP is invalid', (t) => {
  const r = run();
  const v = r.send(ipv4(47, pptp(0x1234), { src: A, dst: B }));
  t.is(v.state, 'new');
  t.true(r.line(v.slot).includes('srckey=0x0 dstkey=0x1234 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 srckey=0x1234 dstkey=0x0'));
  // Another call id is another connection.
  t.not(r.send(ipv4(47, pptp(0x4321), { src: A, dst: B })).slot, v.slot);
  const w = r.send(ipv4(47, pptp(0x1234, 0x0800), { src: A, dst: B }));
  t.deepEqual([w.state, w.reason], ['invalid', parse.R_GRE_NOT_PPP]);
});

// ---------------------------------------------------------------------------------------------
// UDP-Lite

/** UDP-Lite datagram; `sumProto` is the pseudo-header protocol its checksum is computed with. */
function udplite(src: string, dst: string, sport: number, dport: number, payload: Uint8Array,
  o: { cscov?: number; sumProto?: number; check?: number; sumLen?: number } = {}): Uint8Array {
  const n = 8 + payload.length;
  const b = new Uint8Array(n);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, sport);
  dv.setUint16(2, dport);
  dv.setUint16(4, o.cscov ?? 0);
  b.set(payload, 8);
  const cover = o.sumLen ?? (o.cscov ? o.cscov : n);
  const v6 = src.includes(':');
  const ph = new Uint8Array(v6 ? 40 : 12);
  const pv = new DataView(ph.buffer);
  if (v6) {
    ph.set(ip6Bytes(src), 0);
    ph.set(ip6Bytes(dst), 16);
    pv.setUint32(32, n);
    ph[39] = o.sumProto ?? 17;
  } else {
    pv.setUint32(0, ip4(src));
    pv.setUint32(4, ip4(dst));
    ph[9] = o.sumProto ?? 17;
    pv.setUint16(10, n);
  }
  let c = o.check ?? inetChecksum(ph, b.subarray(0, cover));
  if (o.check === undefined && c === 0) c = 0xffff;
  dv.setUint16(6, c);
  return v6 ? ipv6(udp.IPPROTO_UDPLITE, b, { src, dst }) : ipv4(udp.IPPROTO_UDPLITE, b, { src, dst });
}

const Q = new TextEncoder().encode('query!');

test('UDP-Lite: request/response, ASSURED and the stream timeout after a reply', (t) => {
  const r = run();
  const v = r.send(udplite(A, B, 3000, 53, Q));
  t.deepEqual([v.state, v.dir], ['new', 'original']);
  t.is(r.left(v.slot), 30);
  t.regex(r.line(v.slot), /^udplite +136 30 src=10\.0\.0\.1 dst=10\.0\.0\.2 sport=3000 dport=53 \[UNREPLIED\]/);
  const w = r.send(udplite(B, A, 53, 3000, Q));
  t.deepEqual([w.state, w.dir, w.slot], ['established', 'reply', v.slot]);
  t.is(r.left(v.slot), 30);
  t.is(r.send(udplite(A, B, 3000, 53, Q)).state, 'established');
  t.is(r.left(v.slot), 120);
  t.true(r.assured(v.slot));
  // Other ports: another connection. IPv6 works the same.
  t.not(r.send(udplite(A, B, 3001, 53, Q)).slot, v.slot);
  t.is(r.send(udplite('fd00::1', 'fd00::2', 3000, 53, Q)).state, 'new');
});

test('UDP-Lite: coverage and checksum rules (udplite_error)', (t) => {
  const r = run();
  // Partial coverage: bytes past it are not summed.
  const part = udplite(A, B, 4000, 53, Q, { cscov: 8 });
  part[part.length - 1]! ^= 0xff;
  t.is(r.send(part).state, 'new');
  // Coverage below the header or beyond the datagram.
  let v = r.send(udplite(A, B, 4001, 53, Q, { cscov: 7, sumLen: 8 }));
  t.deepEqual([v.state, v.reason], ['invalid', udp.R_UDPLITE_COVERAGE]);
  v = r.send(udplite(A, B, 4002, 53, Q, { cscov: 8 + Q.length + 1, sumLen: 8 }));
  t.deepEqual([v.state, v.reason], ['invalid', udp.R_UDPLITE_COVERAGE]);
  // The checksum is mandatory, even with checksum verification off.
  v = r.send(udplite(A, B, 4003, 53, Q, { check: 0 }));
  t.deepEqual([v.state, v.reason], ['invalid', udp.R_UDPLITE_NO_CHECKSUM]);
  const off = run({ nf_conntrack_checksum: 0 });
  t.is(off.send(udplite(A, B, 4003, 53, Q, { check: 0 })).reason, udp.R_UDPLITE_NO_CHECKSUM);
  // A covered byte changed: bad checksum.
  const bad = udplite(A, B, 4004, 53, Q);
  bad[bad.length - 1]! ^= 0xff;
  v = r.send(bad);
  t.deepEqual([v.state, v.reason], ['invalid', udp.R_UDPLITE_CHECKSUM]);
  // The kernel sums with IPPROTO_UDP in the pseudo-header: an RFC 3828 checksum (136) fails,
  // as in the generic_proto kernel capture; it passes when verification is off.
  v = r.send(udplite(A, B, 4005, 53, Q, { sumProto: 136 }));
  t.deepEqual([v.state, v.reason], ['invalid', udp.R_UDPLITE_CHECKSUM]);
  t.is(off.send(udplite(A, B, 4005, 53, Q, { sumProto: 136 })).state, 'new');
  v = r.send(udplite('fd00::1', 'fd00::2', 4005, 53, Q, { sumProto: 136 }));
  t.deepEqual([v.state, v.reason], ['invalid', udp.R_UDPLITE_CHECKSUM]);
  // Shorter than a header.
  v = r.send(ipv4(udp.IPPROTO_UDPLITE, new Uint8Array(6), { src: A, dst: B }));
  t.deepEqual([v.state, v.reason], ['invalid', udp.R_UDPLITE_SHORT]);
});

test('DCCP is tracked by the generic tracker: no ports in the tuple', (t) => {
  const r = run();
  const dccp = (sport: number) => ipv4(33, new Uint8Array([sport >> 8, sport & 0xff, 0x13, 0x88, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), { src: A, dst: B });
  const v = r.send(dccp(1000));
  t.is(v.state, 'new');
  t.is(r.send(dccp(2000)).slot, v.slot);
  t.is(r.left(v.slot), 600);
});

// ---------------------------------------------------------------------------------------------
// ICMP errors quoting a short layer-4 header

test('ICMP error quoting only 4 bytes of the layer-4 header is RELATED; 3 bytes is invalid', (t) => {
  const r = run();
  const syn = tcp4({ src: A, dst: B, sport: 33000, dport: 80, flags: 'S', seq: 1 });
  t.is(r.send(syn).state, 'new');
  let v = r.send(icmpError4(3, 1, syn, { src: '192.0.2.9', dst: A, quote: 24 }));
  t.deepEqual([v.state, v.dir], ['related', 'reply']);
  v = r.send(icmpError4(3, 1, syn, { src: '192.0.2.9', dst: A, quote: 23 }));
  t.deepEqual([v.state, v.reason], ['invalid', parse.RI_TRUNC_L4]);
  // Same for an SCTP association.
  const init = a2b(0, [{ type: INIT, body: initBody(TAG_A) }], 43000);
  t.is(r.send(init).state, 'new');
  v = r.send(icmpError4(3, 3, init, { src: B, dst: A, quote: 24 }));
  t.deepEqual([v.state, v.dir], ['related', 'reply']);
  // GRE (no ports): the IP header alone is enough.
  const g = ipv4(47, gre0(), { src: A, dst: B });
  r.send(g);
  v = r.send(icmpError4(3, 3, g, { src: B, dst: A, quote: 20 }));
  t.deepEqual([v.state, v.dir], ['related', 'reply']);
});

test('every new reason string is registered', (t) => {
  const all = [sctp, udp, parse].flatMap((m) =>
    Object.entries(m).filter(([k, s]) => /^RI?_/.test(k) && typeof s === 'string').map(([, s]) => s as string));
  for (const s of all) t.not(reasonCode(s), REASON_OTHER, s);
});

test('SCTP reason texts name their check, each one distinct', (t) => {
  // The checks of nf_conntrack_proto_sctp.c: sctp_error (short header, CRC32c),
  // do_basic_checks (chunk layout), the out-of-the-blue rule, sctp_new, the verification tag
  // rules of RFC 4960 8.5.1, and the state table's invalid transitions.
  const texts: [string, RegExp][] = [
    [sctp.R_SHORT, /short SCTP packet/],
    [sctp.R_CRC, /CRC32c/],
    [sctp.R_CHUNKS, /chunk/],
    [sctp.R_OOTB, /ABORT, SHUTDOWN COMPLETE or COOKIE ACK without a connection/],
    [sctp.R_NEW, /cannot start a connection/],
    [sctp.R_INIT_VTAG, /INIT with a non-zero verification tag/],
    [sctp.R_INIT_SHORT, /truncated SCTP INIT/],
    [sctp.R_VTAG, /verification tag mismatch/],
    [sctp.R_STATE, /invalid in this state/],
  ];
  for (const [s, re] of texts) t.regex(s, re);
  t.is(new Set(texts.map(([s]) => s)).size, texts.length);
});

// ---------------------------------------------------------------------------------------------
// SCTP verification-tag rules, each from nf_conntrack_sctp_packet (6.x) and RFC 4960 8.5.1.

const ERROR_CHUNK = 9;
/** The SCTP state `conntrack -L` shows for the entry in `slot`. */
function sctpState(r: Run, slot: number, now = T0): string {
  return r.line(slot, now).split(/ +/)[3]!;
}

test('SCTP ABORT: without the T flag it carries the sender\'s own expected tag, with T the peer\'s', (t) => {
  // (B): vtag == vtag[dir] when T is clear, vtag[!dir] when T is set. A's packets carry TAG_B.
  let r = run();
  let s = associate(r, t);
  t.deepEqual([r.send(a2b(TAG_A, [{ type: ABORT }])).reason], [sctp.R_VTAG]); // A using its own tag, T clear
  t.is(sctpState(r, s), 'ESTABLISHED');
  t.deepEqual([r.send(a2b(TAG_B, [{ type: ABORT, flags: 1 }])).reason], [sctp.R_VTAG]); // T set: must be TAG_A
  t.is(sctpState(r, s), 'ESTABLISHED');
  t.is(r.send(a2b(TAG_B, [{ type: ABORT }])).state, 'established');
  t.is(sctpState(r, s), 'CLOSED');
  r = run();
  s = associate(r, t);
  t.is(r.send(a2b(TAG_A, [{ type: ABORT, flags: 1 }])).state, 'established');
  t.is(sctpState(r, s), 'CLOSED');
  t.is(r.left(s), 10);
});

test('SCTP SHUTDOWN COMPLETE follows the ABORT tag rule; COOKIE ECHO must carry the INIT ACK\'s tag', (t) => {
  // (C) as (B); (D): COOKIE ECHO's vtag is vtag[dir] (the tag the peer's INIT ACK gave).
  const r = run();
  const v = r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }]));
  r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(TAG_B) }]));
  t.deepEqual([r.send(a2b(TAG_B + 1, [{ type: COOKIE_ECHO, body: new Uint8Array(8) }])).reason], [sctp.R_VTAG]);
  t.is(sctpState(r, v.slot), 'COOKIE_WAIT');
  r.send(a2b(TAG_B, [{ type: COOKIE_ECHO, body: new Uint8Array(8) }]));
  r.send(b2a(TAG_A, [{ type: COOKIE_ACK }]));
  r.send(a2b(TAG_B, [{ type: SHUTDOWN, body: new Uint8Array(4) }]));
  r.send(b2a(TAG_A, [{ type: SHUTDOWN_ACK }]));
  t.is(sctpState(r, v.slot), 'SHUTDOWN_ACK_SENT');
  t.deepEqual([r.send(a2b(TAG_A, [{ type: SHUTDOWN_COMPLETE }])).reason], [sctp.R_VTAG]);
  t.deepEqual([r.send(a2b(TAG_B, [{ type: SHUTDOWN_COMPLETE, flags: 1 }])).reason], [sctp.R_VTAG]);
  t.is(sctpState(r, v.slot), 'SHUTDOWN_ACK_SENT');
  t.is(r.send(a2b(TAG_A, [{ type: SHUTDOWN_COMPLETE, flags: 1 }])).state, 'established');
  t.is(sctpState(r, v.slot), 'CLOSED');
});

test('SCTP: an out-of-the-blue SHUTDOWN ACK expects SHUTDOWN COMPLETE back with its tag', (t) => {
  // sctp_new: for a SHUTDOWN ACK, vtag[REPLY] = the packet's vtag; state NONE -> SHUTDOWN_ACK_SENT.
  const r = run();
  const v = r.send(a2b(0x7777, [{ type: SHUTDOWN_ACK }], 43000));
  t.is(v.state, 'new');
  t.is(sctpState(r, v.slot), 'SHUTDOWN_ACK_SENT');
  t.deepEqual([r.send(b2a(0x7778, [{ type: SHUTDOWN_COMPLETE }], 43000)).reason], [sctp.R_VTAG]);
  t.is(r.send(b2a(0x7777, [{ type: SHUTDOWN_COMPLETE }], 43000)).state, 'established');
  t.is(sctpState(r, v.slot), 'CLOSED');
});

test('SCTP: an out-of-the-blue HEARTBEAT ACK sets the reply tag to its own (sctp_new\'s last branch)', (t) => {
  // sctp_new: not INIT (initiate tag) nor HEARTBEAT (original tag), so vtag[REPLY] = the
  // packet's vtag. Of the openers that pass the tag check with a non-zero tag, only SHUTDOWN ACK
  // and HEARTBEAT ACK reach that branch. HEARTBEAT ACK: NONE -> CLOSED, and its own rule then
  // sets vtag[ORIGINAL] (it was 0). A reply DATA chunk (no special tag rule) must carry the tag.
  const r = run();
  const v = r.send(a2b(0x5555, [{ type: HEARTBEAT_ACK, body: new Uint8Array(8) }], 43100));
  t.is(v.state, 'new');
  t.is(sctpState(r, v.slot), 'CLOSED');
  t.deepEqual([r.send(b2a(0x5556, [{ type: DATA, body: new Uint8Array(4) }], 43100)).reason], [sctp.R_VTAG]);
  t.is(r.send(b2a(0x5555, [{ type: DATA, body: new Uint8Array(4) }], 43100)).state, 'established');
  t.is(r.send(a2b(0x5555, [{ type: DATA, body: new Uint8Array(4) }], 43100)).state, 'established');
  t.deepEqual([r.send(a2b(0x5556, [{ type: DATA, body: new Uint8Array(4) }], 43100)).reason], [sctp.R_VTAG]);
});

test('SCTP HEARTBEAT with an unexpected tag passes unrefreshed; the peer\'s ACK with a new tag adopts it', (t) => {
  // A HEARTBEAT whose vtag differs from vtag[dir]: HEARTBEAT_VTAG_FAILED, last_dir = dir, accepted
  // without a timeout refresh. A HEARTBEAT ACK from the other side with a new tag then becomes
  // vtag[that dir], and vtag[this dir] is forgotten (0: the next HEARTBEAT from here sets it).
  const r = run();
  const s = associate(r, t);
  t.is(r.left(s), 210);
  const later = T0 + 5000;
  t.is(r.send(a2b(0x9999, [{ type: HEARTBEAT, body: new Uint8Array(8) }]), later).state, 'established');
  t.is(r.left(s, later), 205, 'not refreshed');
  // DATA with the old tag still passes (tags unchanged so far).
  t.is(r.send(b2a(TAG_A, [{ type: DATA, body: new Uint8Array(4) }]), later).state, 'established');
  t.is(r.left(s, later), 210);
  // The same HEARTBEAT bundled with DATA is invalid.
  t.deepEqual([r.send(a2b(0x9999, [{ type: HEARTBEAT, body: new Uint8Array(8) }, { type: DATA, body: new Uint8Array(4) }]), later).reason], [sctp.R_VTAG]);
  // The answer: B acknowledges with a new tag 0xaaaa; it is adopted for B's direction.
  t.is(r.send(b2a(0xaaaa, [{ type: HEARTBEAT_ACK, body: new Uint8Array(8) }]), later).state, 'established');
  t.is(r.send(b2a(0xaaaa, [{ type: DATA, body: new Uint8Array(4) }]), later).state, 'established');
  t.deepEqual([r.send(b2a(TAG_A, [{ type: DATA, body: new Uint8Array(4) }]), later).reason], [sctp.R_VTAG]);
  // A's expected tag was reset to 0: A's next HEARTBEAT sets it, then A's DATA must carry it.
  t.is(r.send(a2b(0xbbbb, [{ type: HEARTBEAT, body: new Uint8Array(8) }]), later).state, 'established');
  t.is(r.send(a2b(0xbbbb, [{ type: DATA, body: new Uint8Array(4) }]), later).state, 'established');
  t.deepEqual([r.send(a2b(TAG_B, [{ type: DATA, body: new Uint8Array(4) }]), later).reason], [sctp.R_VTAG]);
  t.is(sctpState(r, s, later), 'ESTABLISHED');
  // An INIT from the reply side of an entry a HEARTBEAT opened is invalid in the state table.
  const hb = r.send(a2b(0x4444, [{ type: HEARTBEAT, body: new Uint8Array(8) }], 47000));
  t.is(hb.state, 'new');
  t.deepEqual([r.send(b2a(0, [{ type: INIT, body: initBody(TAG_B) }], 47000)).reason], [sctp.R_STATE]);
  t.is(sctpState(r, hb.slot), 'HEARTBEAT_SENT');
});

test('SCTP HEARTBEAT ACK with an unexpected tag is invalid unless it answers a failed HEARTBEAT from the peer', (t) => {
  const r = run();
  const s = associate(r, t);
  // No failed HEARTBEAT before: invalid.
  t.deepEqual([r.send(b2a(0xaaaa, [{ type: HEARTBEAT_ACK, body: new Uint8Array(8) }])).reason], [sctp.R_VTAG]);
  // A failed HEARTBEAT from B itself does not let B's own odd ACK through (last_dir == dir).
  r.send(b2a(0x9999, [{ type: HEARTBEAT, body: new Uint8Array(8) }]));
  t.deepEqual([r.send(b2a(0xaaaa, [{ type: HEARTBEAT_ACK, body: new Uint8Array(8) }])).reason], [sctp.R_VTAG]);
  // A HEARTBEAT with the right tag clears the failure: A's odd ACK is invalid again.
  t.is(r.send(b2a(TAG_A, [{ type: HEARTBEAT, body: new Uint8Array(8) }])).state, 'established');
  t.deepEqual([r.send(a2b(0xcccc, [{ type: HEARTBEAT_ACK, body: new Uint8Array(8) }])).reason], [sctp.R_VTAG]);
  t.is(sctpState(r, s), 'ESTABLISHED');
});

test('SCTP INIT ACK must carry the tag already known for its sender, except after an INIT from that side', (t) => {
  // !init[!dir] && vtag[!dir] && vtag[!dir] != init_tag: invalid. An entry opened by A's
  // HEARTBEAT (tag 0x5555) and B's HEARTBEAT ACK (0x6666) is ESTABLISHED without any INIT; an
  // INIT ACK from B must then name A's known tag.
  let r = run();
  const v = r.send(a2b(0x5555, [{ type: HEARTBEAT, body: new Uint8Array(8) }], 44000));
  t.is(v.state, 'new');
  r.send(b2a(0x6666, [{ type: HEARTBEAT_ACK, body: new Uint8Array(8) }], 44000));
  t.is(sctpState(r, v.slot), 'ESTABLISHED');
  t.deepEqual([r.send(b2a(0x6666, [{ type: INIT_ACK, body: initBody(0x1234) }], 44000)).reason], [sctp.R_VTAG]);
  t.is(r.send(b2a(0x6666, [{ type: INIT_ACK, body: initBody(0x5555) }], 44000)).state, 'established');
  // Collision: both sides sent INIT; an INIT ACK whose tag differs from the one recorded is refused.
  r = run();
  const w = r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }], 44001));
  t.is(r.send(b2a(0, [{ type: INIT, body: initBody(TAG_B) }], 44001)).state, 'established');
  t.deepEqual([r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(TAG_B + 1) }], 44001)).reason], [sctp.R_VTAG]);
  t.is(r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(TAG_B) }], 44001)).state, 'established');
  t.is(sctpState(r, w.slot), 'COOKIE_WAIT');
});

test('SCTP: chunks after the first that change no state keep it; an ERROR in COOKIE_ECHOED from the reply side closes', (t) => {
  const r = run();
  const v = r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }]));
  r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(TAG_B) }]));
  r.send(a2b(TAG_B, [{ type: COOKIE_ECHO, body: new Uint8Array(8) }, { type: DATA, body: new Uint8Array(4) }]));
  t.is(sctpState(r, v.slot), 'COOKIE_ECHOED');
  t.is(r.left(v.slot), 3);
  // The state table: reply ERROR in COOKIE_ECHOED -> CLOSED (a stale cookie).
  t.is(r.send(b2a(TAG_A, [{ type: ERROR_CHUNK, body: new Uint8Array(4) }])).state, 'established');
  t.is(sctpState(r, v.slot), 'CLOSED');
  t.is(r.left(v.slot), 10);
});

test('SCTP state names are the kernel\'s (sctp_conntrack_names)', (t) => {
  t.deepEqual(sctp.SCTP_STATE_NAMES, [
    'NONE', 'CLOSED', 'COOKIE_WAIT', 'COOKIE_ECHOED', 'ESTABLISHED', 'SHUTDOWN_SENT',
    'SHUTDOWN_RECD', 'SHUTDOWN_ACK_SENT', 'HEARTBEAT_SENT',
  ]);
});

test('SCTP: a truncated INIT or INIT ACK chunk is invalid; an INIT on a live association must carry tag 0', (t) => {
  // sctp_new / nf_conntrack_sctp_packet: skb_header_pointer for the 16-byte init header fails on
  // a shorter chunk: invalid. 8.5.1 (A) holds for every INIT, not only the first.
  const r = run();
  let v = r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A).subarray(0, 12) }], 45000));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_INIT_SHORT]);
  const s = associate(r, t);
  v = r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(TAG_B).subarray(0, 12) }]));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_INIT_SHORT]);
  v = r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A).subarray(0, 12) }]));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_INIT_SHORT]);
  v = r.send(a2b(TAG_B, [{ type: INIT, body: initBody(TAG_A) }]));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_INIT_VTAG]);
  t.is(sctpState(r, s), 'ESTABLISHED');
  // A full INIT with tag 0 on the live association passes (state kept: ESTABLISHED row INIT).
  t.is(r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }])).state, 'established');
  t.is(sctpState(r, s), 'ESTABLISHED');
});

test('SCTP: bytes after the last chunk too few for a chunk header are not a chunk', (t) => {
  // for_each_sctp_chunk stops when skb_header_pointer cannot read a 4-byte chunk header.
  const r = run();
  const s = associate(r, t);
  const ok = sctpPayload(40000, 5000, TAG_B, [{ type: DATA, body: new Uint8Array(4) }]);
  const p = new Uint8Array(ok.length + 2);
  p.set(ok);
  new DataView(p.buffer).setUint32(8, 0);
  new DataView(p.buffer).setUint32(8, crc32cSlow(p), true);
  const v = r.send(ipv4(sctp.IPPROTO_SCTP, p, { src: A, dst: B }));
  t.deepEqual([v.state, v.reason, v.slot], ['established', null, s]);
  // The same after an INIT that opens a connection (sctp_new walks the chunks too).
  const init = sctpPayload(46000, 5000, 0, [{ type: INIT, body: initBody(TAG_A) }]);
  const q = new Uint8Array(init.length + 2);
  q.set(init);
  new DataView(q.buffer).setUint32(8, 0);
  new DataView(q.buffer).setUint32(8, crc32cSlow(q), true);
  t.is(r.send(ipv4(sctp.IPPROTO_SCTP, q, { src: A, dst: B })).state, 'new');
});

test('SCTP do_basic_checks: INIT ACK and SHUTDOWN COMPLETE must be alone, COOKIE ACK first; an odd HEARTBEAT ACK with DATA is invalid', (t) => {
  const r = run();
  associate(r, t);
  const bad = (v: { state: string; reason: string | null }) => t.deepEqual([v.state, v.reason], ['invalid', sctp.R_CHUNKS]);
  bad(r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(TAG_B) }, { type: DATA, body: new Uint8Array(4) }])));
  bad(r.send(b2a(TAG_A, [{ type: SHUTDOWN_COMPLETE }, { type: DATA, body: new Uint8Array(4) }])));
  bad(r.send(b2a(TAG_A, [{ type: DATA, body: new Uint8Array(4) }, { type: COOKIE_ACK }])));
  // A HEARTBEAT ACK answering a failed HEARTBEAT is let through alone, never bundled with DATA.
  r.send(a2b(0x9999, [{ type: HEARTBEAT, body: new Uint8Array(8) }]));
  const v = r.send(b2a(0xaaaa, [{ type: HEARTBEAT_ACK, body: new Uint8Array(8) }, { type: DATA, body: new Uint8Array(4) }]));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_VTAG]);
});

// ---------------------------------------------------------------------------------------------
// Mutation gaps of sctp.ts (docs/mutation/mutcore.md), each from nf_conntrack_proto_sctp.c (6.x):
// do_basic_checks' chunk map (a 256-bit map: set_bit(type)), the per-chunk loops, init[dir],
// the retransmitted-INIT rule and the HEARTBEAT ACK flag.

test('SCTP chunk types 32 and above are their own bits in the chunk map (no alias of ABORT or DATA)', (t) => {
  const r = run();
  const s = associate(r, t);
  // Type 38 is not ABORT (6): the plain verification-tag check applies, a wrong tag is invalid.
  t.deepEqual([r.send(a2b(0x9999, [{ type: 38, body: new Uint8Array(4) }])).reason], [sctp.R_VTAG]);
  t.is(r.send(a2b(TAG_B, [{ type: 38, body: new Uint8Array(4) }])).state, 'established');
  // Type 32 is not DATA (0): a HEARTBEAT with an unexpected tag beside it is a possible restart
  // (passed, ignored), not refused as a HEARTBEAT bundled with DATA.
  const v = r.send(a2b(0x9999, [{ type: HEARTBEAT, body: new Uint8Array(8) }, { type: 32, body: new Uint8Array(4) }]));
  t.deepEqual([v.state, v.reason], ['established', null]);
  t.is(sctpState(r, s), 'ESTABLISHED');
});

test('SCTP: every chunk of a packet is walked by its own length, on the first packet and after', (t) => {
  // sctp_new: every chunk must be able to open: a HEARTBEAT followed by an unknown type is refused.
  const r = run();
  let v = r.send(a2b(0x5555, [{ type: HEARTBEAT, body: new Uint8Array(8) }, { type: 64, body: new Uint8Array(4) }], 46000));
  t.deepEqual([v.state, v.reason], ['invalid', sctp.R_NEW]);
  v = r.send(a2b(0x5555, [{ type: HEARTBEAT, body: new Uint8Array(8) }, { type: HEARTBEAT, body: new Uint8Array(12) }], 46001));
  t.is(v.state, 'new');
  t.is(sctpState(r, v.slot), 'HEARTBEAT_SENT');
  // A DATA chunk and then a SHUTDOWN: the second chunk moves ESTABLISHED to SHUTDOWN_SENT.
  const s = associate(r, t);
  t.is(r.send(a2b(TAG_B, [{ type: DATA, body: new Uint8Array(12) }, { type: SHUTDOWN, body: new Uint8Array(4) }])).state, 'established');
  t.is(sctpState(r, s), 'SHUTDOWN_SENT');
});

test('SCTP init[dir]: an INIT ACK after the peer\'s INIT may name a new tag; collisions and repeated INITs', (t) => {
  // A's HEARTBEAT sets vtag[ORIGINAL] = 0x5555; A's INIT then sets init[ORIGINAL]; B's INIT ACK
  // with another tag passes (init[!dir] set) and is adopted.
  let r = run();
  const v = r.send(a2b(0x5555, [{ type: HEARTBEAT, body: new Uint8Array(8) }], 47000));
  t.is(r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }], 47000)).state, 'new');
  t.deepEqual([r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(TAG_B) }], 47000)).reason], [null]);
  t.is(r.send(a2b(TAG_B, [{ type: COOKIE_ECHO, body: new Uint8Array(8) }], 47000)).reason, null);
  t.deepEqual([r.send(a2b(0x5555, [{ type: DATA, body: new Uint8Array(4) }], 47000)).reason], [sctp.R_VTAG]);
  t.is(sctpState(r, v.slot), 'COOKIE_ECHOED');
  // Both sent INIT: an INIT ACK from A must carry the tag B's INIT gave (collision rule).
  r = run();
  const w = r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }], 47001));
  r.send(b2a(0, [{ type: INIT, body: initBody(TAG_B) }], 47001));
  t.deepEqual([r.send(a2b(TAG_B, [{ type: INIT_ACK, body: initBody(TAG_A + 1) }], 47001)).reason], [sctp.R_VTAG]);
  t.is(r.send(a2b(TAG_B, [{ type: INIT_ACK, body: initBody(TAG_A) }], 47001)).reason, null);
  t.is(sctpState(r, w.slot), 'CLOSED'); // an original INIT ACK from CLOSED stays CLOSED (sctp_conntracks)
  // Both sent INIT, then A's INIT again: init[REPLY] is cleared (init[dir] && init[!dir]), so
  // B's INIT ACK may then carry a new tag.
  r = run();
  r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }], 47002));
  r.send(b2a(0, [{ type: INIT, body: initBody(TAG_B) }], 47002));
  r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }], 47002));
  t.deepEqual([r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(0x3333) }], 47002)).reason], [null]);
  // COOKIE ACK clears both flags: after a full association B's INIT ACK must name A's tag again.
  r = run();
  associate(r, t, 47003);
  t.deepEqual([r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(0x4444) }], 47003)).reason], [sctp.R_VTAG]);
  t.is(r.send(b2a(TAG_A, [{ type: INIT_ACK, body: initBody(TAG_B) }], 47003)).reason, null);
});

test('SCTP: an INIT does not refresh a closed association, but one that closes it does', (t) => {
  // Closed by ABORT at T0 (10 s); an INIT 5 s later: CLOSED -> CLOSED on a confirmed entry is
  // ignored, so 5 s are left, not 10.
  let r = run();
  let s = associate(r, t, 48000);
  r.send(a2b(TAG_B, [{ type: ABORT }], 48000));
  t.is(sctpState(r, s), 'CLOSED');
  t.is(r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }], 48000), T0 + 5000).state, 'established');
  t.is(r.left(s, T0 + 5000), 5);
  // SHUTDOWN_SENT (3 s) -> CLOSED by an INIT 1 s later: a state change, refreshed to 10 s.
  r = run();
  s = associate(r, t, 48001);
  r.send(a2b(TAG_B, [{ type: SHUTDOWN, body: new Uint8Array(4) }], 48001));
  t.is(sctpState(r, s), 'SHUTDOWN_SENT');
  r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }], 48001), T0 + 1000);
  t.is(sctpState(r, s), 'CLOSED');
  t.is(r.left(s, T0 + 1000), 10);
  // ESTABLISHED -> ESTABLISHED by an INIT: refreshed to 210 s.
  r = run();
  s = associate(r, t, 48002);
  r.send(a2b(0, [{ type: INIT, body: initBody(TAG_A) }], 48002), T0 + 1000);
  t.is(sctpState(r, s), 'ESTABLISHED');
  t.is(r.left(s, T0 + 1000), 210);
});

test('SCTP HEARTBEAT ACK with the expected tag clears a failed HEARTBEAT: a later odd ACK is invalid', (t) => {
  const r = run();
  const s = associate(r, t);
  // A's HEARTBEAT with an odd tag: HEARTBEAT_VTAG_FAILED, last_dir ORIGINAL.
  t.is(r.send(a2b(0x9999, [{ type: HEARTBEAT, body: new Uint8Array(8) }])).reason, null);
  // B's HEARTBEAT ACK with its expected tag clears the flag ...
  t.is(r.send(b2a(TAG_A, [{ type: HEARTBEAT_ACK, body: new Uint8Array(8) }])).reason, null);
  // ... so B's odd HEARTBEAT ACK is no longer the answer to that HEARTBEAT.
  t.deepEqual([r.send(b2a(0xaaaa, [{ type: HEARTBEAT_ACK, body: new Uint8Array(8) }])).reason], [sctp.R_VTAG]);
  t.is(sctpState(r, s), 'ESTABLISHED');
});

test('SCTP: an out-of-the-blue INIT ACK with common tag 0 opens (vtag[!dir] 0 is no constraint)', (t) => {
  // sctp_new sets vtag[REPLY] = the packet's vtag; the INIT ACK rule refuses only when
  // !init[!dir] && vtag[!dir] != 0 && vtag[!dir] != init_tag. From NONE an INIT ACK goes to CLOSED.
  const r = run();
  const v = r.send(a2b(0, [{ type: INIT_ACK, body: initBody(0x1234) }], 49000));
  t.deepEqual([v.state, v.reason], ['new', null]);
  t.is(sctpState(r, v.slot), 'CLOSED');
  const w = r.send(a2b(0x7777, [{ type: INIT_ACK, body: initBody(0x1234) }], 49001));
  t.deepEqual([w.state, w.reason], ['invalid', sctp.R_VTAG]); // vtag[ORIGINAL] is 0: the plain tag check
});
