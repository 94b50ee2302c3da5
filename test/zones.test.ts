/**
 * Namespaces and zones (src/table/zones.ts): directional zones, per-namespace and per-zone limits
 * under concurrent inserts from real worker threads, a rogue namespace flooding the table, and
 * flushing one zone through its entry list.
 */
import test from 'ava';
import { Worker } from 'node:worker_threads';
import { Conntrack } from '../src/track/core.js';
import { checkInvariants, formatInvariants } from '../src/table/invariants.js';
import { E_STATUS, E_ZONE, ENTRY_WORDS, IPS_ASSURED } from '../src/table/layout.js';
import { CtOps } from '../src/ops/ops.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { ConntrackTable } from '../src/table/table.js';
import { ZONE_DIR_ORIG, ZONE_DIR_REPL, zoneWord } from '../src/table/zones.js';
import { udp4 } from './helpers/frames.js';

const NOW = 1_000_000;
const LT = LINKTYPE_RAW;

function assertInvariants(t: { true: (v: boolean, m?: string) => void }, table: ConntrackTable): void {
  const r = checkInvariants(table);
  t.true(r.ok, formatInvariants(r));
}

/** Count linked entries of namespace `ns` (all when -1) that are ASSURED, by walking the slab's live entries. */
function assuredOf(table: ConntrackTable, ns: number): number {
  const ops = new CtOps(table);
  let n = 0;
  const d = ops.dump(ns >= 0 ? { ns } : {}, { now: NOW });
  for (let i = 0; i < d.count; i++) if (d.words[i * ENTRY_WORDS + E_STATUS]! & IPS_ASSURED) n++;
  ops.close();
  return n;
}

// ---------------------------------------------------------------------------------------------
// Worker threads: inline (eval) workers importing the compiled modules.

const WORKER = `
const { workerData: d, parentPort } = require('node:worker_threads');
(async () => {
  const { Conntrack } = await import(d.core);
  const { udp4, tcp4 } = await import(d.frames);
  const ctl = new Int32Array(d.ctl);
  const ct = new Conntrack(d.handle);
  const LT = 101;
  const out = { attempted: 0, admitted: 0, refused: 0, reasons: {}, assured: [] };
  // One UDP frame mutated in place: source address from a counter, IPv4 checksum fixed, UDP checksum 0.
  const f = udp4({ src: '10.0.0.1', dst: '192.0.2.1', sport: 1000, dport: 53 });
  const send = (i, now) => {
    f[12] = d.net; f[13] = (i >> 16) & 255; f[14] = (i >> 8) & 255; f[15] = i & 255;
    f[10] = 0; f[11] = 0;
    let s = 0;
    for (let k = 0; k < 20; k += 2) s += (f[k] << 8) | f[k + 1];
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    f[10] = (~s >> 8) & 255; f[11] = ~s & 255;
    f[26] = 0; f[27] = 0;
    return ct.frame(LT, f, 0, f.length, now, d.zone, 0);
  };
  const attemptsWord = d.count === 0 ? 2 : -1; // flooders publish their attempts in ctl[2]
  if (d.assured > 0) {
    // Established TCP connections (ASSURED), made before the flood starts.
    ct.beginBatch();
    for (let i = 0; i < d.assured; i++) {
      const a = '10.' + d.net + '.' + ((i >> 8) & 255) + '.' + (i & 255);
      const b = '192.0.2.3';
      const fr = (x) => ct.frame(LT, x, 0, x.length, d.now, d.zone, 0);
      fr(tcp4({ src: a, dst: b, sport: 40000, dport: 80, flags: 'S', seq: 1000, win: 64000 }));
      fr(tcp4({ src: b, dst: a, sport: 80, dport: 40000, flags: 'SA', seq: 5000, ack: 1001, win: 64000 }));
      const v = fr(tcp4({ src: a, dst: b, sport: 40000, dport: 80, flags: 'A', seq: 1001, ack: 5001, win: 64000 }));
      out.assured.push(v.slot);
    }
    ct.endBatch();
  }
  Atomics.add(ctl, 1, 1); // ready
  Atomics.notify(ctl, 1);
  while (Atomics.load(ctl, 0) === 0) Atomics.wait(ctl, 0, 0, 5); // go
  let i = d.base;
  ct.beginBatch();
  while (Atomics.load(ctl, 0) === 1 && (d.count === 0 || out.attempted < d.count)) {
    const v = send(i++, d.now);
    out.attempted++;
    if (v.state === 0 && v.dir === 0) out.admitted++;
    else if (v.reason) { out.refused++; out.reasons[v.reason] = (out.reasons[v.reason] || 0) + 1; }
    if ((out.attempted & 255) === 0) {
      ct.endBatch(); ct.beginBatch();
      if (attemptsWord >= 0) Atomics.add(ctl, attemptsWord, 256);
    }
  }
  ct.endBatch();
  if (d.count > 0) Atomics.add(ctl, 3, 1); // done by count
  ct.close();
  parentPort.postMessage(out);
})().catch((e) => { parentPort.postMessage({ error: String(e && e.stack || e) }); });
`;

