/**
 * The per-packet path (the kernel's nf_conntrack_in): error checks, tuple, lookup or create,
 * the protocol tracker, confirm, and the decision. One Conntrack object per thread; it owns a
 * worker record of the shared table and allocates nothing per packet.
 */
import { CONFIRM_CHAIN_TOOLONG, CONFIRM_DYING, CONFIRM_OK, Chains, KILL_DELETE, KILL_REOPEN } from './chains.js';
import { EVENT_DESTROY, EVENT_NEW, EVENT_UPDATE, type EventSink } from './events.js';
import {
  DIR_ORIGINAL, DIR_REPLY, E_HASH, E_NS, E_PROTO, E_STATUS, E_TIMEOUT, E_TUPLE, E_ZONE,
  IPS_EXPECTED, IPS_FIXED_TIMEOUT, IPS_SEEN_REPLY, ST_CLASH_RESOLVE, ST_DROP, ST_ERROR, ST_FOUND, ST_IGNORE, ST_INSERT, ST_INVALID,
  ST_NEW, ST_PACKETS, STAT_WORDS, T_DST, TUPLE_WORDS,
} from './layout.js';
import { unlock, lock } from './locks.js';
import { parseFrame } from './packet/parse.js';
import {
  IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, LINKTYPE_ETHERNET, NFPROTO_IPV4, Packet,
} from './packet/packet.js';
import { genericPacket } from './proto/generic.js';
import { ICMP_CONTINUE, ICMP_ERROR, ICMP_INVALID, ICMP_UNTRACKED, icmpError, icmpPacket } from './proto/icmp.js';
import {
  EV_ASSURED, EV_DESTROY, EV_PROTOINFO, EV_REPLY, PROTO_ACCEPT, PROTO_REPEAT, ProtoResult, type TrackerContext,
} from './proto/l4proto.js';
import { tcpError, tcpNew, tcpPacket, tcpState } from './proto/tcp.js';
import { udpError, udpPacket } from './proto/udp.js';
import { ConntrackTable, type TableHandle } from './table.js';
import {
  hasPorts, invertTuple, protoWord, tupleFromInner, tupleFromPacket,
} from './tuple.js';
import { CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_RELATED, CT_UNTRACKED, Verdict } from './verdict.js';

const R_TABLE_FULL = 'table full';
const R_CHAIN_TOOLONG = 'hash chain too long';
const R_NO_INVERSE = 'tuple has no inverse (ICMP type without a reply)';
const R_NOT_IP = 'not an IP packet';
const R_FRAGMENT = 'non-first fragment (no reassembly)';
const R_ERR_NO_CONN = 'ICMP error for no known connection';
const R_ERR_DADDR = 'ICMP error: outer destination is not the connection\'s';
const R_ERR_INNER = 'ICMP error quotes a packet without a tuple';
const R_REPEAT = 'connection reopened twice';

export interface ConntrackOptions {
  /** Receives NEW/UPDATE/DESTROY events caused by this thread. */
  events?: EventSink;
}

export class Conntrack {
  readonly table: ConntrackTable;
  readonly chains: Chains;
  readonly wid: number;
  readonly pkt = new Packet();
  readonly verdict = new Verdict();
  events: EventSink | null;
  private readonly ctx: TrackerContext;
  private readonly res = new ProtoResult();
  /** Scratch tuples: [0..8] the packet's, [9..17] its inverse. */
  private readonly t = new Int32Array(2 * TUPLE_WORDS);
  private readonly i32: Int32Array;
  private readonly st: number;
  private closed = false;

  constructor(table: ConntrackTable | TableHandle, opts: ConntrackOptions = {}) {
    this.table = table instanceof ConntrackTable ? table : ConntrackTable.attach(table);
    this.wid = this.table.registerWorker();
    this.chains = new Chains(this.table, this.wid);
    this.i32 = this.table.i32;
    this.st = this.table.sec.stats + this.wid * STAT_WORDS;
    this.ctx = { i32: this.table.i32, u32: this.table.u32, sys: this.table.sec.sysctl };
    this.events = opts.events ?? null;
    this.chains.onDestroy = (e, _why) => {
      if (this.events) this.events.event(EVENT_DESTROY, e, this.table.clock);
    };
  }

  /** Enter a batch: entries found stay valid until endBatch(). */
  beginBatch(): void {
    this.chains.qsbr.online();
  }

