/**
 * Text formats people already parse: `conntrack -L` (default and `-o extended`), `conntrack -E`
 * event lines, `conntrack -S` and `conntrack -C`. Not on the packet path.
 */
import {
  E_ID, E_MARK, E_PROTO, E_REFCNT, E_STATUS, E_TIMEOUT, E_TUPLE, E_ZONE, IPS_ASSURED,
  IPS_OFFLOAD, IPS_SEEN_REPLY, STAT_NAMES, T_DST, T_PORTS, T_SRC, TUPLE_WORDS,
} from './layout.js';
import { EVENT_DESTROY, EVENT_NAMES } from './events.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, NFPROTO_IPV4 } from './packet/packet.js';
import { tcpFormat } from './proto/tcp.js';
import type { TrackerContext } from './proto/l4proto.js';
import { familyOf, formatAddr, hasPorts, l4protoOf } from './tuple.js';

const L4_NAMES: Record<number, string> = {
  1: 'icmp', 6: 'tcp', 17: 'udp', 33: 'dccp', 47: 'gre', 58: 'icmpv6', 132: 'sctp', 136: 'udplite',
};

export function l4Name(p: number): string {
  return L4_NAMES[p] ?? 'unknown';
}

function pad8(s: string): string {
  return s.length >= 8 ? s : s + ' '.repeat(8 - s.length);
}

export interface FormatOptions {
  /** `-o extended`: prefix the layer-3 protocol. */
  extended?: boolean;
  /** Print the remaining timeout (false for DESTROY events). */
  timeout?: boolean;
  /** Print `use=` (conntrack -L does, events do not). */
  use?: boolean;
  /** Print `id=`. */
  id?: boolean;
}

function tupleText(i32: Int32Array, t: number, family: number, l4: number): string {
  let s = `src=${formatAddr(i32, t + T_SRC, family)} dst=${formatAddr(i32, t + T_DST, family)} `;
  const ports = i32[t + T_PORTS]!;
  if (hasPorts(l4)) {
    s += `sport=${(ports >>> 16) & 0xffff} dport=${ports & 0xffff} `;
  } else if (l4 === IPPROTO_ICMP || l4 === IPPROTO_ICMPV6) {
    s += `type=${(ports >>> 8) & 0xff} code=${ports & 0xff} id=${(ports >>> 16) & 0xffff} `;
  }
  return s;
}

/** One connection as `conntrack -L` prints it. `now` is the table clock. */
export function formatEntry(ctx: TrackerContext, e: number, now: number, opts: FormatOptions = {}): string {
  const i32 = ctx.i32;
  const proto = i32[e + E_PROTO]!;
  const family = familyOf(proto);
  const l4 = l4protoOf(proto);
  const status = Atomics.load(i32, e + E_STATUS);
  let s = '';
  if (opts.extended) s += `${pad8(family === NFPROTO_IPV4 ? 'ipv4' : 'ipv6')} ${family} `;
  s += `${pad8(l4Name(l4))} ${l4} `;
  if (opts.timeout !== false) {
    const left = (i32[e + E_TIMEOUT]! - now) | 0;
    s += `${left > 0 ? Math.floor(left / 1000) : 0} `;
  }
  if (l4 === IPPROTO_TCP) s += `${tcpFormat(ctx, e)} `;
  s += tupleText(i32, e + E_TUPLE, family, l4);
  if ((status & IPS_SEEN_REPLY) === 0) s += '[UNREPLIED] ';
  s += tupleText(i32, e + E_TUPLE + TUPLE_WORDS, family, l4);
  if (status & IPS_OFFLOAD) s += '[OFFLOAD] ';
  if (status & IPS_ASSURED) s += '[ASSURED] ';
  s += `mark=${i32[e + E_MARK]! >>> 0} `;
  const zone = i32[e + E_ZONE]! & 0xffff;
  if (zone !== 0) s += `zone=${zone} `;
  if (opts.use !== false) s += `use=${Math.max(1, Atomics.load(i32, e + E_REFCNT))} `;
  if (opts.id) s += `id=${i32[e + E_ID]! >>> 0} `;
  return s.trimEnd();
}

