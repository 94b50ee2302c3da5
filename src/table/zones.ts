/**
 * Namespaces and zones: directional zones in a connection's identity, fair accounting (a global
 * nf_conntrack_max, a limit per namespace granted by the table's owner, limits per zone like
 * Open vSwitch's ct-zone-limit), and per-zone / per-namespace entry lists so that flushing a
 * zone or a namespace costs time in proportion to what it removes.
 *
 * Identity. A packet carries a zone spec: a 16-bit id and the directions it applies to
 * (ZONE_DIR_*; the kernel's NF_CT_ZONE_DIR_ORIG / _REPL). Per direction the zone id is the
 * spec's id where it applies, else the default zone 0 (the kernel's nf_ct_zone_id). An entry
 * stores both in E_ZONE (original | reply << 16); a lookup compares the zone of the direction of
 * the tuplehash it meets (nf_ct_zone_equal), and each tuple is hashed with its direction's zone.
 * So the same tuple in two zones is two connections, and a zone set for replies only matches
 * reply-direction packets that carry it.
 *
 * Accounting. A connection's "zone" for limits and lists is its zone id: the original-direction
 * zone, or the reply zone when only that one is set (zoneKey(); the same as ops.ts's `zone`
 * filter). Zone ids are global to the table, as zones are to an OVS datapath. Counters count
 * linked (confirmed) entries and change only in Chains.confirm / Chains.kill under the entry's
 * bucket locks. A namespace or zone with a limit is charged with a compareExchange loop that
 * refuses to pass it, so no number of concurrent inserters ever takes it past its limit. One
 * without a limit is counted like the entry count (a percpu_counter): each worker record keeps
 * unfolded deltas of a few counters (W_ZC, layout.ts), folded into the counter word at
 * +-COUNT_BATCH, on eviction and at the end of each batch, so the counter word is exact at rest
 * and readers (counts, invariants) add the records' deltas. Setting a limit folds every record's
 * deltas first, holding every bucket stripe (foldForLimit), so a limited counter has none.
 *
 * Lists. Every confirmed entry is on its zone's list (E_ZPREV / E_ZNEXT) and, when its namespace
 * has a record (ns < table.namespaces), on its namespace's list (E_NPREV / E_NNEXT): circular and
 * doubly linked, newest first, each guarded by a lock stripe (ZL_*) that confirm / kill take
 * after the bucket stripes. Lookups never touch them. Walkers (CtOps through walkList) keep their
 * place with a marker node per worker record, moved under the list's lock in bounded slices, so
 * concurrent inserts and deletes keep the marker's links right and packet workers wait at most
 * one slice.
 *
 * Crash recovery: confirm and kill update these lists and counters inside the window their
 * recovery intents already mark (bucket locks held; W_INTENT_SLOT cleared / KILL_STEP_UNLINKED are stored
 * after them). A recovery that rolls such an operation forward or back should end with
 * rebuildZoneAccounting() (all bucket locks held), which recomputes counters and lists from the
 * chains and releases the dead worker's list locks and marker.
 */
import {
  COUNT_BATCH, LOCK_STRIDE, W_ZC, WORKER_WORDS, ZC_NS, ZC_SLOTS, ZC_ZONE, ZC_ZORIG, type Sections,
} from './layout.js';
import {
  DIR_ORIGINAL, ENTRY_WORDS, E_GEN, E_NEXT, E_NPREV, E_NS, E_STATUS, E_TIMEOUT, E_ZONE,
  E_ZPREV, H_ZONE_DEFAULT_LIMIT, IPS_ASSURED, IPS_CONFIRMED, IPS_DYING, MARKER_WORDS, MK_LIST, MK_NEXT,
  MK_PREV, NS_COUNT, NS_LIMIT, NS_WORDS, ZA_COUNT, ZA_HEAD, ZA_LIMIT, ZA_WORDS, ZL_LOCKS,
  ZL_NS_STRIPES, ZL_ZONE_STRIPES, ZONES, zlStripe, zoneRec,
} from './layout.js';
import { forceUnlock, lock, lockFor, unlock } from './locks.js';
import type { ConntrackTable, TableHandle } from './table.js';

// Zone spec direction flags (the kernel's NF_CT_ZONE_DIR_ORIG / NF_CT_ZONE_DIR_REPL).
/** Zone direction: the zone applies to the original direction only. */
export const ZONE_DIR_ORIG = 1;
/** Zone direction: the zone applies to the reply direction only. */
export const ZONE_DIR_REPL = 2;
/** Zone direction: the zone applies to both directions (the default). */
export const ZONE_DIR_BOTH = ZONE_DIR_ORIG | ZONE_DIR_REPL;

