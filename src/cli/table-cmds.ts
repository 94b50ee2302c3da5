/**
 * Table commands on a snapshot file or a replayed capture, with conntrack-tools' option names:
 *
 *   conntrack-sab list <snapshot|capture> [filters] [-o extended|proc|json|id]   (conntrack -L)
 *   conntrack-sab count <snapshot|capture> [filters]                              (conntrack -C)
 *   conntrack-sab metrics <snapshot|capture>                                      (Prometheus text)
 *   conntrack-sab snapshot <capture> -w out.snap                                  (replay, then save)
 *   conntrack-sab delete <snapshot> [filters] -w out.snap                         (conntrack -D)
 *
 * Filters: -f ipv4|ipv6, -p proto, -s/-d (original source/destination, address or CIDR),
 * -r/-q (reply source/destination), --addr (any address), --sport/--dport,
 * --reply-port-src/--reply-port-dst, --port, --zone, --orig-zone, --reply-zone, --ns,
 * --mark value[/mask], --state LIST, --label BIT.
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { formatCount } from '../ops/format.js';
import { metricsFromSnapshot, metricsFromTable, formatPrometheus } from '../ops/metrics.js';
import { CtMatcher, CtOps, type CtFilter } from '../ops/ops.js';
import { replay, ReplayGc } from '../ops/replay.js';
import { R_TABLE_FULL } from '../track/core.js';
import { SnapshotError, decodeSnapshot, encodeSnapshot, isSnapshot, restoreSnapshot, writeFileAtomic, type Snapshot } from '../ops/snapshot.js';
import { parseSysctlAssignment } from '../table/sysctl.js';
import { ConntrackTable } from '../table/table.js';
import { LineWriter } from './output.js';
import { banner, CliError, EXIT_DATA, EXIT_USAGE, inputError, isInputError, TableFullWarning, usageLine } from './common.js';

function intArg(name: string, max: number): (v: string) => number {
  return (v: string) => {
    if (!/^\d+$/.test(v) || Number(v) > max) throw new InvalidArgumentError(`${name} must be an integer 0..${max}, got "${v}"`);
    return Number(v);
  };
}

/** Add conntrack's filter options to a command. */
export function addFilterOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('-f, --family <family>', 'layer 3 protocol').choices(['ipv4', 'ipv6']))
    .option('-p, --proto <proto>', 'layer 4 protocol (name or number)')
    .option('-s, --src <addr>', 'original source address or CIDR (--orig-src)')
    .option('--orig-src <addr>', 'same as -s')
    .option('-d, --dst <addr>', 'original destination address or CIDR (--orig-dst)')
    .option('--orig-dst <addr>', 'same as -d')
    .option('-r, --reply-src <addr>', 'reply source address or CIDR')
    .option('-q, --reply-dst <addr>', 'reply destination address or CIDR')
    .option('--addr <addr>', 'any address of either direction (address or CIDR)')
    .option('--sport <port>', 'original source port (--orig-port-src)', intArg('--sport', 65535))
    .option('--orig-port-src <port>', 'same as --sport', intArg('--orig-port-src', 65535))
    .option('--dport <port>', 'original destination port (--orig-port-dst)', intArg('--dport', 65535))
    .option('--orig-port-dst <port>', 'same as --dport', intArg('--orig-port-dst', 65535))
    .option('--reply-port-src <port>', 'reply source port', intArg('--reply-port-src', 65535))
    .option('--reply-port-dst <port>', 'reply destination port', intArg('--reply-port-dst', 65535))
    .option('--port <port>', 'any port of either direction', intArg('--port', 65535))
    .option('--zone <zone>', 'conntrack zone', intArg('--zone', 65535))
    .option('--orig-zone <zone>', 'zone of the original direction', intArg('--orig-zone', 65535))
    .option('--reply-zone <zone>', 'zone of the reply direction', intArg('--reply-zone', 65535))
    .option('--ns <id>', 'namespace id', intArg('--ns', 0x7fffffff))
    .option('-m, --mark <value[/mask]>', 'mark, optionally with a mask (decimal or 0x hex)')
    .option('--state <states>', 'TCP or SCTP states, comma separated (e.g. ESTABLISHED,TIME_WAIT)')
    .option('-l, --label <bit>', 'connection label bit', intArg('--label', 127));
}

