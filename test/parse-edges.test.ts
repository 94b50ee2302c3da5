// Edges of the frame parser that the mutation run (docs/mutation.md) found untested: every
// bad-input reason by its exact text (what a verdict and the CLI show), link-header lengths at
// the boundary, frames that do not start at offset 0 of their buffer, and the loopback, VLAN
// and NFLOG header variants. Frames are written out byte by byte; expectations are worked out by
// hand from the header formats (pcap LINKTYPE_* definitions, RFC 791/8200/768/793, the
// kernel's nfnetlink_log TLVs), not taken from the parser.
import test from 'ava';
import { parseFrame, nflogPrefix, nflogTimestampMs, LINKTYPE_NULL, LINKTYPE_LOOP } from '../src/input/packet/parse.js';
import {
  LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_NFLOG, LINKTYPE_RAW,
  NFPROTO_IPV4, NFPROTO_IPV6, Packet,
} from '../src/input/packet/packet.js';
import { concat, fixIpv4Checksum, hex, nflog } from './helpers/frames.js';

const pkt = new Packet();

/** Parse `frame` placed at offset `at` of a buffer with 0xee garbage before and after it. */
function parseAt(linktype: number, frame: Uint8Array, at: number, len = frame.length): Packet {
  const buf = new Uint8Array(at + frame.length + 7).fill(0xee);
  buf.set(frame, at);
  parseFrame(linktype, buf, at, len, pkt);
  return pkt;
}

/** Both at offset 0 and inside a bigger buffer: the results must be the same. */
function reasonOf(t: { is: (a: unknown, b: unknown, m?: string) => void }, linktype: number, frame: Uint8Array, want: string | null, what: string): void {
  for (const at of [0, 6]) t.is(parseAt(linktype, frame, at).reason, want, `${what} (at offset ${at})`);
}

// 10.0.0.1:5000 -> 10.0.0.2:53 UDP, 4 bytes of data (IPv4 checksum filled in by fixIpv4Checksum).
const UDP4 = fixIpv4Checksum(hex('45000020 00000000 40110000 0a000001 0a000002 13880035 000c0000 61626364'));
// fd00::1 -> fd00::2 UDP 5000 -> 53, 4 bytes of data.
const UDP6 = hex('60000000 000c1140 fd000000000000000000000000000001 fd000000000000000000000000000002 13880035 000c0000 61626364');
const withIp4 = (hdr: string, l4: string): Uint8Array => fixIpv4Checksum(concat(hex(hdr), hex(l4)));