/** Chains.confirm / admission results: the namespace's or the zone's limit refused the insert. */
export const CONFIRM_NS_LIMIT = -4;
export const CONFIRM_ZONE_LIMIT = -5;

/** Which list: a zone's or a namespace's. */
export const LIST_ZONE = 0;
export const LIST_NS = 1;

/** Entries scanned (oldest first) by an early_drop inside a namespace or zone. */
const DROP_SCAN = 32;

/** The counter word of a W_ZC cache key ((ZC_* << 17) | id). */
export function zcWord(sec: Sections, k: number): number {
  const kind = k >>> 17;
  const id = k & 0x1ffff;
  if (kind === ZC_NS) return sec.ns + id * NS_WORDS + NS_COUNT;
  return kind === ZC_ZONE ? sec.zacct + zoneRec(id) * ZA_WORDS + ZA_COUNT : sec.zones + zoneRec(id);
}

/** What the worker records hold unfolded for counter (kind, id) (racy while they insert). */
export function cachedDelta(table: ConntrackTable, kind: number, id: number): number {
  const i32 = table.i32;
  const key = ((kind << 17) | id) + 1;
  let n = 0;
  for (let w = 0; w < table.maxWorkers; w++) {
    const base = table.sec.workers + w * WORKER_WORDS + W_ZC;
    // Plain stores by each owner; a racy read gives a value it held.
    for (let s = 0; s < ZC_SLOTS; s++) if (i32[base + 2 * s] === key) n += i32[base + 2 * s + 1]!;
  }
  return n;
}

/** Every record's unfolded deltas of one kind, by id (racy while they insert). */
export function cachedDeltas(table: ConntrackTable, kind: number): Map<number, number> {
  const i32 = table.i32;
  const out = new Map<number, number>();
  for (let w = 0; w < table.maxWorkers; w++) {
    const base = table.sec.workers + w * WORKER_WORDS + W_ZC;
    for (let s = 0; s < ZC_SLOTS; s++) {
      const k = i32[base + 2 * s]! - 1; // plain stores by each owner
      const d = i32[base + 2 * s + 1]!;
      if (k >= 0 && k >>> 17 === kind && d !== 0) out.set(k & 0x1ffff, (out.get(k & 0x1ffff) ?? 0) + d);
    }
  }
  return out;
}

/**
 * Every record's unfolded deltas of `kinds` go into their counter words and the slots are
 * freed. Caller holds every bucket lock stripe (so no owner is changing its slots).
 */
export function foldAllCaches(table: ConntrackTable, kinds: readonly number[]): void {
  const i32 = table.i32;
  for (let w = 0; w < table.maxWorkers; w++) {
    const base = table.sec.workers + w * WORKER_WORDS + W_ZC;
    for (let s = 0; s < ZC_SLOTS; s++) {
      const k = i32[base + 2 * s]! - 1;
      if (k < 0 || !kinds.includes(k >>> 17)) continue;
      const d = i32[base + 2 * s + 1]!;
      i32[base + 2 * s] = 0;
      i32[base + 2 * s + 1] = 0;
      if (d !== 0) Atomics.add(i32, zcWord(table.sec, k), d); // counters: Atomics by everyone
    }
  }
}

/** Zero every record's deltas of `kinds` (their counters are being recounted). Every stripe held. */
export function dropAllCaches(table: ConntrackTable, kinds: readonly number[]): void {
  const i32 = table.i32;
  for (let w = 0; w < table.maxWorkers; w++) {
    const base = table.sec.workers + w * WORKER_WORDS + W_ZC;
    for (let s = 0; s < ZC_SLOTS; s++) {
      const k = i32[base + 2 * s]! - 1;
      if (k >= 0 && kinds.includes(k >>> 17)) { i32[base + 2 * s] = 0; i32[base + 2 * s + 1] = 0; }
    }
  }
}

/**
 * Run `set` (a limit store) with every bucket stripe held by `owner`, after folding every
 * record's namespace and zone deltas: from then on a limited counter is charged exactly (CAS),
 * with nothing of it left in any record.
 */
export function foldForLimit(table: ConntrackTable, owner: number, set: () => void): void {
  const i32 = table.i32;
  for (let l = 0; l < table.locks; l++) lock(i32, table.sec.locks + l * LOCK_STRIDE, owner); // ascending, as writers
  try {
    foldAllCaches(table, [ZC_NS, ZC_ZONE]);
    set();
  } finally {
    for (let l = 0; l < table.locks; l++) unlock(i32, table.sec.locks + l * LOCK_STRIDE);
  }
}

