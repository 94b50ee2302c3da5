/**
 * Comparing our tracking with the kernel's, for a fixture recorded by scripts/oracle/record.sh:
 *  - capture.pcap: an NFLOG capture whose log prefix (`ct:<state>[:<direction>]`) is the
 *    kernel's verdict for every forwarded packet;
 *  - events.txt: `conntrack -E -o timestamp,extended,id` during the recording;
 *  - table.txt: `conntrack -L -o extended` right after the last packet.
 * One replay of the capture is compared with all three: the verdict of every packet; every
 * NEW/UPDATE event in order (type, TCP/SCTP state, ASSURED/UNREPLIED, tuples, timeout); every
 * DESTROY (which connection, state, flags, and the timeout left when it was removed early); and
 * the final table (same fields, remaining timeouts within the dump's one-second rounding).
 * Used by test/kernel-fixtures.test.ts and scripts/oracle/compare.mjs.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LINKTYPE_NFLOG, Packet } from '../input/packet/packet.js';
import { nflogPrefix, parseFrame } from '../input/packet/parse.js';
import { readCapture } from '../input/capture/reader.js';
import type { Conntrack } from '../track/core.js';
import { FRAG_DONE, FRAG_DROP, FRAG_HELD, FRAG_NONE, FRAG_PASS } from '../track/verdict.js';
import { replay } from './replay.js';
import { TCP_STATE_NAMES } from '../track/proto/tcp.js';
import type { EventSink } from '../table/events.js';
import { E_TIMEOUT } from '../table/layout.js';
import { ConntrackTable } from '../table/table.js';
import { formatEntry, formatEvent, type FormatContext } from './format.js';

/** The kernel's verdict for one packet, read from an NFLOG prefix. */
export interface KernelLabel {
  ctstate: string;
  dir: string | null;
}

/** Parse a recorder prefix such as `ct:established:reply` or `ct:invalid`; null if not ours. */
export function parseLabel(prefix: string | null): KernelLabel | null {
  if (prefix === null || !prefix.startsWith('ct:')) return null;
  const [, state, dir] = prefix.trim().split(':');
  if (!state) return null;
  return { ctstate: state, dir: dir ?? null };
}

/** One packet where we decided differently from the kernel. */
export interface Mismatch {
  index: number;
  expected: KernelLabel | null;
  got: KernelLabel;
  reason: string | null;
  tcpState: string | null;
  tsMs: number;
}

/** The result of compareWithKernel(): packets compared, and the mismatches. */
export interface OracleComparison {
  packets: number;
  /** Packets carrying a kernel label. */
  labelled: number;
  agree: number;
  mismatches: Mismatch[];
  captureError: string | null;
}

/** One `conntrack -L` / `conntrack -E` line, parsed. */
export interface CtLine {
  /** NEW, UPDATE, DESTROY; null for a table line. */
  type: string | null;
  /** `-o timestamp` prefix, epoch ms; null without one. */
  tsMs: number | null;
  l3: string;
  l4: number;
  /** Seconds left; null when the line prints none (DESTROY of an expired entry). */
  timeout: number | null;
  /** TCP / SCTP state; null when the line prints none (other protocols, UPDATE without a state change). */
  state: string | null;
  orig: string;
  reply: string;
  unreplied: boolean;
  assured: boolean;
  id: number | null;
  /** The connection: layer 3 and 4 and the original tuple. */
  key: string;
}

const FLAG_RE = /^\[([A-Z_]+)\]$/;