interface WorkerOut {
  attempted: number; admitted: number; refused: number; reasons: Record<string, number>; assured: number[]; error?: string;
}

interface Spec {
  handle: { buffer: SharedArrayBuffer; ns?: number };
  net: number;
  zone?: number;
  base?: number;
  /** Stop after this many attempts (0: run until told to stop). */
  count?: number;
  assured?: number;
}

function startWorkers(ctl: Int32Array, specs: Spec[]): { done: Promise<WorkerOut[]>; workers: Worker[] } {
  const core = new URL('../src/track/core.js', import.meta.url).href;
  const frames = new URL('./helpers/frames.js', import.meta.url).href;
  const workers = specs.map((s) => new Worker(WORKER, {
    eval: true,
    workerData: {
      core, frames, ctl: ctl.buffer, handle: s.handle, net: s.net, zone: s.zone ?? 0, base: s.base ?? 0,
      count: s.count ?? 0, assured: s.assured ?? 0, now: NOW,
    },
  }));
  const done = Promise.all(workers.map((w) => new Promise<WorkerOut>((resolve, reject) => {
    w.once('message', (m: WorkerOut) => (m.error ? reject(new Error(m.error)) : resolve(m)));
    w.once('error', reject);
  })));
  return { done, workers };
}

async function waitReady(ctl: Int32Array, n: number): Promise<void> {
  while (Atomics.load(ctl, 1) < n) await new Promise((r) => setTimeout(r, 5));
}

// ---------------------------------------------------------------------------------------------

