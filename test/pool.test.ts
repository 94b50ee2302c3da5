/** ConntrackPool: dispatch, real worker threads on one shared table, worker death. */
import test from 'ava';
import { IX_FLOW, IX_PART, IX_WORDS, PacketBatch, BatchVerdict } from '../src/pool/batch.js';
import { Conntrack } from '../src/track/core.js';
import { Dispatcher, flowHash, pairHash, peekFlow } from '../src/pool/dispatch.js';
import { formatEntry } from '../src/ops/format.js';
import { STAT_NAMES, W_ALIVE, WORKER_WORDS } from '../src/table/layout.js';
import { LINKTYPE_ETHERNET, LINKTYPE_RAW, Packet } from '../src/input/packet/packet.js';
import { parseFrame } from '../src/input/packet/parse.js';
import { ConntrackPool, WorkerDeathError, type WorkerDeath } from '../src/pool/pool.js';
import type { TrackerContext } from '../src/track/proto/l4proto.js';
import { REASON_OTHER, reasonCode } from '../src/track/reasons.js';
import { clockFromEpochMs } from '../src/ops/replay.js';
import { ConntrackTable } from '../src/table/table.js';
import { icmp4, icmpError4, tcp4, udp4, udp6 } from './helpers/frames.js';
import { TRAFFIC_LINKTYPE, traffic, type Frame } from './helpers/traffic.js';

/** Counters that do not depend on thread timing. */
const STABLE = ['found', 'invalid', 'insert', 'insert_failed', 'drop', 'early_drop', 'error', 'chaintoolong', 'new', 'ignore', 'expired', 'packets'];

interface Decision { state: number; dir: number; reason: string | null; drop: boolean; tcp: number; l4: number }

function single(frames: Frame[], table: ConntrackTable): Decision[] {
  const ct = new Conntrack(table);
  const out: Decision[] = [];
  ct.beginBatch();
  frames.forEach((f, i) => {
    const v = ct.frame(TRAFFIC_LINKTYPE, f.data, 0, f.data.length, clockFromEpochMs(f.tsMs));
    out.push({ state: v.state, dir: v.dir, reason: v.reason, drop: v.drop, tcp: v.protoState, l4: ct.pkt.l4proto });
    if ((i + 1) % 256 === 0) { ct.endBatch(); ct.beginBatch(); }
  });
  ct.endBatch();
  ct.close();
  return out;
}

function listing(table: ConntrackTable, now: number): string[] {
  const ct = new Conntrack(table);
  const ctx: TrackerContext = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl };
  const lines: string[] = [];
  ct.beginBatch();
  ct.chains.forEach((e) => { lines.push(formatEntry(ctx, e, now)); });
  ct.endBatch();
  ct.close();
  return lines.sort();
}

function stable(table: ConntrackTable): Record<string, number> {
  const t = table.stats().total;
  return Object.fromEntries(STABLE.map((n) => [n, t[n]!]));
}

