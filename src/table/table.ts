/**
 * The shared conntrack table: one SharedArrayBuffer laid out by layout.ts, created once and
 * attached from any thread through a serialisable handle.
 */
import { randomBytes } from 'node:crypto';
import { threadId } from 'node:worker_threads';
import {
  CACHE_SLOTS, DISCIPLINE_NOREF, DISCIPLINE_REFCOUNT, ENTRY_WORDS, E_LINK, E_STATUS, HEADER_WORDS,
  H_BUCKETS, H_CAPACITY, H_CLOCK, H_DISCIPLINE, H_EPOCH, H_FREE_COUNT, H_FREE_HEAD, H_GC_CURSOR, H_GC_WAKE,
  H_KEY0, H_KEY1, H_LOCKS, H_MAGIC, H_MAX_CHAIN, H_MAX_CREATED, H_MAX_WORKERS, H_NEXT_ID, H_NS_MAX, H_VERSION,
  LAYOUT_VERSION, MAGIC, STAT_NAMES, STAT_WORDS, W_ALIVE, W_LIMBO_HEAD, W_LIMBO_TAIL, W_PID,
  WORKER_WORDS, bytesPerConnection, sections, type Sections,
} from './layout.js';
import { H_COUNT, H_NAT_BUCKETS, H_REC_HWM, W_CNT, ZC_NS, ZC_ZONE, natBucketsFor, zoneRec } from './layout.js';
import { type NatConfig, type NatRule, getNatRules, setNatRules } from '../track/nat/rules.js';
import { API_OWNER } from './ext.js';
import { EXT_WORDS, H_EVENTS, H_EV_DESTROY, H_EXT_BLOCKS, X_LINK, XC_EXT_FREE, XC_EXT_FREE_COUNT } from './layout.js';
import { SYSCTLS, S_ACCT, S_MAX, S_TIMESTAMP, findSysctl } from './sysctl.js';
import { H_STALLS, H_STALL_MS, REC_SEQ, REC_WORDS, W_BEAT, W_EV_D, W_EV_M, W_EV_PARK, W_EV_RETRY, W_KILL_WHY } from './layout.js';
import { H_ZONE_DEFAULT_LIMIT, NS_COUNT, NS_LIMIT, NS_WORDS, ZA_COUNT, ZA_LIMIT, ZA_WORDS } from './layout.js';
import { NamespaceView, cachedDelta, foldForLimit } from './zones.js';
import { ConntrackError, argError, rangeError, stateError } from '../errors.js';

/** How lookups hold entries: 'noref' (no lock, no reference; slots reused after a grace period) or 'refcount' (the kernel's). */
export type Discipline = 'noref' | 'refcount';

/** Options of ConntrackTable.create(): size, workers, namespaces, sysctls, discipline, extensions, event rings. */
export interface TableOptions {
  /** nf_conntrack_max: most connections at once (default 65536). */
  max?: number;
  /** Hash buckets (rounded up to a power of two; default: max rounded up). */
  buckets?: number;
  /** Threads that may attach at once (packet workers, GC, callers; default 16). */
  maxWorkers?: number;
  /**
   * Namespace records (default 16): namespaces 0..namespaces-1 get their own count, limit and
   * entry list (zones.ts); others are only counted in the global nf_conntrack_max.
   */
  namespaces?: number;
  /** Default limit of zones without their own (OVS `ct-set-limits default=N`; 0 = none). */
  defaultZoneLimit?: number;
  /** Sysctls by kernel name (with or without `net.netfilter.`). */
  sysctls?: Record<string, number>;
  /** Reclamation: 'noref' (grace periods, default) or 'refcount' (kernel today). */
  discipline?: Discipline;
  /** Fixed hash secret (tests only); random by default. */
  hashKey?: [number, number];
  /** Chain length cap on insert (default 64): no chain grows past it. An integer in 1..65536. */
  maxChain?: number;
  /**
   * Liveness (wall ms, default 5000; 0 = never): an event subscriber that has not polled for this
   * long while the DESTROY ring is full for it is overrun (its backlog dropped with a count), and
   * a worker inside one batch for this long no longer holds grace periods up (it re-enters its
   * batch when it resumes). Table-wide; `table.stallMs` changes it.
   */
  stallMs?: number;
  /**
   * Extension blocks (ext.ts: accounting, timestamps, labels, timeout policy), allocated on
   * demand per connection. Default: one per entry slot when nf_conntrack_acct or
   * nf_conntrack_timestamp is on at creation, else a quarter of that (at least 64).
   */
  extensions?: number;
  /**
   * Event ring sizes in records (rounded up to a power of two; ecache.ts). `false`: no rings
   * (events only reach a thread-local EventSink). Default { ring: 4096, destroyRing: 1024 }.
   */
  events?: false | { ring?: number; destroyRing?: number };
  /**
   * Layer-4 checksums: 'offload' (default) accepts a TCP/UDP/UDP-Lite checksum that is the
   * pseudo-header partial sum a sender with checksum offload leaves (the kernel never verifies
   * those), counted in the `csum_offload` statistic; 'strict' treats it as a bad checksum.
   * Same as the sysctl nf_conntrack_checksum_offload (1 / 0).
   */
  checksum?: 'offload' | 'strict';
}

