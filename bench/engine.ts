/**
 * The packet loop of the benches, shared by the bench worker threads (workers/bench-worker.ts)
 * and the main thread (`--inline`, used for profiling so the packet code shows in the profile).
 *
 * A job decides frames [from, to) of a FrameSet `repeat` times, in read-side sections of `batch`
 * packets (beginBatch ... endBatch), and reports its own elapsed time; with `latency` it also
 * records each batch's wall time.
 */
import { Conntrack } from '../src/track/core.js';
import { hashTuple } from '../src/table/hash.js';
import { E_MARK, E_TIMEOUT } from '../src/table/layout.js';
import { lock, unlock } from '../src/table/locks.js';
import { parseFrame } from '../src/input/packet/parse.js';
import { Packet } from '../src/input/packet/packet.js';
import { PROTO_ACCEPT, ProtoResult, type TrackerContext } from '../src/track/proto/l4proto.js';
import { tcpError, tcpPacket } from '../src/track/proto/tcp.js';
import { ConntrackTable } from '../src/table/table.js';
import { protoWord, tupleFromPacket } from '../src/track/tuple.js';
import { IX_LEN, IX_NOW, IX_OFF, IX_WORDS, IX_ZONE, LT_RAW, type FrameSetData } from './frames.js';
import { OursTracker, STATE_SLOTS, SharedMapTracker, type SharedMapHandle, type Tracker } from './trackers.js';

interface JobBase {
  frames: FrameSetData;
  from: number;
  to: number;
  repeat: number;
  batch: number;
  latency?: boolean;
}

/** Decide frames with a tracker shared between threads: ours, or the sharedmap baseline. */
export interface TrackJob extends JobBase {
  kind: 'track';
  tracker: 'ours' | 'sharedmap';
  table?: SharedArrayBuffer;
  sm?: SharedMapHandle;
  /** Lock owner id for the sharedmap baseline's entry locks. */
  owner?: number;
}

/**
 * Experiment (ii): TCP updates of existing connections (parse, tuple, hash, find, lock,
 * tcpPacket, unlock, refresh) with the state lock taken on the bucket's lock stripe (what
 * core.ts does) or on a lock word inside the entry (E_MARK stands in for a dedicated word).
 */
export interface TcpLockJob extends JobBase {
  kind: 'tcplock';
  variant: 'bucket' | 'entry';
  table: SharedArrayBuffer;
}

/** Pure compute (hashTuple over private data): the machine's own scaling ceiling. */
export interface SpinJob {
  kind: 'spin';
  ops: number;
}

export type Job = TrackJob | TcpLockJob | SpinJob;

export interface JobResult {
  packets: number;
  ms: number;
  /** Packets per CT_* state, then dropped (trackers.ts ST_DROPPED); tcplock: [hits, misses, invalid]. */
  states: number[];
  /** Per-batch wall time in µs, when asked. */
  lat: Float64Array | null;
}

export interface Prepared {
  run(): JobResult;
  close(): void;
}

function loop(tr: Tracker, j: JobBase): JobResult {
  const bytes = new Uint8Array(j.frames.data);
  const ix = new Int32Array(j.frames.index);
  const states = new Array<number>(STATE_SLOTS).fill(0);
  const batch = Math.max(1, j.batch);
  const per = j.to - j.from;
  const nb = Math.ceil(per / batch) * j.repeat;
  const lat = j.latency ? new Float64Array(nb) : null;
  let b = 0;
  const t0 = performance.now();
  for (let r = 0; r < j.repeat; r++) {
    for (let i = j.from; i < j.to;) {
      const end = Math.min(j.to, i + batch);
      const tb = lat ? performance.now() : 0;
      tr.begin();
      for (; i < end; i++) {
        const x = i * IX_WORDS;
        states[tr.frame(LT_RAW, bytes, ix[x + IX_OFF]!, ix[x + IX_LEN]!, ix[x + IX_NOW]!, ix[x + IX_ZONE]!)]!++;
      }
      tr.end();
      if (lat) lat[b++] = (performance.now() - tb) * 1000;
    }
  }
  const ms = performance.now() - t0;
  return { packets: per * j.repeat, ms, states, lat };
}