/** The E_ZONE word of a zone spec: zone `id` where `dir` applies, zone 0 elsewhere. */
export function zoneWord(id: number, dir: number = ZONE_DIR_BOTH): number {
  const z = id & 0xffff;
  return ((dir & ZONE_DIR_ORIG) !== 0 ? z : 0) | ((dir & ZONE_DIR_REPL) !== 0 ? z << 16 : 0);
}

/** A connection's zone id for limits, lists and the `zone` filter: original zone, else reply zone. */
export function zoneKey(ezone: number): number {
  const o = ezone & 0xffff;
  return o !== 0 ? o : ezone >>> 16;
}

/** What a namespace's workers get: attach with it; their Conntrack is bound to `ns`. */
export interface NamespaceHandle extends TableHandle {
  readonly ns: number;
}

/**
 * A namespace's restricted view of the table (ConntrackTable.namespace): its id, its usage, and
 * a handle for its workers. It carries no way to change any limit.
 */
export class NamespaceView {
  readonly #table: ConntrackTable;
  readonly ns: number;
  constructor(table: ConntrackTable, ns: number) {
    this.#table = table;
    this.ns = ns;
  }

  /** For the namespace's workers: `new Conntrack(handle)` tracks in this namespace only. */
  handle(): NamespaceHandle {
    return { buffer: this.#table.buffer, ns: this.ns };
  }

  /** Connections of this namespace in the table. */
  get count(): number {
    return this.#table.namespaceCount(this.ns);
  }

  /** The limit the owner granted (0 = none). */
  get limit(): number {
    return this.#table.namespaceLimit(this.ns);
  }
}

/** Is `h` a namespace handle (a Conntrack built from it is bound to its namespace)? */
export function isNamespaceHandle(h: unknown): h is NamespaceHandle {
  return typeof h === 'object' && h !== null && 'ns' in h && typeof (h as { ns: unknown }).ns === 'number';
}

/**
 * Per-thread access to the accounting and lists of one table (one per Chains). Every method
 * that takes a list lock takes exactly one and nothing else while holding it.
 */
export class ZoneAccounting {
  readonly i32: Int32Array;
  readonly cap: number;
  readonly E: number;
  readonly ZA: number;
  readonly NS: number;
  readonly NH: number;
  readonly ZL: number;
  readonly MK: number;
  readonly nsMax: number;
  readonly wid: number;
  readonly sec: Sections;
  readonly table: ConntrackTable;
  /** This record's counter deltas (W_ZC). */
  readonly ZC: number;
  private evict = 0;
  /** This record's W_CNT or W_ZC may hold an unfolded part (Chains.foldCount clears it; the record's previous owner may have left some). */
  dirty = true;

  constructor(table: ConntrackTable, wid: number) {
    this.sec = table.sec;
    this.table = table;
    this.ZC = table.sec.workers + wid * WORKER_WORDS + W_ZC;
    this.i32 = table.i32;
    this.cap = table.capacity;
    this.E = table.sec.entries;
    this.ZA = table.sec.zacct;
    this.NS = table.sec.ns;
    this.NH = table.sec.nsHeads;
    this.ZL = table.sec.zlocks;
    this.MK = table.sec.markers;
    this.nsMax = table.namespaces;
    this.wid = wid;
  }

  /** The zone's effective limit (0 = none): its own, else the default. */
  zoneLimit(z: number): number {
    // Limit words: Atomics.store by the owner; a new value applies from the next insert.
    const own = Atomics.load(this.i32, this.ZA + zoneRec(z) * ZA_WORDS + ZA_LIMIT);
    return own !== 0 ? own - 1 : Atomics.load(this.i32, H_ZONE_DEFAULT_LIMIT);
  }

  /** The namespace's limit (0 = none; namespaces without a record have none). */
  nsLimit(ns: number): number {
    if (ns < 0 || ns >= this.nsMax) return 0;
    return Atomics.load(this.i32, this.NS + ns * NS_WORDS + NS_LIMIT); // owner's Atomics.store
  }

