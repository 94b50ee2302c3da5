/**
 * Connection extensions (the kernel's nf_ct_ext): data few connections need lives outside the
 * fixed-size entry, in a block of the extension slab that is allocated on demand. An entry's
 * E_EXT word holds its block index (0 = none). One block carries every extension (layout.ts,
 * X_*): accounting, timestamps, labels, a timeout policy and a reserved helper word; X_FLAGS
 * says which of them are in use.
 *
 * A block is allocated when a connection is created and accounting or timestamps are switched
 * on (nf_conntrack_acct, nf_conntrack_timestamp), or its zone has a timeout policy; or later,
 * when a label or a policy is set on the connection. It is freed together with the entry: by
 * SlotAllocator.free, i.e. when the entry's slot is freed after its grace period (or at once
 * for an entry that was never confirmed), so a reader inside its batch never sees a block
 * reused under it.
 *
 * The slab has a locked free list (XC_EXT_LOCK); it is visited once per connection with an
 * extension, never per packet. An exhausted slab leaves the connection without its extension
 * (XC_EXT_FAILED counts those), as the kernel does when nf_ct_ext_add fails.
 *
 * Timeout policies (the kernel's cttimeout): named sets of per-protocol/state timeouts defined
 * with defineTimeoutPolicy(), attached to a zone (every new connection of the zone gets it) or to
 * one connection. Where a tracker has chosen a timeout for a packet, the per-packet path asks
 * policyTimeout() for the policy's value for the connection's current state instead.
 */
import {
  ENTRY_WORDS, H_EXT_BLOCKS, EXT_ACCT, EXT_LABELS, EXT_TIMEOUT, EXT_TSTAMP, EXT_WORDS, E_EXT, E_PRIV, E_PROTO, E_STATUS,
  IPS_SEEN_REPLY, P_GENERIC, P_GRE, P_GRE_STREAM, P_ICMP, P_ICMPV6, P_NAME, P_TCP, P_UDP, P_UDP_STREAM, P_USED,
  POLICY_WORDS, TIMEOUT_POLICIES, UDP_STREAM_TS, X_ACCT, X_FLAGS, X_LABELS, X_LINK, X_POLICY, X_TSTAMP,
  XC_EXT_FAILED, XC_EXT_FREE, XC_EXT_FREE_COUNT, XC_EXT_LOCK, XC_POLICY_LOCK, XC_ZONE_POLICIES,
  ZONE_POLICY_SLOTS,
} from './layout.js';
import { lock, unlock } from './locks.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from '../input/packet/packet.js';
import { IPPROTO_GRE } from '../track/proto/gre.js';
import { IPPROTO_UDPLITE } from '../track/proto/udp.js';
import { TCP_STATE_NAMES } from '../track/proto/tcp.js';
import type { ConntrackTable } from './table.js';
import { ConntrackError, argError, rangeError } from '../errors.js';

/** Lock owner id used by callers that hold no worker record (the table owner's API calls). */
export const API_OWNER = 0xfffff;

const E_NO_SLAB = 'the extension slab is empty (raise the table option `extensions`)';
const E_POLICY_FULL = `all ${TIMEOUT_POLICIES} timeout policies are defined`;
const E_ZONE_MAP_FULL = `all ${ZONE_POLICY_SLOTS} zone policy slots are in use`;
const E_BAD_LABEL = 'a connection label is a bit number in 0..127';
const NAME_BYTES = 32;

// ---------------------------------------------------------------------------------------------
// The slab.

/** Word offset of entry `e`'s extension block, or -1 when it has none. */
export function extOf(i32: Int32Array, extBase: number, e: number): number {
  // E_EXT: set before publication or by compareExchange; a plain read of a settled word.
  const x = i32[e + E_EXT]!;
  return x === 0 ? -1 : extBase + x * EXT_WORDS;
}

