/**
 * The NAT bysource hash (the kernel's nf_nat_bysource): every connection whose source manip is
 * done (IPS_SRC_NAT_DONE) is linked by its original source (address, port or ICMP id, protocol,
 * zone, namespace), so a new connection from the same source can reuse its mapping (SNAT
 * persistence: find_appropriate_src).
 *
 * The link word is the entry's E_LINK (layout.ts): no word is added to the entry. Bucket heads
 * and links are slots (-1 ends). Which lock protects what: a bucket's head and the links of its
 * entries are written and walked under the bucket's NAT lock stripe (sec.natLocks + (h &
 * (NAT_LOCKS - 1))). Entries are added by confirm and removed by kill while these hold the
 * entry's conntrack bucket locks (lock order: conntrack stripes, then a NAT stripe); a lookup
 * takes only the NAT stripe.
 */
import { hashTuple } from '../../table/hash.js';
import {
  DIR_ORIGINAL, DIR_REPLY, ENTRY_WORDS, E_LINK, E_NS, E_PROTO, E_STATUS, E_TUPLE, E_ZONE, H_KEY0, H_KEY1, H_NAT_BUCKETS,
  IPS_CONFIRMED, IPS_DYING, IPS_SRC_NAT_DONE, NAT_LOCKS, T_PORTS, T_SRC, TUPLE_WORDS,
} from '../../table/layout.js';
import { lock, unlock } from '../../table/locks.js';
import { E_EXT, EXT_WORDS, NAT_IN_EXT, NAT_PLACEMENT, X_HELPER } from '../../table/layout.js';
import type { ConntrackTable } from '../../table/table.js';

// A different key than the conntrack hash's, so the two tables do not collide together.
const BYSOURCE_SALT = 0x5bd1e995;

/** Scratch for the hash input (one per thread: modules are per-isolate). */
const key = new Int32Array(TUPLE_WORDS);

/**
 * Hash of a connection's original source: tuple t[off..] (its src words and src port / ICMP id),
 * protocol word, zone word (original | reply << 16: the zone counts only when both are the same,
 * as the kernel's hash_by_src), namespace. Returns the bucket.
 */
export function bysourceBucket(table: ConntrackTable, t: Int32Array, off: number, proto: number, zone: number, ns: number): number {
  key.fill(0);
  for (let i = 0; i < 4; i++) key[T_SRC + i] = t[off + T_SRC + i]!;
  key[T_PORTS] = t[off + T_PORTS]! & ~0xffff;
  const z = (zone & 0xffff) === (zone >>> 16) ? zone & 0xffff : 0;
  const i32 = table.i32;
  const h = hashTuple(key, 0, proto, z, ns, i32[H_KEY0]! ^ BYSOURCE_SALT, i32[H_KEY1]!);
  return h & (i32[H_NAT_BUCKETS]! - 1);
}

function entryBucket(table: ConntrackTable, e: number): number {
  const i32 = table.i32;
  return bysourceBucket(table, i32, e + E_TUPLE + DIR_ORIGINAL * TUPLE_WORDS, i32[e + E_PROTO]!, i32[e + E_ZONE]!, i32[e + E_NS]!);
}

/** Word holding entry e's bysource link: E_LINK, or X_HELPER of its extension block (experiment). */
function linkOf(table: ConntrackTable, e: number): number {
  const i32 = table.i32;
  // Placement word: stored once on an empty table, before any NAT'd entry exists.
  if (Atomics.load(i32, table.sec.natLocks + NAT_PLACEMENT) !== NAT_IN_EXT) return e + E_LINK;
  return table.sec.ext + i32[e + E_EXT]! * EXT_WORDS + X_HELPER; // the block was attached before confirm
}

/**
 * Choose where the bysource link lives (the bench's placement experiment): 'inline' (E_LINK,
 * the default) or 'extension' (an extension block per NAT'd connection). Only on an empty table.
 */
export function setNatPlacement(table: ConntrackTable, where: 'inline' | 'extension'): void {
  if (table.count !== 0) throw new Error('setNatPlacement: the table must be empty'); // the entry count (table.count)
  // Published before any connection is tracked; every reader Atomics.loads it.
  Atomics.store(table.i32, table.sec.natLocks + NAT_PLACEMENT, where === 'extension' ? NAT_IN_EXT : 0);
}

export function natPlacement(table: ConntrackTable): number {
  return Atomics.load(table.i32, table.sec.natLocks + NAT_PLACEMENT); // see setNatPlacement
}

function stripe(table: ConntrackTable, bucket: number): number {
  return table.sec.natLocks + (bucket & (NAT_LOCKS - 1));
}

/** Link a connection (its bucket locks held, IPS_SRC_NAT_DONE set). */
export function bysourceAdd(table: ConntrackTable, wid: number, slot: number): void {
  const i32 = table.i32;
  const e = table.sec.entries + slot * ENTRY_WORDS;
  const b = entryBucket(table, e);
  const lk = stripe(table, b);
  lock(i32, lk, wid);
  i32[linkOf(table, e)] = i32[table.sec.bysource + b]!; // the NAT stripe is held
  i32[table.sec.bysource + b] = slot;
  unlock(i32, lk); // releases the link stores to the next holder
}

