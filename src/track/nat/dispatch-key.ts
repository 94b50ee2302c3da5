/**
 * Flow dispatch with NAT (pool/dispatch.ts 'flow'): the two directions of a NAT'd connection
 * carry different tuples, so a hash of the packet cannot keep them on one worker. With NAT on,
 * the dispatcher asks this module which connection a packet belongs to (a read-only chain walk,
 * no lock, no worker record: a stale answer only changes which worker gets the packet) and sends
 * it to that connection's partition; packets of no connection yet (new connections, and the
 * first replies of connections created in the same batch) all go to one partition, in batch
 * order, so NAT decisions are made in capture order as on one thread.
 */
import { hashTuple } from '../../table/hash.js';
import {
  ENTRY_WORDS, E_NEXT, E_PROTO, E_TUPLE, H_KEY0, H_KEY1, TUPLE_WORDS,
} from '../../table/layout.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, type Packet } from '../../input/packet/packet.js';
import type { ConntrackTable } from '../../table/table.js';
import { invertTuple, protoWord, tupleFromInner, tupleFromPacket } from '../tuple.js';
import { NatRuleCache } from './rules.js';

const MAX_WALK = 64;

export class NatDispatchKey {
  private readonly rules: NatRuleCache;
  private readonly t = new Int32Array(2 * TUPLE_WORDS);
  private readonly i32: Int32Array;
  private readonly mask: number;

  constructor(private readonly table: ConntrackTable) {
    this.rules = new NatRuleCache(table);
    this.i32 = table.i32;
    this.mask = table.buckets - 1;
  }

  /** Is NAT on (rules installed)? */
  active(): boolean {
    return this.rules.refresh();
  }

  /** slot + 1 of the connection the parsed packet belongs to (zone 0, namespace 0), or 0. */
  connection(pkt: Packet): number {
    const t = this.t;
    let proto: number;
    if (pkt.icmpError && (pkt.l4proto === IPPROTO_ICMP || pkt.l4proto === IPPROTO_ICMPV6)) {
      if (pkt.innerReason !== null) return 0;
      tupleFromInner(pkt, t, TUPLE_WORDS);
      if (!invertTuple(t, TUPLE_WORDS, t, 0, pkt.innerProto)) return 0;
      proto = protoWord(pkt.family, pkt.innerProto);
    } else {
      tupleFromPacket(pkt, t, 0);
      proto = protoWord(pkt.family, pkt.l4proto);
    }
    const i32 = this.i32;
    const h = hashTuple(t, 0, proto, 0, 0, i32[H_KEY0]!, i32[H_KEY1]!);
    const E = this.table.sec.entries;
    // Chain words: Atomics.load, as every reader (chains.ts); the answer is only a hint.
    let ref = Atomics.load(i32, this.table.sec.buckets + (h & this.mask));
    for (let n = 0; ref >= 0 && n < MAX_WALK; n++) {
      const e = E + (ref >>> 1) * ENTRY_WORDS;
      const to = e + E_TUPLE + (ref & 1) * TUPLE_WORDS;
      let eq = i32[e + E_PROTO] === proto;
      for (let k = 0; eq && k < TUPLE_WORDS; k++) if (i32[to + k] !== t[k]) eq = false;
      if (eq) return (ref >>> 1) + 1;
      ref = Atomics.load(i32, e + E_NEXT + (ref & 1));
    }
    return 0;
  }
}
