/**
 * `conntrack-sab replay`: replay a capture and print what conntrack-tools would show.
 * The capture is streamed (a file of any size, `-` or a pipe, gzip too); every output is written
 * as it goes, line by line.
 */
import { closeSync, openSync } from 'node:fs';
import { LineWriter } from './output.js';
import type { EventSink } from '../table/events.js';
import { EVENT_DESTROY, EVENT_NAMES } from '../table/events.js';
import { type ConnEvent, subscribeEvents, type EventSubscription } from '../table/ecache.js';
import { entryJson, eventLine, formatEntry, formatEvent, formatStats, type FormatContext } from '../ops/format.js';
import { TCP_STATE_NAMES } from '../track/proto/tcp.js';
import { FRAG_DONE, FRAG_NAMES } from '../track/verdict.js';
import { PcapFileWriter } from '../input/capture/reader.js';
import { parseNatRules, type NatConfig, type NatInterface, type NatRule } from '../track/nat/rules.js';
import { readFileSync } from 'node:fs';
import type { FragDropped } from '../input/defrag/defrag.js';
import { ConntrackPool } from '../pool/pool.js';
import { IX_OFF, IX_WORDS, type PacketBatch } from '../pool/batch.js';
import { replay, ReplayGc, type ReplayOutcome } from '../ops/replay.js';
import { Conntrack, R_TABLE_FULL } from '../track/core.js';
import { ENTRY_WORDS, E_ID, E_TIMEOUT } from '../table/layout.js';
import { ConntrackTable } from '../table/table.js';
import { parseSysctlAssignment } from '../table/sysctl.js';
import { Packet } from '../input/packet/packet.js';
import { parseFrame } from '../input/packet/parse.js';
import { formatAddr } from '../track/tuple.js';
import { banner, CliError, EXIT_DATA, EXIT_OK, EXIT_USAGE, inputError, isInputError, Progress, TableFullWarning } from './common.js';
import { mark } from '../pool/timeline.js';
import { callerShareFor } from '../pool/ring.js';

export interface ReplayCliOptions {
  perPacket?: string;
  sysctl?: string[];
  dump?: boolean;
  stats?: boolean;
  event?: boolean;
  output?: string;
  json?: boolean;
  max?: number;
  head?: number;
  progress?: boolean;
  /** Packet worker threads (unset or 1: this thread). */
  workers?: number;
  dispatch?: string;
  /** offload (default) or strict (TableOptions.checksum). */
  checksum?: string;
  /** NAT rules (nft syntax) and a rule file; -w: the translated capture. */
  nat?: string[];
  natRules?: string;
  write?: string;
}

/** Fields of a decision the per-packet output shows (a Verdict or a BatchVerdict). */
interface Decided {
  readonly ctstate: string;
  readonly direction: string | null;
  readonly reason: string | null;
  readonly protoState: number;
  readonly drop: boolean;
  /** NAT_REWROTE_* bits (single-thread replays). */
  readonly nat?: number;
}

/** Capture time as seconds since the epoch, to the microsecond (tshark's frame.time_epoch). */
function epochSeconds(tsMs: number): number {
  return Math.round(tsMs * 1000) / 1e6;
}

/**
 * One --per-packet JSON line: `frame` (1-based, as tshark numbers frames), `ts` (capture time,
 * seconds with µs), the decision, the connection's id (`-o id`) and the packet's own tuple.
 */
/** What reassembly reports with a packet (single-thread replay; see README "Fragments"). */
interface FragInfo {
  /** FRAG_NAMES entry, '' for none. */
  frag: string;
  /** Indices of the datagram's fragments when it completed or was dropped with this packet. */
  fragments: number[] | null;
  /** Datagrams dropped meanwhile (timeout, eviction), with their fragments' indices. */
  dropped: readonly FragDropped[];
}

/** The fragment facts of the packet a Conntrack just decided. */
function fragInfo(ct: Conntrack, i: number, frag: number): FragInfo {
  const n = ct.fragTagCount;
  let fragments: number[] | null = null;
  if (n > 0 || frag === FRAG_DONE) {
    fragments = Array.from(ct.fragTags.subarray(0, n));
    if (!fragments.includes(i) && frag === FRAG_DONE) fragments.push(i);
    fragments.sort((a, b) => a - b);
  }
  return { frag: FRAG_NAMES[frag] ?? '', fragments, dropped: ct.fragDropped };
}