test('directional zones: the same tuple in two zones is two connections; a reply zone matches replies only', (t) => {
  const table = ConntrackTable.create({ max: 256 });
  const ct = new Conntrack(table);
  const ab = udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 5000, dport: 53 });
  const ba = udp4({ src: '10.0.0.2', dst: '10.0.0.1', sport: 53, dport: 5000 });
  ct.beginBatch();
  // The verdict object is reused: copy what the test compares.
  const f = (p: Uint8Array, zone: number, dir?: number, ns = 0) => {
    const v = ct.frame(LT, p, 0, p.length, NOW, zone, ns, dir);
    return { state: v.state, slot: v.slot, dir: v.dir, reason: v.reason };
  };
  // Zones 1 and 2 (both directions), and namespace 3: three connections.
  const z1 = f(ab, 1);
  const z2 = f(ab, 2);
  const n3 = f(ab, 1, undefined, 3);
  t.is(z1.state, 0);
  t.is(z2.state, 0);
  t.is(n3.state, 0);
  t.not(z1.slot, z2.slot);
  t.is(table.zoneCount(1), 2);
  t.is(table.zoneCount(2), 1);
  t.is(table.namespaceCount(3), 1);
  // Replies in each zone find their own.
  t.is(f(ba, 1).slot, z1.slot);
  t.is(f(ba, 2).slot, z2.slot);
  t.is(f(ba, 1).dir, 1);

  // A reply-direction zone (the kernel's NF_CT_ZONE_DIR_REPL): original tuple in zone 0, reply in 7.
  const c = udp4({ src: '10.0.1.1', dst: '10.0.1.2', sport: 6000, dport: 53 });
  const r = udp4({ src: '10.0.1.2', dst: '10.0.1.1', sport: 53, dport: 6000 });
  const nv = f(c, 7, ZONE_DIR_REPL);
  t.is(nv.state, 0);
  const slot = nv.slot;
  t.is(table.i32[table.sec.entries + slot * ENTRY_WORDS + E_ZONE], zoneWord(7, ZONE_DIR_REPL));
  t.is(table.zoneCount(7), 1); // its zone id is the reply zone
  // The original direction in zone 0 finds it (its original zone is 0)...
  const again = f(c, 0);
  t.is(again.slot, slot);
  t.is(again.dir, 0);
  // ...a zone-7 packet in the original direction does not match it (the original zone is 0);
  // its own connection would hold the reply tuple in zone 7 too, a clash: the insert fails.
  const other = f(c, 7);
  t.not(other.slot, slot);
  t.is(other.reason, 'tuple clashes with a connection of another directional zone');
  // The reply tagged with zone 7 matches as a reply; the same reply in zone 0 does not.
  const reply = f(r, 7);
  t.is(reply.slot, slot);
  t.is(reply.dir, 1);
  const reply0 = f(r, 0);
  t.not(reply0.slot, slot);
  t.is(table.zoneCount(7), 1);
  // An original-only zone: the reply in the default zone matches it.
  const o = udp4({ src: '10.0.2.1', dst: '10.0.2.2', sport: 7000, dport: 53 });
  const or = udp4({ src: '10.0.2.2', dst: '10.0.2.1', sport: 53, dport: 7000 });
  const ov = f(o, 9, ZONE_DIR_ORIG);
  const orv = f(or, 0);
  t.is(orv.slot, ov.slot);
  t.is(orv.dir, 1);
  t.is(table.zoneCount(9), 1);
  ct.endBatch();
  // Filters and the index agree on the zone id.
  const ops = new CtOps(table);
  t.is(ops.count({ zone: 7 }, { now: NOW }), table.zoneCount(7));
  t.is(ops.count({ replyZone: 7 }, { now: NOW }), 1);
  t.is(ops.count({ ns: 3 }, { now: NOW }), 1);
  ops.close();
  ct.close();
  assertInvariants(t, table);
});

test('limits are owner-only; a namespace view has no setters; a bound tracker stays in its namespace', (t) => {
  const table = ConntrackTable.create({ max: 1024, namespaces: 4 });
  t.true(table.isOwner);
  const attached = ConntrackTable.attach(table.handle());
  t.false(attached.isOwner);
  t.throws(() => attached.setNamespaceLimit(1, 10), { message: /only the table object that created/ });
  t.throws(() => attached.setZoneLimit(1, 10), { message: /only the table object that created/ });
  t.throws(() => attached.setDefaultZoneLimit(10), { message: /only the table object that created/ });
  table.setNamespaceLimit(2, 3);
  const view = table.namespace(2);
  t.is(view.limit, 3);
  t.false('setNamespaceLimit' in view);
  // A tracker built from the view's handle ignores the ns argument: it is namespace 2.
  const ct = new Conntrack(view.handle());
  t.false(ct.table.isOwner);
  t.throws(() => ct.table.setNamespaceLimit(2, 1000));
  ct.beginBatch();
  const reasons: (string | null)[] = [];
  for (let i = 0; i < 6; i++) {
    const p = udp4({ src: `10.9.0.${i + 1}`, dst: '10.0.0.2', sport: 5000, dport: 53 });
    reasons.push(ct.frame(LT, p, 0, p.length, NOW, 0, 0).reason);
  }
  ct.endBatch();
  // Not-ASSURED entries of its own are early-dropped to make room: always admitted, count stays 3.
  t.deepEqual(reasons, [null, null, null, null, null, null]);
  t.is(view.count, 3);
  t.is(table.namespaceCount(0), 0);
  ct.close();
  assertInvariants(t, table);
});

