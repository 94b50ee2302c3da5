/**
 * Replay through a pool of 2 workers ('flow' dispatch) gives the same per-packet decisions,
 * table (-L) and statistics totals as the single-thread replay: for every kernel fixture
 * capture (test/fixtures/kernel/<name>/capture.pcap, with its meta.json sysctls) and for
 * generated captures.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodePcap } from '../src/input/capture/reader.js';
import { Conntrack } from '../src/track/core.js';
import { formatEntry } from '../src/ops/format.js';
import { E_TIMEOUT } from '../src/table/layout.js';
import { ConntrackPool } from '../src/pool/pool.js';
import type { TrackerContext } from '../src/track/proto/l4proto.js';
import { replay } from '../src/ops/replay.js';
import { ConntrackTable, type TableOptions } from '../src/table/table.js';
import { TRAFFIC_LINKTYPE, traffic } from './helpers/traffic.js';

const STABLE = ['found', 'invalid', 'insert', 'insert_failed', 'drop', 'early_drop', 'error', 'chaintoolong', 'new', 'ignore', 'expired', 'packets'];

interface Outcome {
  packets: string[];
  entries: string[];
  stats: Record<string, number>;
  error: string | null;
}

interface Decided {
  readonly ctstate: string; readonly direction: string | null; readonly reason: string | null;
  readonly protoState: number; readonly drop: boolean;
}

function line(i: number, v: Decided, l4: number): string {
  return JSON.stringify([i, v.ctstate, v.direction, v.reason, v.protoState, v.drop, l4]);
}

function tableOutcome(table: ConntrackTable, now: number): Pick<Outcome, 'entries' | 'stats'> {
  const ct = new Conntrack(table);
  const ctx: TrackerContext = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl };
  const entries: string[] = [];
  ct.beginBatch();
  ct.chains.forEach((e) => {
    if (((table.i32[e + E_TIMEOUT]! - now) | 0) > 0) entries.push(formatEntry(ctx, e, now));
  });
  ct.endBatch();
  ct.close();
  const t = table.stats().total;
  return { entries: entries.sort(), stats: Object.fromEntries(STABLE.map((n) => [n, t[n]!])) };
}

function singleThread(bytes: Uint8Array, opts: TableOptions): Outcome {
  const packets: string[] = [];
  const r = replay(bytes, { tableOptions: opts, onPacket: (i, v, pkt) => { packets.push(line(i, v, pkt.l4proto)); } });
  r.conntrack.close();
  return { packets, ...tableOutcome(r.table, r.now), error: r.error?.message ?? null };
}

/** `callerShare`: the replaying thread decides that share of the flows too (ring.ts). */
async function pooled(bytes: Uint8Array, opts: TableOptions, workers: number, callerShare = 0): Promise<Outcome> {
  const table = ConntrackTable.create(opts);
  const pool = new ConntrackPool({ table, workers, dispatch: 'flow' });
  const packets: string[] = [];
  try {
    // Small batches so that connections straddle batch boundaries.
    const r = await pool.replay(bytes, { batch: 64, callerShare, onPacket: (i, v) => { packets.push(line(i, v, v.l4proto)); } });
    if (r.unregisteredReasons.length) throw new Error(`unregistered reasons: ${r.unregisteredReasons.join(', ')}`);
    return { packets, ...tableOutcome(table, r.now), error: r.error?.message ?? null };
  } finally {
    await pool.close();
  }
}

const root = new URL('../../test/fixtures/kernel/', import.meta.url);
const fixtures = existsSync(root)
  ? readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(new URL(`${d.name}/capture.pcap`, root)))
    .map((d) => d.name).sort()
  : [];

for (const name of fixtures) {
  test(`kernel fixture ${name}: --workers 2 decides as --workers 1`, async (t) => {
    const dir = new URL(`${name}/`, root);
    const metaUrl = new URL('meta.json', dir);
    const meta = existsSync(metaUrl) ? JSON.parse(readFileSync(metaUrl, 'utf8')) as { sysctls?: Record<string, number> } : {};
    const bytes = readFileSync(new URL('capture.pcap', dir));
    const opts: TableOptions = { sysctls: meta.sysctls ?? {}, hashKey: [1, 2] };
    const one = singleThread(bytes, opts);
    const two = await pooled(bytes, opts, 2);
    t.true(one.packets.length > 0);
    t.deepEqual(two, one);
    // Fragments (a batch decided alone) and ICMP errors with the replaying thread as a party too.
    if (/frag|icmp|ipv6|mixed/.test(name)) t.deepEqual(await pooled(bytes, opts, 1, 0.5), one, 'one worker and a caller share');
  });
}

