/**
 * The contract between the core (nf_conntrack_in's equivalent, src/track/core.ts) and the per-protocol
 * trackers (src/track/proto/*.ts), like the kernel's nf_conntrack_l4proto.
 *
 * A tracker works on one entry of the shared table: `i32`/`u32` are views of the whole buffer,
 * `e` is the entry's first word (see layout.ts: E_*, its private words start at e + E_PRIV),
 * `sys` is the first sysctl word (read a setting as `i32[sys + S_...]`, see sysctl.ts).
 *
 * Call order for a packet, per protocol:
 *   1. error(pkt):               header sanity and checksum; a reason makes the packet invalid.
 *   2. new(e, pkt) for a packet with no connection: initialise the private words of a fresh
 *      (not yet confirmed, private to this thread) entry; a reason means "not a valid first
 *      packet" and the entry is discarded.
 *   3. packet(e, dir, pkt, res): update state for a packet of that connection. For an existing
 *      TCP connection the caller holds the bucket lock of the entry's original tuple.
 */

/**
 * May a new connection that lost a confirm race join the winner (the kernel's l4proto
 * allow_clash: UDP, UDP-Lite, ICMP, ICMPv6, DCCP)? Others (TCP, SCTP, GRE, unknown protocols)
 * are dropped with insert_failed, NAT or not. (Where a NAT'd winner's mapping differs, the kernel
 * inserts the loser for its reply direction only, for a second, nf_ct_resolve_clash_harder; we
 * join the winner: the packet takes the winner's mapping.)
 */
export function allowClash(l4: number): boolean {
  return l4 === 17 || l4 === 136 || l4 === 1 || l4 === 58 || l4 === 33;
}

/** Result of a tracker's packet() call. */
export const PROTO_ACCEPT = 0;
export const PROTO_INVALID = 1;
/** Kill the connection and handle the packet again as the first of a new one (TCP reopen). */
export const PROTO_REPEAT = 2;

/** Event bits a tracker reports (the kernel's IPCT_* that matter to `conntrack -E`). */
export const EV_NEW = 1 << 0;
export const EV_PROTOINFO = 1 << 1; // TCP state changed
export const EV_ASSURED = 1 << 2; // ASSURED was set now
export const EV_REPLY = 1 << 3; // SEEN_REPLY was set now
export const EV_DESTROY = 1 << 4;

export interface TrackerContext {
  i32: Int32Array;
  u32: Uint32Array;
  /** First sysctl word. */
  sys: number;
}

/** Filled in by packet(); reused across packets. */
export class ProtoResult {
  /** Why the packet is invalid (PROTO_INVALID), a constant string. */
  reason: string | null = null;
  /** New timeout in seconds to apply from now (-1 = leave the timeout unchanged). */
  timeout = -1;
  /** EV_* bits raised by this packet. */
  events = 0;
  reset(): void {
    this.reason = null;
    this.timeout = -1;
    this.events = 0;
  }
}
