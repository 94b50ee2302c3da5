/**
 * Table operations a user expects from conntrack-tools, from any thread: list (-L), get (-G),
 * delete (-D), flush (-F), count (-C), update (-U: mark, labels), statistics (-S), each with
 * conntrack's filters (family, protocol, TCP/SCTP state, addresses with CIDR, ports, zone,
 * namespace, mark/mask, label bit).
 *
 * A CtOps owns one worker record of the table (through a Conntrack) for its read-side sections.
 * Walks go in bounded slices of buckets: the walker is online (inside a batch) only for one
 * slice and goes offline between slices, so it never holds a grace period up for long, and
 * deletes take only the two bucket stripes of the entry they remove (Chains.kill), so packet
 * workers tracking at the same time are never stalled for more than one kill.
 *
 * Entries never leave a slice by reference: a dump copies each matching entry's words out while
 * its slice is online ('noref'), or while it holds a reference on it ('refcount').
 */
import { Conntrack } from '../track/core.js';
import { KILL_DELETE } from '../table/chains.js';
import { extOf, readAcct, readLabels, setConnLabel, setConnTimeoutPolicy, type ConnAcct } from '../table/ext.js';
import { connEntryJson, formatEntry, formatProcEntry, l4Name, type ConnEntryJson, type FormatOptions } from './format.js';
import {
  DIR_ORIGINAL, ENTRY_WORDS, E_EXT, E_MARK, E_NEXT, E_NS, E_PROTO, E_STATUS, E_TIMEOUT, E_TUPLE,
  E_ZONE, IPS_CONFIRMED, IPS_DYING, STAT_NAMES, STAT_WORDS, T_DST, T_PORTS, T_SRC,
  TUPLE_WORDS, W_ALIVE, WORKER_WORDS, EXT_ACCT, EXT_LABELS, EXT_WORDS, X_FLAGS, X_LABELS,
} from '../table/layout.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, NFPROTO_IPV4, NFPROTO_IPV6 } from '../input/packet/packet.js';
import type { TrackerContext } from '../track/proto/l4proto.js';
import { IPPROTO_SCTP, SCTP_STATE_NAMES, sctpFormat } from '../track/proto/sctp.js';
import { TCP_STATE_NAMES, tcpFormat } from '../track/proto/tcp.js';
import { ConntrackTable, type TableHandle } from '../table/table.js';
import { familyOf, hasPorts, invertTuple, l4protoOf, parseAddr, protoWord } from '../track/tuple.js';
import { E_GEN, E_HASH } from '../table/layout.js';
import { LIST_NS, LIST_ZONE } from '../table/zones.js';
import { argError, checkAbort, rangeError, stateError } from '../errors.js';

// ---------------------------------------------------------------------------------------------
// Filters.

/** conntrack-tools' filters; every given field must match (AND). */
export interface CtFilter {
  /** Layer 3: 'ipv4' / 'ipv6' (conntrack -f). */
  family?: 'ipv4' | 'ipv6';
  /** Layer 4 protocol, by number or name (-p tcp). */
  proto?: number | string;
  /** TCP or SCTP state names (--state ESTABLISHED); entries of other protocols never match. */
  state?: string | readonly string[];
  /** Original source / destination, reply source / destination (-s, -d, -r, -q): address or CIDR. */
  src?: string;
  dst?: string;
  replySrc?: string;
  replyDst?: string;
  /** Any address of either tuple (address or CIDR): "this host, either direction". */
  addr?: string;
  /** Original source / destination port (--sport, --dport), reply ports (--reply-port-src/-dst). */
  sport?: number;
  dport?: number;
  replySport?: number;
  replyDport?: number;
  /** Any port of either tuple. */
  port?: number;
  /** The connection's zone id (--zone): the original zone, or the reply zone when only that is set. */
  zone?: number;
  /** Exact original-direction / reply-direction zone (--orig-zone, --reply-zone). */
  origZone?: number;
  replyZone?: number;
  /** Namespace id. */
  ns?: number;
  /** --mark value[/mask]: (mark & markMask) === (value & markMask); markMask defaults to all ones. */
  mark?: number;
  markMask?: number;
  /** --label: a connection label bit (needs the extension area). */
  label?: number;
}

interface Cidr {
  family: number;
  net: Int32Array;
  mask: Int32Array;
}

/** Parse `addr` or `addr/prefix` (IPv4 or IPv6). */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const host = slash < 0 ? text : text.slice(0, slash);
  const net = new Int32Array(4);
  const family = parseAddr(host, net, 0);
  const bits = family === NFPROTO_IPV4 ? 32 : 128;
  let prefix = bits;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > bits) throw argError(`bad prefix length in "${text}" (0..${bits})`);
    prefix = Number(p);
  }
  const mask = new Int32Array(4);
  for (let i = 0; i < 4; i++) {
    const b = Math.max(0, Math.min(32, prefix - 32 * i));
    mask[i] = b === 0 ? 0 : b === 32 ? -1 : (-1 << (32 - b));
    net[i] = net[i]! & mask[i]!;
  }
  return { family, net, mask };
}