/** Take a block off the free list (zeroed, owned by `slot`); 0 when the slab is empty. */
export function extAlloc(table: ConntrackTable, owner: number, slot: number): number {
  const i32 = table.i32;
  const xc = table.sec.xctl;
  lock(i32, xc + XC_EXT_LOCK, owner);
  const b = i32[xc + XC_EXT_FREE]!; // XC_EXT_LOCK held
  if (b !== 0) {
    const x = table.sec.ext + b * EXT_WORDS;
    i32[xc + XC_EXT_FREE] = i32[x + X_LINK]!;
    i32[xc + XC_EXT_FREE_COUNT] = i32[xc + XC_EXT_FREE_COUNT]! - 1;
  }
  unlock(i32, xc + XC_EXT_LOCK);
  if (b === 0) {
    Atomics.add(i32, xc + XC_EXT_FAILED, 1); // statistics, any thread
    return 0;
  }
  const x = table.sec.ext + b * EXT_WORDS;
  // Ours alone until published through E_EXT (an Atomics op or the entry's own publication).
  i32.fill(0, x, x + EXT_WORDS);
  i32[x + X_LINK] = slot + 1;
  return b;
}

/** Give block `b` back. The caller guarantees no thread can reach it any more. */
export function extFree(table: ConntrackTable, owner: number, b: number): void {
  const i32 = table.i32;
  const xc = table.sec.xctl;
  const x = table.sec.ext + b * EXT_WORDS;
  lock(i32, xc + XC_EXT_LOCK, owner);
  i32[x + X_LINK] = i32[xc + XC_EXT_FREE]!; // XC_EXT_LOCK held
  i32[xc + XC_EXT_FREE] = b;
  i32[xc + XC_EXT_FREE_COUNT] = i32[xc + XC_EXT_FREE_COUNT]! + 1;
  unlock(i32, xc + XC_EXT_LOCK);
}

/**
 * Release the extension block of the entry in `slot` (called by SlotAllocator.free when the slot
 * itself is freed: nobody can reach the entry any more).
 */
export function extRelease(table: ConntrackTable, owner: number, slot: number): void {
  const i32 = table.i32;
  const e = table.sec.entries + slot * ENTRY_WORDS;
  // Exchange: the block is handed back exactly once even if recovery repeats a free.
  const b = Atomics.exchange(i32, e + E_EXT, 0);
  if (b > 0) extFree(table, owner, b);
}

/**
 * The extension block of a live entry, allocated on demand (labels or a policy set on an
 * existing connection). Returns its word offset, or -1 when the slab is empty.
 */
export function extEnsure(table: ConntrackTable, owner: number, slot: number): number {
  const i32 = table.i32;
  const e = table.sec.entries + slot * ENTRY_WORDS;
  const have = Atomics.load(i32, e + E_EXT); // another thread may attach one concurrently
  if (have !== 0) return table.sec.ext + have * EXT_WORDS;
  const b = extAlloc(table, owner, slot);
  if (b === 0) return -1;
  // CAS publishes the zeroed block; the loser gives its own back.
  const won = Atomics.compareExchange(i32, e + E_EXT, 0, b);
  if (won !== 0) {
    extFree(table, owner, b);
    return table.sec.ext + won * EXT_WORDS;
  }
  return table.sec.ext + b * EXT_WORDS;
}

/** Extension area use (extStats()). */
export interface ExtStats {
  /** Blocks in the slab, blocks free, blocks in use, allocations that found the slab empty. */
  blocks: number;
  free: number;
  inUse: number;
  failed: number;
  /** Bytes of one block. */
  blockBytes: number;
}

/** Use of the extension area (blocks in use and free). */
export function extStats(table: ConntrackTable): ExtStats {
  const i32 = table.i32;
  const xc = table.sec.xctl;
  const blocks = table.i32[H_EXT_BLOCKS]!; // fixed at creation
  const free = Atomics.load(i32, xc + XC_EXT_FREE_COUNT); // written under the lock; a snapshot
  return { blocks, free, inUse: blocks - free, failed: Atomics.load(i32, xc + XC_EXT_FAILED), blockBytes: EXT_WORDS * 4 };
}

// ---------------------------------------------------------------------------------------------
// Accounting, timestamps, labels: per-packet and per-connection helpers.

