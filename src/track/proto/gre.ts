/**
 * GRE tracker (the kernel's nf_conntrack_proto_gre): version-0 GRE is keyed like the generic
 * tracker (no ports, see the parser), version 1 (PPTP) by its call id. A connection gets the
 * unreplied timeout until a reply was seen, then the stream timeout and ASSURED. Both timeouts
 * are copied from the sysctls when the entry is created, as the kernel does.
 */
import { E_PRIV, E_STATUS, GRE_STREAM_TIMEOUT, GRE_TIMEOUT, IPS_ASSURED, IPS_CONFIRMED, IPS_SEEN_REPLY } from '../../table/layout.js';
import type { Packet } from '../../input/packet/packet.js';
import { S_GRE_TIMEOUT, S_GRE_TIMEOUT_STREAM } from '../../table/sysctl.js';
import { EV_ASSURED, PROTO_ACCEPT, type ProtoResult, type TrackerContext } from './l4proto.js';

export const IPPROTO_GRE = 47;

export function grePacket(
  ctx: TrackerContext, e: number, _dir: number, _pkt: Packet, res: ProtoResult,
): number {
  const i32 = ctx.i32;
  const p = e + E_PRIV;
  // Status bits change from several threads: read them atomically.
  const status = Atomics.load(i32, e + E_STATUS);
  if ((status & IPS_CONFIRMED) === 0) {
    // A fresh entry, private to this thread: plain stores, fixed from now on.
    i32[p + GRE_TIMEOUT] = i32[ctx.sys + S_GRE_TIMEOUT]!;
    i32[p + GRE_STREAM_TIMEOUT] = i32[ctx.sys + S_GRE_TIMEOUT_STREAM]!;
  }
  if (status & IPS_SEEN_REPLY) {
    res.timeout = i32[p + GRE_STREAM_TIMEOUT]!;
    // Atomics.or: test-and-set, so exactly one thread reports ASSURED.
    if ((Atomics.or(i32, e + E_STATUS, IPS_ASSURED) & IPS_ASSURED) === 0) res.events |= EV_ASSURED;
  } else {
    res.timeout = i32[p + GRE_TIMEOUT]!;
  }
  return PROTO_ACCEPT;
}