  /** Leave a batch and reuse slots whose grace period has passed. */
  endBatch(): void {
    this.chains.qsbr.offline();
    this.chains.qsbr.quiesce();
  }

  private stat(i: number): void {
    this.i32[this.st + i] = (this.i32[this.st + i]! + 1) | 0; // single writer: this thread
  }

  /**
   * Parse one frame and decide it. `now` is the table clock in ms (capture time in replay,
   * wall clock live). Must be called inside a batch. The returned Verdict is reused.
   */
  frame(linktype: number, buf: Uint8Array, off: number, len: number, now: number, zone = 0, ns = 0): Verdict {
    parseFrame(linktype, buf, off, len, this.pkt);
    this.pkt.now = now | 0;
    return this.packet(this.pkt, zone, ns, this.verdict);
  }

  /**
   * Convenience for one frame outside a batch: enters a batch, decides, leaves it.
   * `now` defaults to the wall clock. For many packets, prefer beginBatch/frame/endBatch.
   */
  decide(frame: Uint8Array, linktype = LINKTYPE_ETHERNET, now = Date.now(), zone = 0, ns = 0): Verdict {
    this.beginBatch();
    try {
      this.table.clock = now | 0;
      return this.frame(linktype, frame, 0, frame.length, now, zone, ns);
    } finally {
      this.endBatch();
    }
  }

  /** Decide one parsed packet (nf_conntrack_in). Must be called inside a batch. */
  packet(pkt: Packet, zone: number, ns: number, v: Verdict): Verdict {
    v.reset();
    this.stat(ST_PACKETS);
    if (pkt.reason !== null) {
      v.reason = pkt.reason;
      if (pkt.notIp) {
        v.state = CT_UNTRACKED;
        this.stat(ST_IGNORE);
      } else {
        this.stat(ST_INVALID);
        this.stat(ST_ERROR);
      }
      return v;
    }
    if (pkt.fragment && pkt.l4len === 0) return this.invalid(v, R_FRAGMENT);
    const res = this.res;
    res.reset();
    const l4 = pkt.l4proto;
    if (l4 === IPPROTO_TCP) {
      const r = tcpError(this.ctx, pkt);
      if (r !== null) { this.stat(ST_ERROR); return this.invalid(v, r); }
    } else if (l4 === IPPROTO_UDP) {
      const r = udpError(this.ctx, pkt);
      if (r !== null) { this.stat(ST_ERROR); return this.invalid(v, r); }
    } else if (l4 === (pkt.family === NFPROTO_IPV4 ? IPPROTO_ICMP : IPPROTO_ICMPV6)) {
      const k = icmpError(this.ctx, pkt, res);
      if (k === ICMP_INVALID) { this.stat(ST_ERROR); return this.invalid(v, res.reason); }
      if (k === ICMP_UNTRACKED) {
        v.state = CT_UNTRACKED;
        return v;
      }
      if (k === ICMP_ERROR) return this.related(pkt, zone, ns, v);
      void ICMP_CONTINUE;
    }
    return this.track(pkt, zone, ns, v, 0);
  }

  private invalid(v: Verdict, reason: string | null): Verdict {
    this.stat(ST_INVALID);
    v.state = CT_INVALID;
    v.dir = -1;
    v.slot = -1;
    v.reason = reason;
    return v;
  }

  /** An ICMP error: RELATED to the connection of the packet it quotes (nf_conntrack_inet_error). */
  private related(pkt: Packet, zone: number, ns: number, v: Verdict): Verdict {
    if (pkt.innerReason !== null || pkt.innerFamily !== pkt.family) return this.invalid(v, pkt.innerReason ?? R_ERR_INNER);
    const t = this.t;
    tupleFromInner(pkt, t, TUPLE_WORDS);
    if (!hasPorts(pkt.innerProto) && pkt.innerProto !== IPPROTO_ICMP && pkt.innerProto !== IPPROTO_ICMPV6) {
      t[TUPLE_WORDS + 8] = 0;
    }
    // The quoted packet travelled the other way: look up its inverse.
    if (!invertTuple(t, TUPLE_WORDS, t, 0, pkt.innerProto)) return this.invalid(v, R_ERR_INNER);
    const proto = protoWord(pkt.family, pkt.innerProto);
    const c = this.chains;
    const h = c.hash(t, 0, proto, zone, ns);
    const ref = c.find(t, 0, proto, zone, ns, h, pkt.now);
    if (ref < 0) return this.invalid(v, R_ERR_NO_CONN);
    const slot = ref >>> 1;
    const dir = ref & 1;
    const e = c.entry(slot);
    const dst = e + E_TUPLE + dir * TUPLE_WORDS + T_DST;
    let same = true;
    for (let k = 0; k < 4; k++) if ((this.i32[dst + k]! >>> 0) !== pkt.dst[k]) same = false;
    if (!c.noref) c.put(slot);
    if (!same) return this.invalid(v, R_ERR_DADDR);
    v.state = CT_RELATED;
    v.dir = dir;
    v.slot = slot;
    return v;
  }

