/**
 * Reclamation: a slot deleted while another worker is inside a batch ('noref') is not reused
 * until that worker has left its batch, whether the deleter, the GC worker, or the GC adopting a
 * departed worker's limbo reclaims it; and in 'refcount' a lookup whose match is recycled under
 * it restarts.
 */
import test from 'ava';
import { Worker } from 'node:worker_threads';

import { Chains, KILL_DELETE } from '../src/table/chains.js';
import { Conntrack } from '../src/track/core.js';
import { startGc } from '../src/table/gc.js';
import {
  ENTRY_WORDS, E_HASH, E_ID, E_LINK, E_NS, E_PROTO, E_REFCNT, E_STATUS, E_TUPLE, E_ZONE, H_FREE_HEAD,
  IPS_DYING, ST_SEARCH_RESTART, STAT_WORDS, TUPLE_WORDS, W_CACHE, W_CACHE_COUNT, W_LIMBO_COUNT,
  WORKER_WORDS,
} from '../src/table/layout.js';
import { ConntrackTable } from '../src/table/table.js';
import { udpOneWay } from './helpers/conns.js';

type WaitAsyncFn = (a: Int32Array, i: number, v: number, t?: number) => { async: boolean; value: Promise<string> | string };
const waitAsync = (Atomics as unknown as { waitAsync?: WaitAsyncFn }).waitAsync;

async function until(f: Int32Array, want: number): Promise<void> {
  const end = Date.now() + 10_000;
  for (;;) {
    const v = Atomics.load(f, 0);
    if (v === want) return;
    if (Date.now() > end) throw new Error(`held worker never reached state ${want} (is ${v})`);
    const r = waitAsync ? waitAsync(f, 0, v, 100) : null;
    if (r && r.async) await r.value;
    else await new Promise((ok) => setTimeout(ok, 1));
  }
}

/** A worker thread that goes online and stays inside its batch until release(). */
async function holdWorker(table: ConntrackTable): Promise<{ release: () => Promise<void> }> {
  const flags = new Int32Array(new SharedArrayBuffer(8));
  const w = new Worker(new URL('./helpers/held-worker.js', import.meta.url), {
    workerData: { handle: table.handle(), flags: flags.buffer },
  });
  const exited = new Promise<void>((ok, fail) => {
    w.once('error', fail);
    w.once('exit', () => ok());
  });
  await until(flags, 1);
  return {
    release: async () => {
      Atomics.store(flags, 0, 2);
      Atomics.notify(flags, 0);
      await until(flags, 3);
      await exited;
    },
  };
}

/** Is `slot` on the shared free list or in any worker's cache (i.e. allocatable)? */
function allocatable(table: ConntrackTable, slot: number): boolean {
  const i32 = table.i32;
  for (let s = i32[H_FREE_HEAD]!; s >= 0; s = i32[table.sec.entries + s * ENTRY_WORDS + E_LINK]!) {
    if (s === slot) return true;
  }
  for (let w = 0; w < table.maxWorkers; w++) {
    const base = table.sec.workers + w * WORKER_WORDS;
    const n = Atomics.load(i32, base + W_CACHE_COUNT);
    for (let k = 0; k < n; k++) if (i32[base + W_CACHE + k] === slot) return true;
  }
  return false;
}

function status(table: ConntrackTable, slot: number): number {
  return Atomics.load(table.i32, table.sec.entries + slot * ENTRY_WORDS + E_STATUS);
}

function limbo(table: ConntrackTable, wid: number): number {
  return Atomics.load(table.i32, table.sec.workers + wid * WORKER_WORDS + W_LIMBO_COUNT);
}

test('noref: a slot deleted during another worker\'s batch waits for that batch to end', async (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const slot = udpOneWay(ct, 1, 0).slot;
  ct.endBatch();
  const id = table.i32[ct.chains.entry(slot) + E_ID];
  const held = await holdWorker(table);

  ct.beginBatch();
  t.true(ct.chains.kill(slot, KILL_DELETE));
  ct.endBatch(); // quiesce: the epoch moves on, but the held worker still reads under the old one
  t.is(ct.chains.qsbr.pending, 1);
  t.truthy(status(table, slot) & IPS_DYING, 'still DYING, not freed');
  t.false(allocatable(table, slot));
  // Inserts meanwhile never get that slot.
  ct.beginBatch();
  for (let i = 2; i < 40; i++) t.not(udpOneWay(ct, i, 0).slot, slot);
  ct.endBatch();
  t.is(ct.chains.qsbr.reclaim(), 0);
  t.is(table.i32[ct.chains.entry(slot) + E_ID], id, 'entry data intact for the held reader');

  await held.release();
  t.is(ct.chains.qsbr.reclaim(), 1);
  t.is(ct.chains.qsbr.pending, 0);
  t.is(status(table, slot), 0);
  t.true(allocatable(table, slot));
  ct.close();
});

