import test from 'ava';
import { runStress } from '../src/cli/stress.js';

for (const discipline of ['noref', 'refcount'] as const) {
  test.serial(`3 workers, mixed operations on one table (${discipline}): every invariant holds`, async (t) => {
    const r = await runStress({ workers: 3, opsPerWorker: 25000, max: 2048, discipline, seed: 42, speed: 400, deadlineMs: 120_000 });
    t.log(`${r.operations} ops, ${r.inserts} inserts, ${r.deletes} deletes, ${r.expired} expired, ` +
      `${r.earlyDrops} early drops, ${r.gcEvicted} GC evictions, ${r.gracePeriods} grace periods, ` +
      `${r.slotsRecycled} slots recycled, GC ${r.gc}`);
    t.deepEqual(r.invariants.filter((x) => !x.ok), []);
    t.true(r.ok);
    t.is(r.operations, 75000);
    t.true(r.inserts > 1000);
    t.true(r.deletes > 100);
    t.true(r.expired + r.gcEvicted > 0);
    t.is(r.slots.leaked, 0);
    t.is(r.slots.held, 0);
    t.is(r.slots.orphan, 0);
    if (discipline === 'noref') t.true(r.slotsRecycled > 0);
  });
}
