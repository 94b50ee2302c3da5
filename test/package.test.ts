/**
 * The published package: `npm pack` holds the library, its workers, the bench, the sample, README
 * and LICENSE, and no tests or fixtures; installed elsewhere (without dev dependencies) it
 * imports, replays the sample and runs `conntrack-sab bench`, which skips the missing optional
 * sharedmap baseline and ends.
 */
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
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

test('the published types: every entry export documented, internals stripped, a strict consumer compiles', async (t) => {
  const { exportedSymbols } = await import('./helpers/api-docs.js');
  const syms = exportedSymbols(join(root, 'dist/src/index.d.ts'));
  t.true(syms.length > 100);
  t.deepEqual(syms.filter((s) => s.file === null).map((s) => s.name), [], 'every export has a declaration');
  t.deepEqual(syms.filter((s) => !s.documented).map((s) => s.name), [], 'every export has a doc comment');
  const names = new Set(syms.map((s) => s.name));
  for (const internal of ['Chains', 'setConnLabel', 'connAcct', 'setConnTimeoutPolicy', 'BATCH_MAGIC', 'ENTRY_WORDS']) {
    t.false(names.has(internal), `${internal} is not exported by the entry`);
  }

  // A strict TypeScript consumer of the package: uses the public API, and may not reach internals.
  const dir = mkdtempSync(join(tmpdir(), 'ctsab-types-'));
  try {
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(root, join(dir, 'node_modules', 'conntrack-sab'));
    symlinkSync(join(root, 'node_modules', '@types'), join(dir, 'node_modules', '@types'));
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: {
      strict: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', lib: ['ES2022'], types: ['node'], noEmit: true, skipLibCheck: false,
    }, files: ['use.ts'] }));
    writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
    writeFileSync(join(dir, 'use.ts'), `
import { ConntrackTable, Conntrack, ConntrackPool, CtOps, subscribeEvents, isConntrackError, LINKTYPE_RAW, type ConnEventJson, type ConnEntryJson } from 'conntrack-sab';
const table = ConntrackTable.create({ max: 16 });
const ct = new Conntrack(table);
const v = ct.decide(new Uint8Array(20), { linktype: LINKTYPE_RAW, now: 0 });
const s: string = v.ctstate;
const sub = subscribeEvents(table);
for (const ev of sub.poll()) { const j: ConnEventJson = ev.toJSON(); const o: string = ev.original.src; void j; void o; }
const listed: ConnEntryJson[] = new CtOps(table).dump().json();
const pool = new ConntrackPool({ table, workers: 1 });
const batch = pool.createBatch({ capacity: 4 });
const ok: boolean = batch.fits(60);
try { batch.push(LINKTYPE_RAW, new Uint8Array(60), 0, 60, 0); } catch (e) { if (isConntrackError(e)) console.log(e.code); }
// @ts-expect-error internal
table.i32;
// @ts-expect-error internal
table.sec;
// @ts-expect-error internal
ct.chains;
// @ts-expect-error internal
batch.i32;
// @ts-expect-error internal
batch.sec;
// @ts-expect-error internal
table.registerWorker();
void s; void listed; void ok;
`);
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8', timeout: 60_000 });
    t.is(r.status, 0, `tsc: ${r.stdout}${r.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
