/**
 * The per-packet work of a live NFQUEUE worker, apart from its socket: parse the packet message,
 * decide the packet on the shared table, compare with the kernel (shadow) or apply the policy
 * (enforce), and queue the verdict. One per worker thread; allocates nothing per packet (but for
 * a mismatch report).
 */
import {
  IP_CT_ESTABLISHED_REPLY, IP_CT_NEW, IP_CT_RELATED, IP_CT_RELATED_REPLY, NF_ACCEPT, NF_DROP, NfqPacket,
  parsePacketMessage, type VerdictBatcher,
} from './nfqueue.js';
import { SHADOW_MAGIC, SHADOW_MAGIC_MASK } from './control.js';
import type { LiveMode } from './live.js';
import { ACTION_ACCEPT, Policy, type PolicySpec } from '../../ops/policy.js';
import { KILL_DELETE } from '../../table/chains.js';
import { E_MARK } from '../../table/layout.js';
import type { Conntrack } from '../../track/core.js';
import { CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_RELATED, CT_UNTRACKED, CTSTATE_NAMES, DIR_NAMES } from '../../track/verdict.js';
import { LINKTYPE_RAW, NFPROTO_IPV4, type Packet } from '../packet/packet.js';

export interface DeciderOptions {
  mode: LiveMode;
  policy?: PolicySpec;
  zone?: number;
  queue?: number;
  /** The kernel attaches NFQA_CT (shadow mode with the netlink glue). */
  kernelCt?: boolean;
  /** Where mismatch lines go (shadow mode). */
  report?: (line: string) => void;
}

function formatAddr(w: Uint32Array, family: number): string {
  if (family === NFPROTO_IPV4) return [w[0]! >>> 24, (w[0]! >>> 16) & 255, (w[0]! >>> 8) & 255, w[0]! & 255].join('.');
  const g: string[] = [];
  for (let i = 0; i < 4; i++) g.push((w[i]! >>> 16).toString(16), (w[i]! & 0xffff).toString(16));
  return g.join(':').replace(/\b(?:0:){2,}/, ':');
}

