/**
 * The pool replay's ring (src/pool/ring.ts): several batches in flight, each worker taking its
 * own flows of every batch. It decides as the lockstep path (one batch at a time, the dispatcher
 * on the calling thread) does, runs GC sweeps after the same batches, and fails cleanly when a
 * worker dies in the middle of it.
 */
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConntrackPool, WorkerDeathError } from '../src/pool/pool.js';
import { ReplayGc } from '../src/ops/replay.js';
import { ConntrackTable } from '../src/table/table.js';
import { synthPcap } from './helpers/synth-pcap.js';
import { ringBounds, ringParty } from '../src/pool/ring.js';
import { peekFlow } from '../src/pool/dispatch.js';

const dir = mkdtempSync(join(tmpdir(), 'ctsab-ring-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function capture(name: string, bytes: number): string {
  const chunks = [...synthPcap({ bytes, concurrent: 64, segments: 6 })];
  const path = join(dir, name);
  writeFileSync(path, Buffer.concat(chunks));
  return path;
}

interface Outcome { lines: string[]; sweeps: number[]; batches: number; counts: Record<string, number>; stats: Record<string, number> }

/** Short timeouts and a small table: dead entries pile up until the replay's GC sweeps them. */
async function run(path: string, lockstep: boolean, workers = 2, callerShare = 0): Promise<Outcome> {
  const table = ConntrackTable.create({
    max: 2048, hashKey: [7, 8],
    sysctls: { nf_conntrack_tcp_timeout_time_wait: 1, nf_conntrack_tcp_timeout_close_wait: 1, nf_conntrack_tcp_timeout_last_ack: 1, nf_conntrack_tcp_timeout_fin_wait: 1, nf_conntrack_udp_timeout: 1, nf_conntrack_udp_timeout_stream: 1 },
  });
  const gc = new ReplayGc(table);
  const pool = new ConntrackPool({ table, workers, dispatch: 'flow' });
  const lines: string[] = [];
  /** Packets reported when each sweep ran. */
  const sweeps: number[] = [];
  let batches = 0;
  try {
    const r = await pool.replay(path, {
      batch: 128,
      callerShare,
      onPacket: (i, v) => { lines.push(`${i} ${v.ctstate} ${v.direction} ${v.reason} ${v.protoState} ${v.drop}`); },
      sweep: { due: (x) => gc.due(x), run: () => { if (gc.due()) sweeps.push(lines.length); gc.maybeRun(); } },
      // onBatch makes the replay take one batch at a time (the lockstep path).
      ...(lockstep ? { onBatch: () => { batches++; } } : {}),
    });
    const t = table.stats().total;
    const stats = Object.fromEntries(['insert', 'drop', 'early_drop', 'invalid', 'found'].map((n) => [n, t[n]!]));
    return { lines, sweeps, batches, counts: r.counts, stats };
  } finally {
    await pool.close();
    gc.close();
  }
}

test('the ring decides as one batch at a time does, GC sweeps included', async (t) => {
  const path = capture('sweeps.pcap', 24 << 20);
  const ring = await run(path, false);
  const lock = await run(path, true);
  t.true(lock.batches > 10, 'the lockstep path was taken');
  t.true(ring.sweeps.length >= 2, `the table filled and was swept (${ring.sweeps.length} sweeps)`);
  t.deepEqual(ring.sweeps, lock.sweeps, 'each sweep ran after the same packets');
  t.log(`${ring.lines.length} packets, sweeps after packets ${ring.sweeps.join(', ')}`);
  t.is(ring.stats['drop'], 0, 'a sweep came before the table was full');
  t.is(ring.stats['early_drop'], 0);
  t.is(ring.lines.length, lock.lines.length);
  t.deepEqual(ring.lines, lock.lines);
  t.deepEqual(ring.counts, lock.counts);
  t.deepEqual(ring.stats, lock.stats);
  // The replaying thread as a party too (replay --workers 2 runs one worker and this share).
  const caller = await run(path, false, 1, 0.3);
  t.deepEqual(caller.sweeps, lock.sweeps, 'with a caller share: each sweep ran after the same packets');
  t.deepEqual(caller.lines, lock.lines);
  t.deepEqual(caller.counts, lock.counts);
  t.deepEqual(caller.stats, lock.stats);
});

test('a caller share: the replaying thread decides about its share of the flows', async (t) => {
  const path = capture('share.pcap', 4 << 20);
  // Flows (by their symmetric hash) to parties: the worker below 70 % of the hash space.
  const bounds = ringBounds(1, 0.3);
  t.is(ringParty(0, bounds), 0);
  t.is(ringParty(Math.floor(0.69 * 2 ** 32), bounds), 0);
  t.is(ringParty(Math.floor(0.71 * 2 ** 32), bounds), 1);
  t.is(ringParty(2 ** 32 - 1, bounds), 1);
  const table = ConntrackTable.create({ max: 8192 });
  const pool = new ConntrackPool({ table, workers: 1 });
  try {
    let callerFlows = 0, total = 0;
    const r = await pool.replay(path, {
      batch: 128, callerShare: 0.3,
      onFrame: (lt, buf, off, len) => {
        total++;
        if (ringParty(peekFlow(lt, buf, off, len) >>> 0, bounds) === 1) callerFlows++;
      },
    });
    t.is(total, r.packets);
    t.true(callerFlows > total * 0.2 && callerFlows < total * 0.4, `${callerFlows} of ${total} packets hash to the caller`);
    // Per worker record: the caller's tracker (a record of its own) decided about that share.
    const per = table.stats().perWorker.map((w) => (w['found'] ?? 0) + (w['insert'] ?? 0)).filter((x) => x > 0);
    t.is(per.length, 2, `two records decided packets: ${per.join(', ')}`);
    const small = Math.min(...per) / (per[0]! + per[1]!);
    t.true(small > 0.2 && small < 0.4, `the smaller record's part is ${small.toFixed(3)}`);
  } finally {
    await pool.close();
  }
});

for (const callerShare of [0, 0.3]) test(`a worker that dies in the ring: the replay rejects after recovery, the pool goes on (caller share ${callerShare})`, async (t) => {
  const path = capture(`death-${callerShare}.pcap`, 2 << 20);
  const table = ConntrackTable.create({ max: 8192 });
  const deaths: number[] = [];
  const pool = new ConntrackPool({ table, workers: 2, onWorkerDeath: (d) => { deaths.push(d.wid); } });
  try {
    let seen = 0;
    const e = await t.throwsAsync(pool.replay(path, { batch: 128, crashAfter: 300, callerShare, onPacket: () => { seen++; } }));
    t.true(e instanceof WorkerDeathError, String(e));
    const d = e as WorkerDeathError;
    t.is(d.deaths.length, 1);
    t.not(d.deaths[0]!.recovery, null, 'the dead worker\'s table record was recovered');
    t.is(deaths.length, 1, 'onWorkerDeath ran before the replay rejected');
    t.true(d.decided >= seen && d.decided <= d.packets, `${d.decided} of ${d.packets} decided, ${seen} reported`);
    // The pool replaced the thread and the table stays usable: replay the capture again.
    let after = 0;
    const r = await pool.replay(path, { batch: 128, callerShare, onPacket: () => { after++; } });
    t.true(r.packets > 1000);
    t.is(after, r.packets);
  } finally {
    await pool.close();
  }
});

test('a caller share: an abort stops the ring cleanly, and the caller\'s table record is given back', async (t) => {
  const path = capture('abort.pcap', 2 << 20);
  // Records: 1 worker + the caller's tracker + 1 spare; a record not given back would run out.
  const table = ConntrackTable.create({ max: 8192, maxWorkers: 3 });
  const pool = new ConntrackPool({ table, workers: 1 });
  try {
    const ac = new AbortController();
    let seen = 0;
    const e = await t.throwsAsync(pool.replay(path, { batch: 128, callerShare: 0.3, signal: ac.signal, onPacket: () => { if (++seen === 700) ac.abort(); } }));
    t.is((e as { code?: string }).code, 'ABORT_ERR');
    for (let k = 0; k < 3; k++) {
      let n = 0;
      const r = await pool.replay(path, { batch: 128, callerShare: 0.3, onPacket: () => { n++; } });
      t.is(n, r.packets);
      t.true(r.packets > seen, `${r.packets} packets`);
    }
  } finally {
    await pool.close();
  }
});
