/**
 * Splitting a batch between workers (runs on the dispatching thread).
 *
 *  - 'flow': packets go to partition (symmetric flow hash mod parts). Both directions of a
 *    connection, and ICMP errors (by the tuple they quote), land in one partition, and each
 *    partition lists its packets in batch order. A partition is one task, decided by one worker
 *    in that order, and the next batch is dispatched only after this one settled, so every
 *    connection sees its packets in capture order, as on one thread.
 *  - 'free': contiguous chunks, any packet to any worker (throughput; decisions may differ
 *    from one thread when workers race on the same connection).
 *
 * With NAT rules in the table, 'flow' partitions by connection instead (nat/dispatch-key.ts):
 * a NAT'd connection's two directions have different tuples.
 *
 * The flow hash deliberately ignores what could differ between packets of one connection:
 * direction (the address pair and the port pair are each taken unordered), ICMP ids and types,
 * zone and namespace. A coarser key only groups more; it never splits a connection.
 *
 * Fragments: in a batch where two hosts exchange fragments, every packet between them hashes by
 * the address pair alone (ports are unknown before reassembly), so the worker that completes a
 * datagram decides it in order with its flow's other packets. Reassembly queues are shared by all
 * workers (src/input/defrag, one store per pool), so a datagram spread over batches completes
 * on whichever worker gets its last fragment.
 */
import {
  BH_DONE, BH_TASKS, IX_FLOW, IX_LEN, IX_LINKTYPE, IX_OFF, IX_PART, IX_WORDS, MAX_TASKS, PacketBatch,
  TASK_WORDS, TK_FROM, TK_PROGRESS, TK_THREAD, TK_TO, TK_WID,
} from './batch.js';
import { parseFrame } from '../input/packet/parse.js';
import {
  IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_RAW, Packet,
} from '../input/packet/packet.js';
import { hasPorts } from '../track/tuple.js';
import { rangeError } from '../errors.js';
import type { NatDispatchKey } from '../track/nat/dispatch-key.js';

export type DispatchMode = 'flow' | 'free';

/** A 32-bit finaliser (avalanche) on one word. */
function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * An address's hash: its four words folded (odd multipliers keep them apart), then mixed once.
 * An IPv4 address (words 1-3 zero) hashes as mix(word 0), which peekFlow uses. Only partitions
 * depend on it: one mix per address, as each worker hashes every packet of a replay batch.
 */
function addrHash(a: Uint32Array): number {
  return addrHash4(a[0]! ^ Math.imul(a[1]!, 0x85ebca77) ^ Math.imul(a[2]!, 0xc2b2ae3d) ^ Math.imul(a[3]!, 0x27d4eb2f));
}

function addrHash4(w: number): number {
  return mix((w ^ 0x9747b28c) >>> 0);
}

function symmetric(src: Uint32Array, dst: Uint32Array, sport: number, dport: number, l4: number): number {
  // Sum of the per-address hashes: the same for (a, b) and (b, a).
  return symmetricOf((addrHash(src) + addrHash(dst)) >>> 0, sport, dport, l4);
}

/** symmetric() from the sum of the two address hashes. */
function symmetricOf(pair: number, sport: number, dport: number, l4: number): number {
  let h = pair;
  if (hasPorts(l4)) {
    const lo = sport < dport ? sport : dport;
    const hi = sport < dport ? dport : sport;
    h = mix((h ^ Math.imul((lo << 16) | hi, 0x27d4eb2d)) >>> 0);
  }
  return mix((h ^ (l4 * 0x01000193)) >>> 0);
}

/**
 * Symmetric flow hash of a parsed packet (unsigned 32-bit). ICMP errors hash by the tuple they
 * quote. Packets that cannot touch a connection (parse errors, unusable ICMP errors) hash to
 * `fallback` (callers pass something that spreads them, e.g. the packet index).
 */
export function flowHash(pkt: Packet, fallback: number): number {
  if (pkt.reason !== null) return fallback >>> 0;
  if (pkt.icmpError && (pkt.l4proto === IPPROTO_ICMP || pkt.l4proto === IPPROTO_ICMPV6)) {
    if (pkt.innerReason !== null || pkt.innerFamily !== pkt.family) return fallback >>> 0;
    return symmetric(pkt.innerSrc, pkt.innerDst, pkt.innerSport, pkt.innerDport, pkt.innerProto);
  }
  return symmetric(pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.l4proto);
}

/**
 * Symmetric hash of a packet's address pair only (ICMP errors: the quoted packet's), never 0:
 * what fragments of one datagram and every packet of its flow share.
 */
