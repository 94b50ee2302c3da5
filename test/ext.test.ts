/**
 * Extensions (ext.ts): accounting per direction (also from several workers), timestamps,
 * labels, timeout policies by zone and by connection, and reclamation of extension blocks.
 */
import test from 'ava';
import { Conntrack } from '../src/track/core.js';
import { EVENT_DESTROY, subscribeEvents } from '../src/table/ecache.js';
import {
  attachTimeoutPolicyToZone, connAcct, connLabels, connTimeoutPolicy, connTimestamps, defineTimeoutPolicy,
  extStats, setConnLabel, setConnTimeoutPolicy,
} from '../src/table/ext.js';
import { formatEntry } from '../src/ops/format.js';
import { E_TIMEOUT, STAT_WORDS, ST_PACKETS } from '../src/table/layout.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { ConntrackPool } from '../src/pool/pool.js';
import { ConntrackTable } from '../src/table/table.js';
import { udp4 } from './helpers/frames.js';

const T0 = 1_700_000_000_000;
const q = (k: number, n = 10): Uint8Array => udp4({ src: '10.2.0.1', dst: '10.2.0.2', sport: 1000 + k, dport: 53, payload: 'q'.repeat(n) });
const a = (k: number, n = 40): Uint8Array => udp4({ src: '10.2.0.2', dst: '10.2.0.1', sport: 53, dport: 1000 + k, payload: 'a'.repeat(n) });

test('accounting counts packets and bytes per direction; -L prints them', (t) => {
  const table = ConntrackTable.create({ max: 1024, sysctls: { nf_conntrack_acct: 1 } });
  const ct = new Conntrack(table);
  const v = ct.decide(q(1), LINKTYPE_RAW, T0);
  const slot = v.slot;
  ct.decide(a(1), LINKTYPE_RAW, T0 + 1);
  ct.decide(q(1, 100), LINKTYPE_RAW, T0 + 2);
  t.deepEqual(connAcct(table, slot), {
    origPackets: 2, origBytes: q(1).length + q(1, 100).length, replyPackets: 1, replyBytes: a(1).length,
  });
  const ctx = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl, ext: table.sec.ext };
  ct.beginBatch();
  let line = '';
  ct.chains.forEach((e) => { line = formatEntry(ctx, e, T0 + 2); });
  ct.endBatch();
  t.regex(line, new RegExp(`dport=53 packets=2 bytes=${q(1).length + q(1, 100).length} src=10\\.2\\.0\\.2 .* packets=1 bytes=${a(1).length} `));
  // Switched off: new connections get no block.
  table.setSysctl('nf_conntrack_acct', 0);
  const w = ct.decide(q(2), LINKTYPE_RAW, T0 + 3);
  t.is(connAcct(table, w.slot), null);
  ct.close();
});

test('accounting from several workers adds up exactly, with the workers counting at the same time', async (t) => {
  // The counters are lock-free (Atomics.add): only workers counting at the same moment can
  // lose an update if that ever stops being atomic. So the batch is repeated until the samples
  // taken while it runs show two workers mid-share at once, and that overlap is asserted.
  const table = ConntrackTable.create({ max: 1024, sysctls: { nf_conntrack_acct: 1 } });
  const ct = new Conntrack(table);
  const slot = ct.decide(q(7), LINKTYPE_RAW, T0).slot;
  const pool = new ConntrackPool({ table, workers: 3, dispatch: 'free' });
  const R = 20_000;
  const packets = (w: number): number => Atomics.load(table.i32, table.sec.stats + w * STAT_WORDS + ST_PACKETS);
  let rounds = 0;
  let overlapped = false;
  try {
    const b = pool.createBatch({ capacity: 2 * R });
    for (let i = 0; i < R; i++) {
      const f = q(7, 1 + (i % 50));
      b.push(LINKTYPE_RAW, f, 0, f.length, T0 + 1);
      const g = a(7, 1 + (i % 20));
      b.push(LINKTYPE_RAW, g, 0, g.length, T0 + 1);
    }
    while (!overlapped && rounds < 8) {
      rounds++;
      const base = Array.from({ length: table.maxWorkers }, (_x, w) => packets(w));
      const samples: number[][] = [];
      let running = true;
      const sample = (): void => {
        samples.push(base.map((_x, w) => packets(w)));
        if (running) setImmediate(sample);
      };
      setImmediate(sample);
      const deadline = new Promise<never>((_r, rej) => setTimeout(() => rej(new Error('accounting batch not done within 30 s')), 30_000).unref());
      await Promise.race([pool.process(b), deadline]);
      running = false;
      const fin = base.map((_x, w) => packets(w));
      overlapped = samples.some((s) => s.filter((c, w) => c > base[w]! && c < fin[w]!).length >= 2);
    }
  } finally {
    await pool.close();
  }
  t.true(overlapped, `no two workers were seen counting at the same time in ${rounds} rounds`);
  let ob = q(7).length;
  let rb = 0;
  for (let i = 0; i < R; i++) { ob += q(7, 1 + (i % 50)).length; rb += a(7, 1 + (i % 20)).length; }
  t.deepEqual(connAcct(table, slot), {
    origPackets: rounds * R + 1, origBytes: rounds * (ob - q(7).length) + q(7).length,
    replyPackets: rounds * R, replyBytes: rounds * rb,
  });
  ct.close();
});

