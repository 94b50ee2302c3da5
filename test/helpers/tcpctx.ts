/**
 * A one-entry fake table for driving the TCP tracker the way nf_conntrack_in drives the kernel's:
 * error -> (new for the first packet) -> packet, SEEN_REPLY after an accepted reply, REPEAT =
 * kill and handle again, EV_DESTROY = kill now, res.timeout applied even to invalid packets.
 */

import {
  E_PRIV,
  E_STATUS,
  E_TIMEOUT,
  ENTRY_WORDS,
  IPS_CONFIRMED,
  IPS_SEEN_REPLY,
  SYSCTL_WORDS,
  TCP_DIR,
  TCP_DIR_WORDS,
  TCP_SCALE_FLAGS,
} from '../../src/table/layout.js';
import { SYSCTLS } from '../../src/table/sysctl.js';
import { Packet, IPPROTO_TCP, NFPROTO_IPV4 } from '../../src/input/packet/packet.js';
import { EV_DESTROY, PROTO_ACCEPT, PROTO_INVALID, PROTO_REPEAT, ProtoResult, type TrackerContext } from '../../src/track/proto/l4proto.js';
import { tcpError, tcpNew, tcpPacket, tcpState } from '../../src/track/proto/tcp.js';

export interface SegOpts {
  win?: number;
  len?: number;
  wscale?: number;
  sackPerm?: boolean;
  /** Highest SACK right edge. */
  sack?: number;
}

/** A hand-built TCP segment (no frame bytes). */
export function seg(flags: number, seq: number, ack: number, o: SegOpts = {}): Packet {
  const p = new Packet();
  p.family = NFPROTO_IPV4;
  p.l4proto = IPPROTO_TCP;
  p.tcpFlags = flags;
  p.seq = seq >>> 0;
  p.ack = ack >>> 0;
  p.window = o.win ?? 1000;
  const hasOpts = o.wscale !== undefined || o.sackPerm === true || o.sack !== undefined;
  p.doff = hasOpts ? 32 : 20;
  p.dataLen = o.len ?? 0;
  p.l4len = p.doff + p.dataLen;
  p.complete = true;
  p.wscale = o.wscale ?? -1;
  p.sackPerm = o.sackPerm ?? false;
  if (o.sack !== undefined) {
    p.hasSack = true;
    p.sackMax = o.sack >>> 0;
  }
  return p;
}

export type Verdict = 'new' | 'established' | 'invalid';

export interface StepResult {
  verdict: Verdict;
  /** A REPEAT happened: the old entry was killed and the packet started a new one. */
  reopened: boolean;
  /** The entry was removed after this packet (EV_DESTROY). */
  killed: boolean;
  reason: string | null;
  events: number;
  /** res.timeout of the last tracker call (-1 = unchanged). */
  timeout: number;
}

export class TcpHarness {
  readonly i32: Int32Array;
  readonly u32: Uint32Array;
  readonly ctx: TrackerContext;
  readonly e = SYSCTL_WORDS;
  readonly res = new ProtoResult();
  /** Table clock, ms. */
  now = 1000;
  exists = false;

  constructor(sysctl: Record<number, number> = {}) {
    const buf = new SharedArrayBuffer((SYSCTL_WORDS + ENTRY_WORDS) * 4);
    this.i32 = new Int32Array(buf);
    this.u32 = new Uint32Array(buf);
    for (const d of SYSCTLS) this.i32[d.index] = d.def;
    for (const [k, v] of Object.entries(sysctl)) this.i32[Number(k)] = v;
    this.ctx = { i32: this.i32, u32: this.u32, sys: 0 };
  }

  set(index: number, value: number): void {
    this.i32[index] = value;
  }

  get state(): number {
    return tcpState(this.ctx, this.e);
  }

  get status(): number {
    return Atomics.load(this.i32, this.e + E_STATUS);
  }

  /** Seconds left before the entry expires. */
  get timeoutLeft(): number {
    return ((this.i32[this.e + E_TIMEOUT] - this.now) | 0) / 1000;
  }

  /** A per-direction window word (TD_*). */
  td(dir: number, word: number): number {
    return this.u32[this.e + E_PRIV + TCP_DIR + dir * TCP_DIR_WORDS + word];
  }

  scale(dir: number): number {
    return (this.u32[this.e + E_PRIV + TCP_SCALE_FLAGS] >>> (16 * dir)) & 0xff;
  }

  flags(dir: number): number {
    return (this.u32[this.e + E_PRIV + TCP_SCALE_FLAGS] >>> (16 * dir + 8)) & 0xff;
  }

  private kill(): void {
    this.i32.fill(0, this.e, this.e + ENTRY_WORDS);
    this.exists = false;
  }

  private refresh(t: number): void {
    if (t >= 0) this.i32[this.e + E_TIMEOUT] = (this.now + t * 1000) | 0;
  }

  private out(verdict: Verdict, reopened: boolean, killed: boolean): StepResult {
    return { verdict, reopened, killed, reason: this.res.reason, events: this.res.events, timeout: this.res.timeout };
  }

  private first(pkt: Packet, reopened: boolean): StepResult {
    const res = this.res;
    res.reset();
    const why = tcpNew(this.ctx, this.e, pkt);
    if (why !== null) {
      this.kill();
      res.reason = why;
      return this.out('invalid', reopened, false);
    }
    const v = tcpPacket(this.ctx, this.e, 0, pkt, res);
    if (v !== PROTO_ACCEPT) {
      this.kill();
      return this.out('invalid', reopened, false);
    }
    Atomics.or(this.i32, this.e + E_STATUS, IPS_CONFIRMED);
    this.exists = true;
    this.refresh(res.timeout);
    return this.out('new', reopened, false);
  }

  /** One packet; dir is relative to the current entry (ignored when there is none). */
  step(dir: number, pkt: Packet): StepResult {
    const res = this.res;
    res.reset();
    const err = tcpError(this.ctx, pkt);
    if (err !== null) {
      res.reason = err;
      return this.out('invalid', false, false);
    }
    if (!this.exists) return this.first(pkt, false);
    const seenReply = (this.status & IPS_SEEN_REPLY) !== 0;
    const v = tcpPacket(this.ctx, this.e, dir, pkt, res);
    if (v === PROTO_REPEAT) {
      this.kill();
      return this.first(pkt, true);
    }
    this.refresh(res.timeout);
    if (v === PROTO_INVALID) return this.out('invalid', false, false);
    const verdict: Verdict = dir === 1 || seenReply ? 'established' : 'new';
    if (dir === 1) Atomics.or(this.i32, this.e + E_STATUS, IPS_SEEN_REPLY);
    const killed = (res.events & EV_DESTROY) !== 0;
    const r = this.out(verdict, false, killed);
    if (killed) this.kill();
    return r;
  }
}