test('every bad-input reason has its text, also for a frame inside a larger buffer', (t) => {
  const cases: [string, number, Uint8Array, string][] = [
    ['unknown link type', 9999, UDP4, 'unsupported link type'],
    ['Ethernet of 13 bytes', LINKTYPE_ETHERNET, hex('02000000000202000000000108'), 'truncated Ethernet header'],
    ['ARP over Ethernet', LINKTYPE_ETHERNET, concat(hex('020000000002020000000001 0806'), new Uint8Array(28)), 'not an IP packet'],
    ['802.1Q tag cut after 3 bytes', LINKTYPE_ETHERNET, hex('020000000002020000000001 8100 000a08'), 'truncated VLAN tag'],
    ['SLL of 15 bytes', LINKTYPE_LINUX_SLL, hex('000000010006020000000001000008'), 'truncated Linux cooked (SLL) header'],
    ['SLL2 of 19 bytes', LINKTYPE_LINUX_SLL2, hex('08000000000000020001000602000000000100'), 'truncated Linux cooked (SLL2) header'],
    ['loopback of 3 bytes', LINKTYPE_NULL, hex('020000'), 'truncated loopback header'],
    ['loopback family 7', LINKTYPE_NULL, concat(hex('07000000'), UDP4), 'not an IP packet'],
    ['NFLOG of 3 bytes', LINKTYPE_NFLOG, hex('020000'), 'truncated NFLOG header'],
    ['NFLOG TLV of length 2', LINKTYPE_NFLOG, hex('02000001 0200 0100'), 'bad NFLOG TLV length'],
    ['NFLOG without payload TLV', LINKTYPE_NFLOG, hex('02000001 0800 0100 08000100'), 'NFLOG record without payload'],
    ['raw, empty', LINKTYPE_RAW, new Uint8Array(0), 'truncated IP header'],
    ['raw, version 5', LINKTYPE_RAW, hex('55000020000000004011'), 'bad IP version'],
    ['raw IPv4 of 19 bytes', LINKTYPE_RAW, UDP4.subarray(0, 19), 'truncated IPv4 header'],
    ['IHL 4', LINKTYPE_RAW, withIp4('44000020 00000000 40110000 0a000001 0a000002', '13880035 000c0000 61626364'), 'bad IPv4 header length'],
    ['IHL 6 in a 20-byte frame', LINKTYPE_RAW, withIp4('46000018 00000000 40110000 0a000001 0a000002', ''), 'truncated IPv4 header'],
    ['total length 19', LINKTYPE_RAW, withIp4('45000013 00000000 40110000 0a000001 0a000002', '13880035 000c0000 61626364'), 'bad IPv4 total length'],
    ['bad header checksum', LINKTYPE_RAW, hex('45000020 00000000 40110000 0a000001 0a000002 13880035 000c0000 61626364'), 'bad IPv4 header checksum'],
    ['non-first fragment', LINKTYPE_RAW, withIp4('45000020 00000001 40110000 0a000001 0a000002', '13880035 000c0000 61626364'), 'fragment'],
    ['IPv6 of 39 bytes', LINKTYPE_RAW, UDP6.subarray(0, 39), 'truncated IPv6 header'],
    ['IPv6 next header 59', LINKTYPE_RAW, hex('60000000 00003b40 fd000000000000000000000000000001 fd000000000000000000000000000002'), 'IPv6 no next header'],
    ['IPv6 hop-by-hop cut after 1 byte', LINKTYPE_RAW, hex('60000000 00010040 fd000000000000000000000000000001 fd000000000000000000000000000002 11'), 'truncated IPv6 extension header'],
    ['TCP of 19 bytes', LINKTYPE_RAW, withIp4('45000027 00000000 40060000 0a000001 0a000002', '13880050 00000001 00000000 5002ffff 000000'), 'truncated TCP header'],
    ['TCP data offset 4', LINKTYPE_RAW, withIp4('45000028 00000000 40060000 0a000001 0a000002', '13880050 00000001 00000000 4002ffff 00000000'), 'bad TCP data offset'],
    ['UDP of 7 bytes', LINKTYPE_RAW, withIp4('4500001b 00000000 40110000 0a000001 0a000002', '13880035 000700'), 'truncated UDP header'],
    ['UDP length 7', LINKTYPE_RAW, withIp4('45000020 00000000 40110000 0a000001 0a000002', '13880035 00070000 61626364'), 'bad UDP length'],
    ['ICMP of 7 bytes', LINKTYPE_RAW, withIp4('4500001b 00000000 40010000 0a000001 0a000002', '08000000 000100'), 'truncated ICMP header'],
    ['SCTP of 3 bytes', LINKTYPE_RAW, withIp4('45000017 00000000 40840000 0a000001 0a000002', '138800'), 'layer-4 header too short for the ports'],
    ['PPTP GRE carrying IPv4', LINKTYPE_RAW, withIp4('4500001c 00000000 402f0000 0a000001 0a000002', '20010800 00000007'), 'GRE version 1 (PPTP) packet not carrying PPP'],
  ];
  for (const [what, lt, frame, want] of cases) reasonOf(t, lt, frame, want, what);
  // Offsets and lengths outside the buffer.
  for (const [off, len] of [[-1, 4], [0, -1], [UDP4.length + 1, 0], [Number.NaN, 4], [0, Number.NaN]]) {
    parseFrame(LINKTYPE_RAW, UDP4, off!, len!, pkt);
    t.is(pkt.reason, 'frame offset/length out of range', `off ${off} len ${len}`);
  }
});

