/**
 * `conntrack-sab replay FILE --workers N` ÷ `--workers 1`, as the command runs (child processes),
 * with CPU time and a per-thread split, and the machine's N-thread ceiling in the same run.
 *
 *   node dist/bench/replay-scale.js FILE|SIZE [--rounds 5] [--workers 2] [--base DIST]
 *
 * SIZE (e.g. 1G) makes a synthetic capture in the temp folder (test/helpers/synth-pcap.ts) and
 * deletes it after. Each round runs --workers 1 and --workers N of this build (and of the build
 * folder DIST, e.g. one of the main branch), the order reversed every round; medians. Per run:
 * wall time, the child's user+sys CPU (/proc/self/stat cutime+cstime), and, from the replay's
 * timeline (CTSAB_TIMELINE=1, src/pool/timeline.ts; builds without it give none), the CPU of its
 * main thread, of its worker threads and of V8's and libuv's threads. From those, a quiet-machine
 * estimate: a run's wall time is at least its busiest thread's CPU and at least its total CPU
 * over the cores, so with 2 free cores 2w ÷ 1w is about (1w main-thread CPU) ÷ max(2w busiest
 * thread, 2w total ÷ 2).
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { once } from 'node:events';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, takeOption } from './stats.js';
import { ceilingRatio } from './ceiling.js';
import { parseSize, synthPcap } from '../test/helpers/synth-pcap.js';

const args = process.argv.slice(2);
const rounds = Number(takeOption(args, '--rounds', '5'));
const workers = Number(takeOption(args, '--workers', '2'));
const base = takeOption(args, '--base', '');
const what = args[0];
if (what === undefined || !Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(workers) || workers < 2) {
  process.stderr.write('usage: node dist/bench/replay-scale.js FILE|SIZE [--rounds N] [--workers N] [--base DIST]\n');
  process.exit(2);
}

/** CPU of the waited-for children so far, seconds (Linux: cutime + cstime, USER_HZ 100). */
function childCpu(): number {
  const s = readFileSync('/proc/self/stat', 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) / 100;
}

interface Run { wall: number; cpu: number; main: number | null; workers: number | null; others: number | null; startup: number | null }

/** The timeline's per-thread CPU (ms -> s): main thread, worker threads, the process's other threads. */
function threads(stderr: string): Pick<Run, 'main' | 'workers' | 'others' | 'startup'> {
  let main: number | null = null, startup: number | null = null, others = 0, wk = 0, any = false;
  for (const line of stderr.split('\n')) {
    const m = /^ctsab-timeline (\S+) (\S+) (\S+) (.*)$/.exec(line);
    if (!m) continue;
    any = true;
    const [, who, a, b, rest] = m;
    if (who === 'os-thread') {
      if (a !== 'main') others += Number(b) / 1000;
      continue;
    }
    if (who === 'main' && rest === 'exit') main = Number(b) / 1000;
    if (who === 'main' && rest === 'cli: replay command') startup = Number(b) / 1000;
    if (who!.startsWith('w') && rest === 'worker: leave') wk += Number(b) / 1000;
  }
  return any ? { main, workers: wk, others, startup } : { main: null, workers: null, others: null, startup: null };
}

function runOnce(cli: string, file: string, w: number): Run {
  const c0 = childCpu();
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [cli, 'replay', file, '--no-progress', '--workers', String(w)], {
    encoding: 'utf8', maxBuffer: 1 << 28, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CTSAB_TIMELINE: '1' },
  });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${cli} replay --workers ${w} exited ${r.status}: ${r.stderr.slice(0, 400)}`);
  return { wall, cpu: childCpu() - c0, ...threads(r.stderr) };
}

const builds: { name: string; cli: string }[] = [{ name: 'this build', cli: fileURLToPath(new URL('../src/cli/main.js', import.meta.url)) }];
if (base !== '') builds.push({ name: `base ${base}`, cli: resolve(base, 'src/cli/main.js') });
for (const b of builds) if (!existsSync(b.cli)) throw new Error(`no CLI at ${b.cli}`);

let file = what;
let made = false;
if (!existsSync(what)) {
  file = join(tmpdir(), `ctsab-replay-scale-${process.pid}.pcap`);
  const w = createWriteStream(file, { highWaterMark: 4 << 20 });
  for (const chunk of synthPcap({ bytes: parseSize(what) })) if (!w.write(chunk)) await once(w, 'drain');
  w.end();
  await once(w, 'finish');
  made = true;
}
try {
  const load0 = loadavg()[0]!;
  const ceil0 = await ceilingRatio(workers);
  for (const b of builds) { runOnce(b.cli, file, 1); runOnce(b.cli, file, workers); } // warm the page cache
  const runs = builds.map(() => ({ w1: [] as Run[], wn: [] as Run[] }));
  for (let k = 0; k < rounds; k++) {
    const order = builds.flatMap((b, i) => [[i, 1], [i, workers]] as [number, number][]);
    if (k % 2 === 1) order.reverse();
    for (const [i, w] of order) {
      const r = runOnce(builds[i]!.cli, file, w);
      (w === 1 ? runs[i]!.w1 : runs[i]!.wn).push(r);
      process.stderr.write(`round ${k + 1} ${builds[i]!.name} w${w}: wall ${r.wall.toFixed(2)} s, cpu ${r.cpu.toFixed(2)} s` +
        (r.main !== null ? ` (main ${r.main.toFixed(2)}, workers ${r.workers!.toFixed(2)}, other threads ${r.others!.toFixed(2)})` : '') + `, load ${loadavg()[0]!.toFixed(1)}\n`);
    }
  }
  const ceil1 = await ceilingRatio(workers);
  const med = (rs: Run[], k: keyof Run): number | null => (rs.some((r) => r[k] === null) ? null : +median(rs.map((r) => r[k] as number)).toFixed(3));
  const out = builds.map((b, i) => {
    const { w1, wn } = runs[i]!;
    const perRound = w1.map((r, k) => r.wall / wn[k]!.wall);
    const m1 = med(w1, 'main'), busiest = wn.some((r) => r.main === null) ? null : median(wn.map((r) => Math.max(r.main!, r.workers! / Math.max(1, workers - 1))));
    const quiet = m1 !== null && busiest !== null ? m1 / Math.max(busiest, median(wn.map((r) => r.cpu)) / 2) : null;
    return {
      build: b.name,
      w1: { wallS: med(w1, 'wall'), cpuS: med(w1, 'cpu'), mainS: m1, workersS: med(w1, 'workers'), othersS: med(w1, 'others'), startupS: med(w1, 'startup') },
      wN: { wallS: med(wn, 'wall'), cpuS: med(wn, 'cpu'), mainS: med(wn, 'main'), workersS: med(wn, 'workers'), othersS: med(wn, 'others'), startupS: med(wn, 'startup') },
      ratioWall: +median(perRound).toFixed(3), rounds: perRound.map((x) => +x.toFixed(2)),
      cpuEfficiency: +(median(w1.map((r) => r.cpu)) / median(wn.map((r) => r.cpu))).toFixed(3),
      quietEstimate: quiet === null ? null : +quiet.toFixed(2),
    };
  });
  console.log(JSON.stringify({
    file: made ? `synthetic ${what}` : file, mib: Math.round(statSync(file).size / 2 ** 20), workers, rounds,
    ceiling: { start: +ceil0.toFixed(2), end: +ceil1.toFixed(2) }, load: { start: +load0.toFixed(1), end: +loadavg()[0]!.toFixed(1) }, builds: out,
  }, null, 1));
} finally {
  if (made) rmSync(file, { force: true });
}
