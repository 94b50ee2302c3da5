/**
 * `conntrack-sab nfqueue`: decide live traffic from the kernel's NFQUEUE queues, one packet
 * worker per queue, on one shared table with the GC worker. Runs until SIGINT/SIGTERM (or
 * --duration), then gives verdicts for every packet it holds and prints what replay prints.
 */
import { Option, type Command } from 'commander';
import { ConntrackTable } from '../table/table.js';
import { parseSysctlAssignment } from '../table/sysctl.js';
import { subscribeEvents, type EventSubscription } from '../table/ecache.js';
import { E_TIMEOUT } from '../table/layout.js';
import { entryJson, eventLine, formatEntry, formatStats, type EntryJson, type FormatContext } from '../ops/format.js';
import { prometheusText } from '../ops/metrics.js';
import { saveSnapshotFile } from '../ops/snapshot.js';
import { Policy, type PolicySpec } from '../ops/policy.js';
import { Conntrack } from '../track/core.js';
import { LiveQueues, parseQueues, type LiveMode } from '../input/live/live.js';
import { LineWriter } from './output.js';

export interface NfqueueCliOptions {
  queues?: string;
  /** `monitor`: interfaces to read passively (comma separated). */
  interface?: string;
  shadow?: boolean;
  enforce?: boolean;
  policy?: string;
  event?: boolean;
  stats?: boolean;
  dump?: boolean;
  json?: boolean;
  output?: string;
  copyRange?: string;
  queueMaxlen?: string;
  failOpen?: boolean;
  rcvbuf?: string;
  zone?: string;
  netns?: string;
  max?: string;
  sysctl?: string[];
  duration?: string;
  /** Save the table as a snapshot at exit (`conntrack-sab list FILE` reads it). */
  write?: string;
}

