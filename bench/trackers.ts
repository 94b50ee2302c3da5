/**
 * The trackers a bench drives, behind one small interface:
 *  - OursTracker: this project's Conntrack (the real packet path on the shared table);
 *  - MapTracker (baseline a): what a Node user would write without this project: one thread, a
 *    `Map` keyed by a string of the 5-tuple (+ zone), both directions as keys, with the SAME
 *    protocol decision functions (src/track/proto/*) working on entry words in a private Int32Array;
 *  - SharedMapTracker (baseline b): the `sharedmap` npm package (a SharedArrayBuffer hash map
 *    with string keys and its own locks) shared by worker threads, the same protocol functions
 *    on entry words in a shared Int32Array, TCP state under a lock word inside the entry.
 * Baselines expire entries when a lookup meets them (no GC thread) and, when full, evict one
 * not-ASSURED entry found by a cursor over the slab (the kernel's early_drop, simplified).
 */
import { createRequire } from 'node:module';
import { Conntrack } from '../src/track/core.js';
import {
  DIR_ORIGINAL, DIR_REPLY, ENTRY_WORDS, E_MARK, E_PROTO, E_STATUS, E_TIMEOUT, E_TUPLE, E_ZONE,
  IPS_ASSURED, IPS_CONFIRMED, IPS_SEEN_REPLY, SYSCTL_WORDS, TUPLE_WORDS,
} from '../src/table/layout.js';
import { lock, unlock } from '../src/table/locks.js';
import { parseFrame } from '../src/input/packet/parse.js';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Packet } from '../src/input/packet/packet.js';
import { ICMP_CONTINUE, icmpError, icmpPacket } from '../src/track/proto/icmp.js';
import { EV_DESTROY, PROTO_ACCEPT, PROTO_REPEAT, ProtoResult, type TrackerContext } from '../src/track/proto/l4proto.js';
import { tcpError, tcpNew, tcpPacket } from '../src/track/proto/tcp.js';
import { udpError, udpPacket } from '../src/track/proto/udp.js';
import { SYSCTLS, S_MAX } from '../src/table/sysctl.js';
import type { ConntrackTable } from '../src/table/table.js';
import { invertTuple, protoWord, tupleFromPacket } from '../src/track/tuple.js';
import { CT_ESTABLISHED, CT_INVALID, CT_NEW } from '../src/track/verdict.js';

/** Returned by frame() besides CT_*: the packet was dropped (table full). */
export const ST_DROPPED = 5;
export const STATE_SLOTS = 6;

export interface Tracker {
  begin(): void;
  end(): void;
  /** Decide one frame; returns CT_* or ST_DROPPED. */
  frame(linktype: number, buf: Uint8Array, off: number, len: number, now: number, zone: number): number;
  close(): void;
}

export class OursTracker implements Tracker {
  readonly ct: Conntrack;
  constructor(table: ConntrackTable | { buffer: SharedArrayBuffer }) {
    this.ct = new Conntrack(table as ConntrackTable);
  }
  begin(): void { this.ct.beginBatch(); }
  end(): void { this.ct.endBatch(); }
  frame(linktype: number, buf: Uint8Array, off: number, len: number, now: number, zone: number): number {
    const v = this.ct.frame(linktype, buf, off, len, now, zone);
    return v.drop ? ST_DROPPED : v.state;
  }
  close(): void { this.ct.close(); }
}

// ---------------------------------------------------------------------------------------------
// Baselines.

/** Slab words: sysctls first, then ENTRY_WORDS per slot. */
const ENT = SYSCTL_WORDS;
/** Control words of a baseline (shared for SharedMap): */
const C_NEXT = 0; // bump allocator: slots handed out so far
const C_COUNT = 1; // live connections
const C_CURSOR = 2; // eviction cursor
const C_MAX = 3; // connection limit
const C_CAP = 4; // slots in the slab
const CTL_WORDS = 16;
const EVICT_SCAN = 64;

export function slabWords(capacity: number): number {
  return ENT + capacity * ENTRY_WORDS;
}

function initSlab(i32: Int32Array, ctl: Int32Array, capacity: number, max: number, sysctls: Record<number, number>): void {
  for (const d of SYSCTLS) i32[d.index] = d.def;
  i32[S_MAX] = max;
  for (const [k, v] of Object.entries(sysctls)) i32[Number(k)] = v;
  ctl[C_MAX] = max;
  ctl[C_CAP] = capacity;
}

