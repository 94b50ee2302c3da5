/**
 * Internet checksums (RFC 1071 ones' complement sums) for the layer-4 protocols conntrack
 * verifies, and for the IPv4 header. No allocation: bytes are summed straight from the frame.
 */

import {
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  NFPROTO_IPV4,
  NFPROTO_IPV6,
  type Packet,
} from './packet.js';

/**
 * Sum of the 16-bit big-endian words of buf[off, off + n) (a trailing odd byte counts as the high
 * byte of a word), not folded: a value congruent to that sum modulo 0xffff (what a ones'
 * complement sum keeps), zero only when every byte is, below 2^53 for any n a capture can hold.
 * Callers fold it (fold16). Long runs are summed 4 bytes per load (sumAligned).
 */
export function sum16(buf: Uint8Array, off: number, n: number): number {
  if (n >= SUM_WIDE_MIN && LITTLE_ENDIAN) return sumAligned(buf, off, n);
  return sumBytes(buf, off, n);
}

/** sum16 one byte per load (short runs, and the edges of long ones). */
function sumBytes(buf: Uint8Array, off: number, n: number): number {
  let s = 0;
  let i = off;
  const even = off + (n & ~1);
  // Two words per step: fewer loop iterations, still exact.
  const quad = off + (n & ~3);
  for (; i < quad; i += 4) {
    s += ((buf[i]! << 8) | buf[i + 1]!) + ((buf[i + 2]! << 8) | buf[i + 3]!);
  }
  for (; i < even; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  if (n & 1) s += buf[i]! << 8;
  return s;
}

/** Below this many bytes the byte loop is as fast (IPv4 headers, small segments). */
const SUM_WIDE_MIN = 64;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** The last buffer summed wide and an Int32Array over it (int32 loads stay small integers; one view per buffer, not per packet). */
let wideBuffer: ArrayBufferLike | null = null;
let wideView: Int32Array<ArrayBufferLike> = new Int32Array(0);

/** Byte-swaps a 16-bit value. */
function swap16(x: number): number {
  return ((x & 0xff) << 8) | (x >>> 8);
}

/**
 * sum16 with aligned 32-bit loads (RFC 1071 section 2(B): the sum is byte-order independent, so
 * little-endian 16-bit halves summed and byte-swapped at the end give the big-endian sum). An odd
 * start sums the rest as if it began a word, which is the real sum byte-swapped (2(B) again).
 */
function sumAligned(buf: Uint8Array, off: number, n: number): number {
  const ab = buf.buffer;
  if (ab !== wideBuffer) {
    wideBuffer = ab;
    wideView = new Int32Array(ab, 0, ab.byteLength >>> 2);
  }
  const w32 = wideView;
  let abs = buf.byteOffset + off;
  const end = abs + n;
  let head = 0;
  let odd = false;
  if (abs & 1) {
    // The first byte is a high byte; the rest starts a new (swapped) word sequence.
    head = buf[off]! << 8;
    abs++;
    odd = true;
  }
  const base = buf.byteOffset;
  // Bytes before the first 4-byte boundary (0 or 2 here), summed big-endian relative to `abs`.
  let s = 0;
  if (abs & 2) {
    s += (buf[abs - base]! << 8) | buf[abs - base + 1]!;
    abs += 2;
  }
  const w0 = abs >>> 2;
  const w1 = (end - ((end - abs) & 3)) >>> 2;
  if (w1 > w0 && w1 <= w32.length) {
    // Two accumulators, four words per step (exact at any length; small integers up to 2^30).
    let lo = 0;
    let hi = 0;
    let w = w0;
    for (const w4 = w1 - 3; w < w4; w += 4) {
      const a = w32[w]!;
      const b = w32[w + 1]!;
      const c = w32[w + 2]!;
      const d = w32[w + 3]!;
      lo += (a & 0xffff) + (b & 0xffff) + (c & 0xffff) + (d & 0xffff);
      hi += (a >>> 16) + (b >>> 16) + (c >>> 16) + (d >>> 16);
    }
    for (; w < w1; w++) {
      const x = w32[w]!;
      lo += x & 0xffff;
      hi += x >>> 16;
    }
    const le = lo + hi;
    s += swap16(fold16(le));
    abs = w1 << 2;
  }
  s += sumBytes(buf, abs - base, end - abs);
  if (odd) s = swap16(fold16(s));
  return head + s;
}

/** Folds a sum into 16 bits with end-around carry. */
export function fold16(sum: number): number {
  let s = sum;
  while (s > 0xffff) s = (s % 65536) + Math.floor(s / 65536);
  return s;
}

/** True when the IPv4 header at buf[off, off + ihlBytes) has a correct header checksum. */
export function ipv4HeaderChecksumOk(buf: Uint8Array, off: number, ihlBytes: number): boolean {
  if (off < 0 || ihlBytes < 20 || off + ihlBytes > buf.length) return false;
  // Every packet's: the 20 bytes every header has written out (small enough to be inlined into
  // the parser), then the options' words; ihl is a multiple of 4, at most 60 bytes.
  const b = buf;
  const o = off;
  let s = ((b[o]! << 8) | b[o + 1]!) + ((b[o + 2]! << 8) | b[o + 3]!) + ((b[o + 4]! << 8) | b[o + 5]!) +
    ((b[o + 6]! << 8) | b[o + 7]!) + ((b[o + 8]! << 8) | b[o + 9]!) + ((b[o + 10]! << 8) | b[o + 11]!) +
    ((b[o + 12]! << 8) | b[o + 13]!) + ((b[o + 14]! << 8) | b[o + 15]!) + ((b[o + 16]! << 8) | b[o + 17]!) +
    ((b[o + 18]! << 8) | b[o + 19]!);
  if (ihlBytes > 20) s += sumBytes(buf, off + 20, ihlBytes - 20);
  // At most 30 words: below 2^21, so two integer folds do what fold16 does.
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff;
}

/** Sum of the address words of a Uint32Array address (16-bit halves). */
function addrSum(a: Uint32Array, words: number): number {
  let s = 0;
  for (let i = 0; i < words; i++) {
    const w = a[i];
    s += (w >>> 16) + (w & 0xffff);
  }
  return s;
}

/**
 * Verifies the layer-4 checksum of a parsed packet: TCP, UDP and ICMPv6 with the IPv4/IPv6
 * pseudo-header, ICMP (IPv4) without one. UDP over IPv4 with checksum 0 means "no checksum" and
 * passes; over IPv6 a zero UDP checksum is invalid. Returns true when the packet was not
 * captured whole (pkt.complete false: cannot verify) and for protocols it does not check.
 * The sum covers the layer-4 bytes bounded by the IP length (pkt.l4len), as the kernel does.
 */
export function l4ChecksumOk(pkt: Packet): boolean {
  if (!pkt.complete) return true;
  const b = pkt.buf;
  const q = pkt.l4off;
  const n = pkt.l4len;
  if (q < 0 || n < 0 || q + n > b.length) return true;
  const proto = pkt.l4proto;
  const v6 = pkt.family === NFPROTO_IPV6;
  if (!v6 && pkt.family !== NFPROTO_IPV4) return true;
  let s: number;
  switch (proto) {
    case IPPROTO_TCP:
      if (n < 20) return false;
      break;
    case IPPROTO_UDP:
      if (n < 8) return false;
      if (b[q + 6] === 0 && b[q + 7] === 0) return !v6;
      break;
    case IPPROTO_ICMP:
      if (v6) return true;
      if (n < 4) return false;
      return fold16(sum16(b, q, n)) === 0xffff;
    case IPPROTO_ICMPV6:
      if (!v6) return true;
      if (n < 4) return false;
      break;
    default:
      return true;
  }
  // Pseudo-header: addresses, upper-layer length, protocol.
  const words = v6 ? 4 : 1;
  s = addrSum(pkt.src, words) + addrSum(pkt.dst, words) + proto;
  s += (n >>> 16) + (n & 0xffff);
  s += sum16(b, q, n);
  return fold16(s) === 0xffff;
}

/** Layer-4 checksum verdicts (l4ChecksumCheck, partialChecksumCheck). */
export const CSUM_OK = 0;
export const CSUM_BAD = 1;
/**
 * The checksum field holds the folded pseudo-header sum (or its complement) instead of a
 * checksum: a packet captured on the host that sent it with checksum offload
 * (CHECKSUM_PARTIAL; the NIC or veth peer fills the checksum in later). The kernel never
 * verifies such packets, nor ones whose checksum the hardware verified.
 */
export const CSUM_PARTIAL = 2;

/** Offset of the checksum field in the TCP and UDP headers. */
const TCP_CHECK_OFF = 16;
const UDP_CHECK_OFF = 6;

/**
 * Is `stored` the pseudo-header partial sum that a sender with checksum offload leaves in the
 * field (the folded sum, or its complement as some drivers and stacks write it)?
 */
function isPartialSum(stored: number, pseudo: number): boolean {
  const f = fold16(pseudo);
  return stored === f || stored === (~f & 0xffff);
}

/**
 * Like l4ChecksumOk for TCP and UDP, but tells a wrong checksum (CSUM_BAD) from an offloaded
 * one (CSUM_PARTIAL). Other protocols: CSUM_OK or CSUM_BAD as l4ChecksumOk says (their
 * checksums are computed in software by the sender's stack, never offloaded).
 */
export function l4ChecksumCheck(pkt: Packet): number {
  if (l4ChecksumOk(pkt)) return CSUM_OK;
  const proto = pkt.l4proto;
  if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) return CSUM_BAD;
  const b = pkt.buf;
  const q = pkt.l4off;
  const n = pkt.l4len;
  const words = pkt.family === NFPROTO_IPV6 ? 4 : 1;
  const o = q + (proto === IPPROTO_TCP ? TCP_CHECK_OFF : UDP_CHECK_OFF);
  const stored = (b[o]! << 8) | b[o + 1]!;
  const pseudo = addrSum(pkt.src, words) + addrSum(pkt.dst, words) + proto + (n >>> 16) + (n & 0xffff);
  return isPartialSum(stored, pseudo) ? CSUM_PARTIAL : CSUM_BAD;
}

