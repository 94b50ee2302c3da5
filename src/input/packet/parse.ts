/**
 * Frame parser: fills a reused Packet from the bytes of one captured frame.
 *
 * Hot path rules: no allocation per frame (no subarray, no DataView, no strings; reasons are the
 * module-level constants below), bytes are read with index arithmetic, and nothing throws for any
 * input: reading past the end of a typed array yields undefined, but every read here is bounds
 * checked first anyway.
 *
 * Lengths: `pkt.l4len` is the layer-4 byte count bounded by both the IP length and the captured
 * bytes; TCP `dataLen` (and UDP's) come from the IP/UDP length fields, so a snaplen-truncated
 * capture still gives the true segment length. `pkt.complete` is false when the frame holds fewer
 * bytes than the IP length says, and for fragments (checksums cannot be verified then).
 */

import {
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  LINKTYPE_ETHERNET,
  LINKTYPE_IPV4,
  LINKTYPE_IPV6,
  LINKTYPE_LINUX_SLL,
  LINKTYPE_LINUX_SLL2,
  LINKTYPE_NFLOG,
  LINKTYPE_RAW,
  NFPROTO_IPV4,
  NFPROTO_IPV6,
  PKT_DIRTY_ICMP,
  PKT_DIRTY_TCP,
  TH_SYN,
  type Packet,
} from './packet.js';
import { ipv4HeaderChecksumOk } from './checksum.js';

// ---------------------------------------------------------------------------------------------
// Reasons (constant strings; compare by value or identity).
export const R_BAD_BOUNDS = 'frame offset/length out of range';
export const R_UNSUPPORTED_LINKTYPE = 'unsupported link type';
export const R_TRUNC_ETH = 'truncated Ethernet header';
export const R_TRUNC_VLAN = 'truncated VLAN tag';
export const R_TRUNC_SLL = 'truncated Linux cooked (SLL) header';
export const R_TRUNC_SLL2 = 'truncated Linux cooked (SLL2) header';
export const R_TRUNC_LOOP = 'truncated loopback header';
export const R_TRUNC_NFLOG = 'truncated NFLOG header';
export const R_BAD_NFLOG_TLV = 'bad NFLOG TLV length';
export const R_NFLOG_NO_PAYLOAD = 'NFLOG record without payload';
export const R_NOT_IP = 'not an IP packet';
export const R_TRUNC_IP = 'truncated IP header';
export const R_BAD_IP_VERSION = 'bad IP version';
export const R_TRUNC_IP4 = 'truncated IPv4 header';
export const R_BAD_IHL = 'bad IPv4 header length';
export const R_BAD_TOTLEN = 'bad IPv4 total length';
export const R_BAD_IP4_CSUM = 'bad IPv4 header checksum';
export const R_FRAGMENT = 'fragment';
export const R_TRUNC_IP6 = 'truncated IPv6 header';
export const R_TRUNC_IP6_EXT = 'truncated IPv6 extension header';
export const R_IP6_NO_NEXT = 'IPv6 no next header';
export const R_TRUNC_TCP = 'truncated TCP header';
export const R_BAD_DOFF = 'bad TCP data offset';
export const R_TRUNC_UDP = 'truncated UDP header';
export const R_BAD_UDP_LEN = 'bad UDP length';
export const R_TRUNC_ICMP = 'truncated ICMP header';
export const R_TRUNC_ICMP6 = 'truncated ICMPv6 header';
export const R_TRUNC_PORTS = 'layer-4 header too short for the ports';
export const R_GRE_NOT_PPP = 'GRE version 1 (PPTP) packet not carrying PPP';

// Inner-packet reasons of ICMP/ICMPv6 errors (pkt.innerReason).
export const RI_TRUNC_IP = 'truncated inner IP header';
export const RI_TRUNC_IP6_EXT = 'truncated inner IPv6 extension header';
export const RI_IP6_NO_NEXT = 'inner IPv6 no next header';
export const RI_FRAGMENT = 'inner packet is a non-first fragment';
export const RI_TRUNC_L4 = 'truncated inner layer-4 header';
export const RI_GRE_NOT_PPP = 'inner GRE version 1 (PPTP) packet not carrying PPP';