  /**
   * Would an insert into `ns` / zone `zk` pass the limits now? 0, CONFIRM_NS_LIMIT or
   * CONFIRM_ZONE_LIMIT. A hint taken before allocating (confirm decides, atomically).
   */
  atLimit(ns: number, zk: number): number {
    const i32 = this.i32;
    const nl = this.nsLimit(ns);
    // Counters: CAS'd / sub'd under bucket locks; a load gives a recent value.
    if (nl !== 0 && Atomics.load(i32, this.NS + ns * NS_WORDS + NS_COUNT) >= nl) return CONFIRM_NS_LIMIT;
    const zl = this.zoneLimit(zk);
    if (zl !== 0 && Atomics.load(i32, this.ZA + zoneRec(zk) * ZA_WORDS + ZA_COUNT) >= zl) return CONFIRM_ZONE_LIMIT;
    return 0;
  }

  /**
   * Add `d` to counter (kind, id) through this record's deltas (W_ZC); folds at +-COUNT_BATCH.
   * Caller holds a bucket lock stripe (confirm, kill, Chains.foldCount).
   */
  cacheAdd(kind: number, id: number, d: number): void {
    const i32 = this.i32;
    const key = ((kind << 17) | id) + 1;
    const base = this.ZC;
    let free = -1;
    this.dirty = true;
    for (let s = 0; s < ZC_SLOTS; s++) {
      const k = i32[base + 2 * s]!;
      if (k === key) {
        const v = i32[base + 2 * s + 1]! + d;
        if (v >= COUNT_BATCH || v <= -COUNT_BATCH) {
          i32[base + 2 * s + 1] = 0; // plain: ours, ordered for recovery by the stripe we hold
          Atomics.add(i32, zcWord(this.sec, key - 1), v); // the fold
        } else {
          i32[base + 2 * s + 1] = v;
        }
        return;
      }
      if (free < 0 && (k === 0 || i32[base + 2 * s + 1] === 0)) free = s;
    }
    if (free < 0) {
      free = this.evict;
      this.evict = (free + 1) % ZC_SLOTS;
      this.foldSlot(free);
    }
    i32[base + 2 * free] = key; // its delta is 0 here
    i32[base + 2 * free + 1] = d;
  }

  private foldSlot(s: number): void {
    const i32 = this.i32;
    const d = i32[this.ZC + 2 * s + 1]!;
    if (d === 0) return;
    i32[this.ZC + 2 * s + 1] = 0;
    Atomics.add(i32, zcWord(this.sec, i32[this.ZC + 2 * s]! - 1), d); // counters: Atomics by everyone
  }

  /** Fold every delta of this record (end of a batch); caller holds a bucket lock stripe. */
  foldAll(): void {
    for (let s = 0; s < ZC_SLOTS; s++) this.foldSlot(s);
  }

  /** True when this record holds an unfolded delta. */
  get pending(): boolean {
    for (let s = 0; s < ZC_SLOTS; s++) if (this.i32[this.ZC + 2 * s + 1] !== 0) return true;
    return false;
  }

  /** Charge one entry to `ns` and zone `zk` unless a limit refuses: 0 or CONFIRM_*_LIMIT. */
  charge(ns: number, zk: number): number {
    const i32 = this.i32;
    let nsw = -1;
    let nsCached = false;
    if (ns >= 0 && ns < this.nsMax) {
      const lim = this.nsLimit(ns);
      if (lim === 0) {
        this.cacheAdd(ZC_NS, ns, 1); // no limit: our delta (foldForLimit empties them before one is set)
        nsCached = true;
      } else {
        nsw = this.NS + ns * NS_WORDS + NS_COUNT;
        for (;;) {
          const c = Atomics.load(i32, nsw);
          if (c >= lim) return CONFIRM_NS_LIMIT;
          // CAS: concurrent inserters of the namespace (other buckets) never pass the limit together.
          if (Atomics.compareExchange(i32, nsw, c, c + 1) === c) break;
        }
      }
    }
    const zl = this.zoneLimit(zk);
    if (zl === 0) {
      this.cacheAdd(ZC_ZONE, zk, 1);
      return 0;
    }
    const zw = this.ZA + zoneRec(zk) * ZA_WORDS + ZA_COUNT;
    for (;;) {
      const c = Atomics.load(i32, zw);
      if (c >= zl) {
        // Give the namespace's charge back.
        if (nsCached) this.cacheAdd(ZC_NS, ns, -1);
        else if (nsw >= 0) Atomics.sub(i32, nsw, 1);
        return CONFIRM_ZONE_LIMIT;
      }
      // CAS: as for the namespace, the zone's count never passes its limit.
      if (Atomics.compareExchange(i32, zw, c, c + 1) === c) return 0;
    }
  }

