/**
 * UDP tracker (the kernel's nf_conntrack_proto_udp): unreplied and stream timeouts; ASSURED
 * once traffic was seen both ways; a replied flow still active 2 s after it began counts as a
 * stream and gets the longer timeout.
 */
import { E_PRIV, E_STATUS, IPS_ASSURED, IPS_CONFIRMED, IPS_SEEN_REPLY, UDP_STREAM_TS } from '../layout.js';
import { l4ChecksumOk } from '../packet/checksum.js';
import type { Packet } from '../packet/packet.js';
import { S_CHECKSUM, S_UDP_TIMEOUT, S_UDP_TIMEOUT_STREAM } from '../sysctl.js';
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
  if (ctx.i32[ctx.sys + S_CHECKSUM] !== 0 && !l4ChecksumOk(pkt)) return R_CHECKSUM;
  return null;
}

export function udpPacket(
  ctx: TrackerContext, e: number, _dir: number, pkt: Packet, res: ProtoResult,
): number {
  const i32 = ctx.i32;
  // Status bits change from several threads: read them atomically.
  const status = Atomics.load(i32, e + E_STATUS);
  if ((status & IPS_CONFIRMED) === 0) {
    // A fresh entry, private to this thread: remember when the flow began.
    i32[e + E_PRIV + UDP_STREAM_TS] = (pkt.now + 2000) | 0;
  }
  if (status & IPS_SEEN_REPLY) {
    let timeout = i32[ctx.sys + S_UDP_TIMEOUT]!;
    // Still active two seconds after it began: a stream.
    if (((pkt.now - i32[e + E_PRIV + UDP_STREAM_TS]!) | 0) > 0) timeout = i32[ctx.sys + S_UDP_TIMEOUT_STREAM]!;
    res.timeout = timeout;
    // Atomics.or: test-and-set, so exactly one thread reports ASSURED.
    if ((Atomics.or(i32, e + E_STATUS, IPS_ASSURED) & IPS_ASSURED) === 0) res.events |= EV_ASSURED;
  } else {
    res.timeout = i32[ctx.sys + S_UDP_TIMEOUT]!;
  }
  return PROTO_ACCEPT;
}
