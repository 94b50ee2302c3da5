/**
 * Differential fuzzing against the kernel: record N seeds of each fuzz generator through a real
 * Linux router (scripts/oracle/record.sh, root) and compare verdicts and event streams.
 *
 *   npm run fuzz:kernel -- --seeds 20 [--from 5000] [--generators tcp,mixed] [--out DIR]
 *   npm run fuzz:kernel -- --compare-only --out DIR     (compare recordings already there)
 *
 * Exit status 1 when anything disagrees; each disagreement is printed, and verdict
 * disagreements are cut down to a small capture (DIR/<seed>/min-<packet>.pcap, see
 * minimiseVerdict) that can be replayed with `conntrack-sab replay`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { diffWithKernel, minimiseVerdict } from '../../src/ops/kernel-diff.js';

const GENERATORS = ['tcp', 'tcp_liberal', 'tcp_noloose', 'tcp_ignrst', 'tcp_maxretrans', 'tcpflow', 'mixed'];
const root = fileURLToPath(new URL('../../../', import.meta.url));

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const seeds = Number(arg('--seeds') ?? '3');
const from = Number(arg('--from') ?? String(1000 + (Math.floor(Date.now() / 1000) % 90000)));
const gens = (arg('--generators') ?? GENERATORS.join(',')).split(',').filter(Boolean);
const out = arg('--out') ?? '/tmp/ctsab-fuzz';
const compareOnly = process.argv.includes('--compare-only');
const verbose = process.argv.includes('-v');

if (!compareOnly) {
  if (process.getuid?.() !== 0) {
    console.error('fuzz:kernel records through network namespaces: run it as root (or use --compare-only)');
    process.exit(2);
  }
  const names: string[] = [];
  for (const g of gens) for (let s = from; s < from + seeds; s++) names.push(`fuzz_${g}_${s}`);
  console.log(`recording ${names.length} seeds (${gens.join(', ')}; seeds ${from}..${from + seeds - 1}) into ${out}`);
  const r = spawnSync(join(root, 'scripts/oracle/record.sh'), names, {
    stdio: 'inherit', env: { ...process.env, CTSAB_FIXTURES: out, CTSAB_NS_PREFIX: process.env.CTSAB_NS_PREFIX ?? 'ctsabfz' },
  });
  if (r.status !== 0) {
    console.error(`record.sh failed (status ${r.status})`);
    process.exit(2);
  }
}

let packets = 0, agree = 0, conns = 0, connsAgree = 0, bad = 0, runs = 0;
const dirs = existsSync(out) ? readdirSync(out).filter((d) => d.startsWith('fuzz_')).sort() : [];
for (const name of dirs) {
  const dir = join(out, name);
  if (!existsSync(join(dir, 'meta.json'))) continue;
  const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as { sysctls?: Record<string, number>; capture_problems?: string[] };
  if (meta.capture_problems?.length) {
    console.log(`${name}: recording problems, skipped: ${meta.capture_problems.join('; ')}`);
    bad++;
    continue;
  }
  const cap = readFileSync(join(dir, 'capture.pcap'));
  const ev = existsSync(join(dir, 'events.txt')) ? readFileSync(join(dir, 'events.txt'), 'utf8') : null;
  const d = diffWithKernel(cap, ev, meta.sysctls ?? {});
  runs++;
  packets += d.packets; agree += d.agree; conns += d.connections; connsAgree += d.connectionsAgree;
  const ok = d.agree === d.packets && d.connectionsAgree === d.connections && d.captureError === null;
  if (!ok) bad++;
  console.log(`${name}: verdicts ${d.agree}/${d.packets}, connections' events ${d.connectionsAgree}/${d.connections}` +
    `${d.captureError ? ` capture error: ${d.captureError}` : ''}`);
  for (const m of d.verdictMismatches.slice(0, verbose ? 1000 : 5)) {
    console.log(`  #${m.index} kernel ${m.kernel ? `${m.kernel.ctstate}/${m.kernel.dir}` : '-'} ours ${m.ours.ctstate}/${m.ours.dir}` +
      `${m.reason ? ` (${m.reason})` : ''}${m.tcpState ? ` [${m.tcpState}]` : ''} ${m.key ?? ''}`);
  }
  for (const m of d.eventMismatches.slice(0, verbose ? 1000 : 5)) {
    console.log(`  events ${m.key} #${m.at}\n    kernel ${m.kernel}\n    ours   ${m.ours}`);
  }
  const first = d.verdictMismatches[0];
  if (first && !process.argv.includes('--no-minimise')) {
    const min = minimiseVerdict(cap, meta.sysctls ?? {}, first.index);
    const file = join(dir, `min-${first.index}.pcap`);
    writeFileSync(file, min.capture);
    console.log(`  minimised #${first.index} to ${min.packets} packets (${min.reproduces ? 'still disagrees' : 'agrees alone: needs other flows'}): ${file}`);
  }
}
const pct = (a: number, b: number): string => (b ? (100 * a / b).toFixed(3) : '100.000');
console.log(`\n${runs} seeds: verdicts ${agree}/${packets} (${pct(agree, packets)}%), ` +
  `connections' event streams ${connsAgree}/${conns} (${pct(connsAgree, conns)}%)`);
process.exit(bad ? 1 : 0);
