// The checksum functions' own contract (src/input/packet/checksum.ts), which the mutation run
// found checked only through well-formed packets: bounds, per-protocol minimum lengths, the
// families each protocol is verified in, UDP's zero checksum, and offload (partial) sums.
// Expected sums come from the RFC 1071 reference in test/helpers/frames.ts (inetChecksum) and a
// bitwise CRC32c here, never from the code under test.
import test from 'ava';
import {
  CSUM_BAD, CSUM_OK, CSUM_PARTIAL, ipv4HeaderChecksumOk, l4ChecksumCheck, l4ChecksumOk,
  partialChecksumCheck, partialChecksumOk, sctpChecksumOk,
} from '../src/input/packet/checksum.js';
import { NFPROTO_IPV4, NFPROTO_IPV6, Packet, LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { ConntrackTable } from '../src/table/table.js';
import { Conntrack } from '../src/track/core.js';
import { concat, hex, inetChecksum, udp4 } from './helpers/frames.js';

const SRC4 = [0x0a010203];
const DST4 = [0x0a000002];
const SRC6 = [0xfd000000, 0, 0, 1];
const DST6 = [0xfd000000, 0, 0, 2];

/** Pseudo-header bytes (RFC 768 / 8200) for the given family, protocol and length. */
function pseudo(v6: boolean, proto: number, len: number): Uint8Array {
  const words = v6 ? [...SRC6, ...DST6] : [...SRC4, ...DST4];
  const b = new Uint8Array(words.length * 4 + 8);
  words.forEach((w, i) => { b[4 * i] = w >>> 24; b[4 * i + 1] = (w >>> 16) & 255; b[4 * i + 2] = (w >>> 8) & 255; b[4 * i + 3] = w & 255; });
  const o = words.length * 4;
  b[o] = len >>> 24; b[o + 1] = (len >>> 16) & 255; b[o + 2] = (len >>> 8) & 255; b[o + 3] = len & 255;
  b[o + 7] = proto;
  return b;
}

/** `l4` with its 16-bit field at `at` set so that the sum with `pre` verifies. */
function sealed(pre: Uint8Array, l4: Uint8Array, at: number): Uint8Array {
  const b = l4.slice();
  b[at] = 0;
  b[at + 1] = 0;
  const c = inetChecksum(pre, b);
  b[at] = c >> 8;
  b[at + 1] = c & 255;
  return b;
}

/** A Packet over `l4` placed after `lead` bytes of 0xab, with the given family and protocol. */
function pk(family: number, proto: number, l4: Uint8Array, o: { lead?: number; len?: number; complete?: boolean } = {}): Packet {
  const p = new Packet();
  const lead = o.lead ?? 8;
  p.buf = concat(new Uint8Array(lead).fill(0xab), l4);
  p.family = family;
  p.l4proto = proto;
  p.l4off = lead;
  p.l4len = o.len ?? l4.length;
  p.complete = o.complete ?? true;
  const v6 = family === NFPROTO_IPV6;
  (v6 ? SRC6 : SRC4).forEach((w, i) => { p.src[i] = w; });
  (v6 ? DST6 : DST4).forEach((w, i) => { p.dst[i] = w; });
  return p;
}

const UDP_DATA = hex('13880035 000c0000 61626364');
const udpGood = (v6: boolean): Uint8Array => sealed(pseudo(v6, 17, 12), UDP_DATA, 6);
const TCP_HDR = hex('13880050 00000001 00000000 5010ffff 00000000 61626364');

test('ipv4HeaderChecksumOk: a header ending the buffer verifies; bytes outside it never count', (t) => {
  const hdr = sealed(new Uint8Array(0), hex('45000020 00000000 40110000 0a000001 0a000002'), 10);
  t.true(ipv4HeaderChecksumOk(hdr, 0, 20));
  // 16 bytes whose sum happens to verify are not a header (IHL >= 5).
  const short = sealed(new Uint8Array(0), hex('45000020 00000000 40110000 0a000001'), 10);
  t.false(ipv4HeaderChecksumOk(short, 0, 16));
  // Reaching 2 bytes before the buffer, or 4 past it, is refused (the missing bytes would read
  // as zeros and keep the sum right).
  t.false(ipv4HeaderChecksumOk(hdr, -2, 22));
  t.false(ipv4HeaderChecksumOk(hdr, 0, 24));
});

test('l4ChecksumOk: bounds, minimum lengths, families, and UDP zero checksums', (t) => {
  t.true(l4ChecksumOk(pk(NFPROTO_IPV4, 17, udpGood(false))));
  t.true(l4ChecksumOk(pk(NFPROTO_IPV6, 17, udpGood(true))));
  const bad = udpGood(false).slice();
  bad[7] ^= 1;
  t.false(l4ChecksumOk(pk(NFPROTO_IPV4, 17, bad)));
  t.false(l4ChecksumOk(pk(NFPROTO_IPV4, 17, bad, { lead: 0 })), 'layer 4 at offset 0 is checked too');
  // Not verifiable: not captured whole, or lengths past the buffer; unknown family.
  t.true(l4ChecksumOk(pk(NFPROTO_IPV4, 17, bad, { complete: false })));
  t.true(l4ChecksumOk(pk(NFPROTO_IPV4, 17, bad, { len: 40 })));
  t.true(l4ChecksumOk(pk(0, 17, bad)));
  // Shorter than the protocol's header: bad, even when the sum of those bytes verifies.
  t.false(l4ChecksumOk(pk(NFPROTO_IPV4, 17, new Uint8Array(0), { len: 0 })));
  t.false(l4ChecksumOk(pk(NFPROTO_IPV4, 17, sealed(pseudo(false, 17, 6), hex('13880035 0000'), 0))));
  t.false(l4ChecksumOk(pk(NFPROTO_IPV4, 6, sealed(pseudo(false, 6, 10), hex('13880050 00000001 0000'), 0))));
  // TCP is verified as TCP: a bad segment whose bytes 6-7 are zero is not a UDP "no checksum".
  const tcpBad = sealed(pseudo(false, 6, 24), TCP_HDR, 16);
  tcpBad[17] ^= 1;
  t.false(l4ChecksumOk(pk(NFPROTO_IPV4, 6, tcpBad)));
  t.true(l4ChecksumOk(pk(NFPROTO_IPV4, 6, sealed(pseudo(false, 6, 24), TCP_HDR, 16))));
  // UDP checksum 0: "none" over IPv4, invalid over IPv6 (RFC 8200 8.1); 0x0012 is just wrong.
  const zero = hex('13880035 000c0000 61626364');
  t.true(l4ChecksumOk(pk(NFPROTO_IPV4, 17, zero)));
  t.false(l4ChecksumOk(pk(NFPROTO_IPV6, 17, zero)));
  t.false(l4ChecksumOk(pk(NFPROTO_IPV4, 17, hex('13880035 000c0012 61626364'))));
  t.false(l4ChecksumOk(pk(NFPROTO_IPV4, 17, hex('13880035 000c1200 61626364'))));
  // Offsets or lengths below zero (a Packet not from the parser): cannot verify.
  const neg = pk(NFPROTO_IPV4, 17, bad);
  neg.l4len = -1;
  t.true(l4ChecksumOk(neg));
  neg.l4len = 12;
  neg.l4off = -1;
  t.true(l4ChecksumOk(neg));
  // ICMP is checked over IPv4 only, ICMPv6 over IPv6 only; both need 4 bytes.
  const icmp = sealed(new Uint8Array(0), hex('08000000 00070001'), 2);
  t.true(l4ChecksumOk(pk(NFPROTO_IPV4, 1, icmp)));
  t.true(l4ChecksumOk(pk(NFPROTO_IPV6, 1, hex('08001234 00070001'))));
  t.false(l4ChecksumOk(pk(NFPROTO_IPV4, 1, hex('ffff'))));
  t.true(l4ChecksumOk(pk(NFPROTO_IPV4, 1, sealed(new Uint8Array(0), hex('00000000'), 2))));
  t.true(l4ChecksumOk(pk(NFPROTO_IPV4, 58, hex('80001234 00070001'))));
  t.false(l4ChecksumOk(pk(NFPROTO_IPV6, 58, sealed(pseudo(true, 58, 2), hex('0000'), 0))));
  t.true(l4ChecksumOk(pk(NFPROTO_IPV6, 58, sealed(pseudo(true, 58, 4), hex('80000000'), 2))));
});

test('l4ChecksumCheck tells an offloaded (partial) checksum from a wrong one, per protocol and family', (t) => {
  const fold = (b: Uint8Array): number => ~inetChecksum(b) & 0xffff; // folded sum, not complemented
  for (const v6 of [false, true]) {
    const fam = v6 ? NFPROTO_IPV6 : NFPROTO_IPV4;
    for (const [proto, data, at] of [[6, TCP_HDR, 16], [17, UDP_DATA, 6]] as const) {
      const ps = fold(pseudo(v6, proto, data.length));
      const put = (v: number): Packet => { const b = data.slice(); b[at] = v >> 8; b[at + 1] = v & 255; return pk(fam, proto, b); };
      t.is(l4ChecksumCheck(pk(fam, proto, sealed(pseudo(v6, proto, data.length), data, at))), CSUM_OK);
      t.is(l4ChecksumCheck(put(ps)), CSUM_PARTIAL, `${proto} v6=${v6}: the pseudo-header sum`);
      t.is(l4ChecksumCheck(put(~ps & 0xffff)), CSUM_PARTIAL, `${proto} v6=${v6}: its complement`);
      t.is(l4ChecksumCheck(put((ps + 1) & 0xffff)), CSUM_BAD, `${proto} v6=${v6}: anything else`);
    }
  }
  // ICMP is never offloaded: a field that equals the (absent) pseudo sum is just bad.
  const icmp = hex('08000000 00070001');
  icmp[2] = 0x12;
  t.is(l4ChecksumCheck(pk(NFPROTO_IPV4, 1, icmp)), CSUM_BAD);
  const ps1 = fold(pseudo(false, 1, 8));
  icmp[6] = ps1 >> 8;
  icmp[7] = ps1 & 255;
  t.is(l4ChecksumCheck(pk(NFPROTO_IPV4, 1, icmp)), CSUM_BAD, 'even where UDP would keep its checksum');
});

test('partialChecksumOk / Check (UDP-Lite coverage): bounds, families, offload with either protocol', (t) => {
  // UDP-Lite header, coverage 8 (the header only), then 4 bytes of data not covered.
  const lite = hex('13880035 00080000 61626364');
  const fold = (b: Uint8Array): number => ~inetChecksum(b) & 0xffff;
  for (const v6 of [false, true]) {
    const fam = v6 ? NFPROTO_IPV6 : NFPROTO_IPV4;
    const good = sealed(pseudo(v6, 17, 12), lite.subarray(0, 8), 6);
    const p = pk(fam, 136, concat(good, lite.subarray(8)));
    t.true(partialChecksumOk(p, 8, 12, 17));
    t.is(partialChecksumCheck(p, 8, 12, 17, 136), CSUM_OK);
    const put = (v: number): Packet => { const b = lite.slice(); b[6] = v >> 8; b[7] = v & 255; return pk(fam, 136, b); };
    t.is(partialChecksumCheck(put(fold(pseudo(v6, 17, 12))), 8, 12, 17, 136), CSUM_PARTIAL);
    t.is(partialChecksumCheck(put(fold(pseudo(v6, 136, 12))), 8, 12, 17, 136), CSUM_PARTIAL);
    t.is(partialChecksumCheck(put(~fold(pseudo(v6, 136, 12)) & 0xffff), 8, 12, 17, 136), CSUM_PARTIAL);
    t.is(partialChecksumCheck(put(0x1234), 8, 12, 17, 136), CSUM_BAD);
  }
  const wrong = pk(NFPROTO_IPV4, 136, hex('13880035 00081234 61626364'));
  t.false(partialChecksumOk(wrong, 8, 12, 17));
  t.false(partialChecksumOk(pk(NFPROTO_IPV4, 136, hex('13880035 00081234 61626364'), { lead: 0 }), 8, 12, 17));
  // Cannot be verified: not whole, coverage past the layer-4 bytes or the buffer, unknown family.
  t.true(partialChecksumOk(pk(NFPROTO_IPV4, 136, hex('13880035 00081234 61626364'), { complete: false }), 8, 12, 17));
  t.true(partialChecksumOk(wrong, 13, 12, 17));
  t.true(partialChecksumOk(wrong, -1, 12, 17));
  t.true(partialChecksumOk(pk(NFPROTO_IPV4, 136, hex('13880035 00081234 61626364'), { len: 10 }), 12, 12, 17), 'coverage past l4len');
  t.is(partialChecksumOk(wrong, 0, 12, 17), inetChecksum(pseudo(false, 17, 12)) === 0, 'coverage 0: the pseudo-header alone');
  const negq = pk(NFPROTO_IPV4, 136, hex('13880035 00081234 61626364'));
  negq.l4off = -1;
  t.true(partialChecksumOk(negq, 8, 12, 17));
  t.true(partialChecksumOk(pk(NFPROTO_IPV4, 136, hex('13880035 00081234 61626364'), { len: 40 }), 20, 12, 17));
  t.true(partialChecksumOk(pk(0, 136, hex('13880035 00081234 61626364')), 8, 12, 17));
});

/** Bitwise CRC32c (reflected 0x82F63B78), the reference for SCTP. */
function crc32cRef(b: Uint8Array): number {
  let c = ~0;
  for (const x of b) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

test('sctpChecksumOk: the 12-byte common header at least; bounds; CRC stored least significant byte first', (t) => {
  const sctp = (extra: string): Uint8Array => {
    const b = concat(hex('13880050 00000007 00000000'), hex(extra));
    const c = crc32cRef(b);
    b[8] = c & 255; b[9] = (c >>> 8) & 255; b[10] = (c >>> 16) & 255; b[11] = c >>> 24;
    return b;
  };
  const good = sctp('');
  t.true(sctpChecksumOk(pk(NFPROTO_IPV4, 132, good)));
  t.true(sctpChecksumOk(pk(NFPROTO_IPV4, 132, good, { lead: 0 })));
  const bad = good.slice();
  bad[8] ^= 1;
  t.false(sctpChecksumOk(pk(NFPROTO_IPV4, 132, bad)));
  t.false(sctpChecksumOk(pk(NFPROTO_IPV4, 132, bad, { lead: 0 })));
  t.false(sctpChecksumOk(pk(NFPROTO_IPV4, 132, good.subarray(0, 11))));
  // 11 bytes whose CRC (field bytes as zero) sits in bytes 8-11, the last one past l4len: too short.
  const eleven = hex('13880050 00000007 00000000');
  const c11 = crc32cRef(eleven.subarray(0, 11));
  eleven.set([c11 & 255, (c11 >>> 8) & 255, (c11 >>> 16) & 255, c11 >>> 24], 8);
  t.false(sctpChecksumOk(pk(NFPROTO_IPV4, 132, eleven, { len: 11 })));
  const negs = pk(NFPROTO_IPV4, 132, bad);
  negs.l4off = -1;
  t.true(sctpChecksumOk(negs));
  t.true(sctpChecksumOk(pk(NFPROTO_IPV4, 132, bad, { complete: false })));
  t.true(sctpChecksumOk(pk(NFPROTO_IPV4, 132, sctp('01000004'), { len: 20 })), 'past the buffer: cannot verify');
});

test('a packet with a correct checksum is not counted as offloaded (csum_offload stays 0)', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  const f = udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 5000, dport: 53, payload: 4 });
  const v = ct.decide(f, { linktype: LINKTYPE_RAW });
  t.is(v.reason, null);
  t.is(table.stats().total['csum_offload'], 0);
  ct.close();
});