  /** Look the connection up or create it, then run its tracker (resolve_normal_ct + packet). */
  private track(pkt: Packet, zone: number, ns: number, v: Verdict, repeats: number): Verdict {
    const c = this.chains;
    const i32 = this.i32;
    const t = this.t;
    const l4 = pkt.l4proto;
    tupleFromPacket(pkt, t, 0);
    const proto = protoWord(pkt.family, l4);
    const h = c.hash(t, 0, proto, zone, ns);
    const ref = c.find(t, 0, proto, zone, ns, h, pkt.now);
    const res = this.res;
    res.reset();
    if (ref < 0) return this.create(pkt, zone, ns, v, h, proto, repeats);

    this.stat(ST_FOUND);
    const slot = ref >>> 1;
    const dir = ref & 1;
    const e = c.entry(slot);
    const status = Atomics.load(i32, e + E_STATUS); // set by other threads too
    let state: number;
    if (dir === DIR_REPLY) state = CT_ESTABLISHED;
    else if (status & IPS_SEEN_REPLY) state = CT_ESTABLISHED;
    else if (status & IPS_EXPECTED) state = CT_RELATED;
    else state = CT_NEW;

    let ret: number;
    if (l4 === IPPROTO_TCP) {
      // TCP state is serialised by the original tuple's bucket lock.
      const lk = c.stateLock(e);
      lock(i32, lk, this.wid);
      ret = tcpPacket(this.ctx, e, dir, pkt, res);
      if (ret === PROTO_ACCEPT) v.protoState = tcpState(this.ctx, e);
      unlock(i32, lk);
    } else {
      ret = this.l4packet(l4, pkt.family, e, dir, pkt, res);
    }
    if (ret !== PROTO_ACCEPT) {
      // An invalid packet may still shorten the timeout (the kernel's nf_tcp_handle_invalid).
      if (ret !== PROTO_REPEAT && res.timeout >= 0) this.refresh(e, pkt.now, res.timeout);
      if (!c.noref) c.put(slot);
      if (ret === PROTO_REPEAT) {
        // A closed connection reopened: remove it and handle the packet as a new one.
        c.kill(slot, KILL_REOPEN);
        if (repeats > 0) return this.invalid(v, R_REPEAT);
        return this.track(pkt, zone, ns, v, repeats + 1);
      }
      return this.invalid(v, res.reason);
    }
    if (res.timeout >= 0) this.refresh(e, pkt.now, res.timeout);
    let ev = res.events;
    if (dir === DIR_REPLY) {
      // Test-and-set: exactly one thread reports the first reply.
      if ((Atomics.or(i32, e + E_STATUS, IPS_SEEN_REPLY) & IPS_SEEN_REPLY) === 0) ev |= EV_REPLY;
    }
    if (ev & EV_DESTROY) {
      // Accepted, but the connection ends here (TCP RST before any reply).
      c.kill(slot, KILL_DELETE);
    } else if (this.events && (ev & (EV_PROTOINFO | EV_ASSURED | EV_REPLY))) {
      this.events.event(EVENT_UPDATE, e, pkt.now);
    }
    if (!c.noref) c.put(slot);
    v.state = state;
    v.dir = dir;
    v.slot = slot;
    return v;
  }

  /** Set a confirmed entry's deadline (nf_ct_refresh), unless its timeout is fixed. */
  private refresh(e: number, now: number, seconds: number): void {
    if (Atomics.load(this.i32, e + E_STATUS) & IPS_FIXED_TIMEOUT) return;
    // Read by the GC worker and other packet workers: atomic store.
    Atomics.store(this.i32, e + E_TIMEOUT, (now + seconds * 1000) | 0);
  }