test('timestamps: start at creation, stop at destroy (DESTROY carries them and delta-time)', (t) => {
  const table = ConntrackTable.create({ max: 1024, sysctls: { nf_conntrack_timestamp: 1 } });
  const sub = subscribeEvents(table, { types: EVENT_DESTROY });
  const ct = new Conntrack(table);
  const slot = ct.decide(q(1), LINKTYPE_RAW, T0).slot;
  t.deepEqual(connTimestamps(table, slot), { start: (T0 | 0) >>> 0, stop: 0 });
  ct.decide(a(1), LINKTYPE_RAW, T0 + 1000);
  table.clock = T0 + 5000;
  ct.flush();
  const [d] = sub.poll();
  t.deepEqual(d!.timestamps, { start: (T0 | 0) >>> 0, stop: ((T0 + 5000) | 0) >>> 0 });
  t.regex(d!.body(), /delta-time=5$/);
  sub.close();
  ct.close();
});

test('labels are set and cleared on a live connection (block allocated on demand)', (t) => {
  const table = ConntrackTable.create({ max: 1024 });
  const ct = new Conntrack(table);
  const slot = ct.decide(q(1), LINKTYPE_RAW, T0).slot;
  t.is(connLabels(table, slot), 0n);
  t.is(extStats(table).inUse, 0);
  ct.beginBatch();
  setConnLabel(table, slot, 3, true, ct.wid);
  setConnLabel(table, slot, 100, true, ct.wid);
  ct.endBatch();
  t.is(connLabels(table, slot), (1n << 3n) | (1n << 100n));
  t.is(extStats(table).inUse, 1);
  setConnLabel(table, slot, 3, false);
  t.is(connLabels(table, slot), 1n << 100n);
  t.throws(() => setConnLabel(table, slot, 128, true), { message: /0\.\.127/ });
  ct.close();
});

test('a timeout policy attached to a zone shortens UDP timeouts for that zone only', (t) => {
  const table = ConntrackTable.create({ max: 1024 });
  defineTimeoutPolicy(table, 'short-udp', { udp: 5, udpStream: 7, tcp: { ESTABLISHED: 60 } });
  attachTimeoutPolicyToZone(table, 7, 'short-udp');
  const ct = new Conntrack(table);
  const e0 = ct.chains.entry(ct.decide(q(1), LINKTYPE_RAW, T0, 0).slot);
  const s7 = ct.decide(q(1), LINKTYPE_RAW, T0, 7).slot;
  const e7 = ct.chains.entry(s7);
  t.is(table.i32[e0 + E_TIMEOUT]! - (T0 | 0), 30_000);
  t.is(table.i32[e7 + E_TIMEOUT]! - (T0 | 0), 5_000);
  t.is(connTimeoutPolicy(table, s7), 'short-udp');
  // Replied and older than 2 s: a stream; the policy's stream timeout applies.
  ct.decide(a(1), LINKTYPE_RAW, T0 + 100, 7);
  ct.decide(q(1), LINKTYPE_RAW, T0 + 3000, 7);
  t.is(table.i32[e7 + E_TIMEOUT]! - ((T0 + 3000) | 0), 7_000);
  // Detached from the zone: new connections there use the sysctls again.
  attachTimeoutPolicyToZone(table, 7, null);
  const e7b = ct.chains.entry(ct.decide(q(2), LINKTYPE_RAW, T0, 7).slot);
  t.is(table.i32[e7b + E_TIMEOUT]! - (T0 | 0), 30_000);
  // Attached to one connection: applies from its next packet.
  const s0 = ct.decide(q(3), LINKTYPE_RAW, T0, 0).slot;
  setConnTimeoutPolicy(table, s0, 'short-udp');
  ct.decide(q(3), LINKTYPE_RAW, T0 + 10, 0);
  t.is(table.i32[ct.chains.entry(s0) + E_TIMEOUT]! - ((T0 + 10) | 0), 5_000);
  t.throws(() => attachTimeoutPolicyToZone(table, 1, 'nope'), { message: /no timeout policy named "nope"/ });
  ct.close();
});

test('extension blocks are reclaimed with their entries (no leak over many cycles)', (t) => {
  const table = ConntrackTable.create({ max: 256, extensions: 64, sysctls: { nf_conntrack_acct: 1, nf_conntrack_timestamp: 1 } });
  const ct = new Conntrack(table);
  for (let round = 0; round < 50; round++) {
    for (let k = 0; k < 40; k++) ct.decide(q(k), LINKTYPE_RAW, T0 + round);
    t.is(extStats(table).inUse, 40);
    ct.flush();
    // Freed with the slots, after their grace period (this thread's next batch ends).
    ct.beginBatch();
    ct.endBatch();
  }
  const s = extStats(table);
  t.is(s.failed, 0);
  t.is(s.inUse, 0);
  t.is(s.free, 64);
  ct.close();
});