function perPacketLine(i: number, tsMs: number, v: Decided, id: number, pkt: Packet | null, f?: FragInfo): string {
  const o: Record<string, unknown> = { frame: i + 1, ts: epochSeconds(tsMs), i, ctstate: v.ctstate, dir: v.direction };
  if (v.reason !== null) o['reason'] = v.reason;
  if (v.protoState >= 0) o['tcpState'] = TCP_STATE_NAMES[v.protoState];
  if (v.drop) o['drop'] = true;
  if (v.nat) o['nat'] = [v.nat & 1 ? 'src' : '', v.nat & 2 ? 'dst' : '', v.nat & 4 ? 'inner' : ''].filter((x) => x !== '');
  if (id !== 0) o['id'] = id;
  if (pkt && pkt.family !== 0) {
    o['proto'] = pkt.l4proto;
    o['src'] = addr(pkt.src, pkt.family);
    o['dst'] = addr(pkt.dst, pkt.family);
    if (pkt.l4proto === 1 || pkt.l4proto === 58) {
      o['type'] = pkt.icmpType;
      o['code'] = pkt.icmpCode;
      if (!pkt.icmpError) o['icmpId'] = pkt.icmpId;
    } else if (pkt.sport !== 0 || pkt.dport !== 0) {
      o['sport'] = pkt.sport;
      o['dport'] = pkt.dport;
    }
  }
  if (f) {
    if (f.frag) o['frag'] = f.frag;
    if (f.fragments) o['fragments'] = f.fragments;
    if (f.dropped.length > 0) o['fragDropped'] = f.dropped.map((d) => ({ reason: d.reason, fragments: d.tags }));
  }
  return JSON.stringify(o) + '\n';
}

const addrWords = new Int32Array(4);
function addr(a: Uint32Array, family: number): string {
  addrWords[0] = a[0]!; addrWords[1] = a[1]!; addrWords[2] = a[2]!; addrWords[3] = a[3]!;
  return formatAddr(addrWords, 0, family);
}

/** Frame index (within the batch) of the packet whose data starts at `off` (offsets grow with the index). */
function indexOfOffset(b: PacketBatch, off: number): number {
  let lo = 0;
  let hi = b.count - 1;
  const base = b.sec.index;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if ((b.u32[base + mid * IX_WORDS + IX_OFF]! >>> 0) <= off) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function checkOptions(opts: ReplayCliOptions): { sysctls: Record<string, number>; fmt: Set<string>; max: number; workers: number; dispatch: 'flow' | 'free'; checksum: 'offload' | 'strict' | undefined } {
  const sysctls: Record<string, number> = {};
  for (const a of opts.sysctl ?? []) {
    try {
      const { def, value } = parseSysctlAssignment(a);
      sysctls[def.name] = value;
    } catch (e) {
      throw new CliError((e as Error).message, EXIT_USAGE);
    }
  }
  const fmt = new Set((opts.output ?? '').split(',').map((s) => s.trim()).filter(Boolean));
  for (const f of fmt) {
    if (!['extended', 'timestamp', 'id', 'json'].includes(f)) throw new CliError(`unknown output format "${f}" (extended, timestamp, id, json)`, EXIT_USAGE);
  }
  const max = opts.max ?? Math.max(65536, sysctls['nf_conntrack_max'] ?? 0);
  if (!Number.isInteger(max) || max < 1) throw new CliError('--max must be a positive integer', EXIT_USAGE);
  if (opts.head !== undefined && (!Number.isInteger(opts.head) || opts.head < 0)) throw new CliError('--head must be a non-negative integer', EXIT_USAGE);
  const workers = opts.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) throw new CliError('--workers must be an integer in 1..64', EXIT_USAGE);
  const dispatch = opts.dispatch ?? 'flow';
  if (dispatch !== 'flow' && dispatch !== 'free') throw new CliError(`--dispatch must be flow or free, got "${dispatch}"`, EXIT_USAGE);
  const checksum = opts.checksum;
  if (checksum !== undefined && checksum !== 'offload' && checksum !== 'strict') throw new CliError(`--checksum must be offload or strict, got "${checksum}"`, EXIT_USAGE);
  return { sysctls, fmt, max, workers, dispatch, checksum };
}

