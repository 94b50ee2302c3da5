/**
 * Every kernel-recorded fixture (test/fixtures/kernel/<scenario>/, recorded by
 * scripts/oracle/record.sh) is compared in full with one replay (src/ops/oracle.ts): the
 * kernel's verdict for every packet, every conntrack -E event (type, TCP/SCTP state,
 * ASSURED/UNREPLIED, timeout) and the final conntrack -L table (the same fields, remaining
 * timeouts within the dump's one-second rounding). Fixtures added later are picked up as they are.
 */
import test from 'ava';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { compareFixture, compareWireWithKernel, compareWithKernel, compareFixtureDir, formatDifference, parseCtLine } from '../src/ops/oracle.js';

const root = fileURLToPath(new URL('../../test/fixtures/kernel/', import.meta.url));
const dirs = existsSync(root)
  ? readdirSync(root, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort()
  : [];

test('kernel fixtures exist', (t) => {
  t.true(dirs.length >= 25, `expected at least 25 kernel fixtures, found ${dirs.length}`);
});

for (const name of dirs) {
  test(`kernel fixture ${name}: packets, events and final table agree with the kernel`, (t) => {
    const dir = `${root}${name}/`;
    // A fixture without its event stream or table would be compared only in part.
    t.true(existsSync(`${dir}events.txt`), 'events.txt missing: re-record with record.sh');
    t.true(existsSync(`${dir}table.txt`), 'table.txt missing: re-record with record.sh');
    const r = compareFixtureDir(dir);
    // A recording that lost packets would make correct tracking look wrong: refuse it plainly.
    t.falsy(r.meta.capture_problems, 'the recorder reported capture problems: re-record this fixture');
    if (r.meta.nft_logged !== undefined) t.is(r.meta.packets, r.meta.nft_logged, 'capture holds fewer packets than the kernel logged');
    t.is(r.captureError, null);
    t.true(r.packets > 0);
    if (r.meta.packets !== undefined) t.is(r.packets, r.meta.packets, 'packet count differs from meta.json');
    t.is(r.labelled, r.packets, 'every packet carries a kernel label');
    // Nothing in the recording went uncompared: every event line and table line was matched.
    const evLines = readFileSync(`${dir}events.txt`, 'utf8').split('\n').filter((l) => l.startsWith('['));
    t.true(r.events > 0 || evLines.length === 0 || /# conntrack -F/.test(readFileSync(`${dir}events.txt`, 'utf8')));
    const tblLines = readFileSync(`${dir}table.txt`, 'utf8').split('\n').filter((l) => l.trim());
    t.is(r.tableEntries, tblLines.length);
    t.deepEqual(r.differences.slice(0, 20).map(formatDifference), [],
      `${r.agree}/${r.packets} packets, ${r.events} events, ${r.destroys} destroys, ${r.tableEntries} table entries`);
    t.is(r.agree, r.packets);
  });
}

// The comparison itself must see what it claims to check: each field altered in a real
// recording (tcp_basic_v4 and udp_timeout) is reported.
function fixture(name: string): { capture: Uint8Array; events: string; table: string; sysctls: Record<string, number> } {
  const dir = `${root}${name}/`;
  const meta = JSON.parse(readFileSync(`${dir}meta.json`, 'utf8')) as { sysctls?: Record<string, number> };
  return {
    capture: readFileSync(`${dir}capture.pcap`), events: readFileSync(`${dir}events.txt`, 'utf8'),
    table: readFileSync(`${dir}table.txt`, 'utf8'), sysctls: meta.sysctls ?? {},
  };
}

test('the comparison reports an altered state, flag, timeout, missing entry or missing event', (t) => {
  const f = fixture('tcp_basic_v4');
  t.deepEqual(compareFixture(f).differences, []);
  const fields = (table: string, events = f.events): string[] =>
    compareFixture({ ...f, table, events }).differences.map((d) => `${d.part}:${d.field}`);
  const tbl = f.table.split('\n');
  // Table: TIME_WAIT → CLOSE, ASSURED dropped, 117 s → 110 s, one entry removed.
  t.deepEqual(fields(f.table.replace('TIME_WAIT', 'CLOSE')), ['table:state']);
  t.deepEqual(fields(f.table.replace(' [ASSURED]', '')), ['table:flags']);
  t.deepEqual(fields(tbl.map((l) => l.replace(' 117 TIME_WAIT', ' 110 TIME_WAIT')).join('\n')), ['table:timeout']);
  t.deepEqual(fields(tbl.slice(1).join('\n')), ['table:present']);
  // Events: an UPDATE's state, timeout and flags; one removed; an extra one.
  const ev = f.events.split('\n');
  const swap = (i: number, a: string, b: string): string => ev.map((l, j) => (j === i ? l.replace(a, b) : l)).join('\n');
  t.deepEqual(fields(f.table, swap(3, 'FIN_WAIT', 'CLOSE_WAIT')), ['event:state']);
  t.deepEqual(fields(f.table, swap(3, ' 120 FIN_WAIT', ' 100 FIN_WAIT')), ['event:timeout']);
  t.deepEqual(fields(f.table, swap(2, ' [ASSURED]', '')), ['event:flags']);
  // The first connection's last event (TIME_WAIT, line 7) removed, or repeated.
  t.deepEqual(fields(f.table, ev.filter((_l, j) => j !== 6).join('\n')), ['event:event']);
  t.deepEqual(fields(f.table, [...ev.slice(0, 7), ev[6]!, ...ev.slice(7)].join('\n')), ['event:event']);
});

test('the comparison reports a missing, extra or altered DESTROY', (t) => {
  const f = fixture('udp_timeout');
  t.deepEqual(compareFixture(f).differences, []);
  const ev = f.events.split('\n');
  const fields = (events: string): string[] => compareFixture({ ...f, events }).differences.map((d) => `${d.part}:${d.field}`);
  const firstDestroy = ev.findIndex((l) => l.includes('[DESTROY]'));
  t.deepEqual(fields(ev.filter((_l, j) => j !== firstDestroy).join('\n')), ['destroy:destroyed']);
  t.deepEqual(fields(ev.map((l, j) => (j === firstDestroy ? l.replace(' id=', ' [ASSURED] id=') : l)).join('\n')), ['destroy:flags']);
  // A DESTROY of a connection we never had.
  t.deepEqual(fields([...ev, ev[firstDestroy]!.replace(/42501/g, '42999')].join('\n')).sort(), ['destroy:destroyed']);
});

test('conntrack lines parse into the compared fields', (t) => {
  const l = parseCtLine('[1795595569.494691]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.200.1.2 dst=10.200.2.2 sport=41001 dport=5001 [UNREPLIED] src=10.200.2.2 dst=10.200.1.2 sport=5001 dport=41001 id=419267369');
  t.deepEqual(
    { type: l.type, ts: l.tsMs, l4: l.l4, timeout: l.timeout, state: l.state, unreplied: l.unreplied, assured: l.assured, id: l.id },
    { type: 'NEW', ts: 1795595569494.691, l4: 6, timeout: 120, state: 'SYN_SENT', unreplied: true, assured: false, id: 419267369 },
  );
  t.is(l.orig, 'src=10.200.1.2 dst=10.200.2.2 sport=41001 dport=5001');
  t.is(l.reply, 'src=10.200.2.2 dst=10.200.1.2 sport=5001 dport=41001');
  const d = parseCtLine('[1795595624.474214]\t[DESTROY] ipv4     2 udp      17 src=10.1.1.1 dst=10.2.2.2 sport=1 dport=2 src=10.2.2.2 dst=10.1.1.1 sport=2 dport=1 [ASSURED] id=7');
  t.deepEqual([d.timeout, d.state, d.unreplied, d.assured], [null, null, false, true]);
  t.throws(() => parseCtLine('tcp 6 120 garbage'));
});
// Fragment fixtures: wire.pcap holds what reached the router (fragments before reassembly).
// Replayed with defragmentation, every datagram we decide must carry the kernel's label of the
// reassembled packet, and every fragment we held or dropped must belong to a datagram the kernel
// never logged either.
const wireDirs = dirs.filter((d) => existsSync(`${root}${d}/wire.pcap`));

test('fragment fixtures exist', (t) => {
  t.true(wireDirs.length >= 2, `expected fragment fixtures with wire.pcap, found ${wireDirs.length}`);
});

for (const name of wireDirs) {
  test(`kernel fixture ${name}: the fragments on the wire get the kernel's verdict of their datagram`, (t) => {
    const dir = `${root}${name}/`;
    const meta = JSON.parse(readFileSync(`${dir}meta.json`, 'utf8')) as { sysctls?: Record<string, number>; wire_packets?: number };
    const r = compareWireWithKernel(readFileSync(`${dir}wire.pcap`), readFileSync(`${dir}capture.pcap`), meta.sysctls ?? {});
    t.log(`${name}: ${r.wirePackets} packets on the wire (${r.fragments} fragments), ${r.kernelDatagrams} logged by the kernel; ` +
      `${r.agree}/${r.kernelDatagrams} agree, fragments ${r.fragmentsAgree} with their datagram's verdict + ${r.fragmentsUnlogged} held/dropped as the kernel did`);
    if (meta.wire_packets !== undefined) t.is(r.wirePackets, meta.wire_packets);
    t.true(r.fragments > 0);
    t.deepEqual(r.mismatches.slice(0, 15), []);
    t.is(r.matched, r.kernelDatagrams);
    t.is(r.agree, r.kernelDatagrams);
    t.is(r.fragmentsAgree + r.fragmentsUnlogged, r.fragments, 'every fragment accounted for');
    // Without reassembly the same capture disagrees: the comparison can fail.
    const off = compareWireWithKernel(readFileSync(`${dir}wire.pcap`), readFileSync(`${dir}capture.pcap`), { ...meta.sysctls, nf_conntrack_defrag: 0 });
    t.true(off.mismatches.length > 0, 'decided fragment by fragment, the replay must not agree');
  });
}