test('ICMP error reasons about the quoted packet have their text', (t) => {
  // ICMPv4 port unreachable (3/3) quoting ... ; the outer checksum is not looked at by the parser.
  const icmp4 = (quoted: string): Uint8Array => {
    const q = hex(quoted);
    const total = 20 + 8 + q.length;
    return withIp4(`4500${total.toString(16).padStart(4, '0')} 00000000 40010000 0a000002 0a000001`, `03030000 00000000 ${quoted}`);
  };
  const icmp6 = (quoted: string): Uint8Array => {
    const q = hex(quoted);
    return concat(hex(`60000000 ${(8 + q.length).toString(16).padStart(4, '0')}3a40 fd000000000000000000000000000002 fd000000000000000000000000000001 01040000 00000000`), q);
  };
  const inner4 = (proto: string, frag: string, l4: string): string => `45000030 0000${frag} 40${proto}0000 0a000001 0a000002 ${l4}`;
  const cases: [string, Uint8Array, string | null][] = [
    ['19 bytes of the inner header', icmp4('45000030 00000000 40110000 0a000001 0a0000'), 'truncated inner IP header'],
    ['inner non-first fragment', icmp4(inner4('11', '0001', '13880035')), 'inner packet is a non-first fragment'],
    ['inner UDP of 3 bytes', icmp4(inner4('11', '0000', '138800')), 'truncated inner layer-4 header'],
    ['inner UDP ports', icmp4(inner4('11', '0000', '13880035')), null],
    ['inner PPTP GRE carrying IPv4', icmp4(inner4('2f', '0000', '20010800 00000007')), 'inner GRE version 1 (PPTP) packet not carrying PPP'],
    ['inner IPv6 of 39 bytes', icmp6('60000000 00081140 fd000000000000000000000000000001 fd0000000000000000000000000000'), 'truncated inner IP header'],
    ['inner IPv6 next header 59', icmp6('60000000 00003b40 fd000000000000000000000000000001 fd000000000000000000000000000002'), 'inner IPv6 no next header'],
    ['inner IPv6 hop-by-hop cut', icmp6('60000000 00080040 fd000000000000000000000000000001 fd000000000000000000000000000002 11'), 'truncated inner IPv6 extension header'],
  ];
  for (const [what, frame, want] of cases) {
    for (const at of [0, 6]) {
      const p = parseAt(LINKTYPE_RAW, frame, at);
      t.is(p.reason, null, `${what}: the error itself is well formed`);
      t.true(p.icmpError, what);
      t.is(p.innerReason, want, `${what} (at offset ${at})`);
    }
  }
});

test('link headers exactly as long as the minimum hand the rest to the IP parser', (t) => {
  // Header only: the IP parser then finds 0 bytes, so the reason is about IP, not the link.
  reasonOf(t, LINKTYPE_LINUX_SLL, hex('00000001000602000000000100000800'), 'truncated IPv4 header', 'SLL of 16 bytes');
  reasonOf(t, LINKTYPE_LINUX_SLL2, hex('0800000000000002000100060200000000010000'), 'truncated IPv4 header', 'SLL2 of 20 bytes');
  reasonOf(t, LINKTYPE_NULL, hex('02000000'), 'truncated IPv4 header', 'loopback of 4 bytes');
  reasonOf(t, LINKTYPE_RAW, hex('45'), 'truncated IPv4 header', 'raw, 1 byte of IPv4');
  reasonOf(t, LINKTYPE_RAW, hex('60'), 'truncated IPv6 header', 'raw, 1 byte of IPv6');
  // A bad version is no family at all, whatever follows.
  parseAt(LINKTYPE_RAW, hex('55000020000000004011'), 6);
  t.is(pkt.family, 0);
});

test('loopback headers: the address family in either byte order, every BSD value of AF_INET6', (t) => {
  // LINKTYPE_NULL: host byte order (little-endian here); LINKTYPE_LOOP: big-endian.
  // AF_INET6 is 10 (Linux), 24 (NetBSD, OpenBSD), 28 (FreeBSD), 30 (macOS).
  for (const at of [0, 1, 2, 6]) {
    for (const [lt, order] of [[LINKTYPE_NULL, 'le'], [LINKTYPE_LOOP, 'be'], [LINKTYPE_NULL, 'be']] as const) {
      const fam = (v: number): Uint8Array => (order === 'le' ? Uint8Array.of(v, 0, 0, 0) : Uint8Array.of(0, 0, 0, v));
      let p = parseAt(lt, concat(fam(2), UDP4), at);
      t.is(p.reason, null);
      t.is(p.family, NFPROTO_IPV4);
      t.is(p.dport, 53, `IPv4 over ${order} loopback at ${at}`);
      for (const af6 of [10, 24, 28, 30]) {
        p = parseAt(lt, concat(fam(af6), UDP6), at);
        t.is(p.family, NFPROTO_IPV6, `AF_INET6 ${af6} ${order} at ${at}`);
        t.is(p.reason, null);
        t.is(p.dport, 53);
      }
      p = parseAt(lt, concat(fam(17), UDP4), at);
      t.true(p.notIp);
    }
  }
});