function u32Arg(name: string, v: string): number {
  const n = /^0x[0-9a-f]{1,8}$/i.test(v) ? parseInt(v, 16) : /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new CliError(`${name}: "${v}" is not a 32-bit unsigned number`, 2);
  return n;
}

/** The CtFilter the parsed options describe. */
export function filterFromOptions(o: Record<string, unknown>): CtFilter {
  const f: CtFilter = {};
  const str = (k: string): string | undefined => (typeof o[k] === 'string' ? o[k] as string : undefined);
  const num = (k: string): number | undefined => (typeof o[k] === 'number' ? o[k] as number : undefined);
  const fam = str('family');
  if (fam === 'ipv4' || fam === 'ipv6') f.family = fam;
  const set = <K extends keyof CtFilter>(k: K, v: CtFilter[K] | undefined): void => { if (v !== undefined) f[k] = v; };
  set('proto', str('proto'));
  set('src', str('src') ?? str('origSrc'));
  set('dst', str('dst') ?? str('origDst'));
  set('replySrc', str('replySrc'));
  set('replyDst', str('replyDst'));
  set('addr', str('addr'));
  set('sport', num('sport') ?? num('origPortSrc'));
  set('dport', num('dport') ?? num('origPortDst'));
  set('replySport', num('replyPortSrc'));
  set('replyDport', num('replyPortDst'));
  set('port', num('port'));
  set('zone', num('zone'));
  set('origZone', num('origZone'));
  set('replyZone', num('replyZone'));
  set('ns', num('ns'));
  set('state', str('state'));
  set('label', num('label'));
  const mark = str('mark');
  if (mark !== undefined) {
    const [v, m] = mark.split('/', 2);
    f.mark = u32Arg('--mark', v ?? '');
    if (m !== undefined) f.markMask = u32Arg('--mark mask', m);
  }
  return f;
}

interface Loaded {
  table: ConntrackTable;
  /** The decoded snapshot, when the input was one. */
  snap: Snapshot | null;
}

/** The first bytes of a regular file (none for stdin, FIFOs and devices: read as a capture). */
function head(path: string, n: number): Uint8Array {
  if (path === '-' || path === '/dev/stdin') return new Uint8Array(0);
  let fd: number;
  try {
    // Only a regular file is peeked at: a FIFO's first bytes would be lost to the replay.
    if (!statSync(path).isFile()) return new Uint8Array(0);
    fd = openSync(path, 'r');
  } catch (e) {
    throw inputError(path, e);
  }
  try {
    const b = new Uint8Array(n);
    const got = readSync(fd, b, 0, n, null);
    return b.subarray(0, got);
  } catch (e) {
    throw inputError(path, e);
  } finally {
    closeSync(fd);
  }
}

