/**
 * Defragmentation before tracking, as nf_defrag_ipv4 / nf_defrag_ipv6 do it: a fragment is held
 * in its datagram's queue (store.ts) until the datagram is whole; the tracker then sees the
 * reassembled datagram once, on the fragment that completed it. The rules of each family are in
 * ipv4.ts (ip_fragment.c) and ipv6.ts (nf_conntrack_reasm.c).
 *
 * One Defrag per thread: it owns the output buffer the datagram is reassembled into (64 KiB,
 * preallocated) and reports what happened to the last fragment it was given (status, reason,
 * the tags of the other fragments of a completed or dropped datagram, queues that timed out or
 * were evicted meanwhile). The stores may be shared by threads (the pool's workers share them).
 */
import { type Packet, NFPROTO_IPV4 } from '../packet/packet.js';
import {
  S_FRAG6_HIGH_THRESH, S_FRAG6_LOW_THRESH, S_FRAG6_TIMEOUT, S_IPFRAG_HIGH_THRESH, S_IPFRAG_LOW_THRESH, S_IPFRAG_TIME,
} from '../../table/sysctl.js';
import { FragStore, type FragStoreHandle, H_MEM, H_OLDEST, IP_MAX, Q_COUNT, Q_ECN, Q_EXPIRES, Q_NEWER } from './store.js';
import { defrag4 } from './ipv4.js';
import { defrag6 } from './ipv6.js';

/** Not a fragment for reassembly: decide the packet as it is. */
export const DF_PASS = 0;
/** Held in its queue: no decision until the datagram completes. */
export const DF_HELD = 1;
/** The datagram is complete: `out[0, outLen)` holds it (raw IP). */
export const DF_DONE = 2;
/** The fragment was dropped (`reason`); its queue too when `tagCount` lists its fragments. */
export const DF_DROP = 3;

export const R_FRAG_OVERLAP = 'overlapping fragment (datagram dropped)';
export const R_FRAG_DUP = 'duplicate fragment (dropped)';
export const R_FRAG_TOO_BIG = 'reassembled datagram over 64 KiB (dropped)';
export const R_FRAG_BAD_END = 'fragment end disagrees with the last fragment (dropped)';
export const R_FRAG_EMPTY = 'empty fragment (dropped)';
export const R_FRAG_UNALIGNED = 'IPv6 fragment length not a multiple of 8 (not reassembled)';
export const R_FRAG_NOMEM = 'no room for the fragment (ipfrag_high_thresh)';
export const R_FRAG_TIMEOUT = 'reassembly timed out (ipfrag_time)';
export const R_FRAG_EVICTED = 'reassembly queue evicted (ipfrag_high_thresh)';
export const R_FRAG_ECN = 'fragments with mixed ECN codepoints (datagram dropped)';
export const R_FRAG_TRUNC = 'fragment not captured whole (cannot reassemble)';
export const R_FRAG_INCOMPLETE = 'datagram incomplete at the end of the capture';

/** Bytes of the reassembly buffer: the largest datagram (IPv6: 40-byte header + 64 KiB payload). */
export const REASM_BUFFER = 40 + IP_MAX;

/** A queue that timed out or was evicted while a packet was handled. */
export interface FragDropped {
  reason: string;
  tags: number[];
}

/** RFC 3168 section 5.3 on the OR of the fragments' ECN bits (ip_frag_ecn_table). */
export const ECN_NOT_ECT = 1;
export const ECN_ECT_1 = 2;
export const ECN_ECT_0 = 4;
export const ECN_CE = 8;
/** ECN bit of a TOS / traffic class byte's low two bits. */
export function ecnBit(tos: number): number {
  return 1 << (tos & 3);
}
/** -1: drop the datagram (not-ECT mixed with ECT or CE); else 3 (CE) or 0 to OR into the TOS. */
export function ecnMerge(bits: number): number {
  if ((bits & ECN_NOT_ECT) !== 0 && (bits & ~ECN_NOT_ECT) !== 0) return -1;
  return bits & ECN_CE ? 3 : 0;
}

/** The tags of queue q's fragments in ascending order (allocates: for rare events only). */
function tagsOf(store: FragStore, q: number): number[] {
  const tags = new Int32Array(store.i32[store.q(q) + Q_COUNT]!);
  const n = store.tags(q, tags, 0);
  return Array.from(tags.subarray(0, n)).sort((a, b) => a - b);
}

/** The shared-memory fragment stores (IPv4 and IPv6) that every thread of a pool reassembles into. */
export interface DefragStores {
  v4: FragStoreHandle;
  v6: FragStoreHandle;
}

/** A thread's reassembly driver (nf_defrag_ipv4/ipv6): queues fragments in shared stores and hands back whole datagrams. */
export class Defrag {
  readonly v4: FragStore;
  readonly v6: FragStore;
  /** The reassembled datagram after DF_DONE. */
  readonly out = new Uint8Array(REASM_BUFFER);
  outLen = 0;
  status = DF_PASS;
  reason: string | null = null;
  /** DF_DONE: tags of the datagram's other fragments; DF_DROP: of the dropped queue's others. */
  readonly tagList = new Int32Array(8192);
  tagCount = 0;
  /** Queues that timed out or were evicted during the last call (rare; allocated then). */
  readonly dropped: FragDropped[] = [];
  /** Counted by the caller: queues expired / evicted during the last call. */
  timeouts = 0;
  evictions = 0;

  constructor(readonly i32: Int32Array, readonly sys: number, readonly owner: number, stores?: DefragStores) {
    if (stores) {
      this.v4 = FragStore.attach(stores.v4);
      this.v6 = FragStore.attach(stores.v6);
    } else {
      const s = Defrag.createStores(i32, sys);
      this.v4 = FragStore.attach(s.v4);
      this.v6 = FragStore.attach(s.v6);
    }
  }

