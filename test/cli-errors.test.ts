/**
 * The command line as the tools it stands beside: one exit-code rule (2 usage, 1 bad data,
 * 0 success), one-line errors `conntrack-sab <command>: <file>: <what>` (usage errors add a
 * pointer to --help), --version, the banner, -E's closing count, -o timestamp to the µs,
 * per-packet frame numbers, timestamps, ids and tuples, the table-full warning.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { encodePcap } from '../src/input/capture/reader.js';
import { LINKTYPE_ETHERNET } from '../src/input/packet/packet.js';
import { eth, tcp4, udp4 } from './helpers/frames.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ctsab-clierr-'));
const pkgVersion = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

interface Ran { code: number; out: string; err: string }

/** Run the CLI (asynchronously: the checks of a test run side by side). */
function run(args: string[], input?: Uint8Array): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [cli, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    c.on('error', reject);
    c.on('close', (code) => resolve({ code: code ?? -1, out, err }));
    c.stdin.on('error', () => {});
    c.stdin.end(input ?? undefined);
  });
}

const A = '192.168.7.1';
const B = '192.168.7.2';
const T0 = 1_700_000_000_000;
const frames = [
  tcp4({ src: A, dst: B, sport: 40000, dport: 80, flags: 'S', seq: 1000, win: 64240 }),
  tcp4({ src: B, dst: A, sport: 80, dport: 40000, flags: 'SA', seq: 5000, ack: 1001, win: 65160 }),
  tcp4({ src: A, dst: B, sport: 40000, dport: 80, flags: 'A', seq: 1001, ack: 5001, win: 502 }),
  udp4({ src: A, dst: B, sport: 5353, dport: 53, payload: 'q' }),
  udp4({ src: A, dst: B, sport: 5354, dport: 53, payload: 'q' }),
].map((p, i) => ({ data: eth(p), tsMs: T0 + i * 100 + 0.123 })); // 123 µs past each tenth of a second
const pcapBytes = encodePcap(LINKTYPE_ETHERNET, frames);
const capture = join(dir, 'small.pcap');
writeFileSync(capture, pcapBytes);
const text = join(dir, 'notes.txt');
writeFileSync(text, 'these are notes, not packets\n');
const gz = join(dir, 'small.pcap.gz');
writeFileSync(gz, gzipSync(pcapBytes));
const badGz = join(dir, 'broken.pcap.gz');
{
  const g = gzipSync(pcapBytes);
  writeFileSync(badGz, g.subarray(0, g.length - 30)); // cut: gzip reports an unexpected end
}
const truncated = join(dir, 'cut.pcap');
writeFileSync(truncated, pcapBytes.subarray(0, pcapBytes.length - 10));
const subdir = join(dir, 'a-directory');
mkdirSync(subdir);

/** A usage error: exit 2, one line naming the command, then the pointer to --help. */
async function usage(t: import('ava').ExecutionContext, args: string[], command: string | null, re: RegExp): Promise<void> {
  const r = await run(args);
  const who = command ? `conntrack-sab ${command}` : 'conntrack-sab';
  t.is(r.code, 2, `${args.join(' ')}: ${r.err}`);
  const lines = r.err.trimEnd().split('\n');
  t.is(lines.length, 2, r.err);
  t.true(lines[0]!.startsWith(`${who}: `), r.err);
  t.regex(lines[0]!, re);
  t.is(lines[1], `Try '${who} --help' for more information.`);
  t.is(r.out, '');
}

/** A data error: exit 1, exactly one line `conntrack-sab <command>: <file>: <what>`. */
async function dataError(t: import('ava').ExecutionContext, args: string[], command: string, file: string, re: RegExp): Promise<void> {
  const r = await run(args);
  t.is(r.code, 1, `${args.join(' ')}: ${r.err}`);
  const lines = r.err.trimEnd().split('\n');
  t.is(lines.length, 1, r.err);
  t.true(lines[0]!.startsWith(`conntrack-sab ${command}: ${file}: `), r.err);
  t.regex(lines[0]!, re);
}

test('usage errors: exit 2, one line and a pointer to --help (no help dump)', async (t) => {
  await Promise.all([
  usage(t, [], null, /missing command/),
  usage(t, ['frobnicate'], null, /unknown command 'frobnicate'/),
  usage(t, ['replay'], 'replay', /missing required argument 'capture'/),
  usage(t, ['replay', capture, '--bogus'], 'replay', /unknown option '--bogus'/),
  usage(t, ['replay', capture, '--max', 'lots'], 'replay', /--max expects an integer, got "lots"/),
  usage(t, ['replay', capture, '--workers', '0'], 'replay', /--workers must be an integer in 1\.\.64/),
  usage(t, ['replay', capture, '--dispatch', 'random'], 'replay', /random/),
  usage(t, ['replay', capture, '-o', 'fancy'], 'replay', /unknown output format "fancy"/),
  usage(t, ['replay', capture, '--sysctl', 'nf_conntrack_bogus=1'], 'replay', /unknown sysctl "nf_conntrack_bogus"/),
  usage(t, ['replay', capture, '--sysctl', 'nf_conntrack_tcp_loose=7'], 'replay', /out of range/),
  usage(t, ['list', capture, '-o', 'fancy'], 'list', /unknown output format "fancy"/),
  usage(t, ['list', capture, '--dport', '70000'], 'list', /--dport must be an integer 0\.\.65535/),
  usage(t, ['snapshot', capture], 'snapshot', /-w, --write <file> is required/),
  usage(t, ['stress', '--workers', 'many'], 'stress', /--workers expects an integer/),
  usage(t, ['bench', '--workers', 'x'], 'bench', /--workers: bad worker count "x"/),
  ]);
});

