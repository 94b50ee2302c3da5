/**
 * Per-worker counters (chains.ts, zones.ts; README "Concurrency"): the entry count and the
 * namespace / zone counts are the shared words plus every worker record's unfolded part, exact at
 * rest; nf_conntrack_max is never passed by concurrent inserts; limits stay exact; ids unique.
 */
import test from 'ava';
import { Conntrack } from '../src/track/core.js';
import { checkInvariants, formatInvariants } from '../src/table/invariants.js';
import { E_ID, ENTRY_WORDS, H_COUNT, W_CNT, W_RES, WORKER_WORDS } from '../src/table/layout.js';
import { CtOps } from '../src/ops/ops.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { ConntrackTable } from '../src/table/table.js';
import { udp4 } from './helpers/frames.js';

function send(ct: Conntrack, i: number, zone = 0): string {
  const f = udp4({ src: `10.7.${(i >> 8) & 255}.${i & 255}`, dst: '192.0.2.9', sport: 1000 + (i % 50000), dport: 53 });
  return ct.frame(LINKTYPE_RAW, f, 0, f.length, 1000, zone).reason ?? 'ok';
}

test('counts are exact mid-batch (summed) and at rest (folded into the shared words)', (t) => {
  const table = ConntrackTable.create({ max: 4096 });
  const a = new Conntrack(table);
  const b = new Conntrack(table.namespace(3).handle());
  a.beginBatch();
  b.beginBatch();
  for (let i = 0; i < 100; i++) send(a, i, 5); // 100 in zone 5, namespace 0
  for (let i = 0; i < 45; i++) send(b, 1000 + i, 6); // 45 in zone 6, namespace 3
  // Inside the batches: the records hold unfolded parts, the sums are exact.
  const wa = table.sec.workers + a.wid * WORKER_WORDS;
  t.not(table.i32[wa + W_CNT], 0, 'the inserting worker holds an unfolded part');
  t.is(table.count, 145);
  t.is(table.zoneCount(5), 100);
  t.is(table.zoneCount(6), 45);
  t.is(table.namespaceCount(0), 100);
  t.is(table.namespaceCount(3), 45);
  a.endBatch();
  b.endBatch();
  // At rest: every part folded.
  t.is(Atomics.load(table.i32, H_COUNT), 145);
  t.is(table.i32[wa + W_CNT], 0);
  const r = checkInvariants(table);
  t.true(r.ok, formatInvariants(r));
  // Deletes count down the same way, through another record.
  const ops = new CtOps(table);
  t.is(ops.flush({ zone: 5 }), 100);
  t.is(table.count, 45);
  t.is(table.zoneCount(5), 0);
  t.is(table.namespaceCount(0), 0);
  ops.close();
  a.close();
  b.close();
  t.true(checkInvariants(table).ok);
});

test('an insert near nf_conntrack_max counts the entries other workers are creating', (t) => {
  const max = 200;
  const table = ConntrackTable.create({ max });
  const filler = new Conntrack(table); // namespace 0
  filler.beginBatch();
  for (let i = 0; i < max - 1; i++) t.is(send(filler, i), 'ok');
  filler.endBatch();
  const a = new Conntrack(table.namespace(1).handle()); // early_drop looks in namespace 1 only: nothing to evict
  const other = new Conntrack(table.namespace(2).handle());
  // Another worker is creating an entry this close to the limit (it announced it in W_RES).
  const wo = table.sec.workers + other.wid * WORKER_WORDS;
  Atomics.store(table.i32, wo + W_RES, 1);
  a.beginBatch();
  t.is(send(a, 5000), 'table full', 'max - 1 entries and one being created: full');
  a.endBatch();
  Atomics.store(table.i32, wo + W_RES, 0);
  a.beginBatch();
  t.is(send(a, 5001), 'ok', 'the last place');
  t.is(send(a, 5002), 'table full');
  a.endBatch();
  t.is(table.count, max);
  // Our own announcements never outlive the insert.
  t.is(Atomics.load(table.i32, table.sec.workers + a.wid * WORKER_WORDS + W_RES), 0);
  for (const c of [filler, a, other]) c.close();
  const r = checkInvariants(table);
  t.true(r.ok, formatInvariants(r));
});

test('a limit set while workers hold unfolded parts is exact from the next insert', (t) => {
  const table = ConntrackTable.create({ max: 4096 });
  const a = new Conntrack(table);
  const b = new Conntrack(table);
  a.beginBatch();
  b.beginBatch();
  for (let i = 0; i < 10; i++) send(a, i, 9);
  for (let i = 0; i < 10; i++) send(b, 100 + i, 9);
  // Both hold unfolded zone-9 parts (inside their batches); the limit folds them first.
  a.endBatch(); // a leaves its batch, b stays inside with its part
  table.setZoneLimit(9, 25);
  t.is(table.zoneCount(9), 20);
  // At the limit an insert first evicts a not-ASSURED connection of the zone (early_drop inside it).
  const early = table.stats().total['early_drop']!;
  for (let i = 0; i < 10; i++) t.is(send(b, 200 + i, 9), 'ok');
  t.is(table.zoneCount(9), 25, 'never past the limit');
  t.is(table.stats().total['early_drop']! - early, 5, 'exactly the 5 over the limit made room');
  b.endBatch();
  // Lifting it: counted per worker again, still exact.
  table.setZoneLimit(9, 0);
  b.beginBatch();
  for (let i = 0; i < 5; i++) t.is(send(b, 300 + i, 9), 'ok');
  t.is(table.zoneCount(9), 30);
  t.is(table.stats().total['early_drop']! - early, 5, 'no early_drop without a limit');
  b.endBatch();
  a.close();
  b.close();
  const r = checkInvariants(table);
  t.true(r.ok, formatInvariants(r));
});

test('connection ids are unique across workers, in order per worker', (t) => {
  const table = ConntrackTable.create({ max: 4096 });
  const cts = [new Conntrack(table), new Conntrack(table)];
  const ids: number[][] = [[], []];
  for (const ct of cts) ct.beginBatch();
  for (let i = 0; i < 600; i++) {
    for (let k = 0; k < 2; k++) {
      const f = udp4({ src: `10.8.${k}.${i & 255}`, dst: '192.0.2.9', sport: 2000 + i, dport: 53 });
      const v = cts[k]!.frame(LINKTYPE_RAW, f, 0, f.length, 1000, 0);
      ids[k]!.push(table.i32[table.sec.entries + v.slot * ENTRY_WORDS + E_ID]!);
    }
  }
  for (const ct of cts) ct.endBatch();
  const all = new Set([...ids[0]!, ...ids[1]!]);
  t.is(all.size, 1200, 'no id twice');
  for (const xs of ids) t.true(xs.every((x, i) => i === 0 || x > xs[i - 1]!), 'increasing per worker');
  for (const ct of cts) ct.close();
});