abstract class BaselineTracker implements Tracker {
  protected readonly i32: Int32Array;
  protected readonly ctl: Int32Array;
  private readonly ctx: TrackerContext;
  private readonly pkt = new Packet();
  private readonly res = new ProtoResult();
  private readonly t = new Int32Array(2 * TUPLE_WORDS);
  private readonly tk = new Int32Array(2 * TUPLE_WORDS);
  protected readonly free: number[] = [];
  protected readonly owner: number;

  constructor(i32: Int32Array, ctl: Int32Array, owner: number) {
    this.i32 = i32;
    this.ctl = ctl;
    this.owner = owner;
    this.ctx = { i32, u32: new Uint32Array(i32.buffer, i32.byteOffset, i32.length), sys: 0 };
  }

  protected abstract get(key: string): number;
  protected abstract set(key: string, v: number): void;
  protected abstract del(key: string): void;

  begin(): void {}
  end(): void {}
  close(): void {}

  /** The map key of a tuple: a string of its words, protocol and zone. */
  protected key(t: Int32Array, o: number, l4: number, zone: number): string {
    if ((t[o + 1]! | t[o + 2]! | t[o + 3]! | t[o + 5]! | t[o + 6]! | t[o + 7]!) === 0) {
      return `${t[o]}:${t[o + 4]}:${t[o + 8]}:${l4}:${zone}`;
    }
    return `${t[o]},${t[o + 1]},${t[o + 2]},${t[o + 3]}:${t[o + 4]},${t[o + 5]},${t[o + 6]},${t[o + 7]}:${t[o + 8]}:${l4}:${zone}`;
  }

  frame(linktype: number, buf: Uint8Array, off: number, len: number, now: number, zone: number): number {
    const pkt = this.pkt;
    parseFrame(linktype, buf, off, len, pkt);
    pkt.now = now | 0;
    if (pkt.reason !== null) return CT_INVALID;
    const l4 = pkt.l4proto;
    const res = this.res;
    res.reset();
    if (l4 === IPPROTO_TCP) {
      if (tcpError(this.ctx, pkt) !== null) return CT_INVALID;
    } else if (l4 === IPPROTO_UDP) {
      if (udpError(this.ctx, pkt) !== null) return CT_INVALID;
    } else if (l4 === IPPROTO_ICMP) {
      if (icmpError(this.ctx, pkt, res) !== ICMP_CONTINUE) return CT_INVALID; // errors: not tracked here
    } else {
      return CT_INVALID;
    }
    const t = this.t;
    tupleFromPacket(pkt, t, 0);
    return this.track(l4, zone, now, 0);
  }

  private track(l4: number, zone: number, now: number, repeats: number): number {
    const i32 = this.i32;
    const pkt = this.pkt;
    const res = this.res;
    const key = this.key(this.t, 0, l4, zone);
    const v = this.get(key);
    if (v >= 0) {
      const slot = v >>> 1;
      const dir = v & 1;
      const e = ENT + slot * ENTRY_WORDS;
      if (((i32[e + E_TIMEOUT]! - now) | 0) <= 0) {
        this.remove(slot);
        return this.create(key, l4, zone, now, repeats);
      }
      const status = Atomics.load(i32, e + E_STATUS);
      const state = dir === DIR_REPLY || (status & IPS_SEEN_REPLY) ? CT_ESTABLISHED : CT_NEW;
      res.reset();
      let ret: number;
      if (l4 === IPPROTO_TCP) {
        this.lockEntry(e);
        ret = tcpPacket(this.ctx, e, dir, pkt, res);
        this.unlockEntry(e);
      } else if (l4 === IPPROTO_UDP) {
        ret = udpPacket(this.ctx, e, dir, pkt, res);
      } else {
        ret = icmpPacket(this.ctx, e, dir, pkt, res);
      }
      if (ret !== PROTO_ACCEPT) {
        if (ret === PROTO_REPEAT && repeats === 0) {
          this.remove(slot);
          return this.track(l4, zone, now, 1);
        }
        return CT_INVALID;
      }
      if (res.timeout >= 0) Atomics.store(i32, e + E_TIMEOUT, (now + res.timeout * 1000) | 0);
      if (dir === DIR_REPLY) Atomics.or(i32, e + E_STATUS, IPS_SEEN_REPLY);
      if (res.events & EV_DESTROY) this.remove(slot);
      return state;
    }
    return this.create(key, l4, zone, now, repeats);
  }

