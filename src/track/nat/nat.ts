/**
 * NAT on the per-packet path, one object per thread (Conntrack owns it):
 *  - setup(): at a connection's first packet, before confirm, the kernel's two nat hooks in
 *    order: prerouting (DNAT / redirect, else nothing) then postrouting (SNAT / masquerade, else
 *    the null binding that still moves the source port off a clash), each through the
 *    unique-tuple search (unique.ts). The result is the entry's reply tuple; the manips done are
 *    status bits; the bysource link is made by confirm.
 *  - apply(): every accepted packet of a NAT'd connection is rewritten in place (rewrite.ts);
 *    ICMP errors about one have their quoted packet translated too.
 */
import type { Chains } from '../../table/chains.js';
import {
  DIR_ORIGINAL, DIR_REPLY, E_HASH, E_MARK, E_NS, E_PROTO, E_STATUS, E_TUPLE, E_ZONE, IPS_DST_NAT, IPS_DST_NAT_DONE,
  IPS_NAT_MASK, IPS_SRC_NAT, IPS_SRC_NAT_DONE, T_DST, T_SRC, TUPLE_WORDS,
} from '../../table/layout.js';
import { NFPROTO_IPV4, type Packet } from '../../input/packet/packet.js';
import { invertTuple, l4protoOf, tupleEquals } from '../tuple.js';
import { CT_INVALID, CT_RELATED, type Verdict } from '../verdict.js';
import { zoneKey } from '../../table/zones.js';
import {
  CompiledIface, CompiledRule, NatRange, NatRuleCache, RANGE_MAP_IPS, T_MASQ, T_REDIRECT, inPrefix,
} from './rules.js';
import { manipIp, translateIcmpError } from './rewrite.js';
import { natPlacement } from './bysource.js';
import { extAlloc } from '../../table/ext.js';
import { ENTRY_WORDS, E_EXT, NAT_IN_EXT } from '../../table/layout.js';
import { MANIP_DST, MANIP_SRC, TupleSearch } from './unique.js';
import type { ConntrackTable } from '../../table/table.js';

export const R_NAT_NO_TUPLE = 'NAT: no free tuple in the range';
export const R_NAT_NO_ADDRESS = 'NAT: interface has no address of the packet\'s family';
export const R_NAT_CLASH = 'NAT: reply tuple taken by another connection at confirm';
export const R_NAT_REDIRECT = 'NAT: ICMP redirect for a NAT\'d connection';
export const R_NAT_NO_EXT = 'NAT: extension area full (placement experiment)';


/** Verdict.nat bits: what apply() rewrote. */
export const NAT_REWROTE_SRC = 1;
/** Verdict.nat bit: the destination (address/port) was rewritten. */
export const NAT_REWROTE_DST = 2;
/** Verdict.nat bit: an ICMP error's quoted packet was rewritten. */
export const NAT_REWROTE_INNER = 4;

const LOOPBACK4 = new Int32Array([0x7f000001, 0, 0, 0]);
const LOOPBACK6 = new Int32Array([0, 0, 0, 1]);

export class Nat {
  readonly rules: NatRuleCache;
  readonly search: TupleSearch;
  private readonly i32: Int32Array;
  /** Scratch: [0] tuple so far, [1] after the manip, [2] a target. */
  private readonly t = new Int32Array(3 * TUPLE_WORDS);
  private readonly nullRange = new NatRange();
  private readonly ifRange = new NatRange();

  constructor(private readonly table: ConntrackTable, private readonly chains: Chains) {
    this.rules = new NatRuleCache(table);
    this.search = new TupleSearch(chains);
    this.i32 = table.i32;
  }

  /** Is NAT on for new connections (a rule set installed)? */
  active(): boolean {
    return this.rules.refresh();
  }

  private routeIface(ifaces: CompiledIface[], a: Int32Array, ao: number, family: number): number {
    let best = -1;
    let bestLen = -1;
    for (let k = 0; k < ifaces.length; k++) {
      for (const r of ifaces[k]!.routes) {
        if (r.family === family && r.prefix > bestLen && inPrefix(a, ao, r.addr, r.prefix)) {
          best = k;
          bestLen = r.prefix;
        }
      }
    }
    return best;
  }

