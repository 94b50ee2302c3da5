/**
 * Reason codes: the verdict's reason strings (constants spread over the parser, the trackers and
 * the core) as small integers, so workers can write them into shared memory.
 *
 * The registry is deterministic: it is built at module load from a fixed, ordered list of
 * modules, taking each module's exported string constants named R_* / RI_* in name order
 * (module namespace keys are sorted), then PRIVATE_REASONS, dropping repeats. Every thread
 * that loads this module therefore assigns the same code to the same string.
 *
 * A string that is not registered gets REASON_OTHER; the worker reports the text next to it
 * (per task), so no decision is lost, and tests assert that this never happens.
 */
import * as core from './core.js';
import * as parse from '../input/packet/parse.js';
import * as gre from './proto/gre.js';
import * as icmp from './proto/icmp.js';
import * as sctp from './proto/sctp.js';
import * as tcp from './proto/tcp.js';
import * as udp from './proto/udp.js';
import * as defrag from '../input/defrag/defrag.js';
import * as nat from './nat/nat.js';

/** No reason: the packet was tracked. */
export const REASON_NONE = 0;
/** A reason string missing from the registry (see BatchVerdict.reason for its text). */
export const REASON_OTHER = 1;
/** Codes at and above this name the (code - REASON_EXTRA)th unregistered string of a task. */
export const REASON_EXTRA = 0x8000;

/**
 * Reason strings whose constants their modules do not export yet (core.ts, proto/udp.ts,
 * proto/icmp.ts keep them module-private). Remove an entry once its module exports it: the
 * namespace scan below then registers it.
 */
const PRIVATE_REASONS: readonly string[] = [
  // core.ts
  'table full',
  'hash chain too long',
  'tuple has no inverse (ICMP type without a reply)',
  'not an IP packet',
  'non-first fragment (no reassembly)',
  'ICMP error for no known connection',
  'ICMP error: outer destination is not the connection\'s',
  'ICMP error quotes a packet without a tuple',
  'connection reopened twice',
  // proto/udp.ts
  'short UDP packet',
  'truncated/malformed UDP packet',
  'bad UDP checksum',
  // proto/icmp.ts
  'short ICMP packet',
  'bad ICMP checksum',
  'invalid ICMP type',
  'short ICMPv6 packet',
  'ICMPv6 checksum failed',
  'ICMP type cannot create a connection',
  'ICMPv6 type cannot create a connection',
];

/** Modules scanned for exported reason constants, in this fixed order. */
const SOURCES: readonly Readonly<Record<string, unknown>>[] = [parse, tcp, udp, icmp, core, sctp, gre, defrag, nat];

const NAMES: string[] = ['', 'other'];
const CODES = new Map<string, number>();

function register(s: string): void {
  if (CODES.has(s)) return;
  CODES.set(s, NAMES.length);
  NAMES.push(s);
}

for (const mod of SOURCES) {
  for (const key of Object.keys(mod).sort()) {
    const v = mod[key];
    if (typeof v === 'string' && /^RI?_[A-Z0-9_]+$/.test(key)) register(v);
  }
}
for (const s of PRIVATE_REASONS) register(s);
if (NAMES.length >= REASON_EXTRA) throw new Error('too many reason strings');

/** Every registered string, by code (index 0 is REASON_NONE, 1 REASON_OTHER). */
export const REASONS: readonly string[] = NAMES;

/** The code of a reason string: REASON_NONE for null, REASON_OTHER when not registered. */
export function reasonCode(reason: string | null): number {
  if (reason === null) return REASON_NONE;
  return CODES.get(reason) ?? REASON_OTHER;
}

/** The string of a code; `extras` are the unregistered strings the deciding task reported. */
export function reasonString(code: number, extras?: readonly string[]): string | null {
  if (code === REASON_NONE) return null;
  if (code >= REASON_EXTRA) return extras?.[code - REASON_EXTRA] ?? 'other';
  return NAMES[code] ?? 'other';
}