function cidrMatch(c: Cidr, i32: Int32Array, off: number, family: number): boolean {
  if (family !== c.family) return false;
  for (let k = 0; k < 4; k++) if ((i32[off + k]! & c.mask[k]!) !== c.net[k]) return false;
  return true;
}

const PROTO_NUMBERS: Record<string, number> = {
  icmp: 1, tcp: 6, udp: 17, dccp: 33, gre: 47, icmpv6: 58, sctp: 132, udplite: 136,
};

/** A protocol by name or number. */
export function parseProto(p: number | string): number {
  if (typeof p === 'number') {
    if (!Number.isInteger(p) || p < 0 || p > 255) throw rangeError(`bad protocol number ${p}`);
    return p;
  }
  const s = p.trim().toLowerCase();
  if (/^\d+$/.test(s)) return parseProto(Number(s));
  const n = PROTO_NUMBERS[s];
  if (n === undefined) throw argError(`unknown protocol "${p}" (one of ${Object.keys(PROTO_NUMBERS).join(', ')} or a number)`);
  return n;
}

function checkPort(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 65535)) throw rangeError(`${name} must be a port 0..65535, got ${v}`);
}

function checkZone(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 65535)) throw rangeError(`${name} must be a zone 0..65535, got ${v}`);
}

/** A compiled filter: matches an entry at word `e` of `i32` (a live table or a copied record). */
export class CtMatcher {
  readonly filter: CtFilter;
  private readonly family: number;
  private readonly proto: number;
  private readonly states: Set<string> | null;
  private readonly src: Cidr | null;
  private readonly dst: Cidr | null;
  private readonly rsrc: Cidr | null;
  private readonly rdst: Cidr | null;
  private readonly any: Cidr | null;
  private readonly markValue: number;
  private readonly markMask: number;
  /** True when no field is set: every entry matches. */
  readonly all: boolean;

  constructor(filter: CtFilter = {}) {
    this.filter = filter;
    const f = filter;
    this.family = f.family === undefined ? -1 : f.family === 'ipv4' ? NFPROTO_IPV4 : f.family === 'ipv6' ? NFPROTO_IPV6 : (() => {
      throw argError(`family must be ipv4 or ipv6, got "${String(f.family)}"`);
    })();
    this.proto = f.proto === undefined ? -1 : parseProto(f.proto);
    if (f.state !== undefined) {
      const names = (typeof f.state === 'string' ? f.state.split(',') : [...f.state]).map((s) => s.trim().toUpperCase()).filter(Boolean);
      for (const n of names) {
        if (!TCP_STATE_NAMES.includes(n) && !SCTP_STATE_NAMES.includes(n)) {
          throw argError(`unknown state "${n}" (TCP: ${TCP_STATE_NAMES.join(', ')}; SCTP: ${SCTP_STATE_NAMES.join(', ')})`);
        }
      }
      this.states = new Set(names);
    } else {
      this.states = null;
    }
    this.src = f.src !== undefined ? parseCidr(f.src) : null;
    this.dst = f.dst !== undefined ? parseCidr(f.dst) : null;
    this.rsrc = f.replySrc !== undefined ? parseCidr(f.replySrc) : null;
    this.rdst = f.replyDst !== undefined ? parseCidr(f.replyDst) : null;
    this.any = f.addr !== undefined ? parseCidr(f.addr) : null;
    for (const k of ['sport', 'dport', 'replySport', 'replyDport', 'port'] as const) checkPort(k, f[k]);
    for (const k of ['zone', 'origZone', 'replyZone'] as const) checkZone(k, f[k]);
    if (f.ns !== undefined && (!Number.isInteger(f.ns) || f.ns < 0)) throw rangeError(`ns must be a non-negative integer, got ${f.ns}`);
    if (f.mark !== undefined && (!Number.isInteger(f.mark) || f.mark < 0 || f.mark > 0xffffffff)) throw rangeError(`mark must be a 32-bit unsigned integer, got ${f.mark}`);
    if (f.markMask !== undefined && (!Number.isInteger(f.markMask) || f.markMask < 0 || f.markMask > 0xffffffff)) throw rangeError(`mark mask must be a 32-bit unsigned integer, got ${f.markMask}`);
    this.markMask = (f.markMask ?? 0xffffffff) | 0;
    this.markValue = ((f.mark ?? 0) | 0) & this.markMask;
    if (f.label !== undefined && (!Number.isInteger(f.label) || f.label < 0 || f.label > 127)) {
      throw rangeError(`label must be a bit number 0..127, got ${f.label}`);
    }
    this.all = Object.values(f).every((v) => v === undefined);
  }

  /** The zone or namespace this filter confines matches to (for an index), or -1. */
  get zoneOnly(): number {
    return this.filter.zone ?? -1;
  }

