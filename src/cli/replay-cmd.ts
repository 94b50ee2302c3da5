/** `conntrack-sab replay`: replay a capture and print what conntrack-tools would show. */
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { LineWriter } from './output.js';
import cliProgress from 'cli-progress';
import type { EventSink } from '../table/events.js';
import { type ConnEvent, subscribeEvents, type EventSubscription } from '../table/ecache.js';
import { entryJson, eventLine, formatEntry, formatEvent, formatStats, type EntryJson, type FormatContext } from '../ops/format.js';
import { TCP_STATE_NAMES } from '../track/proto/tcp.js';
import { readCapture, writePcap, type PcapWriteRecord } from '../input/capture/reader.js';
import { parseNatRules, type NatConfig, type NatInterface, type NatRule } from '../track/nat/rules.js';
import { ConntrackPool } from '../pool/pool.js';
import { replay } from '../ops/replay.js';
import { Conntrack } from '../track/core.js';
import { E_TIMEOUT } from '../table/layout.js';
import { ConntrackTable } from '../table/table.js';
import { parseSysctlAssignment } from '../table/sysctl.js';

export interface ReplayCliOptions {
  perPacket?: string;
  sysctl?: string[];
  dump?: boolean;
  stats?: boolean;
  event?: boolean;
  output?: string;
  json?: boolean;
  max?: number;
  progress?: boolean;
  /** Packet worker threads (unset or 1: this thread). */
  workers?: number;
  dispatch?: string;
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

/** One --per-packet JSON line. */
function perPacketLine(i: number, v: Decided, l4proto: number): string {
  const o: Record<string, unknown> = { i, ctstate: v.ctstate, dir: v.direction };
  if (v.reason !== null) o['reason'] = v.reason;
  if (v.protoState >= 0) o['tcpState'] = TCP_STATE_NAMES[v.protoState];
  if (v.drop) o['drop'] = true;
  if (v.nat) o['nat'] = [v.nat & 1 ? 'src' : '', v.nat & 2 ? 'dst' : '', v.nat & 4 ? 'inner' : ''].filter((x) => x !== '');
  if (l4proto) o['proto'] = l4proto;
  return JSON.stringify(o) + '\n';
}

export async function runReplay(capture: string, raw: Record<string, unknown>): Promise<number> {
  const opts = raw as ReplayCliOptions;
  const err = (m: string): number => {
    process.stderr.write(`conntrack-sab replay: ${m}\n`);
    return 2;
  };
  if (!existsSync(capture)) return err(`no such file: ${capture}`);
  if (!statSync(capture).isFile()) return err(`not a file: ${capture}`);
  const sysctls: Record<string, number> = {};
  try {
    for (const a of opts.sysctl ?? []) {
      const { def, value } = parseSysctlAssignment(a);
      sysctls[def.name] = value;
    }
  } catch (e) {
    return err((e as Error).message);
  }
  const fmt = new Set((opts.output ?? '').split(',').map((s) => s.trim()).filter(Boolean));
  for (const f of fmt) if (!['extended', 'timestamp', 'id'].includes(f)) return err(`unknown output format "${f}"`);
  const max = opts.max ?? Math.max(65536, sysctls['nf_conntrack_max'] ?? 0);
  if (!Number.isInteger(max) || max < 1) return err('--max must be a positive integer');

  const workers = opts.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) return err('--workers must be an integer in 1..64');
  const dispatch = opts.dispatch ?? 'flow';
  if (dispatch !== 'flow' && dispatch !== 'free') return err(`--dispatch must be flow or free, got "${dispatch}"`);
  // With packet workers, -E reads the table's shared event ring (ecache.ts).
  const ringEvents = workers > 1 && opts.event === true;

  const file = readFileSync(capture);
  // Pool workers read (and NAT rewrites) frames in place: give them shared memory, so -w can
  // read the translated frames back from it.
  const bytes: Uint8Array = (opts.workers ?? 1) > 1 ? new Uint8Array(new SharedArrayBuffer(file.length)) : file;
  if (bytes !== file) bytes.set(file);
  const out = new LineWriter(1);
  let perPacketFd = -1;
  let pp: LineWriter | null = null;
  if (opts.perPacket) {
    try {
      perPacketFd = openSync(opts.perPacket, 'w');
    } catch (e) {
      return err(`cannot write ${opts.perPacket}: ${(e as Error).message}`);
    }
    pp = new LineWriter(perPacketFd);
  }