test('ipv4HeaderChecksumOk: every header length 20..60, at odd and even offsets, against the RFC 1071 reference', (t) => {
  let seed = 12345;
  const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24;
  for (let ihl = 20; ihl <= 60; ihl += 4) {
    for (const at of [0, 1, 3]) {
      for (let k = 0; k < 40; k++) {
        const buf = new Uint8Array(at + ihl + 2);
        for (let i = 0; i < buf.length; i++) buf[i] = rnd();
        buf[at] = 0x40 | (ihl >> 2);
        // Near-ones bytes push the sum past 2^16 more than once (the end-around carry).
        if (k % 4 === 0) for (let i = 0; i < ihl; i++) buf[at + i] = i === 0 ? buf[at]! : 0xff - (rnd() & 1);
        buf[at + 10] = 0;
        buf[at + 11] = 0;
        const c = inetChecksum(buf.subarray(at, at + ihl));
        buf[at + 10] = c >> 8;
        buf[at + 11] = c & 0xff;
        t.true(ipv4HeaderChecksumOk(buf, at, ihl), `ihl ${ihl} at ${at}`);
        // Bytes after the header never count; any one flipped bit inside it fails.
        buf[at + ihl] = buf[at + ihl]! ^ 0xff;
        t.true(ipv4HeaderChecksumOk(buf, at, ihl), `ihl ${ihl} at ${at}, byte after it changed`);
        const i = rnd() % ihl;
        buf[at + i] = buf[at + i]! ^ (1 << (rnd() & 7));
        t.false(ipv4HeaderChecksumOk(buf, at, ihl), `ihl ${ihl} at ${at}, byte ${i} flipped`);
      }
    }
  }
});
