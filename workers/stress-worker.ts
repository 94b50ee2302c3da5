/**
 * A stress worker: attaches the shared table and runs a mix of inserts, lookups, replies and
 * deletes (real IPv4 UDP and TCP frames through Conntrack.frame, built in one reused buffer)
 * while a virtual clock runs fast enough for entries to expire. Used by `conntrack-sab stress`
 * and the worker-death tests (mode 'forever': runs until terminated).
 *
 * Messages to the parent: { type: 'ready', wid } once registered, then { type: 'done', ... }.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { KILL_DELETE } from '../src/table/chains.js';
import { Conntrack } from '../src/track/core.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { parseFrame } from '../src/input/packet/parse.js';
import { TUPLE_WORDS } from '../src/table/layout.js';
import { protoWord, tupleFromPacket } from '../src/track/tuple.js';
import { CT_INVALID } from '../src/track/verdict.js';

export interface StressWorkerData {
  readonly buffer: SharedArrayBuffer;
  /** 'timed': until `seconds` pass; 'ops': `ops` operations; 'forever': until terminated. */
  readonly mode: 'timed' | 'ops' | 'forever';
  readonly seconds?: number;
  readonly ops?: number;
  readonly seed: number;
  /** Flow keys are drawn from 0 .. flows - 1 (more than nf_conntrack_max keeps the table full). */
  readonly flows: number;
  /** Wall ms (Date.now()) the virtual clock started at, shared by all workers. */
  readonly t0: number;
  /** Virtual ms per wall ms. */
  readonly speed: number;
  /** This worker publishes the table clock (one worker does). */
  readonly publishClock: boolean;
  /** Operations per batch (read-side section). */
  readonly batch?: number;
  /** Int32Array words: [index] = operations done so far (progress for the parent). */
  readonly progress?: SharedArrayBuffer;
  readonly index?: number;
  /** Int32Array word 0: set to 1 to make the worker finish after its current batch. */
  readonly stop?: SharedArrayBuffer;
}

export interface StressWorkerDone {
  type: 'done';
  wid: number;
  operations: number;
  inserts: number;
  lookups: number;
  deletes: number;
  invalid: number;
}

const data = workerData as StressWorkerData;
const ct = new Conntrack({ buffer: data.buffer });
parentPort?.postMessage({ type: 'ready', wid: ct.wid });

// ---------------------------------------------------------------------------------------------
// Frames: IPv4 (20 bytes) + UDP (8) + 4 payload bytes, or IPv4 + TCP (20), in one buffer.
const buf = new Uint8Array(64);
const tuple = new Int32Array(TUPLE_WORDS);

function put16(o: number, v: number): void {
  buf[o] = (v >>> 8) & 0xff;
  buf[o + 1] = v & 0xff;
}
function put32(o: number, v: number): void {
  put16(o, v >>> 16);
  put16(o + 2, v & 0xffff);
}
function sum(o: number, n: number, acc: number): number {
  for (let k = 0; k < n; k += 2) acc += (buf[o + k]! << 8) | (k + 1 < n ? buf[o + k + 1]! : 0);
  return acc;
}
function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** Build one frame into `buf`; returns its length. flags: TCP flags (0 for UDP). */
function frame(tcp: boolean, src: number, dst: number, sport: number, dport: number,
  flags: number, seq: number, ack: number): number {
  const l4 = tcp ? 20 : 12;
  const len = 20 + l4;
  buf.fill(0, 0, len);
  buf[0] = 0x45;
  put16(2, len);
  buf[8] = 64;
  buf[9] = tcp ? 6 : 17;
  put32(12, src);
  put32(16, dst);
  put16(10, ~fold(sum(0, 20, 0)) & 0xffff);
  put16(20, sport);
  put16(22, dport);
  if (tcp) {
    put32(24, seq);
    put32(28, ack);
    buf[32] = 5 << 4;
    buf[33] = flags;
    put16(34, 65535);
  } else {
    put16(24, 12);
    put32(28, seq);
  }
  // Pseudo-header, then the segment.
  let s = sum(12, 8, 0) + (tcp ? 6 : 17) + l4;
  s = sum(20, l4, s);
  let c = ~fold(s) & 0xffff;
  if (!tcp && c === 0) c = 0xffff;
  put16(tcp ? 36 : 26, c);
  return len;
}

