/**
 * A live packet worker: owns one NFQUEUE queue's netlink socket and runs its own
 * receive → decide → verdict loop on this thread (no hop through the main thread per packet).
 * Each turn receives up to BATCH packets (one blocking recv, then non-blocking ones), decides
 * them inside one table batch, and sends all their verdicts with one send (batched verdicts).
 */
import { writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { enterNetns, NetlinkSocket, EAGAIN, EINTR, MSG_DONTWAIT } from '../src/input/live/netlink.js';
import { bindQueue, MessageWriter, NF_ACCEPT, NF_DROP, NfqPacket, parsePacketMessage, VerdictBatcher,
  IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY, IP_CT_NEW, IP_CT_RELATED, IP_CT_RELATED_REPLY, NLMSG_HDRLEN } from '../src/input/live/nfqueue.js';
import {
  Q_ACCEPTED, Q_BATCHES, Q_BYTES_KIB, Q_CRASH_AFTER, Q_DROPPED, Q_ESTABLISHED, Q_FD, Q_HEARTBEAT, Q_INVALID, Q_KERNEL_CT,
  Q_MISMATCH, Q_NEW, Q_NO_KERNEL_STATE, Q_PACKETS, Q_RECV_ERRORS, Q_RELATED, Q_SEND_ERRORS, Q_SHADOW_CHECKED, Q_STATE,
  Q_STOP, Q_UNTRACKED, Q_VERDICT_MSGS, Q_WID, Q_WORDS, QS_FAILED, QS_RUNNING, QS_STOPPED, SHADOW_MAGIC, SHADOW_MAGIC_MASK,
} from '../src/input/live/control.js';
import type { LiveWorkerData } from '../src/input/live/live.js';
import { ACTION_ACCEPT, Policy } from '../src/ops/policy.js';
import { KILL_DELETE } from '../src/table/chains.js';
import { E_MARK } from '../src/table/layout.js';
import { ConntrackTable } from '../src/table/table.js';
import { Conntrack } from '../src/track/core.js';
import { CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_RELATED, CT_UNTRACKED, CTSTATE_NAMES, DIR_NAMES, type Verdict } from '../src/track/verdict.js';
import { LINKTYPE_RAW, NFPROTO_IPV4, type Packet } from '../src/input/packet/packet.js';

const d = workerData as LiveWorkerData;
const ctl = new Int32Array(d.control);
const q = d.index * Q_WORDS;

/** Packets per receive batch (one send of verdicts each). */
const BATCH = 64;
/** Netlink and attribute headers in front of the payload. */
const SLOT_OVERHEAD = 512;
/** How long a blocking recv waits before the loop looks at its stop flag again. */
const RECV_TIMEOUT_MS = 50;

function formatAddr(w: Uint32Array, family: number): string {
  if (family === NFPROTO_IPV4) return [w[0]! >>> 24, (w[0]! >>> 16) & 255, (w[0]! >>> 8) & 255, w[0]! & 255].join('.');
  const g: string[] = [];
  for (let i = 0; i < 4; i++) g.push((w[i]! >>> 16).toString(16), (w[i]! & 0xffff).toString(16));
  return g.join(':').replace(/\b(?:0:){2,}/, ':');
}

/** One line describing a packet (for mismatch reports; not on the hot path). */
function describe(pkt: Packet, len: number): string {
  if (pkt.family === 0) return `non-IP, ${len} bytes`;
  const proto = ({ 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp' } as Record<number, string>)[pkt.l4proto] ?? `proto ${pkt.l4proto}`;
  let s = `${proto} ${formatAddr(pkt.src, pkt.family)}`;
  if (pkt.l4proto === 6 || pkt.l4proto === 17 || pkt.l4proto === 132) s += `:${pkt.sport}`;
  s += ` > ${formatAddr(pkt.dst, pkt.family)}`;
  if (pkt.l4proto === 6 || pkt.l4proto === 17 || pkt.l4proto === 132) s += `:${pkt.dport}`;
  if (pkt.l4proto === 6) {
    const f = pkt.tcpFlags;
    s += ` [${['F', 'S', 'R', 'P', '.', 'U', 'E', 'C'].filter((_, i) => f & (1 << i)).join('')}] seq ${pkt.seq >>> 0} ack ${pkt.ack >>> 0} win ${pkt.window} len ${pkt.dataLen}`;
  } else if (pkt.l4proto === 1 || pkt.l4proto === 58) {
    s += ` type ${pkt.icmpType} code ${pkt.icmpCode}`;
  }
  return `${s} (${len} bytes)`;
}

function hex(buf: Uint8Array, off: number, len: number): string {
  return Buffer.from(buf.buffer, buf.byteOffset + off, Math.min(len, 64)).toString('hex');
}

async function main(): Promise<void> {
  const table = ConntrackTable.attach(d.table);
  const ct = new Conntrack(table);
  Atomics.store(ctl, q + Q_WID, ct.wid); // read by the supervisor if this thread dies
  const policy = new Policy(d.policy);
  const shadow = d.mode === 'shadow';
  const acceptAll = d.mode === 'accept';
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
  Atomics.store(ctl, q + Q_KERNEL_CT, kernelCt ? 1 : 0);
  Atomics.store(ctl, q + Q_STATE, QS_RUNNING); // after the bind: traffic reaches us from here on
  parentPort!.postMessage({ type: 'ready', wid: ct.wid, fd: sock.fd, kernelCt });

  const vb = new VerdictBatcher(d.queue);
  const p = new NfqPacket();
  const pkt = ct.pkt;
  const i32 = table.i32;
  const zone = d.zone;
  // Local counters, published once per batch.
  let packets = 0, accepted = 0, dropped = 0, cNew = 0, cEst = 0, cRel = 0, cInv = 0, cUntr = 0;
  let checked = 0, mismatches = 0, noState = 0, recvErr = 0, sendErr = 0, batches = 0, bytes = 0;
  let crashAfter = Atomics.load(ctl, q + Q_CRASH_AFTER);

  const decideOne = (off: number, end: number, now: number): number => {
    const mlen = parsePacketMessage(rx, dv, off, end, p);
    if (mlen === 0 || p.id < 0) return mlen;
    if (crashAfter === 0) process.exit(70); // test hook: die holding the packets of this batch
    if (crashAfter > 0) crashAfter--;
    packets++;
    bytes += p.capLen;
    if (acceptAll) {
      // The queue's own ceiling (bench): no tracking, accept everything.
      accepted++;
      vb.add(p.id, NF_ACCEPT, -1);
      return mlen;
    }
    const v: Verdict = ct.frame(LINKTYPE_RAW, rx, p.payloadOff, p.payloadLen, now, zone);
    switch (v.state) {
      case CT_NEW: cNew++; break;
      case CT_ESTABLISHED: cEst++; break;
      case CT_RELATED: cRel++; break;
      case CT_INVALID: cInv++; break;
      default: cUntr++; break;
    }
    if (shadow) {
      // The kernel keeps deciding: accept, and compare its state with ours.
      let kState = -1, kDir = -1;
      if (p.ctInfo >= 0) {
        const ci = p.ctInfo;
        kState = ci === IP_CT_NEW ? CT_NEW : ci === IP_CT_RELATED || ci === IP_CT_RELATED_REPLY ? CT_RELATED : CT_ESTABLISHED;
        kDir = ci >= IP_CT_ESTABLISHED_REPLY ? 1 : 0;
      } else if (kernelCt && p.ctInfo < 0) {
        kState = CT_INVALID; // no ct attached: invalid or untracked (not told apart)
      } else if (p.hasMark && ((p.mark & SHADOW_MAGIC_MASK) >>> 0) === SHADOW_MAGIC) {
        kState = ((p.mark >>> 4) & 15) - 1;
        kDir = kState === CT_INVALID || kState === CT_UNTRACKED ? -1 : p.mark & 1;
      }
      if (kState < 0) {
        noState++;
      } else {
        checked++;
        const ours = v.state === CT_UNTRACKED && kernelCt ? CT_INVALID : v.state;
        if (ours !== kState || (kDir >= 0 && v.dir !== kDir)) {
          mismatches++;
          const line = `conntrack-sab nfqueue: mismatch queue ${d.queue} id ${p.id}: kernel ${CTSTATE_NAMES[kState]}` +
            `${kDir >= 0 ? `/${DIR_NAMES[kDir]}` : ''}, ours ${v.ctstate}${v.dir >= 0 ? `/${v.direction}` : ''}` +
            `${v.reason ? ` (${v.reason})` : ''}: ${describe(pkt, p.capLen)} ${hex(rx, p.payloadOff, p.payloadLen)}\n`;
          try { writeSync(2, line); } catch { /* stderr gone: still counted */ }
        }
      }
      accepted++;
      vb.add(p.id, NF_ACCEPT, -1);
      return mlen;
    }
    // Enforce (or plain): our decision is the verdict.
    const e = v.slot >= 0 ? ct.chains.entry(v.slot) : -1;
    const connMark = e >= 0 ? Atomics.load(i32, e + E_MARK) : 0; // written by the first packet's worker (below)
    const act = policy.decide(v, pkt, zone, connMark);
    if (act === ACTION_ACCEPT) {
      accepted++;
      if (v.state === CT_NEW && policy.connmark && policy.mark !== -1 && e >= 0) {
        Atomics.store(i32, e + E_MARK, policy.mark | 0); // the connmark: later packets read it (any worker)
      }
      vb.add(p.id, NF_ACCEPT, policy.mark);
    } else {
      dropped++;
      // A new connection refused by the policy never becomes one (the kernel never confirms it).
      if (v.state === CT_NEW && v.slot >= 0) ct.chains.kill(v.slot, KILL_DELETE);
      vb.add(p.id, NF_DROP, -1);
    }
    return mlen;
  };

  const publish = (): void => {
    // Single writer (this thread); the main thread reads with Atomics.load.
    Atomics.store(ctl, q + Q_PACKETS, packets);
    Atomics.store(ctl, q + Q_ACCEPTED, accepted);
    Atomics.store(ctl, q + Q_DROPPED, dropped);
    Atomics.store(ctl, q + Q_NEW, cNew);
    Atomics.store(ctl, q + Q_ESTABLISHED, cEst);
    Atomics.store(ctl, q + Q_RELATED, cRel);
    Atomics.store(ctl, q + Q_INVALID, cInv);
    Atomics.store(ctl, q + Q_UNTRACKED, cUntr);
    Atomics.store(ctl, q + Q_SHADOW_CHECKED, checked);
    Atomics.store(ctl, q + Q_MISMATCH, mismatches);
    Atomics.store(ctl, q + Q_NO_KERNEL_STATE, noState);
    Atomics.store(ctl, q + Q_RECV_ERRORS, recvErr);
    Atomics.store(ctl, q + Q_SEND_ERRORS, sendErr);
    Atomics.store(ctl, q + Q_BATCHES, batches);
    Atomics.store(ctl, q + Q_VERDICT_MSGS, vb.batches);
    Atomics.store(ctl, q + Q_BYTES_KIB, Math.floor(bytes / 1024));
  };

  /** One turn: receive up to BATCH packets (the first may block), decide, send verdicts. */
  const turn = (block: boolean): number => {
    // Test hook, armed by the main thread (Atomics.store) at any time.
    if (crashAfter < 0) crashAfter = Atomics.load(ctl, q + Q_CRASH_AFTER);
    let k = 0;
    while (k < BATCH) {
      const n = sock.recv(views[k]!, block && k === 0 ? 0 : MSG_DONTWAIT);
      if (n < 0) {
        if (n !== -EAGAIN && n !== -EINTR) recvErr++;
        break;
      }
      lens[k++] = n;
    }
    const now = Date.now();
    Atomics.store(ctl, q + Q_HEARTBEAT, now & 0x7fffffff); // liveness, read by the supervisor
    if (k === 0) return 0;
    table.clock = now; // published for the GC worker
    batches++;
    ct.beginBatch();
    try {
      for (let j = 0; j < k; j++) {
        let off = j * slot;
        const end = off + lens[j]!;
        while (off + NLMSG_HDRLEN <= end) {
          const m = decideOne(off, end, now);
          if (m === 0) break;
          off += (m + 3) & ~3;
        }
      }
    } finally {
      ct.endBatch();
    }
    if (vb.flush(sock) < 0) sendErr++;
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
  Atomics.store(ctl, q + Q_STATE, QS_STOPPED);
}

main().catch((e: unknown) => {
  Atomics.store(ctl, q + Q_STATE, QS_FAILED);
  parentPort!.postMessage({ type: 'error', message: e instanceof Error ? e.message : String(e) });
});
