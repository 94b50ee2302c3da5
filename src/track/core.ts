/**
 * The per-packet path (the kernel's nf_conntrack_in): error checks, tuple, lookup or create,
 * the protocol tracker, confirm, and the decision. One Conntrack object per thread; it owns a
 * worker record of the shared table and allocates nothing per packet.
 */
import { CONFIRM_CHAIN_TOOLONG, CONFIRM_DYING, CONFIRM_OK, Chains, KILL_DELETE, KILL_REOPEN } from '../table/chains.js';
import { EventProducer } from '../table/ecache.js';
import { EVENT_DESTROY, EVENT_F_PROTOINFO, EVENT_NEW, EVENT_UPDATE, type EventSink } from '../table/events.js';
import { acctAdd, extAlloc, extInitFresh, policyTimeout, zonePolicy } from '../table/ext.js';
import {
  DIR_ORIGINAL, DIR_REPLY, E_HASH, E_NS, E_PROTO, E_STATUS, E_TIMEOUT, E_TUPLE, E_ZONE,
  IPS_EXPECTED, IPS_FIXED_TIMEOUT, IPS_SEEN_REPLY, ST_CLASH_RESOLVE, ST_DROP, ST_ERROR, ST_FOUND, ST_IGNORE, ST_INSERT, ST_INVALID,
  ST_CSUM_OFFLOAD, ST_FRAG_DROP, ST_FRAG_EVICT, ST_FRAG_HELD, ST_FRAG_REASM, ST_FRAG_TIMEOUT, ST_NEW, ST_PACKETS, STAT_WORDS, T_DST, TUPLE_WORDS,
} from '../table/layout.js';
import {
  EXT_ACCT, EXT_TIMEOUT, EXT_TSTAMP, EXT_WORDS, E_EXT, X_FLAGS, XC_ZONE_POLICIES,
} from '../table/layout.js';
import { unlock, lock } from '../table/locks.js';
import { S_ACCT, S_TIMESTAMP } from '../table/sysctl.js';
import { parseFrame } from '../input/packet/parse.js';
import {
  IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, LINKTYPE_ETHERNET, NFPROTO_IPV4, Packet,
} from '../input/packet/packet.js';
import { genericPacket } from './proto/generic.js';
import { ICMP_ERROR, ICMP_INVALID, ICMP_UNTRACKED, icmpError, icmpPacket } from './proto/icmp.js';
import {
  EV_ASSURED, EV_DESTROY, EV_PROTOINFO, EV_REPLY, PROTO_ACCEPT, PROTO_REPEAT, ProtoResult, type TrackerContext,
  allowClash,
} from './proto/l4proto.js';
import { tcpError, tcpNew, tcpPacket, tcpState } from './proto/tcp.js';
import { IPPROTO_GRE, grePacket } from './proto/gre.js';
import { IPPROTO_SCTP, sctpError, sctpPacket } from './proto/sctp.js';
import { IPPROTO_UDPLITE, udpError, udpPacket, udpliteError, udplitePacket } from './proto/udp.js';
import { ConntrackTable, type TableHandle } from '../table/table.js';
import {
  hasPorts, invertTuple, protoWord, tupleFromInner, tupleFromPacket,
} from './tuple.js';
import {
  CT_ESTABLISHED, CT_HELD, CT_INVALID, CT_NEW, CT_RELATED, CT_UNTRACKED, FRAG_DONE, FRAG_DROP, FRAG_HELD, FRAG_PASS, Verdict,
} from './verdict.js';
import { DF_DONE, DF_DROP, DF_HELD, Defrag, type DefragStores, type FragDropped } from '../input/defrag/defrag.js';
import { R_BAD_IP4_CSUM } from '../input/packet/parse.js';
import { LINKTYPE_RAW } from '../input/packet/packet.js';
import { S_DEFRAG } from '../table/sysctl.js';
import { ST_NS_LIMIT, ST_ZONE_LIMIT } from '../table/layout.js';
import { CONFIRM_NS_LIMIT, CONFIRM_ZONE_LIMIT, ZONE_DIR_BOTH, isNamespaceHandle, zoneKey, zoneWord } from '../table/zones.js';
import { IPS_SRC_NAT_DONE, ST_INSERT_FAILED, ST_NAT_FAILED } from '../table/layout.js';
import { Nat, R_NAT_CLASH, R_NAT_REDIRECT } from './nat/nat.js';

