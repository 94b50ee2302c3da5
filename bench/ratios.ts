/**
 * The bench's closing table (issue 13): ours against the C peers measured in the same run, and
 * the 2-worker scaling beside the machine's own 2-thread ceiling, with the goals.
 *
 *  - Open vSwitch: `--ovs PATH/ovstest` runs `ovstest test-conntrack benchmark T N 32` (hot: one
 *    UDP flow per thread, never answered) and `benchmark-zones N 2 I` (one address pair, ports
 *    varied, zones 0/1: insert = ct execute with commit, lookup = without, flush of a full zone)
 *    as runners interleaved with ours in the hot and zones sections (run.ts). Without the option,
 *    or when the binary does not run, the OVS column says "not measured".
 *  - The C lookup loop: whatever run.ts passes (issue 14 builds it with `cc`); null: not measured.
 *  - replay: `conntrack-sab replay FILE --workers 1` and `--workers 2` on a synthetic capture
 *    (test/helpers/synth-pcap.ts), child processes run alternately, wall time.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, rmSync, statSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from './stats.js';

// ---------------------------------------------------------------------------------------------
// Open vSwitch's ovstest

/** Why `path` cannot run the OVS benchmarks, or null when it can. */
export function ovsProblem(path: string | null): string | null {
  if (path === null) return 'not measured (no --ovs PATH/ovstest given)';
  if (!existsSync(path)) return `not measured (${path} does not exist)`;
  try {
    ovsHot(path, 1, 64, 32); // a tiny run: the binary is ovstest and has test-conntrack
  } catch (e) {
    return `not measured (${path} test-conntrack benchmark failed: ${(e as Error).message.split('\n')[0]})`;
  }
  return null;
}