/** One line describing a packet (for mismatch reports; not on the hot path). */
export function describePacket(pkt: Packet, len: number): string {
  if (pkt.family === 0) return `non-IP, ${len} bytes`;
  const proto = ({ 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp' } as Record<number, string>)[pkt.l4proto] ?? `proto ${pkt.l4proto}`;
  const ports = pkt.l4proto === 6 || pkt.l4proto === 17 || pkt.l4proto === 132;
  let s = `${proto} ${formatAddr(pkt.src, pkt.family)}${ports ? `:${pkt.sport}` : ''} > ${formatAddr(pkt.dst, pkt.family)}${ports ? `:${pkt.dport}` : ''}`;
  if (pkt.l4proto === 6) {
    const f = pkt.tcpFlags;
    s += ` [${['F', 'S', 'R', 'P', '.', 'U', 'E', 'C'].filter((_, i) => f & (1 << i)).join('')}] seq ${pkt.seq >>> 0} ack ${pkt.ack >>> 0} win ${pkt.window} len ${pkt.dataLen}`;
  } else if (pkt.l4proto === 1 || pkt.l4proto === 58) {
    s += ` type ${pkt.icmpType} code ${pkt.icmpCode}`;
  }
  return `${s} (${len} bytes)`;
}

export class LiveDecider {
  // Counters (single writer: the owning thread).
  packets = 0;
  accepted = 0;
  dropped = 0;
  cNew = 0;
  cEstablished = 0;
  cRelated = 0;
  cInvalid = 0;
  cUntracked = 0;
  checked = 0;
  mismatches = 0;
  noKernelState = 0;
  bytes = 0;
  /** Test hook: call onCrash() before the packet after this many more (-1: never). */
  crashAfter = -1;
  onCrash: () => void = () => {};

  readonly ct: Conntrack;
  readonly policy: Policy;
  private readonly p = new NfqPacket();
  private readonly shadow: boolean;
  private readonly acceptAll: boolean;
  private readonly kernelCt: boolean;
  private readonly zone: number;
  private readonly queue: number;
  private readonly report: (line: string) => void;

  constructor(ct: Conntrack, o: DeciderOptions) {
    this.ct = ct;
    this.policy = new Policy(o.policy ?? {});
    this.shadow = o.mode === 'shadow';
    this.acceptAll = o.mode === 'accept';
    this.kernelCt = o.kernelCt === true;
    this.zone = o.zone ?? 0;
    this.queue = o.queue ?? 0;
    this.report = o.report ?? (() => {});
  }

  /**
   * Handle the netlink message at `off` of `buf`: for a packet, decide it and add its verdict to
   * `vb`. Must be called inside a table batch. Returns the message length (0: none complete).
   */
  message(buf: Uint8Array, dv: DataView, off: number, end: number, now: number, vb: VerdictBatcher): number {
    const p = this.p;
    const mlen = parsePacketMessage(buf, dv, off, end, p);
    if (mlen === 0 || p.id < 0) return mlen;
    if (this.crashAfter >= 0 && this.crashAfter-- === 0) this.onCrash();
    this.packets++;
    this.bytes += p.capLen;
    if (this.acceptAll) {
      // The queue's own ceiling (bench): no tracking, accept everything.
      this.accepted++;
      vb.add(p.id, NF_ACCEPT, -1);
      return mlen;
    }
    const ct = this.ct;
    const v = ct.frame(LINKTYPE_RAW, buf, p.payloadOff, p.payloadLen, now, this.zone);
    switch (v.state) {
      case CT_NEW: this.cNew++; break;
      case CT_ESTABLISHED: this.cEstablished++; break;
      case CT_RELATED: this.cRelated++; break;
      case CT_INVALID: this.cInvalid++; break;
      default: this.cUntracked++; break;
    }
    if (this.shadow) {
      // The kernel keeps deciding: accept, and compare its state with ours.
      let kState = -1, kDir = -1;
      if (p.ctInfo >= 0) {
        const ci = p.ctInfo;
        kState = ci === IP_CT_NEW ? CT_NEW : ci === IP_CT_RELATED || ci === IP_CT_RELATED_REPLY ? CT_RELATED : CT_ESTABLISHED;
        kDir = ci >= IP_CT_ESTABLISHED_REPLY ? 1 : 0;
      } else if (this.kernelCt) {
        kState = CT_INVALID; // no ct attached: invalid or untracked (not told apart)
      } else if (p.hasMark && ((p.mark & SHADOW_MAGIC_MASK) >>> 0) === SHADOW_MAGIC) {
        kState = ((p.mark >>> 4) & 15) - 1;
        kDir = kState === CT_INVALID || kState === CT_UNTRACKED ? -1 : p.mark & 1;
      }
      if (kState < 0 || kState > CT_UNTRACKED) {
        this.noKernelState++;
      } else {
        this.checked++;
        const ours = v.state === CT_UNTRACKED && this.kernelCt ? CT_INVALID : v.state;
        if (ours !== kState || (kDir >= 0 && v.dir !== kDir)) {
          this.mismatches++;
          this.report(`mismatch queue ${this.queue} id ${p.id}: kernel ${CTSTATE_NAMES[kState]}` +
            `${kDir >= 0 ? `/${DIR_NAMES[kDir]}` : ''}, ours ${v.ctstate}${v.dir >= 0 ? `/${v.direction}` : ''}` +
            `${v.reason ? ` (${v.reason})` : ''}: ${describePacket(ct.pkt, p.capLen)} ` +
            Buffer.from(buf.buffer, buf.byteOffset + p.payloadOff, Math.min(p.payloadLen, 64)).toString('hex'));
        }
      }
      this.accepted++;
      vb.add(p.id, NF_ACCEPT, -1);
      return mlen;
    }
    // Enforce: our decision is the verdict.
    const policy = this.policy;
    const i32 = ct.table.i32;
    const e = v.slot >= 0 ? ct.chains.entry(v.slot) : -1;
    const connMark = e >= 0 ? Atomics.load(i32, e + E_MARK) : 0; // written by the first packet's worker (below)
    const act = policy.decide(v, ct.pkt, this.zone, connMark);
    if (act === ACTION_ACCEPT) {
      this.accepted++;
      if (v.state === CT_NEW && policy.connmark && policy.mark !== -1 && e >= 0) {
        Atomics.store(i32, e + E_MARK, policy.mark | 0); // the connmark: later packets read it (any worker)
      }
      vb.add(p.id, NF_ACCEPT, policy.mark);
    } else {
      this.dropped++;
      // A new connection refused by the policy never becomes one (the kernel never confirms it).
      if (v.state === CT_NEW && v.slot >= 0) ct.chains.kill(v.slot, KILL_DELETE);
      vb.add(p.id, NF_DROP, -1);
    }
    return mlen;
  }
}
