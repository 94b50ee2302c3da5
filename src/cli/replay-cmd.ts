/** `conntrack-sab replay`: replay a capture and print what conntrack-tools would show. */
import { closeSync, existsSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import cliProgress from 'cli-progress';
import type { EventSink } from '../events.js';
import { entryJson, formatEntry, formatEvent, formatStats, type EntryJson } from '../format.js';
import type { TrackerContext } from '../proto/l4proto.js';
import { TCP_STATE_NAMES } from '../proto/tcp.js';
import { replay } from '../replay.js';
import { E_TIMEOUT } from '../layout.js';
import { ConntrackTable } from '../table.js';
import { parseSysctlAssignment } from '../sysctl.js';

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
}

/** Buffered writes to a file descriptor. */
class LineWriter {
  private parts: string[] = [];
  private size = 0;
  constructor(private readonly fd: number) {}
  write(s: string): void {
    this.parts.push(s);
    this.size += s.length;
    if (this.size > 1 << 16) this.flush();
  }
  flush(): void {
    if (this.parts.length) writeSync(this.fd, this.parts.join(''));
    this.parts = [];
    this.size = 0;
  }
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

  const bytes = readFileSync(capture);
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
    table = ConntrackTable.create({ max, sysctls });
  } catch (e) {
    return err((e as Error).message);
  }
  // The formatters read the table directly.
  const ctx: TrackerContext = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl };
  let wallBase = 0; // epoch ms of the clock's zero, for -o timestamp
  const eventLines: string[] = [];
  const sink: EventSink | undefined = opts.event ? {
    event(type: number, e: number, now: number): void {
      const line = formatEvent(ctx, type, e, now, fmt.has('timestamp') ? wallBase + (now >>> 0) : undefined, {
        extended: fmt.has('extended'), id: fmt.has('id'),
      });
      if (opts.json) eventLines.push(line);
      else out.write(line + '\n');
    },
  } : undefined;

  const bar = opts.progress !== false && process.stderr.isTTY && bytes.length > 8 << 20
    ? new cliProgress.SingleBar({ format: 'replay [{bar}] {percentage}% | {value}/{total} MiB', stream: process.stderr }, cliProgress.Presets.shades_classic)
    : null;
  bar?.start(Math.ceil(bytes.length / 1048576), 0);

  const res = replay(bytes, {
    table,
    ...(sink ? { events: sink } : {}),
    onPacket: (i, v, pkt, tsMs) => {
      if (wallBase === 0) wallBase = Math.floor(tsMs) - (Math.floor(tsMs) >>> 0);
      if (pp) {
        const o: Record<string, unknown> = { i, ctstate: v.ctstate, dir: v.direction };
        if (v.reason !== null) o['reason'] = v.reason;
        if (v.protoState >= 0) o['tcpState'] = TCP_STATE_NAMES[v.protoState];
        if (v.drop) o['drop'] = true;
        if (pkt.l4proto) o['proto'] = pkt.l4proto;
        pp.write(JSON.stringify(o) + '\n');
      }
    },
    ...(bar ? { onProgress: (done: number) => bar.update(Math.ceil(done / 1048576)) } : {}),
  });
  bar?.stop();
  pp?.flush();
  if (perPacketFd >= 0) closeSync(perPacketFd);

  const entries: EntryJson[] = [];
  const lines: string[] = [];
  if (opts.dump || opts.json) {
    const c = res.conntrack;
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
  res.conntrack.close();
  if (res.error) {
    process.stderr.write(`conntrack-sab replay: ${capture}: ${res.error.message} (after ${res.packets} packets)\n`);
    return 1;
  }
  return 0;
}