  /** Give an entry's charges back (kill, under the entry's bucket locks like charge). */
  uncharge(ns: number, zk: number): void {
    if (ns >= 0 && ns < this.nsMax) {
      if (this.nsLimit(ns) === 0) this.cacheAdd(ZC_NS, ns, -1);
      else Atomics.sub(this.i32, this.NS + ns * NS_WORDS + NS_COUNT, 1); // pairs with charge()'s CAS
    }
    if (this.zoneLimit(zk) === 0) this.cacheAdd(ZC_ZONE, zk, -1);
    else Atomics.sub(this.i32, this.ZA + zoneRec(zk) * ZA_WORDS + ZA_COUNT, 1);
  }

  // --- list primitives: callers hold the list's lock stripe -------------------------------

  /** Word of node `v`'s prev link in a list of `kind` (next is + 1). */
  private linkWord(v: number, kind: number): number {
    if (v >= this.cap) return this.MK + (v - this.cap) * MARKER_WORDS + MK_PREV;
    return this.E + v * ENTRY_WORDS + (kind === LIST_ZONE ? E_ZPREV : E_NPREV);
  }

  /** Head word of the list. */
  headWord(kind: number, key: number): number {
    return kind === LIST_ZONE ? this.ZA + zoneRec(key) * ZA_WORDS + ZA_HEAD : this.NH + key;
  }

  /** Lock stripe word of the list. */
  lockWord(kind: number, key: number): number {
    return kind === LIST_ZONE ? this.ZL + zlStripe(key & (ZL_ZONE_STRIPES - 1))
      : this.ZL + ZL_ZONE_STRIPES + zlStripe(key & (ZL_NS_STRIPES - 1));
  }

  /** Insert node v first. Plain stores: every reader and writer of these words holds the stripe. */
  private pushFront(kind: number, head: number, v: number): void {
    const i32 = this.i32;
    const vw = this.linkWord(v, kind);
    const h = i32[head]! - 1;
    if (h < 0) {
      i32[vw + 0] = v;
      i32[vw + 1] = v;
    } else {
      const hw = this.linkWord(h, kind);
      const last = i32[hw]!;
      i32[vw + 0] = last;
      i32[vw + 1] = h;
      i32[this.linkWord(last, kind) + 1] = v;
      i32[hw] = v;
    }
    i32[head] = v + 1;
  }

  /** Insert node v right after node `after`. */
  private insertAfter(kind: number, after: number, v: number): void {
    const i32 = this.i32;
    const aw = this.linkWord(after, kind);
    const next = i32[aw + 1]!;
    const vw = this.linkWord(v, kind);
    i32[vw + 0] = after;
    i32[vw + 1] = next;
    i32[this.linkWord(next, kind)] = v;
    i32[aw + 1] = v;
  }

  /** Remove node v. Its own links stay as they were. */
  private remove(kind: number, head: number, v: number): void {
    const i32 = this.i32;
    const vw = this.linkWord(v, kind);
    const prev = i32[vw]!;
    const next = i32[vw + 1]!;
    if (next === v) {
      i32[head] = 0; // it was the only node
      return;
    }
    i32[this.linkWord(prev, kind) + 1] = next;
    i32[this.linkWord(next, kind)] = prev;
    if (i32[head] === v + 1) i32[head] = next + 1;
  }

  /** Link a confirmed entry into its zone's and namespace's lists (confirm, bucket locks held). */
  link(slot: number, ns: number, zk: number): void {
    const i32 = this.i32;
    let lk = this.lockWord(LIST_ZONE, zk);
    lock(i32, lk, this.wid);
    this.pushFront(LIST_ZONE, this.headWord(LIST_ZONE, zk), slot);
    unlock(i32, lk);
    if (ns < 0 || ns >= this.nsMax) return;
    lk = this.lockWord(LIST_NS, ns);
    lock(i32, lk, this.wid);
    this.pushFront(LIST_NS, this.headWord(LIST_NS, ns), slot);
    unlock(i32, lk);
  }

  /** Node v's prev link in a list of `kind`: its newer neighbour (the head's is the oldest). */
  prevOf(v: number, kind: number): number {
    return this.i32[this.linkWord(v, kind)]!;
  }

  /** Put node v first on list (kind, key) without the stripe, for rebuildZoneAccounting (which holds all). */
  relinkFirst(kind: number, key: number, v: number): void {
    this.pushFront(kind, this.headWord(kind, key), v);
  }