/** BSD loopback link types (4-byte address family header): host order / network order. */
export const LINKTYPE_NULL = 0;
export const LINKTYPE_LOOP = 108;
/** DLT_RAW numbers some systems write instead of LINKTYPE_RAW. */
export const DLT_RAW_12 = 12;
export const DLT_RAW_14 = 14;

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_8021Q = 0x8100;
const ETH_P_8021AD = 0x88a8;
const ETH_P_QINQ1 = 0x9100;
const ETH_P_QINQ2 = 0x9200;

const NFULA_TIMESTAMP = 3;
const NFULA_PAYLOAD = 9;
const NFULA_PREFIX = 10;

const IPPROTO_HOPOPTS = 0;
const IPPROTO_ROUTING = 43;
const IPPROTO_FRAGMENT = 44;
const IPPROTO_AH = 51;
const IPPROTO_NONE = 59;
const IPPROTO_DSTOPTS = 60;
// Layer-4 protocols whose tuple the kernel builds from their header besides TCP/UDP/ICMP
// (nf_ct_get_tuple). DCCP (33) is not among them: 6.x kernels no longer track it (generic).
const IPPROTO_GRE = 47;
const IPPROTO_SCTP = 132;
const IPPROTO_UDPLITE = 136;
/** Bytes the kernel reads for a port tuple (source and destination port). */
const PORTS_LEN = 4;
/** GRE: version bits of the flags word, PPTP's version, its PPP protocol, header bytes read. */
const GRE_VERSION_MASK = 7;
const GRE_VERSION_PPTP = 1;
const GRE_PROTO_PPP = 0x880b;
const GRE_BASE_LEN = 4;
const GRE_PPTP_LEN = 8;

// ---------------------------------------------------------------------------------------------
// Byte readers (big-endian).

function u16(b: Uint8Array, o: number): number {
  return (b[o] << 8) | b[o + 1];
}

function u32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

/** Sequence-number comparison: a is after b (mod 2^32). */
function after(a: number, b: number): boolean {
  return ((b - a) | 0) < 0;
}

// ---------------------------------------------------------------------------------------------

/**
 * Parses the frame buf[off, off + len) of the given pcap link type into pkt (reset first).
 * Never throws; on any problem pkt.reason names it (and pkt.notIp is set for non-IP frames).
 */
export function parseFrame(linktype: number, buf: Uint8Array, off: number, len: number, pkt: Packet): void {
  pkt.resetParsed();
  pkt.buf = buf;
  if (!(off >= 0) || !(len >= 0) || off > buf.length) {
    pkt.reason = R_BAD_BOUNDS;
    return;
  }
  let end = off + len;
  if (end > buf.length) end = buf.length;
  switch (linktype) {
    case LINKTYPE_ETHERNET: {
      if (end - off < 14) {
        pkt.reason = R_TRUNC_ETH;
        return;
      }
      etherType(u16(buf, off + 12), buf, off + 14, end, pkt);
      return;
    }
    case LINKTYPE_RAW:
    case DLT_RAW_12:
    case DLT_RAW_14:
      rawIp(buf, off, end, pkt);
      return;
    case LINKTYPE_IPV4:
      ipv4(buf, off, end, pkt);
      return;
    case LINKTYPE_IPV6:
      ipv6(buf, off, end, pkt);
      return;
    case LINKTYPE_LINUX_SLL:
      if (end - off < 16) {
        pkt.reason = R_TRUNC_SLL;
        return;
      }
      etherType(u16(buf, off + 14), buf, off + 16, end, pkt);
      return;
    case LINKTYPE_LINUX_SLL2:
      if (end - off < 20) {
        pkt.reason = R_TRUNC_SLL2;
        return;
      }
      etherType(u16(buf, off), buf, off + 20, end, pkt);
      return;
    case LINKTYPE_NFLOG:
      nflog(buf, off, end, pkt);
      return;
    case LINKTYPE_NULL:
    case LINKTYPE_LOOP: {
      if (end - off < 4) {
        pkt.reason = R_TRUNC_LOOP;
        return;
      }
      // The family is in the writer's byte order (NULL) or big-endian (LOOP); it is small, so
      // whichever end holds the non-zero byte tells.
      const fam = buf[off] !== 0 ? buf[off] | (buf[off + 1] << 8) : buf[off + 3] | (buf[off + 2] << 8);
      if (fam === 2) ipv4(buf, off + 4, end, pkt);
      else if (fam === 24 || fam === 28 || fam === 30 || fam === 10) ipv6(buf, off + 4, end, pkt);
      else {
        pkt.notIp = true;
        pkt.reason = R_NOT_IP;
      }
      return;
    }
    default:
      pkt.reason = R_UNSUPPORTED_LINKTYPE;
      return;
  }
}

