/**
 * The published package: `npm pack` holds the library, its workers, the bench, the sample, README
 * and LICENSE, and no tests or fixtures; installed elsewhere (without dev dependencies) it
 * imports, replays the sample and runs `conntrack-sab bench`, which skips the missing optional
 * sharedmap baseline and ends.
 */
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

interface PackResult { filename: string; files: { path: string }[] }

function pack(args: string[]): PackResult {
  const out = execFileSync('npm', ['pack', '--json', '--ignore-scripts', ...args], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return (JSON.parse(out) as PackResult[])[0]!;
}

test('the pack file list holds the library and no tests or fixtures', (t) => {
  const files = pack(['--dry-run']).files.map((f) => f.path);
  for (const need of [
    'package.json', 'README.md', 'LICENSE', 'bench/samples/sample.pcap', 'dist/src/index.js', 'dist/src/index.d.ts',
    'dist/src/cli/main.js', 'dist/workers/packet-worker.js', 'dist/workers/gc-worker.js', 'dist/workers/bench-worker.js',
    'dist/bench/run.js',
  ]) t.true(files.includes(need), `packed: ${need}`);
  const stray = files.filter((f) => /^(dist\/)?test\/|fixtures|\.map$|^src\/|\.ts$/.test(f) && !f.endsWith('.d.ts'));
  t.deepEqual(stray, [], 'no tests, fixtures, sources or source maps');
});

test('installed from the tarball: imports, replays the sample, bench ends without sharedmap', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ctsab-pkg-'));
  try {
    const { filename } = pack(['--pack-destination', dir]);
    const pkg = join(dir, 'node_modules', 'conntrack-sab');
    mkdirSync(pkg, { recursive: true });
    execFileSync('tar', ['-xzf', join(dir, filename), '-C', pkg, '--strip-components=1']);
    // The runtime dependencies from this checkout (offline); dev dependencies deliberately absent.
    const deps = Object.keys((JSON.parse(execFileSync('cat', [join(pkg, 'package.json')], { encoding: 'utf8' })) as { dependencies: Record<string, string> }).dependencies);
    for (const d of deps) symlinkSync(realpathSync(join(root, 'node_modules', d)), join(dir, 'node_modules', d));
    t.false(existsSync(join(dir, 'node_modules', 'sharedmap')));
    t.false(existsSync(join(pkg, 'test')) || existsSync(join(pkg, 'dist', 'test')));

    const imp = spawnSync(process.execPath, ['--input-type=module', '-e',
      "import { ConntrackTable, Conntrack, ConntrackError } from 'conntrack-sab'; const t = ConntrackTable.create({ max: 16 }); new Conntrack(t).close(); console.log(typeof ConntrackError);"],
    { cwd: dir, encoding: 'utf8', timeout: 30_000 });
    t.is(imp.status, 0, imp.stderr);
    t.is(imp.stdout.trim(), 'function');

    const cli = join(pkg, 'dist', 'src', 'cli', 'main.js');
    const rep = spawnSync(process.execPath, [cli, 'replay', join(pkg, 'bench', 'samples', 'sample.pcap'), '-S'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    t.is(rep.status, 0, rep.stderr);
    t.regex(rep.stdout, /cpu=0/);

    const bench = spawnSync(process.execPath, [cli, 'bench', '--quick', '--only', 'hot', '--workers', '1', '--runs', '1'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    t.is(bench.signal, null, 'the bench ended by itself');
    t.is(bench.status, 0, bench.stderr);
    t.regex(bench.stderr, /sharedmap.*not installed.*skipped/);
    t.regex(bench.stdout, /hot\s+ours/);
    t.true(readdirSync(join(dir, 'conntrack-sab-bench')).includes('bench-quick.json'), 'results go to the current directory');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
