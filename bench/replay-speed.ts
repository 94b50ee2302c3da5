/**
 * Replay speed.
 *
 *   node dist/bench/replay-speed.js [--runs N] [capture ...]
 *     Single-thread replay of every bundled capture (the sample and the kernel fixtures) through
 *     a fresh table, median of N runs (5) after a warm-up. Timed: reading, parsing and deciding
 *     every packet; not timed: allocating each empty table.
 *
 *   node dist/bench/replay-speed.js --pool FILE [--runs N] [--workers 2]
 *     `replay --workers 1` (the single-thread streamed replay) against `--workers N` (the pool:
 *     N - 1 workers and this thread's share, as the command runs it)
 *     on one capture file, in this one process, alternately (the order swapped every round), N
 *     rounds (3) after a warm-up round; each run creates its table (and pool) and closes them,
 *     as the command does. Prints the medians of wall time and of the process's CPU time, the
 *     median of the per-round ratios 1w/Nw, and the machine's own N-thread ceiling (a pure
 *     compute loop on 1 and N threads, no shared memory) measured before and after: on a shared
 *     machine a ratio means nothing above its ceiling. On Linux, also the CPU of the main thread,
 *     of the threads the run started (the pool's workers) and of the others (V8's compiler and
 *     GC threads, libuv), from /proc/self/task.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { replay, ReplayGc } from '../src/ops/replay.js';
import { ConntrackPool } from '../src/pool/pool.js';
import { callerShareFor } from '../src/pool/ring.js';
import { ConntrackTable } from '../src/table/table.js';
import { median } from './stats.js';
import { ceilingRatio } from './ceiling.js';


const args = process.argv.slice(2);
let runs = -1;
let pool: string | null = null;
let workers = 2;
const files: string[] = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--runs') runs = Number(args[++i]);
  else if (args[i] === '--pool') pool = args[++i] ?? null;
  else if (args[i] === '--workers') workers = Number(args[++i]);
  else files.push(args[i]!);
}
if (runs === -1) runs = pool !== null ? 3 : 5;
if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs needs a positive integer');
if (!Number.isInteger(workers) || workers < 1) throw new Error('--workers needs a positive integer');

interface Run { wall: number; cpu: number; packets: number; threads: Threads | null }

/** CPU ms of the main thread, of threads started during the run (pool workers) and of the rest (V8's compiler and GC threads, libuv). */
interface Threads { main: number; started: number; others: number }

/** CPU ms per thread id (Linux /proc; null elsewhere). */
function threadCpu(): Map<string, number> | null {
  if (!existsSync('/proc/self/task')) return null;
  const m = new Map<string, number>();
  for (const t of readdirSync('/proc/self/task')) {
    try {
      const s = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      m.set(t, ((Number(f[11]) + Number(f[12])) * 1000) / 100); // utime + stime, in clock ticks (USER_HZ 100)
    } catch {
      // the thread ended meanwhile
    }
  }
  return m;
}

function threadsSince(before: Map<string, number> | null): Threads | null {
  const after = threadCpu();
  if (before === null || after === null) return null;
  const r: Threads = { main: 0, started: 0, others: 0 };
  for (const [t, ms] of after) {
    const was = before.get(t);
    if (t === String(process.pid)) r.main += ms - (was ?? 0);
    else if (was === undefined) r.started += ms;
    else r.others += ms - was;
  }
  return r;
}

/** One replay of `file` as `conntrack-sab replay FILE --workers w` does it (no output). */
async function replayOnce(file: string, w: number): Promise<Run> {
  const th0 = threadCpu();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const table = ConntrackTable.create({ max: 65536, ...(w > 1 ? { maxWorkers: Math.max(16, w + 4) } : {}) });
  let seen = 0;
  let packets: number;
  let threads: Threads | null;
  if (w === 1) {
    const r = await replay(file, { table, onPacket: () => { seen++; } });
    packets = r.packets;
    threads = threadsSince(th0);
    r.conntrack.close();
  } else {
    const gc = new ReplayGc(table);
    // As the command does: N - 1 workers and this thread's share (ring.ts callerShareFor).
    const share = callerShareFor(w);
    const p = new ConntrackPool({ table, workers: share > 0 ? w - 1 : w, dispatch: 'flow' });
    try {
      const r = await p.replay(file, { onPacket: () => { seen++; }, callerShare: share, sweep: { due: (x) => gc.due(x), run: () => gc.maybeRun() } });
      packets = r.packets;
      threads = threadsSince(th0); // before close: the workers' threads still exist
    } finally {
      await p.close();
      gc.close();
    }
  }
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  if (seen !== packets) throw new Error(`onPacket saw ${seen} of ${packets} packets`);
  return { wall, cpu: (c.user + c.system) / 1e6, packets, threads };
}