export async function runReplay(capture: string, raw: Record<string, unknown>): Promise<number> {
  try {
    return await replayCommand(capture, raw as ReplayCliOptions);
  } catch (e) {
    if (e instanceof CliError) {
      process.stderr.write(e.code === EXIT_USAGE
        ? `conntrack-sab replay: ${e.message}\nTry 'conntrack-sab replay --help' for more information.\n`
        : `conntrack-sab replay: ${e.message}\n`);
      return e.code;
    }
    throw e;
  }
}

async function replayCommand(capture: string, opts: ReplayCliOptions): Promise<number> {
  mark('cli: replay command');
  const { sysctls, fmt, max, workers, dispatch, checksum } = checkOptions(opts);
  if ((capture === '-' || capture === '/dev/stdin') && process.stdin.isTTY) {
    throw new CliError('refusing to read a capture from a terminal (pipe one in)', EXIT_USAGE);
  }
  const name = capture === '-' ? '(stdin)' : capture;
  // With packet workers, -E reads the table's shared event ring (ecache.ts).
  const ringEvents = workers > 1 && opts.event === true;
  const json = opts.json === true;
  const entriesJson = json || fmt.has('json');
  const eventsJson = json || fmt.has('json');
  const fmtOpts = { extended: fmt.has('extended'), id: fmt.has('id') };
  const stamp = fmt.has('timestamp');

  const out = new LineWriter(1);
  let perPacketFd = -1;
  let pp: LineWriter | null = null;
  if (opts.perPacket) {
    try {
      perPacketFd = openSync(opts.perPacket, 'w');
    } catch (e) {
      throw inputError(opts.perPacket, e);
    }
    pp = new LineWriter(perPacketFd);
  }

  let table: ConntrackTable;
  try {
    table = ConntrackTable.create({
      max, sysctls, ...(checksum ? { checksum } : {}), ...(workers > 1 ? { maxWorkers: Math.max(16, workers + 4) } : {}),
      // Room for the events of a batch (at most a few per packet) between drains.
      // With NAT, a fixed hash key: the port offsets (nat/unique.ts) then repeat from run to run.
      ...((opts.nat?.length ?? 0) > 0 || opts.natRules ? { hashKey: [0x6e617431, 0x7265706c] as [number, number] } : {}),
      ...(ringEvents ? { events: { ring: 1 << 15, destroyRing: 1 << 13 } } : {}),
    });
  } catch (e) {
    throw new CliError((e as Error).message, EXIT_USAGE);
  }
  mark('cli: table created');
  // NAT rules (nat/rules.ts): --nat, --nat-rules FILE.
  let natOn = false;
  {
    let text: string | null = null;
    if (opts.natRules) {
      try {
        text = readFileSync(opts.natRules, 'utf8');
      } catch (e) {
        throw inputError(opts.natRules, e);
      }
    }
    try {
      const rules: (string | NatRule)[] = [...(opts.nat ?? [])];
      let interfaces: NatInterface[] = [];
      if (text !== null) {
        if (text.trimStart().startsWith('{')) {
          // JSON: { "rules": [...], "interfaces": [...] } (setNatRules' argument)
          const cfg = JSON.parse(text) as NatConfig;
          rules.push(...(cfg.rules ?? []));
          interfaces = cfg.interfaces ?? [];
        } else {
          rules.push(...parseNatRules(text));
        }
      }
      if (rules.length > 0) {
        table.setNatRules({ rules, interfaces });
        natOn = true;
      }
    } catch (e) {
      throw new CliError(`NAT rules: ${(e as Error).message}`, EXIT_USAGE);
    }
  }
  // -w: every frame as decided (rewritten in place by NAT), in capture order.
  let writer: PcapFileWriter | null = null;
  let recLinktype = 0, recBuf: Uint8Array | null = null, recOff = 0, recLen = 0;
  const writeFrame = (tsMs: number): void => {
    if (!opts.write || recBuf === null) return;
    if (writer === null) {
      try {
        writer = new PcapFileWriter(opts.write, recLinktype);
      } catch (e) {
        throw inputError(opts.write, e);
      }
    }
    writer.write(recBuf, recOff, recLen, tsMs);
    recBuf = null;
  };
  // The formatters read the table directly.
  const ctx: FormatContext = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl, ext: table.sec.ext };
  let events = 0;
  /** Capture time of the packet being decided (events of that packet carry it). */
  let curTs = 0;
  const writeEvent = (type: number, line: string, tsMs: number): void => {
    events++;
    if (eventsJson) out.write(JSON.stringify({ type: 'event', event: (EVENT_NAMES[type] ?? '?').toLowerCase(), ts: epochSeconds(tsMs), line: line.trimStart() }) + '\n');
    else out.write(line + '\n');
  };
  const sink: EventSink | undefined = opts.event && !ringEvents ? {
    event(type: number, e: number, now: number, flags?: number): void {
      writeEvent(type, formatEvent(ctx, type, e, now, stamp ? curTs : undefined, fmtOpts, flags), curTs);
    },
  } : undefined;

  const progress = new Progress(opts.progress !== false);
  const full = new TableFullWarning('replay', max);
  // Dead entries are swept as the kernel's gc_worker would, once the table gets full.
  const gc = new ReplayGc(table, sink ? (e: number) => sink.event(EVENT_DESTROY, e, table.clock) : null);
  const onProgress = (done: number, total: number, packets: number): void => {
    if (workers === 1) gc.maybeRun(); // between chunks: outside the replay's read-side section
    progress.update(done, total, packets);
  };

  let res: ReplayOutcome;
  let lister: Conntrack;
  try {
    if (workers > 1) {
      // The ring (flow dispatch, no -E, no NAT: pool.ts) lets this thread decide a share of the
      // flows between reading and reporting: N deciding threads are N - 1 workers and this one
      // (one worker isolate fewer to start and warm up), as long as its share is not nil.
      const callerShare = dispatch === 'flow' && !ringEvents && !natOn ? callerShareFor(workers) : 0;
      const pool = new ConntrackPool({ table, workers: callerShare > 0 ? workers - 1 : workers, dispatch });
      mark('cli: pool created');
      const sub: EventSubscription | null = ringEvents ? subscribeEvents(table) : null;
      const pkt = pp ? new Packet() : null;
      const printEvents = (list: ConnEvent[], b: PacketBatch | null, times: Float64Array | null): void => {
        // Capture order: each event carries its frame's offset in the batch data; ring order breaks ties.
        const order = list.map((ev, k) => ({ ev, key: ev.tag >>> 0, k }));
        order.sort((a, c) => a.key - c.key || a.k - c.k);
        for (const { ev } of order) {
          const ts = b && times && b.count > 0 ? times[indexOfOffset(b, ev.tag >>> 0)]! : curTs;
          writeEvent(ev.type, eventLine(ev.type, ev.body(fmtOpts), stamp ? ts : undefined), ts);
        }
      };
      try {
        res = await pool.replay(capture, {
          onPacket: (i, v, tsMs) => {
            curTs = tsMs;
            if (v.drop && v.reason === R_TABLE_FULL) full.drop(i + 1);
            writeFrame(tsMs);
            if (pp) {
              // The frame is still in the batch's data: parse it again for its tuple.
              pp.write(perPacketLine(i, tsMs, v, v.id, pkt, v.frag ? { frag: FRAG_NAMES[v.frag] ?? '', fragments: null, dropped: [] } : undefined));
            }
          },
          ...(pp || opts.write ? {
            onFrame: (linktype: number, buf: Uint8Array, off: number, len: number): void => {
              // The frame as the worker left it in the batch (rewritten by NAT).
              recLinktype = linktype; recBuf = buf; recOff = off; recLen = len;
              if (pkt) parseFrame(linktype, buf, off, len, pkt);
            },
          } : {}),
          // Sweeps with no batch in flight (pool.ts keeps several in flight without -E).
          sweep: { due: (extra: number) => gc.due(extra), run: () => gc.maybeRun() },
          callerShare,
          ...(sub ? { onBatch: (b: PacketBatch, times: Float64Array) => printEvents(sub.poll(), b, times) } : {}),
          onProgress,
        });
      } finally {
        mark('cli: replay done');
        await pool.close();
        mark('cli: pool closed');
      }
      lister = new Conntrack(table);
      if (sub) {
        // DESTROY events parked while the ring was full: deliver them now that workers are gone.
        for (let k = 0; k < 10000; k++) {
          printEvents(sub.poll(), null, null);
          if (lister.retryParkedEvents() === 0) break;
        }
        printEvents(sub.poll(), null, null);
        if (sub.lost > 0) process.stderr.write(`conntrack-sab replay: WARNING: ${sub.lost} events were lost (the event ring overflowed, as with ENOBUFS)\n`);
        sub.close();
      }
    } else {
      let engine: Conntrack | null = null;
      const r = await replay(capture, {
        table,
        onEngine: (c) => { engine = c; },
        ...(sink ? { events: sink } : {}),
        onRecord: (l, b, o, n, tsMs) => {
          curTs = tsMs;
          recLinktype = l; recBuf = b; recOff = o; recLen = n;
        },
        onPacket: (i, v, pkt, tsMs) => {
          if (v.drop && v.reason === R_TABLE_FULL) full.drop(i + 1);
          writeFrame(tsMs);
          if (pp) {
            const id = v.slot >= 0 ? table.i32[table.sec.entries + v.slot * ENTRY_WORDS + E_ID]! >>> 0 : 0;
            pp.write(perPacketLine(i, tsMs, v, id, pkt, engine ? fragInfo(engine, i, v.frag) : undefined));
          }
        },
        onProgress,
      });
      res = r;
      lister = r.conntrack;
      mark('cli: replay done');
      // Datagrams never completed: one closing line (no "i") naming their fragments.
      if (pp && r.fragmentsIncomplete && r.fragmentsIncomplete.length > 0) {
        pp.write(JSON.stringify({ end: true, fragDropped: r.fragmentsIncomplete.map((d) => ({ reason: d.reason, fragments: d.tags })) }) + '\n');
      }
    }
  } catch (e) {
    gc.close();
    progress.stop();
    pp?.flush();
    if (isInputError(e)) throw inputError(capture, e);
    throw e;
  }
  gc.close();
  progress.stop();
  pp?.flush();
  if (perPacketFd >= 0) closeSync(perPacketFd);
  if (opts.write) {
    try {
      (writer ?? new PcapFileWriter(opts.write, 1)).close();
    } catch (e) {
      throw inputError(opts.write, e);
    }
  }

  // -L: the final table, written as it is walked.
  let shown = 0;
  let total = 0;
  if (opts.dump || json) {
    const c = lister;
    const now = res.now;
    const head = opts.head ?? Infinity;
    c.beginBatch();
    c.chains.forEach((e) => {
      if (((table.i32[e + E_TIMEOUT]! - now) | 0) <= 0) return; // expired: conntrack -L skips it
      total++;
      if (shown >= head) return;
      shown++;
      if (entriesJson) out.write(JSON.stringify(json ? { type: 'entry', ...entryJson(ctx, e, now) } : entryJson(ctx, e, now)) + '\n');
      else out.write(formatEntry(ctx, e, now, fmtOpts) + '\n');
    });
    c.endBatch();
  }
  mark('cli: table listed');
  const stats = res.table.stats();
  if (json) {
    out.write(JSON.stringify({
      type: 'summary', capture: name, packets: res.packets, counts: res.counts,
      error: res.error ? { message: res.error.message, offset: res.error.offset } : null,
      entries: total, events: opts.event ? events : undefined, stats: stats.total, sysctls: res.table.sysctls(),
    }) + '\n');
  } else {
    if (opts.dump) {
      out.flush();
      if (!entriesJson) {
        process.stderr.write(banner(shown < total
          ? `${shown} of ${total} flow entries have been shown.`
          : `${shown} flow entries have been shown.`));
      }
    }
    if (opts.stats) out.write(formatStats(stats.perWorker.length ? stats.perWorker : [stats.total]) + '\n');
    if (!opts.dump && !opts.stats && !opts.event) {
      out.write(`${res.packets} packets: ${Object.entries(res.counts).map(([k, v]) => `${k}=${v}`).join(' ')}\n`);
    }
  }
  out.flush();
  if (opts.event && !json) process.stderr.write(banner(`${events} flow events have been shown.`));
  lister.close();
  const fullSummary = full.summary(res.table);
  if (fullSummary) process.stderr.write(fullSummary);
  if (res.error) {
    process.stderr.write(`conntrack-sab replay: ${name}: ${res.error.message} (after ${res.packets} packets)\n`);
    return EXIT_DATA;
  }
  return EXIT_OK;
}