/** What another thread needs to attach: plain data, safe to postMessage. */
export interface TableHandle {
  readonly buffer: SharedArrayBuffer;
}

/**
 * Wake the table's GC worker (if one runs): called by an inserter that found the table full and
 * could not early-drop. Cheap enough for that failure path; never called per packet otherwise.
 */
export function wakeGc(table: ConntrackTable): void {
  // Atomics.add changes the futex word so a GC about to sleep on the old value does not sleep.
  Atomics.add(table.i32, H_GC_WAKE, 1);
  // Notify after the change: wakes a GC already sleeping on H_GC_WAKE.
  Atomics.notify(table.i32, H_GC_WAKE);
}

/** Tables this thread created: only they may set limits (attached copies may not). */
const owned = new WeakSet<ConntrackTable>();

function checkLimit(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0x7ffffffe) throw rangeError(`${what} must be an integer in 0..${0x7ffffffe} (0 = none), got ${v}`);
}

function checkStall(v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0x3fffffff) throw new Error(`stallMs must be an integer in 0..${0x3fffffff} (0 = never), got ${v}`);
}

function pow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** The connection table: one SharedArrayBuffer that any thread can attach to (create(), attach(handle())). */
export class ConntrackTable {
  readonly buffer: SharedArrayBuffer;
  /** @internal */
  readonly i32: Int32Array;
  /** @internal */
  readonly u32: Uint32Array;
  /** @internal */
  readonly sec: Sections;
  readonly capacity: number;
  readonly buckets: number;
  readonly locks: number;
  readonly maxWorkers: number;
  readonly namespaces: number;
  readonly discipline: number;

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.i32 = new Int32Array(buffer);
    this.u32 = new Uint32Array(buffer);
    const i32 = this.i32;
    if (i32.length < HEADER_WORDS || i32[H_MAGIC] !== MAGIC) {
      throw new ConntrackError('ERR_CT_BAD_HANDLE', 'not a conntrack-sab table (bad magic)');
    }
    if (i32[H_VERSION] !== LAYOUT_VERSION) {
      throw new ConntrackError('ERR_CT_BAD_HANDLE', `table layout version ${i32[H_VERSION]} is not ${LAYOUT_VERSION}`);
    }
    this.capacity = i32[H_CAPACITY]!;
    this.buckets = i32[H_BUCKETS]!;
    this.locks = i32[H_LOCKS]!;
    this.maxWorkers = i32[H_MAX_WORKERS]!;
    this.namespaces = i32[H_NS_MAX]!;
    this.discipline = i32[H_DISCIPLINE]!;
    this.sec = sections({
      capacity: this.capacity, buckets: this.buckets, locks: this.locks,
      maxWorkers: this.maxWorkers, namespaces: this.namespaces,
      extBlocks: i32[H_EXT_BLOCKS]!, eventRecords: i32[H_EVENTS]!, destroyRecords: i32[H_EV_DESTROY]!,
      natBuckets: i32[H_NAT_BUCKETS]!,
    });
    if (this.sec.totalWords * 4 !== buffer.byteLength) throw new ConntrackError('ERR_CT_BAD_HANDLE', 'table buffer size mismatch');
  }

  /** Create a new, empty table. */
  static create(opts: TableOptions = {}): ConntrackTable {
    const max = opts.max ?? 65536;
    if (!Number.isInteger(max) || max < 1 || max > 1 << 24) {
      throw rangeError(`max must be an integer in 1..${1 << 24}, got ${max}`);
    }
    const maxWorkers = opts.maxWorkers ?? 16;
    if (!Number.isInteger(maxWorkers) || maxWorkers < 1 || maxWorkers > 256) {
      throw rangeError(`maxWorkers must be an integer in 1..256, got ${maxWorkers}`);
    }
    const namespaces = opts.namespaces ?? 16;
    if (!Number.isInteger(namespaces) || namespaces < 1 || namespaces > 65536) {
      throw rangeError(`namespaces must be an integer in 1..65536, got ${namespaces}`);
    }
    if (opts.buckets !== undefined && (!Number.isInteger(opts.buckets) || opts.buckets < 1 || opts.buckets > 1 << 26)) {
      throw new Error(`buckets must be an integer in 1..${1 << 26}, got ${opts.buckets}`);
    }
    const buckets = pow2(Math.max(16, opts.buckets ?? max));
    if (buckets > 1 << 26) throw rangeError(`too many buckets: ${buckets}`);
    const locks = Math.min(1024, buckets);
    // Slots beyond max absorb entries waiting for a grace period and the per-worker caches.
    const capacity = max + Math.ceil(max / 16) + maxWorkers * CACHE_SLOTS;
    const sysIn = (n: string): number => {
      if (!opts.sysctls) return 0;
      for (const [k, v] of Object.entries(opts.sysctls)) if (findSysctl(k)?.name === n) return v;
      return 0;
    };
    const extWanted = sysIn(SYSCTLS[S_ACCT]!.name) || sysIn(SYSCTLS[S_TIMESTAMP]!.name);
    const extBlocks = opts.extensions ?? (extWanted ? capacity : Math.max(64, Math.ceil(capacity / 4)));
    if (!Number.isInteger(extBlocks) || extBlocks < 0 || extBlocks > capacity) {
      throw rangeError(`extensions must be an integer in 0..${capacity}, got ${extBlocks}`);
    }
    const ev = opts.events === false ? { ring: 0, destroyRing: 0 } : opts.events ?? {};
    for (const [k, v] of [['ring', ev.ring], ['destroyRing', ev.destroyRing]] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 1 << 22)) {
        throw new Error(`events.${k} must be an integer in 0..${1 << 22}, got ${v}`);
      }
    }
    const eventRecords = ev.ring === 0 ? 0 : pow2(Math.max(16, ev.ring ?? 4096));
    const destroyRecords = ev.destroyRing === 0 || eventRecords === 0 ? 0 : pow2(Math.max(16, ev.destroyRing ?? 1024));
    if (eventRecords > 1 << 22 || destroyRecords > 1 << 22) throw rangeError('event rings are limited to 4194304 records');
    const natBuckets = natBucketsFor(buckets);
    const sec = sections({ capacity, buckets, locks, maxWorkers, namespaces, extBlocks, eventRecords, destroyRecords, natBuckets });
    const buffer = new SharedArrayBuffer(sec.totalWords * 4);
    const i32 = new Int32Array(buffer);
    i32[H_MAGIC] = MAGIC;
    i32[H_VERSION] = LAYOUT_VERSION;
    i32[H_CAPACITY] = capacity;
    i32[H_BUCKETS] = buckets;
    i32[H_LOCKS] = locks;
    i32[H_MAX_WORKERS] = maxWorkers;
    i32[H_NS_MAX] = namespaces;
    i32[H_EPOCH] = 1; // odd, never 0: a worker's state 0 means offline
    i32[H_NEXT_ID] = 1;
    const maxChain = opts.maxChain ?? 64;
    if (!Number.isInteger(maxChain) || maxChain < 1 || maxChain > 65536) {
      throw new Error(`maxChain must be an integer in 1..65536, got ${maxChain}`);
    }
    i32[H_MAX_CHAIN] = maxChain;
    const stallMs = opts.stallMs ?? 5000;
    checkStall(stallMs);
    i32[H_STALL_MS] = stallMs;
    i32[H_MAX_CREATED] = max;
    const discipline = opts.discipline ?? 'noref';
    if (discipline !== 'noref' && discipline !== 'refcount') {
      throw argError(`discipline must be 'noref' or 'refcount', got ${String(discipline)}`);
    }
    i32[H_DISCIPLINE] = discipline === 'noref' ? DISCIPLINE_NOREF : DISCIPLINE_REFCOUNT;
    const key = opts.hashKey ?? (() => {
      const b = randomBytes(8);
      return [b.readInt32LE(0), b.readInt32LE(4)] as [number, number];
    })();
    i32[H_KEY0] = key[0] | 0;
    i32[H_KEY1] = key[1] | 0;
    // Every bucket starts empty: its nulls marker names it.
    for (let b = 0; b < buckets; b++) i32[sec.buckets + b] = ~b;
    // Every slot starts on the shared free list, in order.
    for (let s = 0; s < capacity; s++) {
      i32[sec.entries + s * ENTRY_WORDS + E_LINK] = s + 1 < capacity ? s + 1 : -1;
      i32[sec.entries + s * ENTRY_WORDS + E_STATUS] = 0;
    }
    i32[H_FREE_HEAD] = 0;
    i32[H_FREE_COUNT] = capacity;
    for (let w = 0; w < maxWorkers; w++) {
      i32[sec.workers + w * WORKER_WORDS + W_LIMBO_HEAD] = -1;
      i32[sec.workers + w * WORKER_WORDS + W_LIMBO_TAIL] = -1;
    }
    i32[H_GC_CURSOR] = 0;
    i32[H_EXT_BLOCKS] = extBlocks;
    i32[H_EVENTS] = eventRecords;
    i32[H_EV_DESTROY] = destroyRecords;
    // Every extension block 1..extBlocks starts on the extension free list, in order.
    for (let b = 1; b <= extBlocks; b++) i32[sec.ext + b * EXT_WORDS + X_LINK] = b < extBlocks ? b + 1 : 0;
    i32[sec.xctl + XC_EXT_FREE] = extBlocks > 0 ? 1 : 0;
    i32[sec.xctl + XC_EXT_FREE_COUNT] = extBlocks;
    // Event records start one lap behind (seq i - ring size): never taken as published before a
    // producer writes them (record 0 with seq word 0 would read as event 0).
    for (let r = 0; r < eventRecords; r++) i32[sec.events + r * REC_WORDS + REC_SEQ] = (r - eventRecords) & 0x7fffffff;
    for (let r = 0; r < destroyRecords; r++) i32[sec.destroys + r * REC_WORDS + REC_SEQ] = (r - destroyRecords) & 0x7fffffff;
    // NAT bysource chains start empty.
    i32[H_NAT_BUCKETS] = natBuckets;
    i32.fill(-1, sec.bysource, sec.bysource + natBuckets);
    const t = new ConntrackTable(buffer);
    for (const d of SYSCTLS) i32[sec.sysctl + d.index] = d.def;
    i32[sec.sysctl + S_MAX] = max;
    if (opts.sysctls) for (const [name, value] of Object.entries(opts.sysctls)) t.setSysctl(name, value);
    if (opts.checksum !== undefined) {
      if (opts.checksum !== 'offload' && opts.checksum !== 'strict') throw new Error(`checksum must be 'offload' or 'strict', got ${String(opts.checksum)}`);
      t.setSysctl('nf_conntrack_checksum_offload', opts.checksum === 'strict' ? 0 : 1);
    }
    owned.add(t);
    if (opts.defaultZoneLimit !== undefined) t.setDefaultZoneLimit(opts.defaultZoneLimit);
    return t;
  }

  /** Attach to a table created elsewhere (any thread). */
  static attach(handle: TableHandle): ConntrackTable {
    if (!handle || !(handle.buffer instanceof SharedArrayBuffer)) {
      throw new ConntrackError('ERR_CT_BAD_HANDLE', 'attach needs a handle { buffer: SharedArrayBuffer } from table.handle()');
    }
    return new ConntrackTable(handle.buffer);
  }

  handle(): TableHandle {
    return { buffer: this.buffer };
  }

  /**
   * Connections in the table: H_COUNT plus every worker record's unfolded part (layout.ts W_CNT,
   * a percpu_counter). Exact when no thread is inside a batch; racy while threads insert.
   */
  get count(): number {
    let n = Atomics.load(this.i32, H_COUNT); // Atomics.add'ed by folding workers
    // W_CNT: plain stores by each record's owner; a racy read gives a value it held.
    for (let w = 0; w < this.maxWorkers; w++) n += this.i32[this.sec.workers + w * WORKER_WORDS + W_CNT]!;
    return n;
  }

  get max(): number {
    return this.i32[this.sec.sysctl + S_MAX]!;
  }

  /** Stalled threads detected so far (workers expelled from a grace period, subscribers overrun for silence). */
  get stalls(): number {
    return Atomics.load(this.i32, H_STALLS); // Atomics.add'ed by the detecting thread
  }

  /** Liveness time, wall ms (TableOptions.stallMs; 0 = never). */
  get stallMs(): number {
    return Atomics.load(this.i32, H_STALL_MS); // Atomics.store'd below
  }
  set stallMs(ms: number) {
    checkStall(ms);
    Atomics.store(this.i32, H_STALL_MS, ms); // read by producers and reclaimers
  }

  /** Set a sysctl by kernel name; throws on unknown names or out-of-range values. */
  setSysctl(name: string, value: number): void {
    const d = findSysctl(name);
    if (!d) throw argError(`unknown sysctl "${name}"`);
    if (!Number.isInteger(value) || value < d.min || value > d.max) {
      throw rangeError(`sysctl ${d.name}: ${value} is out of range ${d.min}..${d.max}`);
    }
    if (d.index === S_MAX && value > this.i32[H_MAX_CREATED]!) {
      // The slab was sized for the max given at creation.
      throw rangeError(`nf_conntrack_max cannot grow past ${this.i32[H_MAX_CREATED]} (the size the table was created with)`);
    }
    // Atomic store: readers pick the new value up on their next packet.
    Atomics.store(this.i32, this.sec.sysctl + d.index, value);
  }

  getSysctl(name: string): number {
    const d = findSysctl(name);
    if (!d) throw argError(`unknown sysctl "${name}"`);
    return Atomics.load(this.i32, this.sec.sysctl + d.index);
  }

  sysctls(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const d of SYSCTLS) out[d.name] = Atomics.load(this.i32, this.sec.sysctl + d.index);
    return out;
  }

  /** The table clock (ms, uint32 wrapping), as last published by a driver. */
  get clock(): number {
    return Atomics.load(this.i32, H_CLOCK) >>> 0;
  }
  set clock(ms: number) {
    // Published for the GC worker, which has no packets to take time from.
    Atomics.store(this.i32, H_CLOCK, ms | 0);
  }

  /** @internal Claim a worker record; returns its id. Throws when all maxWorkers records are taken. */
  registerWorker(): number {
    for (let w = 0; w < this.maxWorkers; w++) {
      const base = this.sec.workers + w * WORKER_WORDS;
      // CAS claims the record exclusively; its other words are ours after this.
      if (Atomics.compareExchange(this.i32, base + W_ALIVE, 0, 1) === 0) {
        // Records ever claimed: inserters sum counts up to here (chains.ts). CAS: only ever raised.
        for (let h = Atomics.load(this.i32, H_REC_HWM); h < w + 1; h = Atomics.load(this.i32, H_REC_HWM)) {
          if (Atomics.compareExchange(this.i32, H_REC_HWM, h, w + 1) === h) break;
        }
        Atomics.store(this.i32, base + W_PID, threadId);
        // Event and liveness words of a previous owner mean nothing to recovery of this one.
        for (const w of [W_EV_D, W_EV_M, W_EV_PARK, W_EV_RETRY, W_KILL_WHY]) Atomics.store(this.i32, base + w, 0);
        Atomics.store(this.i32, base + W_BEAT, Date.now() & 0x7fffffff);
        return w;
      }
    }
    throw new ConntrackError('ERR_CT_NO_RESOURCE', `all ${this.maxWorkers} worker records are in use (raise maxWorkers)`);
  }

  /** @internal Give a worker record back (its caches and limbo must have been drained). */
  releaseWorker(w: number): void {
    const base = this.sec.workers + w * WORKER_WORDS;
    // Store releases the record after every write the owner made to it.
    Atomics.store(this.i32, base + W_ALIVE, 0);
  }

  /** Wake the GC worker now (an insert found the table full); see wakeGc(). */
  wakeGc(): void {
    wakeGc(this);
  }

  /** Summed statistics and per-worker rows, by name. */
  stats(): { total: Record<string, number>; perWorker: Record<string, number>[] } {
    const total: Record<string, number> = {};
    const perWorker: Record<string, number>[] = [];
    for (const n of STAT_NAMES) total[n] = 0;
    for (let w = 0; w < this.maxWorkers; w++) {
      const row: Record<string, number> = {};
      let any = false;
      STAT_NAMES.forEach((n, i) => {
        const v = this.i32[this.sec.stats + w * STAT_WORDS + i]! >>> 0;
        row[n] = v;
        total[n]! += v;
        if (v) any = true;
      });
      if (any) perWorker.push(row);
    }
    return { total, perWorker };
  }

  // --- namespaces and zones (zones.ts) ---------------------------------------------------

  /** True for the table object create() returned: the only one that may change limits. */
  get isOwner(): boolean {
    return owned.has(this);
  }

  private ownerOnly(what: string): void {
    if (!owned.has(this)) throw stateError(`${what}: only the table object that created the table may change limits`);
  }

  private checkNs(ns: number): void {
    if (!Number.isInteger(ns) || ns < 0 || ns >= this.namespaces) {
      throw rangeError(`namespace must be an integer in 0..${this.namespaces - 1} (table option namespaces), got ${ns}`);
    }
  }

  private checkZoneId(zone: number): void {
    if (!Number.isInteger(zone) || zone < 0 || zone > 0xffff) throw rangeError(`zone must be an integer in 0..65535, got ${zone}`);
  }

  /**
   * Grant namespace `ns` at most `limit` connections (0 = none: only nf_conntrack_max applies);
   * the per-netns nf_conntrack_max. Owner only. Lowering it below the current count removes
   * nothing: new connections are refused until the count drops below it.
   */
  setNamespaceLimit(ns: number, limit: number): void {
    this.ownerOnly('setNamespaceLimit');
    this.checkNs(ns);
    checkLimit('limit', limit);
    // Read by inserters with Atomics.load: applies from their next insert. Stored with every
    // bucket stripe held, after the records' deltas are folded (zones.ts foldForLimit).
    foldForLimit(this, API_OWNER, () => Atomics.store(this.i32, this.sec.ns + ns * NS_WORDS + NS_LIMIT, limit));
  }

  namespaceLimit(ns: number): number {
    this.checkNs(ns);
    return Atomics.load(this.i32, this.sec.ns + ns * NS_WORDS + NS_LIMIT); // owner's Atomics.store
  }

  /** Connections of namespace `ns` in the table. */
  namespaceCount(ns: number): number {
    this.checkNs(ns);
    // The counter (changed under bucket locks) and the records' unfolded deltas.
    return Atomics.load(this.i32, this.sec.ns + ns * NS_WORDS + NS_COUNT) + cachedDelta(this, ZC_NS, ns);
  }

  /**
   * Limit zone `zone` to `limit` connections (OVS `ct-set-limits zone=Z,limit=L`; 0 = no limit
   * even when a default is set), or with null go back to the default (`ct-del-limits zone=Z`).
   * Owner only.
   */
  setZoneLimit(zone: number, limit: number | null): void {
    this.ownerOnly('setZoneLimit');
    this.checkZoneId(zone);
    if (limit !== null) checkLimit('limit', limit);
    // ZA_LIMIT holds limit + 1 (0 = not set); inserters read it with Atomics.load. Stored with
    // every bucket stripe held, after the records' deltas are folded (zones.ts foldForLimit).
    const v = limit === null ? 0 : limit + 1;
    foldForLimit(this, API_OWNER, () => Atomics.store(this.i32, this.sec.zacct + zoneRec(zone) * ZA_WORDS + ZA_LIMIT, v));
  }

  /**
   * Install NAT rules for every thread of this table (src/track/nat/rules.ts; an empty list
   * turns NAT off). New connections use them; existing ones keep their mappings.
   */
  setNatRules(cfg: NatConfig | (NatRule | string)[]): void {
    setNatRules(this, API_OWNER, Array.isArray(cfg) ? { rules: cfg } : cfg);
  }

  /** The installed NAT rules (parsed), as setNatRules stored them. */
  natRules(): NatConfig {
    return getNatRules(this);
  }

  /** Default limit of zones without their own (OVS `ct-set-limits default=N`; 0 = none). Owner only. */
  setDefaultZoneLimit(limit: number): void {
    this.ownerOnly('setDefaultZoneLimit');
    checkLimit('limit', limit);
    // Read by inserters with Atomics.load; stored as setZoneLimit stores a zone's.
    foldForLimit(this, API_OWNER, () => Atomics.store(this.i32, H_ZONE_DEFAULT_LIMIT, limit));
  }

  get defaultZoneLimit(): number {
    return Atomics.load(this.i32, H_ZONE_DEFAULT_LIMIT);
  }

  /** Zone `zone`'s effective limit (its own, else the default; 0 = none) and whether it is its own. */
  zoneLimit(zone: number): { limit: number; own: boolean } {
    this.checkZoneId(zone);
    const v = Atomics.load(this.i32, this.sec.zacct + zoneRec(zone) * ZA_WORDS + ZA_LIMIT); // owner's Atomics.store
    return v !== 0 ? { limit: v - 1, own: true } : { limit: this.defaultZoneLimit, own: false };
  }

  /** Connections whose zone id (original zone, else reply zone) is `zone`. */
  zoneCount(zone: number): number {
    this.checkZoneId(zone);
    // The counter (changed under bucket locks) and the records' unfolded deltas.
    return Atomics.load(this.i32, this.sec.zacct + zoneRec(zone) * ZA_WORDS + ZA_COUNT) + cachedDelta(this, ZC_ZONE, zone);
  }

  /**
   * A namespace's restricted view: its usage and a handle for its workers (a Conntrack built
   * from `view.handle()` tracks in namespace `ns` only). It carries no way to change limits.
   */
  namespace(ns: number): NamespaceView {
    this.checkNs(ns);
    return new NamespaceView(this, ns);
  }

  /** Bytes of shared memory per connection at nf_conntrack_max (slab with slack, plus buckets). */
  bytesPerConnection(): number {
    return bytesPerConnection(this.capacity, this.buckets, this.i32[H_NAT_BUCKETS]!) * (this.capacity / this.max);
  }

  get byteLength(): number {
    return this.buffer.byteLength;
  }
}
