/**
 * The shared event ring (ecache.ts): events from several packet workers arrive exactly once; a
 * slow consumer loses only NEW/UPDATE (counted) and still gets every DESTROY with its final
 * accounting; `replay -E --workers N` prints what the kernel's conntrack -E printed.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Conntrack } from '../src/track/core.js';
import { EVENT_DESTROY, EVENT_NEW, EVENT_UPDATE, eventStats, subscribeEvents, type ConnEvent } from '../src/table/ecache.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { ConntrackPool } from '../src/pool/pool.js';
import { ConntrackTable } from '../src/table/table.js';
import { udp4 } from './helpers/frames.js';

const T0 = 1_700_000_000_000;

function client(k: number): string {
  return `10.1.${(k >> 8) & 255}.${k & 255}`;
}

/** Query (and answers) of UDP flow k; sizes differ per direction. */
function query(k: number): Uint8Array {
  return udp4({ src: client(k), dst: '10.9.9.9', sport: 20000 + (k % 30000), dport: 53, payload: 'q'.repeat(10) });
}
function answer(k: number): Uint8Array {
  return udp4({ src: '10.9.9.9', dst: client(k), sport: 53, dport: 20000 + (k % 30000), payload: 'a'.repeat(30) });
}

async function run(pool: ConntrackPool, frames: Uint8Array[], now: number): Promise<void> {
  const b = pool.createBatch({ capacity: frames.length });
  for (const f of frames) b.push(LINKTYPE_RAW, f, 0, f.length, now | 0);
  await pool.process(b);
}

function count(evs: ConnEvent[], type: number): number {
  return evs.filter((e) => e.type === type).length;
}

test('events from several workers arrive exactly once', async (t) => {
  const N = 300;
  const table = ConntrackTable.create({ max: 4096, events: { ring: 4096, destroyRing: 1024 } });
  const sub = subscribeEvents(table);
  const pool = new ConntrackPool({ table, workers: 3, dispatch: 'free' });
  const got: ConnEvent[] = [];
  try {
    const first: Uint8Array[] = [];
    for (let k = 0; k < N; k++) first.push(query(k));
    await run(pool, first, T0);
    const replies: Uint8Array[] = [];
    for (let k = 0; k < N; k++) replies.push(answer(k));
    await run(pool, replies, T0 + 10);
    got.push(...sub.poll());
    // 100 s later every entry has expired: the same queries remove the old entries (DESTROY,
    // in the workers) and create new ones (NEW).
    await run(pool, first, T0 + 100_000);
    got.push(...sub.poll());
  } finally {
    await pool.close();
  }
  const ct = new Conntrack(table);
  t.is(ct.flush(), N); // DESTROY of the second generation, on this thread
  ct.close();
  got.push(...sub.poll());
  t.is(sub.lost, 0);
  t.is(count(got, EVENT_NEW), 2 * N);
  t.is(count(got, EVENT_UPDATE), N);
  t.is(count(got, EVENT_DESTROY), 2 * N);
  // Each connection: exactly one NEW and one DESTROY, NEW first.
  const seen = new Map<number, string>();
  for (const ev of got) {
    if (ev.type === EVENT_UPDATE) continue;
    seen.set(ev.id, (seen.get(ev.id) ?? '') + (ev.type === EVENT_NEW ? 'N' : 'D'));
  }
  t.is(seen.size, 2 * N);
  t.true([...seen.values()].every((s) => s === 'ND'));
  // Snapshots: the DESTROY of an expired entry prints no timeout and both tuples.
  const d = got.find((e) => e.type === EVENT_DESTROY)!;
  t.regex(d.body(), /^udp +17 src=10\.1\.\d+\.\d+ dst=10\.9\.9\.9 sport=\d+ dport=53 src=10\.9\.9\.9/);
  sub.close();
  t.is(eventStats(table).subscribers, 0);
});