function isVlan(et: number): boolean {
  return et === ETH_P_8021Q || et === ETH_P_8021AD || et === ETH_P_QINQ1 || et === ETH_P_QINQ2;
}

/**
 * `et` is the link header's ethertype and the payload starts at p. VLAN tags (802.1Q, 802.1ad
 * and the older QinQ ethertypes, possibly stacked: 2 bytes TCI then the next ethertype) are
 * skipped before dispatching on the final ethertype.
 */
function etherType(et: number, buf: Uint8Array, p: number, end: number, pkt: Packet): void {
  while (isVlan(et)) {
    if (end - p < 4) {
      pkt.reason = R_TRUNC_VLAN;
      return;
    }
    et = u16(buf, p + 2);
    p += 4;
  }
  if (et === ETH_P_IP) ipv4(buf, p, end, pkt);
  else if (et === ETH_P_IPV6) ipv6(buf, p, end, pkt);
  else {
    pkt.notIp = true;
    pkt.reason = R_NOT_IP;
  }
}

function rawIp(buf: Uint8Array, p: number, end: number, pkt: Packet): void {
  if (end - p < 1) {
    pkt.reason = R_TRUNC_IP;
    return;
  }
  const v = buf[p] >> 4;
  if (v === 4) ipv4(buf, p, end, pkt);
  else if (v === 6) ipv6(buf, p, end, pkt);
  else pkt.reason = R_BAD_IP_VERSION;
}

// ---------------------------------------------------------------------------------------------
// NFLOG

/**
 * Byte order of NFLOG TLV length/type fields. They are in the capturing host's order; the type of
 * a TLV is a small number (< 256 after masking the two flag bits), so the byte of the first TLV's
 * type field that is zero tells which end is which. Returns true for little-endian.
 */
function nflogLittleEndian(buf: Uint8Array, p: number, end: number): boolean {
  if (end - p < 4) return true;
  return !(buf[p + 2] === 0 && buf[p + 3] !== 0);
}

/** Module-level results of nflogFind (no allocation). */
let tlvStart = 0;
let tlvEnd = 0;

/**
 * Finds the first TLV of the given type in the NFLOG frame buf[off, end); on success sets
 * tlvStart/tlvEnd to its value (tlvEnd bounded by end) and returns 0; else returns -1 (not found)
 * or -2 (a TLV with a bad length stopped the walk).
 */
function nflogFind(buf: Uint8Array, off: number, end: number, type: number): number {
  let p = off + 4;
  const le = nflogLittleEndian(buf, p, end);
  while (end - p >= 4) {
    const tlen = le ? buf[p] | (buf[p + 1] << 8) : (buf[p] << 8) | buf[p + 1];
    const ttype = (le ? buf[p + 2] | (buf[p + 3] << 8) : (buf[p + 2] << 8) | buf[p + 3]) & 0x3fff;
    if (tlen < 4) return -2;
    if (ttype === type) {
      tlvStart = p + 4;
      tlvEnd = p + tlen > end ? end : p + tlen;
      return 0;
    }
    p += (tlen + 3) & ~3;
  }
  return -1;
}