test('a namespace or zone at its limit with only ASSURED entries refuses; the global early_drop stays in its namespace', (t) => {
  const table = ConntrackTable.create({ max: 64, namespaces: 4, buckets: 16 });
  table.setNamespaceLimit(1, 4);
  table.setZoneLimit(5, 2);
  const ct = new Conntrack(table);
  const assuredUdp = (i: number, zone: number, ns: number): void => {
    const a = `10.5.${ns}.${i}`;
    const q = udp4({ src: a, dst: '192.0.2.2', sport: 6000, dport: 53 });
    const r = udp4({ src: '192.0.2.2', dst: a, sport: 53, dport: 6000 });
    ct.frame(LT, q, 0, q.length, NOW - 2500, zone, ns);
    ct.frame(LT, r, 0, r.length, NOW - 2500, zone, ns);
    ct.frame(LT, q, 0, q.length, NOW, zone, ns);
  };
  ct.beginBatch();
  for (let i = 0; i < 4; i++) assuredUdp(i, 0, 1);
  t.is(table.namespaceCount(1), 4);
  const p = udp4({ src: '10.5.1.99', dst: '192.0.2.2', sport: 6000, dport: 53 });
  const v = ct.frame(LT, p, 0, p.length, NOW, 0, 1);
  t.is(v.reason, 'namespace limit');
  t.true(v.drop);
  for (let i = 0; i < 2; i++) assuredUdp(i, 5, 2);
  const vz = ct.frame(LT, p, 0, p.length, NOW, 5, 2);
  t.is(vz.reason, 'zone limit');
  // Another namespace's zone-5 insert: refused too (zone ids are table-wide), and nothing of
  // namespace 2 was evicted for it.
  const vz3 = ct.frame(LT, p, 0, p.length, NOW, 5, 3);
  t.is(vz3.reason, 'zone limit');
  t.is(table.zoneCount(5), 2);
  t.is(assuredOf(table, 2), 2);
  // Fill the table with namespace 0's one-way (not-ASSURED) UDP: namespace 3 cannot make room
  // by evicting them (the global early_drop checks the namespace), namespace 0 can.
  let i = 0;
  while (table.i32[6]! < 64 && i < 1000) {
    const q = udp4({ src: `10.6.${i >> 8}.${i & 255}`, dst: '192.0.2.9', sport: 7000, dport: 53 });
    ct.frame(LT, q, 0, q.length, NOW, 0, 0);
    i++;
  }
  t.is(table.i32[6], 64); // H_COUNT: full
  const n0 = table.namespaceCount(0);
  const full = udp4({ src: '10.7.0.1', dst: '192.0.2.9', sport: 7000, dport: 53 });
  const v3 = ct.frame(LT, full, 0, full.length, NOW, 0, 3);
  t.is(v3.reason, 'table full');
  t.is(table.namespaceCount(0), n0);
  ct.endBatch();
  const st = table.stats().total;
  t.true(st['ns_limit']! >= 1);
  t.true(st['zone_limit']! >= 2);
  ct.close();
  assertInvariants(t, table);
});

