/** Small checks and builders shared by the one-thread table tests (chains-*, zones-*). */
import type { Conntrack } from '../../src/track/core.js';
import { checkInvariants, formatInvariants } from '../../src/table/invariants.js';
import { E_STATUS, ENTRY_WORDS, IPS_ASSURED, TUPLE_WORDS } from '../../src/table/layout.js';
import { LINKTYPE_RAW } from '../../src/input/packet/packet.js';
import type { ConntrackTable } from '../../src/table/table.js';
import { udp4 } from './frames.js';

/** Every table invariant holds (the failing ones in the message). */
export function inv(t: { true: (v: boolean, m?: string) => void }, table: ConntrackTable): void {
  const r = checkInvariants(table);
  t.true(r.ok, formatInvariants(r));
}

/** One statistic summed over the table. */
export const stat = (table: ConntrackTable, name: string): number => table.stats().total[name] ?? 0;

/** A tuple of 9 words (chains never interprets them): base, base+1, ... */
export function tup(base: number): Int32Array {
  return Int32Array.from({ length: TUPLE_WORDS }, (_, k) => base + k);
}

/** An ASSURED UDP stream from `a` (request, reply, a request 2.5 s later, the last at `now`); its slot. */
export function assuredUdp(ct: Conntrack, a: string, zone: number, ns: number, now: number): number {
  const q = udp4({ src: a, dst: '192.0.2.2', sport: 6000, dport: 53 });
  const r = udp4({ src: '192.0.2.2', dst: a, sport: 53, dport: 6000 });
  const v0 = ct.frame(LINKTYPE_RAW, q, 0, q.length, now - 2500, zone, ns);
  ct.frame(LINKTYPE_RAW, r, 0, r.length, now - 2500, zone, ns);
  ct.frame(LINKTYPE_RAW, q, 0, q.length, now, zone, ns);
  if ((ct.table.i32[ct.table.sec.entries + v0.slot * ENTRY_WORDS + E_STATUS]! & IPS_ASSURED) === 0) throw new Error('not ASSURED');
  return v0.slot;
}
