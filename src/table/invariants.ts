/**
 * Structural invariants of a conntrack table, checked when it is quiescent (no thread inside a
 * batch or a write). Reads shared memory with plain loads: quiescence is the caller's promise
 * (e.g. every worker has stopped, or reported done through a message or Atomics).
 */
import { tupleHash } from './hash.js';
import {
  DIR_ORIGINAL, ENTRY_WORDS, E_HASH, E_LINK, E_NEXT, E_NS, E_PROTO, E_REFCNT, E_STATUS, E_TUPLE,
  E_ZONE, H_COUNT, H_FREE_COUNT, H_FREE_HEAD, H_FREE_LOCK, H_KEY0, H_KEY1, H_ORPHAN_COUNT,
  H_ORPHAN_HEAD, IPS_ALLOCATED, IPS_CONFIRMED, IPS_DYING, TUPLE_WORDS, W_ALIVE, W_ALLOC_OP, W_CACHE,
  W_CACHE_COUNT, W_INTENT, W_INTENT_SLOT, W_KILL, W_LIMBO_HEAD, W_RECLAIM, W_RELEASE, W_STATE,
  WORKER_WORDS, ZONES, CACHE_SLOTS, W_CNT, W_RES, ZC_NS, ZC_ZONE, ZC_ZORIG, zoneRec,
} from './layout.js';
import type { ConntrackTable } from './table.js';
import {
  E_NPREV, E_ZPREV, NS_COUNT, NS_WORDS, ZA_COUNT, ZA_HEAD, ZA_WORDS, ZL_LOCKS,
} from './layout.js';
import { cachedDeltas, zoneKey } from './zones.js';
import {
  EV_SUBSCRIBERS, H_EVENTS, H_EV_DESTROY, H_PEND_FREE, H_PEND_ORPHAN, H_STALL_MS, H_ZONE_DEFAULT_LIMIT, NS_LIMIT,
  PARK_AGE_STALLS, PARK_FACTOR, REC_PARKED_AT, REC_SEQ, REC_WORDS, SB_ATTACHED, SB_DTAIL, SB_FREE, SB_OVERRUN, SB_STATE, SUB_WORDS, XC_EV_DHEAD, XC_EV_PARKED,
  XC_EV_PHEAD, XC_EV_PTAIL, XC_EV_SUBS, XC_SUB, ZA_LIMIT, lockRegistry,
} from './layout.js';
import { S_MAX } from './sysctl.js';
import { beatSilence } from './liveness.js';

/** Options of checkInvariants(). */
export interface InvariantOptions {
  /**
   * The oldest a parked DESTROY may be, wall ms (default PARK_AGE_STALLS x the table's stallMs,
   * the age at which delivery overruns the subscribers holding it; 0: not checked). The bound
   * holds while some thread delivers parked events (packet workers' batch ends, the GC's runs).
   */
  parkedMaxAgeMs?: number;
}

/** One checked invariant. */
export interface InvariantResult {
  name: string;
  ok: boolean;
  detail?: string;
}

/** Where the slab's slots are (each slot counted once, by its first place). */
export interface SlotCensus {
  linked: number;
  freeList: number;
  cached: number;
  limbo: number;
  orphan: number;
  /** Allocated, off every list, with references (or a worker's private entry). */
  held: number;
  leaked: number;
}

/** The result of checkInvariants(): every invariant, and whether all held. */
export interface InvariantReport {
  ok: boolean;
  invariants: InvariantResult[];
  slots: SlotCensus;
}

/** Names of the invariants, in report order. */
export const INVARIANT_NAMES: readonly string[] = [
  'count-matches-linked', 'entries-in-their-two-chains', 'chain-hashes', 'chains-terminate',
  'no-dying-linked', 'free-not-linked', 'slot-in-one-place', 'lists-well-formed', 'no-leaked-slot',
  'zone-counters', 'free-count', 'no-lock-held', 'no-pending-operation', 'zone-lists',
  'no-duplicate-tuple', 'counts-within-limits', 'event-rings',
];

const M_LINKED = 1;
const M_FREE = 2;
const M_CACHE = 4;
const M_LIMBO = 8;
const M_ORPHAN = 16;
const M_PEND = 32;

const SHOW = 5;