function intOpt(v: string | undefined, name: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer in ${min}..${max}`);
  return n;
}

export async function runNfqueue(raw: Record<string, unknown>): Promise<number> {
  const o = raw as NfqueueCliOptions;
  const monitor = o.interface !== undefined;
  const cmd = monitor ? 'monitor' : 'nfqueue';
  const err = (m: string): number => {
    process.stderr.write(`conntrack-sab ${cmd}: ${m}\n`);
    return 2;
  };
  if (o.shadow && o.enforce) return err('--shadow and --enforce exclude each other');
  const mode: LiveMode = monitor ? 'monitor' : o.enforce ? 'enforce' : 'shadow';
  const interfaces = monitor ? o.interface!.split(',').map((x) => x.trim()).filter(Boolean) : [];
  if (monitor && (interfaces.length === 0 || interfaces.length > 64)) return err('--interface needs 1 to 64 interface names');
  let queues: number[];
  let copyRange: number, maxLen: number, rcvbuf: number, zone: number, max: number, duration: number;
  let policy: PolicySpec = {};
  const sysctls: Record<string, number> = {};
  try {
    queues = monitor ? [] : parseQueues(o.queues ?? '0');
    copyRange = intOpt(o.copyRange, '--copy-range', 64, 0xffff, 0xffff);
    maxLen = intOpt(o.queueMaxlen, '--queue-maxlen', 1, 1 << 20, 4096);
    rcvbuf = intOpt(o.rcvbuf, '--rcvbuf', 65536, 1 << 30, 8 << 20);
    zone = intOpt(o.zone, '--zone', 0, 65535, 0);
    max = intOpt(o.max, '--max', 1, 1 << 26, 65536);
    duration = o.duration === undefined ? 0 : Number(o.duration);
    if (!(duration >= 0)) throw new Error('--duration must be a number of seconds');
    if (o.policy) policy = Policy.fromFile(o.policy).spec;
    for (const a of o.sysctl ?? []) {
      const { def, value } = parseSysctlAssignment(a);
      sysctls[def.name] = value;
    }
  } catch (e) {
    return err((e as Error).message);
  }
  if (o.policy && mode !== 'enforce') process.stderr.write(`conntrack-sab ${cmd}: note: --policy applies to --enforce only; in ${mode} mode nothing is dropped\n`);
  const fmt = new Set((o.output ?? '').split(',').map((s) => s.trim()).filter(Boolean));
  for (const f of fmt) if (!['extended', 'timestamp', 'id'].includes(f)) return err(`unknown output format "${f}"`);

  const table = ConntrackTable.create({
    max, sysctls, maxWorkers: Math.max(16, 2 * (queues.length + interfaces.length) + 4),
    ...(o.event ? { events: { ring: 1 << 15, destroyRing: 1 << 13 } } : {}),
  });
  const out = new LineWriter(1);
  const sub: EventSubscription | null = o.event ? subscribeEvents(table) : null;
  const eventLines: string[] = [];
  const drain = (): void => {
    if (!sub) return;
    for (const ev of sub.poll()) {
      const line = eventLine(ev.type, ev.body({ extended: fmt.has('extended'), id: fmt.has('id') }), fmt.has('timestamp') ? Date.now() : undefined);
      if (o.json) eventLines.push(line);
      else out.write(line + '\n');
    }
    out.flush();
  };

  let lq: LiveQueues;
  try {
    lq = await LiveQueues.start({
      table, queues, interfaces, mode, policy, copyRange, maxLen, receiveBuffer: rcvbuf, zone,
      failOpen: o.failOpen !== false, ...(o.netns ? { netns: o.netns } : {}),
      onRestart: (q, r, code) => process.stderr.write(`conntrack-sab ${cmd}: ${monitor ? 'interface' : 'queue'} ${monitor ? interfaces[q] : q}: worker died (exit ${code}), recovered (${r?.locksReleased ?? 0} locks released), restarted\n`),
      onError: (q, m) => process.stderr.write(`conntrack-sab ${cmd}: ${monitor ? `interface ${interfaces[q]}` : `queue ${q}`}: ${m}\n`),
    });
  } catch (e) {
    sub?.close();
    process.stderr.write(`conntrack-sab ${cmd}: ${(e as Error).message}\n`);
    return 1;
  }
  process.stderr.write(`conntrack-sab ${cmd}: ${mode} on ${monitor ? `interface${interfaces.length > 1 ? 's' : ''} ${interfaces.join(',')}` : `queue${queues.length > 1 ? 's' : ''} ${queues.join(',')}`}` +
    `${mode === 'shadow' ? (lq.kernelConntrack(0) ? ' (kernel state from NFQA_CT)' : ' (kernel state from the packet mark)') : ''}; SIGINT/SIGTERM to stop, SIGUSR1 for Prometheus metrics\n`);

  const timer = setInterval(drain, 100);
  const onUsr1 = (): void => {
    out.write(prometheusText(table));
    out.flush();
  };
  process.on('SIGUSR1', onUsr1);
  await new Promise<void>((resolve) => {
    const done = (): void => resolve();
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
    if (duration > 0) setTimeout(done, duration * 1000).unref();
  });
  clearInterval(timer);
  process.removeListener('SIGUSR1', onUsr1);
  await lq.stop();
  drain();
  sub?.close();

  const ctx: FormatContext = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl, ext: table.sec.ext };
  const now = table.clock;
  const entries: EntryJson[] = [];
  const lines: string[] = [];
  if (o.dump || o.json) {
    const c = new Conntrack(table);
    c.beginBatch();
    c.chains.forEach((e) => {
      if (((table.i32[e + E_TIMEOUT]! - now) | 0) <= 0) return;
      if (o.json) entries.push(entryJson(ctx, e, now));
      else lines.push(formatEntry(ctx, e, now, { extended: fmt.has('extended'), id: fmt.has('id') }));
    });
    c.endBatch();
    c.close();
  }
  if (o.write) {
    try {
      const n = saveSnapshotFile(table, o.write);
      process.stderr.write(`conntrack-sab ${cmd}: ${n} connections saved to ${o.write}\n`);
    } catch (e) {
      process.stderr.write(`conntrack-sab ${cmd}: cannot save ${o.write}: ${(e as Error).message}\n`);
    }
  }
  const totals = lq.totals();
  const stats = table.stats();
  if (o.json) {
    out.write(JSON.stringify({
      mode, queues: lq.counters(), ...(monitor ? { interfaces } : {}), totals, recoveries: lq.recoveries.length, entries, stats: stats.total,
      ...(o.event ? { events: eventLines } : {}),
    }) + '\n');
  } else {
    if (o.dump) {
      for (const l of lines) out.write(l + '\n');
      out.flush();
      process.stderr.write(`conntrack v1.4.8 (conntrack-sab): ${lines.length} flow entries have been shown.\n`);
    }
    if (o.stats) out.write(formatStats(stats.perWorker.length ? stats.perWorker : [stats.total]) + '\n');
    for (const c of lq.counters()) {
      out.write(`${monitor ? `interface ${interfaces[c.queue]}` : `queue ${c.queue}`}: packets=${c['packets']} accepted=${c['accepted']} dropped=${c['dropped']} new=${c['new']} ` +
        `established=${c['established']} related=${c['related']} invalid=${c['invalid']} untracked=${c['untracked']}` +
        `${mode === 'shadow' ? ` checked=${c['shadowChecked']} mismatches=${c['mismatches']} no-kernel-state=${c['noKernelState']}` : ''}` +
        ` restarts=${c['restarts']}\n`);
    }
    out.write(`total: packets=${totals['packets']} accepted=${totals['accepted']} dropped=${totals['dropped']}` +
      `${mode === 'shadow' ? ` mismatches=${totals['mismatches']}` : ''}\n`);
  }
  out.flush();
  return 0;
}

function collect(value: string, previous: string[]): string[] {
  return previous.concat([value]);
}

/** Output options shared by `nfqueue` and `monitor`. */
function withOutputOptions(cmd: Command): Command {
  return cmd
    .option('-E, --event', 'print the event stream like conntrack -E')
    .option('-S, --stats', 'print statistics like conntrack -S at exit')
    .option('-L, --dump', 'print the table like conntrack -L at exit')
    .option('--json', 'print one JSON object at exit')
    .addOption(new Option('-o, --output <fmt>', 'output format for -L/-E: extended, timestamp, id'));
}

/** Table options and the action shared by `nfqueue` and `monitor` (`zone`/`netns`: their help). */
function withTableOptions(cmd: Command, zone: string, netns: string): Command {
  return cmd
    .option('--zone <n>', zone)
    .option('--netns <name>', netns)
    .option('--max <n>', 'nf_conntrack_max of the table')
    .option('--sysctl <name=value>', 'set a sysctl', collect, [])
    .option('--duration <s>', 'stop after this many seconds')
    .option('-w, --write <file>', 'save the table as a snapshot at exit')
    .action(async (opts: Record<string, unknown>) => {
      process.exitCode = await runNfqueue(opts);
    });
}

/** The `nfqueue` and `monitor` commands. */
export function registerLiveCommands(program: Command): void {
  const nfqueue = withOutputOptions(program
    .command('nfqueue')
    .description('decide live traffic from NFQUEUE queues, one packet worker per queue (Linux, CAP_NET_ADMIN, koffi)')
    .option('--queues <list>', 'queue numbers, e.g. 0-1 or 0,2 (default 0)')
    .option('--shadow', 'the kernel decides; compare its conntrack state with ours per packet (default)')
    .option('--enforce', 'our decision is the verdict (kernel tracking bypassed by raw notrack)')
    .option('--policy <file>', 'firewall policy (JSON) for --enforce'))
    .option('--copy-range <bytes>', 'bytes of each packet copied (default 65535)')
    .option('--queue-maxlen <n>', 'packets the kernel holds per queue (default 4096)')
    .option('--no-fail-open', 'drop, rather than accept, packets when a queue is full')
    .option('--rcvbuf <bytes>', 'socket receive buffer (default 8 MiB)');
  withTableOptions(nfqueue, 'conntrack zone of the queued packets', 'bind the queues of this network namespace (ip netns name)');

  const monitor = withOutputOptions(program
    .command('monitor')
    .description('track the traffic of interfaces passively (AF_PACKET, e.g. a mirror port), one worker per interface')
    .requiredOption('--interface <list>', 'interface names, comma separated'));
  withTableOptions(monitor, 'conntrack zone of the packets', 'read the interfaces of this network namespace (ip netns name)');
}
