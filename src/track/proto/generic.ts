/** Generic tracker for protocols without their own (the kernel's nf_conntrack_proto_generic). */
import type { Packet } from '../../input/packet/packet.js';
import { S_GENERIC_TIMEOUT } from '../../table/sysctl.js';
import { PROTO_ACCEPT, type ProtoResult, type TrackerContext } from './l4proto.js';

export function genericPacket(
  ctx: TrackerContext, _e: number, _dir: number, _pkt: Packet, res: ProtoResult,
): number {
  res.timeout = ctx.i32[ctx.sys + S_GENERIC_TIMEOUT]!;
  return PROTO_ACCEPT;
}