function tcpLockLoop(ct: Conntrack, j: TcpLockJob): JobResult {
  const c = ct.chains;
  const table = ct.table;
  const i32 = table.i32;
  const ctx: TrackerContext = { i32, u32: table.u32, sys: table.sec.sysctl };
  const pkt = new Packet();
  const res = new ProtoResult();
  const t = new Int32Array(9);
  const bytes = new Uint8Array(j.frames.data);
  const ix = new Int32Array(j.frames.index);
  const entryLock = j.variant === 'entry';
  let hits = 0;
  let misses = 0;
  let invalid = 0;
  const batch = Math.max(1, j.batch);
  const t0 = performance.now();
  for (let r = 0; r < j.repeat; r++) {
    for (let i = j.from; i < j.to;) {
      const end = Math.min(j.to, i + batch);
      c.qsbr.online();
      for (; i < end; i++) {
        const x = i * IX_WORDS;
        const now = ix[x + IX_NOW]!;
        parseFrame(LT_RAW, bytes, ix[x + IX_OFF]!, ix[x + IX_LEN]!, pkt);
        pkt.now = now;
        if (pkt.reason !== null || tcpError(ctx, pkt) !== null) { invalid++; continue; }
        tupleFromPacket(pkt, t, 0);
        const proto = protoWord(pkt.family, pkt.l4proto);
        const zone = ix[x + IX_ZONE]!;
        const h = c.hash(t, 0, proto, zone, 0);
        const ref = c.find(t, 0, proto, zone, 0, h, now);
        if (ref < 0) { misses++; continue; }
        const e = c.entry(ref >>> 1);
        const lk = entryLock ? e + E_MARK : c.stateLock(e);
        lock(i32, lk, c.wid);
        res.reset();
        const ret = tcpPacket(ctx, e, ref & 1, pkt, res);
        unlock(i32, lk);
        if (ret !== PROTO_ACCEPT) invalid++;
        else hits++;
        if (res.timeout >= 0) Atomics.store(i32, e + E_TIMEOUT, (now + res.timeout * 1000) | 0);
        if (!c.noref) c.put(ref >>> 1);
      }
      c.qsbr.offline();
      c.qsbr.quiesce();
    }
  }
  const ms = performance.now() - t0;
  return { packets: (j.to - j.from) * j.repeat, ms, states: [hits, misses, invalid], lat: null };
}

/** Attach what the job needs (untimed); run() then does the timed part. */
export function prepare(job: Job): Prepared {
  if (job.kind === 'spin') {
    return {
      run: () => {
        const t = new Int32Array(9).fill(7);
        let h = 0;
        const t0 = performance.now();
        for (let i = 0; i < job.ops; i++) { t[8] = i; h ^= hashTuple(t, 0, 6, 0, 0, 1, 2); }
        const ms = performance.now() - t0;
        return { packets: job.ops, ms, states: [h], lat: null };
      },
      close: () => {},
    };
  }
  if (job.kind === 'tcplock') {
    const ct = new Conntrack(ConntrackTable.attach({ buffer: job.table }));
    return { run: () => tcpLockLoop(ct, job), close: () => ct.close() };
  }
  let tr: Tracker;
  if (job.tracker === 'ours') {
    if (!job.table) throw new Error('track job without a table');
    tr = new OursTracker(ConntrackTable.attach({ buffer: job.table }));
  } else {
    if (!job.sm) throw new Error('sharedmap job without a map');
    tr = new SharedMapTracker(job.sm, job.owner ?? 0);
  }
  return { run: () => loop(tr, job), close: () => tr.close() };
}

/** Run a job on an existing tracker (main-thread baselines and prefill). */
export function runWith(tr: Tracker, j: JobBase): JobResult {
  return loop(tr, j);
}