/** A table holding the input's connections: a snapshot restored, or a capture replayed (streamed). */
async function loadInput(path: string, o: Record<string, unknown>, command: string): Promise<Loaded> {
  const maxOpt = typeof o['max'] === 'number' ? o['max'] as number : undefined;
  if (isSnapshot(head(path, 8))) {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(path);
    } catch (e) {
      throw inputError(path, e);
    }
    let snap: Snapshot;
    try {
      snap = decodeSnapshot(bytes);
    } catch (e) {
      if (e instanceof SnapshotError) throw new CliError(`${path}: ${e.message}`, 1);
      throw e;
    }
    const table = ConntrackTable.create({ max: maxOpt ?? Math.max(16, snap.max, snap.count) });
    table.clock = snap.clock; // remaining timeouts print as they were saved
    try {
      restoreSnapshot(table, snap, { now: snap.clock });
    } catch (e) {
      if (e instanceof SnapshotError) throw new CliError(`${path}: ${e.message}`, 1);
      throw e;
    }
    return { table, snap };
  }
  const sysctls: Record<string, number> = {};
  for (const a of (o['sysctl'] as string[] | undefined) ?? []) {
    try {
      const { def, value } = parseSysctlAssignment(a);
      sysctls[def.name] = value;
    } catch (e) {
      throw new CliError((e as Error).message, EXIT_USAGE);
    }
  }
  const max = maxOpt ?? Math.max(65536, sysctls['nf_conntrack_max'] ?? 0);
  if (path === '-' && process.stdin.isTTY) throw new CliError('refusing to read a capture from a terminal (pipe one in)', EXIT_USAGE);
  let table: ConntrackTable;
  try {
    table = ConntrackTable.create({ max, sysctls });
  } catch (e) {
    throw new CliError((e as Error).message, EXIT_USAGE);
  }
  // As `replay` does: dead entries swept once the table fills, drops reported.
  const gc = new ReplayGc(table);
  const full = new TableFullWarning(command, max);
  let res;
  try {
    res = await replay(path, {
      table,
      onPacket: (i, v) => { if (v.drop && v.reason === R_TABLE_FULL) full.drop(i + 1); },
      onProgress: () => gc.maybeRun(),
    });
  } catch (e) {
    if (isInputError(e)) throw inputError(path, e);
    throw e;
  } finally {
    gc.close();
  }
  res.conntrack.close();
  process.stderr.write(full.summary(table));
  if (res.error) throw new CliError(`${path === '-' ? '(stdin)' : path}: ${res.error.message} (after ${res.packets} packets)`, EXIT_DATA);
  res.table.clock = res.now;
  return { table: res.table, snap: null };
}

function outputSet(o: Record<string, unknown>): Set<string> {
  const fmt = new Set(String(o['output'] ?? '').split(',').map((s) => s.trim()).filter(Boolean));
  for (const f of fmt) if (!['extended', 'proc', 'json', 'id'].includes(f)) throw new CliError(`unknown output format "${f}" (extended, proc, json, id)`, 2);
  return fmt;
}

function matcher(o: Record<string, unknown>): CtMatcher {
  try {
    return new CtMatcher(filterFromOptions(o));
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError((e as Error).message, 2);
  }
}

async function runList(path: string, o: Record<string, unknown>, command: string): Promise<number> {
  const fmt = outputSet(o);
  const m = matcher(o);
  const { table } = await loadInput(path, o, command);
  const ops = new CtOps(table);
  const out = new LineWriter(1);
  try {
    const dump = ops.dump(m);
    // Line by line as they are formatted (JSON Lines with -o json), never one big string.
    const opts = { extended: fmt.has('extended'), id: fmt.has('id') };
    for (let i = 0; i < dump.count; i++) {
      out.write((fmt.has('json') ? JSON.stringify(dump.jsonAt(i)) : fmt.has('proc') ? dump.procLine(i) : dump.line(i, opts)) + '\n');
    }
    out.flush();
    if (!fmt.has('json') && !fmt.has('proc')) {
      process.stderr.write(banner(`${dump.count} flow entries have been shown.`));
    }
  } finally {
    ops.close();
  }
  return 0;
}

async function runCount(path: string, o: Record<string, unknown>, command: string): Promise<number> {
  const m = matcher(o);
  const { table } = await loadInput(path, o, command);
  const ops = new CtOps(table);
  try {
    process.stdout.write(formatCount(ops.count(m.filter)) + '\n');
  } finally {
    ops.close();
  }
  return 0;
}

async function runMetrics(path: string, o: Record<string, unknown>, command: string): Promise<number> {
  const { table, snap } = await loadInput(path, o, command);
  const src = snap ? metricsFromSnapshot(snap) : metricsFromTable(table);
  process.stdout.write(formatPrometheus(src));
  return 0;
}