export const R_TABLE_FULL = 'table full';
export const R_CHAIN_TOOLONG = 'hash chain too long';
export const R_NO_INVERSE = 'tuple has no inverse (ICMP type without a reply)';
export const R_NOT_IP = 'not an IP packet';
export const R_FRAGMENT = 'non-first fragment (no reassembly)';
export const R_ERR_NO_CONN = 'ICMP error for no known connection';
export const R_ERR_DADDR = 'ICMP error: outer destination is not the connection\'s';
export const R_ERR_INNER = 'ICMP error quotes a packet without a tuple';
export const R_REPEAT = 'connection reopened twice';
export const R_NS_LIMIT = 'namespace limit';
export const R_ZONE_LIMIT = 'zone limit';
export const R_ZONE_CLASH = 'tuple clashes with a connection of another directional zone';
export const R_CLASH = 'another thread confirmed the same connection first (the protocol allows no clash resolution)';

/** Options of new Conntrack(). */
export interface ConntrackOptions {
  /** Receives NEW/UPDATE/DESTROY events caused by this thread. */
  events?: EventSink;
  /**
   * Reassembly queues shared with other threads (Defrag.createStores; the pool passes one set to
   * all its workers). Default: this thread's own, created at the first fragment.
   */
  defragStores?: DefragStores;
}

const NO_DROPS: readonly FragDropped[] = [];
const NO_TAGS = new Int32Array(0);

/** Options of Conntrack.decide(). */
export interface DecideOptions {
  /** pcap LINKTYPE_* of the frame (default LINKTYPE_ETHERNET). */
  linktype?: number;
  /** Table clock of the packet in ms (default Date.now()). */
  now?: number;
  /** Conntrack zone 0..65535 (default 0). */
  zone?: number;
  /** Namespace id (default 0; ignored by a tracker bound to a namespace). */
  ns?: number;
  /** Directions the zone applies to: ZONE_DIR_ORIG, ZONE_DIR_REPL or ZONE_DIR_BOTH (default). */
  zoneDir?: number;
}

/** A per-thread tracker on a shared table: decide() one frame, or beginBatch() / frame() / endBatch() for many. */
export class Conntrack {
  readonly table: ConntrackTable;
  /** @internal */
  readonly chains: Chains;
  readonly wid: number;
  readonly pkt = new Packet();
  readonly verdict = new Verdict();
  events: EventSink | null;
  /** @internal Writes events into the table's shared event ring (ecache.ts); takes stop timestamps. */
  readonly ring: EventProducer;
  /**
   * Tag written with the events of the next packets (ecache.ts ConnEvent.tag): the pool's packet
   * workers set it to each frame's data offset (capture order in a replay); -1 by default.
   * @internal
   */
  eventTag = -1;
  /**
   * Tag remembered with a fragment this thread holds for reassembly and reported back
   * (fragTags, fragDropped) when its datagram completes or is dropped: the replay sets the packet
   * index. -1 by default.
   */
  fragTag = -1;
  /** Table clock of the packet being decided (time of the events it causes). */
  private now = 0;
  /** Reassembly (created at the first fragment unless shared stores were given). */
  private defragger: Defrag | null = null;
  private readonly defragStores: DefragStores | null;
  private readonly ctx: TrackerContext;
  private readonly res = new ProtoResult();
  /** Scratch tuples: [0..8] the packet's, [9..17] its inverse. */
  private readonly t = new Int32Array(2 * TUPLE_WORDS);
  private readonly i32: Int32Array;
  private readonly st: number;
  private closed = false;
  /** The namespace this tracker is bound to (built from a NamespaceHandle), or -1. */
  readonly boundNs: number;
  /** NAT (nat/nat.ts): decided in create() when the table has rules; frame() rewrites packets. */
  readonly nat: Nat;