/** Parse a conntrack-tools line (`-o extended`, optionally `-o timestamp,id`). Throws on junk. */
export function parseCtLine(line: string): CtLine {
  let rest = line.trim();
  let tsMs: number | null = null;
  const ts = /^\[(\d+\.\d+)\]\s+/.exec(rest);
  if (ts) {
    tsMs = Number(ts[1]) * 1000;
    rest = rest.slice(ts[0].length);
  }
  let type: string | null = null;
  const ty = /^\[(NEW|UPDATE|DESTROY)\]\s+/.exec(rest);
  if (ty) {
    type = ty[1]!;
    rest = rest.slice(ty[0].length);
  }
  const tok = rest.split(/\s+/);
  let i = 0;
  const l3 = tok[i++]!;
  if (l3 !== 'ipv4' && l3 !== 'ipv6') throw new Error(`not an extended conntrack line: ${line}`);
  i++; // layer-3 number
  i++; // layer-4 name
  const l4 = Number(tok[i++]);
  let timeout: number | null = null;
  if (/^\d+$/.test(tok[i] ?? '')) timeout = Number(tok[i++]);
  let state: string | null = null;
  if (/^[A-Z_0-9]+$/.test(tok[i] ?? '')) state = tok[i++]!;
  const tuples: string[][] = [];
  let unreplied = false;
  let assured = false;
  let id: number | null = null;
  for (; i < tok.length; i++) {
    const t = tok[i]!;
    const flag = FLAG_RE.exec(t);
    if (flag) {
      if (flag[1] === 'UNREPLIED') unreplied = true;
      else if (flag[1] === 'ASSURED') assured = true;
      continue;
    }
    const eq = t.indexOf('=');
    if (eq < 0) throw new Error(`unexpected token "${t}" in: ${line}`);
    const k = t.slice(0, eq);
    if (k === 'src') tuples.push([]);
    if (k === 'id' && tuples.length === 2) {
      id = Number(t.slice(eq + 1));
      continue;
    }
    // Counters, mark, zone, use, labels: not part of the comparison.
    if (['packets', 'bytes', 'mark', 'use', 'zone', 'delta-time', 'labels'].includes(k)) continue;
    if (tuples.length === 0) throw new Error(`no tuple before "${t}" in: ${line}`);
    tuples[tuples.length - 1]!.push(t);
  }
  if (tuples.length !== 2) throw new Error(`expected two tuples in: ${line}`);
  const orig = tuples[0]!.join(' ');
  return {
    type, tsMs, l3, l4, timeout, state, orig, reply: tuples[1]!.join(' '), unreplied, assured, id,
    key: `${l3} ${l4} ${orig}`,
  };
}

/** A difference between the kernel's recording and our replay, in words. */
export interface Difference {
  /** `packet`, `event`, `destroy` or `table`. */
  part: 'packet' | 'event' | 'destroy' | 'table';
  /** The connection (layer 3, 4, original tuple) or `#<packet index>`. */
  what: string;
  /** The field that differs (ctstate, state, timeout, assured, ...). */
  field: string;
  kernel: string;
  ours: string;
}

/** The result of compareFixture(): verdicts, events and the final table against a kernel recording. */
export interface FixtureComparison extends OracleComparison {
  /** NEW/UPDATE events compared (kernel's count). */
  events: number;
  /** Connections whose DESTROY was compared. */
  destroys: number;
  /** Table entries compared (kernel's count). */
  tableEntries: number;
  /** When the kernel's table was dumped, as far as its timeouts tell (epoch ms interval). */
  dumpWindowMs: [number, number];
  /** Every difference found, packets first. */
  differences: Difference[];
}

export interface FixtureFiles {
  capture: Uint8Array;
  sysctls?: Record<string, number>;
  /** events.txt contents, if recorded. */
  events?: string;
  /** table.txt contents, if recorded. */
  table?: string;
}

/** The dump happened at most this long after the last packet (record.sh dumps right after the traffic). */
const MAX_DUMP_DELAY_MS = 3000;
/** conntrack -E ran this long after the dump (stop_capture's 1 s, then 0.2 s): GC may report entries expiring meanwhile. */
const EVENTS_AFTER_DUMP_MS = 2500;
/** A timeout printed in whole seconds (the kernel rounds jiffies down, so do we): one second either way. */
const ROUNDING_S = 1;

function within(a: number | null, b: number | null): boolean {
  if (a === null || b === null) return a === b;
  return Math.abs(a - b) <= ROUNDING_S;
}

/** Event lines of events.txt that belong to the capture: after a `# conntrack -F` marker if any. */
function kernelEventLines(text: string): CtLine[] {
  const lines = text.split('\n');
  const mark = lines.findIndex((l) => l.startsWith('# conntrack -F'));
  const before = new Set<number>(); // ids created before the flush: their late DESTROYs are the flush's
  if (mark >= 0) {
    for (const l of lines.slice(0, mark)) if (l.trim() && !l.startsWith('#')) before.add(parseCtLine(l).id ?? -1);
  }
  const out: CtLine[] = [];
  for (const l of lines.slice(mark + 1)) {
    if (!l.trim() || l.startsWith('#')) continue;
    const p = parseCtLine(l);
    if (p.type === 'DESTROY' && p.id !== null && before.has(p.id) && !out.some((q) => q.id === p.id)) continue;
    out.push(p);
  }
  return out;
}

