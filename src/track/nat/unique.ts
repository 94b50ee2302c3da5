/**
 * The unique-tuple search (the kernel's nf_nat_core.c get_unique_tuple,
 * nf_nat_l4proto_unique_tuple, nf_nat_used_tuple, find_appropriate_src, find_best_ips_proto):
 * given the tuple a new connection has so far and a range, pick the tuple after the manip so
 * that its reply is used by no other connection.
 *
 * Deviations, all inside what the kernel allows: where the kernel draws a random port offset
 * (get_random_u16) we use a keyed hash of the connection's tuple unless the rule says
 * `fully-random` (then a per-thread PRNG), so replays are reproducible and a flow gets the same
 * port on any worker. The address pick in a multi-address range is the kernel's (jhash2, jhash.ts).
 * A tuple "used" check is a lookup of the reply in the shared table; a race
 * between two workers picking the same tuple is caught at confirm under the reply bucket's lock.
 */
import { hashTuple } from '../../table/hash.js';
import type { Chains } from '../../table/chains.js';
import {
  DIR_REPLY, E_NS, E_PROTO, E_TUPLE, E_ZONE, H_KEY0, H_KEY1, T_DST, T_PORTS, T_SRC, TUPLE_WORDS,
} from '../../table/layout.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6 } from '../../input/packet/packet.js';
import { invertTuple, l4protoOf } from '../tuple.js';
import { bysourceFind } from './bysource.js';
import { bswap32, jhash2 } from './jhash.js';
import { KILL_DELETE } from '../../table/chains.js';
import {
  DIR_ORIGINAL, E_PRIV, E_STATUS, IPS_DYING, IPS_FIXED_TIMEOUT, IPS_SRC_NAT, TCP_DIR, TD_END, TCP_STATE,
} from '../../table/layout.js';
import { TCP_CONNTRACK_SYN_SENT, TCP_CONNTRACK_TIME_WAIT } from '../proto/tcp.js';
import {
  NatRange, RANGE_MAP_IPS, RANGE_PERSISTENT, RANGE_PROTO_RANDOM_ALL, RANGE_PROTO_RANDOM_FULLY,
  RANGE_PROTO_SPECIFIED,
} from './rules.js';

export const MANIP_SRC = 0;
export const MANIP_DST = 1;

const MAX_ATTEMPTS = 128;
const MIN_ATTEMPTS = 16;
/** The last tries of a TCP SYN may evict a NAT'd connection in TIME_WAIT (nf_nat_used_tuple_harder). */
const HARDER_THRESH = MAX_ATTEMPTS / 4;

/** Protocols whose ports the NAT changes (TCP, UDP, UDP-Lite, SCTP, DCCP). */
function portProto(l4: number): boolean {
  return l4 === 6 || l4 === 17 || l4 === 136 || l4 === 132 || l4 === 33;
}
function icmpProto(l4: number): boolean {
  return l4 === IPPROTO_ICMP || l4 === IPPROTO_ICMPV6;
}

/** The manipulable "port" of tuple t[off..]: ICMP id, else source or destination port. */
export function manipPort(t: Int32Array, off: number, l4: number, manip: number): number {
  const p = t[off + T_PORTS]!;
  if (icmpProto(l4) || manip === MANIP_SRC) return p >>> 16;
  return p & 0xffff;
}
export function setManipPort(t: Int32Array, off: number, l4: number, manip: number, port: number): void {
  const p = t[off + T_PORTS]!;
  if (icmpProto(l4) || manip === MANIP_SRC) t[off + T_PORTS] = ((port & 0xffff) << 16) | (p & 0xffff);
  else t[off + T_PORTS] = (p & ~0xffff) | (port & 0xffff);
}