test('a slow consumer loses only NEW/UPDATE, counted, and gets every DESTROY with final counters', async (t) => {
  const N = 200;
  const table = ConntrackTable.create({
    // The park queue (4 x 64) holds what the DESTROY ring cannot; the consumer is not presumed
    // stalled (stallMs) while the workers run: it gets every DESTROY, nothing is dropped.
    max: 4096, events: { ring: 64, destroyRing: 64 }, sysctls: { nf_conntrack_acct: 1 }, stallMs: 60000,
  });
  const sub = subscribeEvents(table); // never read while the workers run
  const pool = new ConntrackPool({ table, workers: 3, dispatch: 'flow' });
  try {
    const frames: Uint8Array[] = [];
    for (let k = 0; k < N; k++) frames.push(query(k), answer(k), query(k), answer(k), query(k));
    await run(pool, frames, T0);
    const again: Uint8Array[] = [];
    for (let k = 0; k < N; k++) again.push(query(k));
    await run(pool, again, T0 + 100_000); // N DESTROYs: the DESTROY ring (64) overflows, events park
  } finally {
    await pool.close();
  }
  t.true(eventStats(table).parkedTotal > 0, 'some DESTROY events had to wait for room');
  const ct = new Conntrack(table);
  const got: ConnEvent[] = [];
  for (let i = 0; i < 1000; i++) {
    got.push(...sub.poll());
    if (ct.retryParkedEvents() === 0 && eventStats(table).parked === 0) break;
  }
  got.push(...sub.poll());
  ct.close();
  const destroys = got.filter((e) => e.type === EVENT_DESTROY);
  t.is(destroys.length, N);
  t.is(new Set(destroys.map((e) => e.id)).size, N);
  const qLen = query(0).length;
  const aLen = answer(0).length;
  for (const d of destroys) {
    t.deepEqual(d.acct, { origPackets: 3, origBytes: 3 * qLen, replyPackets: 2, replyBytes: 2 * aLen });
  }
  t.regex(destroys[0]!.body(), new RegExp(`packets=3 bytes=${3 * qLen} src=10\\.9\\.9\\.9 .* packets=2 bytes=${2 * aLen}`));
  // Every NEW/UPDATE written was either delivered or counted as lost; DESTROYs are all here.
  const nu = count(got, EVENT_NEW) + count(got, EVENT_UPDATE);
  t.true(sub.lost > 0);
  t.is(nu + sub.lost, eventStats(table).emitted - N);
  t.true(count(got, EVENT_NEW) < 2 * N);
  t.is(eventStats(table).lost, sub.lost);
  t.is(eventStats(table).parked, 0);
  t.is(sub.dropped, 0);
  sub.close();
});

test('nf_conntrack_events=0 or no subscriber: nothing is written', (t) => {
  const table = ConntrackTable.create({ max: 1024 });
  const ct = new Conntrack(table);
  ct.decide(query(1), LINKTYPE_RAW, T0);
  t.is(eventStats(table).emitted, 0); // no subscriber
  const sub = subscribeEvents(table);
  table.setSysctl('nf_conntrack_events', 0);
  ct.decide(query(2), LINKTYPE_RAW, T0);
  t.is(sub.poll().length, 0);
  table.setSysctl('nf_conntrack_events', 1);
  ct.decide(query(3), LINKTYPE_RAW, T0);
  t.deepEqual(sub.poll().map((e) => e.typeName), ['NEW']);
  sub.close();
  ct.close();
});

test('the emitter and async iterator APIs deliver events', async (t) => {
  const table = ConntrackTable.create({ max: 1024 });
  const sub = subscribeEvents(table, { types: EVENT_NEW, intervalMs: 1 });
  const viaEmitter: ConnEvent[] = [];
  sub.on('event', (ev: ConnEvent) => viaEmitter.push(ev));
  const ct = new Conntrack(table);
  ct.decide(query(1), LINKTYPE_RAW, T0);
  ct.decide(answer(1), LINKTYPE_RAW, T0); // UPDATE: filtered out
  ct.decide(query(2), LINKTYPE_RAW, T0);
  const it = sub[Symbol.asyncIterator]();
  const a = await it.next();
  const b = await it.next();
  t.false(a.done);
  t.deepEqual([a.value.typeName, b.value.typeName], ['NEW', 'NEW']);
  t.is(viaEmitter.length, 2);
  sub.close();
  t.true((await it.next()).done);
  ct.close();
});

test('replay -E --workers 3 prints the kernel\'s conntrack -E lines', (t) => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const dir = fileURLToPath(new URL('../../test/fixtures/kernel/', import.meta.url));
  const norm = (l: string): string => l.replace(/^\[[0-9.]+\]\t/, '').replace(/ id=\d+$/, '');
  for (const name of ['tcp_basic_v4', 'tcp_rst', 'ipv6_mix']) {
    const r = spawnSync(process.execPath, [cli, 'replay', `${dir}${name}/capture.pcap`, '-E', '-o', 'timestamp,extended,id', '--workers', '3'], { encoding: 'utf8' });
    t.is(r.status, 0, r.stderr);
    const kernel = readFileSync(`${dir}${name}/events.txt`, 'utf8').trimEnd().split('\n').map(norm);
    t.deepEqual(r.stdout.trimEnd().split('\n').map(norm), kernel, name);
  }
});