/**
 * A checksum with a coverage shorter than the packet (UDP-Lite, RFC 3828): the pseudo-header
 * carries `pseudoLen` and `pseudoProto`, the sum covers the first `cover` layer-4 bytes.
 * The kernel's nf_checksum_partial puts the protocol its caller passes into the pseudo-header;
 * for UDP-Lite that is IPPROTO_UDP (17), not 136, so callers pass what the kernel uses.
 * True when the packet was not captured whole (cannot verify).
 */
export function partialChecksumOk(pkt: Packet, cover: number, pseudoLen: number, pseudoProto: number): boolean {
  if (!pkt.complete) return true;
  const b = pkt.buf;
  const q = pkt.l4off;
  if (q < 0 || cover < 0 || cover > pkt.l4len || q + cover > b.length) return true;
  const v6 = pkt.family === NFPROTO_IPV6;
  if (!v6 && pkt.family !== NFPROTO_IPV4) return true;
  const words = v6 ? 4 : 1;
  let s = addrSum(pkt.src, words) + addrSum(pkt.dst, words) + pseudoProto;
  s += (pseudoLen >>> 16) + (pseudoLen & 0xffff);
  s += sum16(b, q, cover);
  return fold16(s) === 0xffff;
}

/**
 * partialChecksumOk with offload recognised (UDP-Lite): CSUM_OK, CSUM_BAD, or CSUM_PARTIAL when
 * the field holds the pseudo-header sum (with the datagram length and either IPPROTO_UDP, as
 * the kernel sums it, or `altProto`, as RFC 3828 says).
 */