function addrCmp(a: Int32Array, ao: number, b: Int32Array, bo: number): number {
  for (let i = 0; i < 4; i++) {
    const x = a[ao + i]! >>> 0;
    const y = b[bo + i]! >>> 0;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

export class TupleSearch {
  /** Scratch: the reply of a candidate, and a tuple from bysource. */
  private readonly r = new Int32Array(TUPLE_WORDS);
  private readonly cand = new Int32Array(TUPLE_WORDS);
  private rng: number;
  /** Context of the connection being set up (fields, not arguments, so the bysource visitor needs no closure per call). */
  private proto = 0;
  private zone = 0;
  private ns = 0;
  private now = 0;
  private range: NatRange = new NatRange();
  private orig: Int32Array = this.cand;
  private origOff = 0;
  private out: Int32Array = this.cand;
  private outOff = 0;
  private readonly visitSrc = (e: number): boolean => this.sameSrc(e);
  /** The connection being set up (entry word offset), for the TCP eviction rule. */
  private self = 0;
  /** The entry the last used() found (word offset), -1 none. */
  private lastFound = -1;
  /** Reply-tuple lookups made (for tests and the bench). */
  lookups = 0;
  /** TIME_WAIT connections evicted to free a tuple (nf_nat_used_tuple_harder). */
  evicted = 0;

  constructor(private readonly chains: Chains) {
    const b = new Uint32Array(1);
    globalThis.crypto.getRandomValues(b);
    this.rng = b[0]! | 1;
  }

  private random16(): number {
    // xorshift32: the fully-random offsets
    let x = this.rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rng = x;
    return (x >>> 8) & 0xffff;
  }

  /**
   * Is the reply of tuple t[off..] used by a connection in the table (nf_nat_used_tuple)? The
   * connection being set up is not in the table yet, so it never finds itself.
   */
  used(t: Int32Array, off: number): boolean {
    const r = this.r;
    if (!invertTuple(t, off, r, 0, l4protoOf(this.proto))) return false;
    const c = this.chains;
    const rz = this.zone >>> 16;
    const h = c.hash(r, 0, this.proto, rz, this.ns);
    this.lookups++;
    const ref = c.find(r, 0, this.proto, this.zone & 0xffff, this.ns, h, this.now, rz);
    if (ref >= 0 && !c.noref) c.put(ref >>> 1);
    this.lastFound = ref < 0 ? -1 : ref;
    return ref >= 0;
  }

  /**
   * used(), except in the last HARDER_THRESH tries for a TCP SYN: a colliding connection that
   * is NAT'd (SRC_NAT), in TIME_WAIT or CLOSE, not fixed or dying, and whose sequence space the
   * new SYN has moved past, is removed to free the tuple (nf_nat_used_tuple_harder).
   */
  private usedHarder(t: Int32Array, off: number, attemptsLeft: number): boolean {
    const i32 = this.chains.i32;
    const self = this.self;
    if (attemptsLeft > HARDER_THRESH || l4protoOf(this.proto) !== 6 ||
      (i32[self + E_PRIV + TCP_STATE]! & 15) !== TCP_CONNTRACK_SYN_SENT) return this.used(t, off);
    if (!this.used(t, off)) return false;
    const ref = this.lastFound;
    if ((ref & 1) === DIR_ORIGINAL) return true; // our reply is its original tuple: leave it
    const e = this.chains.entry(ref >>> 1);
    const status = Atomics.load(i32, e + E_STATUS); // DYING / FIXED set atomically elsewhere
    if ((status & (IPS_FIXED_TIMEOUT | IPS_DYING)) !== 0 || (status & IPS_SRC_NAT) === 0) return true;
    // TCP state and window words: another thread may be updating them; a stale read only decides this eviction.
    if ((i32[e + E_PRIV + TCP_STATE]! & 15) < TCP_CONNTRACK_TIME_WAIT) return true;
    const td = E_PRIV + TCP_DIR + TD_END; // direction 0's td_end
    if (((i32[self + td]! - i32[e + td]!) | 0) <= 0) return true;
    if (!this.chains.kill(ref >>> 1, KILL_DELETE)) return true;
    this.evicted++;
    return false;
  }

  /** Would source-mapping give tuple t[off..] inside the range (in_range)? */
  private inRange(t: Int32Array, off: number, range: NatRange): boolean {
    if ((range.flags & RANGE_MAP_IPS) !== 0 &&
      (addrCmp(t, off + T_SRC, range.minAddr, 0) < 0 || addrCmp(t, off + T_SRC, range.maxAddr, 0) > 0)) return false;
    if ((range.flags & RANGE_PROTO_SPECIFIED) === 0) return true;
    return this.l4InRange(t, off, MANIP_SRC, range);
  }

  private l4InRange(t: Int32Array, off: number, manip: number, range: NatRange): boolean {
    const l4 = l4protoOf(this.proto);
    if (!icmpProto(l4) && !portProto(l4) && l4 !== 47) return true;
    const p = manipPort(t, off, l4, manip);
    return p >= range.minPort && p <= range.maxPort;
  }

  /** Bysource visitor: same original source, namespace and zone, and its mapping in range. */
  private sameSrc(e: number): boolean {
    const i32 = this.chains.i32;
    if (i32[e + E_PROTO] !== this.proto || i32[e + E_NS] !== this.ns) return false;
    if ((i32[e + E_ZONE]! & 0xffff) !== (this.zone & 0xffff)) return false;
    const o = this.orig;
    const oo = this.origOff;
    const et = e + E_TUPLE;
    for (let i = 0; i < 4; i++) if (i32[et + T_SRC + i] !== o[oo + T_SRC + i]) return false;
    if ((i32[et + T_PORTS]! >>> 16) !== (o[oo + T_PORTS]! >>> 16)) return false;
    // Its source part, from its reply tuple; our destination.
    const out = this.out;
    const ob = this.outOff;
    invertTuple(i32, e + E_TUPLE + DIR_REPLY * TUPLE_WORDS, out, ob, l4protoOf(this.proto));
    for (let i = 0; i < 4; i++) out[ob + T_DST + i] = o[oo + T_DST + i]!;
    const l4 = l4protoOf(this.proto);
    if (!icmpProto(l4)) out[ob + T_PORTS] = (out[ob + T_PORTS]! & ~0xffff) | (o[oo + T_PORTS]! & 0xffff);
    else out[ob + T_PORTS] = (out[ob + T_PORTS]! & ~0xffff) | (o[oo + T_PORTS]! & 0xffff);
    return this.inRange(out, ob, this.range);
  }

  /** The least-used address in the range, by a hash of the addresses (find_best_ips_proto). */
  private bestIps(t: Int32Array, off: number, range: NatRange, manip: number): void {
    if ((range.flags & RANGE_MAP_IPS) === 0) return;
    const var0 = off + (manip === MANIP_SRC ? T_SRC : T_DST);
    if (addrCmp(range.minAddr, 0, range.maxAddr, 0) === 0) {
      for (let i = 0; i < 4; i++) t[var0 + i] = range.minAddr[i]!;
      return;
    }
    const v4 = (this.proto & 0xff) === 2;
    const max = v4 ? 0 : 3;
    const persistent = (range.flags & RANGE_PERSISTENT) !== 0;
    // The kernel's choice: jhash2 over the 4 source address words as a little-endian CPU loads
    // them, seeded by the destination's last word ^ the zone id unless persistent; then per word
    // reciprocal_scale into the range, the hash xor'ed with each destination word unless persistent.
    const k = this.r;
    for (let i = 0; i < 4; i++) k[i] = bswap32(t[off + T_SRC + i]!);
    const zoneId = this.zone & 0xffff;
    let j = jhash2(k, 4, persistent ? 0 : (bswap32(t[off + T_DST + max]!) ^ zoneId) | 0);
    let full = false;
    for (let i = 0; i <= max; i++) {
      let minip: number;
      let dist: number;
      if (!full) {
        minip = range.minAddr[i]! >>> 0;
        dist = ((range.maxAddr[i]! >>> 0) - minip + 1) >>> 0; // uint32: the whole space wraps to 0
      } else {
        minip = 0;
        dist = 0xffffffff;
      }
      // reciprocal_scale: the high word of the 64-bit product j * dist, exact in 16-bit halves.
      const jh = j >>> 16, jl = j & 0xffff, dh = dist >>> 16, dl = dist & 0xffff;
      const pick = jh * dh + Math.floor((jh * dl + jl * dh + Math.floor((jl * dl) / 65536)) / 65536);
      t[var0 + i] = (minip + pick) | 0;
      if (t[var0 + i] !== range.maxAddr[i]) full = true;
      if (!persistent) j = (j ^ bswap32(t[off + T_DST + i]!)) >>> 0;
    }
  }

  /**
   * Pick the port / ICMP id (nf_nat_l4proto_unique_tuple): from an offset, up to 128 tries, then
   * new offsets with half as many tries down to 16. Returns false when every try was used.
   */
  private l4Unique(t: Int32Array, off: number, range: NatRange, manip: number): boolean {
    const l4 = l4protoOf(this.proto);
    let min: number;
    let size: number;
    if (icmpProto(l4)) {
      if ((range.flags & RANGE_PROTO_SPECIFIED) === 0) { min = 0; size = 65536; }
      else { min = range.minPort; size = range.maxPort - range.minPort + 1; }
    } else if (portProto(l4)) {
      if ((range.flags & RANGE_PROTO_SPECIFIED) === 0) {
        if (manip === MANIP_DST) return !this.used(t, off); // a destination port is never changed unasked
        const p = manipPort(t, off, l4, manip);
        if (p < 1024) {
          if (p < 512) { min = 1; size = 511; }
          else { min = 600; size = 1023 - 600 + 1; }
        } else { min = 1024; size = 65535 - 1024 + 1; }
      } else {
        min = Math.min(range.minPort, range.maxPort);
        size = Math.abs(range.maxPort - range.minPort) + 1;
      }
    } else {
      return !this.used(t, off); // GRE without a PPTP master, other protocols: nothing to change
    }
    const fully = (range.flags & RANGE_PROTO_RANDOM_FULLY) !== 0;
    let round = 0;
    let offset = fully ? this.random16() : this.offsetFor(t, off, round);
    let attempts = size > MAX_ATTEMPTS ? MAX_ATTEMPTS : size;
    for (;;) {
      for (let i = 0; i < attempts; i++, offset = (offset + 1) & 0xffff) {
        setManipPort(t, off, l4, manip, min + (offset % size));
        if (!this.usedHarder(t, off, attempts - i)) return true;
      }
      if (attempts >= size || attempts < MIN_ATTEMPTS) return false;
      attempts >>>= 1;
      round++;
      offset = fully ? this.random16() : this.offsetFor(t, off, round);
    }
  }

  /** Deterministic per-flow offset: a keyed hash of the connection's original tuple and the round. */
  private offsetFor(t: Int32Array, off: number, round: number): number {
    const i32 = this.chains.i32;
    const o = this.orig;
    return (hashTuple(o, this.origOff, this.proto, round, this.ns, i32[H_KEY1]!, i32[H_KEY0]!) >>> 8) & 0xffff;
  }

  /**
   * get_unique_tuple: write into out[outOff..] the tuple after a `manip` into `range` of
   * orig[origOff..] (the connection's tuple so far). Returns false when the result is still used
   * by another connection (every try taken: the caller drops the packet).
   */
  unique(
    out: Int32Array, outOff: number, orig: Int32Array, origOff: number, range: NatRange, manip: number,
    proto: number, zone: number, ns: number, now: number, self: number,
  ): boolean {
    this.self = self;
    this.proto = proto;
    this.zone = zone;
    this.ns = ns;
    this.now = now;
    this.range = range;
    this.orig = orig;
    this.origOff = origOff;
    this.out = out;
    this.outOff = outOff;
    const randomAll = (range.flags & RANGE_PROTO_RANDOM_ALL) !== 0;
    // 1) Source manip: keep the original if it fits and is free; else reuse this source's mapping.
    if (manip === MANIP_SRC && !randomAll) {
      if (this.inRange(orig, origOff, range)) {
        if (!this.used(orig, origOff)) {
          for (let i = 0; i < TUPLE_WORDS; i++) out[outOff + i] = orig[origOff + i]!;
          return true;
        }
      } else if (bysourceFind(this.chains.table, this.chains.wid, orig, origOff, proto, zone, ns, this.visitSrc) >= 0) {
        if (!this.used(out, outOff)) return true;
      }
    }
    // 2) The address.
    for (let i = 0; i < TUPLE_WORDS; i++) out[outOff + i] = orig[origOff + i]!;
    this.bestIps(out, outOff, range, manip);
    // 3) The port, only if not already in range and free.
    if (!randomAll) {
      if ((range.flags & RANGE_PROTO_SPECIFIED) !== 0) {
        if (this.l4InRange(out, outOff, manip, range) &&
          (range.minPort === range.maxPort || !this.used(out, outOff))) {
          return range.minPort !== range.maxPort || !this.used(out, outOff);
        }
      } else if (!this.used(out, outOff)) {
        return true;
      }
    }
    return this.l4Unique(out, outOff, range, manip);
  }
}