function nflog(buf: Uint8Array, off: number, end: number, pkt: Packet): void {
  if (end - off < 4) {
    pkt.reason = R_TRUNC_NFLOG;
    return;
  }
  const r = nflogFind(buf, off, end, NFULA_PAYLOAD);
  if (r === -2) {
    pkt.reason = R_BAD_NFLOG_TLV;
    return;
  }
  if (r < 0) {
    pkt.reason = R_NFLOG_NO_PAYLOAD;
    return;
  }
  const fam = buf[off];
  if (fam === NFPROTO_IPV4) ipv4(buf, tlvStart, tlvEnd, pkt);
  else if (fam === NFPROTO_IPV6) ipv6(buf, tlvStart, tlvEnd, pkt);
  else rawIp(buf, tlvStart, tlvEnd, pkt);
}

const utf8 = new TextDecoder('utf-8', { fatal: false });

/** The NFULA_PREFIX string (log prefix) of an NFLOG frame, or null when absent or malformed. */
export function nflogPrefix(buf: Uint8Array, off: number, len: number): string | null {
  if (!(off >= 0) || !(len >= 4) || off > buf.length) return null;
  const end = Math.min(off + len, buf.length);
  if (nflogFind(buf, off, end, NFULA_PREFIX) !== 0) return null;
  let e = tlvStart;
  while (e < tlvEnd && buf[e] !== 0) e++;
  return utf8.decode(buf.subarray(tlvStart, e));
}

/**
 * The NFULA_TIMESTAMP of an NFLOG frame in ms since the epoch (with a fraction for the
 * microseconds), or null when absent or short. The value is two big-endian u64: seconds, µs.
 */
export function nflogTimestampMs(buf: Uint8Array, off: number, len: number): number | null {
  if (!(off >= 0) || !(len >= 4) || off > buf.length) return null;
  const end = Math.min(off + len, buf.length);
  if (nflogFind(buf, off, end, NFULA_TIMESTAMP) !== 0) return null;
  if (tlvEnd - tlvStart < 16) return null;
  const s = u32(buf, tlvStart) * 4294967296 + u32(buf, tlvStart + 4);
  const us = u32(buf, tlvStart + 8) * 4294967296 + u32(buf, tlvStart + 12);
  return s * 1000 + us / 1000;
}

// ---------------------------------------------------------------------------------------------
// IPv4

function ipv4(buf: Uint8Array, p: number, end: number, pkt: Packet): void {
  pkt.family = NFPROTO_IPV4;
  pkt.l3off = p;
  const cap = end - p;
  if (cap < 20) {
    pkt.reason = cap >= 1 && buf[p] >> 4 !== 4 ? R_BAD_IP_VERSION : R_TRUNC_IP4;
    return;
  }
  const vihl = buf[p];
  if (vihl >> 4 !== 4) {
    pkt.reason = R_BAD_IP_VERSION;
    return;
  }
  const ihl = (vihl & 15) << 2;
  if (ihl < 20) {
    pkt.reason = R_BAD_IHL;
    return;
  }
  if (ihl > cap) {
    pkt.reason = R_TRUNC_IP4;
    return;
  }
  const tot = u16(buf, p + 2);
  pkt.l4proto = buf[p + 9];
  pkt.src[0] = u32(buf, p + 12);
  pkt.dst[0] = u32(buf, p + 16);
  pkt.ipLen = tot;
  if (tot < ihl) {
    pkt.reason = R_BAD_TOTLEN;
    return;
  }
  const csumOk = ipv4HeaderChecksumOk(buf, p, ihl);
  let l4end = p + tot;
  if (l4end > end) {
    l4end = end;
    pkt.complete = false;
  }
  const q = p + ihl;
  pkt.l4off = q;
  pkt.l4len = l4end - q;
  const frag = u16(buf, p + 6);
  if ((frag & 0x3fff) !== 0) {
    pkt.fragment = true;
    pkt.complete = false;
    if ((frag & 0x1fff) !== 0) {
      pkt.reason = csumOk ? R_FRAGMENT : R_BAD_IP4_CSUM;
      return;
    }
  }
  layer4(buf, q, l4end, tot - ihl, pkt, false);
  if (!csumOk) pkt.reason = R_BAD_IP4_CSUM;
}