  /**
   * Take worker w's marker off the list it is on, if any (MK_LIST): a walker that died mid-walk
   * leaves it there, and the next owner of its record would link it a second time. Takes that
   * list's stripe for at most `ms` (another dead holder: left for the list rebuild).
   */
  dropMarker(w: number, ms: number): void {
    const i32 = this.i32;
    const mk = this.MK + w * MARKER_WORDS + MK_LIST;
    const list = Atomics.load(i32, mk) - 1; // written under the stripe; re-read under it below
    if (list < 0) return;
    const kind = list >>> 17;
    const key = list & 0x1ffff;
    const lk = this.lockWord(kind, key);
    if (!lockFor(i32, lk, this.wid, ms)) return;
    if (i32[mk] === list + 1) {
      this.remove(kind, this.headWord(kind, key), this.cap + w);
      i32[mk] = 0;
    }
    unlock(i32, lk);
  }

  /** Put worker w's marker first on list `list` ((kind << 17) | key), for rebuildZoneAccounting. */
  pushMarker(w: number, list: number): void {
    this.relinkFirst(list >>> 17, list & 0x1ffff, this.cap + w);
  }

  /** Unlink an entry from both lists (kill, bucket locks held). */
  unlink(slot: number, ns: number, zk: number): void {
    const i32 = this.i32;
    let lk = this.lockWord(LIST_ZONE, zk);
    lock(i32, lk, this.wid);
    this.remove(LIST_ZONE, this.headWord(LIST_ZONE, zk), slot);
    unlock(i32, lk);
    if (ns < 0 || ns >= this.nsMax) return;
    lk = this.lockWord(LIST_NS, ns);
    lock(i32, lk, this.wid);
    this.remove(LIST_NS, this.headWord(LIST_NS, ns), slot);
    unlock(i32, lk);
  }

  /**
   * Pick a victim for an early_drop inside a namespace (kind LIST_NS) or a zone (LIST_ZONE, only
   * entries of namespace `ns`): scanning from the oldest, an expired entry or a not-ASSURED one.
   * Returns its slot (the caller kills it; kill re-checks it is still linked), or -1.
   */
  dropCandidate(kind: number, key: number, ns: number, now: number): number {
    const i32 = this.i32;
    if (kind === LIST_NS && (key < 0 || key >= this.nsMax)) return -1;
    const lk = this.lockWord(kind, key);
    const head = this.headWord(kind, key);
    lock(i32, lk, this.wid);
    let found = -1;
    const h = i32[head]! - 1;
    if (h >= 0) {
      let v = i32[this.linkWord(h, kind)]!; // the oldest: the head's prev
      for (let n = 0; n < DROP_SCAN; n++) {
        if (v < this.cap) {
          const e = this.E + v * ENTRY_WORDS;
          const st = Atomics.load(i32, e + E_STATUS); // set with Atomics.or by other threads
          if ((st & (IPS_CONFIRMED | IPS_DYING)) === IPS_CONFIRMED && (kind === LIST_NS || i32[e + E_NS] === ns)) {
            // E_TIMEOUT: Atomics.store by the packet path.
            if ((st & IPS_ASSURED) === 0 || ((Atomics.load(i32, e + E_TIMEOUT) - now) | 0) <= 0) { found = v; break; }
          }
        }
        if (v === h) break;
        v = i32[this.linkWord(v, kind)]!;
      }
    }
    unlock(i32, lk);
    return found;
  }

  // --- walkers ------------------------------------------------------------------------------

