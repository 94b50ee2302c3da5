/**
 * Tuples (the kernel's nf_conntrack_tuple): addresses, ports or ICMP id/type/code, as
 * TUPLE_WORDS words (layout.ts), plus the protocol word (family | l4proto << 8) kept per entry.
 */
import { T_DST, T_PORTS, T_SRC, TUPLE_WORDS } from '../table/layout.js';
import {
  IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, NFPROTO_IPV4, NFPROTO_IPV6, Packet,
} from '../input/packet/packet.js';
import { argError } from '../errors.js';

export function protoWord(family: number, l4proto: number): number {
  return family | (l4proto << 8);
}
export function familyOf(proto: number): number {
  return proto & 0xff;
}
export function l4protoOf(proto: number): number {
  return (proto >>> 8) & 0xff;
}

/** Protocols whose tuple carries ports (the kernel's nf_ct_port_tuple users). */
export function hasPorts(l4proto: number): boolean {
  return l4proto === IPPROTO_TCP || l4proto === IPPROTO_UDP || l4proto === 132 /* SCTP */ ||
    l4proto === 33 /* DCCP */ || l4proto === 136 /* UDP-Lite */;
}

// ICMP types that have an inverse (request <-> reply), plus one; 0 = not invertible.
const ICMP_INVERSE = new Uint8Array(256);
ICMP_INVERSE[8] = 0 + 1; ICMP_INVERSE[0] = 8 + 1; // echo
ICMP_INVERSE[13] = 14 + 1; ICMP_INVERSE[14] = 13 + 1; // timestamp
ICMP_INVERSE[15] = 16 + 1; ICMP_INVERSE[16] = 15 + 1; // info
ICMP_INVERSE[17] = 18 + 1; ICMP_INVERSE[18] = 17 + 1; // address mask
const ICMPV6_INVERSE = new Uint8Array(256);
ICMPV6_INVERSE[128] = 129 + 1; ICMPV6_INVERSE[129] = 128 + 1; // echo
ICMPV6_INVERSE[139] = 140 + 1; ICMPV6_INVERSE[140] = 139 + 1; // node information

/** Write the packet's tuple (outer header) into t[off..]. */
export function tupleFromPacket(pkt: Packet, t: Int32Array, off: number): void {
  for (let i = 0; i < 4; i++) {
    t[off + T_SRC + i] = pkt.src[i]!;
    t[off + T_DST + i] = pkt.dst[i]!;
  }
  t[off + T_PORTS] = ((pkt.sport & 0xffff) << 16) | (pkt.dport & 0xffff);
}

/** Write the tuple of an ICMP error's inner packet into t[off..]. */
export function tupleFromInner(pkt: Packet, t: Int32Array, off: number): void {
  for (let i = 0; i < 4; i++) {
    t[off + T_SRC + i] = pkt.innerSrc[i]!;
    t[off + T_DST + i] = pkt.innerDst[i]!;
  }
  t[off + T_PORTS] = ((pkt.innerSport & 0xffff) << 16) | (pkt.innerDport & 0xffff);
}

/**
 * Write the inverse of tuple a[aoff..] into b[boff..] (the reply direction's tuple).
 * Returns false when the tuple cannot be inverted (an ICMP type without a reply).
 */
export function invertTuple(
  a: Int32Array, aoff: number, b: Int32Array, boff: number, l4proto: number,
): boolean {
  const ports = a[aoff + T_PORTS]!;
  let inv: number;
  if (l4proto === IPPROTO_ICMP || l4proto === IPPROTO_ICMPV6) {
    const type = (ports >>> 8) & 0xff;
    const t = (l4proto === IPPROTO_ICMP ? ICMP_INVERSE : ICMPV6_INVERSE)[type]!;
    if (t === 0) return false;
    inv = (ports & ~0xff00) | ((t - 1) << 8); // same id and code, the reply's type
  } else {
    inv = ((ports & 0xffff) << 16) | ((ports >>> 16) & 0xffff);
  }
  for (let i = 0; i < 4; i++) {
    const s = a[aoff + T_SRC + i]!;
    b[boff + T_SRC + i] = a[aoff + T_DST + i]!;
    b[boff + T_DST + i] = s;
  }
  b[boff + T_PORTS] = inv;
  return true;
}

export function tupleEquals(a: Int32Array, aoff: number, b: Int32Array, boff: number): boolean {
  for (let i = 0; i < TUPLE_WORDS; i++) if (a[aoff + i] !== b[boff + i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Formatting (not on the packet path).

export function formatAddr(t: Int32Array, off: number, family: number): string {
  if (family === NFPROTO_IPV4) {
    const v = t[off]! >>> 0;
    return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
  }
  if (family !== NFPROTO_IPV6) return '?';
  const groups: number[] = [];
  for (let i = 0; i < 4; i++) {
    const w = t[off + i]! >>> 0;
    groups.push(w >>> 16, w & 0xffff);
  }
  // RFC 5952: compress the longest run (>= 2) of zero groups.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLen).join(':');
  return `${head}::${tail}`;
}

/** Parse a dotted IPv4 or an IPv6 address into 4 words (for tests, filters and tools). */
export function parseAddr(text: string, out: Int32Array, off: number): number {
  out.fill(0, off, off + 4);
  if (text.includes('.') && !text.includes(':')) {
    const p = text.split('.').map((x) => Number(x));
    if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) {
      throw argError(`bad IPv4 address "${text}"`);
    }
    out[off] = ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) | 0;
    return NFPROTO_IPV4;
  }
  const halves = text.split('::');
  if (halves.length > 2) throw argError(`bad IPv6 address "${text}"`);
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const fill = 8 - head.length - tail.length;
  if (fill < 0 || (halves.length === 1 && fill !== 0)) throw argError(`bad IPv6 address "${text}"`);
  const groups = [...head, ...new Array<string>(fill).fill('0'), ...tail].map((g) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw argError(`bad IPv6 address "${text}"`);
    return parseInt(g, 16);
  });
  for (let i = 0; i < 4; i++) out[off + i] = ((groups[2 * i]! << 16) | groups[2 * i + 1]!) | 0;
  return NFPROTO_IPV6;
}