test('a rogue namespace flooding from its own threads cannot keep others out nor cost them an ASSURED connection', async (t) => {
  const table = ConntrackTable.create({ max: 16384, namespaces: 4, maxWorkers: 12 });
  const ROGUE = 3;
  table.setNamespaceLimit(ROGUE, 4096);
  table.setNamespaceLimit(1, 4096);
  table.setNamespaceLimit(2, 4096);
  const ctl = new Int32Array(new SharedArrayBuffer(16));
  const rogue = table.namespace(ROGUE).handle();
  const { done } = startWorkers(ctl, [
    { handle: rogue, net: 30 }, { handle: rogue, net: 31, base: 1 << 20 },
    { handle: table.namespace(1).handle(), net: 11, assured: 300, count: 3000 },
    { handle: table.namespace(2).handle(), net: 12, assured: 300, count: 3000 },
  ]);
  await waitReady(ctl, 4);
  t.is(assuredOf(table, 1), 300);
  t.is(assuredOf(table, 2), 300);
  Atomics.store(ctl, 0, 1); // go
  Atomics.notify(ctl, 0);
  let maxRogue = 0;
  const t0 = Date.now();
  // Sample while the flood runs, until the others are done (they stop by count) and the rogue
  // has tried at least ten times its limit (or 20 s).
  while ((Atomics.load(ctl, 3) < 2 || Atomics.load(ctl, 2) < 40960) && Date.now() - t0 < 20000) {
    maxRogue = Math.max(maxRogue, table.namespaceCount(ROGUE));
    await new Promise((r) => setTimeout(r, 5));
  }
  Atomics.store(ctl, 0, 2); // stop
  const [r1, r2, g1, g2] = await done;
  const rogueAttempted = r1!.attempted + r2!.attempted;
  const rogueRefused = r1!.refused + r2!.refused;
  const rogueAdmitted = r1!.admitted + r2!.admitted;
  t.log(`rogue: ${rogueAttempted} inserts attempted, ${rogueAdmitted} admitted (early_drop inside its own namespace), ` +
    `${rogueRefused} refused (${JSON.stringify({ ...r1!.reasons })} / ${JSON.stringify({ ...r2!.reasons })}), peak count ${maxRogue} <= limit 4096`);
  t.log(`others: ns 1 admitted ${g1!.admitted}/${g1!.attempted}, ns 2 admitted ${g2!.admitted}/${g2!.attempted}; ` +
    `ASSURED lost: ns 1 ${300 - assuredOf(table, 1)}, ns 2 ${300 - assuredOf(table, 2)}`);
  t.true(rogueAttempted >= 40960);
  t.true(maxRogue <= 4096);
  t.is(table.namespaceCount(ROGUE), 4096);
  t.is(g1!.refused, 0, JSON.stringify(g1!.reasons));
  t.is(g2!.refused, 0, JSON.stringify(g2!.reasons));
  t.is(g1!.admitted, g1!.attempted);
  t.is(assuredOf(table, 1), 300);
  t.is(assuredOf(table, 2), 300);
  // No entry of namespace 1 or 2 was evicted: all their connections are still there.
  t.is(table.namespaceCount(1), 300 + 3000);
  t.is(table.namespaceCount(2), 300 + 3000);
  assertInvariants(t, table);
});

test('limits hold under concurrent inserts from several threads (sampled, exact at the end)', async (t) => {
  const table = ConntrackTable.create({ max: 8192, namespaces: 4, maxWorkers: 12 });
  table.setNamespaceLimit(1, 500);
  table.setDefaultZoneLimit(300);
  table.setZoneLimit(0, 0); // zone 0: no limit (overrides the default)
  const ctl = new Int32Array(new SharedArrayBuffer(16));
  const h1 = table.namespace(1).handle();
  const h2 = table.namespace(2).handle();
  const { done } = startWorkers(ctl, [
    { handle: h1, net: 41, count: 4000 }, { handle: h1, net: 42, count: 4000 }, { handle: h1, net: 43, count: 4000 },
    { handle: h2, net: 44, zone: 9, count: 4000 }, { handle: h2, net: 45, zone: 9, count: 4000 },
  ]);
  await waitReady(ctl, 5);
  Atomics.store(ctl, 0, 1);
  Atomics.notify(ctl, 0);
  let samples = 0;
  let over = 0;
  let finished = false;
  void done.then(() => { finished = true; }, () => { finished = true; });
  while (!finished) {
    samples++;
    if (table.namespaceCount(1) > 500) over++;
    if (table.zoneCount(9) > 300) over++;
    await new Promise((r) => setImmediate(r));
  }
  const outs = await done;
  t.log(`${samples} samples, ${outs.reduce((a, o) => a + o.attempted, 0)} inserts attempted, ` +
    `${outs.reduce((a, o) => a + o.refused, 0)} refused`);
  t.is(over, 0);
  t.is(table.namespaceCount(1), 500);
  t.is(table.zoneCount(9), 300);
  t.is(table.zoneLimit(9).limit, 300);
  t.false(table.zoneLimit(9).own);
  t.deepEqual(table.zoneLimit(0), { limit: 0, own: true });
  assertInvariants(t, table);
});

