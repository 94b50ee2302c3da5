/**
 * A worker thread that puts itself into one fault position on a shared table, says so, and then
 * hangs there until it is terminated (or, for 'stall', woken): the fault-injection tests
 * (test/faults.test.ts) kill it there and check what recovery and the survivors do.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Conntrack } from '../../src/track/core.js';
import { subscribeEvents } from '../../src/table/ecache.js';
import { ConntrackTable } from '../../src/table/table.js';
import { lock } from '../../src/table/locks.js';
import {
  W_EV_D, WORKER_WORDS, XC_EV_DHEAD,
} from '../../src/table/layout.js';
import { feed, udpOneWay } from './conns.js';
import { udp4 } from './frames.js';

export interface FaultWorkerData {
  readonly buffer: SharedArrayBuffer;
  readonly mode: 'hold-lock' | 'reserve-destroy' | 'die-in-destroy' | 'stall' | 'subscribe' | 'flush';
  /** hold-lock: the lock word. */
  readonly word?: number;
  /** die-in-destroy: the connection index (conns.ts client(i)) and the KILL_* reason. */
  readonly conn?: number;
  readonly why?: number;
  /** stall: Int32Array word 0 is set to 1 (and notified) to end the stall. */
  readonly control?: SharedArrayBuffer;
  readonly now?: number;
}

const data = workerData as FaultWorkerData;
const post = (m: Record<string, unknown>): void => parentPort!.postMessage(m);
const hang = (): never => {
  const w = new Int32Array(new SharedArrayBuffer(4));
  for (;;) Atomics.wait(w, 0, 0, 1000); // until terminated
};
const now = data.now ?? 1000;

if (data.mode === 'subscribe') {
  const sub = subscribeEvents(ConntrackTable.attach({ buffer: data.buffer }));
  sub.poll();
  post({ type: 'ready', index: sub.index });
  hang(); // never polls again, never closes: a dead or stuck consumer
}

const ct = new Conntrack({ buffer: data.buffer });
const i32 = ct.table.i32;

switch (data.mode) {
  case 'hold-lock':
    lock(i32, data.word!, ct.wid);
    post({ type: 'ready', wid: ct.wid });
    hang();
    break;
  case 'reserve-destroy': {
    // A producer's first step (ecache.ts writeDestroy): claim DESTROY record d, name it, and die
    // before writing it.
    const xc = ct.table.sec.xctl;
    const d = Atomics.load(i32, xc + XC_EV_DHEAD);
    Atomics.compareExchange(i32, xc + XC_EV_DHEAD, d, (d + 1) & 0x7fffffff);
    Atomics.store(i32, ct.table.sec.workers + ct.wid * WORKER_WORDS + W_EV_D, d + 1);
    post({ type: 'ready', wid: ct.wid, d });
    hang();
    break;
  }
  case 'die-in-destroy': {
    ct.beginBatch();
    const slot = udpOneWay(ct, data.conn!, now).slot;
    const id = i32[ct.chains.entry(slot) + 15]!; // E_ID
    // Die inside the DESTROY of the delete: after the unlink and the count, before the event.
    ct.chains.onDestroy = () => {
      post({ type: 'ready', wid: ct.wid, id });
      hang();
    };
    ct.chains.kill(slot, data.why ?? 0);
    break;
  }
  case 'stall': {
    ct.beginBatch();
    feed(ct, udp4({ src: '10.77.0.1', dst: '192.0.2.9', sport: 1, dport: 53, payload: 'x' }), now);
    post({ type: 'ready', wid: ct.wid });
    const c = new Int32Array(data.control!);
    while (Atomics.load(c, 0) === 0) Atomics.wait(c, 0, 0, 1000); // alive, stuck inside the batch
    feed(ct, udp4({ src: '10.77.0.2', dst: '192.0.2.9', sport: 1, dport: 53, payload: 'x' }), now);
    ct.endBatch();
    const st = ct.table.stats().perWorker;
    post({ type: 'done', wid: ct.wid, resumed: ct.table.stats().total['stall_resumed'], rows: st.length });
    ct.close();
    break;
  }
  case 'flush': {
    const n = ct.flush();
    ct.close();
    post({ type: 'done', flushed: n });
    break;
  }
}