  /**
   * Walk a list in slices of at most `slice` nodes: each slice moves this worker's marker
   * forward under the list's lock, collecting the confirmed entries it passes into `slots`
   * and their E_GEN into `gens`, then calls `batch(n)` with the lock released.
   * The marker goes in first (at the head: entries inserted after the walk began are not
   * visited) and comes out at the end, also when `batch` throws.
   */
  walkList(kind: number, key: number, slice: number, slots: Int32Array, gens: Int32Array,
    batch: (n: number) => void): void {
    const i32 = this.i32;
    if (kind === LIST_NS && (key < 0 || key >= this.nsMax)) return;
    const lk = this.lockWord(kind, key);
    const head = this.headWord(kind, key);
    const m = this.cap + this.wid;
    const max = Math.min(slice, slots.length, gens.length);
    const mk = this.MK + this.wid * MARKER_WORDS + MK_LIST;
    this.dropMarker(this.wid, 2000); // left on a list by a previous owner of this record that died
    lock(i32, lk, this.wid);
    this.pushFront(kind, head, m);
    i32[mk] = ((kind << 17) | key) + 1; // under the stripe, like the links
    unlock(i32, lk);
    try {
      for (;;) {
        let n = 0;
        let done = false;
        lock(i32, lk, this.wid);
        const first = i32[head]! - 1;
        let v = i32[this.linkWord(m, kind) + 1]!;
        for (let k = 0; k < max; k++) {
          if (v === first) { done = true; break; } // wrapped around to the newest
          if (v < this.cap) {
            const e = this.E + v * ENTRY_WORDS;
            // A plain load (an Atomics call per node costs a builtin call): only a filter, as the
            // caller re-checks each entry online and kill() under its locks; a 32-bit word never tears.
            if ((i32[e + E_STATUS]! & (IPS_CONFIRMED | IPS_DYING)) === IPS_CONFIRMED) {
              slots[n] = v;
              gens[n] = i32[e + E_GEN]!; // the incarnation; written before publication, checked again by the caller
              n++;
            }
          }
          v = i32[this.linkWord(v, kind) + 1]!;
        }
        if (v === first) done = true;
        // Move the marker to just before v (after the last node passed).
        const after = i32[this.linkWord(v, kind)]!;
        if (after !== m) {
          this.remove(kind, head, m);
          this.insertAfter(kind, after, m);
        }
        unlock(i32, lk);
        if (n > 0) batch(n);
        if (done) break;
      }
    } finally {
      lock(i32, lk, this.wid);
      this.remove(kind, head, m);
      i32[mk] = 0;
      unlock(i32, lk);
    }
  }