/** Count one packet of `bytes` in direction `dir` (x: the block's word offset). */
export function acctAdd(i32: Int32Array, x: number, dir: number, bytes: number): void {
  const a = x + X_ACCT + 4 * dir;
  // Atomics.add: several workers may count packets of one connection at once. A wrap of the
  // low word carries into the high word (readers may see the carry a moment late).
  if (Atomics.add(i32, a, 1) === -1) Atomics.add(i32, a + 1, 1);
  const old = Atomics.add(i32, a + 2, bytes) >>> 0;
  if (old + bytes > 0xffffffff) Atomics.add(i32, a + 3, 1);
}

function u64(i32: Int32Array, w: number): number {
  // Atomics.load of both halves, high word twice so a carry in between is noticed.
  for (;;) {
    const hi = Atomics.load(i32, w + 1);
    const lo = Atomics.load(i32, w) >>> 0;
    if (Atomics.load(i32, w + 1) === hi) return (hi >>> 0) * 4294967296 + lo;
  }
}

/** Per-direction packet and byte counters of a connection (nf_conntrack_acct). */
export interface ConnAcct {
  origPackets: number;
  origBytes: number;
  replyPackets: number;
  replyBytes: number;
}

/** Accounting counters of the block at word offset `x` (of an entry or an event record). */
export function readAcct(i32: Int32Array, x: number): ConnAcct {
  return {
    origPackets: u64(i32, x + X_ACCT), origBytes: u64(i32, x + X_ACCT + 2),
    replyPackets: u64(i32, x + X_ACCT + 4), replyBytes: u64(i32, x + X_ACCT + 6),
  };
}

/** Labels of the block at `x` as a 128-bit bigint (bit b = label b). */
export function readLabels(i32: Int32Array, x: number): bigint {
  let v = 0n;
  // Atomics.load: labels change with Atomics.or/and from any thread.
  for (let k = 3; k >= 0; k--) v = (v << 32n) | BigInt(Atomics.load(i32, x + X_LABELS + k) >>> 0);
  return v;
}

function entryOf(table: ConntrackTable, slot: number): number {
  if (!Number.isInteger(slot) || slot < 0 || slot >= table.capacity) throw rangeError(`no entry slot ${slot}`);
  return table.sec.entries + slot * ENTRY_WORDS;
}

/** Accounting counters of the connection in `slot`, or null when it has none. */
export function connAcct(table: ConntrackTable, slot: number): ConnAcct | null {
  const x = extOf(table.i32, table.sec.ext, entryOf(table, slot));
  if (x < 0 || (Atomics.load(table.i32, x + X_FLAGS) & EXT_ACCT) === 0) return null;
  return readAcct(table.i32, x);
}

/** Start and stop times (table clock ms; stop 0 while alive), or null without timestamps. */
export function connTimestamps(table: ConntrackTable, slot: number): { start: number; stop: number } | null {
  const x = extOf(table.i32, table.sec.ext, entryOf(table, slot));
  if (x < 0 || (Atomics.load(table.i32, x + X_FLAGS) & EXT_TSTAMP) === 0) return null;
  // Atomics.load: stop is written by the thread that removes the connection.
  return { start: Atomics.load(table.i32, x + X_TSTAMP) >>> 0, stop: Atomics.load(table.i32, x + X_TSTAMP + 1) >>> 0 };
}

/** Labels of the connection in `slot` (0n when it has none). */
export function connLabels(table: ConntrackTable, slot: number): bigint {
  const x = extOf(table.i32, table.sec.ext, entryOf(table, slot));
  return x < 0 ? 0n : readLabels(table.i32, x);
}

/**
 * Set (`on`) or clear connection label `bit` (0..127) of the live connection in `slot`. The
 * caller must keep the entry alive (inside a batch in 'noref' tables). `owner`: the caller's
 * worker record (Conntrack.wid) or API_OWNER. Throws when the slab is empty.
 */
