/**
 * Every kernel-recorded fixture (test/fixtures/kernel/<scenario>/capture.pcap, recorded by
 * scripts/oracle/record.sh) must replay with exactly the kernel's decision for every packet.
 */
import test from 'ava';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { compareWireWithKernel, compareWithKernel } from '../src/ops/oracle.js';

const root = new URL('../../test/fixtures/kernel/', import.meta.url);
const dirs = existsSync(root)
  ? readdirSync(root, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort()
  : [];

test('kernel fixtures exist', (t) => {
  t.true(dirs.length >= 10, `expected at least 10 kernel fixtures, found ${dirs.length}`);
});

for (const name of dirs) {
  test(`kernel fixture ${name}: every packet agrees with the kernel`, (t) => {
    const dir = new URL(`${name}/`, root);
    const meta = JSON.parse(readFileSync(new URL('meta.json', dir), 'utf8')) as {
      sysctls?: Record<string, number>; packets?: number; nft_logged?: number; capture_problems?: unknown;
    };
    // A recording that lost packets would make correct tracking look wrong: refuse it plainly.
    t.falsy(meta.capture_problems, 'the recorder reported capture problems: re-record this fixture');
    if (meta.nft_logged !== undefined) t.is(meta.packets, meta.nft_logged, 'capture holds fewer packets than the kernel logged');
    const bytes = readFileSync(new URL('capture.pcap', dir));
    const r = compareWithKernel(bytes, meta.sysctls ?? {});
    t.is(r.captureError, null);
    t.true(r.packets > 0);
    if (meta.packets !== undefined) t.is(r.packets, meta.packets, 'packet count differs from meta.json');
    t.is(r.labelled, r.packets, 'every packet carries a kernel label');
    const shown = r.mismatches.slice(0, 15).map((m) =>
      `#${m.index}: kernel ${m.expected ? `${m.expected.ctstate}/${m.expected.dir}` : 'unlabelled'}, ours ${m.got.ctstate}/${m.got.dir}` +
      `${m.reason ? ` (${m.reason})` : ''}${m.tcpState ? ` [${m.tcpState}]` : ''}`);
    t.deepEqual(shown, [], `${r.agree}/${r.packets} agree`);
    t.is(r.agree, r.packets);
  });
}

// Fragment fixtures: wire.pcap holds what reached the router (fragments before reassembly).
// Replayed with defragmentation, every datagram we decide must carry the kernel's label of the
// reassembled packet, and every fragment we held or dropped must belong to a datagram the kernel
// never logged either.
const wireDirs = dirs.filter((d) => existsSync(new URL(`${d}/wire.pcap`, root)));

test('fragment fixtures exist', (t) => {
  t.true(wireDirs.length >= 2, `expected fragment fixtures with wire.pcap, found ${wireDirs.length}`);
});

for (const name of wireDirs) {
  test(`kernel fixture ${name}: the fragments on the wire get the kernel's verdict of their datagram`, (t) => {
    const dir = new URL(`${name}/`, root);
    const meta = JSON.parse(readFileSync(new URL('meta.json', dir), 'utf8')) as { sysctls?: Record<string, number>; wire_packets?: number };
    const r = compareWireWithKernel(readFileSync(new URL('wire.pcap', dir)), readFileSync(new URL('capture.pcap', dir)), meta.sysctls ?? {});
    t.log(`${name}: ${r.wirePackets} packets on the wire (${r.fragments} fragments), ${r.kernelDatagrams} logged by the kernel; ` +
      `${r.agree}/${r.kernelDatagrams} agree, fragments ${r.fragmentsAgree} with their datagram's verdict + ${r.fragmentsUnlogged} held/dropped as the kernel did`);
    if (meta.wire_packets !== undefined) t.is(r.wirePackets, meta.wire_packets);
    t.true(r.fragments > 0);
    t.deepEqual(r.mismatches.slice(0, 15), []);
    t.is(r.matched, r.kernelDatagrams);
    t.is(r.agree, r.kernelDatagrams);
    t.is(r.fragmentsAgree + r.fragmentsUnlogged, r.fragments, 'every fragment accounted for');
    // Without reassembly the same capture disagrees: the comparison can fail.
    const off = compareWireWithKernel(readFileSync(new URL('wire.pcap', dir)), readFileSync(new URL('capture.pcap', dir)), { ...meta.sysctls, nf_conntrack_defrag: 0 });
    t.true(off.mismatches.length > 0, 'decided fragment by fragment, the replay must not agree');
  });
}