test('flush of a full zone of 100,000 UDP connections examines that zone\'s list only, the generic walk every entry', (t) => {
  const N = 100_000;
  const OTHER = 200_000;
  const table = ConntrackTable.create({ max: 1 << 19, namespaces: 4 });
  const ct = new Conntrack(table);
  const ops = new CtOps(table);
  const f = udp4({ src: '10.0.0.0', dst: '192.0.2.1', sport: 1, dport: 53 });
  const fill = (net: number, n: number, zone: number): void => {
    ct.beginBatch();
    for (let i = 0; i < n; i++) {
      f[12] = net; f[13] = (i >> 16) & 255; f[14] = (i >> 8) & 255; f[15] = i & 255;
      f[10] = 0; f[11] = 0;
      let s = 0;
      for (let k = 0; k < 20; k += 2) s += (f[k]! << 8) | f[k + 1]!;
      while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
      f[10] = (~s >> 8) & 255; f[11] = ~s & 255;
      f[26] = 0; f[27] = 0;
      const v = ct.frame(LT, f, 0, f.length, NOW, zone, 1);
      if (v.state !== 0) throw new Error(`packet ${i}: ${v.reason}`);
      if ((i & 1023) === 1023) { ct.endBatch(); ct.beginBatch(); }
    }
    ct.endBatch();
  };
  fill(20, OTHER, 3); // the rest of the table: another zone
  table.clock = NOW;
  const indexed: number[] = [];
  const walked: number[] = [];
  for (let run = 0; run < 5; run++) {
    fill(21, N, 7);
    let t0 = performance.now();
    t.is(ops.flush({ zone: 7 }), N);
    indexed.push(performance.now() - t0);
    t.is(ops.examined, N, 'the zone list holds exactly its entries');
    t.is(table.zoneCount(7), 0);
    t.is(table.zoneCount(3), OTHER);
    fill(21, N, 7);
    // origZone is not indexed: the same entries through the generic walk of every bucket.
    t0 = performance.now();
    t.is(ops.flush({ origZone: 7 }), N);
    walked.push(performance.now() - t0);
    t.is(ops.examined, N + OTHER, 'origZone is not indexed: every linked entry is examined');
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[2]!;
  t.log(`flush zone of ${N} UDP in a table of ${N + OTHER} (${table.buckets} buckets): ` +
    `indexed median ${med(indexed).toFixed(1)} ms (${indexed.map((x) => x.toFixed(0)).join(', ')}), ` +
    `generic walk median ${med(walked).toFixed(1)} ms (${walked.map((x) => x.toFixed(0)).join(', ')})`);
  // An empty zone's flush examines no entry, however big the table; the walk examines them all.
  let t0 = performance.now();
  t.is(ops.flush({ zone: 8 }), 0);
  const empty = performance.now() - t0;
  t.is(ops.examined, 0);
  t0 = performance.now();
  t.is(ops.flush({ origZone: 8 }), 0);
  t.is(ops.examined, OTHER);
  t.log(`flush of an empty zone: indexed ${empty.toFixed(2)} ms, generic walk ${(performance.now() - t0).toFixed(1)} ms`);
  t.is(ops.count({ ns: 1 }, { now: NOW }), OTHER);
  ops.close();
  ct.close();
  assertInvariants(t, table);
});

test('flush by zone while packet workers insert into it: lists and counters stay right', async (t) => {
  const table = ConntrackTable.create({ max: 65536, namespaces: 4, maxWorkers: 12 });
  const ctl = new Int32Array(new SharedArrayBuffer(16));
  const { done } = startWorkers(ctl, [
    { handle: table.namespace(1).handle(), net: 51, zone: 4, count: 20000 },
    { handle: table.namespace(2).handle(), net: 52, zone: 4, count: 20000 },
  ]);
  await waitReady(ctl, 2);
  Atomics.store(ctl, 0, 1);
  Atomics.notify(ctl, 0);
  const ops = new CtOps(table, { sliceBuckets: 256 });
  let removed = 0;
  let finished = false;
  void done.then(() => { finished = true; }, () => { finished = true; });
  while (!finished) {
    removed += ops.flush({ zone: 4 });
    removed += ops.flush({ ns: 2 });
    await new Promise((r) => setImmediate(r));
  }
  const outs = await done;
  removed += ops.flush({ zone: 4 });
  ops.close();
  t.is(removed, outs[0]!.admitted + outs[1]!.admitted);
  t.is(table.zoneCount(4), 0);
  assertInvariants(t, table);
});
