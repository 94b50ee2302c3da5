/**
 * A packet worker that stays inside one batch for `ms` milliseconds on its own clock, then
 * leaves it (for a test whose thread is blocked meanwhile, e.g. in close()). Word 0 of `flags`:
 * 1 = online (set here), 3 = offline again.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Conntrack } from '../../src/track/core.js';
import type { TableHandle } from '../../src/table/table.js';

const { handle, flags, ms } = workerData as { handle: TableHandle; flags: SharedArrayBuffer; ms: number };
const f = new Int32Array(flags);
const ct = new Conntrack(handle);
ct.beginBatch();
Atomics.store(f, 0, 1); // online: announce, then wake the test
Atomics.notify(f, 0);
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms); // a plain sleep inside the batch
ct.endBatch();
Atomics.store(f, 0, 3);
Atomics.notify(f, 0);
ct.close();
parentPort?.postMessage('done');