function writeOut(o: Record<string, unknown>, bytes: Uint8Array): string {
  const out = o['write'];
  if (typeof out !== 'string' || !out) throw new CliError('-w, --write <file> is required', EXIT_USAGE);
  try {
    writeFileAtomic(out, bytes); // `delete x.snap -w x.snap` must never leave x.snap half written
  } catch (e) {
    throw inputError(out, e);
  }
  return out;
}

async function runSnapshot(path: string, o: Record<string, unknown>, command: string): Promise<number> {
  if (typeof o['write'] !== 'string') throw new CliError('-w, --write <file> is required', EXIT_USAGE);
  const { table } = await loadInput(path, o, command);
  const bytes = encodeSnapshot(table, { now: table.clock });
  const out = writeOut(o, bytes);
  const n = new DataView(bytes.buffer, bytes.byteOffset).getUint32(16, true);
  process.stderr.write(banner(`${n} flow entries saved to ${out} (${bytes.length} bytes).`));
  return 0;
}

async function runDelete(path: string, o: Record<string, unknown>, command: string): Promise<number> {
  if (typeof o['write'] !== 'string') throw new CliError('-w, --write <file> is required', EXIT_USAGE);
  const m = matcher(o);
  const { table } = await loadInput(path, o, command);
  const ops = new CtOps(table);
  let n: number;
  try {
    n = ops.flush(m.filter);
  } finally {
    ops.close();
  }
  writeOut(o, encodeSnapshot(table, { now: table.clock }));
  process.stderr.write(banner(`${n} flow entries have been deleted.`));
  return 0;
}

function wrap(fn: (path: string, o: Record<string, unknown>, command: string) => Promise<number>, name: string) {
  return async (path: string, o: Record<string, unknown>): Promise<void> => {
    try {
      process.exitCode = await fn(path, o, name);
    } catch (e) {
      if (e instanceof CliError) {
        process.stderr.write(e.code === EXIT_USAGE ? usageLine(name, e.message) : `conntrack-sab ${name}: ${e.message}\n`);
        process.exitCode = e.code;
        return;
      }
      throw e;
    }
  };
}

function inputOptions(cmd: Command): Command {
  return cmd
    .option('--sysctl <name=value>', 'captures: set a sysctl for the replay', (v: string, p: string[]) => p.concat([v]), [] as string[])
    .option('--max <n>', 'nf_conntrack_max of the table the input is loaded into', intArg('--max', 1 << 24));
}

/** Register list, count, metrics, snapshot and delete on the program. */
export function registerTableCommands(program: Command): void {
  inputOptions(addFilterOptions(program
    .command('list')
    .description('list connections of a snapshot or a replayed capture (conntrack -L)')
    .argument('<input>', 'snapshot file or capture (pcap, pcapng)')
    .option('-o, --output <fmt>', 'extended, proc (/proc/net/nf_conntrack), json (one object per line), id; comma separated')))
    .action(wrap(runList, 'list'));

  inputOptions(addFilterOptions(program
    .command('count')
    .description('count connections, optionally filtered (conntrack -C)')
    .argument('<input>', 'snapshot file or capture')))
    .action(wrap(runCount, 'count'));

  inputOptions(program
    .command('metrics')
    .description('print Prometheus text metrics (node_exporter names plus conntrack_sab_*)')
    .argument('<input>', 'snapshot file or capture'))
    .action(wrap(runMetrics, 'metrics'));

  inputOptions(program
    .command('snapshot')
    .description('replay a capture (or re-save a snapshot) and write a snapshot')
    .argument('<input>', 'capture or snapshot file')
    .option('-w, --write <file>', 'snapshot file to write'))
    .action(wrap(runSnapshot, 'snapshot'));

  inputOptions(addFilterOptions(program
    .command('delete')
    .description('delete the connections that match the filters and write the rest (conntrack -D)')
    .argument('<input>', 'snapshot file or capture')
    .option('-w, --write <file>', 'snapshot file to write')))
    .action(wrap(runDelete, 'delete'));
}
