/**
 * Text formats people already parse: `conntrack -L` (default and `-o extended`), `conntrack -E`
 * event lines, `conntrack -S` and `conntrack -C`. Not on the packet path.
 */
import {
  EXT_ACCT, EXT_LABELS, EXT_TSTAMP, EXT_WORDS, E_EXT, X_ACCT, X_FLAGS, X_LABELS, X_TSTAMP,
  E_ID, E_MARK, E_PROTO, E_REFCNT, E_STATUS, E_TIMEOUT, E_TUPLE, E_ZONE, IPS_ASSURED,
  IPS_OFFLOAD, IPS_SEEN_REPLY, IPS_SRC_NAT, IPS_DST_NAT, IPS_SRC_NAT_DONE, IPS_DST_NAT_DONE, STAT_NAMES, T_DST, T_PORTS, T_SRC, TUPLE_WORDS,
} from '../table/layout.js';
import { EVENT_DESTROY, EVENT_F_PROTOINFO, EVENT_NAMES, EVENT_UPDATE } from '../table/events.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, NFPROTO_IPV4 } from '../input/packet/packet.js';
import { IPPROTO_UDPLITE } from '../track/proto/udp.js';
import { IPPROTO_GRE } from '../track/proto/gre.js';
import { IPPROTO_SCTP, sctpFormat } from '../track/proto/sctp.js';
import { tcpFormat } from '../track/proto/tcp.js';
import type { TrackerContext } from '../track/proto/l4proto.js';
import { familyOf, formatAddr, hasPorts, l4protoOf } from '../track/tuple.js';
import { readAcct, readLabels, type ConnAcct } from '../table/ext.js';
import { E_PRIV, GRE_STREAM_TIMEOUT, GRE_TIMEOUT, IPS_DYING } from '../table/layout.js';

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
  /** Leave the protocol state out (an UPDATE event without a state change). */
  noState?: boolean;
  /**
   * A DESTROY event: the timeout is printed only while some of it was left (an entry removed
   * before it expired), and timestamps as `delta-time=`.
   */
  destroy?: boolean;
}

/**
 * A TrackerContext that can also reach extension blocks: `ext` is the word offset of the
 * extension slab (table.sec.ext), so entry e's block is at ext + E_EXT * EXT_WORDS. Without it,
 * extensions are not printed.
 */
export interface FormatContext extends TrackerContext {
  ext?: number;
}

/** Word offset of entry e's extension block, or -1. */
function extBlock(ctx: FormatContext, e: number): number {
  if (ctx.ext === undefined) return -1;
  const b = ctx.i32[e + E_EXT]!;
  return b === 0 ? -1 : ctx.ext + b * EXT_WORDS;
}

function u64(i32: Int32Array, w: number): number {
  return (i32[w + 1]! >>> 0) * 4294967296 + (i32[w]! >>> 0);
}

/** `packets=N bytes=N ` of direction d (conntrack-tools' counters), or ''. */
function countersText(i32: Int32Array, x: number, flags: number, d: number): string {
  if (x < 0 || (flags & EXT_ACCT) === 0) return '';
  const a = x + X_ACCT + 4 * d;
  return `packets=${u64(i32, a)} bytes=${u64(i32, a + 2)} `;
}

function labelsText(i32: Int32Array, x: number): string {
  let hex = '';
  for (let k = 3; k >= 0; k--) hex += (i32[x + X_LABELS + k]! >>> 0).toString(16).padStart(8, '0');
  hex = hex.replace(/^0+/, '');
  return hex === '' ? '' : `labels=0x${hex} `;
}

type AddrFormatter = (t: Int32Array, off: number, family: number) => string;

/**
 * One direction's tuple as conntrack prints it. `withPorts`: the protocol's tuple carries ports
 * (conntrack-tools prints them for every port protocol; /proc only for those the kernel tracks).
 */
