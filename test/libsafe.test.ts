/**
 * The library is safe to use as documented: full batches and bad indexes throw, events carry the
 * listed entry's typed shape, decide() takes options, errors carry codes, long operations take
 * an AbortSignal, snapshots are written atomically (a crash mid-write leaves the old file).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BatchVerdict, ConntrackError, ConntrackPool, ConntrackRangeError, ConntrackTable, Conntrack, CtOps, CaptureError,
  ERROR_CODES, EVENT_DESTROY, LINKTYPE_RAW, PacketBatch, SnapshotError, decodeSnapshot, encodeSnapshot, isConntrackError,
  loadSnapshot, loadSnapshotFile, parseCidr, readCapture, replay, restoreSnapshot, saveSnapshot, saveSnapshotFile,
  subscribeEvents, ZONE_DIR_BOTH, crc32,
} from '../src/index.js';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { encodePcap } from '../src/input/capture/writer.js';
import { tcp4, udp4 } from './helpers/frames.js';

const T0 = 1_000_000;

function queries(n: number, base = 0): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const k = base + i;
    out.push(udp4({ src: `10.3.${(k >> 8) & 255}.${k & 255}`, dst: '192.0.2.9', sport: 1000 + (k % 60000), dport: 53 }));
  }
  return out;
}

function fill(table: ConntrackTable, n: number, base = 0): void {
  const ct = new Conntrack(table);
  for (const q of queries(n, base)) ct.decide(q, { linktype: LINKTYPE_RAW, now: T0 });
  ct.close();
}

/** The thrown value's code (fails the test when nothing was thrown). */
function codeOf(t: import('ava').ExecutionContext, fn: () => unknown): string | undefined {
  const e = t.throws(fn);
  return (e as Error & { code?: string } | undefined)?.code;
}

// ---------------------------------------------------------------------------------------------
// Batches

test('push on a full batch throws a RangeError (ERR_CT_BATCH_FULL); tryPush returns -1; fits() tells', (t) => {
  const b = PacketBatch.create({ capacity: 2, dataBytes: 2500 });
  const f = new Uint8Array(1514);
  t.true(b.fits(1514));
  t.is(b.push(LINKTYPE_RAW, f, 0, f.length, 0), 0);
  t.false(b.fits(1514), 'the data area holds 2500 bytes: a second 1514-byte frame does not fit');
  t.is(b.tryPush(LINKTYPE_RAW, f, 0, 1514, 0), -1);
  t.true(b.fits(986));
  t.is(b.push(LINKTYPE_RAW, f, 0, 986, 0), 1);
  // Index full.
  const e = t.throws(() => b.push(LINKTYPE_RAW, f, 0, 10, 0), { instanceOf: RangeError });
  t.is((e as ConntrackRangeError).code, 'ERR_CT_BATCH_FULL');
  t.is(b.tryPush(LINKTYPE_RAW, f, 0, 10, 0), -1);
  t.is(b.count, 2, 'a refused push adds nothing');
  // Data area full (index has room).
  const d = PacketBatch.create({ capacity: 8, dataBytes: 2000 });
  d.push(LINKTYPE_RAW, f, 0, f.length, 0);
  const e2 = t.throws(() => d.push(LINKTYPE_RAW, f, 0, f.length, 0), { instanceOf: RangeError });
  t.is((e2 as ConntrackRangeError).code, 'ERR_CT_BATCH_FULL');
  t.regex(e2!.message, /data area/);
  t.is(d.count, 1);
  // A frame range outside the buffer is an argument error, not a silent short copy.
  t.is(codeOf(t, () => d.push(LINKTYPE_RAW, f, 1500, 100, 0)), 'ERR_CT_OUT_OF_RANGE');
  // pushRef on a full index throws too.
  const r = PacketBatch.create({ capacity: 1, data: new SharedArrayBuffer(64) });
  r.pushRef(LINKTYPE_RAW, 0, 20, 0);
  t.is(codeOf(t, () => r.pushRef(LINKTYPE_RAW, 0, 20, 0)), 'ERR_CT_BATCH_FULL');
  t.is(codeOf(t, () => r.push(LINKTYPE_RAW, f, 0, 20, 0)), 'ERR_CT_INVALID_STATE');
});

