/**
 * Fuzz seeds recorded from the kernel (scripts/oracle/fuzz.py, committed under
 * test/fixtures/kernel/fuzz_<generator>_<seed>/): every packet's verdict and every connection's
 * NEW/UPDATE event stream (types, TCP states, flags, timeout within one second) must agree.
 * kernel-fixtures.test.ts checks their verdicts too; this adds the events.
 */
import test from 'ava';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { diffWithKernel, minimiseVerdict, parseEventLine } from '../src/ops/kernel-diff.js';
import { readCapture } from '../src/input/capture/reader.js';

const root = new URL('../../test/fixtures/kernel/', import.meta.url);
const dirs = existsSync(root)
  ? readdirSync(root, { withFileTypes: true }).filter((d) => d.isDirectory() && d.name.startsWith('fuzz_')).map((d) => d.name).sort()
  : [];

test('fuzz seeds are committed', (t) => {
  t.true(dirs.length >= 3, `expected at least 3 fuzz fixtures, found ${dirs.length}`);
});

for (const name of dirs) {
  test(`fuzz seed ${name}: verdicts and event streams agree with the kernel`, (t) => {
    const dir = new URL(`${name}/`, root);
    const meta = JSON.parse(readFileSync(new URL('meta.json', dir), 'utf8')) as {
      sysctls?: Record<string, number>; fuzz?: { generator: string; seed: number; sent: number }; packets: number;
    };
    t.truthy(meta.fuzz, 'meta.json names the generator and seed');
    t.is(meta.fuzz?.sent, meta.packets, 'every sent packet was logged once');
    const events = readFileSync(new URL('events.txt', dir), 'utf8');
    const d = diffWithKernel(readFileSync(new URL('capture.pcap', dir)), events, meta.sysctls ?? {});
    t.is(d.captureError, null);
    t.is(d.packets, meta.packets);
    t.deepEqual(d.verdictMismatches.slice(0, 5).map((m) =>
      `#${m.index} kernel ${m.kernel?.ctstate}/${m.kernel?.dir} ours ${m.ours.ctstate}/${m.ours.dir} ${m.reason ?? ''}`), []);
    t.deepEqual(d.eventMismatches.slice(0, 5).map((m) => `${m.key} #${m.at}: kernel ${m.kernel} ours ${m.ours}`), []);
    t.true(d.kernelEvents > 100, 'the seed has a real event stream');
    t.is(d.ourEvents, d.kernelEvents);
  });
}

test('event lines: type, direction-free key, timeout apart', (t) => {
  const k = parseEventLine('[1796038574.566839]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.200.1.10 dst=10.200.2.13 sport=20720 dport=443 [UNREPLIED] src=10.200.2.13 dst=10.200.1.10 sport=443 dport=20720 id=2952248733');
  t.truthy(k);
  t.is(k!.type, 'NEW');
  t.is(k!.timeout, 120);
  t.is(k!.text, 'ipv4 2 tcp 6 SYN_SENT src=10.200.1.10 dst=10.200.2.13 sport=20720 dport=443 [UNREPLIED] src=10.200.2.13 dst=10.200.1.10 sport=443 dport=20720');
  const r = parseEventLine(' [UPDATE] ipv4     2 tcp      6 60 SYN_RECV src=10.200.2.13 dst=10.200.1.10 sport=443 dport=20720 src=10.200.1.10 dst=10.200.2.13 sport=20720 dport=443 id=1');
  t.is(r!.key, k!.key);
  t.is(parseEventLine('[DESTROY] ipv4 2 tcp 6 9 CLOSE src=1.2.3.4 dst=1.2.3.5 sport=1 dport=2 src=1.2.3.5 dst=1.2.3.4 sport=2 dport=1'), null);
  t.is(parseEventLine('# conntrack -F'), null);
  const icmp = parseEventLine('    [NEW] ipv4     2 icmp     1 30 src=10.200.1.14 dst=10.200.2.15 type=8 code=0 id=57762 [UNREPLIED] src=10.200.2.15 dst=10.200.1.14 type=0 code=0 id=57762 id=99');
  t.is(icmp!.key, '1|10.200.1.14#57762|10.200.2.15#57762');
  t.true(icmp!.text.endsWith('id=57762'));
});

test('minimiser: a disagreement is cut down to its connection, ending with the disagreeing packet', (t) => {
  const name = dirs.find((d) => d.startsWith('fuzz_tcp'));
  if (!name) return t.pass('no fuzz fixture');
  const cap = readFileSync(new URL(`${name}/capture.pcap`, root));
  // Replaying with the wrong settings makes disagreements to minimise.
  const wrong = { nf_conntrack_tcp_be_liberal: 1, nf_conntrack_tcp_loose: 0 };
  const d = diffWithKernel(cap, null, wrong);
  const first = d.verdictMismatches[0];
  t.truthy(first, 'wrong sysctls disagree somewhere');
  if (!first) return;
  const min = minimiseVerdict(cap, wrong, first.index);
  t.true(min.packets >= 1 && min.packets < d.packets);
  const small = diffWithKernel(min.capture, null, wrong);
  t.is(small.packets, min.packets);
  // Every packet kept belongs to the disagreeing packet's connection.
  for (const k of small.keys) t.is(k, first.key);
  const rec = (bytes: Uint8Array, i: number): string => {
    const r = readCapture(bytes);
    for (let j = 0; ; j++) {
      const x = r.next();
      if (x === null) return '';
      if (j === i) return Buffer.from(x.buf.subarray(x.off, x.off + x.len)).toString('hex');
    }
  };
  t.is(rec(min.capture, min.packets - 1), rec(cap, first.index));
});