test('every VLAN ethertype is skipped, 0x9200 included', (t) => {
  for (const tpid of ['8100', '88a8', '9100', '9200']) {
    const f = concat(hex(`020000000002020000000001 ${tpid} 0005 0800`), UDP4);
    const p = parseAt(LINKTYPE_ETHERNET, f, 3);
    t.is(p.reason, null, tpid);
    t.is(p.l3off, 3 + 18, tpid);
    t.is(p.dport, 53, tpid);
  }
});

test('a length past the end of the buffer is cut to the buffer', (t) => {
  // IPv4 total length 100, but only the 32 bytes of UDP4 exist: a snaplen-cut capture.
  const cut = fixIpv4Checksum(concat(hex('45000064'), UDP4.subarray(4)));
  parseFrame(LINKTYPE_RAW, cut, 0, 1000, pkt);
  t.is(pkt.reason, null);
  t.is(pkt.ipLen, 100);
  t.false(pkt.complete);
  t.is(pkt.l4len, 12);
});

test('NFLOG: a big-endian record of log group 300, and a flag bit on the first TLV type', (t) => {
  // Group 300 is 0x012c in the header's resource id (always big-endian).
  const be = nflog(UDP4, { bigEndian: true });
  be[2] = 0x01;
  be[3] = 0x2c;
  let p = parseAt(LINKTYPE_NFLOG, be, 0);
  t.is(p.reason, null);
  t.is(p.dport, 53);
  // Little-endian, NFULA_PACKET_HDR with NLA_F_NESTED (0x8000) set: the type is 0x8001.
  const le = nflog(UDP4);
  t.is(le[6], 1);
  le[7] = 0x80;
  p = parseAt(LINKTYPE_NFLOG, le, 0);
  t.is(p.reason, null);
  t.is(p.dport, 53);
});

/** One NFLOG TLV, little-endian length and type, padded to 4 bytes. */
function tlvLe(type: number, value: Uint8Array): Uint8Array {
  const len = 4 + value.length;
  const b = new Uint8Array((len + 3) & ~3);
  b.set([len & 255, len >> 8, type & 255, type >> 8]);
  b.set(value, 4);
  return b;
}
const HW = tlvLe(1, hex('08000100')); // NFULA_PACKET_HDR: hw protocol IPv4, hook 1
const NFHEAD = (fam: number): Uint8Array => Uint8Array.of(fam, 0, 0, 1);

test('NFLOG: empty and short TLVs, the family byte decides the IP version', (t) => {
  // An empty payload TLV (length 4) as the last 4 bytes: found, and IPv4 of 0 bytes.
  reasonOf(t, LINKTYPE_NFLOG, concat(NFHEAD(2), HW, tlvLe(9, new Uint8Array(0))), 'truncated IPv4 header', 'empty payload TLV');
  // Big-endian, and that empty TLV is the only one: 4 bytes left are enough to tell the order.
  reasonOf(t, LINKTYPE_NFLOG, concat(NFHEAD(2), hex('00040009')), 'truncated IPv4 header', 'big-endian, only an empty payload TLV');
  // A header-only record: no TLV at all.
  reasonOf(t, LINKTYPE_NFLOG, NFHEAD(2), 'NFLOG record without payload', 'NFLOG of 4 bytes');
  // The family is the hook's (nfgenmsg): IPv4 for 2 and IPv6 for 10 whatever the payload says;
  // any other family (7, bridge) goes by the packet's version nibble.
  reasonOf(t, LINKTYPE_NFLOG, concat(NFHEAD(2), HW, tlvLe(9, UDP6)), 'bad IP version', 'family 2, IPv6 payload');
  reasonOf(t, LINKTYPE_NFLOG, concat(NFHEAD(10), HW, tlvLe(9, UDP4)), 'bad IP version', 'family 10, IPv4 payload');
  const br = parseAt(LINKTYPE_NFLOG, concat(NFHEAD(7), HW, tlvLe(9, UDP4)), 6);
  t.is(br.reason, null);
  t.is(br.family, NFPROTO_IPV4);
  const br6 = parseAt(LINKTYPE_NFLOG, concat(NFHEAD(7), HW, tlvLe(9, UDP6)), 6);
  t.is(br6.reason, null);
  t.is(br6.family, NFPROTO_IPV6);
  // A payload cut by the copy range, followed by more TLVs: the IP parser sees only the TLV.
  const cut = fixIpv4Checksum(concat(hex('45000064'), UDP4.subarray(4)));
  const f = concat(NFHEAD(2), HW, tlvLe(9, cut), tlvLe(10, hex('6162630000000000000000000000')), tlvLe(3, new Uint8Array(16)));
  const p = parseAt(LINKTYPE_NFLOG, f, 6);
  t.is(p.reason, null);
  t.false(p.complete);
  t.is(p.l4len, 12);
});