export function pairHash(pkt: Packet): number {
  const err = pkt.icmpError && (pkt.l4proto === IPPROTO_ICMP || pkt.l4proto === IPPROTO_ICMPV6) && pkt.innerReason === null;
  const h = err ? (addrHash(pkt.innerSrc) + addrHash(pkt.innerDst)) >>> 0 : (addrHash(pkt.src) + addrHash(pkt.dst)) >>> 0;
  return mix(h) || 1;
}

const ETH_HLEN = 14;
const ETH_P_IP = 0x0800;
const IPV4_MIN_HLEN = 20;
/** IPv4 flags + fragment offset: MF and the offset (a fragment when any is set). */
const IPV4_FRAG_MASK = 0x3fff;

/** The sum of the address hashes of the last peekFlow that returned a flow hash (pairHash: mixed). */
let peekAddrs = 0;

/**
 * The flow hash of the commonest frames read straight from their bytes (no full parse):
 * Ethernet (untagged) or raw IPv4, not a fragment, TCP or UDP with both ports inside the IP
 * length and the capture. Returns -1 for anything else (the caller parses). When the full parse
 * would accept the packet it reads the same addresses, protocol and ports, so both give the same
 * hash; when it would reject it (bad checksum, short header), the packet touches no connection
 * and any partition decides it alike.
 */
export function peekFlow(linktype: number, b: Uint8Array, off: number, len: number): number {
  let end = off + len;
  if (off < 0 || len < 0 || off > b.length) return -1;
  if (end > b.length) end = b.length;
  let p = off;
  if (linktype === LINKTYPE_ETHERNET) {
    if (end - p < ETH_HLEN + IPV4_MIN_HLEN || ((b[p + 12]! << 8) | b[p + 13]!) !== ETH_P_IP) return -1;
    p += ETH_HLEN;
  } else if (linktype !== LINKTYPE_RAW && linktype !== LINKTYPE_IPV4) {
    return -1;
  }
  if (end - p < IPV4_MIN_HLEN) return -1;
  const vihl = b[p]!;
  const ihl = (vihl & 15) << 2;
  if (vihl >> 4 !== 4 || ihl < IPV4_MIN_HLEN || ihl > end - p) return -1;
  const proto = b[p + 9]!;
  if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) return -1;
  if ((((b[p + 6]! << 8) | b[p + 7]!) & IPV4_FRAG_MASK) !== 0) return -1;
  const tot = (b[p + 2]! << 8) | b[p + 3]!;
  const q = p + ihl;
  if (tot < ihl + 4 || q + 4 > end) return -1;
  const src = ((b[p + 12]! << 24) | (b[p + 13]! << 16) | (b[p + 14]! << 8) | b[p + 15]!) >>> 0;
  const dst = ((b[p + 16]! << 24) | (b[p + 17]! << 16) | (b[p + 18]! << 8) | b[p + 19]!) >>> 0;
  // As addrHash of a parsed IPv4 address (words 1-3 zero).
  peekAddrs = (addrHash4(src) + addrHash4(dst)) >>> 0;
  return symmetricOf(peekAddrs, (b[q]! << 8) | b[q + 1]!, (b[q + 2]! << 8) | b[q + 3]!, proto);
}

/** Partitions a batch's packets into task records; reuses its scratch between batches. */
export class Dispatcher {
  private readonly pkt = new Packet();
  private counts = new Int32Array(0);
  /** Per packet of the batch: its flow hash (split's scratch). */
  private hashes = new Int32Array(0);
  /** Per packet of the batch: its address-pair hash (0: none). */
  private pairs = new Int32Array(0);
  /** Address pairs that sent fragments in the current batch (small; cleared per such batch). */
  private readonly pairSet = new Set<number>();
  /** 'flow' with NAT on: partition by connection (nat/dispatch-key.ts), new ones together. */
  nat: NatDispatchKey | null = null;

  constructor(readonly mode: DispatchMode) {}