/** Unlink a connection (its bucket locks held). A connection not in its chain is left alone. */
export function bysourceRemove(table: ConntrackTable, wid: number, slot: number): void {
  const i32 = table.i32;
  const E = table.sec.entries;
  const e = E + slot * ENTRY_WORDS;
  const b = entryBucket(table, e);
  const lk = stripe(table, b);
  lock(i32, lk, wid);
  let prev = table.sec.bysource + b;
  let cur = i32[prev]!;
  let n = 0;
  while (cur >= 0 && cur !== slot && n++ <= table.capacity) {
    prev = linkOf(table, E + cur * ENTRY_WORDS);
    cur = i32[prev]!;
  }
  const mine = linkOf(table, e);
  if (cur === slot) i32[prev] = i32[mine]!;
  i32[mine] = -1;
  unlock(i32, lk);
}

/**
 * Visit the connections in the bysource chain of tuple t[off..]'s source, under the chain's NAT
 * lock stripe, until `visit` returns true. Returns that entry's word offset, or -1.
 */
export function bysourceFind(
  table: ConntrackTable, wid: number, t: Int32Array, off: number, proto: number, zone: number, ns: number,
  visit: (e: number) => boolean,
): number {
  const i32 = table.i32;
  const E = table.sec.entries;
  const b = bysourceBucket(table, t, off, proto, zone, ns);
  const lk = stripe(table, b);
  lock(i32, lk, wid);
  let found = -1;
  let n = 0;
  for (let s = i32[table.sec.bysource + b]!; s >= 0 && n++ <= table.capacity; s = i32[linkOf(table, E + s * ENTRY_WORDS)]!) {
    if (visit(E + s * ENTRY_WORDS)) {
      found = E + s * ENTRY_WORDS;
      break;
    }
  }
  unlock(i32, lk);
  return found;
}

/** Entries in the whole bysource table (for invariants and tests; not for the packet path). */
export function bysourceCount(table: ConntrackTable): number {
  const i32 = table.i32;
  const E = table.sec.entries;
  let n = 0;
  const buckets = i32[H_NAT_BUCKETS]!;
  for (let b = 0; b < buckets; b++) {
    for (let s = i32[table.sec.bysource + b]!; s >= 0 && n <= table.capacity; s = i32[linkOf(table, E + s * ENTRY_WORDS)]!) n++;
  }
  return n;
}

/**
 * NAT invariants (for tests and checks on a quiet table): every confirmed, live entry with
 * IPS_SRC_NAT_DONE is in the bysource chain of its source exactly once; every bysource member is
 * such an entry; no reply tuple is held by two entries. Returns the problems found (empty: fine).
 */
export function checkNatInvariants(table: ConntrackTable): string[] {
  const i32 = table.i32;
  const E = table.sec.entries;
  const problems: string[] = [];
  const seen = new Map<number, number>();
  const buckets = i32[H_NAT_BUCKETS]!;
  for (let b = 0; b < buckets; b++) {
    let n = 0;
    for (let s = i32[table.sec.bysource + b]!; s >= 0; s = i32[linkOf(table, E + s * ENTRY_WORDS)]!) {
      if (++n > table.capacity) { problems.push(`bysource bucket ${b} loops`); break; }
      const e = E + s * ENTRY_WORDS;
      const st = i32[e + E_STATUS]!;
      if ((st & (IPS_CONFIRMED | IPS_DYING | IPS_SRC_NAT_DONE)) !== (IPS_CONFIRMED | IPS_SRC_NAT_DONE)) problems.push(`slot ${s} in bysource with status ${st.toString(16)}`);
      if (entryBucket(table, e) !== b) problems.push(`slot ${s} in bysource bucket ${b}, belongs in ${entryBucket(table, e)}`);
      seen.set(s, (seen.get(s) ?? 0) + 1);
    }
  }
  const replies = new Map<string, number>();
  for (let s = 0; s < table.capacity; s++) {
    const e = E + s * ENTRY_WORDS;
    const st = i32[e + E_STATUS]!;
    if ((st & (IPS_CONFIRMED | IPS_DYING)) !== IPS_CONFIRMED) continue;
    if ((st & IPS_SRC_NAT_DONE) !== 0 && seen.get(s) !== 1) problems.push(`slot ${s} is in bysource ${seen.get(s) ?? 0} times`);
    const r = e + E_TUPLE + DIR_REPLY * TUPLE_WORDS;
    const key = `${i32[e + E_PROTO]}|${i32[e + E_NS]}|${i32[e + E_ZONE]! >>> 16}|${Array.from(i32.subarray(r, r + TUPLE_WORDS)).join(',')}`;
    const other = replies.get(key);
    if (other !== undefined) problems.push(`slots ${other} and ${s} share a reply tuple`);
    replies.set(key, s);
  }
  return problems;
}
