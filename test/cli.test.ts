/** The conntrack-sab command line, run as a user would. */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodePcap } from '../src/input/capture/reader.js';
import { LINKTYPE_ETHERNET } from '../src/input/packet/packet.js';
import { eth, tcp4, udp4 } from './helpers/frames.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ctsab-cli-'));

function run(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const A = '192.168.7.1';
const B = '192.168.7.2';
const frames = [
  tcp4({ src: A, dst: B, sport: 40000, dport: 80, flags: 'S', seq: 1000, win: 64240, options: { mss: 1460, wscale: 7, sackPerm: true } }),
  tcp4({ src: B, dst: A, sport: 80, dport: 40000, flags: 'SA', seq: 5000, ack: 1001, win: 65160, options: { mss: 1460, wscale: 7, sackPerm: true } }),
  tcp4({ src: A, dst: B, sport: 40000, dport: 80, flags: 'A', seq: 1001, ack: 5001, win: 502 }),
  udp4({ src: A, dst: B, sport: 5353, dport: 53, payload: 'q' }),
  udp4({ src: A, dst: B, sport: 5353, dport: 53, payload: 'q' }),
].map((p, i) => ({ data: eth(p), tsMs: 1_700_000_000_000 + i * 100 }));
const capture = join(dir, 'small.pcap');
writeFileSync(capture, encodePcap(LINKTYPE_ETHERNET, frames));

test('replay --per-packet writes one JSON object per packet in order', (t) => {
  const out = join(dir, 'pp.jsonl');
  const r = run('replay', capture, '--per-packet', out);
  t.is(r.code, 0, r.err);
  const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { i: number; ctstate: string; dir: string | null; tcpState?: string });
  t.deepEqual(lines.map((l) => [l.i, l.ctstate, l.dir]), [
    [0, 'new', 'original'], [1, 'established', 'reply'], [2, 'established', 'original'],
    [3, 'new', 'original'], [4, 'new', 'original'],
  ]);
  t.is(lines[0]!.tcpState, 'SYN_SENT');
  t.is(lines[2]!.tcpState, 'ESTABLISHED');
});

test('replay -L prints conntrack -L lines, -S the statistics', (t) => {
  const r = run('replay', capture, '-L', '-S');
  t.is(r.code, 0, r.err);
  const lines = r.out.trimEnd().split('\n');
  t.true(lines.some((l) => /^tcp +6 431999 ESTABLISHED src=192\.168\.7\.1 dst=192\.168\.7\.2 sport=40000 dport=80 src=192\.168\.7\.2 dst=192\.168\.7\.1 sport=80 dport=40000 \[ASSURED\] mark=0 use=1$/.test(l)), r.out);
  t.true(lines.some((l) => /^udp +17 30 src=192\.168\.7\.1 dst=192\.168\.7\.2 sport=5353 dport=53 \[UNREPLIED\] src=192\.168\.7\.2 dst=192\.168\.7\.1 sport=53 dport=5353 mark=0 use=1$/.test(l)), r.out);
  t.true(lines.some((l) => /^cpu=0\s+found=\d+ invalid=0 insert=2 insert_failed=0 drop=0 early_drop=0 error=0 search_restart=0 clash_resolve=0 chaintoolong=0$/.test(l)), r.out);
  t.regex(r.err, /^conntrack-sab v\d+\.\d+\.\d+\S*: 2 flow entries have been shown\.\n$/);
});

test('replay -E prints NEW and UPDATE events like conntrack -E', (t) => {
  const r = run('replay', capture, '-E');
  t.is(r.code, 0, r.err);
  const lines = r.out.trimEnd().split('\n');
  t.regex(lines[0]!, /^ {4}\[NEW\] tcp +6 120 SYN_SENT src=192\.168\.7\.1 dst=192\.168\.7\.2 sport=40000 dport=80 \[UNREPLIED\] src=192\.168\.7\.2/);
  t.regex(lines[1]!, /^ \[UPDATE\] tcp +6 60 SYN_RECV src=192\.168\.7\.1/);
  t.regex(lines[2]!, /^ \[UPDATE\] tcp +6 432000 ESTABLISHED .* \[ASSURED\]/);
  t.regex(lines[3]!, /^ {4}\[NEW\] udp +17 30 src=192\.168\.7\.1/);
});

test('replay --json prints JSON lines as it goes: entries, then a summary', (t) => {
  const r = run('replay', capture, '--json', '--sysctl', 'net.netfilter.nf_conntrack_udp_timeout=60');
  t.is(r.code, 0, r.err);
  const lines = r.out.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const entries = lines.filter((l) => l['type'] === 'entry') as unknown as { proto: string; timeout: number }[];
  const o = lines[lines.length - 1] as { type: string; packets: number; counts: Record<string, number>; entries: number; sysctls: Record<string, number> };
  t.is(o.type, 'summary');
  t.is(o.packets, 5);
  t.deepEqual(o.counts, { new: 3, established: 2, related: 0, invalid: 0, untracked: 0, held: 0 });
  t.is(o.entries, 2);
  t.is(entries.length, 2);
  t.is(o.sysctls['nf_conntrack_udp_timeout'], 60);
  t.is(entries.find((e) => e.proto === 'udp')!.timeout, 60);
  // With -E, the events come first, each as it happened.
  const e = run('replay', capture, '--json', '-E');
  const types = e.out.trimEnd().split('\n').map((l) => (JSON.parse(l) as { type: string }).type);
  t.deepEqual(types, ['event', 'event', 'event', 'event', 'entry', 'entry', 'summary']);
});

test('bad options and files give a clear error and a non-zero exit', (t) => {
  let r = run('replay', join(dir, 'missing.pcap'));
  t.is(r.code, 1);
  t.regex(r.err, /No such file or directory/);
  r = run('replay', capture, '--sysctl', 'nf_conntrack_bogus=1');
  t.is(r.code, 2);
  t.regex(r.err, /unknown sysctl "nf_conntrack_bogus"/);
  r = run('replay', capture, '--sysctl', 'nf_conntrack_tcp_loose=7');
  t.is(r.code, 2);
  t.regex(r.err, /out of range/);
  r = run('replay');
  t.is(r.code, 2);
});

test('a truncated capture: packets before the damage are decided, the error names the offset', (t) => {
  const bytes = readFileSync(capture);
  const cut = join(dir, 'cut.pcap');
  writeFileSync(cut, bytes.subarray(0, bytes.length - 10));
  const out = join(dir, 'cut.jsonl');
  const r = run('replay', cut, '--per-packet', out);
  t.is(r.code, 1);
  t.regex(r.err, /offset \d+/);
  t.regex(r.err, /after 4 packets/);
  t.is(readFileSync(out, 'utf8').trim().split('\n').length, 4);
});
