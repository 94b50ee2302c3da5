/**
 * UDP tracker (the kernel's nf_conntrack_proto_udp): unreplied and stream timeouts; ASSURED
 * once traffic was seen both ways; a replied flow still active 2 s after it began counts as a
 * stream and gets the longer timeout.
 */
import { E_PRIV, E_STATUS, IPS_ASSURED, IPS_CONFIRMED, IPS_SEEN_REPLY, UDP_STREAM_TS } from '../../table/layout.js';
import { CSUM_OK, CSUM_PARTIAL, l4ChecksumCheck, partialChecksumCheck } from '../../input/packet/checksum.js';
import { IPPROTO_UDP, type Packet } from '../../input/packet/packet.js';
import { S_CHECKSUM, S_CHECKSUM_OFFLOAD, S_UDP_TIMEOUT, S_UDP_TIMEOUT_STREAM } from '../../table/sysctl.js';
import { EV_ASSURED, PROTO_ACCEPT, type ProtoResult, type TrackerContext } from './l4proto.js';

const R_SHORT = 'short UDP packet';
const R_LENGTH = 'truncated/malformed UDP packet';
const R_CHECKSUM = 'bad UDP checksum';

/** Header checks, as the kernel's udp_error. */
export function udpError(ctx: TrackerContext, pkt: Packet): string | null {
  if (pkt.l4len < 8) return R_SHORT;
  const b = pkt.buf;
  const o = pkt.l4off;
  const len = (b[o + 4]! << 8) | b[o + 5]!;
  if (len > pkt.l4len || len < 8) return R_LENGTH;
  const check = (b[o + 6]! << 8) | b[o + 7]!;
  if (check === 0) return null; // no checksum (IPv4); IPv6's zero checksum fails l4ChecksumOk
  if (ctx.i32[ctx.sys + S_CHECKSUM] !== 0) {
    const k = l4ChecksumCheck(pkt);
    if (k !== CSUM_OK) {
      // An offloaded checksum (partial sum) passes unless strict (nf_conntrack_checksum_offload=0).
      if (k !== CSUM_PARTIAL || ctx.i32[ctx.sys + S_CHECKSUM_OFFLOAD] === 0) return R_CHECKSUM;
      pkt.csumPartial = true;
    }
  }
  return null;
}

export function udpPacket(
  ctx: TrackerContext, e: number, _dir: number, pkt: Packet, res: ProtoResult,
): number {
  const i32 = ctx.i32;
  // Status bits change from several threads (Atomics.or); read plainly: CONFIRMED was set before
  // the entry was published, and a racy read of SEEN_REPLY / ASSURED could as well have come just
  // before the or (ASSURED's report is decided by the test-and-set below).
  const status = i32[e + E_STATUS]!;
  if ((status & IPS_CONFIRMED) === 0) {
    // A fresh entry, private to this thread: remember when the flow began.
    i32[e + E_PRIV + UDP_STREAM_TS] = (pkt.now + 2000) | 0;
  }
  if (status & IPS_SEEN_REPLY) {
    // Replied, and still active two seconds after it began: a stream. Only a stream gets the
    // long timeout and ASSURED (a one-off request/response stays evictable).
    const stream = ((pkt.now - i32[e + E_PRIV + UDP_STREAM_TS]!) | 0) > 0;
    res.timeout = i32[ctx.sys + (stream ? S_UDP_TIMEOUT_STREAM : S_UDP_TIMEOUT)]!;
    // Atomics.or: test-and-set, so exactly one thread reports ASSURED.
    if (stream && (status & IPS_ASSURED) === 0 &&
      (Atomics.or(i32, e + E_STATUS, IPS_ASSURED) & IPS_ASSURED) === 0) {
      res.events |= EV_ASSURED;
    }
  } else {
    res.timeout = i32[ctx.sys + S_UDP_TIMEOUT]!;
  }
  return PROTO_ACCEPT;
}

// ---------------------------------------------------------------------------------------------
// UDP-Lite (RFC 3828; the kernel's nf_conntrack_proto_udp, udplite part): the length field is
// the checksum coverage (0 = the whole datagram), the checksum is mandatory.

export const IPPROTO_UDPLITE = 136;
const UDP_HDR = 8;

export const R_UDPLITE_SHORT = 'short UDP-Lite packet';
export const R_UDPLITE_COVERAGE = 'invalid UDP-Lite checksum coverage';
export const R_UDPLITE_NO_CHECKSUM = 'UDP-Lite checksum missing';
export const R_UDPLITE_CHECKSUM = 'bad UDP-Lite checksum';

/** Header checks, as the kernel's udplite_error. */
export function udpliteError(ctx: TrackerContext, pkt: Packet): string | null {
  if (pkt.l4len < UDP_HDR) return R_UDPLITE_SHORT;
  const b = pkt.buf;
  const o = pkt.l4off;
  // The datagram length as the IP header gives it (captured or not).
  const udplen = pkt.ipLen - (pkt.l4off - pkt.l3off);
  let cscov = (b[o + 4]! << 8) | b[o + 5]!;
  if (cscov === 0) cscov = udplen;
  else if (cscov < UDP_HDR || cscov > udplen) return R_UDPLITE_COVERAGE;
  if (b[o + 6] === 0 && b[o + 7] === 0) return R_UDPLITE_NO_CHECKSUM;
  // The kernel verifies with IPPROTO_UDP in the pseudo-header (what udplite_error passes to
  // nf_checksum_partial), not 136: a datagram summed as RFC 3828 says fails there.
  if (ctx.i32[ctx.sys + S_CHECKSUM] !== 0) {
    const k = partialChecksumCheck(pkt, cscov, udplen, IPPROTO_UDP, IPPROTO_UDPLITE);
    if (k !== CSUM_OK) {
      if (k !== CSUM_PARTIAL || ctx.i32[ctx.sys + S_CHECKSUM_OFFLOAD] === 0) return R_UDPLITE_CHECKSUM;
      pkt.csumPartial = true;
    }
  }
  return null;
}

/** nf_conntrack_udplite_packet: the stream timeout and ASSURED as soon as a reply was seen. */
export function udplitePacket(
  ctx: TrackerContext, e: number, _dir: number, _pkt: Packet, res: ProtoResult,
): number {
  const i32 = ctx.i32;
  // Status bits change from several threads: read them atomically.
  if (Atomics.load(i32, e + E_STATUS) & IPS_SEEN_REPLY) {
    res.timeout = i32[ctx.sys + S_UDP_TIMEOUT_STREAM]!;
    // Atomics.or: test-and-set, so exactly one thread reports ASSURED.
    if ((Atomics.or(i32, e + E_STATUS, IPS_ASSURED) & IPS_ASSURED) === 0) res.events |= EV_ASSURED;
  } else {
    res.timeout = i32[ctx.sys + S_UDP_TIMEOUT]!;
  }
  return PROTO_ACCEPT;
}