test('read(i) outside 0..count-1 throws a RangeError (ERR_CT_OUT_OF_RANGE)', async (t) => {
  const table = ConntrackTable.create({ max: 1024 });
  const pool = new ConntrackPool({ table, workers: 1 });
  try {
    const b = pool.createBatch({ capacity: 8 });
    const out = new BatchVerdict();
    for (const i of [0, -1, 0.5, NaN]) {
      const e = t.throws(() => b.read(i, out), { instanceOf: RangeError }, `empty batch, index ${i}`);
      t.is((e as ConntrackRangeError).code, 'ERR_CT_OUT_OF_RANGE');
    }
    for (const q of queries(3)) b.push(LINKTYPE_RAW, q, 0, q.length, T0);
    await pool.process(b);
    t.is(b.read(2, out).ctstate, 'new');
    t.is(b.read(0).ctstate, 'new', 'out is optional');
    t.is(codeOf(t, () => b.read(3, out)), 'ERR_CT_OUT_OF_RANGE');
    t.is(codeOf(t, () => b.read(8, out)), 'ERR_CT_OUT_OF_RANGE', 'past the count, inside the capacity');
  } finally {
    await pool.close();
  }
});

// ---------------------------------------------------------------------------------------------
// decide()

test('decide() takes an options object, the same as the positional form', (t) => {
  const table = ConntrackTable.create({ max: 1024 });
  const ct = new Conntrack(table);
  const q = udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 5000, dport: 53 });
  const a = udp4({ src: '10.0.0.2', dst: '10.0.0.1', sport: 53, dport: 5000 });
  const opts = { linktype: LINKTYPE_RAW, now: T0, zone: 7, zoneDir: ZONE_DIR_BOTH };
  t.is(ct.decide(q, opts).ctstate, 'new');
  t.is(ct.decide(a, opts).ctstate, 'established', 'the same zone: the reply finds the entry');
  t.is(ct.decide(a, { linktype: LINKTYPE_RAW, now: T0 }).ctstate, 'new', 'zone 0 is another connection');
  t.is(ct.decide(q, LINKTYPE_RAW, T0, 7).ctstate, 'established', 'positional form still works');
  t.is(table.clock, T0);
  ct.close();
  const ops = new CtOps(table);
  t.is(ops.count({ zone: 7 }, { now: T0 }), 1);
  ops.close();
});

// ---------------------------------------------------------------------------------------------
// Typed events

test('events are typed: original, reply, state, toJSON() equal the listed entry', (t) => {
  const table = ConntrackTable.create({ max: 1024, sysctls: { nf_conntrack_acct: 1 } });
  const sub = subscribeEvents(table);
  const ct = new Conntrack(table);
  const c = { src: '10.0.0.1', dst: '10.0.0.2', sport: 40000, dport: 80 };
  const s = { src: c.dst, dst: c.src, sport: c.dport, dport: c.sport };
  const now = T0 + 500;
  ct.decide(tcp4({ ...c, flags: 'S', seq: 100 }), { linktype: LINKTYPE_RAW, now });
  ct.decide(tcp4({ ...s, flags: 'SA', seq: 900, ack: 101 }), { linktype: LINKTYPE_RAW, now });
  ct.decide(tcp4({ ...c, flags: 'A', seq: 101, ack: 901 }), { linktype: LINKTYPE_RAW, now });
  const evs = sub.poll();
  t.deepEqual(evs.map((e) => e.event), ['new', 'update', 'update']);
  const last = evs[evs.length - 1]!;
  t.deepEqual(last.original, { src: '10.0.0.1', dst: '10.0.0.2', sport: 40000, dport: 80 });
  t.deepEqual(last.reply, { src: '10.0.0.2', dst: '10.0.0.1', sport: 80, dport: 40000 });
  t.is(last.state, 'ESTABLISHED');
  t.is(evs[0]!.state, 'SYN_SENT');

  const ops = new CtOps(table);
  const listed = ops.dump({}, { now }).json();
  t.is(listed.length, 1);
  const { event, ...entry } = last.toJSON();
  t.is(event, 'update');
  t.deepEqual(entry, listed[0]!, 'an event has the listed entry\'s JSON shape and values');
  t.deepEqual(last.entry, listed[0]!);
  t.deepEqual(JSON.parse(JSON.stringify(last)), { event: 'update', ...listed[0] }, 'JSON.stringify(ev) uses toJSON');
  t.truthy(entry.acct, 'accounting is part of both');

  // DESTROY: the same shape, keys included.
  ops.flush({}, { now });
  const [d] = sub.poll();
  t.is(d!.type, EVENT_DESTROY);
  t.is(d!.event, 'destroy');
  t.deepEqual(Object.keys(d!.toJSON()).sort(), ['event', ...Object.keys(listed[0]!)].sort());
  t.deepEqual(d!.original, listed[0]!.original);
  t.is(d!.state, 'ESTABLISHED');
  const u = subscribeEvents(table);
  const ct2 = new Conntrack(table);
  ct2.decide(udp4({ src: '10.0.0.5', dst: '10.0.0.6', sport: 1, dport: 2 }), { linktype: LINKTYPE_RAW, now });
  const [ue] = u.poll();
  t.is(ue!.state, null, 'UDP has no state name');
  t.deepEqual(ue!.original, { src: '10.0.0.5', dst: '10.0.0.6', sport: 1, dport: 2 });
  ct2.close();
  u.close();
  ops.close();
  sub.close();
  ct.close();
});