export function partialChecksumCheck(pkt: Packet, cover: number, pseudoLen: number, pseudoProto: number, altProto: number): number {
  if (partialChecksumOk(pkt, cover, pseudoLen, pseudoProto)) return CSUM_OK;
  const b = pkt.buf;
  const o = pkt.l4off + UDP_CHECK_OFF;
  const stored = (b[o]! << 8) | b[o + 1]!;
  const words = pkt.family === NFPROTO_IPV6 ? 4 : 1;
  const base = addrSum(pkt.src, words) + addrSum(pkt.dst, words) + (pseudoLen >>> 16) + (pseudoLen & 0xffff);
  return isPartialSum(stored, base + pseudoProto) || isPartialSum(stored, base + altProto) ? CSUM_PARTIAL : CSUM_BAD;
}

// ---------------------------------------------------------------------------------------------
// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), the SCTP checksum (RFC 4960 appendix B).

const CRC32C_POLY = 0x82f63b78;
/** Byte-at-a-time lookup table, built once at module load. */
const CRC32C_TABLE = new Int32Array(256);
for (let i = 0; i < 256; i++) {
  let c = i;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ CRC32C_POLY : c >>> 1;
  CRC32C_TABLE[i] = c;
}

/**
 * CRC32c of buf[off, off + n) with the 4 bytes at buf[zeroOff, zeroOff + 4) read as zero (the
 * checksum field itself; pass -4 or less for none). Returns the final (inverted) value, uint32.
 */
export function crc32c(buf: Uint8Array, off: number, n: number, zeroOff: number): number {
  const end = off + n;
  // Three runs (before, inside, after the zeroed field) keep the byte loop branch-free.
  const z0 = Math.min(Math.max(zeroOff, off), end);
  const z1 = Math.min(Math.max(zeroOff + 4, off), end);
  let c = -1;
  for (let i = off; i < z0; i++) c = CRC32C_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  for (let i = z0; i < z1; i++) c = CRC32C_TABLE[c & 0xff]! ^ (c >>> 8);
  for (let i = z1; i < end; i++) c = CRC32C_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** Offset of the checksum in the SCTP common header. */
const SCTP_CHECKSUM_OFF = 8;
/** Bytes of the SCTP common header. */
const SCTP_COMMON_HDR = 12;

/**
 * Verifies the CRC32c of an SCTP packet (sctp_compute_cksum): over every layer-4 byte with the
 * checksum field as zero; the field holds the CRC least significant byte first. True when the
 * packet was not captured whole (cannot verify).
 */
export function sctpChecksumOk(pkt: Packet): boolean {
  if (!pkt.complete) return true;
  const b = pkt.buf;
  const q = pkt.l4off;
  const n = pkt.l4len;
  if (n < SCTP_COMMON_HDR) return false;
  if (q < 0 || q + n > b.length) return true;
  const o = q + SCTP_CHECKSUM_OFF;
  const stored = (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
  return crc32c(b, q, n, o) === stored;
}