test('bad data: exit 1, one line "conntrack-sab <command>: <file>: <what>"', async (t) => {
  const missing = join(dir, 'missing.pcap');
  await Promise.all([
  dataError(t, ['replay', missing], 'replay', missing, /: No such file or directory$/),
  dataError(t, ['replay', subdir], 'replay', subdir, /: Is a directory$/),
  dataError(t, ['replay', text], 'replay', text, /: not a capture \(text; magic 0x74686573 at offset 0\)$/),
  dataError(t, ['replay', badGz], 'replay', badGz, /: gzip: unexpected end of file .*\(after \d+ packets\)$/),
  dataError(t, ['replay', truncated], 'replay', truncated, /offset \d+.*\(after 4 packets\)$/),
  dataError(t, ['replay', capture, '--per-packet', join(dir, 'no-such-dir', 'pp.jsonl')], 'replay', join(dir, 'no-such-dir', 'pp.jsonl'), /No such file or directory$/),
  dataError(t, ['list', missing], 'list', missing, /No such file or directory$/),
  dataError(t, ['count', text], 'count', text, /not a capture/),
  dataError(t, ['snapshot', capture, '-w', join(subdir, 'nope', 'x.snap')], 'snapshot', join(subdir, 'nope', 'x.snap'), /No such file or directory$/),
  ]);
  const badSnap = join(dir, 'bad.snap');
  const ok = await run(['snapshot', capture, '-w', badSnap]);
  t.is(ok.code, 0, ok.err);
  const snap = readFileSync(badSnap);
  snap[snap.length - 5] ^= 0xff;
  writeFileSync(badSnap, snap);
  await dataError(t, ['list', badSnap], 'list', badSnap, /./);
  // stdin that is not a capture
  const r = await run(['replay', '-'], new TextEncoder().encode('GET / HTTP/1.1\r\n'));
  t.is(r.code, 1);
  t.is(r.err, 'conntrack-sab replay: (stdin): not a capture (text; magic 0x47455420 at offset 0)\n');
});

test('unreadable file: exit 1, "Permission denied" (skipped as root)', async (t) => {
  if (process.getuid?.() === 0) {
    t.log('skipped: root reads any file');
    t.pass();
    return;
  }
  const f = join(dir, 'secret.pcap');
  writeFileSync(f, pcapBytes);
  chmodSync(f, 0);
  await dataError(t, ['replay', f], 'replay', f, /Permission denied$/);
});

test('--version, --help and success exit 0', async (t) => {
  let r = await run(['--version']);
  t.is(r.code, 0);
  t.is(r.out, `conntrack-sab ${pkgVersion}\n`);
  r = await run(['--help']);
  t.is(r.code, 0);
  t.regex(r.out, /replay/);
  r = await run(['replay', '--help']);
  t.is(r.code, 0);
  t.regex(r.out, /--per-packet/);
  r = await run(['replay', capture]);
  t.is(r.code, 0);
  t.is(r.err, '');
});

test('banners carry our own name and version; -E ends with the event count', async (t) => {
  let r = await run(['replay', capture, '-L']);
  t.is(r.code, 0);
  t.is(r.err, `conntrack-sab v${pkgVersion}: 3 flow entries have been shown.\n`);
  t.notRegex(r.err, /conntrack v1/);
  r = await run(['replay', capture, '-E']);
  t.is(r.code, 0);
  t.is(r.out.trimEnd().split('\n').length, 5);
  t.is(r.err, `conntrack-sab v${pkgVersion}: 5 flow events have been shown.\n`);
  r = await run(['list', capture]);
  t.is(r.err, `conntrack-sab v${pkgVersion}: 3 flow entries have been shown.\n`);
  r = await run(['replay', capture, '-L', '--head', '1']);
  t.is(r.out.trimEnd().split('\n').length, 1);
  t.is(r.err, `conntrack-sab v${pkgVersion}: 1 of 3 flow entries have been shown.\n`);
});