// ---------------------------------------------------------------------------------------------
// IPv6 extension headers

/** Final next-header value and fragment facts of the last skipExt6 call (no allocation). */
let extNext = 0;
let extFragment = false;
let extFragPayload = 0;

const EXT_TRUNC = -1;
const EXT_NO_NEXT = -2;
const EXT_FRAG = -3;

/**
 * Walks IPv6 extension headers from q (the first one's type is nh) as the kernel's
 * ipv6_skip_exthdr does: hop-by-hop, routing, fragment, destination options and AH. Returns the
 * offset of the upper-layer header with extNext set to its protocol, or EXT_TRUNC (a header's
 * first two bytes, or a fragment header's offset field, are not there), EXT_NO_NEXT (No Next
 * Header), EXT_FRAG (a fragment header with a non-zero offset: no upper-layer header here;
 * extNext is the fragment header's next header and extFragPayload the offset after it).
 * Like the kernel, a header's length is not checked against the packet: the returned offset may
 * lie beyond `end` (kernel quirk, docs/kernel-quirks.md); then protocols whose tuple needs
 * header bytes fail later, and others (generic) are tracked. ESP is the "upper layer".
 */
function skipExt6(buf: Uint8Array, q: number, end: number, nh: number): number {
  extFragment = false;
  for (;;) {
    if (nh === IPPROTO_NONE) {
      extNext = nh;
      return EXT_NO_NEXT;
    }
    if (nh !== IPPROTO_HOPOPTS && nh !== IPPROTO_ROUTING && nh !== IPPROTO_FRAGMENT && nh !== IPPROTO_AH && nh !== IPPROTO_DSTOPTS) {
      break;
    }
    if (end - q < 2) return EXT_TRUNC;
    let hlen: number;
    if (nh === IPPROTO_FRAGMENT) {
      if (end - q < 4) return EXT_TRUNC;
      const fo = u16(buf, q + 2);
      if ((fo & 0xfff9) !== 0) extFragment = true; // offset != 0 or M set
      if ((fo & 0xfff8) !== 0) {
        extNext = buf[q];
        extFragPayload = q + 8;
        return EXT_FRAG;
      }
      hlen = 8;
    } else if (nh === IPPROTO_AH) {
      hlen = (buf[q + 1] + 2) << 2;
    } else {
      hlen = (buf[q + 1] + 1) << 3;
    }
    nh = buf[q];
    q += hlen;
  }
  extNext = nh;
  return q;
}

