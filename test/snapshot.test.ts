/** Snapshot and restore: exact round trips, decisions that continue unchanged, refusals. */
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readCapture } from '../src/input/capture/reader.js';
import { Conntrack } from '../src/track/core.js';
import { entryJson, formatEntry, type EntryJson } from '../src/ops/format.js';
import { checkInvariants, formatInvariants } from '../src/table/invariants.js';
import { H_NEXT_ID } from '../src/table/layout.js';
import { LINKTYPE_NFLOG } from '../src/input/packet/packet.js';
import { nflogTimestampMs } from '../src/input/packet/parse.js';
import { CtOps } from '../src/ops/ops.js';
import type { TrackerContext } from '../src/track/proto/l4proto.js';
import { TCP_STATE_NAMES } from '../src/track/proto/tcp.js';
import { clockFromEpochMs, replay } from '../src/ops/replay.js';
import {
  HEADER_BYTES, SnapshotError, crc32, decodeSnapshot, encodeSnapshot, loadSnapshotFile, restoreSnapshot,
  saveSnapshotFile,
} from '../src/ops/snapshot.js';
import { ConntrackTable } from '../src/table/table.js';
import { udp4 } from './helpers/frames.js';

const root = new URL('../../test/fixtures/kernel/', import.meta.url);
const fixtures = existsSync(root)
  ? readdirSync(root, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort()
  : [];

function fixture(name: string): { bytes: Uint8Array; sysctls: Record<string, number> } {
  const dir = new URL(`${name}/`, root);
  const meta = JSON.parse(readFileSync(new URL('meta.json', dir), 'utf8')) as { sysctls?: Record<string, number> };
  return { bytes: readFileSync(new URL('capture.pcap', dir)), sysctls: meta.sysctls ?? {} };
}

interface Rec { linktype: number; buf: Uint8Array; off: number; len: number; now: number }

function records(bytes: Uint8Array): Rec[] {
  const r = readCapture(bytes);
  const out: Rec[] = [];
  for (let rec = r.next(); rec !== null; rec = r.next()) {
    let ts = rec.tsMs;
    if (rec.linktype === LINKTYPE_NFLOG) ts = nflogTimestampMs(rec.buf, rec.off, rec.len) ?? ts;
    out.push({ linktype: rec.linktype, buf: rec.buf, off: rec.off, len: rec.len, now: clockFromEpochMs(ts) });
  }
  return out;
}

/** Decide records on `table`; one line per packet. */
function decide(table: ConntrackTable, recs: Rec[]): string[] {
  const ct = new Conntrack(table);
  const out: string[] = [];
  ct.beginBatch();
  recs.forEach((r, i) => {
    const v = ct.frame(r.linktype, r.buf, r.off, r.len, r.now);
    out.push(`${v.ctstate}/${v.direction}/${v.reason ?? ''}/${v.protoState >= 0 ? TCP_STATE_NAMES[v.protoState] : ''}/${v.drop}`);
    if ((i + 1) % 64 === 0) { table.clock = r.now; ct.endBatch(); ct.beginBatch(); }
  });
  if (recs.length) table.clock = recs[recs.length - 1]!.now;
  ct.endBatch();
  ct.close();
  return out;
}

function listing(table: ConntrackTable, now: number): { lines: string[]; json: Map<number, EntryJson> } {
  const ct = new Conntrack(table);
  const ctx: TrackerContext = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl };
  const lines: string[] = [];
  const json = new Map<number, EntryJson>();
  ct.beginBatch();
  ct.chains.forEach((e) => {
    if (((table.i32[e + 7]! - now) | 0) <= 0) return; // E_TIMEOUT: expired entries are not listed
    lines.push(formatEntry(ctx, e, now, { extended: true, id: true }));
    const j = entryJson(ctx, e, now);
    json.set(j.id, j);
  });
  ct.endBatch();
  ct.close();
  return { lines: lines.sort(), json: new Map([...json.entries()].sort((a, b) => a[0] - b[0])) };
}