  /**
   * Does the entry at `e` of `i32` match? `xi32` / `x`: the words holding its extension block
   * and the block's offset (-1: none), for the label filter.
   * @internal
   */
  match(i32: Int32Array, e: number, xi32: Int32Array | null = null, x = -1): boolean {
    if (this.all) return true;
    const f = this.filter;
    if (f.label !== undefined) {
      // Labels change with Atomics.or / and from any thread.
      if (xi32 === null || x < 0 || (Atomics.load(xi32, x + X_FLAGS) & EXT_LABELS) === 0) return false;
      if ((Atomics.load(xi32, x + X_LABELS + (f.label >> 5)) & (1 << (f.label & 31))) === 0) return false;
    }
    const pw = i32[e + E_PROTO]!;
    const family = familyOf(pw);
    const l4 = l4protoOf(pw);
    if (this.family >= 0 && family !== this.family) return false;
    if (this.proto >= 0 && l4 !== this.proto) return false;
    const z = i32[e + E_ZONE]!;
    const oz = z & 0xffff;
    const rz = z >>> 16;
    if (f.zone !== undefined && (oz !== 0 ? oz : rz) !== f.zone) return false;
    if (f.origZone !== undefined && oz !== f.origZone) return false;
    if (f.replyZone !== undefined && rz !== f.replyZone) return false;
    if (f.ns !== undefined && i32[e + E_NS] !== f.ns) return false;
    if (f.mark !== undefined && (i32[e + E_MARK]! & this.markMask) !== this.markValue) return false;
    const o = e + E_TUPLE;
    const r = e + E_TUPLE + TUPLE_WORDS;
    if (this.src && !cidrMatch(this.src, i32, o + T_SRC, family)) return false;
    if (this.dst && !cidrMatch(this.dst, i32, o + T_DST, family)) return false;
    if (this.rsrc && !cidrMatch(this.rsrc, i32, r + T_SRC, family)) return false;
    if (this.rdst && !cidrMatch(this.rdst, i32, r + T_DST, family)) return false;
    if (this.any && !cidrMatch(this.any, i32, o + T_SRC, family) && !cidrMatch(this.any, i32, o + T_DST, family) &&
      !cidrMatch(this.any, i32, r + T_SRC, family) && !cidrMatch(this.any, i32, r + T_DST, family)) return false;
    if (f.sport !== undefined || f.dport !== undefined || f.replySport !== undefined || f.replyDport !== undefined || f.port !== undefined) {
      if (!hasPorts(l4)) return false;
      const po = i32[o + T_PORTS]!;
      const pr = i32[r + T_PORTS]!;
      if (f.sport !== undefined && ((po >>> 16) & 0xffff) !== f.sport) return false;
      if (f.dport !== undefined && (po & 0xffff) !== f.dport) return false;
      if (f.replySport !== undefined && ((pr >>> 16) & 0xffff) !== f.replySport) return false;
      if (f.replyDport !== undefined && (pr & 0xffff) !== f.replyDport) return false;
      if (f.port !== undefined && ((po >>> 16) & 0xffff) !== f.port && (po & 0xffff) !== f.port &&
        ((pr >>> 16) & 0xffff) !== f.port && (pr & 0xffff) !== f.port) return false;
    }
    if (this.states) {
      const ctx: TrackerContext = { i32, u32: new Uint32Array(i32.buffer, i32.byteOffset, i32.length), sys: 0 };
      let name: string;
      if (l4 === IPPROTO_TCP) name = tcpFormat(ctx, e);
      else if (l4 === IPPROTO_SCTP) name = sctpFormat(ctx, e);
      else return false;
      if (!this.states.has(name)) return false;
    }
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// Copied-out entries.

/**
 * Entries copied out of the table: ENTRY_WORDS words each, in one Int32Array, so they can be
 * formatted or serialised long after the slice that found them ended. The formatters in
 * format.ts work on them unchanged (`ctx.i32` is the copy, `offset(i)` the entry).
 */
export class EntryDump {
  /** @internal */
  readonly ctx: TrackerContext;
  constructor(
    readonly words: Int32Array,
    readonly count: number,
    /** Table clock the copies were taken at (remaining timeouts are relative to it). */
    readonly now: number,
    /** Extension blocks, EXT_WORDS per entry (X_FLAGS 0: the entry had none). */
    readonly ext: Int32Array = new Int32Array(count * EXT_WORDS),
  ) {
    this.ctx = { i32: words, u32: new Uint32Array(words.buffer, words.byteOffset, words.length), sys: 0 };
  }

  /** @internal */
  offset(i: number): number {
    return i * ENTRY_WORDS;
  }

  /** `conntrack -L` lines (`-o extended` with { extended: true }). */
  lines(opts: FormatOptions = {}): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.count; i++) out.push(this.line(i, opts));
    return out;
  }