/** Names each event's connection instance: key#n, n counting the key's NEW events. */
function instances(evs: CtLine[]): string[] {
  const gen = new Map<string, number>();
  return evs.map((ev) => {
    if (ev.type === 'NEW') gen.set(ev.key, (gen.get(ev.key) ?? 0) + 1);
    return `${ev.key}#${gen.get(ev.key) ?? 0}`;
  });
}

function flagsText(l: CtLine): string {
  return `${l.unreplied ? 'UNREPLIED' : 'replied'},${l.assured ? 'ASSURED' : 'not-assured'}`;
}

/** Replay a fixture's capture once and compare everything the kernel recorded. */
export function compareFixture(f: FixtureFiles): FixtureComparison {
  const table = ConntrackTable.create({ sysctls: f.sysctls ?? {} });
  const ctx: FormatContext = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl, ext: table.sec.ext };
  const ours: CtLine[] = [];
  const sink: EventSink = {
    event(type: number, e: number, now: number, flags?: number): void {
      ours.push(parseCtLine(formatEvent(ctx, type, e, now, undefined, { extended: true, id: true }, flags)));
    },
  };
  let labelled = 0;
  let agree = 0;
  const mismatches: Mismatch[] = [];
  let expected: KernelLabel | null = null;
  const res = replay(f.capture, {
    table,
    events: sink,
    onPacket: (index, v, _pkt, tsMs) => {
      const got: KernelLabel = { ctstate: v.ctstate, dir: v.direction };
      if (expected === null) {
        mismatches.push({ index, expected: null, got, reason: v.reason, tcpState: null, tsMs });
        return;
      }
      labelled++;
      if (expected.ctstate === got.ctstate && expected.dir === got.dir) {
        agree++;
      } else {
        mismatches.push({
          index, expected, got, reason: v.reason,
          tcpState: v.protoState >= 0 ? TCP_STATE_NAMES[v.protoState] ?? null : null, tsMs,
        });
      }
    },
    onRecord: (linktype, buf, off, len) => {
      expected = linktype === LINKTYPE_NFLOG ? parseLabel(nflogPrefix(buf, off, len)) : null;
    },
  });
  const ct = res.conntrack;
  const differences: Difference[] = mismatches.map((m) => ({
    part: 'packet', what: `#${m.index}`, field: 'ctstate/dir',
    kernel: m.expected ? `${m.expected.ctstate}/${m.expected.dir}` : 'unlabelled',
    ours: `${m.got.ctstate}/${m.got.dir}${m.reason ? ` (${m.reason})` : ''}${m.tcpState ? ` [${m.tcpState}]` : ''}`,
  }));

  // Our table after the last packet, with each entry's deadline in epoch ms.
  const last = res.lastTsMs;
  const alive = new Map<string, { line: CtLine; deadline: number }>();
  const expired = new Map<string, { line: CtLine; deadline: number }>(); // still hashed, timed out
  ct.beginBatch();
  ct.chains.forEach((e) => {
    const left = (table.i32[e + E_TIMEOUT]! - res.now) | 0;
    if (left <= 0) {
      const line = parseCtLine(formatEntry(ctx, e, res.now, { extended: true, id: true }));
      expired.set(line.key, { line, deadline: last + left });
      return;
    }
    const line = parseCtLine(formatEntry(ctx, e, res.now, { extended: true, id: true }));
    alive.set(line.key, { line, deadline: last + left });
  });
  ct.endBatch();
  ct.close();

  // When was the kernel's table dumped? Each entry's printed timeout bounds it, given that our
  // deadline is right; an empty intersection means some timeout disagrees.
  let lo = last;
  let hi = last + MAX_DUMP_DELAY_MS;
  const kTable = (f.table ?? '').split('\n').filter((l) => l.trim()).map(parseCtLine);
  for (const k of kTable) {
    const o = alive.get(k.key);
    if (!o || k.timeout === null) continue;
    const l = o.deadline - (k.timeout + 1 + ROUNDING_S) * 1000;
    const h = o.deadline - (k.timeout - ROUNDING_S) * 1000;
    if (l > hi || h < lo) {
      differences.push({
        part: 'table', what: k.key, field: 'timeout', kernel: `${k.timeout} s at the dump`,
        ours: `${Math.round((o.deadline - last) / 1000)} s after the last packet, outside the dump window [${lo - last}, ${hi - last}] ms`,
      });
      continue;
    }
    lo = Math.max(lo, l);
    hi = Math.min(hi, h);
  }
  const dump = lo;

  // The final table: same connections, states, flags, reply tuples.
  if (f.table !== undefined) {
    const seen = new Set<string>();
    for (const k of kTable) {
      seen.add(k.key);
      const o = alive.get(k.key);
      if (!o) {
        differences.push({ part: 'table', what: k.key, field: 'present', kernel: 'listed', ours: 'absent (expired or never created)' });
        continue;
      }
      if (o.deadline <= lo) {
        differences.push({ part: 'table', what: k.key, field: 'present', kernel: `listed with ${k.timeout} s`, ours: 'expired before the dump' });
      }
      if (k.state !== o.line.state) differences.push({ part: 'table', what: k.key, field: 'state', kernel: String(k.state), ours: String(o.line.state) });
      if (k.reply !== o.line.reply) differences.push({ part: 'table', what: k.key, field: 'reply tuple', kernel: k.reply, ours: o.line.reply });
      if (flagsText(k) !== flagsText(o.line)) differences.push({ part: 'table', what: k.key, field: 'flags', kernel: flagsText(k), ours: flagsText(o.line) });
    }
    for (const [key, o] of alive) {
      if (seen.has(key) || o.deadline <= hi) continue; // ours may have expired by the dump
      differences.push({
        part: 'table', what: key, field: 'present', kernel: 'absent',
        ours: `${Math.floor((o.deadline - dump) / 1000)} s left at the dump (${o.line.state ?? ''} ${flagsText(o.line)})`,
      });
    }
  }

  // Events. NEW/UPDATE come from packets; the kernel's router decides on several CPUs, so
  // events of different connections may interleave differently: compare each connection
  // instance's own sequence, in order.
  let events = 0;
  let destroys = 0;
  if (f.events !== undefined) {
    const kEv = kernelEventLines(f.events);
    const kInst = instances(kEv);
    const oInst = instances(ours);
    const seqs = (evs: CtLine[], inst: string[]): Map<string, CtLine[]> => {
      const m = new Map<string, CtLine[]>();
      evs.forEach((l, j) => {
        if (l.type === 'DESTROY') return;
        const a = m.get(inst[j]!);
        if (a) a.push(l);
        else m.set(inst[j]!, [l]);
      });
      return m;
    };
    const kNU = seqs(kEv, kInst);
    const oNU = seqs(ours, oInst);
    const text = (x: CtLine | undefined): string =>
      x ? `${x.type} ${x.timeout ?? '-'} ${x.state ?? '-'} ${flagsText(x)}${x.type === 'NEW' ? '' : ` reply ${x.reply}`}` : 'nothing';
    for (const inst of new Set([...kNU.keys(), ...oNU.keys()])) {
      const ks = kNU.get(inst) ?? [];
      const os = oNU.get(inst) ?? [];
      events += ks.length;
      for (let j = 0; j < Math.max(ks.length, os.length); j++) {
        const k = ks[j];
        const o = os[j];
        let field = '';
        if (!k || !o || k.type !== o.type) field = 'event';
        else if (k.state !== o.state) field = 'state';
        else if (flagsText(k) !== flagsText(o)) field = 'flags';
        else if (!within(k.timeout, o.timeout)) field = 'timeout';
        else if (k.reply !== o.reply) field = 'reply tuple';
        if (field) {
          differences.push({ part: 'event', what: `${inst} event ${j + 1}`, field, kernel: text(k), ours: text(o) });
          break; // the rest of this connection is shifted: the first difference is the one to read
        }
      }
    }

    // DESTROY: when the kernel's GC noticed an expiry is timing; which connection instances were
    // destroyed, in which state, and what was left of an early removal, is not.
    const kD = new Map<string, CtLine>();
    kEv.forEach((l, j) => { if (l.type === 'DESTROY') kD.set(kInst[j]!, l); });
    const oD = new Map<string, CtLine>();
    ours.forEach((l, j) => { if (l.type === 'DESTROY') oD.set(oInst[j]!, l); });
    // Still in our table after the last packet: expired by the dump, or by the end of conntrack -E?
    const lastInst = new Map<string, string>();
    oInst.forEach((inst, j) => lastInst.set(ours[j]!.key, inst));
    for (const [key, o] of [...expired, ...alive]) {
      const inst = lastInst.get(key) ?? `${key}#0`;
      if (oD.has(inst)) continue;
      if (o.deadline <= lo) oD.set(inst, { ...o.line, type: 'DESTROY', timeout: null });
      else if (o.deadline <= hi + EVENTS_AFTER_DUMP_MS && kD.has(inst)) oD.set(inst, { ...o.line, type: 'DESTROY', timeout: null });
    }
    const all = new Set([...kD.keys(), ...oD.keys()]);
    destroys = all.size;
    const dtext = (x: CtLine | undefined): string => x ? `DESTROY ${x.timeout ?? '-'} ${x.state ?? '-'} ${flagsText(x)}` : 'no DESTROY';
    for (const inst of all) {
      const k = kD.get(inst);
      const o = oD.get(inst);
      if (!k || !o) {
        differences.push({ part: 'destroy', what: inst, field: 'destroyed', kernel: dtext(k), ours: dtext(o) });
        continue;
      }
      if (k.state !== o.state) differences.push({ part: 'destroy', what: inst, field: 'state', kernel: dtext(k), ours: dtext(o) });
      if (flagsText(k) !== flagsText(o)) differences.push({ part: 'destroy', what: inst, field: 'flags', kernel: dtext(k), ours: dtext(o) });
      if (!within(k.timeout, o.timeout)) differences.push({ part: 'destroy', what: inst, field: 'timeout left', kernel: dtext(k), ours: dtext(o) });
    }
  }

  return {
    packets: res.packets, labelled, agree, mismatches,
    captureError: res.error ? res.error.message : null,
    events, destroys, tableEntries: kTable.length, dumpWindowMs: [lo - last, hi - last], differences,
  };
}