  /** First rule of `list` matching tuple t[off..] of entry e; -1 none. */
  private match(list: CompiledRule[], t: Int32Array, off: number, e: number, iif: number, oif: number): number {
    const i32 = this.i32;
    const proto = i32[e + E_PROTO]!;
    const family = proto & 0xff;
    const l4 = l4protoOf(proto);
    const zk = zoneKey(i32[e + E_ZONE]!);
    const ns = i32[e + E_NS]!;
    const mark = i32[e + E_MARK]!;
    const ports = t[off + 8]!;
    for (let k = 0; k < list.length; k++) {
      const r = list[k]!;
      if (r.family !== 0 && r.family !== family) continue;
      if (r.proto >= 0 && r.proto !== l4) continue;
      if (r.hasS && !inPrefix(t, off + T_SRC, r.sAddr, r.sPrefix)) continue;
      if (r.hasD && !inPrefix(t, off + T_DST, r.dAddr, r.dPrefix)) continue;
      if (r.spLo >= 0 && ((ports >>> 16) < r.spLo || (ports >>> 16) > r.spHi)) continue;
      if (r.dpLo >= 0 && ((ports & 0xffff) < r.dpLo || (ports & 0xffff) > r.dpHi)) continue;
      if (r.zone >= 0 && r.zone !== zk) continue;
      if (r.ns >= 0 && r.ns !== ns) continue;
      if (r.markMask !== 0 && (mark & r.markMask) !== r.mark) continue;
      if (r.iif >= 0 && r.iif !== iif) continue;
      if (r.oif >= 0 && r.oif !== oif) continue;
      return k;
    }
    return -1;
  }

  /** The range of a masquerade / redirect rule: the interface's address; null when it has none. */
  private ifaceRange(r: CompiledRule, iface: CompiledIface | undefined, family: number): NatRange | null {
    const out = this.ifRange;
    out.flags = r.range.flags;
    out.minPort = r.range.minPort;
    out.maxPort = r.range.maxPort;
    const v4 = family === NFPROTO_IPV4;
    let a: Int32Array | null = null;
    if (iface !== undefined) a = v4 ? (iface.has4 ? iface.addr4 : null) : (iface.has6 ? iface.addr6 : null);
    if (a === null && r.type === T_REDIRECT) a = v4 ? LOOPBACK4 : LOOPBACK6; // locally generated: loopback
    if (a === null) return null;
    out.minAddr.set(a);
    out.maxAddr.set(a);
    out.flags |= RANGE_MAP_IPS;
    return out;
  }

  /**
   * Decide the NAT of a new, private entry `e` (tuples and hashes set): may change its reply tuple
   * and reply hash and sets IPS_{SRC,DST}_NAT{,_DONE}. Returns null, or why the packet is dropped.
   */
  setup(e: number, now: number): string | null {
    const i32 = this.i32;
    const { pre, post, ifaces } = this.rules.nat;
    const proto = i32[e + E_PROTO]!;
    const family = proto & 0xff;
    const l4 = l4protoOf(proto);
    const zone = i32[e + E_ZONE]!;
    const ns = i32[e + E_NS]!;
    const t = this.t;
    const CUR = 0;
    const NEW = TUPLE_WORDS;
    const reply = e + E_TUPLE + DIR_REPLY * TUPLE_WORDS;
    const orig = e + E_TUPLE + DIR_ORIGINAL * TUPLE_WORDS;
    let status = 0;
    // Prerouting: destination manip. The null binding for a destination never changes it.
    const iif = this.routeIface(ifaces, i32, orig + T_SRC, family);
    const d = this.match(pre, i32, orig, e, iif, -1);
    if (d >= 0) {
      const r = pre[d]!;
      const range = r.ifaceAddr ? this.ifaceRange(r, ifaces[iif], family) : r.range;
      if (range === null) return R_NAT_NO_ADDRESS;
      invertTuple(i32, reply, t, CUR, l4);
      this.search.unique(t, NEW, t, CUR, range, MANIP_DST, proto, zone, ns, now, e);
      if (!tupleEquals(t, NEW, t, CUR)) {
        invertTuple(t, NEW, i32, reply, l4);
        status |= IPS_DST_NAT;
      }
    }
    status |= IPS_DST_NAT_DONE;
    // Postrouting: source manip, matched on the packet as the destination manip left it.
    invertTuple(i32, reply, t, CUR, l4);
    const oif = this.routeIface(ifaces, t, CUR + T_DST, family);
    const s = this.match(post, t, CUR, e, iif, oif);
    let range: NatRange;
    if (s >= 0) {
      const r = post[s]!;
      const x = r.type === T_MASQ ? this.ifaceRange(r, ifaces[oif], family) : r.range;
      if (x === null) return R_NAT_NO_ADDRESS;
      range = x;
    } else {
      // Null binding: keep the source address; the port moves only if the tuple is taken.
      range = this.nullRange;
      range.flags = RANGE_MAP_IPS;
      for (let i = 0; i < 4; i++) range.minAddr[i] = range.maxAddr[i] = t[CUR + T_SRC + i]!;
    }
    const ok = this.search.unique(t, NEW, t, CUR, range, MANIP_SRC, proto, zone, ns, now, e);
    if (!tupleEquals(t, NEW, t, CUR)) {
      invertTuple(t, NEW, i32, reply, l4);
      status |= IPS_SRC_NAT;
    }
    status |= IPS_SRC_NAT_DONE;
    if (!ok) return R_NAT_NO_TUPLE;
    if (status & IPS_NAT_MASK) {
      i32[e + E_HASH + DIR_REPLY] = this.chains.hash(i32, reply, proto, zone >>> 16, ns) | 0;
    }
    // Placement experiment: the bysource link in an extension block (nat/bysource.ts).
    if (natPlacement(this.table) === NAT_IN_EXT && i32[e + E_EXT] === 0) {
      const b = extAlloc(this.table, this.chains.wid, (e - this.chains.E) / ENTRY_WORDS);
      if (b === 0) return R_NAT_NO_EXT;
      i32[e + E_EXT] = b; // private until confirm publishes the entry
    }
    // Private until confirm: a plain or-in would do; Atomics keeps the status word's one discipline.
    Atomics.or(i32, e + E_STATUS, status);
    return null;
  }