function ipv6(buf: Uint8Array, p: number, end: number, pkt: Packet): void {
  pkt.family = NFPROTO_IPV6;
  pkt.l3off = p;
  const cap = end - p;
  if (cap < 40) {
    pkt.reason = cap >= 1 && buf[p] >> 4 !== 6 ? R_BAD_IP_VERSION : R_TRUNC_IP6;
    return;
  }
  if (buf[p] >> 4 !== 6) {
    pkt.reason = R_BAD_IP_VERSION;
    return;
  }
  const plen = u16(buf, p + 4);
  const src = pkt.src;
  const dst = pkt.dst;
  src[0] = u32(buf, p + 8);
  src[1] = u32(buf, p + 12);
  src[2] = u32(buf, p + 16);
  src[3] = u32(buf, p + 20);
  dst[0] = u32(buf, p + 24);
  dst[1] = u32(buf, p + 28);
  dst[2] = u32(buf, p + 32);
  dst[3] = u32(buf, p + 36);
  pkt.ipLen = 40 + plen;
  let ipEnd = p + 40 + plen;
  if (ipEnd > end) {
    ipEnd = end;
    pkt.complete = false;
  }
  const nh = buf[p + 6];
  pkt.l4proto = nh;
  pkt.l4off = p + 40;
  pkt.l4len = ipEnd - (p + 40);
  const q = skipExt6(buf, p + 40, ipEnd, nh);
  if (extFragment) {
    pkt.fragment = true;
    pkt.complete = false;
  }
  if (q < 0) {
    if (q === EXT_FRAG) {
      pkt.l4proto = extNext;
      pkt.l4off = extFragPayload;
      pkt.l4len = ipEnd - extFragPayload;
      pkt.reason = R_FRAGMENT;
    } else if (q === EXT_NO_NEXT) {
      pkt.l4proto = IPPROTO_NONE;
      pkt.reason = R_IP6_NO_NEXT;
    } else {
      pkt.reason = R_TRUNC_IP6_EXT;
    }
    return;
  }
  pkt.l4proto = extNext;
  // Headers that ran past the packet leave no layer-4 bytes (protocols that need some fail).
  const l4 = q < ipEnd ? q : ipEnd;
  pkt.l4off = l4;
  pkt.l4len = ipEnd - l4;
  layer4(buf, l4, ipEnd, p + 40 + plen - l4, pkt, true);
}

// ---------------------------------------------------------------------------------------------
// Layer 4

/**
 * Parses the layer-4 header at q. `end` bounds the captured bytes (already trimmed to the IP
 * length), `ipL4` is the layer-4 length the IP header claims.
 */
function layer4(buf: Uint8Array, q: number, end: number, ipL4: number, pkt: Packet, v6: boolean): void {
  const proto = pkt.l4proto;
  if (proto === IPPROTO_TCP) tcp(buf, q, end, ipL4, pkt);
  else if (proto === IPPROTO_UDP) udp(buf, q, end, ipL4, pkt);
  else if (proto === IPPROTO_ICMP && !v6) icmp4(buf, q, end, pkt);
  else if (proto === IPPROTO_ICMPV6 && v6) icmp6(buf, q, end, pkt);
  else if (proto === IPPROTO_SCTP || proto === IPPROTO_UDPLITE) {
    // Only the ports make the tuple; the trackers check the rest of the header.
    if (end - q < PORTS_LEN) {
      pkt.reason = R_TRUNC_PORTS;
      return;
    }
    pkt.sport = u16(buf, q);
    pkt.dport = u16(buf, q + 2);
  } else if (proto === IPPROTO_GRE) {
    const key = greKey(buf, q, end);
    if (key < 0) pkt.reason = R_GRE_NOT_PPP;
    else pkt.dport = key;
  }
}

/**
 * The tuple key of a GRE header (gre_pkt_to_tuple): 0 unless it is a version-1 (PPTP) header
 * long enough to hold the call id, which is then the key; -1 when such a header does not carry
 * PPP (the kernel finds no tuple).
 */
function greKey(buf: Uint8Array, q: number, end: number): number {
  if (end - q < GRE_BASE_LEN || (buf[q + 1] & GRE_VERSION_MASK) !== GRE_VERSION_PPTP) return 0;
  if (end - q < GRE_PPTP_LEN) return 0;
  if (u16(buf, q + 2) !== GRE_PROTO_PPP) return -1;
  return u16(buf, q + 6);
}