function tupleWith(i32: Int32Array, t: number, family: number, l4: number, addr: AddrFormatter, withPorts: boolean): string {
  let s = `src=${addr(i32, t + T_SRC, family)} dst=${addr(i32, t + T_DST, family)} `;
  const ports = i32[t + T_PORTS]!;
  if (withPorts) {
    s += `sport=${(ports >>> 16) & 0xffff} dport=${ports & 0xffff} `;
  } else if (l4 === IPPROTO_ICMP || l4 === IPPROTO_ICMPV6) {
    s += `type=${(ports >>> 8) & 0xff} code=${ports & 0xff} id=${(ports >>> 16) & 0xffff} `;
  } else if (l4 === IPPROTO_GRE) {
    s += `srckey=0x${((ports >>> 16) & 0xffff).toString(16)} dstkey=0x${(ports & 0xffff).toString(16)} `;
  }
  return s;
}

function tupleText(i32: Int32Array, t: number, family: number, l4: number): string {
  return tupleWith(i32, t, family, l4, formatAddr, hasPorts(l4));
}

/** One connection as `conntrack -L` prints it. `now` is the table clock. */
export function formatEntry(ctx: FormatContext, e: number, now: number, opts: FormatOptions = {}): string {
  const i32 = ctx.i32;
  const x = extBlock(ctx, e);
  const xf = x < 0 ? 0 : i32[x + X_FLAGS]!;
  const proto = i32[e + E_PROTO]!;
  const family = familyOf(proto);
  const l4 = l4protoOf(proto);
  const status = Atomics.load(i32, e + E_STATUS);
  let s = '';
  if (opts.extended) s += `${pad8(family === NFPROTO_IPV4 ? 'ipv4' : 'ipv6')} ${family} `;
  s += `${pad8(l4Name(l4))} ${l4} `;
  if (opts.timeout !== false) {
    const left = (i32[e + E_TIMEOUT]! - now) | 0;
    if (!opts.destroy) s += `${left > 0 ? Math.floor(left / 1000) : 0} `;
    else if (left >= 1000) s += `${Math.floor(left / 1000)} `; // removed before it expired
  }
  if (opts.noState) { /* conntrack -E: an UPDATE without a state change */ }
  else if (l4 === IPPROTO_TCP) s += `${tcpFormat(ctx, e)} `;
  else if (l4 === IPPROTO_SCTP) s += `${sctpFormat(ctx, e)} `;
  s += tupleText(i32, e + E_TUPLE, family, l4);
  s += countersText(i32, x, xf, 0);
  if ((status & IPS_SEEN_REPLY) === 0) s += '[UNREPLIED] ';
  s += tupleText(i32, e + E_TUPLE + TUPLE_WORDS, family, l4);
  s += countersText(i32, x, xf, 1);
  if (status & IPS_OFFLOAD) s += '[OFFLOAD] ';
  if (status & IPS_ASSURED) s += '[ASSURED] ';
  const mark = i32[e + E_MARK]! >>> 0;
  // conntrack -L always prints the mark; events carry it only when it is set.
  if (mark !== 0 || opts.use !== false) s += `mark=${mark} `;
  const zone = i32[e + E_ZONE]! & 0xffff;
  if (zone !== 0) s += `zone=${zone} `;
  if (x >= 0 && (xf & EXT_TSTAMP) && opts.destroy) {
    const start = i32[x + X_TSTAMP]!;
    const stop = i32[x + X_TSTAMP + 1]!;
    if (stop !== 0) s += `delta-time=${Math.floor((((stop - start) | 0) >>> 0) / 1000)} `;
  }
  if (x >= 0 && (xf & EXT_LABELS)) s += labelsText(i32, x);
  if (opts.use !== false) s += `use=${Math.max(1, Atomics.load(i32, e + E_REFCNT))} `;
  if (opts.id) s += `id=${i32[e + E_ID]! >>> 0} `;
  return s.trimEnd();
}

/** One `conntrack -E` line; `wallMs` (epoch ms) adds the `-o timestamp` prefix when given. */
export function formatEvent(
  ctx: FormatContext, type: number, e: number, now: number, wallMs?: number, opts: FormatOptions = {}, flags = EVENT_F_PROTOINFO,
): string {
  const body = formatEntry(ctx, e, now, {
    ...opts, destroy: type === EVENT_DESTROY, use: false,
    noState: type === EVENT_UPDATE && (flags & EVENT_F_PROTOINFO) === 0,
  });
  return eventLine(type, body, wallMs);
}