  /** Entries on a list right now (count word and the records' deltas; 0 for a namespace without a record). */
  listCount(kind: number, key: number): number {
    const deltas = (k: number): number => cachedDelta(this.table, k, key);
    if (kind === LIST_ZONE) return Atomics.load(this.i32, this.ZA + zoneRec(key) * ZA_WORDS + ZA_COUNT) + deltas(ZC_ZONE);
    if (key < 0 || key >= this.nsMax) return 0;
    return Atomics.load(this.i32, this.NS + key * NS_WORDS + NS_COUNT) + deltas(ZC_NS);
  }
}

/**
 * Recompute every namespace and zone counter (and the zone counters by original zone, all with
 * the records' deltas dropped) and rebuild every list from the chains, and release list locks
 * and the marker of `deadWorker` (>= 0). For crash recovery: the caller holds every bucket lock
 * (so no confirm, kill or fold is in progress) and no walker of another worker runs.
 *
 * The lists keep their age order (newest first, so early_drop inside a limit still finds the
 * oldest): each list is rebuilt in the order its old links give, read from the oldest (the old
 * head's prev) towards the head, taking only entries the chains hold for that list. The old list
 * may be damaged where the dead worker was linking or unlinking: an entry not in the chains (a
 * half-removed one) is passed through its own prev link, a node of another list or a bad link
 * ends the walk, and entries the walk did not reach go first (as the newest), in bucket order.
 * Each walk is bounded by the list's count and the number of worker records (a cycle only
 * repeats nodes already placed).
 */
export function rebuildZoneAccounting(table: ConntrackTable, deadWorker = -1): void {
  const i32 = table.i32;
  const sec = table.sec;
  if (deadWorker >= 0) for (let l = 0; l < ZL_LOCKS; l++) forceUnlock(i32, sec.zlocks + l, deadWorker);
  // Every list stripe too (ascending, after the bucket stripes, as writers take them): a live
  // walker may be inside a slice. Taken for the dead worker's id, like recovery's bucket locks;
  // a stripe still held after the wait (another dead holder) is rebuilt without it.
  const owner = deadWorker >= 0 ? deadWorker : 0;
  const held = new Uint8Array(ZL_LOCKS);
  for (let l = 0; l < ZL_LOCKS; l++) held[l] = lockFor(i32, sec.zlocks + l, owner, 2000) ? 1 : 0;
  // Live walkers' markers: the rebuild relinks entries only, so note which list each is on.
  const walking: number[] = [];
  for (let w = 0; w < table.maxWorkers; w++) {
    const mk = sec.markers + w * MARKER_WORDS + MK_LIST;
    const list = i32[mk]!; // under every list stripe
    if (list === 0) continue;
    if (w === deadWorker) i32[mk] = 0; // its walk is over
    else walking.push(w, list - 1);
  }
  dropAllCaches(table, [ZC_NS, ZC_ZONE, ZC_ZORIG]);
  // The old heads (slot + 1) by zone record and namespace, read before they are cleared.
  const oldZone = new Int32Array(ZONES);
  const oldNs = new Int32Array(table.namespaces);
  for (let z = 0; z < ZONES; z++) {
    oldZone[z] = i32[sec.zacct + z * ZA_WORDS + ZA_HEAD]!;
    i32[sec.zacct + z * ZA_WORDS + ZA_COUNT] = 0; // every record: the order does not matter
    i32[sec.zacct + z * ZA_WORDS + ZA_HEAD] = 0;
    i32[sec.zones + z] = 0;
  }
  for (let n = 0; n < table.namespaces; n++) {
    oldNs[n] = i32[sec.nsHeads + n]!;
    i32[sec.ns + n * NS_WORDS + NS_COUNT] = 0;
    i32[sec.nsHeads + n] = 0;
  }
  // Count the linked entries (through their original tuplehash) and note them, in bucket order.
  const cap = table.capacity;
  const linked = new Uint8Array(cap);
  const order = new Int32Array(cap);
  let nLinked = 0;
  for (let b = 0; b < table.buckets; b++) {
    let ref = i32[sec.buckets + b]!;
    for (let guard = 0; ref >= 0 && guard <= 2 * cap; guard++) {
      const slot = ref >>> 1;
      const e = sec.entries + slot * ENTRY_WORDS;
      if ((ref & 1) === DIR_ORIGINAL) {
        const ns = i32[e + E_NS]!;
        i32[sec.zacct + zoneRec(zoneKey(i32[e + E_ZONE]!)) * ZA_WORDS + ZA_COUNT]!++;
        i32[sec.zones + zoneRec(i32[e + E_ZONE]! & 0xffff)]!++;
        if (ns >= 0 && ns < table.namespaces) i32[sec.ns + ns * NS_WORDS + NS_COUNT]!++;
        order[nLinked++] = slot;
        linked[slot] = 1;
      }
      ref = i32[e + E_NEXT + (ref & 1)]!;
    }
  }
  const za = new ZoneAccounting(table, 0);
  const nodes = cap + table.maxWorkers; // entries, then the walkers' markers
  const placed = new Uint8Array(cap);
  const found = new Int32Array(cap);
  const walked = new Uint8Array(ZONES); // by zone record or namespace: its old list was read
  for (const kind of [LIST_ZONE, LIST_NS]) {
    placed.fill(0);
    walked.fill(0);
    const keyOf = (slot: number): number => {
      const e = sec.entries + slot * ENTRY_WORDS;
      return kind === LIST_ZONE ? zoneKey(i32[e + E_ZONE]!) : i32[e + E_NS]!;
    };
    for (let i = 0; i < nLinked; i++) {
      const slot = order[i]!;
      if (placed[slot] !== 0) continue;
      const key = keyOf(slot);
      if (kind === LIST_NS && (key < 0 || key >= table.namespaces)) continue; // no record, no list
      // The list's first entry in bucket order: its old links give the order of what they still
      // reach (read once: the entries relinked below have new links).
      const r = kind === LIST_ZONE ? zoneRec(key) : key;
      const h = (kind === LIST_ZONE ? oldZone[r]! : oldNs[r]!) - 1;
      const count = kind === LIST_ZONE ? i32[sec.zacct + r * ZA_WORDS + ZA_COUNT]! : i32[sec.ns + r * NS_WORDS + NS_COUNT]!;
      let n = 0;
      if (walked[r] === 0 && h >= 0 && h < nodes) {
        let v = za.prevOf(h, kind); // the oldest
        // Its entries, the markers on it, one half-removed entry per worker at most.
        for (let step = 0; step < count + 2 * table.maxWorkers; step++) {
          if (v < 0 || v >= nodes) break;
          if (v < cap && linked[v] !== 0) {
            if (keyOf(v) !== key) break; // another list's entry: the links on are not this list's
            if (placed[v] === 0) { found[n++] = v; placed[v] = 1; }
          }
          if (v === h) break;
          v = za.prevOf(v, kind);
        }
      }
      // Oldest first, each pushed in front: the head ends up the newest. (Links are rewritten
      // only now, after the walk read them.)
      walked[r] = 1;
      for (let k = 0; k < n; k++) za.relinkFirst(kind, key, found[k]!);
      if (placed[slot] === 0) { za.relinkFirst(kind, key, slot); placed[slot] = 1; }
    }
  }
  // Each live walker's marker goes back on its list, first: its walk starts over from the newest
  // entry (a flush or delete visits some entries twice, harmlessly; a dump may show them twice).
  for (let k = 0; k < walking.length; k += 2) za.pushMarker(walking[k]!, walking[k + 1]!);
  for (let l = 0; l < ZL_LOCKS; l++) if (held[l]) unlock(i32, sec.zlocks + l);
}