  /**
   * The flow hash of every packet of the batch into `out[0..count)` ('flow' mode: the partition
   * is `(out[i] >>> 0) % parts`); returns how many fragments the batch holds. Reads the batch,
   * writes nothing shared, so each pool worker can run it over a whole batch and keep only its
   * own packets: all compute the same partitions (without NAT, which reads the table).
   */
  flows(batch: PacketBatch, out: Int32Array): number {
    const n = batch.count;
    const i32 = batch.i32;
    const u32 = batch.u32;
    const index = batch.sec.index;
    const pkt = this.pkt;
    const bytes = batch.bytes;
    const nat = this.nat !== null && this.nat.active() ? this.nat : null;
    if (this.pairs.length < n) this.pairs = new Int32Array(n);
    const pairs = this.pairs;
    let frags = 0;
    for (let i = 0; i < n; i++) {
      const x = index + i * IX_WORDS;
      const fast = peekFlow(i32[x + IX_LINKTYPE]!, bytes, u32[x + IX_OFF]!, i32[x + IX_LEN]!);
      if (fast >= 0) {
        // The common case: a whole TCP/UDP header over IPv4, no fragment (the worker parses).
        out[i] = fast | 0;
        pairs[i] = mix(peekAddrs) || 1; // pairHash's value for the packet
        continue;
      }
      parseFrame(i32[x + IX_LINKTYPE]!, bytes, u32[x + IX_OFF]!, i32[x + IX_LEN]!, pkt);
      // With NAT: by connection; packets of no connection yet all to partition 0, in order.
      let h: number;
      if (nat === null) h = flowHash(pkt, i);
      else if (pkt.reason !== null) h = i >>> 0;
      else {
        const c = nat.connection(pkt);
        h = c === 0 ? 0 : mix(c);
      }
      out[i] = h | 0;
      pairs[i] = pkt.family !== 0 ? pairHash(pkt) | 0 : 0;
      // A fragment's ports are unknown until reassembly: its address pair groups it (below).
      if (pkt.fragment && pkt.family !== 0) {
        this.pairSet.add(pairs[i]!);
        frags++;
      }
    }
    if (frags > 0) {
      // Every packet between two hosts that exchanged fragments in this batch goes to one
      // partition: the worker that completes a datagram also decides the flow's other packets,
      // in capture order.
      for (let i = 0; i < n; i++) {
        if (pairs[i] !== 0 && this.pairSet.has(pairs[i]!)) out[i] = pairs[i]!;
      }
      this.pairSet.clear(); // once per batch with fragments
    }
    return frags;
  }

  /**
   * Fill the batch's dispatch list and task records for `parts` partitions (at most one task
   * per partition; empty partitions get none). Returns the number of tasks.
   */
  split(batch: PacketBatch, parts: number): number {
    if (!Number.isInteger(parts) || parts < 1 || parts > MAX_TASKS) {
      throw rangeError(`parts must be an integer in 1..${MAX_TASKS}, got ${parts}`);
    }
    const n = batch.count;
    const i32 = batch.i32;
    const { index, lists, tasks } = batch.sec;
    i32[BH_DONE] = 0;
    let ntasks = 0;
    const addTask = (from: number, to: number): void => {
      const t = tasks + ntasks * TASK_WORDS;
      i32[t + TK_FROM] = from;
      i32[t + TK_TO] = to;
      i32[t + TK_THREAD] = 0;
      i32[t + TK_WID] = -1;
      i32[t + TK_PROGRESS] = 0;
      ntasks++;
    };
    if (this.mode === 'free' || parts === 1) {
      for (let i = 0; i < n; i++) {
        i32[lists + i] = i;
      }
      const per = Math.ceil(n / parts);
      for (let p = 0; p < parts && p * per < n; p++) {
        const from = p * per;
        const to = Math.min(n, from + per);
        for (let i = from; i < to; i++) i32[index + i * IX_WORDS + IX_PART] = ntasks;
        addTask(from, to);
      }
    } else {
      if (this.counts.length < parts + 1) this.counts = new Int32Array(parts + 1);
      const c = this.counts;
      c.fill(0);
      if (this.hashes.length < n) this.hashes = new Int32Array(n);
      const hashes = this.hashes;
      this.flows(batch, hashes);
      for (let i = 0; i < n; i++) {
        const x = index + i * IX_WORDS;
        const h = hashes[i]! >>> 0;
        const p = h % parts;
        i32[x + IX_FLOW] = h | 0;
        i32[x + IX_PART] = p;
        c[p + 1]!++;
      }
      // Prefix sums: c[p] = start of partition p in the list.
      for (let p = 0; p < parts; p++) c[p + 1]! += c[p]!;
      const starts = c.slice(0, parts + 1); // once per batch, not per packet
      for (let i = 0; i < n; i++) {
        const p = i32[index + i * IX_WORDS + IX_PART]!;
        i32[lists + c[p]!] = i;
        c[p]!++;
      }
      // Renumber partitions to task indices (empty partitions get no task).
      for (let p = 0; p < parts; p++) {
        if (starts[p + 1]! > starts[p]!) {
          for (let k = starts[p]!; k < starts[p + 1]!; k++) i32[index + i32[lists + k]! * IX_WORDS + IX_PART] = ntasks;
          addTask(starts[p]!, starts[p + 1]!);
        }
      }
    }
    i32[BH_TASKS] = ntasks;
    return ntasks;
  }
}
