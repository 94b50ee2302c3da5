/**
 * Concurrency on one shared table with real worker threads, failing by assertion, never by a
 * hang: every wait is bounded and says what it waited for; every test ends with the table's
 * invariants (chains well-formed and terminating, counts, locks released).
 *  - a clash forced deterministically: every lock stripe held while two workers allocate the
 *    same new tuple, so both must confirm after the release and exactly one clashes;
 *  - one TCP connection driven from two threads with free dispatch, each direction on its own
 *    worker, in an interleaving the scheduler picks: every packet valid, the window state and
 *    the counters as a single thread would leave them.
 */
import test from 'ava';
import { checkInvariants, formatInvariants } from '../src/table/invariants.js';
import { connAcct } from '../src/table/ext.js';
import { lock, unlock } from '../src/table/locks.js';
import { E_STATUS, E_TIMEOUT, IPS_ASSURED, W_INTENT_SLOT, WORKER_WORDS, TD_END, TD_MAXEND, TD_MAXWIN, E_PRIV, TCP_DIR, TCP_DIR_WORDS, LOCK_STRIDE } from '../src/table/layout.js';
import { ConntrackTable } from '../src/table/table.js';
import { ConntrackPool } from '../src/pool/pool.js';
import { BatchVerdict } from '../src/pool/batch.js';
import { Conntrack } from '../src/track/core.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { TCP_CONNTRACK_ESTABLISHED, tcpState } from '../src/track/proto/tcp.js';
import { tcp4, udp4 } from './helpers/frames.js';