// ---------------------------------------------------------------------------------------------
// Error codes

test('errors carry a documented code', async (t) => {
  t.is(codeOf(t, () => ConntrackTable.create({ max: 0 })), 'ERR_CT_OUT_OF_RANGE');
  t.is(codeOf(t, () => ConntrackTable.attach({ buffer: new SharedArrayBuffer(64) })), 'ERR_CT_BAD_HANDLE');
  const table = ConntrackTable.create({ max: 64, maxWorkers: 2, events: false });
  t.is(codeOf(t, () => table.setSysctl('nf_conntrack_nope', 1)), 'ERR_CT_INVALID_ARG');
  t.is(codeOf(t, () => table.setSysctl('nf_conntrack_udp_timeout', -5)), 'ERR_CT_OUT_OF_RANGE');
  t.is(codeOf(t, () => parseCidr('10.0.0.0/40')), 'ERR_CT_INVALID_ARG');
  t.is(codeOf(t, () => parseCidr('not-an-address')), 'ERR_CT_INVALID_ARG');
  t.is(codeOf(t, () => subscribeEvents(table)), 'ERR_CT_UNSUPPORTED');
  const a = new Conntrack(table);
  const b = new Conntrack(table);
  t.is(codeOf(t, () => new Conntrack(table)), 'ERR_CT_NO_RESOURCE');
  b.close();
  const ops = new CtOps(table);
  t.is(codeOf(t, () => ops.count({ dport: 70000 })), 'ERR_CT_OUT_OF_RANGE');
  ops.close();
  a.close();
  t.is(codeOf(t, () => readCapture(new TextEncoder().encode('hello, this is not a capture file'))), 'ERR_CT_BAD_CAPTURE');
  t.true(t.throws(() => readCapture(new Uint8Array(3))) instanceof CaptureError);
  t.is(codeOf(t, () => decodeSnapshot(new Uint8Array(100))), 'ERR_CT_BAD_SNAPSHOT');
  const full = ConntrackTable.create({ max: 64 });
  fill(full, 3);
  const snap = encodeSnapshot(full, { now: T0 });
  const e = t.throws(() => restoreSnapshot(full, snap, { now: T0 }));
  t.true(e instanceof SnapshotError && e instanceof ConntrackError);
  t.is((e as SnapshotError).code, 'ERR_CT_SNAPSHOT_REFUSED');
  const pool = new ConntrackPool({ table: full, workers: 1 });
  await pool.close();
  const closed = await t.throwsAsync(pool.process(PacketBatch.create({ capacity: 1 })));
  t.is((closed as ConntrackError).code, 'ERR_CT_INVALID_STATE');
  // Every code is listed once; isConntrackError tells ours from others.
  t.is(new Set(ERROR_CODES).size, ERROR_CODES.length);
  t.true(isConntrackError(e));
  t.false(isConntrackError(new Error('x')));
  t.false(isConntrackError(Object.assign(new Error('x'), { code: 'ENOENT' })));
});

// ---------------------------------------------------------------------------------------------
// AbortSignal

