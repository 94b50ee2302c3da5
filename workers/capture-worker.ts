/**
 * A passive live worker (monitoring, no verdicts): reads the Ethernet frames of one interface
 * (AF_PACKET, e.g. a mirror port) and tracks them on the shared table. Same control record as
 * the NFQUEUE workers (control.ts); up to BATCH frames per table batch.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { enterNetns, NetlinkSocket, EAGAIN, EINTR, MSG_DONTWAIT } from '../src/input/live/netlink.js';
import {
  Q_BATCHES, Q_BYTES_KIB, Q_ESTABLISHED, Q_FD, Q_HEARTBEAT, Q_INVALID, Q_NEW, Q_PACKETS, Q_RECV_ERRORS, Q_RELATED,
  Q_STATE, Q_STOP, Q_UNTRACKED, Q_WID, Q_WORDS, QS_FAILED, QS_RUNNING, QS_STOPPED,
} from '../src/input/live/control.js';
import type { LiveWorkerData } from '../src/input/live/live.js';
import { ConntrackTable } from '../src/table/table.js';
import { Conntrack } from '../src/track/core.js';
import { CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_RELATED } from '../src/track/verdict.js';
import { LINKTYPE_ETHERNET } from '../src/input/packet/packet.js';

const d = workerData as LiveWorkerData;
const ctl = new Int32Array(d.control);
const q = d.index * Q_WORDS;
const BATCH = 64;
const SNAP = 65536;
const RECV_TIMEOUT_MS = 50;

async function main(): Promise<void> {
  const table = ConntrackTable.attach(d.table);
  const ct = new Conntrack(table);
  Atomics.store(ctl, q + Q_WID, ct.wid); // read by the supervisor if this thread dies
  if (d.netns) await enterNetns(d.netns); // this thread only
  const sock = await NetlinkSocket.openPacket(d.iface!);
  Atomics.store(ctl, q + Q_FD, sock.fd); // closed by the supervisor if this thread dies
  sock.setReceiveBuffer(d.receiveBuffer);
  sock.setReceiveTimeout(RECV_TIMEOUT_MS);
  const rx = new Uint8Array(SNAP * BATCH);
  const views: Uint8Array[] = [];
  for (let k = 0; k < BATCH; k++) views.push(rx.subarray(k * SNAP, (k + 1) * SNAP));
  const lens = new Int32Array(BATCH);
  Atomics.store(ctl, q + Q_STATE, QS_RUNNING); // read by the supervisor
  parentPort!.postMessage({ type: 'ready', wid: ct.wid, fd: sock.fd, kernelCt: false });
  let packets = 0, cNew = 0, cEst = 0, cRel = 0, cInv = 0, cUntr = 0, recvErr = 0, batches = 0, bytes = 0;
  const zone = d.zone;
  // Atomics.load: the stop flag is written by the main thread.
  while (Atomics.load(ctl, q + Q_STOP) === 0) {
    let k = 0;
    while (k < BATCH) {
      const n = sock.recv(views[k]!, k === 0 ? 0 : MSG_DONTWAIT);
      if (n < 0) {
        if (n !== -EAGAIN && n !== -EINTR) recvErr++;
        break;
      }
      lens[k++] = n;
    }
    const now = Date.now();
    Atomics.store(ctl, q + Q_HEARTBEAT, now & 0x7fffffff); // liveness, read by the supervisor
    if (k === 0) continue;
    table.clock = now; // published for the GC worker
    batches++;
    ct.beginBatch();
    for (let j = 0; j < k; j++) {
      packets++;
      bytes += lens[j]!;
      const v = ct.frame(LINKTYPE_ETHERNET, rx, j * SNAP, lens[j]!, now, zone);
      switch (v.state) {
        case CT_NEW: cNew++; break;
        case CT_ESTABLISHED: cEst++; break;
        case CT_RELATED: cRel++; break;
        case CT_INVALID: cInv++; break;
        default: cUntr++; break;
      }
    }
    ct.endBatch();
    // Single writer (this thread); the main thread reads with Atomics.load.
    Atomics.store(ctl, q + Q_PACKETS, packets);
    Atomics.store(ctl, q + Q_NEW, cNew);
    Atomics.store(ctl, q + Q_ESTABLISHED, cEst);
    Atomics.store(ctl, q + Q_RELATED, cRel);
    Atomics.store(ctl, q + Q_INVALID, cInv);
    Atomics.store(ctl, q + Q_UNTRACKED, cUntr);
    Atomics.store(ctl, q + Q_RECV_ERRORS, recvErr);
    Atomics.store(ctl, q + Q_BATCHES, batches);
    Atomics.store(ctl, q + Q_BYTES_KIB, Math.floor(bytes / 1024));
  }
  sock.close();
  ct.close();
  Atomics.store(ctl, q + Q_STATE, QS_STOPPED); // a clean exit: the supervisor recovers nothing
}

main().catch((e: unknown) => {
  Atomics.store(ctl, q + Q_STATE, QS_FAILED); // read by the supervisor when this thread exits
  parentPort!.postMessage({ type: 'error', message: e instanceof Error ? e.message : String(e) });
});
