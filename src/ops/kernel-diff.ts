/**
 * Differential comparison with a kernel recording (scripts/oracle/record.sh, fuzz seeds):
 * per-packet verdicts (the NFLOG labels) and per-connection event streams (conntrack -E's
 * NEW / UPDATE lines: types, TCP states, flags, and the remaining timeout within one second of
 * rounding). DESTROY events are left out: the kernel's come from its own GC clock.
 * Also a minimiser that cuts a capture down to the packets of one connection.
 */
import { readCapture } from '../input/capture/reader.js';
import { encodePcap, type PcapWriteRecord } from '../input/capture/writer.js';
import { LINKTYPE_NFLOG, type Packet } from '../input/packet/packet.js';
import { nflogPrefix } from '../input/packet/parse.js';
import { EVENT_DESTROY, type EventSink } from '../table/events.js';
import { TCP_STATE_NAMES } from '../track/proto/tcp.js';
import { formatAddr } from '../track/tuple.js';
import { formatEvent, type FormatContext } from './format.js';
import { parseLabel, type KernelLabel } from './oracle.js';
import { replay } from './replay.js';
import { ConntrackTable } from '../table/table.js';

/** One NEW / UPDATE event line, normalised. */
export interface CtEvent {
  type: string;
  /** The connection: protocol and both endpoints, direction-free. */
  key: string;
  /** The line without timestamp, id and timeout. */
  text: string;
  /** Remaining timeout in seconds, or null when the line has none. */
  timeout: number | null;
}

const TUPLE_RE = /src=(\S+) dst=(\S+)(?: sport=(\d+) dport=(\d+))?(?: type=\d+ code=\d+ id=(\d+))?/;

/** Parse one `conntrack -E -o extended[,timestamp,id]` line; null for other lines and DESTROY. */
export function parseEventLine(line: string): CtEvent | null {
  const m = /^(?:\[[0-9.]+\]\s+)?\s*\[(NEW|UPDATE|DESTROY)\]\s+(.*)$/.exec(line);
  if (!m || m[1] === 'DESTROY') return null;
  const tokens = m[2]!.replace(/ id=\d+$/, '').trim().split(/\s+/);
  // ipv4 2 tcp 6 <timeout> [STATE] src=...
  let timeout: number | null = null;
  if (tokens.length > 4 && /^\d+$/.test(tokens[4]!)) {
    timeout = Number(tokens[4]);
    tokens.splice(4, 1);
  }
  const text = tokens.join(' ');
  const t = TUPLE_RE.exec(text);
  const l4 = tokens[3] ?? '?';
  let key = `${l4}|?`;
  if (t) {
    const p1 = t[5] ?? t[3] ?? '';
    const p2 = t[5] ?? t[4] ?? '';
    const a = `${t[1]}#${p1}`;
    const b = `${t[2]}#${p2}`;
    key = `${l4}|${a < b ? `${a}|${b}` : `${b}|${a}`}`;
  }
  return { type: m[1]!, key, text, timeout };
}

/** The connection key of a parsed packet (an ICMP error: of the packet it quotes), as parseEventLine's. */
export function packetKey(pkt: Packet): string | null {
  if (pkt.reason !== null && !pkt.icmpError) return null;
  const inner = pkt.icmpError && pkt.innerReason === null;
  const fam = inner ? pkt.innerFamily : pkt.family;
  const l4 = inner ? pkt.innerProto : pkt.l4proto;
  const s = inner ? pkt.innerSrc : pkt.src;
  const d = inner ? pkt.innerDst : pkt.dst;
  if (fam === 0) return null;
  const src = formatAddr(new Int32Array(s.buffer, s.byteOffset, 4), 0, fam);
  const dst = formatAddr(new Int32Array(d.buffer, d.byteOffset, 4), 0, fam);
  const sp = inner ? pkt.innerSport : pkt.sport;
  const dp = inner ? pkt.innerDport : pkt.dport;
  let p1 = '';
  let p2 = '';
  if (l4 === 6 || l4 === 17 || l4 === 132 || l4 === 136) { p1 = String(sp); p2 = String(dp); }
  else if (l4 === 1 || l4 === 58) { p1 = String(sp); p2 = String(sp); }
  const a = `${src}#${p1}`;
  const b = `${dst}#${p2}`;
  return `${l4}|${a < b ? `${a}|${b}` : `${b}|${a}`}`;
}

export interface VerdictMismatch {
  index: number;
  kernel: KernelLabel | null;
  ours: KernelLabel;
  reason: string | null;
  tcpState: string | null;
  key: string | null;
}

export interface EventMismatch {
  key: string;
  /** Position in the connection's NEW/UPDATE stream. */
  at: number;
  kernel: string | null;
  ours: string | null;
}

export interface KernelDiff {
  packets: number;
  agree: number;
  verdictMismatches: VerdictMismatch[];
  /** Connections (event keys) in either stream, and those whose streams agree. */
  connections: number;
  connectionsAgree: number;
  kernelEvents: number;
  ourEvents: number;
  eventMismatches: EventMismatch[];
  /** Connection key of every packet (null when it has none). */
  keys: (string | null)[];
  captureError: string | null;
}

function group(events: CtEvent[]): Map<string, CtEvent[]> {
  const m = new Map<string, CtEvent[]>();
  for (const e of events) {
    let l = m.get(e.key);
    if (!l) m.set(e.key, (l = []));
    l.push(e);
  }
  return m;
}

const show = (e: CtEvent | undefined): string | null => e ? `[${e.type}] ${e.text} (timeout ${e.timeout ?? '-'})` : null;