  /**
   * Rewrite the packet of verdict `v` in place if its connection is NAT'd (both hooks' work).
   * Returns NAT_REWROTE_* bits, or -1 when the packet must be dropped (an ICMP redirect).
   */
  apply(pkt: Packet, v: Verdict): number {
    if (v.slot < 0 || v.state === CT_INVALID || v.dir < 0) return 0;
    const i32 = this.i32;
    const e = this.chains.entry(v.slot);
    // NAT bits are set before the entry is published and never change after: a plain read
    // (ordered by the lookup's Atomics.load of the bucket head that found it).
    const status = i32[e + E_STATUS]!;
    if ((status & IPS_NAT_MASK) === 0) return 0;
    const dir = v.dir;
    const other = e + E_TUPLE + (1 - dir) * TUPLE_WORDS;
    const l4 = l4protoOf(i32[e + E_PROTO]!);
    const t = this.t;
    const TGT = 2 * TUPLE_WORDS;
    invertTuple(i32, other, t, TGT, l4);
    // Source manip for this direction: SRC_NAT in the original direction, DST_NAT's undo in the reply.
    const srcBit = dir === DIR_ORIGINAL ? IPS_SRC_NAT : IPS_DST_NAT;
    const dstBit = dir === DIR_ORIGINAL ? IPS_DST_NAT : IPS_SRC_NAT;
    let done = 0;
    if (v.state === CT_RELATED && pkt.icmpError) {
      const v4 = pkt.family === NFPROTO_IPV4;
      if (pkt.icmpType === (v4 ? 5 : 137)) {
        // The kernel drops redirects about connections it translates.
        return -1;
      }
      // The inner target is the other direction's tuple as is (copied: the entry is shared).
      for (let i = 0; i < TUPLE_WORDS; i++) t[i] = i32[other + i]!;
      if (status & dstBit) { translateIcmpError(pkt, t, 0, t, TGT, MANIP_DST); done |= NAT_REWROTE_DST | NAT_REWROTE_INNER; }
      if (status & srcBit) { translateIcmpError(pkt, t, 0, t, TGT, MANIP_SRC); done |= NAT_REWROTE_SRC | NAT_REWROTE_INNER; }
      return done;
    }
    const end = pkt.l4off + pkt.l4len;
    // Prerouting's destination manip, then postrouting's source manip.
    if (status & dstBit) {
      manipIp(pkt.buf, pkt.family, pkt.l3off, pkt.l4off, end, pkt.l4proto, t, TGT, MANIP_DST, pkt.complete);
      done |= NAT_REWROTE_DST;
    }
    if (status & srcBit) {
      manipIp(pkt.buf, pkt.family, pkt.l3off, pkt.l4off, end, pkt.l4proto, t, TGT, MANIP_SRC, pkt.complete);
      done |= NAT_REWROTE_SRC;
    }
    return done;
  }
}