/** A `conntrack -E` line from the event type and its body (formatEntry's text). */
export function eventLine(type: number, body: string, wallMs?: number): string {
  const head = wallMs !== undefined ? `[${(wallMs / 1000).toFixed(6)}]\t` : '';
  const name = `[${EVENT_NAMES[type] ?? '?'}]`;
  return `${head}${' '.repeat(Math.max(0, 9 - name.length))}${name} ${body}`;
}

/** `conntrack -S`: one line per worker (the kernel prints one per cpu). */
/** Our counters that `-S` appends to a cpu line when they are non-zero (after conntrack's own). */
const STATS_EXTRA: readonly string[] = ['csum_offload', 'frag_held', 'frag_reasm', 'frag_drop', 'frag_timeout', 'frag_evict', 'nat_failed'];

/** `conntrack -S` lines, one per worker record (our counters appended when non-zero). */
export function formatStats(perWorker: Record<string, number>[]): string {
  const names = STAT_NAMES.slice(0, 10);
  return perWorker.map((row, i) => {
    const cpu = `cpu=${i}`;
    const extra = STATS_EXTRA.filter((n) => (row[n] ?? 0) !== 0).map((n) => ` ${n}=${row[n]}`).join('');
    return `${cpu}${' '.repeat(Math.max(1, 8 - cpu.length))}\t${names.map((n) => `${n}=${row[n] ?? 0}`).join(' ')}${extra}`;
  }).join('\n');
}

/** One direction of a connection as JSON: addresses, and ports or ICMP type/code/id. */
export interface TupleJson {
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  type?: number;
  code?: number;
  id?: number;
}

/** One connection as JSON (conntrack -L -o json): tuples, protocol, state, status, mark, zone, id. */
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
  // NAT (the kernel's IPS_* names, as conntrack -o json / libnetfilter_conntrack print them).
  if (status & IPS_SRC_NAT) flags.push('SRC_NAT');
  if (status & IPS_DST_NAT) flags.push('DST_NAT');
  if (status & IPS_SRC_NAT_DONE) flags.push('SRC_NAT_DONE');
  if (status & IPS_DST_NAT_DONE) flags.push('DST_NAT_DONE');
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
  else if (l4 === IPPROTO_SCTP) out.state = sctpFormat(ctx, e);
  return out;
}

/** A listed connection as JSON: the entry, plus accounting and labels (hex) when it has them. */
export interface ConnEntryJson extends EntryJson {
  acct?: ConnAcct;
  labels?: string;
}

/**
 * The one JSON shape of a connection, for listed entries (EntryDump.json(), `-o json`) and
 * events (ConnEvent.toJSON()) alike: entry `e` of `ctx.i32`, its extension block at word `x` of
 * `xi32` (x < 0: none).
 */
export function connEntryJson(ctx: TrackerContext, e: number, now: number, xi32: Int32Array, x: number): ConnEntryJson {
  const j: ConnEntryJson = entryJson(ctx, e, now);
  const flags = x < 0 ? 0 : xi32[x + X_FLAGS]!;
  if (flags & EXT_ACCT) j.acct = readAcct(xi32, x);
  if (flags & EXT_LABELS) {
    const l = readLabels(xi32, x);
    if (l !== 0n) j.labels = `0x${l.toString(16)}`;
  }
  return j;
}

// ---------------------------------------------------------------------------------------------
// /proc/net/nf_conntrack, zones, conntrack -C (ops.ts, metrics.ts, the table CLI commands).

/** l4proto names as the kernel's /proc/net/nf_conntrack prints them (others are "unknown"). */
const PROC_L4_NAMES: Record<number, string> = {
  1: 'icmp', 6: 'tcp', 17: 'udp', 47: 'gre', 58: 'icmpv6', 132: 'sctp', 136: 'udplite',
};

/** An IPv6 address as the kernel's %pI6 prints it: 8 groups of 4 hex digits, no compression. */
function addrProc(i32: Int32Array, off: number, family: number): string {
  if (family === NFPROTO_IPV4) return formatAddr(i32, off, family);
  const g: string[] = [];
  for (let k = 0; k < 4; k++) {
    const w = i32[off + k]! >>> 0;
    g.push((w >>> 16).toString(16).padStart(4, '0'), (w & 0xffff).toString(16).padStart(4, '0'));
  }
  return g.join(':');
}

