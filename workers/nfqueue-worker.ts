/**
 * A live packet worker: owns one NFQUEUE queue's netlink socket and runs its own
 * receive → decide → verdict loop on this thread (no hop through the main thread per packet).
 * Each turn receives up to BATCH packets (one blocking recv, then non-blocking ones), decides
 * them inside one table batch, and sends all their verdicts with one send (batched verdicts).
 */
import { writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { enterNetns, NetlinkSocket, EAGAIN, EINTR, MSG_DONTWAIT } from '../src/input/live/netlink.js';
import { bindQueue, MessageWriter, VerdictBatcher, NLMSG_HDRLEN } from '../src/input/live/nfqueue.js';
import {
  Q_ACCEPTED, Q_BATCHES, Q_BYTES_KIB, Q_CRASH_AFTER, Q_DROPPED, Q_ESTABLISHED, Q_FD, Q_HEARTBEAT, Q_INVALID, Q_KERNEL_CT,
  Q_MISMATCH, Q_NEW, Q_NO_KERNEL_STATE, Q_PACKETS, Q_RECV_ERRORS, Q_RELATED, Q_SEND_ERRORS, Q_SHADOW_CHECKED, Q_STATE,
  Q_STOP, Q_UNTRACKED, Q_VERDICT_MSGS, Q_DECIDE_US, Q_TURN_US, Q_WID, Q_WORDS, QS_FAILED, QS_RUNNING, QS_STOPPED,
} from '../src/input/live/control.js';
import { LiveDecider } from '../src/input/live/decider.js';
import type { LiveWorkerData } from '../src/input/live/live.js';
import { ConntrackTable } from '../src/table/table.js';
import { Conntrack } from '../src/track/core.js';

const d = workerData as LiveWorkerData;
const ctl = new Int32Array(d.control);
const q = d.index * Q_WORDS;

/** Packets per receive batch (one send of verdicts each). */
const BATCH = 64;
/** Netlink and attribute headers in front of the payload. */
const SLOT_OVERHEAD = 512;
/** How long a blocking recv waits before the loop looks at its stop flag again. */
const RECV_TIMEOUT_MS = 50;

async function main(): Promise<void> {
  const table = ConntrackTable.attach(d.table);
  const ct = new Conntrack(table);
  Atomics.store(ctl, q + Q_WID, ct.wid); // read by the supervisor if this thread dies
  const shadow = d.mode === 'shadow';
  if (d.netns) await enterNetns(d.netns); // this thread only
  const sock = await NetlinkSocket.open();
  Atomics.store(ctl, q + Q_FD, sock.fd); // closed by the supervisor if this thread dies
  sock.setReceiveBuffer(d.receiveBuffer);
  sock.setReceiveTimeout(RECV_TIMEOUT_MS);
  const slot = Math.min(d.copyRange, 0xffff) + SLOT_OVERHEAD;
  const rx = new Uint8Array(slot * BATCH);
  const dv = new DataView(rx.buffer);
  const views: Uint8Array[] = [];
  for (let k = 0; k < BATCH; k++) views.push(rx.subarray(k * slot, (k + 1) * slot));
  const lens = new Int32Array(BATCH);
  const cfg = new MessageWriter(256);
  // Shadow: the kernel's own conntrack info where it has the netlink glue; else the mark (nft map).
  const kernelCt = bindQueue(sock, cfg, views[0]!, d.queue,
    { copyRange: d.copyRange, maxLen: d.maxLen, failOpen: d.failOpen, conntrack: shadow });
  Atomics.store(ctl, q + Q_KERNEL_CT, kernelCt ? 1 : 0); // read by the main thread after 'ready'
  Atomics.store(ctl, q + Q_STATE, QS_RUNNING); // after the bind: traffic reaches us from here on
  parentPort!.postMessage({ type: 'ready', wid: ct.wid, fd: sock.fd, kernelCt });

  const vb = new VerdictBatcher(d.queue);
  const dec = new LiveDecider(ct, {
    mode: d.mode, policy: d.policy, zone: d.zone, queue: d.queue, kernelCt,
    report: (line: string) => {
      try { writeSync(2, `conntrack-sab nfqueue: ${line}\n`); } catch { /* stderr gone: still counted */ }
    },
  });
  dec.onCrash = () => process.exit(70); // test hook: die holding the packets of this batch
  let recvErr = 0, sendErr = 0, batches = 0;
  let decideMs = 0, turnMs = 0;

  const publish = (): void => {
    // Single writer (this thread); the main thread reads with Atomics.load.
    Atomics.store(ctl, q + Q_PACKETS, dec.packets);
    Atomics.store(ctl, q + Q_ACCEPTED, dec.accepted);
    Atomics.store(ctl, q + Q_DROPPED, dec.dropped);
    Atomics.store(ctl, q + Q_NEW, dec.cNew);
    Atomics.store(ctl, q + Q_ESTABLISHED, dec.cEstablished);
    Atomics.store(ctl, q + Q_RELATED, dec.cRelated);
    Atomics.store(ctl, q + Q_INVALID, dec.cInvalid);
    Atomics.store(ctl, q + Q_UNTRACKED, dec.cUntracked);
    Atomics.store(ctl, q + Q_SHADOW_CHECKED, dec.checked);
    Atomics.store(ctl, q + Q_MISMATCH, dec.mismatches);
    Atomics.store(ctl, q + Q_NO_KERNEL_STATE, dec.noKernelState);
    Atomics.store(ctl, q + Q_RECV_ERRORS, recvErr);
    Atomics.store(ctl, q + Q_SEND_ERRORS, sendErr);
    Atomics.store(ctl, q + Q_BATCHES, batches);
    Atomics.store(ctl, q + Q_VERDICT_MSGS, vb.batches);
    Atomics.store(ctl, q + Q_BYTES_KIB, Math.floor(dec.bytes / 1024));
    Atomics.store(ctl, q + Q_DECIDE_US, Math.floor(decideMs * 1000) | 0);
    Atomics.store(ctl, q + Q_TURN_US, Math.floor(turnMs * 1000) | 0);
  };

  /** One turn: receive up to BATCH packets (the first may block), decide, send verdicts. */
  const turn = (block: boolean): number => {
    // Test hook, armed by the main thread (Atomics.store) at any time.
    const armed = Atomics.load(ctl, q + Q_CRASH_AFTER);
    if (armed < 0) dec.crashAfter = -1;
    else if (dec.crashAfter < 0) dec.crashAfter = armed;
    let k = 0;
    let t0 = 0;
    while (k < BATCH) {
      const n = sock.recv(views[k]!, block && k === 0 ? 0 : MSG_DONTWAIT);
      if (n < 0) {
        if (n !== -EAGAIN && n !== -EINTR) recvErr++;
        break;
      }
      if (k === 0) t0 = performance.now();
      lens[k++] = n;
    }
    const now = Date.now();
    Atomics.store(ctl, q + Q_HEARTBEAT, now & 0x7fffffff); // liveness, read by the supervisor
    if (k === 0) return 0;
    table.clock = now; // published for the GC worker
    batches++;
    const t1 = performance.now();
    ct.beginBatch();
    try {
      for (let j = 0; j < k; j++) {
        let off = j * slot;
        const end = off + lens[j]!;
        while (off + NLMSG_HDRLEN <= end) {
          const m = dec.message(rx, dv, off, end, now, vb);
          if (m === 0) break;
          off += (m + 3) & ~3;
        }
      }
    } finally {
      ct.endBatch();
    }
    const t2 = performance.now();
    if (vb.flush(sock) < 0) sendErr++;
    decideMs += t2 - t1;
    turnMs += performance.now() - t0;
    publish();
    return k;
  };

  // Atomics.load: the stop flag is written by the main thread.
  while (Atomics.load(ctl, q + Q_STOP) === 0) turn(true);
  // Stop: verdicts for whatever is still queued to us, then unbind by closing the socket.
  while (turn(false) > 0);
  publish();
  sock.close();
  ct.close();
  Atomics.store(ctl, q + Q_STATE, QS_STOPPED); // a clean exit: the supervisor recovers nothing
}

main().catch((e: unknown) => {
  Atomics.store(ctl, q + Q_STATE, QS_FAILED); // read by the supervisor when this thread exits
  parentPort!.postMessage({ type: 'error', message: e instanceof Error ? e.message : String(e) });
});