/** One `conntrack -E` line; `wallMs` (epoch ms) adds the `-o timestamp` prefix when given. */
export function formatEvent(
  ctx: TrackerContext, type: number, e: number, now: number, wallMs?: number, opts: FormatOptions = {},
): string {
  const head = wallMs !== undefined ? `[${(wallMs / 1000).toFixed(6)}]\t` : '';
  const name = `[${EVENT_NAMES[type] ?? '?'}]`;
  const body = formatEntry(ctx, e, now, {
    ...opts, timeout: type !== EVENT_DESTROY && opts.timeout !== false, use: false,
  });
  return `${head}${' '.repeat(Math.max(0, 9 - name.length))}${name} ${body}`;
}

/** `conntrack -S`: one line per worker (the kernel prints one per cpu). */
export function formatStats(perWorker: Record<string, number>[]): string {
  const names = STAT_NAMES.slice(0, 10);
  return perWorker.map((row, i) => {
    const cpu = `cpu=${i}`;
    return `${cpu}${' '.repeat(Math.max(1, 8 - cpu.length))}\t${names.map((n) => `${n}=${row[n] ?? 0}`).join(' ')}`;
  }).join('\n');
}

export interface TupleJson {
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  type?: number;
  code?: number;
  id?: number;
}

export interface EntryJson {
  l3proto: 'ipv4' | 'ipv6';
  proto: string;
  protonum: number;
  timeout: number;
  state?: string;
  original: TupleJson;
  reply: TupleJson;
  status: string[];
  mark: number;
  zone: number;
  id: number;
}

function tupleJson(i32: Int32Array, t: number, family: number, l4: number): TupleJson {
  const out: TupleJson = { src: formatAddr(i32, t + T_SRC, family), dst: formatAddr(i32, t + T_DST, family) };
  const ports = i32[t + T_PORTS]!;
  if (hasPorts(l4)) {
    out.sport = (ports >>> 16) & 0xffff;
    out.dport = ports & 0xffff;
  } else if (l4 === IPPROTO_ICMP || l4 === IPPROTO_ICMPV6) {
    out.type = (ports >>> 8) & 0xff;
    out.code = ports & 0xff;
    out.id = (ports >>> 16) & 0xffff;
  }
  return out;
}

/** One connection as a JSON-ready object. */
export function entryJson(ctx: TrackerContext, e: number, now: number): EntryJson {
  const i32 = ctx.i32;
  const proto = i32[e + E_PROTO]!;
  const family = familyOf(proto);
  const l4 = l4protoOf(proto);
  const status = Atomics.load(i32, e + E_STATUS);
  const left = (i32[e + E_TIMEOUT]! - now) | 0;
  const flags: string[] = [];
  if (status & IPS_SEEN_REPLY) flags.push('SEEN_REPLY');
  if (status & IPS_ASSURED) flags.push('ASSURED');
  flags.push('CONFIRMED');
  const out: EntryJson = {
    l3proto: family === NFPROTO_IPV4 ? 'ipv4' : 'ipv6',
    proto: l4Name(l4),
    protonum: l4,
    timeout: left > 0 ? Math.floor(left / 1000) : 0,
    original: tupleJson(i32, e + E_TUPLE, family, l4),
    reply: tupleJson(i32, e + E_TUPLE + TUPLE_WORDS, family, l4),
    status: flags,
    mark: i32[e + E_MARK]! >>> 0,
    zone: i32[e + E_ZONE]! & 0xffff,
    id: i32[e + E_ID]! >>> 0,
  };
  if (l4 === IPPROTO_TCP) out.state = tcpFormat(ctx, e);
  return out;
}
