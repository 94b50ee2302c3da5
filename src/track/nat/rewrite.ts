/**
 * Packet rewriting in place (the kernel's nf_nat_proto.c): addresses and ports or ICMP ids,
 * with incremental checksum updates (checksum.ts) for the IPv4 header, TCP, UDP (a zero UDP
 * checksum stays zero; a result of zero is sent as 0xffff), UDP-Lite, DCCP, ICMP (echo ids) and
 * ICMPv6 (pseudo-header); SCTP's CRC32c is recomputed. ICMP errors about a NAT'd connection have
 * their quoted packet and their outer header translated (nf_nat_icmp_reply_translation).
 */
import { crc32c } from '../../input/packet/checksum.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, NFPROTO_IPV4, type Packet } from '../../input/packet/packet.js';
import { T_DST, T_PORTS, T_SRC } from '../../table/layout.js';
import { csumReplace2, csumReplace4, foldNot, rd16, sumBytes, wr16 } from './checksum.js';
import { MANIP_SRC } from './unique.js';

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_DCCP = 33;
const IPPROTO_SCTP = 132;
const IPPROTO_UDPLITE = 136;

/** ICMPv4 types that carry an id (echo, timestamp, info, address mask: the kernel's list). */
function icmp4HasId(type: number): boolean {
  return type === 0 || type === 8 || type === 13 || type === 14 || type === 15 || type === 16 || type === 17 || type === 18;
}