test('crc32 of the standard check string', (t) => {
  t.is(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  t.is(crc32(new Uint8Array(0)), 0);
});

test('round trip preserves every entry exactly (-L extended,id and per-entry JSON), into a table of another size', (t) => {
  for (const name of ['many_flows', 'ipv6_mix', 'sctp', 'icmp_echo', 'generic_proto', 'tcp_window_scale_sack']) {
    if (!fixtures.includes(name)) continue;
    const { bytes, sysctls } = fixture(name);
    const res = replay(bytes, { tableOptions: { sysctls } });
    res.conntrack.close();
    const before = listing(res.table, res.now);
    t.true(before.lines.length > 0, name);
    const snap = encodeSnapshot(res.table, { now: res.now });
    const fresh = ConntrackTable.create({ max: 4096, buckets: 1024, maxWorkers: 4 });
    fresh.clock = res.now;
    const r = restoreSnapshot(fresh, snap);
    t.is(r.restored, before.lines.length, name);
    const after = listing(fresh, res.now);
    t.deepEqual(after.lines, before.lines, name);
    t.deepEqual(after.json, before.json, name);
    for (const [k, v] of Object.entries(res.table.sysctls())) {
      if (k !== 'nf_conntrack_max') t.is(fresh.getSysctl(k), v, `${name}: sysctl ${k}`);
    }
    const inv = checkInvariants(fresh);
    t.true(inv.ok, formatInvariants(inv));
    // New connections never reuse a restored id.
    const maxId = Math.max(...[...after.json.keys()]);
    t.true(fresh.i32[H_NEXT_ID]! > maxId);
  }
});

test('timeouts are re-based on the clock of the table loaded into', (t) => {
  const { bytes } = fixture('udp_basic');
  const res = replay(bytes);
  res.conntrack.close();
  const before = listing(res.table, res.now).lines;
  const snap = encodeSnapshot(res.table, { now: res.now });
  const fresh = ConntrackTable.create({ max: 1024 });
  const later = (res.now + 123_456_789) | 0; // a restart much later, and across a clock wrap
  restoreSnapshot(fresh, snap, { now: later });
  t.deepEqual(listing(fresh, later).lines, before);
});

for (const name of fixtures) {
  test(`decisions continue unchanged after a restore mid-capture: ${name}`, (t) => {
    const { bytes, sysctls } = fixture(name);
    const recs = records(bytes);
    const whole = decide(ConntrackTable.create({ max: 4096, sysctls }), recs);
    const mid = Math.floor(recs.length / 2);
    const a = ConntrackTable.create({ max: 4096, sysctls });
    const first = decide(a, recs.slice(0, mid));
    const clock = mid > 0 ? recs[mid - 1]!.now : 0;
    const snap = encodeSnapshot(a, { now: clock });
    // Restore into a differently sized table, with default sysctls: the snapshot brings them.
    const b = ConntrackTable.create({ max: 2048, buckets: 512 });
    b.clock = clock;
    restoreSnapshot(b, snap);
    const second = decide(b, recs.slice(mid));
    const got = [...first, ...second];
    const diff = got.map((g, i) => (g === whole[i] ? null : `#${i}: whole ${whole[i]}, restored ${g}`)).filter((x) => x !== null);
    t.deepEqual(diff.slice(0, 10), []);
    t.is(got.length, recs.length);
  });
}

test('a TCP connection restored mid-stream keeps ESTABLISHED and its window tracking', (t) => {
  const { bytes, sysctls } = fixture('tcp_basic_v4');
  const recs = records(bytes);
  // Cut inside the 20 KB transfer of the third connection: after its handshake.
  const cut = Math.floor(recs.length * 0.75);
  const a = ConntrackTable.create({ sysctls });
  decide(a, recs.slice(0, cut));
  const ops = new CtOps(a);
  const est = ops.list({ state: 'ESTABLISHED' }, { now: recs[cut - 1]!.now });
  ops.close();
  t.true(est.length >= 1, 'an ESTABLISHED connection at the cut');
  const b = ConntrackTable.create({ max: 1024 });
  b.clock = recs[cut - 1]!.now;
  restoreSnapshot(b, encodeSnapshot(a, { now: recs[cut - 1]!.now }));
  const ops2 = new CtOps(b);
  t.deepEqual(ops2.list({ state: 'ESTABLISHED' }), est);
  ops2.close();
});

function tableWithFlows(n: number): ConntrackTable {
  const table = ConntrackTable.create({ max: 1024 });
  const ct = new Conntrack(table);
  for (let i = 0; i < n; i++) {
    ct.decide(udp4({ src: `10.0.${i >> 8}.${i & 255}`, dst: '192.0.2.1', sport: 1000 + i, dport: 53 }), 101, 1_000_000);
    ct.decide(udp4({ src: '192.0.2.1', dst: `10.0.${i >> 8}.${i & 255}`, sport: 53, dport: 1000 + i }), 101, 1_000_010);
  }
  ct.close();
  table.clock = 1_000_010;
  return table;
}

test('truncated, bit-flipped and padded snapshots are refused with nothing loaded', (t) => {
  const src = tableWithFlows(40);
  const snap = encodeSnapshot(src);
  t.notThrows(() => decodeSnapshot(snap));
  const bad: [string, Uint8Array][] = [];
  for (const cut of [0, 7, 40, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 3, Math.floor(snap.length / 2), snap.length - 1]) {
    bad.push([`truncated to ${cut}`, snap.slice(0, cut)]);
  }
  for (const bit of [0, 3 * 8 + 1, 16 * 8, 20 * 8 + 2, 28 * 8, 60 * 8 + 5, (HEADER_BYTES + 10) * 8 + 3, Math.floor(snap.length / 2) * 8 + 6, (snap.length - 1) * 8]) {
    const b = snap.slice();
    b[bit >> 3] ^= 1 << (bit & 7);
    bad.push([`bit ${bit} flipped`, b]);
  }
  const padded = new Uint8Array(snap.length + 4);
  padded.set(snap);
  bad.push(['4 bytes appended', padded]);
  for (const [what, bytes] of bad) {
    const table = ConntrackTable.create({ max: 1024 });
    const err = t.throws(() => restoreSnapshot(table, bytes), { instanceOf: SnapshotError }, what);
    t.regex(err?.message ?? '', /offset \d+/, what);
    t.is(table.i32[6], 0, `${what}: nothing loaded`); // H_COUNT
    const ops = new CtOps(table);
    t.is(ops.count({}, { now: 0 }), 0, what);
    ops.close();
    t.true(checkInvariants(table).ok, what);
  }
  // The messages say what is wrong.
  t.throws(() => decodeSnapshot(snap.slice(0, snap.length - 1)), { message: /truncated/ });
  const flipped = snap.slice();
  flipped[HEADER_BYTES + 10]! ^= 4;
  t.throws(() => decodeSnapshot(flipped), { message: /CRC32/ });
  t.throws(() => decodeSnapshot(new TextEncoder().encode('x'.repeat(100))), { message: /bad magic/ });
});

test('a snapshot that does not fit is refused before anything is inserted', (t) => {
  const snap = encodeSnapshot(tableWithFlows(40));
  const small = ConntrackTable.create({ max: 39 });
  t.throws(() => restoreSnapshot(small, snap), { instanceOf: SnapshotError, message: /nf_conntrack_max is 39/ });
  t.is(small.i32[6], 0);
  // A non-empty table is refused too.
  const busy = tableWithFlows(1);
  t.throws(() => restoreSnapshot(busy, snap), { message: /empty table/ });
  t.is(busy.i32[6], 1);
  // Too few buckets for the chain cap: refused up front.
  const narrow = ConntrackTable.create({ max: 1024, buckets: 16, maxChain: 2 });
  t.throws(() => restoreSnapshot(narrow, snap), { message: /chain cap/ });
  t.is(narrow.i32[6], 0);
  t.true(checkInvariants(narrow).ok);
});

test('files: save and load', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ctsnap-'));
  const src = tableWithFlows(10);
  const path = join(dir, 'a.snap');
  t.is(saveSnapshotFile(src, path), 10);
  const snap = loadSnapshotFile(path);
  t.is(snap.count, 10);
  t.is(snap.zones.get(0), 10);
  t.is(snap.stats.names.includes('insert'), true);
  const dst = ConntrackTable.create({ max: 64 });
  dst.clock = src.clock;
  restoreSnapshot(dst, snap);
  t.deepEqual(listing(dst, src.clock).lines, listing(src, src.clock).lines);
});