test('flow hash is symmetric; flow dispatch keeps both directions and ICMP errors together', (t) => {
  const q = udp4({ src: '10.1.1.1', dst: '10.2.2.2', sport: 1111, dport: 53 });
  const frames = [
    q,
    udp4({ src: '10.2.2.2', dst: '10.1.1.1', sport: 53, dport: 1111 }),
    icmpError4(3, 3, q, { src: '10.2.2.2', dst: '10.1.1.1' }),
    icmpError4(11, 0, q, { src: '198.51.100.9', dst: '10.1.1.1' }), // from a router on the path
    tcp4({ src: '10.3.3.3', dst: '10.4.4.4', sport: 5000, dport: 80, flags: 'S' }),
    tcp4({ src: '10.4.4.4', dst: '10.3.3.3', sport: 80, dport: 5000, flags: 'SA' }),
    icmp4({ src: '10.5.5.5', dst: '10.6.6.6', id: 77 }),
    icmp4({ src: '10.6.6.6', dst: '10.5.5.5', type: 0, id: 77 }),
    udp6({ src: 'fd00::1', dst: 'fd00::2', sport: 4000, dport: 4001 }),
    udp6({ src: 'fd00::2', dst: 'fd00::1', sport: 4001, dport: 4000 }),
  ];
  const pkt = new Packet();
  const h = frames.map((f) => { parseFrame(LINKTYPE_RAW, f, 0, f.length, pkt); return flowHash(pkt, 0); });
  t.is(h[0], h[1]);
  t.is(h[0], h[2]);
  t.is(h[0], h[3]);
  t.is(h[4], h[5]);
  t.is(h[6], h[7]);
  t.is(h[8], h[9]);
  t.not(h[0], h[4]);

  // Many flows over 7 partitions: each flow's packets share a partition, listed in batch order.
  const batch = PacketBatch.create({ capacity: 4000 });
  const frames2 = traffic(3000, 7);
  for (const f of frames2) t.true(batch.push(TRAFFIC_LINKTYPE, f.data, 0, f.data.length, 0) >= 0);
  const d = new Dispatcher('flow');
  const tasks = d.split(batch, 7);
  t.true(tasks > 1 && tasks <= 7);
  const partOf = (i: number): number => batch.i32[batch.sec.index + i * IX_WORDS + IX_PART]!;
  for (let i = 0; i < frames2.length; i++) {
    parseFrame(TRAFFIC_LINKTYPE, frames2[i]!.data, 0, frames2[i]!.data.length, pkt);
    const key = flowHash(pkt, i);
    for (let j = i + 1; j < Math.min(frames2.length, i + 40); j++) {
      parseFrame(TRAFFIC_LINKTYPE, frames2[j]!.data, 0, frames2[j]!.data.length, pkt);
      if (flowHash(pkt, j) === key) t.is(partOf(j), partOf(i));
    }
  }
  // Lists are in batch order within each task.
  const { lists, tasks: tr } = batch.sec;
  for (let k = 0; k < tasks; k++) {
    const from = batch.i32[tr + k * 8]!;
    const to = batch.i32[tr + k * 8 + 1]!;
    for (let p = from + 1; p < to; p++) t.true(batch.i32[lists + p]! > batch.i32[lists + p - 1]!);
  }
});

test('a pool of 2 workers (flow) decides every packet as one thread does', async (t) => {
  const frames = traffic(4000, 42);
  const opts = { max: 65536, hashKey: [0x1234, 0x5678] as [number, number] };
  const ref = ConntrackTable.create(opts);
  const expected = single(frames, ref);
  for (const d of expected) t.not(reasonCode(d.reason), REASON_OTHER, `unregistered reason "${d.reason}"`);

  const table = ConntrackTable.create(opts);
  const pool = new ConntrackPool({ table, workers: 2, dispatch: 'flow' });
  try {
    const got: Decision[] = [];
    const v = new BatchVerdict();
    const wids = new Set<number>();
    // Uneven batches, so flows straddle batch boundaries.
    for (let start = 0; start < frames.length;) {
      const batch = pool.createBatch({ capacity: 1500 });
      while (start < frames.length) {
        const f = frames[start]!;
        if (batch.tryPush(TRAFFIC_LINKTYPE, f.data, 0, f.data.length, clockFromEpochMs(f.tsMs)) < 0) break;
        start++;
      }
      const r = await pool.process(batch);
      t.deepEqual(r.unregisteredReasons, []);
      r.wids.forEach((w) => wids.add(w));
      for (let i = 0; i < batch.count; i++) {
        batch.read(i, v);
        got.push({ state: v.state, dir: v.dir, reason: v.reason, drop: v.drop, tcp: v.protoState, l4: v.l4proto });
      }
    }
    t.is(wids.size, 2, 'both workers decided packets');
    t.is(got.length, expected.length);
    const diffs = got.map((g, i) => [i, g, expected[i]] as const).filter(([, g, e]) => JSON.stringify(g) !== JSON.stringify(e));
    t.deepEqual(diffs.slice(0, 5), []);
    t.deepEqual(stable(table), stable(ref));
    const now = clockFromEpochMs(frames[frames.length - 1]!.tsMs);
    t.deepEqual(listing(table, now), listing(ref, now));
    t.true(new Set(expected.map((e) => e.state)).size >= 4, 'the traffic exercises new/established/related/invalid');
  } finally {
    await pool.close();
  }
  // Every worker left the table.
  for (let w = 0; w < table.maxWorkers; w++) t.is(table.i32[table.sec.workers + w * WORKER_WORDS + W_ALIVE], 0);
});