  constructor(table: ConntrackTable | TableHandle, opts: ConntrackOptions = {}) {
    this.table = table instanceof ConntrackTable ? table : ConntrackTable.attach(table);
    this.boundNs = !(table instanceof ConntrackTable) && isNamespaceHandle(table) ? table.ns : -1;
    this.wid = this.table.registerWorker();
    this.chains = new Chains(this.table, this.wid);
    this.i32 = this.table.i32;
    this.st = this.table.sec.stats + this.wid * STAT_WORDS;
    this.ctx = { i32: this.table.i32, u32: this.table.u32, sys: this.table.sec.sysctl };
    this.events = opts.events ?? null;
    this.defragStores = opts.defragStores ?? null;
    if (this.defragStores) this.defragger = new Defrag(this.i32, this.table.sec.sysctl, this.wid, this.defragStores);
    this.ring = new EventProducer(this.table, this.wid);
    this.chains.qsbr.onStall = (kind, wid, ms) => this.ring.stall(kind, wid, ms); // stall events (liveness.ts)
    this.nat = new Nat(this.table, this.chains);
    this.chains.onDestroy = (e, why) => {
      // Stop timestamp and the ring first: the local sink then sees the final extension data.
      this.ring.destroyed(e, this.now, why, this.eventTag);
      if (this.events) this.events.event(EVENT_DESTROY, e, this.now);
    };
  }

  /** Enter a batch: entries found stay valid until endBatch(). */
  beginBatch(): void {
    this.chains.qsbr.online();
  }

  /** Leave a batch and reuse slots whose grace period has passed. */
  endBatch(): void {
    // DESTROY events waiting for room in the ring (a single load when there are none).
    if (this.ring.parked > 0) this.ring.retryParked();
    this.chains.qsbr.offline();
    // Our unfolded part of the entry, namespace and zone counts: a table at rest counts exactly.
    if (this.chains.zones.dirty) this.chains.foldCount();
    this.chains.qsbr.quiesce();
  }

  private stat(i: number): void {
    this.i32[this.st + i] = (this.i32[this.st + i]! + 1) | 0; // single writer: this thread
  }

  /**
   * Parse one frame and decide it. `now` is the table clock in ms (capture time in replay,
   * wall clock live). Must be called inside a batch. The returned Verdict is reused.
   * `zone` applies to the directions in `zoneDir` (zones.ts ZONE_DIR_*; the default zone 0 to
   * the others); `ns` is ignored by a tracker bound to a namespace.
   */
  frame(linktype: number, buf: Uint8Array, off: number, len: number, now: number, zone = 0, ns = 0, zoneDir = ZONE_DIR_BOTH): Verdict {
    const pkt = this.pkt;
    parseFrame(linktype, buf, off, len, pkt);
    pkt.now = now | 0;
    const d = this.defragger;
    if (d !== null) {
      // Queues whose ipfrag_time passed go now, whatever this packet is.
      d.begin();
      d.tick(pkt.now);
      this.defragStats(d);
    }
    // nf_defrag before conntrack: fragments with a sound IP header go to their queue.
    if (pkt.fragment && pkt.reason !== R_BAD_IP4_CSUM && this.i32[this.table.sec.sysctl + S_DEFRAG] !== 0) {
      return this.fragment(pkt, zone, ns, zoneDir);
    }
    const v = this.packet(pkt, zone, ns, this.verdict, zoneDir);
    // NAT: rewrite the frame in place (nothing to do unless its connection is NAT'd).
    // A reassembled datagram (above) is not rewritten: see README "Limitations".
    if (v.slot >= 0) {
      const r = this.nat.apply(pkt, v);
      if (r < 0) { v.drop = true; this.stat(ST_DROP); return this.invalid(v, R_NAT_REDIRECT); }
      v.nat = r;
    }
    return v;
  }

  /** Queues that timed out or were evicted during the last frame() (reported once, then cleared). */
  get fragDropped(): readonly FragDropped[] {
    return this.defragger?.dropped ?? NO_DROPS;
  }

  /**
   * After a frame() whose verdict has FRAG_DONE (or FRAG_DROP / FRAG_PASS that took its queue
   * along): the tags of the datagram's other fragments, in `fragTags[0, fragTagCount)`.
   */
  get fragTags(): Int32Array {
    return this.defragger?.tagList ?? NO_TAGS;
  }
  get fragTagCount(): number {
    return this.defragger?.tagCount ?? 0;
  }

  /** Fragments still held (e.g. at the end of a capture), one record per datagram; empties the queues. */
  drainFragments(): FragDropped[] {
    return this.defragger?.drain() ?? [];
  }