  /** Entry i's `conntrack -L` line. */
  line(i: number, opts: FormatOptions = {}): string {
    return formatEntry(this.ctx, i * ENTRY_WORDS, this.now, opts);
  }

  /** Accounting of entry i (null without the acct extension). */
  acct(i: number): ConnAcct | null {
    const x = i * EXT_WORDS;
    return (this.ext[x + X_FLAGS]! & EXT_ACCT) ? readAcct(this.ext, x) : null;
  }

  /** Labels of entry i as a 128-bit bigint (0n without labels). */
  labels(i: number): bigint {
    const x = i * EXT_WORDS;
    return (this.ext[x + X_FLAGS]! & EXT_LABELS) ? readLabels(this.ext, x) : 0n;
  }

  /** `/proc/net/nf_conntrack` lines (with packets= bytes= when accounting is on). */
  procLines(): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.count; i++) out.push(this.procLine(i));
    return out;
  }

  /** Entry i's `/proc/net/nf_conntrack` line. */
  procLine(i: number): string {
    return formatProcEntry(this.ctx, i * ENTRY_WORDS, this.now, this.acct(i));
  }

  /** Per-entry JSON, with `acct` and `labels` (hex) when the entry has them (ConnEvent.toJSON()'s shape). */
  json(): ConnEntryJson[] {
    const out: ConnEntryJson[] = [];
    for (let i = 0; i < this.count; i++) out.push(this.jsonAt(i));
    return out;
  }

  /** Entry i as JSON, with `acct` and `labels` (hex) when it has them (ConnEvent.toJSON()'s shape). */
  jsonAt(i: number): ConnEntryJson {
    return connEntryJson(this.ctx, i * ENTRY_WORDS, this.now, this.ext, i * EXT_WORDS);
  }

}

// ---------------------------------------------------------------------------------------------
// Tuples for get / delete.

/** One direction's tuple, as conntrack -G / -D take it. */
export interface TupleSpec {
  proto: number | string;
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  /** ICMP / ICMPv6 echo: type, code, id. */
  type?: number;
  code?: number;
  id?: number;
  zone?: number;
  ns?: number;
}

/** Fill `t[0..TUPLE_WORDS)` from a spec; returns the protocol word. */
export function tupleFromSpec(spec: TupleSpec, t: Int32Array): number {
  const l4 = parseProto(spec.proto);
  const fs = parseAddr(spec.src, t, T_SRC);
  const fd = parseAddr(spec.dst, t, T_DST);
  if (fs !== fd) throw argError(`tuple mixes address families: ${spec.src} and ${spec.dst}`);
  if (hasPorts(l4)) {
    checkPort('sport', spec.sport);
    checkPort('dport', spec.dport);
    if (spec.sport === undefined || spec.dport === undefined) throw argError(`a ${l4Name(l4)} tuple needs sport and dport`);
    t[T_PORTS] = (spec.sport << 16) | spec.dport;
  } else if (l4 === IPPROTO_ICMP || l4 === IPPROTO_ICMPV6) {
    t[T_PORTS] = (((spec.id ?? 0) & 0xffff) << 16) | (((spec.type ?? 0) & 0xff) << 8) | ((spec.code ?? 0) & 0xff);
  } else {
    t[T_PORTS] = 0;
  }
  return protoWord(fs, l4);
}

// ---------------------------------------------------------------------------------------------
// Operations.

/** Options of new CtOps(). */
export interface CtOpsOptions {
  /** Buckets walked per online slice (default 1024). */
  sliceBuckets?: number;
}

/** Options of the CtOps walks (list, dump, count): clock, expired entries, abort signal. */
export interface WalkOptions {
  /** Table clock for expiry and remaining timeouts (default: the table's clock). */
  now?: number;
  /** Include entries whose timeout has passed but that are still linked (default false: -L skips them). */
  expired?: boolean;
  /**
   * Stops the walk between slices (never inside one): the call throws an AbortError (code
   * ABORT_ERR). Entries a flush removed before the abort stay removed.
   */
  signal?: AbortSignal;
}

/** Options of single-entry operations and flushes. */
export interface OpOptions {
  /** Table clock (default: the table's clock). */
  now?: number;
  /** Checked before the operation and between slices of a walk (AbortError, code ABORT_ERR). */
  signal?: AbortSignal;
}

/** One worker record's statistics (conntrack -S row). */
export interface WorkerStats {
  /** Worker record index. */
  wid: number;
  /** 1 while a thread owns the record. */
  alive: boolean;
  stats: Record<string, number>;
}