test('-o timestamp prints the capture time to the microsecond', async (t) => {
  const r = await run(['replay', capture, '-E', '-o', 'timestamp']);
  t.is(r.code, 0, r.err);
  const stamps = r.out.trimEnd().split('\n').map((l) => /^\[(\d+\.\d{6})\]\t/.exec(l)?.[1]);
  t.deepEqual(stamps, ['1700000000.000123', '1700000000.100123', '1700000000.200123', '1700000000.300123', '1700000000.400123']);
  // The same with packet workers (events read from the shared ring).
  const w = await run(['replay', capture, '-E', '-o', 'timestamp', '--workers', '2']);
  t.is(w.code, 0, w.err);
  t.is(w.out, r.out);
});

test('--per-packet lines carry frame (1-based), capture time, connection id and tuple', async (t) => {
  for (const workers of ['1', '2']) {
    const out = join(dir, `pp${workers}.jsonl`);
    const r = await run(['replay', capture, '--per-packet', out, '--workers', workers]);
    t.is(r.code, 0, r.err);
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    t.deepEqual(lines.map((l) => l['frame']), [1, 2, 3, 4, 5]);
    t.is(lines[1]!['ts'], 1700000000.100123);
    t.like(lines[0]!, { ctstate: 'new', dir: 'original', proto: 6, src: A, dst: B, sport: 40000, dport: 80 });
    t.like(lines[1]!, { ctstate: 'established', dir: 'reply', src: B, dst: A, sport: 80, dport: 40000 });
    // One connection, one id; the UDP flows have their own.
    t.true(typeof lines[0]!['id'] === 'number' && (lines[0]!['id'] as number) > 0);
    t.is(lines[1]!['id'], lines[0]!['id']);
    t.is(lines[2]!['id'], lines[0]!['id']);
    t.not(lines[3]!['id'], lines[0]!['id']);
    t.not(lines[4]!['id'], lines[3]!['id']);
  }
});

test('-L -o json writes one JSON object per line', async (t) => {
  const r = await run(['replay', capture, '-L', '-o', 'json']);
  t.is(r.code, 0, r.err);
  const objs = r.out.trimEnd().split('\n').map((l) => JSON.parse(l) as { proto: string });
  t.deepEqual(objs.map((o) => o.proto).sort(), ['tcp', 'udp', 'udp']);
});

test('table full: a rate-limited warning with a hint, and a summary at the end (one thread and workers)', async (t) => {
  for (const workers of ['1', '2']) {
    const r = await run(['replay', capture, '--max', '1', '--workers', workers]);
    t.is(r.code, 0, r.err);
    const lines = r.err.trimEnd().split('\n');
    t.regex(lines[0]!, /^conntrack-sab replay: nf_conntrack: table full, dropping packet \(frame \d+; nf_conntrack_max 1, raise it with --max\)$/);
    t.regex(r.err, /table full \(nf_conntrack_max 1\): \d+ packets dropped, \d+ connections early-dropped to make room; raise --max\n$/);
    t.is(lines.length, 2, 'one warning (rate-limited), one summary');
  }
  // Nothing said when nothing was dropped.
  t.is((await run(['replay', capture])).err, '');
});

test('gzip captures are recognised by their magic, whatever the name', async (t) => {
  const sorted = (s: string): string[] => s.trimEnd().split('\n').sort(); // bucket order is keyed per table
  const plain = await run(['replay', capture, '-L']);
  const noSuffix = join(dir, 'compressed-capture');
  writeFileSync(noSuffix, gzipSync(pcapBytes));
  for (const f of [gz, noSuffix]) {
    const r = await run(['replay', f, '-L']);
    t.is(r.code, 0, r.err);
    t.deepEqual(sorted(r.out), sorted(plain.out));
  }
  const viaStdin = await run(['replay', '-', '-L'], gzipSync(pcapBytes));
  t.is(viaStdin.code, 0, viaStdin.err);
  t.deepEqual(sorted(viaStdin.out), sorted(plain.out));
  // The table commands stream their capture input the same way.
  const [list, count] = await Promise.all([run(['list', '-'], gzipSync(pcapBytes)), run(['count', noSuffix])]);
  t.is(list.code, 0, list.err);
  t.deepEqual(sorted(list.out), sorted(plain.out));
  t.is(count.out, '3\n');
});

test('npm start prints a short summary: the first entries, their count, the statistics', async (t) => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
  const m = /^node dist\/src\/cli\/main\.js (.*)$/.exec(pkg.scripts['start']!);
  t.truthy(m, pkg.scripts['start']);
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const args = m![1]!.split(' ').map((a) => (a.endsWith('.pcap') ? join(root, a) : a));
  const r = await run(args);
  t.is(r.code, 0, r.err);
  const lines = r.out.trimEnd().split('\n');
  t.true(lines.length <= 20, `${lines.length} lines`);
  t.true(lines.some((l) => /^cpu=0\s+found=\d+/.test(l)), r.out);
  t.true(lines.filter((l) => /^(tcp|udp)\s/.test(l)).length >= 5);
  t.regex(r.err, /: 10 of \d+ flow entries have been shown\.\n$/);
});