test('NFLOG prefix and timestamp: bounds, unterminated and invalid prefixes, 64-bit fields', (t) => {
  const ts = tlvLe(3, hex('00000001 00000005 00000001 00000007')); // 2^32 + 5 s, 2^32 + 7 µs
  const f = concat(NFHEAD(2), HW, tlvLe(10, hex('6869 00')), ts, tlvLe(9, UDP4));
  t.is(nflogPrefix(f, 0, f.length), 'hi');
  t.is(nflogTimestampMs(f, 0, f.length), (2 ** 32 + 5) * 1000 + (2 ** 32 + 7) / 1000);
  // The frame's length bounds the search: the first 12 bytes hold no prefix or timestamp.
  t.is(nflogPrefix(f, 0, 12), null);
  t.is(nflogTimestampMs(f, 0, 12), null);
  // Inside a bigger buffer.
  const buf = concat(hex('eeeeee'), f, hex('eeee'));
  t.is(nflogPrefix(buf, 3, f.length), 'hi');
  t.is(nflogTimestampMs(buf, 3, f.length), (2 ** 32 + 5) * 1000 + (2 ** 32 + 7) / 1000);
  // A negative offset is refused, not read from the buffer's start (which holds a prefix TLV).
  const lure = concat(tlvLe(10, hex('6869 00')), tlvLe(3, new Uint8Array(16)), f);
  for (const off of [-4, -8, Number.NaN]) {
    t.is(nflogPrefix(lure, off, 64), null, `offset ${off}`);
    t.is(nflogTimestampMs(lure, off, 64), null, `offset ${off}`);
  }
  for (const [off, len] of [[0, 3], [0, Number.NaN], [f.length + 1, 8]]) {
    t.is(nflogPrefix(f, off!, len!), null);
    t.is(nflogTimestampMs(f, off!, len!), null);
  }
  // A prefix without its NUL ends with its TLV (the next TLV's bytes are not part of it).
  const open = concat(NFHEAD(2), HW, tlvLe(10, hex('61626364')), tlvLe(3, new Uint8Array(16)));
  t.is(nflogPrefix(open, 0, open.length), 'abcd');
  // Bytes that are not UTF-8 are replaced, never thrown on.
  const bad = concat(NFHEAD(2), HW, tlvLe(10, hex('61ff62 00')));
  t.is(nflogPrefix(bad, 0, bad.length), 'a\ufffdb');
  // A timestamp TLV of 8 bytes is too short to read.
  const short = concat(NFHEAD(2), HW, tlvLe(3, new Uint8Array(8).fill(1)), tlvLe(9, UDP4));
  t.is(nflogTimestampMs(short, 0, short.length), null);
});

test('LINKTYPE_IPV4 / IPV6 frames shorter than a header: version first, then truncation', (t) => {
  reasonOf(t, LINKTYPE_IPV4, new Uint8Array(0), 'truncated IPv4 header', 'IPv4, empty');
  reasonOf(t, LINKTYPE_IPV4, hex('65'), 'bad IP version', 'IPv4 link type, 1 byte of version 6');
  reasonOf(t, LINKTYPE_IPV4, hex('44000020 00000000 4011'), 'truncated IPv4 header', 'IPv4, 10 bytes, IHL 4');
  reasonOf(t, LINKTYPE_IPV6, new Uint8Array(0), 'truncated IPv6 header', 'IPv6, empty');
  reasonOf(t, LINKTYPE_IPV6, hex('45'), 'bad IP version', 'IPv6 link type, 1 byte of version 4');
  reasonOf(t, LINKTYPE_IPV6, UDP4, 'bad IP version', 'IPv6 link type, an IPv4 packet');
});