/** compareFixture for a fixture folder (capture.pcap, meta.json, events.txt, table.txt). */
export function compareFixtureDir(dir: string): FixtureComparison & { meta: FixtureMeta } {
  const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as FixtureMeta;
  const opt = (name: string): string | undefined => existsSync(join(dir, name)) ? readFileSync(join(dir, name), 'utf8') : undefined;
  const events = opt('events.txt');
  const table = opt('table.txt');
  return {
    meta,
    ...compareFixture({
      capture: readFileSync(join(dir, 'capture.pcap')), sysctls: meta.sysctls ?? {},
      ...(events !== undefined ? { events } : {}), ...(table !== undefined ? { table } : {}),
    }),
  };
}

export interface FixtureMeta {
  name?: string;
  sysctls?: Record<string, number>;
  packets?: number;
  nft_logged?: number;
  capture_problems?: unknown;
}

/** One line per difference, for test messages and the oracle script. */
export function formatDifference(d: Difference): string {
  return `${d.part} ${d.what}: ${d.field}: kernel ${d.kernel} | ours ${d.ours}`;
}

/** Replay an NFLOG capture and compare each packet's decision with the kernel's label. */
export function compareWithKernel(bytes: Uint8Array, sysctls: Record<string, number> = {}): OracleComparison {
  const r = compareFixture({ capture: bytes, sysctls });
  return { packets: r.packets, labelled: r.labelled, agree: r.agree, mismatches: r.mismatches, captureError: r.captureError };
}