/** Median CPU ms per thread class over the runs (null without /proc). */
function medThreads(rs: Run[]): Threads | null {
  if (rs.some((r) => r.threads === null)) return null;
  const pick = (k: keyof Threads): number => median(rs.map((r) => r.threads![k]));
  return { main: pick('main'), started: pick('started'), others: pick('others') };
}

if (pool !== null) {
  const file = pool;
  const mib = statSync(file).size / 2 ** 20;
  const ceil0 = await ceilingRatio(workers);
  await replayOnce(file, 1); await replayOnce(file, workers); // warm-up
  const a: Run[] = [], b: Run[] = [], ratio: number[] = [];
  for (let k = 0; k < runs; k++) {
    let x: Run, y: Run;
    if (k % 2 === 0) { x = await replayOnce(file, 1); y = await replayOnce(file, workers); } else { y = await replayOnce(file, workers); x = await replayOnce(file, 1); }
    a.push(x); b.push(y); ratio.push(x.wall / y.wall);
    const th = (r: Run): string => (r.threads ? ` [main ${r.threads.main}, workers ${r.threads.started}, other threads ${r.threads.others} ms]` : '');
    process.stderr.write(`round ${k + 1}: 1w ${x.wall.toFixed(2)} s (cpu ${x.cpu.toFixed(2)}${th(x)}), ${workers}w ${y.wall.toFixed(2)} s (cpu ${y.cpu.toFixed(2)}${th(y)}), ratio ${(x.wall / y.wall).toFixed(2)}\n`);
  }
  const ceil1 = await ceilingRatio(workers);
  const packets = a[0]!.packets;
  const w1 = median(a.map((r) => r.wall)), wn = median(b.map((r) => r.wall));
  console.log(JSON.stringify({
    file, mib: Math.round(mib), packets, runs, workers,
    w1: { wallS: +w1.toFixed(3), cpuS: +median(a.map((r) => r.cpu)).toFixed(3), pps: Math.round(packets / w1), threadsMs: medThreads(a) },
    wN: { wallS: +wn.toFixed(3), cpuS: +median(b.map((r) => r.cpu)).toFixed(3), pps: Math.round(packets / wn), threadsMs: medThreads(b) },
    ratio: +median(ratio).toFixed(3), rounds: ratio.map((r) => +r.toFixed(3)),
    ceiling: { start: +ceil0.toFixed(2), end: +ceil1.toFixed(2) },
  }));
} else {
  if (files.length === 0) {
    const root = fileURLToPath(new URL('../../', import.meta.url));
    const sample = `${root}bench/samples/sample.pcap`;
    if (existsSync(sample)) files.push(sample);
    const fx = `${root}test/fixtures/kernel`;
    if (existsSync(fx)) for (const d of readdirSync(fx).sort()) files.push(`${fx}/${d}/capture.pcap`);
  }
  // All captures as one workload: each replayed from an empty table, created outside the timed
  // region (a table is allocated once per process in real use; here it would dominate small captures).
  const inputs = files.map((f) => readFileSync(f));
  const total = (): { packets: number; ms: number } => {
    let packets = 0;
    let ms = 0;
    for (const b of inputs) {
      const table = ConntrackTable.create({ max: 65536 });
      const t0 = performance.now();
      const r = replay(b, { table });
      ms += performance.now() - t0;
      packets += r.packets;
      r.conntrack.close();
    }
    return { packets, ms };
  };
  total(); // warm-up
  const rates: number[] = [];
  let packets = 0;
  for (let r = 0; r < runs; r++) {
    const x = total();
    packets = x.packets;
    rates.push((x.packets / x.ms) * 1000);
  }
  console.log(JSON.stringify({
    captures: files.length, packets, runs,
    ppsMedian: Math.round(median(rates)), ppsMin: Math.round(Math.min(...rates)), ppsMax: Math.round(Math.max(...rates)),
  }));
}