test('IPv4 header with no payload; IPv6 addresses, extension headers and fragments', (t) => {
  // Total length 20 = the header: valid, protocol 253 has nothing to read.
  reasonOf(t, LINKTYPE_RAW, withIp4('45000014 00000000 40fd0000 0a000001 0a000002', ''), null, 'IPv4 header only');
  const a6 = '20010db8 00010002 00030004 00050006';
  const b6 = '20010db8 000a000b 000c000d 000e000f';
  const v6 = (plen: number, nh: string, rest: string): Uint8Array =>
    hex(`60000000 ${plen.toString(16).padStart(4, '0')}${nh}40 ${a6} ${b6} ${rest}`);
  // Every address word (read at a non-zero offset).
  let p = parseAt(LINKTYPE_RAW, v6(12, '11', '13880035 000c0000 61626364'), 6);
  t.deepEqual([...p.src], [0x20010db8, 0x00010002, 0x00030004, 0x00050006]);
  t.deepEqual([...p.dst], [0x20010db8, 0x000a000b, 0x000c000d, 0x000e000f]);
  // AH (RFC 4302): its length field is the length in 4-byte words minus 2; 24 bytes here.
  p = parseAt(LINKTYPE_RAW, v6(36, '33', `1104 0000 00000100 00000001 ${'00'.repeat(12)} 13880035 000c0000 61626364`), 6);
  t.is(p.reason, null);
  t.is(p.l4proto, 17);
  t.is(p.l4off, 6 + 40 + 24);
  t.is(p.dport, 53);
  // A hop-by-hop header of which only its first 2 bytes are there: read, and the UDP header is
  // missing (the kernel's ipv6_skip_exthdr needs those 2 bytes only).
  reasonOf(t, LINKTYPE_RAW, v6(2, '00', '1100'), 'truncated UDP header', 'hop-by-hop, 2 bytes');
  // A fragment header needs 4 bytes (its offset field): 3 are not enough, 4 are.
  reasonOf(t, LINKTYPE_RAW, v6(3, '2c', '110000'), 'truncated IPv6 extension header', 'fragment header, 3 bytes');
  p = parseAt(LINKTYPE_RAW, v6(4, '2c', '11000001'), 6);
  t.is(p.reason, 'truncated UDP header');
  t.true(p.fragment);
  // A non-first fragment: layer 4 starts after the 8-byte fragment header.
  p = parseAt(LINKTYPE_RAW, v6(16, '2c', '11000009 00000001 13880035 000c0000'), 6);
  t.is(p.reason, 'fragment');
  t.is(p.l4proto, 17);
  t.is(p.l4off, 6 + 48);
  t.is(p.l4len, 8);
  // No next header: layer 4 would start right after the fixed header, with the payload length.
  p = parseAt(LINKTYPE_RAW, v6(4, '3b', 'eeeeeeee'), 6);
  t.is(p.reason, 'IPv6 no next header');
  t.is(p.l4off, 6 + 40);
  t.is(p.l4len, 4);
});