test('free dispatch: many workers confirming the same new tuples leave one entry per tuple', async (t) => {
  const table = ConntrackTable.create({ max: 16384 });
  const workers = 4;
  const pool = new ConntrackPool({ table, workers, dispatch: 'free' });
  try {
    // Chunk k (worker k's share) holds one copy of every tuple, odd chunks in reverse order,
    // so the workers race on the same tuples; a few rounds give the races a chance.
    const per = 1000;
    let tuples = 0;
    for (let round = 0; round < 6; round++) {
      const batch = pool.createBatch({ capacity: per * workers });
      for (let k = 0; k < workers; k++) {
        for (let j = 0; j < per; j++) {
          const i = tuples + (k % 2 === 0 ? j : per - 1 - j);
          const f = udp4({ src: `10.${9 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, dst: '10.8.0.1', sport: 3000 + (i % 1000), dport: 53 });
          batch.push(LINKTYPE_RAW, f, 0, f.length, 1000);
        }
      }
      const r = await pool.process(batch);
      t.is(r.packets, per * workers);
      tuples += per;
      if (table.stats().total['clash_resolve']! > 0) break;
    }
    const ct = new Conntrack(table);
    const seen = new Map<string, number>();
    ct.beginBatch();
    ct.chains.forEach((e) => {
      const key = formatEntry({ i32: table.i32, u32: table.u32, sys: table.sec.sysctl }, e, 1000);
      seen.set(key, (seen.get(key) ?? 0) + 1);
    });
    ct.endBatch();
    const reachable = [...seen.values()].reduce((a, b) => a + b, 0);
    t.is(seen.size, tuples);
    t.true([...seen.values()].every((c) => c === 1), 'one entry per tuple');
    t.is(ct.chains.count, reachable, 'count equals entries reachable');
    ct.close();
    const s = table.stats().total;
    t.is(s['insert'], tuples);
    t.is(s['packets'], tuples * workers);
    // Each packet either inserted its entry or found one (after a lost confirm race, counted
    // in clash_resolve, the retry finds the winner).
    t.is(s['insert']! + s['found']!, tuples * workers);
    t.true(s['found']! >= s['clash_resolve']!);
    t.log(`clash_resolve=${s['clash_resolve']} found=${s['found']} over ${workers} workers`);
  } finally {
    await pool.close();
  }
});

test('a worker that dies mid-batch: the batch rejects after onWorkerDeath, the pool goes on', async (t) => {
  const table = ConntrackTable.create({ max: 4096 });
  const deaths: WorkerDeath[] = [];
  const pool = new ConntrackPool({
    table, workers: 2, dispatch: 'flow',
    onWorkerDeath: (d) => { deaths.push(d); },
  });
  try {
    const frames = traffic(600, 3);
    const fill = (): PacketBatch => {
      const b = pool.createBatch({ capacity: 1000 });
      for (const f of frames) b.push(TRAFFIC_LINKTYPE, f.data, 0, f.data.length, clockFromEpochMs(f.tsMs));
      return b;
    };
    // Warm both workers up so they have attached.
    await pool.process(fill());
    const b = fill();
    const err = await t.throwsAsync(pool.process(b, { crashAfter: 5 }), { instanceOf: WorkerDeathError });
    t.is(deaths.length, 1, 'onWorkerDeath ran before the batch rejected');
    const d = deaths[0]!;
    t.deepEqual((err as WorkerDeathError).deaths, [d]);
    t.is(d.exitCode, 70);
    t.true(d.wid >= 0);
    // Recovery ran before the hook and gave the dead thread's record back.
    t.is(d.recoveryError, undefined);
    t.is(d.recovery?.recovered, true);
    t.is(d.recovery?.wid, d.wid);
    const base = table.sec.workers + d.wid * WORKER_WORDS;
    t.is(table.i32[base + W_ALIVE], 0);
    t.true((err as WorkerDeathError).decided >= 5);
    let decided = 0;
    for (let i = 0; i < b.count; i++) if (b.decided(i)) decided++;
    t.true(decided >= 5 && decided < b.count);
    // The replacement worker takes over.
    const r = await pool.process(fill());
    t.is(r.packets, frames.length);
  } finally {
    await pool.close();
  }
  for (let w = 0; w < table.maxWorkers; w++) t.is(table.i32[table.sec.workers + w * WORKER_WORDS + W_ALIVE], 0, `record ${w} released`);
});

test('peekFlow (the dispatcher\'s no-parse fast path) gives the parsed flow hash for every packet the parser accepts', (t) => {
  const pkt = new Packet();
  let seed = 7;
  const rnd = (n: number): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) % n;
  const base: Uint8Array[] = [];
  for (let k = 0; k < 40; k++) {
    const src = `10.${rnd(4)}.${rnd(256)}.${rnd(256)}`;
    const dst = `192.168.${rnd(4)}.${rnd(256)}`;
    const sport = rnd(65536);
    const dport = rnd(3) === 0 ? 53 : rnd(65536);
    const ipOptions = rnd(4) === 0 ? [1, 1, 1, 1] : undefined;
    base.push(tcp4({ src, dst, sport, dport, flags: 'S', ...(ipOptions ? { ipOptions } : {}) }));
    base.push(tcp4({ src: dst, dst: src, sport: dport, dport: sport, flags: 'SA', df: true }));
    base.push(udp4({ src, dst, sport, dport, payload: rnd(2) ? 'abc' : undefined }));
    base.push(udp4({ src, dst, sport, dport, mf: true }));
    base.push(udp4({ src, dst, sport, dport, fragOffset: 8 }));
    base.push(icmp4({ src, dst, id: sport }));
    base.push(udp6({ src: 'fd00::1', dst: 'fd00::2', sport, dport }));
  }
  const eth = (ip: Uint8Array): Uint8Array => {
    const f = new Uint8Array(14 + ip.length);
    f[12] = ip[0]! >> 4 === 6 ? 0x86 : 0x08;
    f[13] = ip[0]! >> 4 === 6 ? 0xdd : 0x00;
    f.set(ip, 14);
    return f;
  };
  let fast = 0;
  let agreed = 0;
  let checked = 0;
  for (const ip of base) {
    // Whole, truncated captures, and a few mutated header bytes.
    const variants: Uint8Array[] = [ip, ip.subarray(0, 22), ip.subarray(0, 24)];
    for (let m = 0; m < 6; m++) {
      const c = ip.slice();
      c[rnd(Math.min(c.length, 28))] = rnd(256);
      variants.push(c);
    }
    for (const v of variants) {
      for (const [lt, f] of [[LINKTYPE_RAW, v], [LINKTYPE_ETHERNET, eth(v)]] as const) {
        checked++;
        const h = peekFlow(lt, f, 0, f.length);
        parseFrame(lt, f, 0, f.length, pkt);
        if (h < 0) continue;
        fast++;
        if (pkt.reason !== null) continue; // touches no connection: any partition decides it alike
        t.is(h, flowHash(pkt, 0), `linktype ${lt}, ${f.length} bytes`);
        agreed++;
      }
    }
  }
  t.true(checked > 1000);
  t.true(fast > checked / 4, `fast path taken ${fast} of ${checked}`);
  t.true(agreed > 400, `agreed ${agreed} of ${checked}`);

  // In a batch: fast-path packets between two hosts that exchange fragments go with the fragments.
  const batch = PacketBatch.create({ capacity: 64 });
  const frames = [
    udp4({ src: '10.9.0.1', dst: '10.9.0.2', sport: 1000, dport: 2000, mf: true }),
    tcp4({ src: '10.9.0.2', dst: '10.9.0.1', sport: 80, dport: 3000, flags: 'S' }),
    udp4({ src: '10.9.0.1', dst: '10.9.0.2', sport: 1001, dport: 2001 }),
    ...Array.from({ length: 20 }, (_, k) => udp4({ src: `10.8.0.${k + 1}`, dst: '10.8.1.1', sport: 100 + k, dport: 53 })),
  ];
  for (const f of frames) batch.push(LINKTYPE_RAW, f, 0, f.length, 0);
  new Dispatcher('flow').split(batch, 4);
  const part = (i: number): number => batch.i32[batch.sec.index + i * IX_WORDS + IX_PART]!;
  t.is(part(1), part(0));
  t.is(part(2), part(0));
  parseFrame(LINKTYPE_RAW, frames[0]!, 0, frames[0]!.length, pkt);
  t.is(batch.i32[batch.sec.index + 2 * IX_WORDS + IX_FLOW]! >>> 0, pairHash(pkt));
  const parts = new Set(Array.from({ length: frames.length }, (_, i) => part(i)));
  t.true(parts.size > 1);
});