/** Read the 4 address words at byte offset `off` (IPv4: 1 word) into `out`. */
function readAddr(b: Uint8Array, off: number, words: number, out: Int32Array): void {
  for (let i = 0; i < words; i++) {
    const p = off + 4 * i;
    out[i] = (b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!;
  }
}
function writeAddr(b: Uint8Array, off: number, words: number, t: Int32Array, to: number): void {
  for (let i = 0; i < words; i++) {
    const v = t[to + i]!;
    const p = off + 4 * i;
    b[p] = v >>> 24; b[p + 1] = (v >>> 16) & 0xff; b[p + 2] = (v >>> 8) & 0xff; b[p + 3] = v & 0xff;
  }
}

const oldAddr = new Int32Array(4);

/** Patch checksum at csumOff for the pseudo-header address change old -> t[to..]. */
function pseudoUpdate(b: Uint8Array, csumOff: number, words: number, t: Int32Array, to: number): void {
  for (let i = 0; i < words; i++) csumReplace4(b, csumOff, oldAddr[i]!, t[to + i]!);
}

/**
 * Manipulate one IP packet's source or destination (nf_nat_ipv{4,6}_manip_pkt): the layer-4
 * part first (its pseudo-header update needs the old address), then the address.
 * `l3` / `l4` are byte offsets of the IP and layer-4 headers, `end` the end of the bytes present
 * (an ICMP error's quote ends early: checksums beyond it are left, as the kernel does),
 * `target` the tuple to look like, `complete` whether the whole layer-4 payload is present.
 */
export function manipIp(
  b: Uint8Array, family: number, l3: number, l4: number, end: number, l4proto: number,
  target: Int32Array, to: number, manip: number, complete: boolean,
): void {
  const v4 = family === NFPROTO_IPV4;
  const words = v4 ? 1 : 4;
  const aoff = v4 ? l3 + (manip === MANIP_SRC ? 12 : 16) : l3 + (manip === MANIP_SRC ? 8 : 24);
  const ta = to + (manip === MANIP_SRC ? T_SRC : T_DST);
  readAddr(b, aoff, words, oldAddr);
  const ports = target[to + T_PORTS]!;
  const newPort = manip === MANIP_SRC ? ports >>> 16 : ports & 0xffff;
  const poff = l4 + (manip === MANIP_SRC ? 0 : 2);
  if (l4proto === IPPROTO_TCP) {
    if (end - l4 >= 4) {
      const old = rd16(b, poff);
      wr16(b, poff, newPort);
      if (end - l4 >= 20) {
        pseudoUpdate(b, l4 + 16, words, target, ta);
        csumReplace2(b, l4 + 16, old, newPort);
      }
    }
  } else if (l4proto === IPPROTO_UDP || l4proto === IPPROTO_UDPLITE) {
    if (end - l4 >= 8) {
      const old = rd16(b, poff);
      // UDP over IPv4 with checksum 0 has none; UDP-Lite always has one.
      if (l4proto === IPPROTO_UDPLITE || rd16(b, l4 + 6) !== 0) {
        pseudoUpdate(b, l4 + 6, words, target, ta);
        csumReplace2(b, l4 + 6, old, newPort);
        if (rd16(b, l4 + 6) === 0) wr16(b, l4 + 6, 0xffff); // CSUM_MANGLED_0
      }
      wr16(b, poff, newPort);
    }
  } else if (l4proto === IPPROTO_DCCP) {
    if (end - l4 >= 4) {
      const old = rd16(b, poff);
      wr16(b, poff, newPort);
      if (end - l4 >= 16) {
        pseudoUpdate(b, l4 + 6, words, target, ta);
        csumReplace2(b, l4 + 6, old, newPort);
      }
    }
  } else if (l4proto === IPPROTO_SCTP) {
    if (end - l4 >= 4) {
      wr16(b, poff, newPort);
      // CRC32c over the whole packet: only when all of it is here (the kernel's hdrsize check).
      if (end - l4 >= 12 && complete) {
        const c = crc32c(b, l4, end - l4, l4 + 8);
        // Stored little-endian, as sctp_compute_cksum leaves it.
        b[l4 + 8] = c & 0xff; b[l4 + 9] = (c >>> 8) & 0xff; b[l4 + 10] = (c >>> 16) & 0xff; b[l4 + 11] = c >>> 24;
      }
    }
  } else if (l4proto === IPPROTO_ICMP) {
    if (end - l4 >= 8 && icmp4HasId(b[l4]!)) {
      const id = ports >>> 16; // src.u.icmp.id, for either manip
      const old = rd16(b, l4 + 4);
      csumReplace2(b, l4 + 2, old, id);
      wr16(b, l4 + 4, id);
    }
  } else if (l4proto === IPPROTO_ICMPV6) {
    if (end - l4 >= 8) {
      pseudoUpdate(b, l4 + 2, words, target, ta);
      const type = b[l4]!;
      if (type === 128 || type === 129) {
        const id = ports >>> 16;
        const old = rd16(b, l4 + 4);
        csumReplace2(b, l4 + 2, old, id);
        wr16(b, l4 + 4, id);
      }
    }
  }
  // The address, and the IPv4 header checksum.
  if (v4) csumReplace4(b, l3 + 10, oldAddr[0]!, target[ta]!);
  writeAddr(b, aoff, words, target, ta);
}

/**
 * Translate an ICMP / ICMPv6 error about a NAT'd connection, for one manip (one hook): the
 * quoted packet gets the opposite manip toward `inner` (the other direction's tuple as is), the
 * ICMP checksum is recomputed (over the bytes present: the kernel sums the whole message, and a
 * truncated capture gets the same result incrementally), then the outer header gets `manip`
 * toward `outer` (the other direction's tuple inverted).
 */
export function translateIcmpError(
  pkt: Packet, inner: Int32Array, innerOff: number, outer: Int32Array, outerOff: number, manip: number,
): void {
  const b = pkt.buf;
  const l4 = pkt.l4off;
  const end = l4 + pkt.l4len;
  const v4 = pkt.family === NFPROTO_IPV4;
  const il3 = l4 + 8;
  const before = pkt.complete ? 0 : sumBytes(b, l4, end - l4);
  manipIp(b, pkt.family, il3, pkt.innerL4off, end, pkt.innerProto, inner, innerOff, manip === MANIP_SRC ? 1 : 0, false);
  if (pkt.complete) {
    // Full recompute, as the kernel does when the checksum is not offloaded.
    wr16(b, l4 + 2, 0);
    let acc = 0;
    if (!v4) {
      acc = sumBytes(b, pkt.l3off + 8, 32, acc); // pseudo-header: the addresses before the outer manip
      acc += (end - l4) >>> 16;
      acc += (end - l4) & 0xffff;
      acc += IPPROTO_ICMPV6;
    }
    acc = sumBytes(b, l4, end - l4, acc);
    wr16(b, l4 + 2, foldNot(acc));
  } else {
    // Same result from the difference of the sums of the bytes present.
    const after = sumBytes(b, l4, end - l4);
    let acc = (~rd16(b, l4 + 2)) & 0xffff;
    acc += (~before) & 0xffff;
    acc += after;
    wr16(b, l4 + 2, foldNot(acc));
  }
  manipIp(b, pkt.family, pkt.l3off, l4, end, v4 ? IPPROTO_ICMP : IPPROTO_ICMPV6, outer, outerOff, manip, pkt.complete);
}