// ---------------------------------------------------------------------------------------------
// Fragments: the router's ingress capture (wire.pcap, fragments as they arrived) against the
// NFLOG labels of the reassembled datagrams (capture.pcap). The kernel logs each datagram once,
// when FORWARD sees it whole; we decide it on the fragment that completes it.

/** Identity of an IP packet for matching: family, addresses, protocol and the layer-4 bytes. */
function packetKey(pkt: Packet): string {
  let h = 0x811c9dc5;
  const b = pkt.buf;
  const end = pkt.l4off + pkt.l4len;
  for (let k = pkt.l4off; k < end; k++) h = Math.imul(h ^ b[k]!, 0x01000193);
  return `${pkt.family}|${pkt.src.join('.')}|${pkt.dst.join('.')}|${pkt.l4proto}|${pkt.l4len}|${h >>> 0}`;
}

/** The result of compareWireWithKernel(): fragments on the wire against the kernel's labels of the reassembled datagrams. */
export interface WireComparison {
  /** Packets (fragments included) in the wire capture. */
  wirePackets: number;
  /** Fragments among them. */
  fragments: number;
  /** Datagrams the kernel logged (NFLOG records). */
  kernelDatagrams: number;
  /** Kernel records matched by one of our decided packets / datagrams, and of those, agreeing. */
  matched: number;
  agree: number;
  /** Fragments whose datagram's verdict (ours, reported on its completing fragment) agrees. */
  fragmentsAgree: number;
  /** Fragments we held or dropped whose datagram the kernel never logged either. */
  fragmentsUnlogged: number;
  mismatches: string[];
}

