/**
 * `npm run big-replay`: the big streaming cases, too long for `npm test`.
 *
 *  1. A 10 GB synthetic capture generated on the fly into a pipe: `synth | conntrack-sab replay -`
 *  2. A 3 GiB capture file (generated in the temp directory, deleted afterwards): `replay FILE`,
 *     then the same with `--workers 2`.
 *
 * Prints, for each, the packets, wall time, packets/s and the replaying process's peak RSS
 * (getrusage, worker threads included); exits 1 if a peak is 300 MB or more, a replay fails,
 * or a packet was not decided as valid.
 *
 *   npm run big-replay [-- --stdin-size 10G --file-size 3G --only stdin,file,workers]
 */
import { spawn } from 'node:child_process';
import { createWriteStream, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { parseSize, synthPcap } from '../test/helpers/synth-pcap.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const synth = fileURLToPath(new URL('../test/helpers/synth-pcap.js', import.meta.url));
const rss = fileURLToPath(new URL('../test/helpers/report-rss.js', import.meta.url));
const LIMIT_MB = 300;

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}
const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

interface Outcome { name: string; bytes: number; packets: number; seconds: number; pps: number; rssMb: number; invalid: number; drops: number; ok: boolean }

async function replayRun(name: string, cmd: string, bytes: number): Promise<Outcome> {
  const t0 = performance.now();
  const c = spawn('/bin/sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const [code] = await once(c, 'close') as [number];
  const seconds = (performance.now() - t0) / 1000;
  const last = out.trimEnd().split('\n').pop() ?? '';
  let packets = 0;
  let invalid = -1;
  let drops = -1;
  try {
    const s = JSON.parse(last) as { packets: number; counts: Record<string, number>; stats: Record<string, number> };
    packets = s.packets;
    invalid = s.counts['invalid'] ?? 0;
    drops = (s.stats['drop'] ?? 0) + (s.stats['early_drop'] ?? 0);
  } catch {
    // reported below
  }
  const m = /maxrss_kb=(\d+)/.exec(err);
  const rssMb = m ? Number(m[1]) / 1024 : NaN;
  const ok = code === 0 && packets > 0 && rssMb < LIMIT_MB && invalid === 0 && drops === 0;
  if (!ok) process.stderr.write(`${name}: exit ${code}\n${err}\n`);
  return { name, bytes, packets, seconds, pps: Math.round(packets / seconds), rssMb, invalid, drops, ok };
}

async function writeFile(path: string, bytes: number): Promise<void> {
  const w = createWriteStream(path, { highWaterMark: 4 << 20 });
  for (const chunk of synthPcap({ bytes })) {
    if (!w.write(chunk)) await once(w, 'drain');
  }
  w.end();
  await once(w, 'finish');
}

const only = new Set(arg('--only', 'stdin,file,workers').split(','));
const results: Outcome[] = [];
const node = q(process.execPath);
const replayCmd = (input: string, extra = ''): string => `${node} --import ${q(rss)} ${q(cli)} replay ${input} --json --no-progress ${extra}`;

if (only.has('stdin')) {
  const size = parseSize(arg('--stdin-size', '10G'));
  process.stderr.write(`stdin: generating ${size} bytes into a pipe and replaying them ...\n`);
  results.push(await replayRun('stdin pipe', `${node} ${q(synth)} ${size} | ${replayCmd('-')}`, size));
}
if (only.has('file') || only.has('workers')) {
  const size = parseSize(arg('--file-size', '3G'));
  const path = join(tmpdir(), `ctsab-big-${process.pid}.pcap`);
  try {
    process.stderr.write(`file: writing ${size} bytes to ${path} ...\n`);
    await writeFile(path, size);
    const bytes = statSync(path).size;
    if (only.has('file')) results.push(await replayRun('file', replayCmd(q(path)), bytes));
    if (only.has('workers')) results.push(await replayRun('file --workers 2', replayCmd(q(path), '--workers 2'), bytes));
  } finally {
    rmSync(path, { force: true });
  }
}

for (const r of results) {
  process.stdout.write(
    `${r.name.padEnd(18)} ${(r.bytes / 2 ** 30).toFixed(2)} GiB  ${r.packets} packets  ${r.seconds.toFixed(1)} s  ` +
    `${r.pps} packets/s  peak RSS ${r.rssMb.toFixed(0)} MB  invalid ${r.invalid}  drops ${r.drops}  ${r.ok ? 'ok' : 'FAILED'}\n`,
  );
}
process.exitCode = results.every((r) => r.ok) ? 0 : 1;