function tcp(buf: Uint8Array, q: number, end: number, ipL4: number, pkt: Packet): void {
  pkt.dirty |= PKT_DIRTY_TCP; // resetParsed clears the TCP fields before the next parse
  const cap = end - q;
  if (cap >= 4) {
    pkt.sport = u16(buf, q);
    pkt.dport = u16(buf, q + 2);
  }
  if (cap < 20) {
    pkt.reason = R_TRUNC_TCP;
    return;
  }
  pkt.seq = u32(buf, q + 4);
  pkt.ack = u32(buf, q + 8);
  const doff = (buf[q + 12] >> 4) << 2;
  const flags = buf[q + 13];
  pkt.doff = doff;
  pkt.tcpFlags = flags;
  pkt.window = u16(buf, q + 14);
  if (doff < 20 || doff > ipL4) {
    pkt.reason = R_BAD_DOFF;
    return;
  }
  if (doff > cap) {
    pkt.reason = R_TRUNC_TCP;
    return;
  }
  pkt.dataLen = ipL4 - doff;
  // Options: EOL ends the list, NOP is one byte, anything else is kind, length (>= 2, within
  // the list); a bad length stops the walk. Window scale and SACK-permitted only count on SYN;
  // the first well-formed SACK option gives sackMax.
  const syn = (flags & TH_SYN) !== 0;
  let o = q + 20;
  const oend = q + doff;
  while (o < oend) {
    const kind = buf[o];
    if (kind === 0) break;
    if (kind === 1) {
      o++;
      continue;
    }
    if (oend - o < 2) break;
    const size = buf[o + 1];
    if (size < 2 || size > oend - o) break;
    if (kind === 3) {
      if (size === 3 && syn) pkt.wscale = buf[o + 2] > 14 ? 14 : buf[o + 2];
    } else if (kind === 4) {
      if (size === 2 && syn) pkt.sackPerm = true;
    } else if (kind === 5) {
      if (!pkt.hasSack && size >= 10 && ((size - 2) & 7) === 0) {
        // Start from the ACK and move past each right edge in turn, as the kernel's tcp_sack
        // does: with wrapping comparisons the order matters.
        let max = pkt.ack >>> 0;
        for (let b = o + 6; b < o + size; b += 8) {
          const right = u32(buf, b);
          if (after(right, max)) max = right;
        }
        pkt.sackMax = max;
        pkt.hasSack = true;
      }
    }
    o += size;
  }
}

function udp(buf: Uint8Array, q: number, end: number, ipL4: number, pkt: Packet): void {
  const cap = end - q;
  if (cap >= 4) {
    pkt.sport = u16(buf, q);
    pkt.dport = u16(buf, q + 2);
  }
  if (cap < 8) {
    pkt.reason = R_TRUNC_UDP;
    return;
  }
  const ulen = u16(buf, q + 4);
  if (ulen < 8 || ulen > ipL4) {
    pkt.reason = R_BAD_UDP_LEN;
    return;
  }
  pkt.dataLen = ulen - 8;
}

/** ICMP types that carry the packet that caused them. */
function icmp4IsError(t: number): boolean {
  return t === 3 || t === 4 || t === 5 || t === 11 || t === 12;
}

function icmp4(buf: Uint8Array, q: number, end: number, pkt: Packet): void {
  pkt.dirty |= PKT_DIRTY_ICMP; // resetParsed clears the ICMP and inner fields before the next parse
  const cap = end - q;
  if (cap >= 2) {
    pkt.icmpType = buf[q];
    pkt.icmpCode = buf[q + 1];
  }
  if (cap < 8) {
    pkt.reason = R_TRUNC_ICMP;
    return;
  }
  const type = buf[q];
  pkt.dport = (type << 8) | buf[q + 1];
  if (icmp4IsError(type)) {
    pkt.icmpError = true;
    inner4(buf, q + 8, end, pkt);
  } else {
    const id = u16(buf, q + 4);
    pkt.icmpId = id;
    pkt.sport = id;
  }
}

function icmp6(buf: Uint8Array, q: number, end: number, pkt: Packet): void {
  pkt.dirty |= PKT_DIRTY_ICMP; // resetParsed clears the ICMP and inner fields before the next parse
  const cap = end - q;
  if (cap >= 2) {
    pkt.icmpType = buf[q];
    pkt.icmpCode = buf[q + 1];
  }
  if (cap < 8) {
    pkt.reason = R_TRUNC_ICMP6;
    return;
  }
  const type = buf[q];
  pkt.dport = (type << 8) | buf[q + 1];
  if (type < 128) {
    // Types 0..127 are error messages (1..4 assigned) and carry the offending packet.
    pkt.icmpError = true;
    inner6(buf, q + 8, end, pkt);
  } else {
    const id = u16(buf, q + 4);
    pkt.icmpId = id;
    pkt.sport = id;
  }
}