export function setConnLabel(table: ConntrackTable, slot: number, bit: number, on: boolean, owner = API_OWNER): void {
  if (!Number.isInteger(bit) || bit < 0 || bit > 127) throw rangeError(E_BAD_LABEL);
  entryOf(table, slot);
  const i32 = table.i32;
  const x = extEnsure(table, owner, slot);
  if (x < 0) throw new ConntrackError('ERR_CT_NO_RESOURCE', E_NO_SLAB);
  Atomics.or(i32, x + X_FLAGS, EXT_LABELS); // flags only grow while the block lives
  // Atomics.or/and: labels are changed from any thread.
  if (on) Atomics.or(i32, x + X_LABELS + (bit >> 5), 1 << (bit & 31));
  else Atomics.and(i32, x + X_LABELS + (bit >> 5), ~(1 << (bit & 31)));
}

/** Hook for the per-packet path: set up a fresh (private) entry's extensions. */
export function extInitFresh(i32: Int32Array, x: number, flags: number, now: number, policy: number): void {
  i32[x + X_FLAGS] = flags; // private until the entry is confirmed
  if (flags & EXT_TSTAMP) i32[x + X_TSTAMP] = now | 0;
  if (flags & EXT_TIMEOUT) i32[x + X_POLICY] = policy + 1;
}

// ---------------------------------------------------------------------------------------------
// Timeout policies.

/** Timeouts in seconds; unset fields keep the tracker's choice (the sysctls). */
export interface TimeoutPolicySpec {
  /** By TCP state name (SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE, SYN_SENT2). */
  tcp?: Partial<Record<string, number>>;
  /** UDP and UDP-Lite, not yet a stream / a stream. */
  udp?: number;
  udpStream?: number;
  icmp?: number;
  icmpv6?: number;
  gre?: number;
  greStream?: number;
  /** Every other protocol. */
  generic?: number;
}

function seconds(v: number | undefined, what: string): number {
  if (v === undefined) return 0;
  if (!Number.isInteger(v) || v < 1 || v > 0x7fffffff / 1000) throw rangeError(`timeout policy: ${what} must be a positive integer of seconds, got ${String(v)}`);
  return v;
}

function encodeName(name: string): Uint8Array {
  const b = new TextEncoder().encode(name);
  if (name.length === 0 || b.length > NAME_BYTES || b.includes(0)) throw argError(`timeout policy name must be 1..${NAME_BYTES} bytes, got "${name}"`);
  const out = new Uint8Array(NAME_BYTES);
  out.set(b);
  return out;
}