// ---------------------------------------------------------------------------------------------
let rng = (data.seed | 0) || 1;
function rand(): number {
  rng ^= rng << 13;
  rng ^= rng >>> 17;
  rng ^= rng << 5;
  return rng >>> 0;
}

const SYN = 0x02;
const ACK = 0x10;
const flows = Math.max(1, data.flows | 0);
const hot = Math.max(1, flows >>> 3);
const batch = data.batch ?? 64;
const progress = data.progress ? new Int32Array(data.progress) : null;
const index = data.index ?? 0;
const stop = data.stop ? new Int32Array(data.stop) : null;
const table = ct.table;
let inserts = 0;
let lookups = 0;
let deletes = 0;
let invalid = 0;

/** One operation on flow `f`. */
function op(now: number): void {
  const r = rand();
  // Three in four operations go to a hot eighth of the flows (lookups), the rest anywhere
  // (inserts that fill the table, early drops, expiry of the flows nobody comes back to).
  const f = (r >>> 8) % ((r & 0x30) !== 0 ? hot : flows);
  const tcp = (f & 3) === 0;
  const client = (0x0a000000 | (f & 0xffffff)) >>> 0;
  const server = (0xc0a80000 | (f & 0xff)) >>> 0;
  const cport = 1024 + (f % 60000);
  const sport = tcp ? 80 : 53;
  const kind = r & 15;
  let len: number;
  if (kind < 11) {
    // Original direction: creates the connection or finds it.
    len = frame(tcp, client, server, cport, sport, tcp ? (kind < 6 ? SYN : ACK) : 0, f * 1000, 0);
  } else if (kind < 14) {
    // Reply direction.
    len = frame(tcp, server, client, sport, cport, tcp ? SYN | ACK : 0, f * 7, f * 1000 + 1);
  } else {
    // Delete: find it, then remove it (conntrack -D).
    // Look it up holding a reference ('refcount'), so the slot cannot be recycled under us.
    len = frame(tcp, client, server, cport, sport, 0, 0, 0);
    const pkt = ct.pkt;
    parseFrame(LINKTYPE_RAW, buf, 0, len, pkt);
    tupleFromPacket(pkt, tuple, 0);
    const c = ct.chains;
    const proto = protoWord(pkt.family, pkt.l4proto);
    const ref = c.find(tuple, 0, proto, 0, 0, c.hash(tuple, 0, proto, 0, 0), now);
    if (ref >= 0) {
      if (c.kill(ref >>> 1, KILL_DELETE)) deletes++;
      if (!c.noref) c.put(ref >>> 1);
    }
    return;
  }
  const v = ct.frame(LINKTYPE_RAW, buf, 0, len, now);
  if (v.state === CT_INVALID) invalid++;
  else if (v.state === 0 && v.slot >= 0) inserts++;
  else lookups++;
}

const deadline = data.mode === 'timed' ? Date.now() + (data.seconds ?? 1) * 1000 : Infinity;
const limit = data.mode === 'ops' ? (data.ops ?? 0) : Infinity;
let done = 0;
while (done < limit) {
  const now = ((Date.now() - data.t0) * data.speed) | 0;
  if (data.publishClock) table.clock = now;
  ct.beginBatch();
  const n = Math.min(batch, limit - done);
  for (let k = 0; k < n; k++) op(now);
  ct.endBatch();
  done += n;
  if (progress) Atomics.store(progress, index, done); // progress for the parent, any order
  if (data.mode === 'timed' && Date.now() >= deadline) break;
  if (stop && Atomics.load(stop, 0) !== 0) break; // the parent's stop request
}
ct.close();
const msg: StressWorkerDone = { type: 'done', wid: ct.wid, operations: done, inserts, lookups, deletes, invalid };
parentPort?.postMessage(msg);