/** A signal that reports aborted from its `n`th look on (to stop a synchronous walk mid-way). */
function abortAfter(n: number): AbortSignal {
  let looks = 0;
  return { get aborted() { return ++looks > n; }, reason: new Error('enough') } as unknown as AbortSignal;
}

test('CtOps walks stop between slices on an AbortSignal (ABORT_ERR), leaving a consistent table', (t) => {
  const table = ConntrackTable.create({ max: 4096 });
  fill(table, 1000);
  const ops = new CtOps(table, { sliceBuckets: 64 });
  const ac = new AbortController();
  ac.abort(new Error('stop'));
  const e = t.throws(() => ops.list({}, { now: T0, signal: ac.signal }));
  t.is((e as ConntrackError).code, 'ABORT_ERR');
  t.is(e!.name, 'AbortError');
  t.is((e as Error).cause, ac.signal.reason);
  t.is(codeOf(t, () => ops.flush({}, { now: T0, signal: ac.signal })), 'ABORT_ERR');
  t.is(ops.count({}, { now: T0 }), 1000, 'an aborted flush before its first slice removed nothing');
  // Abort after a few slices: part of the table flushed, the rest intact, no slice left open.
  t.is(codeOf(t, () => ops.flush({ proto: 'udp' }, { now: T0, signal: abortAfter(3) })), 'ABORT_ERR');
  const left = ops.count({}, { now: T0, expired: true });
  t.true(left > 0 && left < 1000, `a flush aborted mid-way removed some entries (${1000 - left})`);
  t.is(ops.flush({}, { now: T0 }), left, 'the walker is usable afterwards');
  // A zone-indexed walk stops too.
  fill(table, 100, 5000);
  t.is(codeOf(t, () => ops.dump({ zone: 0 }, { now: T0, signal: ac.signal })), 'ABORT_ERR');
  t.is(codeOf(t, () => ops.delete({ proto: 'udp', src: '1.2.3.4', dst: '1.2.3.5', sport: 1, dport: 2 }, { signal: ac.signal })), 'ABORT_ERR');
  ops.close();
});