test('layer 4 at its edges: ports at exactly 4 bytes, GRE keys, headers past the packet', (t) => {
  const at = 6;
  // A hop-by-hop header claiming 16 bytes of which 8 are there, then protocol 253: layer 4
  // starts at the packet's end, with 0 bytes (not a negative count).
  let p = parseAt(LINKTYPE_RAW, hex(`60000000 0008 0040 ${'fd00'.padEnd(32, '0')} ${'fd00'.padEnd(31, '0')}1 fd010000 00000000`), at);
  t.is(p.reason, null);
  t.is(p.l4proto, 253);
  t.is(p.l4off, at + 48);
  t.is(p.l4len, 0);
  // UDP-Lite with exactly its 4 port bytes: the ports, no reason.
  p = parseAt(LINKTYPE_RAW, withIp4('45000018 00000000 40880000 0a000001 0a000002', '13880035'), at);
  t.is(p.reason, null);
  t.is(p.sport, 5000);
  t.is(p.dport, 53);
  // PPTP GRE of exactly 8 bytes carrying PPP: the call id is the key.
  p = parseAt(LINKTYPE_RAW, withIp4('4500001c 00000000 402f0000 0a000001 0a000002', '3001880b 0000 0007'), at);
  t.is(p.reason, null);
  t.is(p.dport, 7);
  // 6 bytes of it (the call id cut off): key 0, nothing read past the packet.
  p = parseAt(LINKTYPE_RAW, withIp4('4500001a 00000000 402f0000 0a000001 0a000002', '3001880b 0000'), at);
  t.is(p.reason, null);
  t.is(p.dport, 0);
  // The same bytes under protocol 253 are not a GRE header.
  p = parseAt(LINKTYPE_RAW, withIp4('4500001c 00000000 40fd0000 0a000001 0a000002', '3001880b 0000 0007'), at);
  t.is(p.reason, null);
  t.is(p.dport, 0);
  p = parseAt(LINKTYPE_RAW, withIp4('4500001c 00000000 40fd0000 0a000001 0a000002', '30010800 0000 0007'), at);
  t.is(p.reason, null);
  // Truncated TCP / UDP: the ports when their 4 bytes are there, else none; ICMP type and code
  // when their 2 bytes are.
  for (const [proto, trunc] of [['06', 'truncated TCP header'], ['11', 'truncated UDP header']] as const) {
    p = parseAt(LINKTYPE_RAW, withIp4(`45000018 00000000 40${proto}0000 0a000001 0a000002`, '13880035'), at);
    t.is(p.reason, trunc);
    t.is(p.sport, 5000);
    t.is(p.dport, 53);
    p = parseAt(LINKTYPE_RAW, withIp4(`45000017 00000000 40${proto}0000 0a000001 0a000002`, '138800'), at);
    t.is(p.reason, trunc);
    t.is(p.sport, 0);
    t.is(p.dport, 0);
  }
  p = parseAt(LINKTYPE_RAW, withIp4('45000016 00000000 40010000 0a000001 0a000002', '030d'), at);
  t.is(p.reason, 'truncated ICMP header');
  t.is(p.icmpType, 3);
  t.is(p.icmpCode, 13);
  p = parseAt(LINKTYPE_RAW, withIp4('45000015 00000000 40010000 0a000001 0a000002', '03'), at);
  t.is(p.icmpType, 0);
  t.is(p.icmpCode, 0);
  const six = (plen: number, rest: string): Uint8Array => hex(`60000000 ${plen.toString(16).padStart(4, '0')}3a40 ${'fd00'.padEnd(31, '0')}1 ${'fd00'.padEnd(31, '0')}2 ${rest}`);
  p = parseAt(LINKTYPE_RAW, six(2, '8101'), at);
  t.is(p.reason, 'truncated ICMPv6 header');
  t.is(p.icmpType, 129);
  t.is(p.icmpCode, 1);
  p = parseAt(LINKTYPE_RAW, six(1, '81'), at);
  t.is(p.icmpType, 0);
});

test('TCP options: EOL, bad lengths, a last 2-byte option, only the first well-formed SACK', (t) => {
  // SYN from 10.0.0.1:5000 to :80 with the given options (padded with EOL to 4 bytes), 4 data bytes.
  const syn = (opts: string, flags = '02'): Packet => {
    const o = hex(opts);
    const ol = (o.length + 3) & ~3;
    const optHex = opts.replace(/\s+/g, '') + '00'.repeat(ol - o.length);
    const doff = ((20 + ol) / 4) << 4;
    const tot = 20 + 20 + ol + 4;
    return parseAt(LINKTYPE_RAW, withIp4(`4500${tot.toString(16).padStart(4, '0')} 00000000 40060000 0a000001 0a000002`,
      `13880050 00000001 00001000 ${doff.toString(16)}${flags} ffff 0000 0000 ${optHex} 03030707`), 6);
  };
  // After EOL nothing is an option (the window scale behind it is not read, even where the
  // byte after EOL would make a valid length).
  let p = syn('00 02 030307');
  t.is(p.reason, null);
  t.is(p.wscale, -1);
  // An option of length 0 or 1 ends the walk (no endless loop), as does one running past the list.
  t.is(syn('04 00 030307').wscale, -1);
  t.is(syn('04 01 030307').wscale, -1);
  t.is(syn('0101 0303').wscale, -1); // window scale needing 3 bytes, 2 left: the data's 0x03 is not its value
  // SACK-permitted as the list's last 2 bytes.
  p = syn('02040578 0101 0402');
  t.true(p.sackPerm);
  // SACK: a length of 2 or 12 is not 2 + 8n with n >= 1: ignored; of two good ones only the
  // first counts (the kernel's tcp_sack returns after it). ack = 0x1000.
  p = syn('0101 0502', '10');
  t.false(p.hasSack);
  p = syn('0101 050c 00002000 00003000 0000', '10');
  t.false(p.hasSack);
  p = syn('0101 050a 00001800 00002000 0101 050a 00003000 00004000', '10');
  t.true(p.hasSack);
  t.is(p.sackMax, 0x2000);
});

