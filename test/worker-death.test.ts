/**
 * Workers terminated at random points while another keeps working: recoverDeadWorker() after
 * each death must leave no lock held, nothing corrupted and no slot leaked, and the survivor
 * must finish (no deadlock on a dead worker's lock).
 */
import test from 'ava';
import { Worker } from 'node:worker_threads';
import { checkInvariants } from '../src/table/invariants.js';
import { reclaimOrphans, recoverDeadWorker, type RecoveryReport } from '../src/table/recovery.js';
import { ConntrackTable, type Discipline } from '../src/table/table.js';
import type { StressWorkerData, StressWorkerDone } from '../workers/stress-worker.js';

const WORKER = new URL('../workers/stress-worker.js', import.meta.url);

let seed = 0x2545f491;
function rand(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x100000000;
}

function spawn(table: ConntrackTable, data: Partial<StressWorkerData>): { w: Worker; ready: Promise<number> } {
  const wd: StressWorkerData = {
    buffer: table.buffer, mode: 'forever', seed: (rand() * 0x7fffffff) | 1, flows: 4096, t0: Date.now(),
    speed: 200, publishClock: false, batch: 16, ...data,
  };
  const w = new Worker(WORKER, { workerData: wd });
  const ready = new Promise<number>((ok, fail) => {
    w.on('message', (m: { type: string; wid?: number }) => { if (m.type === 'ready') ok(m.wid!); });
    w.once('error', fail);
    w.once('exit', () => fail(new Error('exited before ready')));
  });
  return { w, ready };
}

const sleep = (ms: number): Promise<void> => new Promise((ok) => setTimeout(ok, ms));

async function deaths(t: import('ava').ExecutionContext, discipline: Discipline, kills: number): Promise<void> {
  const table = ConntrackTable.create({ max: 1024, discipline, maxWorkers: 8 });
  const stop = new SharedArrayBuffer(4);
  const progress = new SharedArrayBuffer(4);
  const survivor = spawn(table, { mode: 'forever', publishClock: true, stop, progress, index: 0, batch: 64 });
  let survivorDone: StressWorkerDone | null = null;
  const survivorExit = new Promise<void>((ok) => {
    survivor.w.on('message', (m: { type: string }) => { if (m.type === 'done') survivorDone = m as StressWorkerDone; });
    survivor.w.once('exit', () => ok());
  });
  await survivor.ready;
  const reports: RecoveryReport[] = [];
  let stalls = 0;
  // Two killers in parallel, each: spawn a victim, let it run 0-20 ms, terminate, recover.
  const killer = async (n: number): Promise<void> => {
    for (let k = 0; k < n; k++) {
      const v = spawn(table, {});
      v.w.on('error', () => {});
      const wid = await v.ready;
      await sleep(rand() * 20);
      const before = Atomics.load(new Int32Array(progress), 0);
      await v.w.terminate();
      reports.push(recoverDeadWorker(table, wid));
      // The survivor must keep going after each recovery (it may have waited on the victim's lock).
      const until = Date.now() + 5000;
      while (Atomics.load(new Int32Array(progress), 0) === before && Date.now() < until) await sleep(1);
      if (Atomics.load(new Int32Array(progress), 0) === before) stalls++;
    }
  };
  await Promise.all([killer(kills >> 1), killer(kills - (kills >> 1))]);
  Atomics.store(new Int32Array(stop), 0, 1); // ask the survivor to finish
  await survivorExit;
  t.truthy(survivorDone, 'the survivor finished its work');
  t.is(stalls, 0, 'the survivor never stalled after a recovery');
  // Orphaned limbo whose grace period had not passed during a recovery: recycle it now.
  const me = table.registerWorker();
  reclaimOrphans(table, me);
  table.releaseWorker(me);

  const r = checkInvariants(table);
  const tally = (f: (x: RecoveryReport) => boolean): number => reports.filter(f).length;
  t.log(`${discipline}: ${reports.length} deaths; locks released in ${tally((x) => x.locksReleased > 0)}, ` +
    `insert rolled back ${tally((x) => x.insert === 'rolled-back')} / forward ${tally((x) => x.insert === 'rolled-forward')}, ` +
    `delete finished ${tally((x) => x.killStep > 0)}, allocator op ${tally((x) => x.allocOp !== null)} ` +
    `(rolled back ${tally((x) => x.allocRolledBack)}), references dropped ${tally((x) => x.referencesDropped > 0)}, ` +
    `free-list lock held by another dead worker (slots handed off) ${tally((x) => x.handedOff)}; ` +
    `survivor ${survivorDone ? (survivorDone as StressWorkerDone).operations : 0} ops`);
  t.is(reports.length, kills);
  t.true(reports.every((x) => x.recovered));
  const s = r.slots;
  t.is(s.orphan, 0);
  if (discipline === 'noref') {
    t.deepEqual(r.invariants.filter((x) => !x.ok), []);
    t.true(r.ok);
    // Every slot accounted for: nothing leaked, nothing held, nothing waiting.
    t.is(s.leaked, 0);
    t.is(s.held, 0);
    t.is(s.linked + s.freeList + s.cached + s.limbo, table.capacity);
  } else {
    // 'refcount': a death in the one-instruction gap between a reference drop and its record
    // may leak that one slot (recovery never drops a reference twice); nothing else may break.
    t.deepEqual(r.invariants.filter((x) => !x.ok && x.name !== 'no-leaked-slot'), []);
    t.true(s.leaked + s.held <= 3, `leaked ${s.leaked}, held ${s.held}`);
    t.is(s.linked + s.freeList + s.cached + s.limbo + s.held + s.leaked, table.capacity);
  }
}

test.serial('workers terminated at random points are recovered (noref)', async (t) => {
  t.timeout(180000);
  await deaths(t, 'noref', 160);
});

test.serial('workers terminated at random points are recovered (refcount)', async (t) => {
  t.timeout(180000);
  await deaths(t, 'refcount', 60);
});
