/** Per-packet decisions (the kernel's ctstate and direction), reused across packets. */

/** ctstate: the first packet of a connection (the kernel's IP_CT_NEW). */
export const CT_NEW = 0;
/** ctstate: the packet belongs to a connection that has seen traffic both ways. */
export const CT_ESTABLISHED = 1;
/** ctstate: an ICMP error about a known connection. */
export const CT_RELATED = 2;
/** ctstate: the packet could not be tracked (Verdict.reason says why). */
export const CT_INVALID = 3;
/** ctstate: not tracked (e.g. a non-first fragment). */
export const CT_UNTRACKED = 4;
/** A fragment held for reassembly (src/input/defrag): its datagram is decided when it completes. */
export const CT_HELD = 5;
/** ctstate names by CT_* value: 'new', 'established', 'related', 'invalid', 'untracked', 'held'. */
export const CTSTATE_NAMES: readonly string[] = ['new', 'established', 'related', 'invalid', 'untracked', 'held'];

/** What defragmentation did with the packet (Verdict.frag). */
export const FRAG_NONE = 0;
/** Held in its datagram's queue (state CT_HELD). */
export const FRAG_HELD = 1;
/** Completed its datagram: the verdict is the reassembled datagram's (for every fragment of it). */
export const FRAG_DONE = 2;
/** Dropped by reassembly (reason says why; with its queue when Conntrack.fragTags lists others). */
export const FRAG_DROP = 3;
/** Not reassembled (IPv6 fragment of a length not a multiple of 8): decided as it is. */
export const FRAG_PASS = 4;
/** Verdict.frag names by FRAG_* value, as --per-packet prints them ('' for none). */
export const FRAG_NAMES: readonly string[] = ['', 'held', 'done', 'dropped', 'unreassembled'];
export const DIR_NAMES: readonly string[] = ['original', 'reply'];

/** The decision for one packet (reused by the tracker): ctstate, direction, reason, the entry slot. */
export class Verdict {
  /** CT_* */
  state = CT_INVALID;
  /** 0 original, 1 reply, -1 none (invalid, untracked). */
  dir = -1;
  /** Why the packet is invalid or untracked; null otherwise. A constant string. */
  reason: string | null = null;
  /** Slot of the connection the packet belongs to, -1 if none (valid until the batch ends). */
  slot = -1;
  /** The packet would be dropped (table full, chain too long), as the kernel's NF_DROP. */
  drop = false;
  /** Protocol state after the packet (TCP state number), -1 when not TCP or no connection. */
  protoState = -1;
  /** FRAG_*: what defragmentation did with the packet. */
  frag = FRAG_NONE;
  /** What NAT rewrote in the packet: nat/nat.ts NAT_REWROTE_* bits (source, destination, ICMP error's quote). */
  nat = 0;

  reset(): void {
    this.frag = FRAG_NONE;
    this.state = CT_INVALID;
    this.dir = -1;
    this.reason = null;
    this.slot = -1;
    this.drop = false;
    this.protoState = -1;
    this.nat = 0;
  }

  get ctstate(): string {
    return CTSTATE_NAMES[this.state]!;
  }
  get direction(): string | null {
    return this.dir < 0 ? null : DIR_NAMES[this.dir]!;
  }
}