/**
 * Replay `wire` (with defragmentation) and compare each decided packet or reassembled datagram
 * with the kernel's label of the same packet in `nflog`, matched by content in order. Every
 * kernel record must be matched and agree, nothing we decided may be missing from the kernel's
 * log, and fragments we held or dropped must belong to datagrams the kernel did not log.
 */
export function compareWireWithKernel(wire: Uint8Array, nflog: Uint8Array, sysctls: Record<string, number> = {}): WireComparison {
  // The kernel's records: key -> labels in order.
  const kernel = new Map<string, KernelLabel[]>();
  let kernelDatagrams = 0;
  const kpkt = new Packet();
  const reader = readCapture(nflog);
  for (let rec = reader.next(); rec !== null; rec = reader.next()) {
    parseFrame(rec.linktype, rec.buf, rec.off, rec.len, kpkt);
    const label = rec.linktype === LINKTYPE_NFLOG ? parseLabel(nflogPrefix(rec.buf, rec.off, rec.len)) : null;
    if (!label) continue;
    kernelDatagrams++;
    const k = packetKey(kpkt);
    const list = kernel.get(k);
    if (list) list.push(label);
    else kernel.set(k, [label]);
  }
  const mismatches: string[] = [];
  let matched = 0;
  let agree = 0;
  let fragments = 0;
  let fragmentsAgree = 0;
  let fragmentsUnlogged = 0;
  const pending = new Set<number>(); // fragments held, not yet resolved
  let engine: Conntrack | null = null;
  const res = replay(wire, {
    tableOptions: { sysctls },
    onEngine: (c) => { engine = c; },
    onPacket: (index, v, pkt) => {
      const ct = engine!;
      for (const d of ct.fragDropped) for (const tg of d.tags) if (pending.delete(tg)) fragmentsUnlogged++;
      if (v.frag !== FRAG_NONE) fragments++;
      if (v.frag === FRAG_HELD) { pending.add(index); return; }
      const others = Array.from(ct.fragTags.subarray(0, ct.fragTagCount)).filter((x) => x !== index);
      if (v.frag === FRAG_DROP) {
        for (const tg of others) if (pending.delete(tg)) fragmentsUnlogged++;
        fragmentsUnlogged++;
        return;
      }
      const key = packetKey(pkt);
      const list = kernel.get(key);
      const got: KernelLabel = { ctstate: v.ctstate, dir: v.direction };
      if (!list || list.length === 0) {
        mismatches.push(`#${index}: ours ${got.ctstate}/${got.dir}${v.reason ? ` (${v.reason})` : ''}, not in the kernel's log`);
        return;
      }
      const exp = list.shift()!;
      matched++;
      const ok = exp.ctstate === got.ctstate && exp.dir === got.dir;
      if (ok) agree++;
      else mismatches.push(`#${index}: kernel ${exp.ctstate}/${exp.dir}, ours ${got.ctstate}/${got.dir}${v.reason ? ` (${v.reason})` : ''}`);
      if (v.frag === FRAG_DONE) {
        const n = others.length + 1;
        for (const tg of others) pending.delete(tg);
        if (ok) fragmentsAgree += n;
      } else if (v.frag === FRAG_PASS) {
        // Not reassembled (IPv6, length not a multiple of 8): the kernel logs the fragment itself.
        for (const tg of others) if (pending.delete(tg)) fragmentsUnlogged++;
        if (ok) fragmentsAgree++;
      }
    },
  });
  for (const d of res.fragmentsIncomplete ?? []) for (const tg of d.tags) if (pending.delete(tg)) fragmentsUnlogged++;
  res.conntrack.close();
  for (const [k, list] of kernel) for (const l of list) mismatches.push(`kernel ${l.ctstate}/${l.dir} for ${k}: no packet of ours`);
  if (res.error) mismatches.push(`wire capture: ${res.error.message}`);
  return { wirePackets: res.packets, fragments, kernelDatagrams, matched, agree, fragmentsAgree, fragmentsUnlogged, mismatches };
}
