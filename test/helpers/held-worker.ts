/**
 * A packet worker held inside a batch, for reclamation tests. Protocol on `flags` (Int32Array):
 * word 0: 1 = online (set here), 2 = release (set by the test), 3 = offline again (set here);
 * word 1: the worker record id.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Conntrack } from '../../src/track/core.js';
import type { TableHandle } from '../../src/table/table.js';

const { handle, flags } = workerData as { handle: TableHandle; flags: SharedArrayBuffer };
const f = new Int32Array(flags);
const ct = new Conntrack(handle);
ct.beginBatch();
Atomics.store(f, 1, ct.wid);
Atomics.store(f, 0, 1); // online: announce, then wake the test
Atomics.notify(f, 0);
// Sleep until the test stores 2 (a wait on the flag word; no timeout: the test always releases).
while (Atomics.load(f, 0) === 1) Atomics.wait(f, 0, 1);
ct.endBatch();
Atomics.store(f, 0, 3); // offline: announce after endBatch's seq-cst store
Atomics.notify(f, 0);
ct.close();
parentPort?.postMessage('done');