const generated: [string, number, number, number, Record<string, number>][] = [
  ['mixed traffic', 3000, 11, 3, {}],
  ['mixed traffic, short timeouts', 2500, 12, 150, { nf_conntrack_udp_timeout: 1, nf_conntrack_icmp_timeout: 1, nf_conntrack_tcp_timeout_close: 1 }],
];
for (const [label, n, seed, gap, sysctls] of generated) {
  test(`generated capture (${label}): --workers 2 decides as --workers 1`, async (t) => {
    const frames = traffic(n, seed);
    // Stretch time so that short timeouts expire between packets of a connection.
    const bytes = encodePcap(TRAFFIC_LINKTYPE, frames.map((f, i) => ({ data: f.data, tsMs: f.tsMs + i * gap })));
    const opts: TableOptions = { sysctls, hashKey: [3, 4] };
    const one = singleThread(bytes, opts);
    const two = await pooled(bytes, opts, 2);
    t.is(one.packets.length, n);
    if (sysctls['nf_conntrack_udp_timeout']) t.true(one.stats['expired']! > 0, 'connections expire mid-capture');
    t.deepEqual(two, one);
    t.deepEqual(await pooled(bytes, opts, 2, 0.3), one, 'two workers and a caller share');
  });
}

test('CLI: replay --workers 2 writes the same per-packet output and -S totals as without', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ctsab-workers-'));
  const cap = join(dir, 'c.pcap');
  writeFileSync(cap, encodePcap(TRAFFIC_LINKTYPE, traffic(1500, 5)));
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const run = (out: string, ...extra: string[]): { out: string; err: string; code: number | null } => {
    const r = spawnSync(process.execPath, [cli, 'replay', cap, '--per-packet', out, '-S', '-L', ...extra], { encoding: 'utf8' });
    return { out: r.stdout, err: r.stderr, code: r.status };
  };
  const a = run(join(dir, 'one.jsonl'));
  const b = run(join(dir, 'two.jsonl'), '--workers', '2');
  t.is(a.code, 0, a.err);
  t.is(b.code, 0, b.err);
  // Connection ids come from one counter that threads draw from in any order: compare without them.
  const perPacket = (f: string): Record<string, unknown>[] => readFileSync(join(dir, f), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const one = perPacket('one.jsonl');
  const two = perPacket('two.jsonl');
  for (const l of [...one, ...two]) {
    if (l['ctstate'] !== 'invalid' && l['ctstate'] !== 'untracked') t.true(typeof l['id'] === 'number' && (l['id'] as number) > 0, JSON.stringify(l));
  }
  const noId = (ls: Record<string, unknown>[]): Record<string, unknown>[] => ls.map(({ id: _id, ...rest }) => rest);
  t.deepEqual(noId(two), noId(one));
  const totals = (s: string): Record<string, number> => {
    const sum: Record<string, number> = {};
    for (const l of s.split('\n').filter((x) => x.startsWith('cpu='))) {
      for (const m of l.matchAll(/(\w+)=(\d+)/g)) if (m[1] !== 'cpu') sum[m[1]!] = (sum[m[1]!] ?? 0) + Number(m[2]);
    }
    return sum;
  };
  t.deepEqual(totals(b.out), totals(a.out));
  t.true((totals(a.out)['found'] ?? 0) > 0);
  const entries = (s: string): string[] => s.split('\n').filter((x) => x && !x.startsWith('cpu=')).sort();
  t.deepEqual(entries(b.out), entries(a.out));
  t.true(entries(a.out).length > 0);
  // -E with workers reads the shared event ring; in capture order it prints what one thread does.
  const e = spawnSync(process.execPath, [cli, 'replay', cap, '-E', '--workers', '2'], { encoding: 'utf8' });
  const e1 = spawnSync(process.execPath, [cli, 'replay', cap, '-E'], { encoding: 'utf8' });
  t.is(e.status, 0, e.stderr);
  t.is(e.stdout, e1.stdout);
});