test('replay, pool.process and pool.replay take an AbortSignal', async (t) => {
  const frames = queries(2000);
  const pcap = encodePcap(LINKTYPE_RAW, frames.map((data, i) => ({ data, tsMs: 1_700_000_000_000 + i })));
  const ac = new AbortController();
  const table = ConntrackTable.create({ max: 4096 });
  const e = t.throws(() => replay(pcap, {
    table, batch: 100, signal: ac.signal, onPacket: (i) => { if (i === 250) ac.abort(); },
  }));
  t.is((e as ConntrackError).code, 'ABORT_ERR');
  const ops = new CtOps(table);
  t.is(ops.count({}, { expired: true }), 300, 'stopped at the end of the batch it was aborted in');
  ops.close();

  const t2 = ConntrackTable.create({ max: 4096 });
  const pool = new ConntrackPool({ table: t2, workers: 1 });
  try {
    const b = pool.createBatch({ capacity: 16 });
    b.push(LINKTYPE_RAW, frames[0]!, 0, frames[0]!.length, T0);
    const done = new AbortController();
    done.abort();
    const pe = await t.throwsAsync(pool.process(b, { signal: done.signal }));
    t.is((pe as ConntrackError).code, 'ABORT_ERR');
    t.false(b.decided(0), 'nothing of an aborted batch was decided');
    await pool.process(b);
    t.true(b.decided(0));
    const rc = new AbortController();
    let seen = 0;
    const re = await t.throwsAsync(pool.replay(pcap, { batch: 256, signal: rc.signal, onPacket: () => { if (++seen === 300) rc.abort(); } }));
    t.is((re as ConntrackError).code, 'ABORT_ERR');
    t.true(seen < 2000, `pool.replay stopped early (${seen} packets reported)`);
  } finally {
    await pool.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Snapshots

test('CRC-32 comes from node:zlib and matches the check value', (t) => {
  t.is(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  const b = new Uint8Array(1000).map((_, i) => (i * 7) & 255);
  t.is(crc32(b, 10, 500), zlibCrc32(b.subarray(10, 510)));
});

test('snapshot save is atomic: a crash mid-write leaves the old file intact', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ctsab-snap-'));
  try {
    const path = join(dir, 'table.snap');
    const old = ConntrackTable.create({ max: 1024 });
    fill(old, 3);
    t.is(saveSnapshotFile(old, path, { now: T0 }), 3);
    const before = readFileSync(path);
    t.deepEqual(readdirSync(dir), ['table.snap'], 'no temporary file left after a good save');

    // A child process saves a bigger table over it and is SIGKILLed in the middle of its write.
    const child = join(dir, 'crash.mjs');
    const dist = (p: string): string => new URL(`../${p}`, import.meta.url).href;
    writeFileSync(child, `
      import fs from 'node:fs';
      import { syncBuiltinESMExports } from 'node:module';
      const write = fs.writeSync;
      fs.writeSync = (fd, buf, off, len) => {
        write(fd, buf, off, Math.max(1, len >> 1)); // half the bytes reach the file system, then the crash
        process.kill(process.pid, 'SIGKILL');
      };
      syncBuiltinESMExports();
      const { ConntrackTable, Conntrack, saveSnapshotFile, LINKTYPE_RAW } = await import(${JSON.stringify(dist('src/index.js'))});
      const { udp4 } = await import(${JSON.stringify(dist('test/helpers/frames.js'))});
      const table = ConntrackTable.create({ max: 1024 });
      const ct = new Conntrack(table);
      for (let i = 0; i < 200; i++) ct.decide(udp4({ src: '10.9.0.' + (i % 250), dst: '192.0.2.1', sport: 2000 + i, dport: 53 }), { linktype: LINKTYPE_RAW, now: ${T0} });
      saveSnapshotFile(table, ${JSON.stringify(path)}, { now: ${T0} });
      console.log('not reached');
    `);
    const r = spawnSync(process.execPath, [child], { encoding: 'utf8', timeout: 30_000 });
    t.is(r.signal, 'SIGKILL', `the child died mid-write (stderr: ${r.stderr})`);
    t.false(r.stdout.includes('not reached'));
    t.deepEqual(readFileSync(path), before, 'the old snapshot is byte for byte intact');
    t.is(loadSnapshotFile(path).count, 3);
    const tmp = readdirSync(dir).filter((f) => f.endsWith('.tmp'));
    t.is(tmp.length, 1, 'the half-written temporary file is all the crash left');
    t.throws(() => decodeSnapshot(readFileSync(join(dir, tmp[0]!))), { instanceOf: SnapshotError }, 'and it is incomplete');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('async snapshot save/load round-trip; an aborted save leaves the old file and no temp file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ctsab-snap-'));
  try {
    const path = join(dir, 's.snap');
    const a = ConntrackTable.create({ max: 1024 });
    fill(a, 5);
    t.is(await saveSnapshot(a, path, { now: T0 }), 5);
    const before = readFileSync(path);
    fill(a, 5, 100);
    const ac = new AbortController();
    ac.abort();
    const e = await t.throwsAsync(saveSnapshot(a, path, { now: T0, signal: ac.signal }));
    t.is((e as ConntrackError).code, 'ABORT_ERR');
    t.deepEqual(readFileSync(path), before);
    t.deepEqual(readdirSync(dir), ['s.snap']);
    t.is(codeOf(t, () => encodeSnapshot(a, { signal: ac.signal })), 'ABORT_ERR');
    t.is((await t.throwsAsync(loadSnapshot(path, { signal: ac.signal })) as ConntrackError).code, 'ABORT_ERR');
    const snap = await loadSnapshot(path);
    t.is(snap.count, 5);
    const b = ConntrackTable.create({ max: 1024 });
    t.is(codeOf(t, () => restoreSnapshot(b, snap, { now: T0, signal: ac.signal })), 'ABORT_ERR');
    t.is(restoreSnapshot(b, snap, { now: T0 }).restored, 5);
    t.is(await saveSnapshot(a, path, { now: T0 }), 10, 'a save over an existing file replaces it');
    t.is((await loadSnapshot(path)).count, 10);
    const missing = await t.throwsAsync(loadSnapshot(join(dir, 'nope.snap')));
    t.is((missing as NodeJS.ErrnoException).code, 'ENOENT', 'file system errors keep their own code');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('package.json engines asks for a Node with zlib.crc32', (t) => {
  const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { engines: { node: string } };
  t.is(pkg.engines.node, '>=20.15');
});