/** Per-worker statistic rows (by worker record, zero rows included) and their sum. */
export function workerStats(table: ConntrackTable): { total: Record<string, number>; perWorker: WorkerStats[] } {
  const total: Record<string, number> = {};
  for (const n of STAT_NAMES) total[n] = 0;
  const perWorker: WorkerStats[] = [];
  for (let w = 0; w < table.maxWorkers; w++) {
    const base = table.sec.stats + w * STAT_WORDS;
    const stats: Record<string, number> = {};
    let any = false;
    STAT_NAMES.forEach((n, i) => {
      // Single writer per block; a racy read gives a recent value, as /proc/net/stat does.
      const v = Atomics.load(table.i32, base + i) >>> 0;
      stats[n] = v;
      total[n]! += v;
      if (v) any = true;
    });
    // Atomics.load: W_ALIVE is claimed by CAS in registerWorker.
    const alive = Atomics.load(table.i32, table.sec.workers + w * WORKER_WORDS + W_ALIVE) === 1;
    if (any || alive) perWorker.push({ wid: w, alive, stats });
  }
  return { total, perWorker };
}

/** Entries whose chains warmChains reads ahead of their kills, and how many links deep. */
const WARM_GROUP = 16;
const WARM_HOPS = 3;

/** conntrack-tools operations on a live table from any thread: list, get, delete, flush, count, update, stats. */
export class CtOps {
  readonly table: ConntrackTable;
  /** Owns this thread's worker record; its chains do the lookups and kills. */
  readonly ct: Conntrack;
  private readonly slice: number;
  private readonly i32: Int32Array;
  /** Scratch: the original-direction slots of one bucket. */
  private scratch = new Int32Array(64);
  private readonly t = new Int32Array(2 * TUPLE_WORDS);
  /** Scratch for indexedWalk: slots collected from a zone / namespace list, and their E_GEN. */
  private listSlots = new Int32Array(0);
  private listGens = new Int32Array(0);
  /** Scratch for warmChains: the chain position reached for each tuplehash of a group. */
  private warmRefs = new Int32Array(2 * WARM_GROUP);
  /** Linked slots the last list/count/delete/flush examined (through a zone list or every bucket). */
  examined = 0;

  constructor(table: ConntrackTable | TableHandle, opts: CtOpsOptions = {}) {
    this.table = table instanceof ConntrackTable ? table : ConntrackTable.attach(table);
    this.ct = new Conntrack(this.table);
    this.i32 = this.table.i32;
    const s = opts.sliceBuckets ?? 1024;
    if (!Number.isInteger(s) || s < 1) throw rangeError(`sliceBuckets must be a positive integer, got ${s}`);
    this.slice = s;
  }

  /** Give the worker record back. */
  close(): void {
    this.ct.close();
  }

  private get chains() {
    return this.ct.chains;
  }

  /**
   * Collect the slots of bucket `b`'s entries whose ORIGINAL tuplehash lives there into
   * this.scratch; returns how many. Restarts the bucket when the walk ends on another bucket's
   * nulls marker (an entry moved under us: 'refcount' tables recycle slots at once).
   */
  private collectBucket(b: number): number {
    const i32 = this.i32;
    const c = this.chains;
    for (;;) {
      let n = 0;
      // Chain words: Atomics.load pairs with the writers' Atomics.store that publish links.
      let ref = Atomics.load(i32, c.B + b);
      let guard = 0;
      while (ref >= 0 && guard++ < 1 << 20) {
        const e = c.E + (ref >>> 1) * ENTRY_WORDS;
        const next = Atomics.load(i32, e + E_NEXT + (ref & 1));
        if ((ref & 1) === DIR_ORIGINAL) {
          if (n === this.scratch.length) {
            const bigger = new Int32Array(n * 2);
            bigger.set(this.scratch);
            this.scratch = bigger;
          }
          this.scratch[n++] = ref >>> 1;
        }
        ref = next;
      }
      if (ref < 0 && ref !== ~b) continue; // moved to another chain mid-walk: redo this bucket
      return n;
    }
  }