  private create(key: string, l4: number, zone: number, now: number, _repeats: number): number {
    const i32 = this.i32;
    const ctl = this.ctl;
    const pkt = this.pkt;
    const res = this.res;
    const t = this.t;
    if (!invertTuple(t, 0, t, TUPLE_WORDS, l4)) return CT_INVALID;
    if (Atomics.add(ctl, C_COUNT, 1) >= ctl[C_MAX]! && !this.evict()) {
      Atomics.sub(ctl, C_COUNT, 1);
      return ST_DROPPED;
    }
    const slot = this.alloc();
    if (slot < 0) {
      Atomics.sub(ctl, C_COUNT, 1);
      return ST_DROPPED;
    }
    const e = ENT + slot * ENTRY_WORDS;
    i32.fill(0, e, e + ENTRY_WORDS);
    i32.set(t, e + E_TUPLE);
    i32[e + E_PROTO] = protoWord(pkt.family, l4);
    i32[e + E_ZONE] = zone | (zone << 16);
    res.reset();
    let ret: number;
    if (l4 === IPPROTO_TCP) {
      if (tcpNew(this.ctx, e, pkt) !== null) ret = -1;
      else ret = tcpPacket(this.ctx, e, DIR_ORIGINAL, pkt, res);
    } else if (l4 === IPPROTO_UDP) {
      ret = udpPacket(this.ctx, e, DIR_ORIGINAL, pkt, res);
    } else {
      ret = icmpPacket(this.ctx, e, DIR_ORIGINAL, pkt, res);
    }
    if (ret !== PROTO_ACCEPT) {
      this.release(slot);
      Atomics.sub(ctl, C_COUNT, 1);
      return CT_INVALID;
    }
    i32[e + E_TIMEOUT] = (now + Math.max(0, res.timeout) * 1000) | 0;
    Atomics.store(i32, e + E_STATUS, IPS_CONFIRMED);
    this.set(key, slot << 1);
    this.set(this.key(t, TUPLE_WORDS, l4, zone), (slot << 1) | 1);
    return CT_NEW;
  }

  /** Remove connection `slot` (both keys) and free its slot. */
  protected remove(slot: number): void {
    const i32 = this.i32;
    const e = ENT + slot * ENTRY_WORDS;
    const st = Atomics.load(i32, e + E_STATUS);
    if ((st & IPS_CONFIRMED) === 0) return;
    // Claim it (another thread may be evicting it).
    if (Atomics.compareExchange(i32, e + E_STATUS, st, 0) !== st) return;
    const l4 = (i32[e + E_PROTO]! >>> 8) & 0xff;
    const zone = i32[e + E_ZONE]! & 0xffff;
    const tw = this.tk;
    for (let k = 0; k < 2 * TUPLE_WORDS; k++) tw[k] = i32[e + E_TUPLE + k]!;
    this.del(this.key(tw, 0, l4, zone));
    this.del(this.key(tw, TUPLE_WORDS, l4, zone));
    Atomics.sub(this.ctl, C_COUNT, 1);
    this.release(slot);
  }

  private alloc(): number {
    const s = this.free.pop();
    if (s !== undefined) return s;
    const n = Atomics.add(this.ctl, C_NEXT, 1);
    if (n >= this.ctl[C_CAP]!) {
      Atomics.sub(this.ctl, C_NEXT, 1);
      return -1;
    }
    return n;
  }

  private release(slot: number): void {
    this.free.push(slot);
  }

  /** Evict one confirmed, not-ASSURED entry near the cursor. */
  private evict(): boolean {
    const i32 = this.i32;
    const hwm = Math.min(Atomics.load(this.ctl, C_NEXT), this.ctl[C_CAP]!);
    if (hwm === 0) return false;
    for (let k = 0; k < EVICT_SCAN; k++) {
      const slot = (Atomics.add(this.ctl, C_CURSOR, 1) >>> 0) % hwm;
      const st = Atomics.load(i32, ENT + slot * ENTRY_WORDS + E_STATUS);
      if ((st & IPS_CONFIRMED) && !(st & IPS_ASSURED)) {
        this.remove(slot); // drops the count our add pushed over the limit
        return true;
      }
    }
    return false;
  }

  protected lockEntry(_e: number): void {}
  protected unlockEntry(_e: number): void {}

  get count(): number {
    return Atomics.load(this.ctl, C_COUNT);
  }

  /** Confirmed entries carrying ASSURED (a slab walk). */
  countAssured(): number {
    const i32 = this.i32;
    const hwm = Math.min(Atomics.load(this.ctl, C_NEXT), this.ctl[C_CAP]!);
    let n = 0;
    for (let s = 0; s < hwm; s++) {
      const st = i32[ENT + s * ENTRY_WORDS + E_STATUS]!;
      if ((st & (IPS_CONFIRMED | IPS_ASSURED)) === (IPS_CONFIRMED | IPS_ASSURED)) n++;
    }
    return n;
  }

