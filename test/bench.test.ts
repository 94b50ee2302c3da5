/** Smoke test of the bench: `--quick` with tiny sections, checks the JSON shape (not speed). */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

test('bench --quick --json prints workloads, baselines and experiments', (t) => {
  const out = mkdtempSync(join(tmpdir(), 'ctsab-bench-'));
  const r = spawnSync(process.execPath, [cli, 'bench', '--quick', '--json', '--workers', '1', '--runs', '1', '--only', 'hot', '--out', out],
    { encoding: 'utf8', timeout: 240_000 });
  t.is(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as {
    workloads: { name: string; workers: number; rate: number; unit: string; min: number; max: number; tracker: string }[];
    baselines: { map: Record<string, number>; sharedmap: Record<string, number> };
    experiments: unknown[];
    ratios: { workload: string; vsMap: number | null }[];
    memory: { bytesPerConnection: number; tableBytesAt1M: number };
  };
  t.true(Array.isArray(j.workloads) && j.workloads.length >= 3);
  for (const w of j.workloads) {
    t.is(typeof w.name, 'string');
    t.is(w.workers, 1);
    for (const k of ['rate', 'min', 'max'] as const) t.true(Number.isFinite(w[k]) && w[k] > 0, `${w.name} ${k}`);
    t.true(w.min <= w.rate && w.rate <= w.max);
    t.is(typeof w.unit, 'string');
  }
  t.deepEqual([...new Set(j.workloads.map((w) => w.tracker))].sort(), ['map', 'ours', 'sharedmap']);
  t.true(Number.isFinite(j.baselines.map['hot']));
  t.true(Number.isFinite(j.baselines.sharedmap['hot@1']));
  t.true(Array.isArray(j.experiments));
  t.true(j.ratios.some((x) => x.workload === 'hot' && typeof x.vsMap === 'number'));
  t.true(j.memory.bytesPerConnection > 0 && j.memory.tableBytesAt1M > 0);
  t.true(existsSync(join(out, 'bench-quick.json')));
  t.true(existsSync(join(out, 'throughput-quick.svg')));
});

test('bench rejects a bad worker list', (t) => {
  const r = spawnSync(process.execPath, [cli, 'bench', '--workers', 'x'], { encoding: 'utf8' });
  t.is(r.status, 2);
  t.regex(r.stderr, /bad worker count/);
});