  /**
   * The single place where an index narrows a walk: filters that name a zone or a namespace
   * (with a record) walk that zone's or namespace's entry list (zones.ts; the shorter one when
   * both are named) instead of the table. Returns false when there is no index; the caller
   * then walks every bucket.
   *
   * The list is walked in slices of at most sliceBuckets entries: each slice collects slots
   * under the list's lock stripe (held for that slice only, never while visiting), then visits
   * them online (beginBatch / endBatch around each slice, as walk() does), so flushing a zone
   * costs time in proportion to the zone, not to the table, and packet workers inserting or
   * deleting in that zone wait at most one slice.
   */
  private indexedWalk(m: CtMatcher, opts: WalkOptions, visit: (e: number, slot: number) => void, warm: boolean): boolean {
    const f = m.filter;
    if (f.zone === undefined && f.ns === undefined) return false;
    const c = this.chains;
    const z = c.zones;
    let kind = -1;
    let key = 0;
    if (f.zone !== undefined) { kind = LIST_ZONE; key = f.zone; }
    if (f.ns !== undefined && f.ns < this.table.namespaces &&
      (kind < 0 || z.listCount(LIST_NS, f.ns) < z.listCount(LIST_ZONE, key))) {
      kind = LIST_NS;
      key = f.ns;
    }
    if (kind < 0) return false; // a namespace without a record has no list
    if (c.qsbr.isOnline) throw stateError('CtOps: this worker is already inside a batch');
    const now = opts.now ?? this.table.clock;
    const wantExpired = opts.expired === true;
    if (this.listSlots.length < this.slice) {
      this.listSlots = new Int32Array(this.slice);
      this.listGens = new Int32Array(this.slice);
    }
    const slots = this.listSlots;
    const gens = this.listGens;
    const i32 = this.i32;
    checkAbort(opts.signal, 'the walk');
    z.walkList(kind, key, this.slice, slots, gens, (n) => {
      checkAbort(opts.signal, 'the walk'); // offline here: nothing to undo
      this.ct.beginBatch();
      try {
        for (let k = 0; k < n; k++) {
          if (warm && k % WARM_GROUP === 0) this.warmChains(slots, k, Math.min(n, k + WARM_GROUP));
          const slot = slots[k]!;
          // Online from here: a slot recycled since it was collected (offline) shows a new
          // generation (E_GEN, written while the slot was private) and is skipped.
          if (i32[c.E + slot * ENTRY_WORDS + E_GEN] !== gens[k]) continue;
          this.visitSlot(slot, m, now, wantExpired, visit);
        }
      } finally {
        this.ct.endBatch(); // offline between slices: grace periods go on without us
      }
    });
    return true;
  }

  /**
   * Read, for slots[from..to), the chain words a kill will walk to find each tuplehash's
   * predecessor (singly linked chains: Chains.unlinkOne walks from the bucket head), one hop for
   * the whole group at a time. The loads of a hop are independent, so their cache misses overlap
   * instead of each kill waiting for its own chain walk, miss after miss (measured: that walk was
   * the largest single cost of a zone flush). The values only steer these reads; kill re-reads
   * everything under its locks. Plain loads: a racing update only makes a read useless (every
   * chain word holds a slot reference or a negative nulls marker, so every address is in range).
   */
  private warmChains(slots: Int32Array, from: number, to: number): void {
    const i32 = this.i32;
    const c = this.chains;
    const E = c.E;
    const B = c.B;
    const mask = c.mask;
    const refs = this.warmRefs;
    let m = 0;
    for (let k = from; k < to; k++) {
      const e = E + slots[k]! * ENTRY_WORDS;
      refs[m++] = i32[B + (i32[e + E_HASH]! & mask)]!;
      refs[m++] = i32[B + (i32[e + E_HASH + 1]! & mask)]!;
    }
    for (let hop = 0; hop < WARM_HOPS; hop++) {
      for (let q = 0; q < m; q++) {
        const r = refs[q]!;
        // Stop at the entry itself (its tuplehash q & 1): the walk ends there.
        if (r >= 0 && r !== ((slots[from + (q >>> 1)]! << 1) | (q & 1))) refs[q] = i32[E + (r >>> 1) * ENTRY_WORDS + E_NEXT + (r & 1)]!;
        else refs[q] = -1;
      }
    }
  }

  /**
   * Check one linked slot and visit it if it is a live, matching entry. Runs online; in
   * 'refcount' tables it holds a reference across the visit.
   */
  private visitSlot(slot: number, m: CtMatcher, now: number, wantExpired: boolean, visit: (e: number, slot: number) => void): void {
    const i32 = this.i32;
    const c = this.chains;
    const e = c.E + slot * ENTRY_WORDS;
    this.examined++;
    if (!c.noref && !c.getRef(e)) return; // 'refcount': the slot is on its way out
    try {
      // DYING / CONFIRMED change atomically (kill, confirm). A plain load: visits are hints that
      // kill() re-checks under its locks, and a dump copies what it saw; a 32-bit word never tears.
      if ((i32[e + E_STATUS]! & (IPS_DYING | IPS_CONFIRMED)) !== IPS_CONFIRMED) return;
      // Atomics.load: the packet path refreshes the deadline with Atomics.store.
      if (!wantExpired && ((Atomics.load(i32, e + E_TIMEOUT) - now) | 0) <= 0) return;
      if (m.match(i32, e, i32, extOf(i32, this.table.sec.ext, e))) visit(e, slot);
    } finally {
      if (!c.noref) c.put(slot);
    }
  }

  /**
   * Visit every confirmed entry that matches, slice by slice. `visit(e, slot)` runs online
   * (inside the slice) with, in 'refcount' tables, a reference held; it must not keep `e`.
   */
  private walk(m: CtMatcher, opts: WalkOptions, visit: (e: number, slot: number) => void): void {
    const c = this.chains;
    const now = opts.now ?? this.table.clock;
    const wantExpired = opts.expired === true;
    if (c.qsbr.isOnline) throw stateError('CtOps: this worker is already inside a batch');
    const nb = c.mask + 1;
    for (let b0 = 0; b0 < nb; b0 += this.slice) {
      checkAbort(opts.signal, 'the walk'); // between slices: offline, nothing to undo
      this.ct.beginBatch();
      try {
        const end = Math.min(nb, b0 + this.slice);
        for (let b = b0; b < end; b++) {
          const n = this.collectBucket(b);
          for (let k = 0; k < n; k++) this.visitSlot(this.scratch[k]!, m, now, wantExpired, visit);
        }
      } finally {
        this.ct.endBatch(); // offline between slices: grace periods go on without us
      }
    }
  }