  /** Remove every connection of `zone` (a slab walk); returns how many. */
  flushZone(zone: number): number {
    const i32 = this.i32;
    const hwm = Math.min(Atomics.load(this.ctl, C_NEXT), this.ctl[C_CAP]!);
    let n = 0;
    for (let s = 0; s < hwm; s++) {
      const e = ENT + s * ENTRY_WORDS;
      if ((i32[e + E_STATUS]! & IPS_CONFIRMED) && (i32[e + E_ZONE]! & 0xffff) === zone) {
        this.remove(s);
        n++;
      }
    }
    return n;
  }
}

export class MapTracker extends BaselineTracker {
  private readonly map = new Map<string, number>();
  readonly capacity: number;

  constructor(max: number, sysctls: Record<number, number> = {}) {
    const capacity = max + 1024;
    const i32 = new Int32Array(slabWords(capacity));
    const ctl = new Int32Array(CTL_WORDS);
    initSlab(i32, ctl, capacity, max, sysctls);
    super(i32, ctl, 0);
    this.capacity = capacity;
  }
  protected get(key: string): number {
    const v = this.map.get(key);
    return v === undefined ? -1 : v;
  }
  protected set(key: string, v: number): void {
    this.map.set(key, v);
  }
  protected del(key: string): void {
    this.map.delete(key);
  }
  /** Bytes: the slab only (the Map's own memory is not counted). */
  get slabBytes(): number {
    return this.i32.byteLength;
  }
}

// ---------------------------------------------------------------------------------------------
// sharedmap (CommonJS; its bundled .d.ts does not parse under strict TypeScript, so typed here).

interface SharedMapLike {
  set(key: string, value: string | number): void;
  get(key: string): string | undefined;
  delete(key: string): void;
  readonly length: number;
  storage: SharedArrayBuffer;
}
type SharedMapCtor = new (maxSize: number, keySize: number, objSize: number) => SharedMapLike;
const require = createRequire(import.meta.url);
let smCtor: SharedMapCtor | null = null;
/** Is the optional `sharedmap` package installed? */
export function sharedMapAvailable(): boolean {
  try {
    require.resolve('sharedmap');
    return true;
  } catch {
    return false;
  }
}
function sharedMapClass(): SharedMapCtor {
  smCtor ??= require('sharedmap') as SharedMapCtor;
  return smCtor;
}

/** What a worker needs to attach to a sharedmap baseline (structured-clonable). */
export interface SharedMapHandle {
  /** The SharedMap object itself: its typed arrays share their SharedArrayBuffer across threads. */
  map: SharedMapLike;
  slab: SharedArrayBuffer;
  ctl: SharedArrayBuffer;
}

export function createSharedMapBaseline(max: number, sysctls: Record<number, number> = {}): SharedMapHandle {
  const SM = sharedMapClass();
  const capacity = max + 1024;
  // Two keys per connection, load factor ~0.7; keys up to 48 UTF-16 units, values 12.
  const map = new SM(Math.ceil(max * 2 / 0.7), 48, 12);
  const slab = new SharedArrayBuffer(slabWords(capacity) * 4);
  const ctl = new SharedArrayBuffer(CTL_WORDS * 4);
  initSlab(new Int32Array(slab), new Int32Array(ctl), capacity, max, sysctls);
  return { map, slab, ctl };
}

export function sharedMapBytes(h: SharedMapHandle): number {
  return h.map.storage.byteLength + h.slab.byteLength;
}

export class SharedMapTracker extends BaselineTracker {
  private readonly map: SharedMapLike;

  constructor(h: SharedMapHandle, owner: number) {
    super(new Int32Array(h.slab), new Int32Array(h.ctl), owner);
    const map = h.map;
    // A structured clone loses the prototype: restore it (as the package documents).
    if (Object.getPrototypeOf(map) !== sharedMapClass().prototype) Object.setPrototypeOf(map, sharedMapClass().prototype);
    this.map = map;
  }
  protected get(key: string): number {
    const v = this.map.get(key);
    return v === undefined ? -1 : Number(v);
  }
  protected set(key: string, v: number): void {
    this.map.set(key, v);
  }
  protected del(key: string): void {
    this.map.delete(key);
  }
  protected override lockEntry(e: number): void {
    lock(this.i32, e + E_MARK, this.owner);
  }
  protected override unlockEntry(e: number): void {
    unlock(this.i32, e + E_MARK);
  }
}
