/** Per-packet decisions (the kernel's ctstate and direction), reused across packets. */

export const CT_NEW = 0;
export const CT_ESTABLISHED = 1;
export const CT_RELATED = 2;
export const CT_INVALID = 3;
export const CT_UNTRACKED = 4;
export const CTSTATE_NAMES: readonly string[] = ['new', 'established', 'related', 'invalid', 'untracked'];
export const DIR_NAMES: readonly string[] = ['original', 'reply'];

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
  /** What NAT rewrote in the packet: nat/nat.ts NAT_REWROTE_* bits (source, destination, ICMP error's quote). */
  nat = 0;

  reset(): void {
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