  /** Visit matches through the zone index when there is one, else by walking the table. */
  private select(m: CtMatcher, opts: WalkOptions, visit: (e: number, slot: number) => void, warm = false): void {
    this.examined = 0;
    if (this.indexedWalk(m, opts, visit, warm)) return;
    this.walk(m, opts, visit);
  }

  /** Copy out every matching entry (conntrack -L [filters]). */
  dump(filter: CtFilter | CtMatcher = {}, opts: WalkOptions = {}): EntryDump {
    const m = filter instanceof CtMatcher ? filter : new CtMatcher(filter);
    const now = opts.now ?? this.table.clock;
    let words = new Int32Array(ENTRY_WORDS * 64);
    let ext = new Int32Array(EXT_WORDS * 64);
    let n = 0;
    this.select(m, { ...opts, now }, (e) => {
      if ((n + 1) * ENTRY_WORDS > words.length) {
        const bigger = new Int32Array(words.length * 2);
        bigger.set(words);
        words = bigger;
        const biggerExt = new Int32Array(ext.length * 2);
        biggerExt.set(ext);
        ext = biggerExt;
      }
      this.copyExt(e, ext, n * EXT_WORDS);
      // Copied inside the slice: the entry's words are stable while we are online ('noref')
      // or hold a reference ('refcount'); status and timeout are re-read atomically.
      words.set(this.i32.subarray(e, e + ENTRY_WORDS), n * ENTRY_WORDS);
      words[n * ENTRY_WORDS + E_STATUS] = Atomics.load(this.i32, e + E_STATUS);
      words[n * ENTRY_WORDS + E_TIMEOUT] = Atomics.load(this.i32, e + E_TIMEOUT);
      words[n * ENTRY_WORDS + E_MARK] = Atomics.load(this.i32, e + E_MARK);
      words[n * ENTRY_WORDS + E_EXT] = 0; // a copy has no extension area of its own
      n++;
    });
    return new EntryDump(words.subarray(0, n * ENTRY_WORDS), n, now, ext.subarray(0, n * EXT_WORDS));
  }

  /** Copy entry e's extension block (if any) to out[at..]; counters and labels atomically. */
  private copyExt(e: number, out: Int32Array, at: number): void {
    const i32 = this.i32;
    const x = extOf(i32, this.table.sec.ext, e);
    if (x < 0) return;
    // Atomics.load per word: counters (Atomics.add) and labels (Atomics.or) change concurrently.
    for (let k = 0; k < EXT_WORDS; k++) out[at + k] = Atomics.load(i32, x + k);
  }

  /** conntrack -L as text lines. */
  list(filter: CtFilter = {}, opts: WalkOptions & FormatOptions = {}): string[] {
    return this.dump(filter, opts).lines(opts);
  }

  /** conntrack -C: entries in the table (filtered: entries that match, walked). */
  count(filter: CtFilter = {}, opts: WalkOptions = {}): number {
    const m = new CtMatcher(filter);
    // The entry count: H_COUNT plus the records' unfolded parts (table.count).
    if (m.all && opts.now === undefined && opts.expired === undefined) return this.table.count;
    let n = 0;
    this.select(m, opts, () => { n++; });
    return n;
  }

  /**
   * Find the entry holding this tuple in either direction (conntrack -G); copied out, or null.
   */
  get(spec: TupleSpec, opts: OpOptions = {}): EntryDump | null {
    checkAbort(opts.signal, 'get');
    const now = opts.now ?? this.table.clock;
    let out: EntryDump | null = null;
    this.lookup(spec, now, (e) => {
      const w = new Int32Array(ENTRY_WORDS);
      w.set(this.i32.subarray(e, e + ENTRY_WORDS));
      w[E_STATUS] = Atomics.load(this.i32, e + E_STATUS);
      w[E_TIMEOUT] = Atomics.load(this.i32, e + E_TIMEOUT);
      w[E_MARK] = Atomics.load(this.i32, e + E_MARK);
      w[E_EXT] = 0;
      const x = new Int32Array(EXT_WORDS);
      this.copyExt(e, x, 0);
      out = new EntryDump(w, 1, now, x);
    });
    return out;
  }