  /** Reassembly's memory in bytes now and at its peak (both families), for tests and metrics. */
  defragMemory(): { mem: number; peak: number; queues: number; bound: number } {
    const d = this.defragger;
    if (!d) return { mem: 0, peak: 0, queues: 0, bound: 0 };
    return { mem: d.v4.mem + d.v6.mem, peak: Math.max(d.v4.peak, d.v6.peak), queues: d.v4.queues + d.v6.queues, bound: d.v4.capacity + d.v6.capacity };
  }

  private defragStats(d: Defrag): void {
    for (let k = 0; k < d.timeouts; k++) this.stat(ST_FRAG_TIMEOUT);
    for (let k = 0; k < d.evictions; k++) this.stat(ST_FRAG_EVICT);
    d.timeouts = 0;
    d.evictions = 0;
  }

  /** A fragment: hold it, drop it, or decide the datagram it completes. */
  private fragment(pkt: Packet, zoneId: number, ns: number, zoneDir: number): Verdict {
    let d = this.defragger;
    if (d === null) {
      d = this.defragger = new Defrag(this.i32, this.table.sec.sysctl, this.wid);
      d.begin();
    }
    if (this.boundNs >= 0) ns = this.boundNs;
    // Queues are per zone (the original direction's) and per namespace, as the kernel's defrag user and netns.
    const key = (zoneWord(zoneId, zoneDir) & 0xffff) | (ns << 16);
    const now = pkt.now;
    const st = d.fragment(pkt, key, now, this.fragTag);
    this.defragStats(d);
    const v = this.verdict;
    if (st === DF_HELD || st === DF_DROP) {
      v.reset();
      this.stat(ST_PACKETS);
      if (st === DF_HELD) {
        this.stat(ST_FRAG_HELD);
        v.state = CT_HELD;
        v.frag = FRAG_HELD;
      } else {
        // Consumed by reassembly: conntrack never sees it (not counted invalid), the kernel drops it.
        this.stat(ST_FRAG_DROP);
        v.state = CT_INVALID;
        v.drop = true;
        v.reason = d.reason;
        v.frag = FRAG_DROP;
      }
      return v;
    }
    if (st === DF_DONE) {
      this.stat(ST_FRAG_REASM);
      parseFrame(LINKTYPE_RAW, d.out, 0, d.outLen, pkt);
      pkt.now = now;
      this.packet(pkt, zoneId, ns, v, zoneDir);
      v.frag = FRAG_DONE;
      return v;
    }
    // Not reassembled: decided as it is; an unreassembled first fragment's checksum is checked
    // over what it holds, as the kernel does (and fails).
    if (d.reason !== null) pkt.complete = true;
    this.packet(pkt, zoneId, ns, v, zoneDir);
    if (d.reason !== null) v.frag = FRAG_PASS;
    return v;
  }

  /**
   * Decide one frame outside a batch: enters a batch, decides, leaves it. Options (all
   * optional): `linktype` (default LINKTYPE_ETHERNET), `now` (table clock in ms, default the
   * wall clock), `zone`, `ns`, `zoneDir`. The returned Verdict is reused by the next call.
   * One options object can be reused across calls. For many packets use
   * beginBatch() / frame() / endBatch(), which take no object at all.
   *
   *   ct.decide(frame);                                      // Ethernet, wall clock
   *   ct.decide(packet, { linktype: LINKTYPE_RAW, now: 5000, zone: 7 });
   *
   * The older positional form decide(frame, linktype, now, zone, ns, zoneDir) still works.
   */
  decide(frame: Uint8Array, opts?: DecideOptions): Verdict;
  /** @deprecated Positional form; pass a DecideOptions object instead. */
  decide(frame: Uint8Array, linktype?: number, now?: number, zone?: number, ns?: number, zoneDir?: number): Verdict;
  decide(frame: Uint8Array, a?: DecideOptions | number, now?: number, zone?: number, ns?: number, zoneDir?: number): Verdict {
    let lt: number;
    if (typeof a === 'object' && a !== null) {
      lt = a.linktype ?? LINKTYPE_ETHERNET;
      now = a.now;
      zone = a.zone;
      ns = a.ns;
      zoneDir = a.zoneDir;
    } else {
      lt = a ?? LINKTYPE_ETHERNET;
    }
    const t = now ?? Date.now();
    this.beginBatch();
    try {
      this.table.clock = t | 0;
      return this.frame(lt, frame, 0, frame.length, t, zone ?? 0, ns ?? 0, zoneDir ?? ZONE_DIR_BOTH);
    } finally {
      this.endBatch();
    }
  }