  /** Dispatch to the UDP, ICMP or generic tracker. */
  private l4packet(l4: number, family: number, e: number, dir: number, pkt: Packet, res: ProtoResult): number {
    if (l4 === IPPROTO_UDP) return udpPacket(this.ctx, e, dir, pkt, res);
    if (l4 === (family === NFPROTO_IPV4 ? IPPROTO_ICMP : IPPROTO_ICMPV6)) return icmpPacket(this.ctx, e, dir, pkt, res);
    return genericPacket(this.ctx, e, dir, pkt, res);
  }

  /** A packet without a connection: init_conntrack, the tracker's first look, confirm. */
  private create(pkt: Packet, zone: number, ns: number, v: Verdict, h: number, proto: number, repeats: number): Verdict {
    const c = this.chains;
    const i32 = this.i32;
    const t = this.t;
    const l4 = pkt.l4proto;
    if (!invertTuple(t, 0, t, TUPLE_WORDS, l4)) return this.invalid(v, R_NO_INVERSE);
    const slot = c.newEntry(h, pkt.now);
    if (slot < 0) {
      this.stat(ST_DROP);
      v.drop = true;
      this.stat(ST_INVALID);
      v.reason = R_TABLE_FULL;
      v.state = CT_INVALID;
      return v;
    }
    const e = c.entry(slot);
    // Private until confirm(): plain stores.
    i32.set(t, e + E_TUPLE);
    i32[e + E_PROTO] = proto;
    i32[e + E_ZONE] = (zone & 0xffff) | ((zone & 0xffff) << 16);
    i32[e + E_NS] = ns;
    i32[e + E_HASH + DIR_ORIGINAL] = h | 0;
    i32[e + E_HASH + DIR_REPLY] = c.hash(t, TUPLE_WORDS, proto, zone, ns) | 0;
    const res = this.res;
    let ret: number;
    if (l4 === IPPROTO_TCP) {
      const r = tcpNew(this.ctx, e, pkt);
      if (r !== null) {
        c.discard(slot);
        return this.invalid(v, r);
      }
      ret = tcpPacket(this.ctx, e, DIR_ORIGINAL, pkt, res);
      if (ret === PROTO_ACCEPT) v.protoState = tcpState(this.ctx, e);
    } else {
      ret = this.l4packet(l4, pkt.family, e, DIR_ORIGINAL, pkt, res);
    }
    if (ret !== PROTO_ACCEPT) {
      c.discard(slot);
      return this.invalid(v, res.reason);
    }
    i32[e + E_TIMEOUT] = (pkt.now + Math.max(0, res.timeout) * 1000) | 0;
    const k = c.confirm(slot);
    if (k !== CONFIRM_OK) {
      c.discard(slot);
      if (k === CONFIRM_CHAIN_TOOLONG) {
        this.stat(ST_DROP);
        v.drop = true;
        return this.invalid(v, R_CHAIN_TOOLONG);
      }
      if (k === CONFIRM_DYING) return this.track(pkt, zone, ns, v, repeats);
      // Clash: another thread confirmed the same tuple first. Join its entry.
      if (!c.noref) c.put(k >>> 1);
      this.stat(ST_CLASH_RESOLVE);
      return this.track(pkt, zone, ns, v, repeats);
    }
    this.stat(ST_INSERT);
    this.stat(ST_NEW);
    if (this.events) this.events.event(EVENT_NEW, e, pkt.now);
    v.state = CT_NEW;
    v.dir = DIR_ORIGINAL;
    v.slot = slot;
    return v;
  }

  /** Remove every connection (conntrack -F). Must be called outside a batch. */
  flush(): number {
    let n = 0;
    this.beginBatch();
    this.chains.forEach((_e, slot) => {
      if (this.chains.kill(slot, 0)) n++;
    });
    this.endBatch();
    return n;
  }

  /** Leave the table: give cached slots back and release the worker record. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const q = this.chains.qsbr;
    if (q.isOnline) q.offline();
    // Wait (bounded) for the grace period of what we retired, then hand everything back.
    for (let i = 0; i < 1000 && q.pending > 0; i++) {
      q.quiesce();
      if (q.pending > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
    this.chains.alloc.drain();
    this.table.releaseWorker(this.wid);
  }
}