  /** Run `found(e, slot)` on the entry of this tuple, inside a batch (with a reference in 'refcount'). */
  private lookup(spec: TupleSpec, now: number, found: (e: number, slot: number) => void): boolean {
    const t = this.t;
    const proto = tupleFromSpec(spec, t);
    const zone = spec.zone ?? 0;
    const ns = spec.ns ?? 0;
    checkZone('zone', zone);
    const c = this.chains;
    const h = c.hash(t, 0, proto, zone, ns);
    this.ct.beginBatch();
    try {
      const ref = c.find(t, 0, proto, zone, ns, h, now);
      if (ref < 0) return false;
      try {
        found(c.entry(ref >>> 1), ref >>> 1);
      } finally {
        if (!c.noref) c.put(ref >>> 1); // find took a reference
      }
      return true;
    } finally {
      this.ct.endBatch();
    }
  }

  /** Delete the entry holding this tuple (conntrack -D with a full tuple). True if removed. */
  delete(spec: TupleSpec, opts: OpOptions = {}): boolean {
    checkAbort(opts.signal, 'delete');
    let removed = false;
    this.lookup(spec, opts.now ?? this.table.clock, (_e, slot) => {
      removed = this.chains.kill(slot, KILL_DELETE);
    });
    return removed;
  }

  /**
   * Delete every matching entry (conntrack -D [filters]; with no filter, conntrack -F).
   * Expired entries that still match are removed too. Returns how many this call removed.
   */
  flush(filter: CtFilter = {}, opts: OpOptions = {}): number {
    const m = new CtMatcher(filter);
    let n = 0;
    // Chains.kill takes the entry's two bucket stripes only; it returns false when another
    // thread (a packet worker, the GC) removed the entry first.
    this.select(m, { ...opts, expired: true }, (_e, slot) => {
      if (this.chains.kill(slot, KILL_DELETE)) n++;
    }, true); // warm the chains each kill walks (warmChains)
    return n;
  }

  /**
   * conntrack -U --mark: set mark = (mark & ~mask) | (value & mask) on every matching entry.
   * Returns the number of entries updated.
   */
  setMark(filter: CtFilter, value: number, mask = 0xffffffff, opts: OpOptions = {}): number {
    const m = new CtMatcher(filter);
    const v = value | 0;
    const mk = mask | 0;
    const i32 = this.i32;
    let n = 0;
    this.select(m, opts, (e) => {
      // CAS loop: a masked update must not lose another thread's concurrent change.
      for (;;) {
        const old = Atomics.load(i32, e + E_MARK);
        const next = (old & ~mk) | (v & mk);
        if (Atomics.compareExchange(i32, e + E_MARK, old, next) === old) break;
      }
      n++;
    });
    return n;
  }

  /**
   * conntrack -U --label: set (or clear) label `bit` (0..127) on every matching entry. Needs
   * extension blocks (table option `extensions`); throws when the slab is empty.
   */
  setLabel(filter: CtFilter, bit: number, on = true, opts: OpOptions = {}): number {
    if (!Number.isInteger(bit) || bit < 0 || bit > 127) throw rangeError(`label must be a bit number 0..127, got ${bit}`);
    const m = new CtMatcher(filter);
    let n = 0;
    // setConnLabel attaches a block on demand (CAS on E_EXT) and sets the bit with Atomics.or.
    this.select(m, opts, (_e, slot) => {
      setConnLabel(this.table, slot, bit, on, this.ct.wid);
      n++;
    });
    return n;
  }

  /**
   * Attach the named timeout policy (defineTimeoutPolicy) to every matching connection, or detach
   * it with null; it applies from each connection's next packet. Returns the number updated.
   */
  setTimeoutPolicy(filter: CtFilter, name: string | null, opts: OpOptions = {}): number {
    const m = new CtMatcher(filter);
    let n = 0;
    // Inside the walk's slice the entry stays alive; the policy word is stored atomically.
    this.select(m, opts, (_e, slot) => {
      setConnTimeoutPolicy(this.table, slot, name, this.ct.wid);
      n++;
    });
    return n;
  }

  /** Statistics per worker record and summed (conntrack -S). */
  stats(): { total: Record<string, number>; perWorker: WorkerStats[] } {
    return workerStats(this.table);
  }
}

/** The reply tuple of a spec (for callers that want to address a connection by its reply). */
export function invertSpec(spec: TupleSpec): TupleSpec {
  const t = new Int32Array(2 * TUPLE_WORDS);
  const proto = tupleFromSpec(spec, t);
  if (!invertTuple(t, 0, t, TUPLE_WORDS, l4protoOf(proto))) throw argError('this tuple has no inverse');
  const ports = t[TUPLE_WORDS + T_PORTS]!;
  const out: TupleSpec = { ...spec, src: spec.dst, dst: spec.src };
  if (hasPorts(l4protoOf(proto))) {
    out.sport = (ports >>> 16) & 0xffff;
    out.dport = ports & 0xffff;
  } else if (spec.type !== undefined) {
    out.type = (ports >>> 8) & 0xff;
  }
  return out;
}