function tupleProc(i32: Int32Array, t: number, family: number, l4: number): string {
  const ports = l4 === IPPROTO_TCP || l4 === IPPROTO_UDP || l4 === IPPROTO_UDPLITE || l4 === IPPROTO_SCTP;
  return tupleWith(i32, t, family, l4, addrProc, ports);
}

/**
 * How the kernel shows an entry's zone: one id for both directions (`zone=N`), or a zone that
 * applies to one direction only (`zone-orig=N` / `zone-reply=N`). E_ZONE holds the original
 * direction's zone in bits 0-15 and the reply direction's in bits 16-31.
 */
export function zoneParts(zoneWord: number): { zone?: number; orig?: number; reply?: number } {
  const o = zoneWord & 0xffff;
  const r = zoneWord >>> 16;
  if (o === r) return { zone: o };
  const out: { orig?: number; reply?: number } = {};
  if (o !== 0) out.orig = o;
  if (r !== 0) out.reply = r;
  return out;
}

/**
 * One line of /proc/net/nf_conntrack (the kernel's ct_seq_show): l3 and l4 names and numbers,
 * remaining seconds (not for offloaded entries), the protocol state, both tuples with
 * [UNREPLIED] between them, [OFFLOAD] or else [ASSURED], then mark=, zone= (always, for a
 * zone of both directions; zone-orig= / zone-reply= after their tuple otherwise) and use=.
 * IPv6 addresses are printed in full (%pI6).
 */
export function formatProcEntry(
  ctx: TrackerContext, e: number, now: number,
  acct: { origPackets: number; origBytes: number; replyPackets: number; replyBytes: number } | null = null,
): string {
  const i32 = ctx.i32;
  const proto = i32[e + E_PROTO]!;
  const family = familyOf(proto);
  const l4 = l4protoOf(proto);
  const status = Atomics.load(i32, e + E_STATUS);
  const z = zoneParts(i32[e + E_ZONE]!);
  let s = `${pad8(family === NFPROTO_IPV4 ? 'ipv4' : family === 10 ? 'ipv6' : 'unknown')} ${family} `;
  s += `${pad8(PROC_L4_NAMES[l4] ?? 'unknown')} ${l4} `;
  if ((status & IPS_OFFLOAD) === 0) {
    const left = (i32[e + E_TIMEOUT]! - now) | 0;
    s += `${left > 0 ? Math.floor(left / 1000) : 0} `;
  }
  if (l4 === IPPROTO_TCP) s += `${tcpFormat(ctx, e)} `;
  else if (l4 === IPPROTO_SCTP) s += `${sctpFormat(ctx, e)} `;
  else if (l4 === IPPROTO_GRE) {
    s += `timeout=${i32[e + E_PRIV + GRE_TIMEOUT]! >>> 0}, stream_timeout=${i32[e + E_PRIV + GRE_STREAM_TIMEOUT]! >>> 0} `;
  }
  s += tupleProc(i32, e + E_TUPLE, family, l4);
  if (z.orig !== undefined) s += `zone-orig=${z.orig} `;
  if (acct) s += `packets=${acct.origPackets} bytes=${acct.origBytes} `;
  if ((status & IPS_SEEN_REPLY) === 0) s += '[UNREPLIED] ';
  s += tupleProc(i32, e + E_TUPLE + TUPLE_WORDS, family, l4);
  if (z.reply !== undefined) s += `zone-reply=${z.reply} `;
  if (acct) s += `packets=${acct.replyPackets} bytes=${acct.replyBytes} `;
  if (status & IPS_OFFLOAD) s += '[OFFLOAD] ';
  else if (status & IPS_ASSURED) s += '[ASSURED] ';
  s += `mark=${i32[e + E_MARK]! >>> 0} `;
  if (z.zone !== undefined) s += `zone=${z.zone} `;
  // use=: the kernel's reader holds a reference while it prints, so a quiet entry shows 2
  // (the table's and the reader's); ours take none, so add the reader's to the table's.
  const use = (status & IPS_DYING) ? 0 : Math.max(1, Atomics.load(i32, e + E_REFCNT)) + 1;
  return `${s}use=${use}`;
}

/** `conntrack -C`: the entry count alone on a line. */
export function formatCount(n: number): string {
  return String(n);
}