test('extension data (accounting, timestamps, labels) survives a round trip', (t) => {
  const src = ConntrackTable.create({ max: 256, sysctls: { nf_conntrack_acct: 1, nf_conntrack_timestamp: 1 } });
  const ct = new Conntrack(src);
  for (let i = 0; i < 12; i++) {
    ct.decide(udp4({ src: `10.0.0.${i + 1}`, dst: '192.0.2.1', sport: 1000 + i, dport: 53, payload: 'x'.repeat(i) }), 101, 1_000_000);
    ct.decide(udp4({ src: '192.0.2.1', dst: `10.0.0.${i + 1}`, sport: 53, dport: 1000 + i }), 101, 1_000_000 + i);
  }
  ct.close();
  src.clock = 1_000_100;
  const ops = new CtOps(src);
  t.is(ops.setLabel({ src: '10.0.0.0/30' }, 100), 3);
  const before = ops.dump().json().sort((a, b) => a.id - b.id);
  const beforeProc = ops.dump().procLines().sort();
  ops.close();
  t.truthy(before[0]!.acct);
  t.regex(beforeProc[0]!, /packets=1 bytes=\d+ .*packets=1 bytes=\d+ /);
  const bytes = encodeSnapshot(src);
  const dst = ConntrackTable.create({ max: 64 });
  dst.clock = src.clock;
  restoreSnapshot(dst, bytes);
  const ops2 = new CtOps(dst);
  t.deepEqual(ops2.dump().json().sort((a, b) => a.id - b.id), before);
  t.deepEqual(ops2.dump().procLines().sort(), beforeProc);
  t.is(ops2.count({ label: 100 }), 3);
  ops2.close();
  t.true(checkInvariants(dst).ok);
  // A table without room for the blocks refuses the snapshot up front.
  const none = ConntrackTable.create({ max: 64, extensions: 2 });
  t.throws(() => restoreSnapshot(none, bytes), { message: /extension blocks/ });
  t.is(none.i32[6], 0);
});