  /** Stores sized by the table's ipfrag_high_thresh / nf_conntrack_frag6_high_thresh. */
  static createStores(i32: Int32Array, sys: number): DefragStores {
    // Sysctl words: Atomics.store'd by setSysctl.
    return {
      v4: FragStore.create({ capacity: Atomics.load(i32, sys + S_IPFRAG_HIGH_THRESH) }).handle(),
      v6: FragStore.create({ capacity: Atomics.load(i32, sys + S_FRAG6_HIGH_THRESH) }).handle(),
    };
  }

  handles(): DefragStores {
    return { v4: this.v4.handle(), v6: this.v6.handle() };
  }

  /** Timeout (ms), high and low bounds of a family, from the sysctls (Atomics.store'd by setSysctl). */
  timeoutMs(v4: boolean): number {
    return Atomics.load(this.i32, this.sys + (v4 ? S_IPFRAG_TIME : S_FRAG6_TIMEOUT)) * 1000;
  }

  high(store: FragStore, v4: boolean): number {
    return Math.min(store.capacity, Atomics.load(this.i32, this.sys + (v4 ? S_IPFRAG_HIGH_THRESH : S_FRAG6_HIGH_THRESH)));
  }

  low(v4: boolean): number {
    return Atomics.load(this.i32, this.sys + (v4 ? S_IPFRAG_LOW_THRESH : S_FRAG6_LOW_THRESH));
  }

  /**
   * Handle a parsed fragment (pkt.fragment). Sets status (DF_*), reason, out/outLen, tagList.
   * `tag` is remembered with a held fragment and reported back when its datagram resolves.
   */
  fragment(pkt: Packet, zone: number, now: number, tag: number): number {
    this.status = DF_PASS;
    this.reason = null;
    this.tagCount = 0;
    this.outLen = 0;
    if (pkt.family === NFPROTO_IPV4) defrag4(this, this.v4, pkt, zone, now, tag);
    else defrag6(this, this.v6, pkt, zone, now, tag);
    return this.status;
  }

  /** Start of a packet: forget what the last one reported. */
  begin(): void {
    if (this.dropped.length > 0) this.dropped.length = 0;
    this.tagCount = 0;
    this.status = DF_PASS;
    this.timeouts = 0;
    this.evictions = 0;
  }

  /** Expire the queues of both families whose ipfrag_time passed by `now` (any packet). */
  tick(now: number): void {
    if (this.due(this.v4, now)) this.expire(this.v4, now);
    if (this.due(this.v6, now)) this.expire(this.v6, now);
  }

  /** Lock-free hint: has the oldest queue's deadline passed? (expire() re-checks under the lock.) */
  private due(store: FragStore, now: number): boolean {
    const q = Atomics.load(store.i32, H_OLDEST); // written under the store lock; a stale value only delays or repeats the check
    if (q < 0) return false;
    return ((now - Atomics.load(store.i32, store.q(q) + Q_EXPIRES)) | 0) >= 0; // as above
  }

  /** Kill timed-out queues of a store. Takes the store's lock. */
  expire(store: FragStore, now: number): void {
    store.lock(this.owner);
    try {
      this.expireLocked(store, now);
    } finally {
      store.unlock();
    }
  }

  /** As expire(), with the store's lock held. */
  expireLocked(store: FragStore, now: number): void {
    for (;;) {
      const q = store.oldest();
      if (q < 0 || ((now - store.i32[store.q(q) + Q_EXPIRES]!) | 0) < 0) return;
      this.report(store, q, R_FRAG_TIMEOUT);
      store.kill(q);
      this.timeouts++;
    }
  }

  /**
   * Make room for `need` more bytes under `high`, evicting the oldest queues (never `keep`)
   * down to the low threshold, as the kernel's evictor did. With the lock held. False when the
   * room cannot be made.
   */
  makeRoom(store: FragStore, need: number, high: number, low: number, keep: number): boolean {
    const i32 = store.i32;
    if (i32[H_MEM]! + need <= high) return true;
    const target = Math.min(low, high - need);
    let q = store.oldest();
    while (q >= 0 && i32[H_MEM]! + need > Math.max(0, target)) {
      const next = i32[store.q(q) + Q_NEWER]!;
      if (q !== keep) {
        this.report(store, q, R_FRAG_EVICTED);
        store.kill(q);
        this.evictions++;
      }
      q = next;
    }
    return i32[H_MEM]! + need <= high;
  }

  /** Record a queue dropped by time or memory (the caller reports its fragments' tags). */
  private report(store: FragStore, q: number, reason: string): void {
    this.dropped.push({ reason, tags: tagsOf(store, q) });
  }

  /** Put queue q's fragment tags in tagList (newest first); with the lock held. */
  listTags(store: FragStore, q: number): void {
    this.tagCount = store.tags(q, this.tagList, 0);
  }

  /** ECN check of queue q at reassembly: -1 drop, else bits to OR into the TOS / traffic class. */
  ecn(store: FragStore, q: number): number {
    return ecnMerge(store.i32[store.q(q) + Q_ECN]!);
  }

  /** Every queue still held (end of a capture): their tags, oldest first, then empty the stores. */
  drain(): FragDropped[] {
    const res: FragDropped[] = [];
    for (const store of [this.v4, this.v6]) {
      store.lock(this.owner);
      try {
        for (let q = store.oldest(); q >= 0; q = store.oldest()) {
          res.push({ reason: R_FRAG_INCOMPLETE, tags: tagsOf(store, q) });
          store.kill(q);
        }
      } finally {
        store.unlock();
      }
    }
    return res;
  }
}