  /** Decide one parsed packet (nf_conntrack_in). Must be called inside a batch. */
  packet(pkt: Packet, zoneId: number, ns: number, v: Verdict, zoneDir = ZONE_DIR_BOTH): Verdict {
    // From here on `zone` is the packet's zone per direction: original | reply << 16 (E_ZONE's form).
    const zone = zoneWord(zoneId, zoneDir);
    if (this.boundNs >= 0) ns = this.boundNs;
    // Between packets this thread holds no entry: if it was expelled from its batch for a stall
    // (rcu.ts), re-enter it here (one load when it was not).
    this.chains.qsbr.resumeIfExpelled();
    v.reset();
    this.now = pkt.now;
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
    } else if (l4 === IPPROTO_SCTP) {
      const r = sctpError(this.ctx, pkt);
      if (r !== null) { this.stat(ST_ERROR); return this.invalid(v, r); }
    } else if (l4 === IPPROTO_UDPLITE) {
      const r = udpliteError(this.ctx, pkt);
      if (r !== null) { this.stat(ST_ERROR); return this.invalid(v, r); }
    } else if (l4 === (pkt.family === NFPROTO_IPV4 ? IPPROTO_ICMP : IPPROTO_ICMPV6)) {
      const k = icmpError(this.ctx, pkt, res);
      if (k === ICMP_INVALID) { this.stat(ST_ERROR); return this.invalid(v, res.reason); }
      if (k === ICMP_UNTRACKED) {
        v.state = CT_UNTRACKED;
        return v;
      }
      if (k === ICMP_ERROR) return this.related(pkt, zone, ns, v);
      // ICMP_CONTINUE: a request or reply, tracked as a connection below.
    }
    if (pkt.csumPartial) this.stat(ST_CSUM_OFFLOAD);
    return this.track(pkt, zone, ns, v, 0);
  }

  /** A new connection refused by its namespace's or zone's limit: dropped, like a full table. */
  private limited(v: Verdict, limit: number): Verdict {
    this.stat(limit === CONFIRM_NS_LIMIT ? ST_NS_LIMIT : ST_ZONE_LIMIT);
    this.stat(ST_DROP);
    v.drop = true;
    return this.invalid(v, limit === CONFIRM_NS_LIMIT ? R_NS_LIMIT : R_ZONE_LIMIT);
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
  private related(pkt: Packet, zone: number, ns: number, v: Verdict): Verdict { // zone: original | reply << 16
    if (pkt.innerReason !== null || pkt.innerFamily !== pkt.family) return this.invalid(v, pkt.innerReason ?? R_ERR_INNER);
    const t = this.t;
    tupleFromInner(pkt, t, TUPLE_WORDS);
    if (!hasPorts(pkt.innerProto) && pkt.innerProto !== IPPROTO_ICMP && pkt.innerProto !== IPPROTO_ICMPV6 &&
      pkt.innerProto !== IPPROTO_GRE) {
      t[TUPLE_WORDS + 8] = 0;
    }
    // The quoted packet travelled the other way: look up its inverse.
    if (!invertTuple(t, TUPLE_WORDS, t, 0, pkt.innerProto)) return this.invalid(v, R_ERR_INNER);
    const proto = protoWord(pkt.family, pkt.innerProto);
    const c = this.chains;
    const h = c.hash(t, 0, proto, zone & 0xffff, ns);
    const ref = c.find(t, 0, proto, zone & 0xffff, ns, h, pkt.now, zone >>> 16);
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
  private track(pkt: Packet, zone: number, ns: number, v: Verdict, repeats: number): Verdict { // zone: original | reply << 16
    const c = this.chains;
    const i32 = this.i32;
    const t = this.t;
    const l4 = pkt.l4proto;
    tupleFromPacket(pkt, t, 0);
    const proto = protoWord(pkt.family, l4);
    const h = c.hash(t, 0, proto, zone & 0xffff, ns);
    const ref = c.find(t, 0, proto, zone & 0xffff, ns, h, pkt.now, zone >>> 16);
    const res = this.res;
    res.reset();
    if (ref < 0) return this.create(pkt, zone, ns, v, h, proto, repeats);

    this.stat(ST_FOUND);
    const slot = ref >>> 1;
    const dir = ref & 1;
    const e = c.entry(slot);
    // Set by other threads with Atomics.or; read plainly, as the kernel's test_bit: a plain read
    // may miss a bit set concurrently, as an Atomics.load racing with that or could.
    const status = i32[e + E_STATUS]!;
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
    } else if (l4 === IPPROTO_SCTP) {
      // SCTP state, like TCP's, is serialised by the original tuple's bucket lock.
      const lk = c.stateLock(e);
      lock(i32, lk, this.wid);
      ret = sctpPacket(this.ctx, e, dir, pkt, res);
      unlock(i32, lk);
    } else {
      ret = this.l4packet(l4, pkt.family, e, dir, pkt, res);
    }
    if (ret !== PROTO_ACCEPT) {
      // An invalid packet may still shorten the timeout (the kernel's nf_tcp_handle_invalid).
      if (ret !== PROTO_REPEAT && res.timeout >= 0) this.refresh(e, pkt.now, this.timeoutFor(e, l4, pkt.now, res.timeout));
      if (ret === PROTO_REPEAT) {
        // A closed connection reopened: remove it (while we still hold our reference in
        // 'refcount' mode) and handle the packet as a new one.
        c.kill(slot, KILL_REOPEN);
        if (!c.noref) c.put(slot);
        if (repeats > 0) return this.invalid(v, R_REPEAT);
        return this.track(pkt, zone, ns, v, repeats + 1);
      }
      if (!c.noref) c.put(slot);
      return this.invalid(v, res.reason);
    }
    const xb = i32[e + E_EXT]!; // set before publication or by CAS; a settled word
    if (xb !== 0) this.extPacket(e, xb, dir, pkt);
    // A connection removed by this packet keeps its deadline: DESTROY reports the time it had left.
    if (res.timeout >= 0 && (res.events & EV_DESTROY) === 0) {
      this.refresh(e, pkt.now, xb !== 0 ? this.timeoutFor(e, l4, pkt.now, res.timeout) : res.timeout);
    }
    let ev = res.events;
    if (dir === DIR_REPLY && (ev & EV_DESTROY) === 0) {
      // Test-and-set: exactly one thread reports the first reply. (A reply that ends the
      // connection, a RST to a SYN, leaves it unreplied, as DESTROY then reports.)
      if ((Atomics.or(i32, e + E_STATUS, IPS_SEEN_REPLY) & IPS_SEEN_REPLY) === 0) ev |= EV_REPLY;
    }
    if (ev & EV_DESTROY) {
      // Accepted, but the connection ends here (TCP RST before any reply).
      c.kill(slot, KILL_DELETE);
    } else if (ev & (EV_PROTOINFO | EV_ASSURED | EV_REPLY)) {
      const f = ev & EV_PROTOINFO ? EVENT_F_PROTOINFO : 0;
      this.ring.emit(EVENT_UPDATE | f, e, pkt.now, this.eventTag);
      if (this.events) this.events.event(EVENT_UPDATE, e, pkt.now, f);
    }
    if (!c.noref) c.put(slot);
    v.state = state;
    v.dir = dir;
    v.slot = slot;
    return v;
  }

  /** Per-packet extension work: accounting (nf_conntrack_acct). */
  private extPacket(e: number, xb: number, dir: number, pkt: Packet): void {
    const x = this.table.sec.ext + xb * EXT_WORDS;
    // X_FLAGS only grows (Atomics.or) while the block lives; a plain read may miss a new bit once.
    if (this.i32[x + X_FLAGS]! & EXT_ACCT) acctAdd(this.i32, x, dir, pkt.ipLen);
  }

  /**
   * The timeout to apply: the tracker's choice (`seconds`), unless the connection has a timeout
   * policy (ext.ts) that sets one for its current state.
   */
  private timeoutFor(e: number, l4: number, now: number, seconds: number): number {
    const xb = this.i32[e + E_EXT]!;
    if (xb === 0) return seconds;
    const x = this.table.sec.ext + xb * EXT_WORDS;
    if ((this.i32[x + X_FLAGS]! & EXT_TIMEOUT) === 0) return seconds;
    const st = l4 === IPPROTO_TCP ? tcpState(this.ctx, e) : 0;
    return policyTimeout(this.i32, this.table.sec.policies, e, x, now, st, seconds);
  }

  /**
   * Give a fresh (private) entry its extension block when one of its extensions is on:
   * accounting or timestamps by sysctl, or a timeout policy attached to its zone.
   */
  private extCreate(e: number, slot: number, zone: number, now: number): void {
    const i32 = this.i32;
    const sys = this.table.sec.sysctl;
    const xc = this.table.sec.xctl;
    // Sysctl words: Atomics.store'd by setSysctl.
    let flags = (Atomics.load(i32, sys + S_ACCT) !== 0 ? EXT_ACCT : 0) |
      (Atomics.load(i32, sys + S_TIMESTAMP) !== 0 ? EXT_TSTAMP : 0);
    let pol = -1;
    // The zone map's count: Atomics.store'd under the policy lock.
    if (Atomics.load(i32, xc + XC_ZONE_POLICIES) !== 0) {
      pol = zonePolicy(i32, xc, this.table.sec.zonePolicies, zone);
      if (pol >= 0) flags |= EXT_TIMEOUT;
    }
    if (flags === 0) return;
    const b = extAlloc(this.table, this.wid, slot);
    if (b === 0) return; // slab empty: counted in XC_EXT_FAILED, the connection goes without
    extInitFresh(i32, this.table.sec.ext + b * EXT_WORDS, flags, now, pol);
    i32[e + E_EXT] = b; // private until confirm() publishes the entry
  }

  /** Set a confirmed entry's deadline (nf_ct_refresh), unless its timeout is fixed. */
  private refresh(e: number, now: number, seconds: number): void {
    const i32 = this.i32;
    // Status bits are set with Atomics.or; a plain read may miss a new one for this packet, as a
    // read racing with that Atomics.or could.
    if (i32[e + E_STATUS]! & IPS_FIXED_TIMEOUT) return;
    // The deadline is a lone word that the GC worker and other packet workers read racily: an
    // aligned plain store is tear-free and needs no ordering with other writes (the kernel's
    // WRITE_ONCE); Atomics.store costs an xchg per packet.
    i32[e + E_TIMEOUT] = (now + seconds * 1000) | 0;
  }

  /** Dispatch to the UDP, SCTP (fresh entries), UDP-Lite, GRE, ICMP or generic tracker. */
  private l4packet(l4: number, family: number, e: number, dir: number, pkt: Packet, res: ProtoResult): number {
    if (l4 === IPPROTO_UDP) return udpPacket(this.ctx, e, dir, pkt, res);
    // A fresh SCTP entry is private to this thread: no lock (confirmed ones go through track()).
    if (l4 === IPPROTO_SCTP) return sctpPacket(this.ctx, e, dir, pkt, res);
    if (l4 === IPPROTO_UDPLITE) return udplitePacket(this.ctx, e, dir, pkt, res);
    if (l4 === IPPROTO_GRE) return grePacket(this.ctx, e, dir, pkt, res);
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
    // Namespace and zone limits (zones.ts): at a limit, make room inside it or refuse.
    const zk = zoneKey(zone);
    const lim = c.zones.atLimit(ns, zk);
    if (lim !== 0 && !c.earlyDropWithin(lim, ns, zk, pkt.now)) return this.limited(v, lim);
    const slot = c.newEntry(h, pkt.now, ns);
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
    i32[e + E_ZONE] = zone;
    i32[e + E_NS] = ns;
    i32[e + E_HASH + DIR_ORIGINAL] = h | 0;
    i32[e + E_HASH + DIR_REPLY] = c.hash(t, TUPLE_WORDS, proto, zone >>> 16, ns) | 0;
    this.extCreate(e, slot, zk, pkt.now);
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
    const xb = i32[e + E_EXT]!; // ours: the entry is still private
    if (xb !== 0) this.extPacket(e, xb, DIR_ORIGINAL, pkt);
    const timeout = xb !== 0 ? this.timeoutFor(e, l4, pkt.now, res.timeout) : res.timeout;
    i32[e + E_TIMEOUT] = (pkt.now + Math.max(0, timeout) * 1000) | 0;
    // NAT: both hooks' decisions, before confirm (nf_nat_inet_fn on a NEW packet).
    if (this.nat.active()) {
      const r = this.nat.setup(e, pkt.now);
      if (r !== null) {
        c.discard(slot);
        this.stat(ST_NAT_FAILED);
        this.stat(ST_DROP);
        v.drop = true;
        return this.invalid(v, r);
      }
    }
    const natd = (i32[e + E_STATUS]! & IPS_SRC_NAT_DONE) !== 0; // ours: still private
    let k = c.confirm(slot);
    // Another insert of the namespace / zone took the last room meanwhile: one early_drop inside it.
    if ((k === CONFIRM_NS_LIMIT || k === CONFIRM_ZONE_LIMIT) && c.earlyDropWithin(k, ns, zk, pkt.now)) k = c.confirm(slot);
    if (k !== CONFIRM_OK) {
      c.discard(slot);
      if (k === CONFIRM_NS_LIMIT || k === CONFIRM_ZONE_LIMIT) return this.limited(v, k);
      if (k === CONFIRM_CHAIN_TOOLONG) {
        this.stat(ST_DROP);
        v.drop = true;
        return this.invalid(v, R_CHAIN_TOOLONG);
      }
      if (k === CONFIRM_DYING) return this.track(pkt, zone, ns, v, repeats);
      // Clash: another thread confirmed the same tuple first. Join its entry.
      if (!c.noref) c.put(k >>> 1);
      if (!allowClash(l4)) {
        // As the kernel's nf_ct_resolve_clash: only protocols with allow_clash (UDP, UDP-Lite,
        // ICMP, ICMPv6, DCCP) may join the winner; others (TCP, SCTP, GRE, ...) are dropped
        // (insert_failed), NAT or not, and the client retransmits onto the winner's entry.
        this.stat(ST_DROP);
        this.stat(ST_INSERT_FAILED);
        v.drop = true;
        if (!natd) return this.invalid(v, R_CLASH);
        this.stat(ST_NAT_FAILED);
        return this.invalid(v, R_NAT_CLASH);
      }
      // With directional zones the clashing entry may hold our reply tuple under a zone our
      // lookup never finds it by: then fail the insert (the kernel's insert_failed), never loop.
      const again = c.find(t, 0, proto, zone & 0xffff, ns, h, pkt.now, zone >>> 16);
      if (again >= 0 && !c.noref) c.put(again >>> 1);
      if (again < 0) {
        this.stat(ST_DROP);
        v.drop = true;
        if (natd) {
          // Another worker took our NAT reply tuple first (nf_ct_resolve_clash fails: the kernel drops).
          this.stat(ST_NAT_FAILED);
          this.stat(ST_INSERT_FAILED);
          return this.invalid(v, R_NAT_CLASH);
        }
        return this.invalid(v, R_ZONE_CLASH);
      }
      this.stat(ST_CLASH_RESOLVE);
      return this.track(pkt, zone, ns, v, repeats);
    }
    this.stat(ST_INSERT);
    this.stat(ST_NEW);
    this.ring.emit(EVENT_NEW, e, pkt.now, this.eventTag);
    if (this.events) this.events.event(EVENT_NEW, e, pkt.now);
    v.state = CT_NEW;
    v.dir = DIR_ORIGINAL;
    v.slot = slot;
    return v;
  }

  /** Remove every connection (conntrack -F). Must be called outside a batch. */
  flush(): number {
    let n = 0;
    this.now = this.table.clock;
    this.beginBatch();
    this.chains.forEach((_e, slot) => {
      if (this.chains.kill(slot, 0)) n++;
    });
    this.endBatch();
    return n;
  }

  /**
   * Deliver DESTROY events parked while the DESTROY ring was full (ecache.ts), as far as there
   * is room now. Packet batches and the GC do this on their own; call it when neither runs.
   * Must be called outside a batch. Returns the number still parked.
   */
  retryParkedEvents(): number {
    this.beginBatch();
    while (this.ring.parked > 0 && this.ring.retryParked() > 0);
    this.endBatch();
    return this.ring.parked;
  }

  /** Leave the table: give cached slots back and release the worker record. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const q = this.chains.qsbr;
    if (q.isOnline) q.offline();
    this.chains.foldCount();
    // Wait (bounded) for the grace period of what we retired, then hand everything back.
    for (let i = 0; i < 1000 && q.pending > 0; i++) {
      q.quiesce();
      if (q.pending > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
    this.chains.alloc.drain();
    this.table.releaseWorker(this.wid);
  }
}