test('noref: the GC worker holds an expired slot in its limbo until the reader leaves, then frees it', async (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const slot = udpOneWay(ct, 1, 0).slot;
  ct.endBatch();
  const held = await holdWorker(table);
  table.clock = 60_000;
  const gc = startGc(table, { wallPerClock: 0.001 });
  const gcWid = await gc.ready;
  await gc.sweep();
  t.is(table.stats().total.expired, 1);
  t.is(limbo(table, gcWid), 1);
  t.truthy(status(table, slot) & IPS_DYING);
  t.false(allocatable(table, slot));

  await held.release();
  await gc.sweep();
  t.is(limbo(table, gcWid), 0);
  t.is(status(table, slot), 0);
  t.true(allocatable(table, slot));
  await gc.stop();
  ct.close();
});

test('noref: the GC adopts the limbo a departed worker left behind', async (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const a = new Conntrack(table);
  a.beginBatch();
  const slot = udpOneWay(a, 1, 0).slot;
  a.endBatch();
  const held = await holdWorker(table);
  a.beginBatch();
  t.true(a.chains.kill(slot, KILL_DELETE));
  a.endBatch();
  t.is(a.chains.qsbr.pending, 1);
  // A worker that leaves without waiting out its grace period (what close() does after its
  // bounded wait): cache handed back, record released with the limbo still in it.
  a.chains.alloc.drain();
  table.releaseWorker(a.wid);
  t.is(limbo(table, a.wid), 1);

  const gc = startGc(table, { wallPerClock: 0.001 });
  await gc.ready;
  await gc.sweep();
  t.is(limbo(table, a.wid), 1, 'not while the reader is still in its batch');
  t.false(allocatable(table, slot));
  await held.release();
  await gc.sweep();
  t.is(limbo(table, a.wid), 0);
  t.is(status(table, slot), 0);
  t.true(allocatable(table, slot));
  await gc.stop();
});

test('refcount: a lookup whose match is recycled under it restarts', (t) => {
  const table = ConntrackTable.create({ max: 64, discipline: 'refcount' });
  const other = new Conntrack(table);
  other.beginBatch();
  const slot = udpOneWay(other, 1, 0).slot;
  other.endBatch();
  const i32 = table.i32;
  const e = other.chains.entry(slot);
  // The key of the original direction, as a lookup would build it.
  const tuple = i32.slice(e + E_TUPLE, e + E_TUPLE + TUPLE_WORDS);
  const proto = i32[e + E_PROTO]!;
  const zone = i32[e + E_ZONE]! & 0xffff;
  const ns = i32[e + E_NS]!;
  const h = i32[e + E_HASH]!;
  let reused = -1;

  /** A lookup that is overtaken between matching the entry and taking its reference. */
  class Overtaken extends Chains {
    raced = false;
    override getRef(ee: number): boolean {
      if (!this.raced) {
        this.raced = true;
        // Another worker deletes the entry; its slot is free at once and the next insert reuses it.
        other.beginBatch();
        t.true(other.chains.kill(slot, KILL_DELETE));
        reused = udpOneWay(other, 2, 0).slot;
        other.endBatch();
      }
      return super.getRef(ee);
    }
  }
  const wid = table.registerWorker();
  const racy = new Overtaken(table, wid);
  t.is(racy.find(tuple, 0, proto, zone, ns, h, 0), -1, 'the recycled slot is not returned');
  t.true(racy.raced);
  t.is(reused, slot, 'the slot was reused by another connection');
  t.true(i32[table.sec.stats + wid * STAT_WORDS + ST_SEARCH_RESTART]! >= 1, 'search_restart counted');
  t.is(Atomics.load(i32, e + E_REFCNT), 1, 'the lookup dropped the reference it took');
  table.releaseWorker(wid);
  other.close();
});