/** Resolve with `p`, or fail with a message naming what did not happen within `ms`. */
export async function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_res, rej) => {
    timer = setTimeout(() => rej(new Error(`${what}: not done within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `cond` every few ms; false if it did not hold within `ms`. */
async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 2));
  }
  return true;
}

function invariantsHold(t: import('ava').ExecutionContext, table: ConntrackTable): void {
  const r = checkInvariants(table);
  t.true(r.ok, formatInvariants(r));
}

test('a forced clash: two workers confirm the same new tuple, exactly one clash_resolve', async (t) => {
  const table = ConntrackTable.create({ max: 1024 });
  const me = new Conntrack(table); // a worker record, so our locks carry an owner id
  const pool = new ConntrackPool({ table, workers: 2, dispatch: 'free' });
  const i32 = table.i32;
  const f = udp4({ src: '10.5.0.1', dst: '10.5.0.2', sport: 1111, dport: 53, payload: 'x' });
  const batch = pool.createBatch({ capacity: 2 });
  batch.push(LINKTYPE_RAW, f, 0, f.length, 1000); // one copy per worker (contiguous chunks)
  batch.push(LINKTYPE_RAW, f, 0, f.length, 1000);
  let held = true;
  try {
    // Warm both workers up so that they start together.
    const warm = pool.createBatch({ capacity: 2 });
    const g = udp4({ src: '10.5.9.9', dst: '10.5.0.2', sport: 9, dport: 9 });
    warm.push(LINKTYPE_RAW, g, 0, g.length, 1000);
    warm.push(LINKTYPE_RAW, g, 0, g.length, 1000);
    await bounded(pool.process(warm), 20_000, 'warm-up batch');
    const before = table.stats().total;
    const base = table.count;
    // Hold every stripe: lookups still run (they take no lock), confirms cannot.
    for (let s = 0; s < table.locks; s++) lock(i32, table.sec.locks + s * LOCK_STRIDE, me.wid);
    const done = pool.process(batch);
    // Both have looked the tuple up (found nothing) and allocated: each worker record names its
    // private entry (W_INTENT_SLOT) until confirm links it.
    const allocating = (): number => {
      let n = 0;
      for (let w = 0; w < table.maxWorkers; w++) if (Atomics.load(i32, table.sec.workers + w * WORKER_WORDS + W_INTENT_SLOT) !== 0) n++;
      return n;
    };
    const both = await waitFor(() => allocating() === 2, 10_000);
    for (let s = 0; s < table.locks; s++) unlock(i32, table.sec.locks + s * LOCK_STRIDE);
    held = false;
    t.true(both, 'both workers allocated an entry for the tuple within 10 s');
    await bounded(done, 20_000, 'the clashing batch');
    const after = table.stats().total;
    t.is(after['clash_resolve']! - before['clash_resolve']!, 1, 'exactly one confirm lost the race');
    t.is(after['insert']! - before['insert']!, 1);
    t.is(table.count, base + 1, 'only the winner\'s entry is counted');
    t.is(allocating(), 0, 'the loser\'s entry was given back');
    const out = new BatchVerdict();
    const verdicts = [0, 1].map((i) => `${batch.read(i, out).ctstate}/${out.direction}`).sort();
    // The winner saw a new connection; the loser joined it (the kernel: both are NEW until a reply).
    t.deepEqual(verdicts, ['new/original', 'new/original']);
  } finally {
    if (held) for (let s = 0; s < table.locks; s++) unlock(i32, table.sec.locks + s * LOCK_STRIDE);
    await pool.close();
  }
  invariantsHold(t, table);
  me.close();
});

test('one TCP connection from two threads (free dispatch): every packet valid, state as one thread leaves it', async (t) => {
  const table = ConntrackTable.create({ max: 1024, sysctls: { nf_conntrack_acct: 1 } });
  const ct = new Conntrack(table);
  const C = 1000;
  const S = 5000;
  const W = 64000;
  const c = { src: '10.6.0.1', dst: '10.6.0.2', sport: 40000, dport: 80 };
  const s = { src: '10.6.0.2', dst: '10.6.0.1', sport: 80, dport: 40000 };
  const T0 = 1000;
  ct.decide(tcp4({ ...c, flags: 'S', seq: C, win: W }), LINKTYPE_RAW, T0);
  ct.decide(tcp4({ ...s, flags: 'SA', seq: S, ack: C + 1, win: W }), LINKTYPE_RAW, T0);
  const slot = ct.decide(tcp4({ ...c, flags: 'A', seq: C + 1, ack: S + 1, win: W }), LINKTYPE_RAW, T0).slot;
  const e = ct.chains.entry(slot);
  t.truthy(Atomics.load(table.i32, e + E_STATUS) & IPS_ASSURED);
  // Worker 0: N data segments of 100 bytes from the client, in order (50,000 bytes < the 64,000
  // window). Worker 1: N pure ACKs from the server, acking only the handshake and shrinking its
  // window by one each time (so none is a retransmission). Each is in window whatever the
  // interleaving, so every verdict and the final state are known in advance.
  const N = 500;
  const pool = new ConntrackPool({ table, workers: 2, dispatch: 'free' });
  const batch = pool.createBatch({ capacity: 2 * N });
  const data = 'd'.repeat(100);
  const frames: Uint8Array[] = [];
  for (let i = 0; i < N; i++) frames.push(tcp4({ ...c, flags: 'PA', seq: C + 1 + 100 * i, ack: S + 1, win: W, payload: data }));
  for (let i = 0; i < N; i++) frames.push(tcp4({ ...s, flags: 'A', seq: S + 1, ack: C + 1, win: W - 1 - i }));
  for (const fr of frames) batch.push(LINKTYPE_RAW, fr, 0, fr.length, T0 + 10);
  let r;
  try {
    r = await bounded(pool.process(batch), 30_000, 'the two-thread TCP batch');
  } finally {
    await pool.close();
  }
  t.is(r.tasks, 2, 'both workers took a share');
  const out = new BatchVerdict();
  const wrong: string[] = [];
  for (let i = 0; i < 2 * N; i++) {
    batch.read(i, out);
    const want = i < N ? 'established/original' : 'established/reply';
    if (`${out.ctstate}/${out.direction}` !== want) wrong.push(`#${i}: ${out.ctstate}/${out.direction} ${out.reason ?? ''}`);
  }
  t.deepEqual(wrong.slice(0, 5), [], `${wrong.length} packets not established in their direction`);
  const ctx = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl };
  t.is(tcpState(ctx, e), TCP_CONNTRACK_ESTABLISHED);
  const td = (dir: number, w: number): number => table.u32[e + E_PRIV + TCP_DIR + dir * TCP_DIR_WORDS + w]!;
  // Hand-computed: the client's end is its last byte; its right edge is the largest ack + window
  // the server sent (the SYN/ACK: C+1 + W; the ACKs offer less); the server sent no data; the
  // server's largest window is W (SYN/ACK).
  t.is(td(0, TD_END), C + 1 + 100 * N);
  t.is(td(0, TD_MAXEND), C + 1 + W);
  t.is(td(1, TD_END), S + 1);
  t.is(td(1, TD_MAXWIN), W);
  // The client's data is unacknowledged: the 300 s unacknowledged timeout (below ESTABLISHED's).
  t.is(((table.i32[e + E_TIMEOUT]! - (T0 + 10)) | 0) / 1000, 300);
  const acct = connAcct(table, slot);
  t.is(acct?.origPackets, 2 + N);
  t.is(acct?.replyPackets, 1 + N);
  invariantsHold(t, table);
  ct.close();
});