class Problems {
  private list: string[] = [];
  count = 0;
  add(s: string): void {
    if (this.list.length < SHOW) this.list.push(s);
    this.count++;
  }
  result(name: string): InvariantResult {
    if (this.count === 0) return { name, ok: true };
    const more = this.count > this.list.length ? ` (+${this.count - this.list.length} more)` : '';
    return { name, ok: false, detail: this.list.join('; ') + more };
  }
}

/** Check every invariant; never throws on a corrupt table (the corruption is reported). */
export function checkInvariants(table: ConntrackTable, opts: InvariantOptions = {}): InvariantReport {
  const i32 = table.i32;
  const cap = table.capacity;
  const nb = table.buckets;
  const mask = nb - 1;
  const E = table.sec.entries;
  const B = table.sec.buckets;
  const k0 = i32[H_KEY0]!;
  const k1 = i32[H_KEY1]!;
  const where = new Uint8Array(cap); // M_* bits
  const dup = new Problems(); // a slot twice in one place, or in two free places
  const freeLinked = new Problems(); // a slot both free (list, cache, limbo, orphan) and linked
  const mark = (slot: number, m: number, what: string): void => {
    const w = where[slot]!;
    if (w & m) dup.add(`slot ${slot} twice in ${what}`);
    else if (w & M_LINKED) freeLinked.add(`slot ${slot} is linked and in ${what}`);
    else if (w !== 0) dup.add(`slot ${slot} in ${what} and elsewhere (places ${w})`);
    where[slot] = w | m;
  };

  // Chains.
  const seen = new Uint8Array(cap * 2); // times each tuplehash was met
  const visit = new Int32Array(cap * 2).fill(-1); // bucket whose walk met it last (cycle check)
  const term = new Problems();
  const inTwo = new Problems();
  const hashes = new Problems();
  const dying = new Problems();
  let walked = 0;
  for (let b = 0; b < nb; b++) {
    let ref = i32[B + b]!;
    while (ref >= 0) {
      const slot = ref >>> 1;
      if (slot >= cap) { term.add(`bucket ${b}: reference ${ref} outside the slab`); break; }
      if (visit[ref] === b) { term.add(`bucket ${b}: cycle at slot ${slot} dir ${ref & 1}`); break; }
      visit[ref] = b;
      if (seen[ref]! < 255) seen[ref]!++;
      walked++;
      const e = E + slot * ENTRY_WORDS;
      const dir = ref & 1;
      if ((i32[e + E_HASH + dir]! & mask) !== b) {
        hashes.add(`slot ${slot} dir ${dir} in bucket ${b} has hash for bucket ${i32[e + E_HASH + dir]! & mask}`);
      }
      const st = i32[e + E_STATUS]!;
      if (st & IPS_DYING) dying.add(`slot ${slot} is DYING but linked in bucket ${b}`);
      if ((st & (IPS_CONFIRMED | IPS_ALLOCATED)) !== (IPS_CONFIRMED | IPS_ALLOCATED)) {
        inTwo.add(`slot ${slot} linked in bucket ${b} without CONFIRMED|ALLOCATED (status ${st >>> 0})`);
      }
      ref = i32[e + E_NEXT + dir]!;
    }
    if (ref < 0 && ref !== ~b) term.add(`bucket ${b} ends with the nulls marker of bucket ${~ref}`);
  }
  let linked = 0;
  const zones = new Int32Array(ZONES);
  for (let s = 0; s < cap; s++) {
    const o = seen[2 * s]!;
    const r = seen[2 * s + 1]!;
    if (o === 0 && r === 0) continue;
    mark(s, M_LINKED, 'the chains');
    linked++;
    if (o !== 1 || r !== 1) inTwo.add(`slot ${s}: original tuplehash met ${o}x, reply ${r}x`);
    const e = E + s * ENTRY_WORDS;
    zones[i32[e + E_ZONE]! & 0xffff]!++;
    // The stored hashes are the tuples' hashes.
    const z = i32[e + E_ZONE]!;
    for (let d = 0; d < 2; d++) {
      const h = tupleHash(i32, e + E_TUPLE + d * TUPLE_WORDS, i32[e + E_PROTO]!,
        d === DIR_ORIGINAL ? z & 0xffff : z >>> 16, i32[e + E_NS]!, k0, k1);
      if ((h | 0) !== i32[e + E_HASH + d]) hashes.add(`slot ${s} dir ${d}: stored hash is not the tuple's`);
    }
  }

  // Free list.
  const freeProblems = new Problems();
  let freeLen = 0;
  for (let s = i32[H_FREE_HEAD]!; s >= 0;) {
    if (s >= cap) { freeProblems.add(`free list reaches ${s}, outside the slab`); break; }
    if (where[s]! & M_FREE) { freeProblems.add(`free list has a cycle at slot ${s}`); break; }
    mark(s, M_FREE, 'the free list');
    freeLen++;
    s = i32[E + s * ENTRY_WORDS + E_LINK]!;
  }
  if (freeLen !== i32[H_FREE_COUNT]) freeProblems.add(`H_FREE_COUNT is ${i32[H_FREE_COUNT]}, the list holds ${freeLen}`);

  // Worker caches, limbo lists, orphans.
  const privateSlots = new Set<number>();
  const pending = new Problems();
  const limboProblems = new Problems();
  let cached = 0;
  let limbo = 0;
  for (let w = 0; w < table.maxWorkers; w++) {
    const W = table.sec.workers + w * WORKER_WORDS;
    const n = i32[W + W_CACHE_COUNT]!;
    if (n < 0 || n > CACHE_SLOTS) { limboProblems.add(`worker ${w}: cache count ${n}`); continue; }
    for (let k = 0; k < n; k++) {
      const s = i32[W + W_CACHE + k]!;
      if (s < 0 || s >= cap) { limboProblems.add(`worker ${w}: cache holds ${s}`); continue; }
      mark(s, M_CACHE, `worker ${w}'s cache`);
      cached++;
    }
    for (let s = i32[W + W_LIMBO_HEAD]!, guard = 0; s >= 0; guard++) {
      if (s >= cap || guard > cap) { limboProblems.add(`worker ${w}: bad limbo list at ${s}`); break; }
      if (where[s]! & M_LIMBO) { limboProblems.add(`worker ${w}: limbo cycle at slot ${s}`); break; }
      mark(s, M_LIMBO, `worker ${w}'s limbo`);
      limbo++;
      s = i32[E + s * ENTRY_WORDS + E_LINK]!;
    }
    if (i32[W + W_ALIVE] === 1 && i32[W + W_INTENT_SLOT]! > 0) {
      privateSlots.add(i32[W + W_INTENT_SLOT]! - 1);
    }
    if (i32[W + W_STATE] !== 0) pending.add(`worker ${w} is online`);
    for (const [word, name] of [[W_INTENT, 'insert'], [W_KILL, 'delete'], [W_RELEASE, 'release'],
      [W_RECLAIM, 'reclaim'], [W_ALLOC_OP, 'allocator'], [W_RES, 'reservation near nf_conntrack_max']] as const) {
      if (i32[W + word] !== 0) pending.add(`worker ${w} has a ${name} in progress (${i32[W + word]})`);
    }
  }
  let orphan = 0;
  for (let s = i32[H_ORPHAN_HEAD]! - 1, guard = 0; s >= 0; guard++) {
    if (s >= cap || guard > cap) { limboProblems.add(`bad orphan list at ${s}`); break; }
    if (where[s]! & M_ORPHAN) { limboProblems.add(`orphan list cycle at slot ${s}`); break; }
    mark(s, M_ORPHAN, 'the orphan list');
    orphan++;
    s = i32[E + s * ENTRY_WORDS + E_LINK]!;
  }
  if (orphan !== i32[H_ORPHAN_COUNT]) limboProblems.add(`H_ORPHAN_COUNT is ${i32[H_ORPHAN_COUNT]}, the list holds ${orphan}`);
  // Recovery's hand-off stacks (alloc.ts pushPending): free slots and orphans not spliced in yet.
  let pend = 0;
  for (const [word, name] of [[H_PEND_FREE, 'free hand-off stack'], [H_PEND_ORPHAN, 'orphan hand-off stack']] as const) {
    for (let s = i32[word]! - 1, guard = 0; s >= 0; guard++) {
      if (s >= cap || guard > cap) { limboProblems.add(`bad ${name} at ${s}`); break; }
      if (where[s]! & M_PEND) { limboProblems.add(`${name} cycle at slot ${s}`); break; }
      mark(s, M_PEND, `the ${name}`);
      pend++;
      s = i32[E + s * ENTRY_WORDS + E_LINK]! - 1;
    }
  }


  // Every slot somewhere.
  const leak = new Problems();
  let held = 0;
  let leaked = 0;
  for (let s = 0; s < cap; s++) {
    if (where[s] !== 0) continue;
    const e = E + s * ENTRY_WORDS;
    if ((i32[e + E_STATUS]! & IPS_ALLOCATED) && (i32[e + E_REFCNT]! > 0 || privateSlots.has(s))) {
      held++;
    } else {
      leaked++;
      leak.add(`slot ${s} is on no list (status ${i32[e + E_STATUS]! >>> 0}, refcount ${i32[e + E_REFCNT]})`);
    }
  }

  // Zone counters: each counter word plus the records' unfolded deltas (zones.ts W_ZC).
  const zoneProblems = new Problems();
  const dOrig = cachedDeltas(table, ZC_ZORIG);
  const dZone = cachedDeltas(table, ZC_ZONE);
  const dNs = cachedDeltas(table, ZC_NS);
  for (let z = 0; z < ZONES; z++) {
    const c = i32[table.sec.zones + zoneRec(z)]! + (dOrig.get(z) ?? 0);
    if (c !== zones[z]) zoneProblems.add(`zone ${z}: counter ${c}, linked entries ${zones[z]}`);
  }

  // Zone and namespace entry lists (zones.ts): well formed, each node a confirmed entry of the
  // list's zone / namespace, every linked entry on its lists once, counters = list lengths.
  const zl = new Problems();
  const onZone = new Uint8Array(cap);
  const onNs = new Uint8Array(cap);
  const walkList = (name: string, head: number, prevOff: number, on: Uint8Array, owns: (e: number) => boolean): number => {
    const h = i32[head]! - 1;
    if (h < 0) return 0;
    let n = 0;
    for (let v = h, guard = 0; ; guard++) {
      if (v < 0 || v >= cap) { zl.add(`${name}: link ${v} is outside the slab (a walker marker left behind?)`); break; }
      if (guard > cap) { zl.add(`${name}: does not come back to its head`); break; }
      const e = E + v * ENTRY_WORDS;
      if (on[v]! < 255) on[v]!++;
      n++;
      const st = i32[e + E_STATUS]!;
      // (A DYING entry still linked is no-dying-linked's to report.)
      if ((st & (IPS_CONFIRMED | IPS_ALLOCATED)) !== (IPS_CONFIRMED | IPS_ALLOCATED)) zl.add(`${name}: slot ${v} is not a live entry (status ${st >>> 0})`);
      else if (!owns(e)) zl.add(`${name}: slot ${v} belongs elsewhere (zone ${zoneKey(i32[e + E_ZONE]!)}, namespace ${i32[e + E_NS]})`);
      const next = i32[e + prevOff + 1]!;
      if (next >= 0 && next < cap && i32[E + next * ENTRY_WORDS + prevOff] !== v) zl.add(`${name}: slot ${next}'s prev is not slot ${v}`);
      v = next;
      if (v === h) break;
    }
    return n;
  };
  for (let z = 0; z < ZONES; z++) {
    const za = table.sec.zacct + zoneRec(z) * ZA_WORDS;
    const n = walkList(`zone ${z}'s list`, za + ZA_HEAD, E_ZPREV, onZone, (e) => zoneKey(i32[e + E_ZONE]!) === z);
    const acc = i32[za + ZA_COUNT]! + (dZone.get(z) ?? 0);
    if (acc !== n) zoneProblems.add(`zone ${z}: accounted ${acc}, listed ${n}`);
  }
  for (let ns = 0; ns < table.namespaces; ns++) {
    const n = walkList(`namespace ${ns}'s list`, table.sec.nsHeads + ns, E_NPREV, onNs, (e) => i32[e + E_NS] === ns);
    const c = i32[table.sec.ns + ns * NS_WORDS + NS_COUNT]! + (dNs.get(ns) ?? 0);
    if (c !== n) zoneProblems.add(`namespace ${ns}: accounted ${c}, listed ${n}`);
  }
  for (let s = 0; s < cap; s++) {
    if (onZone[s]! > 1 || onNs[s]! > 1) zl.add(`slot ${s} is listed ${onZone[s]}x in zone lists, ${onNs[s]}x in namespace lists`);
    if ((where[s]! & M_LINKED) === 0) continue;
    const e = E + s * ENTRY_WORDS;
    const ns = i32[e + E_NS]!;
    if (onZone[s] !== 1) zl.add(`linked slot ${s} is on no zone list`);
    if (onNs[s] !== (ns >= 0 && ns < table.namespaces ? 1 : 0)) zl.add(`linked slot ${s} (namespace ${ns}) is on ${onNs[s]} namespace lists`);
  }

  // Locks: every lock word of every kind (layout.ts lockRegistry) is free at rest.
  const locks = new Problems();
  for (const k of lockRegistry(table.sec, table.locks)) {
    for (let l = 0; l < k.count; l++) {
      const v = i32[k.base + l * k.stride]!;
      if (v !== 0) locks.add(`${k.name}${k.count > 1 ? ` ${l}` : ''} word ${v} (worker ${(v >>> 2) - 1})`);
    }
  }

  // No tuple twice: each linked entry's two tuples (with protocol, zone, namespace) are unique.
  const dupTuple = new Problems();
  const keys = new Map<string, number>();
  for (let s = 0; s < cap; s++) {
    if ((where[s]! & M_LINKED) === 0) continue;
    const e = E + s * ENTRY_WORDS;
    const z = i32[e + E_ZONE]!;
    for (let d = 0; d < 2; d++) {
      const to = e + E_TUPLE + d * TUPLE_WORDS;
      let k = `${i32[e + E_PROTO]}/${i32[e + E_NS]}/${d === DIR_ORIGINAL ? z & 0xffff : z >>> 16}`;
      for (let w = 0; w < TUPLE_WORDS; w++) k += `/${i32[to + w]}`;
      const other = keys.get(k);
      if (other !== undefined && other !== s) dupTuple.add(`slots ${other} and ${s} hold the same tuple`);
      else keys.set(k, s);
    }
  }

  // Counts within limits: namespace and zone counts are never negative, never above the table's,
  // and never above a limit (a limit lowered below the count at run time shows here until the
  // count drops: the table removes nothing itself).
  const limits = new Problems();
  for (let ns = 0; ns < table.namespaces; ns++) {
    const c = i32[table.sec.ns + ns * NS_WORDS + NS_COUNT]! + (dNs.get(ns) ?? 0);
    const lim = i32[table.sec.ns + ns * NS_WORDS + NS_LIMIT]!;
    if (lim < 0) limits.add(`namespace ${ns}: limit ${lim} is negative`);
    if (c < 0 || (lim > 0 && c > lim)) limits.add(`namespace ${ns}: count ${c}, limit ${lim}, table ${linked}`);
  }
  const defZone = i32[H_ZONE_DEFAULT_LIMIT]!;
  for (let z = 0; z < ZONES; z++) {
    const za = table.sec.zacct + zoneRec(z) * ZA_WORDS;
    const c = i32[za + ZA_COUNT]! + (dZone.get(z) ?? 0);
    const own = i32[za + ZA_LIMIT]!;
    const lim = own !== 0 ? own - 1 : defZone;
    if (c < 0 || (lim > 0 && c > lim)) limits.add(`zone ${z}: count ${c}, limit ${lim}`);
  }
  // The entry count: H_COUNT plus every record's unfolded part (layout.ts W_CNT), the
  // percpu_counter's slack folded in; at rest it is exact.
  let counted = i32[H_COUNT]!;
  for (let w = 0; w < table.maxWorkers; w++) counted += i32[table.sec.workers + w * WORKER_WORDS + W_CNT]!;
  if (counted > i32[table.sec.sysctl + S_MAX]! && linked > i32[table.sec.sysctl + S_MAX]!) {
    limits.add(`${linked} entries, nf_conntrack_max ${i32[table.sec.sysctl + S_MAX]}`);
  }

  // Event rings: subscriber records, tails within one ring of the head, the park queue.
  const evp = new Problems();
  const xc = table.sec.xctl;
  const dcap = i32[H_EV_DESTROY]!;
  if (i32[H_EVENTS]! > 0) {
    const dh = i32[xc + XC_EV_DHEAD]!;
    let attached = 0;
    for (let k = 0; k < EV_SUBSCRIBERS; k++) {
      const sb = xc + XC_SUB + k * SUB_WORDS;
      const st = i32[sb + SB_STATE]!;
      if (st < SB_FREE || st > SB_OVERRUN) evp.add(`subscriber ${k}: state ${st}`);
      if (st === SB_OVERRUN) attached++; // counted until it comes back or closes
      if (st !== SB_ATTACHED) continue;
      attached++;
      const back = ((dh - i32[sb + SB_DTAIL]!) << 1) >> 1;
      if (back < 0 || back > dcap) evp.add(`subscriber ${k}: DESTROY tail ${i32[sb + SB_DTAIL]} is ${back} behind head ${dh} (ring ${dcap})`);
      // Every record between its tail and the head is published (nobody writes at rest).
      for (let d = 0; d < back; d++) {
        const seq = (i32[sb + SB_DTAIL]! + d) & 0x7fffffff;
        const got = i32[table.sec.destroys + (seq & (dcap - 1)) * REC_WORDS + REC_SEQ]!;
        if (got !== seq) { evp.add(`DESTROY record ${seq} unpublished (seq word ${got})`); break; }
      }
    }
    if (attached !== i32[xc + XC_EV_SUBS]) evp.add(`XC_EV_SUBS is ${i32[xc + XC_EV_SUBS]}, ${attached} subscribers attached or overrun`);
    const parked = (i32[xc + XC_EV_PTAIL]! - i32[xc + XC_EV_PHEAD]!) | 0;
    if (parked < 0 || parked > dcap * PARK_FACTOR) evp.add(`park queue holds ${parked} of ${dcap * PARK_FACTOR}`);
    if (parked !== i32[xc + XC_EV_PARKED]) evp.add(`XC_EV_PARKED is ${i32[xc + XC_EV_PARKED]}, the queue holds ${parked}`);
    // No parked DESTROY older than the bound (its wall time of parking is in the record).
    const maxAge = opts.parkedMaxAgeMs ?? PARK_AGE_STALLS * i32[H_STALL_MS]!;
    if (maxAge > 0 && parked > 0 && parked <= dcap * PARK_FACTOR) {
      const ph = i32[xc + XC_EV_PHEAD]!;
      for (let k = 0; k < parked; k++) {
        const idx = (ph + k) % (dcap * PARK_FACTOR); // as ecache.ts indexes it
        const age = beatSilence(i32[table.sec.parked + idx * REC_WORDS + REC_PARKED_AT]!);
        if (age > maxAge) evp.add(`parked DESTROY ${(ph + k) | 0} held ${age} ms (bound ${maxAge} ms)`);
      }
    }
  }

  const count = new Problems();
  if (counted !== linked) {
    count.add(`H_COUNT is ${counted}${counted !== i32[H_COUNT] ? ` (${i32[H_COUNT]} folded)` : ''}, ${linked} entries are linked (${walked} tuplehashes)`);
  }

  const invariants: InvariantResult[] = [
    count.result('count-matches-linked'),
    inTwo.result('entries-in-their-two-chains'),
    hashes.result('chain-hashes'),
    term.result('chains-terminate'),
    dying.result('no-dying-linked'),
    freeLinked.result('free-not-linked'),
    dup.result('slot-in-one-place'),
    limboProblems.result('lists-well-formed'),
    leak.result('no-leaked-slot'),
    zoneProblems.result('zone-counters'),
    freeProblems.result('free-count'),
    locks.result('no-lock-held'),
    pending.result('no-pending-operation'),
    zl.result('zone-lists'),
    dupTuple.result('no-duplicate-tuple'),
    limits.result('counts-within-limits'),
    evp.result('event-rings'),
  ];
  return {
    ok: invariants.every((r) => r.ok),
    invariants,
    slots: { linked, freeList: freeLen, cached, limbo, orphan: orphan + pend, held, leaked },
  };
}

/** A one-line-per-invariant text rendering. */
export function formatInvariants(r: InvariantReport): string {
  const lines = r.invariants.map((x) => `  ${x.ok ? 'ok  ' : 'FAIL'} ${x.name}${x.detail ? `: ${x.detail}` : ''}`);
  const s = r.slots;
  lines.push(`  slots: ${s.linked} linked, ${s.freeList} free list, ${s.cached} cached, ${s.limbo} limbo, ` +
    `${s.orphan} orphan, ${s.held} held, ${s.leaked} leaked`);
  return lines.join('\n');
}