// ---------------------------------------------------------------------------------------------
// Inner packets of ICMP errors: header complete, then the layer-4 bytes the tuple needs.

function inner4(buf: Uint8Array, p: number, end: number, pkt: Packet): void {
  pkt.innerFamily = NFPROTO_IPV4;
  const cap = end - p;
  // The quoted header is read as IPv4 because the error is (ipv4_get_l4proto): neither its
  // version nor a header length under 20 is checked (docs/kernel-quirks.md).
  if (cap < 20) {
    pkt.innerReason = RI_TRUNC_IP;
    return;
  }
  const ihl = (buf[p] & 15) << 2;
  pkt.innerProto = buf[p + 9];
  pkt.innerSrc[0] = u32(buf, p + 12);
  pkt.innerDst[0] = u32(buf, p + 16);
  if ((u16(buf, p + 6) & 0x1fff) !== 0) {
    pkt.innerReason = RI_FRAGMENT;
    return;
  }
  if (ihl > cap) {
    pkt.innerReason = RI_TRUNC_IP;
    return;
  }
  innerL4(buf, p + ihl, end, pkt, IPPROTO_ICMP);
}

function inner6(buf: Uint8Array, p: number, end: number, pkt: Packet): void {
  pkt.innerFamily = NFPROTO_IPV6;
  const cap = end - p;
  // Read as IPv6 because the error is (ipv6_get_l4proto): the version is not checked.
  if (cap < 40) {
    pkt.innerReason = RI_TRUNC_IP;
    return;
  }
  const s = pkt.innerSrc;
  const d = pkt.innerDst;
  s[0] = u32(buf, p + 8);
  s[1] = u32(buf, p + 12);
  s[2] = u32(buf, p + 16);
  s[3] = u32(buf, p + 20);
  d[0] = u32(buf, p + 24);
  d[1] = u32(buf, p + 28);
  d[2] = u32(buf, p + 32);
  d[3] = u32(buf, p + 36);
  const nh = buf[p + 6];
  pkt.innerProto = nh;
  const q = skipExt6(buf, p + 40, end, nh);
  if (q < 0) {
    if (q === EXT_FRAG) {
      pkt.innerProto = extNext;
      pkt.innerReason = RI_FRAGMENT;
    } else if (q === EXT_NO_NEXT) {
      pkt.innerReason = RI_IP6_NO_NEXT;
    } else {
      pkt.innerReason = RI_TRUNC_IP6_EXT;
    }
    return;
  }
  pkt.innerProto = extNext;
  innerL4(buf, q, end, pkt, IPPROTO_ICMPV6);
}

function innerL4(buf: Uint8Array, q: number, end: number, pkt: Packet, icmpProto: number): void {
  const proto = pkt.innerProto;
  pkt.innerL4off = q;
  // The kernel reads only what the quoted packet's tuple needs: the ports (4 bytes) of
  // TCP/UDP/SCTP/UDP-Lite, the 8-byte ICMP header, GRE's key; nothing for other protocols.
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP || proto === IPPROTO_UDPLITE) {
    if (end - q < PORTS_LEN) {
      pkt.innerReason = RI_TRUNC_L4;
      return;
    }
    pkt.innerSport = u16(buf, q);
    pkt.innerDport = u16(buf, q + 2);
  } else if (proto === icmpProto) {
    if (end - q < 8) {
      pkt.innerReason = RI_TRUNC_L4;
      return;
    }
    pkt.innerSport = u16(buf, q + 4);
    pkt.innerDport = (buf[q] << 8) | buf[q + 1];
  } else if (proto === IPPROTO_GRE) {
    const key = greKey(buf, q, end);
    if (key < 0) pkt.innerReason = RI_GRE_NOT_PPP;
    else pkt.innerDport = key;
  }
}