/** `ovstest test-conntrack benchmark threads pkts batch`: packets/s over all threads. */
export function ovsHot(path: string, threads: number, pkts: number, batch = 32): number {
  const out = execFileSync(path, ['test-conntrack', 'benchmark', String(threads), String(pkts), String(batch)],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
  const m = /conntrack:\s*(\d+)\s*ms/.exec(out);
  if (!m) throw new Error(`ovstest benchmark: unexpected output: ${out.slice(0, 200)}`);
  // Each thread sends `pkts` packets; a 0 ms run is below the clock's resolution.
  return (threads * pkts) / (Math.max(Number(m[1]), 0.5) / 1000);
}

export interface OvsZones {
  /** Connections committed per second (refilling zone 1 after its flush). */
  ins: number;
  /** Packets per second on the existing connections (no commit). */
  look: number;
  /** Milliseconds to flush one zone of `conns` connections. */
  flush: number;
}

/** `ovstest test-conntrack benchmark-zones conns 2 iterations`: the averages of its table. */
export function ovsZones(path: string, conns: number, iterations: number): OvsZones {
  const out = execFileSync(path, ['test-conntrack', 'benchmark-zones', String(conns), '2', String(iterations)],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
  const row = out.split('\n').find((l) => /^\|\s*Avg\b/.test(l));
  const us = row ? [...row.matchAll(/([\d.]+)\s*us/g)].map((x) => Number(x[1])) : [];
  if (us.length < 3) throw new Error(`ovstest benchmark-zones: unexpected output: ${out.slice(0, 300)}`);
  const [commit, noCommit, flushFull] = us as [number, number, number];
  return { ins: conns / (commit / 1e6), look: conns / (noCommit / 1e6), flush: flushFull / 1000 };
}

// ---------------------------------------------------------------------------------------------
// replay --workers 2 / --workers 1

export interface ReplayScaling {
  bytes: number;
  packets: number;
  /** Median wall seconds. */
  w1: number;
  w2: number;
  /** w1 / w2 (median of the paired per-round ratios). */
  ratio: number;
  rounds: number[];
}


/**
 * Replay a synthetic capture of about `bytes` with 1 and with 2 workers, alternately, `runs`
 * rounds after one warm-up round. Null (with the reason logged) when the generator or the CLI is
 * not there (an installed package ships neither test helpers nor, maybe, the CLI).
 */
export async function replayScaling(bytes: number, runs: number, log: (s: string) => void): Promise<ReplayScaling | null> {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const gen = new URL('../test/helpers/synth-pcap.js', import.meta.url);
  if (!existsSync(cli) || !existsSync(fileURLToPath(gen))) {
    log('replay: not measured (the CLI or test/helpers/synth-pcap.js is not built here)');
    return null;
  }
  const { synthPcap } = await import(gen.href) as { synthPcap: (o: { bytes: number }) => Iterable<Uint8Array> };
  const path = join(tmpdir(), `ctsab-bench-replay-${process.pid}.pcap`);
  try {
    const w = createWriteStream(path, { highWaterMark: 4 << 20 });
    for (const chunk of synthPcap({ bytes })) if (!w.write(chunk)) await once(w, 'drain');
    w.end();
    await once(w, 'finish');
    let packets = 0;
    const one = (workers: number): number => {
      const t0 = performance.now();
      const r = spawnSync(process.execPath, [cli, 'replay', path, '--json', '--no-progress', '--workers', String(workers)],
        { encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] });
      const s = (performance.now() - t0) / 1000;
      if (r.status !== 0) throw new Error(`replay --workers ${workers} exited ${r.status}: ${r.stderr.slice(0, 300)}`);
      const last = r.stdout.trimEnd().split('\n').pop() ?? '{}';
      packets = (JSON.parse(last) as { packets?: number }).packets ?? 0;
      return s;
    };
    one(1); one(2);
    const a: number[] = [], b: number[] = [], rr: number[] = [];
    for (let k = 0; k < runs; k++) {
      // Alternate which goes first, so a load change hits both alike.
      let x: number, y: number;
      if (k % 2 === 0) { x = one(1); y = one(2); } else { y = one(2); x = one(1); }
      a.push(x); b.push(y); rr.push(x / y);
    }
    return { bytes: statSync(path).size, packets, w1: median(a), w2: median(b), ratio: median(rr), rounds: rr };
  } finally {
    rmSync(path, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// The ratio table

/** What the table reads from the bench report (kept structural so run.ts stays the owner). */
export interface RatioInput {
  workloads: { name: string; tracker: string; workers: number; rate: number; unit: string }[];
  scaling: { workers: number; rate: number }[];
  scalingEnd: { workers: number; rate: number }[];
  zonesPerZone: number;
  /** Chains.find alone, per entries count (lookups/s, one thread). */
  lookup: { entries: number; findOnly: number; plainWalk: number }[];
  /** The C lookup loop (lookups/s) per entries count; null: not measured. */
  cLoop: { entries: number; rate: number }[] | null;
  ovs: string | null;
  replay: ReplayScaling | null;
}

export interface RatioRow {
  workload: string;
  ours1w: string;
  scale: string;
  peer: string;
  vsPeer: string;
  goal: string;
  met: 'yes' | 'no' | 'n/a';
}

const fmtN = (x: number): string =>
  x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : x >= 10 ? x.toFixed(0) : x.toFixed(2);

export function ratioRows(r: RatioInput): RatioRow[] {
  const get = (name: string, tracker: string, w: number): number | null =>
    r.workloads.find((x) => x.name === name && x.tracker === tracker && x.workers === w)?.rate ?? null;
  const rows: RatioRow[] = [];
  const ovsNote = r.ovs ?? '';
  const scaleOf = (name: string): number | null => {
    const a = get(name, 'ours', 1), b = get(name, 'ours', 2);
    return a !== null && b !== null ? b / a : null;
  };
  const met = (ok: boolean | null): RatioRow['met'] => (ok === null ? 'n/a' : ok ? 'yes' : 'no');
  const add = (workload: string, unit: string, higherBetter: boolean, peerName: string, scaleGoal: number | null, peerGoal: number | null, absGoal: number | null): void => {
    const ours = get(workload, 'ours', 1);
    const peer = get(workload, 'ovs', 1);
    const s = scaleOf(workload);
    const vs = ours !== null && peer !== null ? (higherBetter ? ours / peer : peer / ours) : null;
    const goals: string[] = [];
    const oks: boolean[] = [];
    if (absGoal !== null) { goals.push(`>= ${fmtN(absGoal)} ${unit}`); if (ours !== null) oks.push(ours >= absGoal); }
    if (peerGoal !== null) { goals.push(`${higherBetter ? '' : 'OVS / ours '}>= ${peerGoal} x ${peerName}`); if (vs !== null) oks.push(vs >= peerGoal); }
    if (scaleGoal !== null) { goals.push(`2w/1w >= ${scaleGoal}`); if (s !== null) oks.push(s >= scaleGoal); }
    rows.push({
      workload,
      ours1w: ours === null ? 'not run' : `${fmtN(ours)} ${unit}`,
      scale: s === null ? '-' : s.toFixed(2),
      peer: peerName === 'OVS' ? (peer === null ? 'not measured' : `OVS ${fmtN(peer)} ${unit}`) : '-',
      vsPeer: vs === null ? (peerName === 'OVS' && ovsNote ? 'not measured' : '-') : vs.toFixed(2),
      goal: goals.join(', ') || '-',
      met: met(oks.length === 0 ? null : oks.every((x) => x)),
    });
  };
  add('hot', 'pkt/s', true, 'OVS', null, 0.5, 8e6);
  add('zones-insert', 'conn/s', true, 'OVS', 1.8, 1.0, null);
  add('zones-lookup', 'pkt/s', true, 'OVS', null, 0.6, null);
  // Flush: ms per zone of N connections; per entry in µs for the table.
  {
    const ours = get('zones-flush', 'ours', 1);
    const peer = get('zones-flush', 'ovs', 1);
    const per = (ms: number): number => (ms * 1000) / r.zonesPerZone;
    const vs = ours !== null && peer !== null ? peer / ours : null;
    rows.push({
      workload: 'zone flush, per entry',
      ours1w: ours === null ? 'not run' : `${per(ours).toFixed(3)} µs`,
      scale: '-',
      peer: peer === null ? 'not measured' : `OVS ${per(peer).toFixed(3)} µs`,
      vsPeer: vs === null ? (ovsNote ? 'not measured' : '-') : vs.toFixed(2),
      goal: 'OVS / ours >= 1 (time)',
      met: met(vs === null ? null : vs >= 1),
    });
  }
  add('mixed', 'pkt/s', true, '-', 1.8, null, 1.5e6);
  for (const l of r.lookup) {
    const c = r.cLoop?.find((x) => x.entries === l.entries)?.rate ?? null;
    rows.push({
      workload: `Chains.find alone, ${fmtN(l.entries)} entries`,
      ours1w: `${fmtN(l.findOnly)} /s`, scale: '-',
      peer: c === null ? 'C loop not measured' : `C loop ${fmtN(c)} /s`,
      vsPeer: c === null ? 'not measured' : (l.findOnly / c).toFixed(3),
      goal: '>= 0.3 x C', met: met(c === null ? null : l.findOnly / c >= 0.3),
    });
    rows.push({
      workload: `plain JS walk, ${fmtN(l.entries)} entries`,
      ours1w: `${fmtN(l.plainWalk)} /s`, scale: '-',
      peer: c === null ? '-' : `C loop ${fmtN(c)} /s`,
      vsPeer: c === null ? '-' : (l.plainWalk / c).toFixed(3), goal: '-', met: 'n/a',
    });
  }
  const rp = r.replay;
  rows.push({
    workload: rp ? `replay ${fmtN(rp.packets)} packets (${(rp.bytes / 2 ** 20).toFixed(0)} MiB)` : 'replay',
    ours1w: rp ? `${rp.w1.toFixed(2)} s (${fmtN(rp.packets / rp.w1)} pkt/s)` : 'not run',
    scale: rp ? `${rp.ratio.toFixed(2)} (${rp.w2.toFixed(2)} s)` : '-',
    peer: '-', vsPeer: '-', goal: '2w/1w >= 1.7', met: met(rp ? rp.ratio >= 1.7 : null),
  });
  return rows;
}

export function formatRatios(r: RatioInput): string[] {
  const lines: string[] = [];
  const ceil = (xs: { workers: number; rate: number }[]): string => {
    const a = xs.find((x) => x.workers === 1), b = xs.find((x) => x.workers === 2);
    return a && b ? (b.rate / a.rate).toFixed(2) : 'n/a';
  };
  lines.push(`Against the C peers and the goals (issue 13). Machine's own 2-thread ceiling (pure compute): ${ceil(r.scaling)} at the start, ${ceil(r.scalingEnd)} at the end; a 2w/1w figure can only be read against it.`);
  if (r.ovs) lines.push(`  OVS: ${r.ovs}`);
  const rows = ratioRows(r);
  const head = ['workload', 'ours, 1 worker', '2w / 1w', 'peer (same run)', 'ours / peer', 'goal', 'met'];
  const all = [head, ...rows.map((x) => [x.workload, x.ours1w, x.scale, x.peer, x.vsPeer, x.goal, x.met])];
  const wd = head.map((_, i) => Math.max(...all.map((row) => row[i]!.length)));
  all.forEach((row, k) => {
    const s = row.map((c, i) => c.padEnd(wd[i]!)).join('  ').trimEnd();
    lines.push(s);
    if (k === 0) lines.push('-'.repeat(s.length));
  });
  return lines;
}