/** Compare one connection's event streams; the first difference, or null. */
function streamDiff(k: CtEvent[], o: CtEvent[]): { at: number; kernel: string | null; ours: string | null } | null {
  for (let i = 0; i < Math.max(k.length, o.length); i++) {
    const a = k[i];
    const b = o[i];
    if (!a || !b || a.type !== b.type || a.text !== b.text ||
        (a.timeout === null) !== (b.timeout === null) || Math.abs((a.timeout ?? 0) - (b.timeout ?? 0)) > 1) {
      return { at: i, kernel: show(a), ours: show(b) };
    }
  }
  return null;
}

/**
 * Replay `capture` (an NFLOG recording) and compare with the kernel: every packet's verdict and,
 * when `eventsText` (conntrack -E output of the recording) is given, every connection's events.
 */
export function diffWithKernel(capture: Uint8Array, eventsText: string | null, sysctls: Record<string, number> = {}): KernelDiff {
  const ours: CtEvent[] = [];
  const keys: (string | null)[] = [];
  const verdictMismatches: VerdictMismatch[] = [];
  let agree = 0;
  let expected: KernelLabel | null = null;
  const table = ConntrackTable.create({ sysctls });
  const ctx: FormatContext = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl, ext: table.sec.ext };
  const sink: EventSink | undefined = eventsText === null ? undefined : {
    event(type: number, e: number, now: number, flags?: number): void {
      if (type === EVENT_DESTROY) return;
      const ev = parseEventLine(formatEvent(ctx, type, e, now, undefined, { extended: true, id: true }, flags));
      if (ev) ours.push(ev);
    },
  };
  const res = replay(capture, {
    table,
    ...(sink ? { events: sink } : {}),
    onRecord: (linktype, buf, off, len) => {
      expected = linktype === LINKTYPE_NFLOG ? parseLabel(nflogPrefix(buf, off, len)) : null;
    },
    onPacket: (index, v, pkt) => {
      const key = packetKey(pkt);
      keys.push(key);
      const got: KernelLabel = { ctstate: v.ctstate, dir: v.direction };
      const k = expected as KernelLabel | null;
      if (k !== null && k.ctstate === got.ctstate && k.dir === got.dir) agree++;
      else {
        verdictMismatches.push({
          index, kernel: k, ours: got, reason: v.reason, key,
          tcpState: v.protoState >= 0 && pkt.l4proto === 6 ? TCP_STATE_NAMES[v.protoState] ?? null : null,
        });
      }
    },
  });
  res.conntrack.close();
  return finish(res.packets, agree, verdictMismatches, keys, eventsText, ours, res.error ? res.error.message : null);
}

function finish(packets: number, agree: number, verdictMismatches: VerdictMismatch[], keys: (string | null)[],
  eventsText: string | null, ours: CtEvent[], captureError: string | null): KernelDiff {
  const eventMismatches: EventMismatch[] = [];
  let connections = 0;
  let connectionsAgree = 0;
  let kernelEvents = 0;
  if (eventsText !== null) {
    const kernel: CtEvent[] = [];
    for (const line of eventsText.split('\n')) {
      const e = parseEventLine(line);
      if (e) kernel.push(e);
    }
    kernelEvents = kernel.length;
    const kg = group(kernel);
    const og = group(ours);
    const all = new Set([...kg.keys(), ...og.keys()]);
    connections = all.size;
    for (const key of all) {
      const d = streamDiff(kg.get(key) ?? [], og.get(key) ?? []);
      if (d === null) connectionsAgree++;
      else eventMismatches.push({ key, ...d });
    }
  }
  return {
    packets, agree, verdictMismatches, connections, connectionsAgree, kernelEvents, ourEvents: ours.length,
    eventMismatches, keys, captureError,
  };
}

/** The records of a capture whose connection key is `key` (ICMP errors by the flow they quote). */
export function cutToConnection(capture: Uint8Array, keys: (string | null)[], key: string): Uint8Array {
  const reader = readCapture(capture);
  const recs: PcapWriteRecord[] = [];
  let linktype = LINKTYPE_NFLOG;
  for (let i = 0; ; i++) {
    const r = reader.next();
    if (r === null) break;
    linktype = r.linktype;
    if (keys[i] === key) recs.push({ data: r.buf.slice(r.off, r.off + r.len), tsMs: r.tsMs, origLen: r.origLen });
  }
  return encodePcap(linktype, recs);
}

/** Keep only the given record indices of a capture. */
export function selectRecords(capture: Uint8Array, keep: Set<number>): Uint8Array {
  const reader = readCapture(capture);
  const recs: PcapWriteRecord[] = [];
  let linktype = LINKTYPE_NFLOG;
  for (let i = 0; ; i++) {
    const r = reader.next();
    if (r === null) break;
    linktype = r.linktype;
    if (keep.has(i)) recs.push({ data: r.buf.slice(r.off, r.off + r.len), tsMs: r.tsMs, origLen: r.origLen });
  }
  return encodePcap(linktype, recs);
}

/**
 * Cut a verdict disagreement down to the packets of the mismatching packet's connection (its
 * tuple in either direction, and ICMP errors quoting it), up to and including that packet. Only
 * whole connections are cut: dropping packets inside one would change the kernel's answer too.
 * Returns the small capture and whether it still disagrees on its last packet.
 */
export function minimiseVerdict(capture: Uint8Array, sysctls: Record<string, number>, index: number):
{ capture: Uint8Array; packets: number; reproduces: boolean } {
  const full = diffWithKernel(capture, null, sysctls);
  const key = full.keys[index] ?? null;
  const keep = new Set<number>();
  for (let i = 0; i <= index; i++) if (i === index || (key !== null && full.keys[i] === key)) keep.add(i);
  const small = selectRecords(capture, keep);
  const d = diffWithKernel(small, null, sysctls);
  return { capture: small, packets: keep.size, reproduces: d.verdictMismatches.some((m) => m.index === keep.size - 1) };
}