  let table: ConntrackTable;
  try {
    table = ConntrackTable.create({
      max, sysctls, ...(workers > 1 ? { maxWorkers: Math.max(16, workers + 4) } : {}),
      // With NAT, a fixed hash key: the port offsets (nat/unique.ts) then repeat from run to run.
      ...((opts.nat?.length ?? 0) > 0 || opts.natRules ? { hashKey: [0x6e617431, 0x7265706c] as [number, number] } : {}),
      // Room for the events of two batches in flight (at most a few per packet) between drains.
      ...(ringEvents ? { events: { ring: 1 << 15, destroyRing: 1 << 13 } } : {}),
    });
  } catch (e) {
    return err((e as Error).message);
  }
  // NAT rules (nat/rules.ts): --nat, --nat-rules FILE.
  try {
    const rules: (string | NatRule)[] = [...(opts.nat ?? [])];
    let interfaces: NatInterface[] = [];
    if (opts.natRules) {
      const text = readFileSync(opts.natRules, 'utf8');
      if (text.trimStart().startsWith('{')) {
        // JSON: { "rules": [...], "interfaces": [...] } (setNatRules' argument)
        const cfg = JSON.parse(text) as NatConfig;
        rules.push(...(cfg.rules ?? []));
        interfaces = cfg.interfaces ?? [];
      } else {
        rules.push(...parseNatRules(text));
      }
    }
    if (rules.length > 0) table.setNatRules({ rules, interfaces });
  } catch (e) {
    return err(`NAT rules: ${(e as Error).message}`);
  }
  // The formatters read the table directly.
  const ctx: FormatContext = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl, ext: table.sec.ext };
  let wallBase = 0; // epoch ms of the clock's zero, for -o timestamp
  try {
    // From the first record, so that events of the very first packet have it too.
    const first = readCapture(bytes).next();
    if (first) wallBase = Math.floor(first.tsMs) - (Math.floor(first.tsMs) >>> 0);
  } catch {
    // A corrupt capture: the replay reports it.
  }
  const eventLines: string[] = [];
  const sink: EventSink | undefined = opts.event ? {
    event(type: number, e: number, now: number, flags?: number): void {
      const line = formatEvent(ctx, type, e, now, fmt.has('timestamp') ? wallBase + (now >>> 0) : undefined, {
        extended: fmt.has('extended'), id: fmt.has('id'),
      }, flags);
      if (opts.json) eventLines.push(line);
      else out.write(line + '\n');
    },
  } : undefined;

  const bar = opts.progress !== false && process.stderr.isTTY && bytes.length > 8 << 20
    ? new cliProgress.SingleBar({ format: 'replay [{bar}] {percentage}% | {value}/{total} MiB', stream: process.stderr }, cliProgress.Presets.shades_classic)
    : null;
  bar?.start(Math.ceil(bytes.length / 1048576), 0);

  let res: { packets: number; counts: Record<string, number>; error: { message: string; offset: number } | null; now: number; table: ConntrackTable };
  let lister: Conntrack;
  if (workers > 1) {
    const pool = new ConntrackPool({ table, workers, dispatch });
    const sub: EventSubscription | null = ringEvents ? subscribeEvents(table) : null;
    const got: ConnEvent[] = [];
    const drain = (): void => {
      if (sub) for (const ev of sub.poll()) got.push(ev);
    };
    try {
      res = await pool.replay(bytes, {
        onPacket: (i, v, tsMs) => {
          if (wallBase === 0) wallBase = Math.floor(tsMs) - (Math.floor(tsMs) >>> 0);
          if (pp) pp.write(perPacketLine(i, v, v.l4proto));
        },
        onProgress: (done: number) => {
          drain(); // once per batch, while the next one is decided
          bar?.update(Math.ceil(done / 1048576));
        },
      });
    } finally {
      await pool.close();
    }
    lister = new Conntrack(table);
    if (sub) {
      // DESTROY events parked while the ring was full: deliver them now that workers are gone.
      for (let k = 0; k < 10000; k++) {
        drain();
        if (lister.retryParkedEvents() === 0) break;
      }
      drain();
      if (sub.lost > 0) process.stderr.write(`conntrack-sab replay: WARNING: ${sub.lost} events were lost (the event ring overflowed, as with ENOBUFS)\n`);
      sub.close();
      // Capture order: each event carries its packet's offset in the capture; ring order breaks ties.
      const order = got.map((ev, k) => ({ ev, key: ev.tag >>> 0, k }));
      order.sort((a, b) => a.key - b.key || a.k - b.k);
      for (const { ev } of order) {
        const line = eventLine(ev.type, ev.body({ extended: fmt.has('extended'), id: fmt.has('id') }),
          fmt.has('timestamp') ? wallBase + (ev.now >>> 0) : undefined);
        if (opts.json) eventLines.push(line);
        else out.write(line + '\n');
      }
    }
  } else {
    const r = replay(bytes, {
      table,
      ...(sink ? { events: sink } : {}),
      onPacket: (i, v, pkt, tsMs) => {
        if (wallBase === 0) wallBase = Math.floor(tsMs) - (Math.floor(tsMs) >>> 0);
        if (pp) pp.write(perPacketLine(i, v, pkt.l4proto));
      },
      ...(bar ? { onProgress: (done: number) => bar.update(Math.ceil(done / 1048576)) } : {}),
    });
    res = r;
    lister = r.conntrack;
  }
  bar?.stop();
  pp?.flush();
  if (perPacketFd >= 0) closeSync(perPacketFd);
  if (opts.write) {
    // The replay rewrote the frames in place in `bytes`: read them back and save them.
    try {
      const recs: PcapWriteRecord[] = [];
      let lt = -1;
      for (const rec of readCapture(bytes)) {
        if (lt < 0) lt = rec.linktype;
        recs.push({ data: rec.buf.slice(rec.off, rec.off + rec.len), tsMs: rec.tsMs, origLen: rec.origLen });
      }
      writePcap(opts.write, lt < 0 ? 1 : lt, recs);
    } catch (e) {
      return err(`cannot write ${opts.write}: ${(e as Error).message}`);
    }
  }

  const entries: EntryJson[] = [];
  const lines: string[] = [];
  if (opts.dump || opts.json) {
    const c = lister;
    const now = res.now;
    c.beginBatch();
    c.chains.forEach((e) => {
      if (((table.i32[e + E_TIMEOUT]! - now) | 0) <= 0) return; // expired: conntrack -L skips it
      if (opts.json) entries.push(entryJson(ctx, e, now));
      else lines.push(formatEntry(ctx, e, now, { extended: fmt.has('extended'), id: fmt.has('id') }));
    });
    c.endBatch();
  }
  const stats = res.table.stats();
  if (opts.json) {
    out.write(JSON.stringify({
      capture, packets: res.packets, counts: res.counts,
      error: res.error ? { message: res.error.message, offset: res.error.offset } : null,
      entries, stats: stats.total, sysctls: res.table.sysctls(),
      ...(opts.event ? { events: eventLines } : {}),
    }) + '\n');
  } else {
    if (opts.dump) {
      for (const l of lines) out.write(l + '\n');
      out.flush();
      process.stderr.write(`conntrack v1.4.8 (conntrack-sab): ${lines.length} flow entries have been shown.\n`);
    }
    if (opts.stats) out.write(formatStats(stats.perWorker.length ? stats.perWorker : [stats.total]) + '\n');
    if (!opts.dump && !opts.stats && !opts.event) {
      out.write(`${res.packets} packets: ${Object.entries(res.counts).map(([k, v]) => `${k}=${v}`).join(' ')}\n`);
    }
  }
  out.flush();
  lister.close();
  if (res.error) {
    process.stderr.write(`conntrack-sab replay: ${capture}: ${res.error.message} (after ${res.packets} packets)\n`);
    return 1;
  }
  return 0;
}
