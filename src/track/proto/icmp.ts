/**
 * ICMP and ICMPv6 trackers (the kernel's nf_conntrack_proto_icmp/icmpv6): request/reply pairs
 * are connections; errors are matched to the connection of the packet they quote (RELATED) by
 * the core; ICMPv6 neighbour discovery and MLD are left untracked.
 */
import { E_STATUS, E_TUPLE, IPS_CONFIRMED, T_PORTS } from '../../table/layout.js';
import { l4ChecksumOk } from '../../input/packet/checksum.js';
import { IPPROTO_ICMP, type Packet } from '../../input/packet/packet.js';
import { S_CHECKSUM, S_ICMP_TIMEOUT, S_ICMPV6_TIMEOUT } from '../../table/sysctl.js';
import { PROTO_ACCEPT, PROTO_INVALID, type ProtoResult, type TrackerContext } from './l4proto.js';

/** What the error stage decided. */
export const ICMP_CONTINUE = 0; // not an error message: track it as a connection
export const ICMP_INVALID = 1;
export const ICMP_UNTRACKED = 2;
export const ICMP_ERROR = 3; // an error message: the core looks up the quoted packet

const R_SHORT = 'short ICMP packet';
const R_CHECKSUM = 'bad ICMP checksum';
const R_TYPE = 'invalid ICMP type';
const R_SHORT6 = 'short ICMPv6 packet';
const R_CHECKSUM6 = 'ICMPv6 checksum failed';
const R_NEW = 'ICMP type cannot create a connection';
const R_NEW6 = 'ICMPv6 type cannot create a connection';

const ICMPV4_ERR = new Uint8Array(256);
for (const t of [3, 4, 5, 11, 12]) ICMPV4_ERR[t] = 1;
// ICMPv6 types the kernel never tracks: MLD (130-132, 143) and ND (133-136).
const ICMPV6_NOTRACK = new Uint8Array(256);
for (const t of [130, 131, 132, 133, 134, 135, 136, 143]) ICMPV6_NOTRACK[t] = 1;
// Types that may open a connection.
const ICMPV4_NEW = new Uint8Array(256);
for (const t of [8, 13, 15, 17]) ICMPV4_NEW[t] = 1;
const ICMPV6_NEW = new Uint8Array(256);
for (const t of [128, 139]) ICMPV6_NEW[t] = 1;

/** The kernel's icmp(v6)_error checks; an ICMP_INVALID decision leaves its reason in res. */
export function icmpError(ctx: TrackerContext, pkt: Packet, res: ProtoResult): number {
  const v4 = pkt.l4proto === IPPROTO_ICMP;
  if (pkt.l4len < 8) {
    res.reason = v4 ? R_SHORT : R_SHORT6;
    return ICMP_INVALID;
  }
  if (ctx.i32[ctx.sys + S_CHECKSUM] !== 0 && !l4ChecksumOk(pkt)) {
    res.reason = v4 ? R_CHECKSUM : R_CHECKSUM6;
    return ICMP_INVALID;
  }
  const type = pkt.icmpType;
  if (v4) {
    if (type > 18) {
      res.reason = R_TYPE;
      return ICMP_INVALID;
    }
    return ICMPV4_ERR[type] ? ICMP_ERROR : ICMP_CONTINUE;
  }
  if (ICMPV6_NOTRACK[type]) return ICMP_UNTRACKED;
  return type >= 128 ? ICMP_CONTINUE : ICMP_ERROR;
}

export function icmpPacket(
  ctx: TrackerContext, e: number, _dir: number, pkt: Packet, res: ProtoResult,
): number {
  const i32 = ctx.i32;
  const v4 = pkt.l4proto === IPPROTO_ICMP;
  // Status bits change from several threads: read them atomically.
  if ((Atomics.load(i32, e + E_STATUS) & IPS_CONFIRMED) === 0) {
    const type = (i32[e + E_TUPLE + T_PORTS]! >>> 8) & 0xff; // the original tuple's type
    if (!(v4 ? ICMPV4_NEW : ICMPV6_NEW)[type]) {
      res.reason = v4 ? R_NEW : R_NEW6;
      return PROTO_INVALID;
    }
  }
  res.timeout = i32[ctx.sys + (v4 ? S_ICMP_TIMEOUT : S_ICMPV6_TIMEOUT)]!;
  return PROTO_ACCEPT;
}