test('ICMP errors: the quoted header, its addresses and length, its layer-4 bytes', (t) => {
  const at = 6;
  const icmp4 = (quoted: string): Packet => {
    const q = hex(quoted);
    return parseAt(LINKTYPE_RAW, withIp4(`4500${(28 + q.length).toString(16).padStart(4, '0')} 00000000 40010000 0a000002 0a000001`, `0303 0000 00000000 ${quoted}`), at);
  };
  // 19 bytes quoted whose fragment field says non-first: the header is incomplete first.
  let p = icmp4('45000030 00000001 40110000 0a000001 0a0000');
  t.is(p.innerReason, 'truncated inner IP header');
  // A quoted IHL of 60 bytes, 28 quoted: incomplete.
  p = icmp4('4f000030 00000000 40110000 0a000001 0a000002 13880035 000c0000');
  t.is(p.innerReason, 'truncated inner IP header');
  // Whole: addresses and ports.
  p = icmp4('45000030 00000000 40110000 c0a80101 0a000002 13880035 000c0000');
  t.is(p.innerReason, null);
  t.deepEqual([p.innerSrc[0], p.innerDst[0], p.innerSport, p.innerDport], [0xc0a80101, 0x0a000002, 5000, 53]);
  p = icmp4('45000030 00000000 40060000 c0a80101 0a000002 13880050 00000001');
  t.deepEqual([p.innerProto, p.innerSport, p.innerDport], [6, 5000, 80]);
  // SCTP and UDP-Lite: the ports are their first 4 bytes too (4 quoted are enough).
  for (const proto of ['84', '88']) {
    p = icmp4(`45000030 00000000 40${proto}0000 c0a80101 0a000002 13880050`);
    t.is(p.innerReason, null);
    t.deepEqual([p.innerSport, p.innerDport], [5000, 80], proto);
  }
  // A quoted echo request with 7 of its 8 header bytes: incomplete; with 8: id and type/code.
  p = icmp4('45000030 00000000 40010000 0a000001 0a000002 08000000 000700');
  t.is(p.innerReason, 'truncated inner layer-4 header');
  p = icmp4('45000030 00000000 40010000 0a000001 0a000002 08000000 00070001');
  t.is(p.innerReason, null);
  t.is(p.innerSport, 7);
  t.is(p.innerDport, 0x0800);
  // Quoted PPTP GRE carrying PPP: the call id is the key; protocol 253 has no key.
  p = icmp4('45000030 00000000 402f0000 0a000001 0a000002 3001880b 0000 0009');
  t.is(p.innerReason, null);
  t.is(p.innerDport, 9);
  p = icmp4('45000030 00000000 40fd0000 0a000001 0a000002 3001880b 0000 0009');
  t.is(p.innerReason, null);
  t.is(p.innerDport, 0);
  p = icmp4('45000030 00000000 40fd0000 0a000001 0a000002 30010800 0000 0009');
  t.is(p.innerReason, null);
  // ICMPv6 quoting IPv6 UDP: every address word.
  const a = '20010db8 00010002 00030004 00050006';
  const b = '20010db8 000a000b 000c000d 000e000f';
  const quoted = hex(`60000000 00081140 ${a} ${b} 13880035 00080000`);
  const c = 'fd000000 00000000 00000000 00000001';
  const d = 'fd000000 00000000 00000000 00000002';
  const outer = concat(hex(`60000000 ${(8 + quoted.length).toString(16).padStart(4, '0')}3a40 ${c} ${d} 01040000 00000000`), quoted);
  p = parseAt(LINKTYPE_RAW, outer, at);
  t.is(p.innerReason, null);
  t.deepEqual([...p.innerSrc], [0x20010db8, 0x00010002, 0x00030004, 0x00050006]);
  t.deepEqual([...p.innerDst], [0x20010db8, 0x000a000b, 0x000c000d, 0x000e000f]);
  t.is(p.innerDport, 53);
});
