/**
 * The threads of the chaos test (chaos.ts): packet workers, a flusher and a slow subscriber, each
 * on the shared table, each killable at any instruction. Shared Int32Array words (ChaosShared)
 * carry what the checker needs to know after a kill.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { KILL_DELETE } from '../../src/table/chains.js';
import { EVENT_DESTROY, subscribeEvents } from '../../src/table/ecache.js';
import { ConntrackTable } from '../../src/table/table.js';
import { Conntrack, R_TABLE_FULL } from '../../src/track/core.js';
import { CtOps } from '../../src/ops/ops.js';
import { LINKTYPE_RAW } from '../../src/input/packet/packet.js';
import { udp4 } from './frames.js';
import { flowSrc } from './chaos-shared.js';

import { C_CREATED, C_PENDING, C_PROGRESS, C_REFUSED, C_STALL, C_STOP, C_WRONGFUL, FLOWS, type ChaosWorkerData } from './chaos-shared.js';

const d = workerData as ChaosWorkerData;
const table = ConntrackTable.attach({ buffer: d.buffer });
const c = new Int32Array(d.control);
const state = new Int32Array(d.state);
const post = (m: Record<string, unknown>): void => parentPort!.postMessage(m);
const pause = new Int32Array(new SharedArrayBuffer(4));
const sleep = (ms: number): void => { Atomics.wait(pause, 0, 0, ms); };
let seed = d.seed | 1;
const rand = (): number => {
  seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
  return (seed >>> 0) / 0x100000000;
};

function stallIfAsked(role: number): void {
  const ms = Atomics.exchange(c, C_STALL + role, 0); // the checker's request, taken once
  if (ms > 0) sleep(ms); // alive, but silent, inside whatever section we are in
}

if (d.role === 'packet') {
  const ct = new Conntrack(table);
  const w = d.index;
  const max = table.max;
  post({ type: 'ready', wid: ct.wid });
  const send = (z: number, f: number): ReturnType<Conntrack['frame']> => {
    const fr = udp4({ src: flowSrc(w, z, f), dst: '192.0.2.1', sport: 1000, dport: 53, payload: 'q' });
    const v = ct.frame(LINKTYPE_RAW, fr, 0, fr.length, d.now, z);
    if (v.reason === R_TABLE_FULL) {
      Atomics.add(c, C_REFUSED, 1);
      // The entry count (H_COUNT plus every record's unfolded part; racy while others insert).
      if (table.count < 0.9 * max) Atomics.add(c, C_WRONGFUL, 1);
    }
    return v;
  };
  let zone1 = 0;
  while (Atomics.load(c, C_STOP) === 0) {
    ct.beginBatch();
    for (let k = 0; k < 16; k++) {
      const r = rand();
      if (r < 0.5) {
        // Zone 0: toggle a flow of ours; bookkeeping around the change (pending = uncertain).
        const f = Math.floor(rand() * FLOWS);
        const sw = w * FLOWS + f;
        Atomics.store(c, C_PENDING + w, f + 1);
        const v = send(0, f);
        if (state[sw] === 1) {
          if (v.slot >= 0 && ct.chains.kill(v.slot, KILL_DELETE)) Atomics.store(state, sw, 0);
        } else if (v.slot >= 0) {
          Atomics.store(state, sw, 1);
          Atomics.add(c, C_CREATED, 1);
        }
        Atomics.store(c, C_PENDING + w, 0);
      } else if (r < 0.75) {
        // Zone 1: flows the flusher removes.
        if (send(1, zone1).slot >= 0) Atomics.add(c, C_CREATED, 1);
        zone1 = (zone1 + 1) % FLOWS;
      } else {
        // Zone 2: short-lived, removed at once.
        const v = send(2, Math.floor(rand() * 4096));
        if (v.slot >= 0) {
          Atomics.add(c, C_CREATED, 1);
          ct.chains.kill(v.slot, KILL_DELETE);
        }
      }
      if (k === 8) stallIfAsked(w);
    }
    ct.endBatch();
    Atomics.add(c, C_PROGRESS + w, 1);
    sleep(1); // a steady rate (about 10k connections a second in all) the checker's thread can follow
  }
  ct.close();
  post({ type: 'done' });
} else if (d.role === 'flusher') {
  const ops = new CtOps(table);
  post({ type: 'ready', wid: ops.ct.wid });
  while (Atomics.load(c, C_STOP) === 0) {
    ops.flush({ zone: 1 });
    stallIfAsked(d.index);
    Atomics.add(c, C_PROGRESS + d.index, 1);
    sleep(5 + rand() * 20);
  }
  ops.close();
  post({ type: 'done' });
} else {
  // The slow subscriber: reads a little, rarely.
  const sub = subscribeEvents(table);
  const destroys = new Map<number, number>();
  post({ type: 'ready', wid: -1 });
  while (Atomics.load(c, C_STOP) === 0) {
    for (const ev of sub.poll(64)) if (ev.type === EVENT_DESTROY) destroys.set(ev.id, (destroys.get(ev.id) ?? 0) + 1);
    stallIfAsked(d.index);
    Atomics.add(c, C_PROGRESS + d.index, 1);
    sleep(50 + rand() * 100);
  }
  // Catch up, then report.
  for (let i = 0; i < 1000; i++) {
    const evs = sub.poll();
    if (evs.length === 0) break;
    for (const ev of evs) if (ev.type === EVENT_DESTROY) destroys.set(ev.id, (destroys.get(ev.id) ?? 0) + 1);
  }
  post({ type: 'done', destroys: [...destroys], dropped: sub.dropped, lostDestroys: sub.lostDestroys });
  sub.close();
}