function policyName(i32: Int32Array, p: number): string {
  const bytes = new Uint8Array(NAME_BYTES);
  for (let k = 0; k < NAME_BYTES / 4; k++) {
    const w = Atomics.load(i32, p + P_NAME + k); // written under XC_POLICY_LOCK
    bytes[4 * k] = w & 255; bytes[4 * k + 1] = (w >>> 8) & 255; bytes[4 * k + 2] = (w >>> 16) & 255; bytes[4 * k + 3] = w >>> 24;
  }
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** Index of the policy named `name`, or -1. */
export function findTimeoutPolicy(table: ConntrackTable, name: string): number {
  const i32 = table.i32;
  for (let k = 0; k < TIMEOUT_POLICIES; k++) {
    const p = table.sec.policies + k * POLICY_WORDS;
    if (Atomics.load(i32, p + P_USED) === 1 && policyName(i32, p) === name) return k; // published last
  }
  return -1;
}

/**
 * Define (or redefine) the named timeout policy. Connections that already use it pick the new
 * values up on their next packet. Returns the policy's index.
 */
export function defineTimeoutPolicy(table: ConntrackTable, name: string, spec: TimeoutPolicySpec, owner = API_OWNER): number {
  const nameBytes = encodeName(name);
  const words = new Int32Array(POLICY_WORDS);
  for (const [state, v] of Object.entries(spec.tcp ?? {})) {
    const k = TCP_STATE_NAMES.indexOf(state);
    if (k <= 0) throw argError(`timeout policy: unknown TCP state "${state}"`);
    words[P_TCP + k] = seconds(v, `tcp.${state}`);
  }
  words[P_UDP] = seconds(spec.udp, 'udp');
  words[P_UDP_STREAM] = seconds(spec.udpStream, 'udpStream');
  words[P_ICMP] = seconds(spec.icmp, 'icmp');
  words[P_ICMPV6] = seconds(spec.icmpv6, 'icmpv6');
  words[P_GRE] = seconds(spec.gre, 'gre');
  words[P_GRE_STREAM] = seconds(spec.greStream, 'greStream');
  words[P_GENERIC] = seconds(spec.generic, 'generic');
  const i32 = table.i32;
  const lk = table.sec.xctl + XC_POLICY_LOCK;
  lock(i32, lk, owner);
  try {
    let k = findTimeoutPolicy(table, name);
    if (k < 0) for (k = 0; k < TIMEOUT_POLICIES && Atomics.load(i32, table.sec.policies + k * POLICY_WORDS + P_USED) !== 0; k++);
    if (k >= TIMEOUT_POLICIES) throw new ConntrackError('ERR_CT_NO_RESOURCE', E_POLICY_FULL);
    const p = table.sec.policies + k * POLICY_WORDS;
    for (let w = 0; w < NAME_BYTES / 4; w++) {
      words[P_NAME + w] = nameBytes[4 * w]! | (nameBytes[4 * w + 1]! << 8) | (nameBytes[4 * w + 2]! << 16) | (nameBytes[4 * w + 3]! << 24);
    }
    // Atomics.store per word: packet workers read the values with Atomics.load at any time.
    for (let w = 1; w < POLICY_WORDS; w++) Atomics.store(i32, p + w, words[w]!);
    Atomics.store(i32, p + P_USED, 1); // last: the policy is complete once it reads as used
    return k;
  } finally {
    unlock(i32, lk);
  }
}

function policyIndex(table: ConntrackTable, name: string): number {
  const k = findTimeoutPolicy(table, name);
  if (k < 0) throw argError(`no timeout policy named "${name}"`);
  return k;
}

/**
 * Attach the named policy to `zone` (null detaches): every connection created in that zone
 * from now on uses it. Existing connections keep theirs.
 */
export function attachTimeoutPolicyToZone(table: ConntrackTable, zone: number, name: string | null, owner = API_OWNER): void {
  if (!Number.isInteger(zone) || zone < 0 || zone > 0xffff) throw rangeError(`zone must be in 0..65535, got ${zone}`);
  const pol = name === null ? -1 : policyIndex(table, name);
  const i32 = table.i32;
  const zp = table.sec.zonePolicies;
  const lk = table.sec.xctl + XC_POLICY_LOCK;
  lock(i32, lk, owner);
  try {
    let used = Atomics.load(i32, table.sec.xctl + XC_ZONE_POLICIES);
    let k = 0;
    for (; k < used; k++) if ((Atomics.load(i32, zp + k) >>> 8) === zone) break;
    if (pol < 0) {
      if (k === used) return;
      // Move the last slot into the freed one, then shrink: readers scan [0, used).
      Atomics.store(i32, zp + k, Atomics.load(i32, zp + used - 1));
      Atomics.store(i32, table.sec.xctl + XC_ZONE_POLICIES, used - 1);
      Atomics.store(i32, zp + used - 1, 0);
      return;
    }
    if (k === used) {
      if (used >= ZONE_POLICY_SLOTS) throw new ConntrackError('ERR_CT_NO_RESOURCE', E_ZONE_MAP_FULL);
      used++;
    }
    Atomics.store(i32, zp + k, (zone << 8) | (pol + 1)); // the slot before the count that shows it
    Atomics.store(i32, table.sec.xctl + XC_ZONE_POLICIES, used);
  } finally {
    unlock(i32, lk);
  }
}

/** Policy index of `zone`, or -1 (per-packet path, for new connections only). */
export function zonePolicy(i32: Int32Array, xctl: number, zonePolicies: number, zone: number): number {
  const used = Atomics.load(i32, xctl + XC_ZONE_POLICIES); // written under XC_POLICY_LOCK
  for (let k = 0; k < used; k++) {
    const w = Atomics.load(i32, zonePolicies + k);
    if ((w >>> 8) === zone && (w & 255) !== 0) return (w & 255) - 1;
  }
  return -1;
}

/**
 * Attach the named policy to the live connection in `slot` (null detaches). It applies from
 * the connection's next packet. The caller keeps the entry alive (inside a batch in 'noref').
 */
export function setConnTimeoutPolicy(table: ConntrackTable, slot: number, name: string | null, owner = API_OWNER): void {
  entryOf(table, slot);
  const pol = name === null ? -1 : policyIndex(table, name);
  if (pol < 0) {
    const x = extOf(table.i32, table.sec.ext, entryOf(table, slot));
    if (x >= 0) Atomics.store(table.i32, x + X_POLICY, 0); // read by the packet path
    return;
  }
  const x = extEnsure(table, owner, slot);
  if (x < 0) throw new ConntrackError('ERR_CT_NO_RESOURCE', E_NO_SLAB);
  Atomics.store(table.i32, x + X_POLICY, pol + 1); // before the flag that makes it count
  Atomics.or(table.i32, x + X_FLAGS, EXT_TIMEOUT);
}

/** Name of the policy the connection in `slot` uses, or null. */
export function connTimeoutPolicy(table: ConntrackTable, slot: number): string | null {
  const x = extOf(table.i32, table.sec.ext, entryOf(table, slot));
  if (x < 0) return null;
  const pol = Atomics.load(table.i32, x + X_POLICY) - 1; // Atomics.store'd by setConnTimeoutPolicy
  return pol < 0 ? null : policyName(table.i32, table.sec.policies + pol * POLICY_WORDS);
}

/**
 * The timeout (seconds) the connection's policy sets for its current state, or `fallback` (the
 * tracker's choice) when the block has no policy or the policy leaves that state unset.
 * `tcpState`: the TCP state after the packet (ignored for other protocols).
 */
export function policyTimeout(
  i32: Int32Array, policies: number, e: number, x: number, now: number, tcpState: number, fallback: number,
): number {
  const pol = Atomics.load(i32, x + X_POLICY) - 1; // Atomics.store'd by the policy API
  if (pol < 0) return fallback;
  const p = policies + pol * POLICY_WORDS;
  const l4 = (i32[e + E_PROTO]! >>> 8) & 0xff;
  let w: number;
  if (l4 === IPPROTO_TCP) {
    w = P_TCP + (tcpState & 15);
  } else if (l4 === IPPROTO_UDP || l4 === IPPROTO_UDPLITE) {
    const replied = (Atomics.load(i32, e + E_STATUS) & IPS_SEEN_REPLY) !== 0; // set by any thread
    // UDP: a stream once replied and two seconds old (udp.ts); UDP-Lite: once replied.
    const stream = replied && (l4 === IPPROTO_UDPLITE || ((now - i32[e + E_PRIV + UDP_STREAM_TS]!) | 0) > 0);
    w = stream ? P_UDP_STREAM : P_UDP;
  } else if (l4 === IPPROTO_ICMP) {
    w = P_ICMP;
  } else if (l4 === IPPROTO_ICMPV6) {
    w = P_ICMPV6;
  } else if (l4 === IPPROTO_GRE) {
    w = (Atomics.load(i32, e + E_STATUS) & IPS_SEEN_REPLY) !== 0 ? P_GRE_STREAM : P_GRE;
  } else if (l4 === 132) {
    return fallback; // SCTP: policies do not cover its states (yet)
  } else {
    w = P_GENERIC;
  }
  const v = Atomics.load(i32, p + w); // Atomics.store'd by defineTimeoutPolicy
  return v > 0 ? v : fallback;
}

/** Names of the defined policies. */
export function timeoutPolicies(table: ConntrackTable): string[] {
  const out: string[] = [];
  for (let k = 0; k < TIMEOUT_POLICIES; k++) {
    const p = table.sec.policies + k * POLICY_WORDS;
    if (Atomics.load(table.i32, p + P_USED) === 1) out.push(policyName(table.i32, p));
  }
  return out;
}

export { EXT_ACCT, EXT_LABELS, EXT_TIMEOUT, EXT_TSTAMP };
