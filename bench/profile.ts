/**
 * `npm run profile`: profiles the bench with the packet code on the main thread (`--inline`):
 *   1. node --cpu-prof, summarised here as the top self-time functions
 *      (.clinic/profile-top.txt, raw profile in .clinic/cpuprofile/);
 *   2. clinic doctor (.clinic/*.clinic-doctor.html);
 *   3. clinic flame  (.clinic/*.clinic-flame.html).
 * Non-interactive (NO_INSIGHT=true, --open=false). Sections: PROFILE_ONLY (default hot,zones,mixed;
 * doctor: PROFILE_DOCTOR_ONLY, default hot). Only our packet code runs (--ours-only, no baselines).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const dest = `${root}.clinic`;
const clinic = `${root}node_modules/.bin/clinic`;
const only = process.env['PROFILE_ONLY'] ?? 'hot,zones,mixed';
const benchArgs = ['dist/bench/run.js', '--quick', '--inline', '--ours-only', '--only', only, '--runs', '3', '--out', dest];
// clinic doctor fails to decode its own samples of long runs ("Decoded message is not valid",
// clinicjs/node-clinic#427): give it the hot workload only.
const doctorArgs = ['dist/bench/run.js', '--quick', '--inline', '--ours-only', '--only', process.env['PROFILE_DOCTOR_ONLY'] ?? 'hot', '--runs', '3', '--out', dest];
const env = { ...process.env, NO_INSIGHT: 'true' };

function run(cmd: string, args: string[]): number {
  process.stderr.write(`\n$ ${cmd} ${args.join(' ')}\n`);
  const r = spawnSync(cmd, args, { cwd: root, env, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }

/** Top self-time functions of a .cpuprofile. */
export function topSelf(file: string, n = 25): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(p.nodes.map((x) => [x.id, x]));
  const self = new Map<string, number>();
  let total = 0;
  p.samples.forEach((id, i) => {
    const node = byId.get(id)!;
    const dt = p.timeDeltas[i] ?? 0;
    const f = node.callFrame;
    const where = f.url ? `${f.url.replace(/^.*\/dist\//, '')}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  });
  const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, n);
  return rows.map(([k, v]) => `${((100 * v) / total).toFixed(1).padStart(5)}%  ${(v / 1000).toFixed(0).padStart(7)} ms  ${k}`).join('\n') + '\n';
}

mkdirSync(dest, { recursive: true });
const profDir = `${dest}/cpuprofile`;
rmSync(profDir, { recursive: true, force: true });
let rc = run(process.execPath, ['--cpu-prof', '--cpu-prof-dir', profDir, ...benchArgs]);
if (rc !== 0) process.exit(rc);
// The main thread's profile is the one with the packet code (the largest file).
const profs = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile')).map((f) => `${profDir}/${f}`);
profs.sort((a, b) => readFileSync(b).length - readFileSync(a).length);
const top = `Top self-time functions (bench --quick --inline --only ${only}; ${profs[0]}):\n` + topSelf(profs[0]!);
writeFileSync(`${dest}/profile-top.txt`, top);
process.stdout.write('\n' + top);

if (!existsSync(clinic)) {
  process.stderr.write(`clinic not found at ${clinic} (npm ci installs it)\n`);
  process.exit(1);
}
rc = run(clinic, ['doctor', '--open=false', '--dest', dest, '--', process.execPath, ...doctorArgs]);
if (rc !== 0) process.exit(rc);
rc = run(clinic, ['flame', '--open=false', '--dest', dest, '--', process.execPath, ...benchArgs]);
if (rc !== 0) process.exit(rc);
const html = readdirSync(dest).filter((f) => f.endsWith('.html')).map((f) => `${dest}/${f}`);
process.stdout.write(`\nprofile outputs:\n  ${dest}/profile-top.txt\n  ${profDir}/\n${html.map((h) => `  ${h}`).join('\n')}\n`);
