/**
 * The chaos run (issue 9): packet workers, the GC, two subscribers (one slow, on its own thread),
 * a flusher; random terminate() of any of them (the GC included) and random stalls, for a fixed
 * time. Then: every connection that must exist exists, every removed one produced exactly one
 * DESTROY for the subscriber that kept up, no new connection was refused below 90 % full, all
 * invariants hold, and no thread wedged.
 */
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { EVENT_DESTROY, EVENT_NEW, eventStats, subscribeEvents } from '../../src/table/ecache.js';
import { startGc, type GcHandle } from '../../src/table/gc.js';
import { checkInvariants, formatInvariants } from '../../src/table/invariants.js';
import { E_NS, E_TUPLE, E_ZONE, E_ID } from '../../src/table/layout.js';
import { reclaimOrphans, recoverDeadWorker } from '../../src/table/recovery.js';
import { ConntrackTable, type Discipline } from '../../src/table/table.js';
import { Conntrack } from '../../src/track/core.js';
import {
  C_CREATED, C_PENDING, C_PROGRESS, C_REFUSED, C_STALL, C_STOP, C_WORDS, C_WRONGFUL, FLOWS,
  type ChaosWorkerData,
} from './chaos-shared.js';

const WORKER = new URL('./chaos-worker.js', import.meta.url);

export interface ChaosOptions {
  seconds: number;
  discipline: Discipline;
  seed?: number;
  packetWorkers?: number;
  log?: (s: string) => void;
}

export interface ChaosResult {
  seconds: number;
  discipline: Discipline;
  kills: { packet: number; gc: number; flusher: number; subscriber: number };
  stalls: number;
  created: number;
  refused: number;
  /** Refusals while the table was below 90 % full. */
  wrongfulTableFull: number;
  /** Threads that made no progress for WEDGE_MS while not asked to stall. */
  wedges: number;
  /** Must-exist connections (zone 0) missing at the end. */
  missing: number;
  /** DESTROYs the fast subscriber got for connections still in the table. */
  killedLive: number;
  /** Connections the fast subscriber saw created and gone without a DESTROY. */
  lostDestroys: number;
  /**
   * DESTROYs dropped (counted) for the fast subscriber because it was overrun. Every lost DESTROY
   * must be one of these (lostDestroys === fastDropped: it saw every NEW, so each dropped record
   * is one of its lost connections; a DESTROY never written would make lostDestroys larger).
   */
  fastDropped: number;
  /** Its overruns: when, how many dropped, how long it had not polled, the machine's gap meanwhile. */
  fastOverruns: FastOverrun[];
  /** Overruns while it polled within the stall time: not by design (a failure). */
  fastOverrunsUnexplained: number;
  /** Gaps over 250 ms of an idle control thread's 5 ms timer: the machine not running this process. */
  machineGaps: number;
  /** Stall events the fast subscriber got, by kind, and the table's stall statistic (table.stalls). */
  stallEvents: { worker: number; subscriber: number };
  stallsCounted: number;
  duplicateDestroys: number;
  destroysSeen: number;
  subscriberLost: number;
  slowDropped: number;
  invariantsOk: boolean;
  invariants: string;
  overruns: number;
  stallsDetected: number;
  /** eventStats: DESTROYs given up with the park queue full, tombstones; the fast subscriber's skipped unpublished DESTROY records. */
  parkFull: number;
  tombstones: number;
  fastSkipped: number;
}

/** An overrun of the fast subscriber (chaos.ts). */
export interface FastOverrun {
  atS: number;
  dropped: number;
  silentMs: number;
  /** How long its DESTROY tail had waited on a producer's unpublished record (a killed producer before its recovery). */
  tailBlockedMs: number;
  machineGapMs: number;
}

const WEDGE_MS = 8000;
const STALL_MS = 600;

interface Role {
  kind: 'packet' | 'flusher' | 'subscriber';
  index: number;
  w: Worker | null;
  wid: number;
  lastProgress: number;
  lastChange: number;
  stalledUntil: number;
  result: Promise<Record<string, unknown>> | null;
}

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const log = o.log ?? (() => {});
  let seed = (o.seed ?? 0x9e3779b9) | 1;
  const rand = (): number => {
    seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  const nPacket = o.packetWorkers ?? 3;
  const table = ConntrackTable.create({
    // Room for what a stalled worker holds up before it is detected (STALL_MS x the churn rate).
    max: 16384, discipline: o.discipline, maxWorkers: 16, stallMs: STALL_MS,
    // A DESTROY ring of 16,384: more than the stall time's worth of DESTROYs (about 10,000), so
    // the checker, polling within it, is never a ring behind when the slow one fills the shared
    // park queue (a subscriber more than a ring behind then is overrun too, by design).
    events: { ring: 1 << 16, destroyRing: 16384 },
  });
  const now = 1000;
  table.clock = now; // fixed: nothing expires, so zone-0 connections must stay
  const control = new SharedArrayBuffer(4 * C_WORDS);
  const c = new Int32Array(control);
  const stateBuf = new SharedArrayBuffer(4 * FLOWS * nPacket);
  const state = new Int32Array(stateBuf);
  const res: ChaosResult = {
    seconds: o.seconds, discipline: o.discipline, kills: { packet: 0, gc: 0, flusher: 0, subscriber: 0 }, stalls: 0,
    created: 0, refused: 0, wrongfulTableFull: 0, wedges: 0, missing: 0, killedLive: 0, lostDestroys: 0, fastDropped: 0,
    duplicateDestroys: 0, destroysSeen: 0, subscriberLost: 0, slowDropped: 0, invariantsOk: false, invariants: '',
    overruns: 0, stallsDetected: 0, parkFull: 0, tombstones: 0, fastSkipped: 0,
    fastOverruns: [], fastOverrunsUnexplained: 0, machineGaps: 0, stallEvents: { worker: 0, subscriber: 0 }, stallsCounted: 0,
  };
  // Connections the uncertain pending operations of killed workers touched: not judged.
  const uncertain = new Set<number>();

  // The fast subscriber, on this thread: every NEW and DESTROY id.
  const fast = subscribeEvents(table);
  // What it saw, one byte per connection id (ids come from one counter, H_NEXT_ID), in 1 Mi-id
  // chunks: a Set/Map of millions of ids blocks this thread for seconds each time its hash table
  // doubles (0.75 s at 2^21 entries, 2.4 s at 2^22 and 2^23, measured), long enough for the
  // producers to find this subscriber stalled and overrun it.
  const seen = new IdBytes();
  // Trace (CHAOS_TRACE=1): gaps between the checker's polls, what this thread was doing then, V8 GC pauses.
  const trace = process.env['CHAOS_TRACE'] === '1';
  let doing = 'idle';
  let doingSince = performance.now();
  const acts: string[] = [];
  const actMax = new Map<string, number>(); // longest time spent in each activity (trace)
  const act = (what: string): void => {
    const t = performance.now();
    if (trace) actMax.set(doing, Math.max(actMax.get(doing) ?? 0, Math.round(t - doingSince)));
    if (trace && doing !== 'idle' && t - doingSince > 50) acts.push(`${doing} ${Math.round(t - doingSince)} ms`);
    doing = what; doingSince = t;
  };
  let lastPoll = performance.now();
  const t0 = performance.now();
  const gcObs = trace ? new PerformanceObserver((l) => {
    for (const e of l.getEntries()) if (e.duration > 50) log(`trace ${((e.startTime - t0) / 1000).toFixed(1)} s: V8 gc ${Math.round(e.duration)} ms (kind ${(e as unknown as { detail?: { kind?: number } }).detail?.kind})`);
  }) : null;
  gcObs?.observe({ entryTypes: ['gc'] });
  // Control: a thread doing nothing but a 5 ms timer; its gaps (over 100 ms: end time, length,
  // epoch ms) are the machine's scheduling delays, not this process's doing.
  const TICKS = 1024;
  const ticks = new Float64Array(new SharedArrayBuffer(8 * 2 * TICKS));
  const ticker = new Worker(`const { workerData: w } = require('node:worker_threads');
    let last = performance.timeOrigin + performance.now(), n = 0;
    setInterval(() => { const t = performance.timeOrigin + performance.now();
      if (t - last > 100 && n < ${TICKS}) { w[2 * n + 1] = t - last; w[2 * n] = t; n++; } last = t; }, 5);`,
  { eval: true, workerData: ticks });
  ticker.unref();
  /** The longest control-thread gap overlapping [from, to] (performance.now() times). */
  const machineGap = (from: number, to: number): number => {
    let g = 0;
    for (let k = 0; k < TICKS && ticks[2 * k]! > 0; k++) {
      const end = ticks[2 * k]! - performance.timeOrigin;
      if (end >= from && end - ticks[2 * k + 1]! <= to) g = Math.max(g, ticks[2 * k + 1]!);
    }
    return Math.round(g);
  };
  // Overruns of the checker. By design (README, Reliability) only when it had not polled for the
  // stall time: each is kept with that silence and the machine's own gap meanwhile.
  let pollStart = performance.now();
  let silence = 0;
  const fastOverruns: FastOverrun[] = [];
  fast.on('overrun', (n, blockedMs) => {
    const t = performance.now(); // emitted by poll() as it re-attaches, before it reads
    fastOverruns.push({
      atS: Math.round((t - t0) / 100) / 10, dropped: n, silentMs: Math.round(silence), tailBlockedMs: blockedMs,
      machineGapMs: machineGap(t - silence, t),
    });
  });
  const stallEvents = { worker: 0, subscriber: 0 };
  fast.on('stall', (ev) => { stallEvents[ev.kind]++; });
  const pollFast = (): void => {
    const t = performance.now();
    silence = t - pollStart;
    pollStart = t;
    if (trace && t - lastPoll > 200) {
      log(`trace ${((t - t0) / 1000).toFixed(1)} s: poll gap ${Math.round(t - lastPoll)} ms; long acts since: ${acts.join(', ') || 'none'}; now ${doing}; ` +
        `dropped ${fast.dropped}, ids ${seen.count}`);
    }
    acts.length = 0;
    const evs = fast.poll();
    for (const ev of evs) {
      if (ev.type === EVENT_NEW) seen.or(ev.id, SEEN_NEW | ((ev.zone & 3) << 1));
      else if (ev.type === EVENT_DESTROY) seen.countDestroy(ev.id);
    }
    lastPoll = performance.now();
    if (trace && lastPoll - t > 50) log(`trace ${((t - t0) / 1000).toFixed(1)} s: poll took ${Math.round(lastPoll - t)} ms for ${evs.length} events`);
  };
  const pollTimer = setInterval(pollFast, 5);

  const roles: Role[] = [];
  for (let i = 0; i < nPacket; i++) roles.push({ kind: 'packet', index: i, w: null, wid: -1, lastProgress: 0, lastChange: 0, stalledUntil: 0, result: null });
  roles.push({ kind: 'flusher', index: nPacket, w: null, wid: -1, lastProgress: 0, lastChange: 0, stalledUntil: 0, result: null });
  roles.push({ kind: 'subscriber', index: nPacket + 1, w: null, wid: -1, lastProgress: 0, lastChange: 0, stalledUntil: 0, result: null });

  const spawn = async (r: Role): Promise<void> => {
    const data: ChaosWorkerData = {
      buffer: table.buffer, control, state: stateBuf, role: r.kind, index: r.index, seed: (rand() * 0x7fffffff) | 1, now,
    };
    act(`spawn ${r.kind}`);
    const w = new Worker(WORKER, { workerData: data });
    act('idle');
    w.on('error', () => {});
    r.w = w;
    r.result = new Promise((ok) => w.on('message', (m: Record<string, unknown>) => { if (m.type === 'done') ok(m); }));
    r.wid = await new Promise<number>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`${r.kind} ${r.index} did not start in 20 s`)), 20000);
      w.on('message', (m: { type: string; wid: number }) => { if (m.type === 'ready') { clearTimeout(timer); ok(m.wid); } });
      w.once('error', (err) => { clearTimeout(timer); fail(new Error(`${r.kind} ${r.index} failed to start: ${err.stack ?? err}`)); });
    });
    r.lastProgress = Atomics.load(c, C_PROGRESS + r.index);
    r.lastChange = Date.now();
  };
  const kill = async (r: Role): Promise<void> => {
    const w = r.w!;
    r.w = null;
    act(`terminate ${r.kind}`);
    await w.terminate();
    if (r.kind === 'packet') {
      const p = Atomics.load(c, C_PENDING + r.index) - 1; // what it was changing: not judged
      if (p >= 0) uncertain.add(r.index * FLOWS + p);
      Atomics.store(c, C_PENDING + r.index, 0);
    }
    // Short waits: this thread also reads the fast subscriber, which must keep up.
    act(`recover ${r.kind}`);
    if (r.wid >= 0) recoverDeadWorker(table, r.wid, { graceWaitMs: 50, lockWaitMs: 500 });
    act('idle');
    res.kills[r.kind]++;
  };

  let gc: GcHandle = startGc(table, { wallPerClock: 0.01, minIntervalMs: 1000 });
  await gc.ready;
  for (const r of roles) await spawn(r);

  const end = Date.now() + o.seconds * 1000;
  let lastGcRuns = gc.counters.runs;
  let lastGcChange = Date.now();
  while (Date.now() < end) {
    await new Promise((ok) => setTimeout(ok, 50 + rand() * 250));
    const t = Date.now();
    // Wedge watch: every thread not asked to stall makes progress.
    for (const r of roles) {
      const p = Atomics.load(c, C_PROGRESS + r.index);
      if (p !== r.lastProgress) { r.lastProgress = p; r.lastChange = t; }
      else if (t > r.stalledUntil && t - r.lastChange > WEDGE_MS) {
        res.wedges++;
        log(`wedge: ${r.kind} ${r.index} made no progress for ${t - r.lastChange} ms`);
        r.lastChange = t;
      }
    }
    const runs = gc.counters.runs;
    if (runs !== lastGcRuns) { lastGcRuns = runs; lastGcChange = t; }
    else if (t - lastGcChange > WEDGE_MS) { res.wedges++; log('wedge: the GC made no progress'); lastGcChange = t; }
    // One random act of chaos.
    const a = rand();
    if (a < 0.35) {
      await kill(roles[Math.floor(rand() * nPacket)]!).then(() => undefined);
      const r = roles.find((x) => x.w === null)!;
      await spawn(r);
    } else if (a < 0.45) {
      act('terminate gc (+ its recovery)');
      await gc.terminate(); // the handle recovers its record: a new GC may start
      act('start gc');
      res.kills.gc++;
      await gc.stop().catch(() => {}); // reports the death
      gc = startGc(table, { wallPerClock: 0.01, minIntervalMs: 1000 });
      await gc.ready;
      act('idle');
      lastGcChange = Date.now();
    } else if (a < 0.55) {
      const r = roles[nPacket]!;
      await kill(r);
      await spawn(r);
    } else if (a < 0.62) {
      const r = roles[nPacket + 1]!;
      await kill(r);
      await spawn(r);
    } else if (a < 0.85) {
      const r = roles[Math.floor(rand() * roles.length)]!;
      const ms = Math.floor(STALL_MS * (0.5 + rand() * 2.5));
      r.stalledUntil = Date.now() + ms + WEDGE_MS;
      Atomics.store(c, C_STALL + r.index, ms);
      res.stalls++;
    }
  }

  // Stop everything, in order; the slow subscriber reports what it got.
  Atomics.store(c, C_STOP, 1);
  const slow = roles[nPacket + 1]!;
  const slowDone = await Promise.race([slow.result!, new Promise<null>((ok) => setTimeout(() => ok(null), 20000))]);
  for (const r of roles) {
    const done = await Promise.race([r.result!, new Promise<null>((ok) => setTimeout(() => ok(null), 20000))]);
    if (!done) { res.wedges++; log(`wedge: ${r.kind} ${r.index} did not finish`); await kill(r); }
    else await r.w?.terminate();
  }
  await gc.stop();
  clearInterval(pollTimer);
  gcObs?.disconnect();
  const gaps: string[] = [];
  for (let k = 0; k < TICKS && ticks[2 * k]! > 0; k++) {
    if (ticks[2 * k + 1]! > 250) gaps.push(`${((ticks[2 * k]! - performance.timeOrigin - t0) / 1000).toFixed(1)} s: ${Math.round(ticks[2 * k + 1]!)} ms`);
  }
  res.machineGaps = gaps.length;
  if (trace || gaps.length > 0) log(`timer gaps over 250 ms of an idle control thread (the machine's scheduling): ${gaps.join(', ') || 'none'}`);
  await ticker.terminate();
  if (trace) log(`trace: longest time in each activity of this thread (ms): ${JSON.stringify(Object.fromEntries(actMax))}`);
  // Deliver what is parked, then read everything.
  const me = new Conntrack(table);
  // A subscriber killed just before the end holds the DESTROY ring until it has been silent for
  // the stall time (then it is overrun): deliver for a few stall times.
  for (let i = 0; i < 400; i++) {
    pollFast();
    if (me.retryParkedEvents() === 0) break;
    await new Promise((ok) => setTimeout(ok, 10));
  }
  pollFast();
  me.close();

  // The table at the end: ids and zone-0 flows present.
  const finalIds = new Set<number>();
  const present = new Set<number>();
  const probe = new Conntrack(table);
  probe.beginBatch();
  probe.chains.forEach((e) => {
    finalIds.add(table.i32[e + E_ID]! >>> 0);
    const z = table.i32[e + E_ZONE]! & 0xffff;
    const src = table.i32[e + E_TUPLE]! >>> 0; // IPv4 source, host order (tuple words)
    const b1 = (src >>> 16) & 255;
    const wz = b1 - 64;
    if (z === 0 && table.i32[e + E_NS] === 0 && wz >= 0 && wz % 3 === 0) {
      present.add((wz / 3) * FLOWS + ((src >>> 8) & 255) * 256 + (src & 255));
    }
  });
  probe.endBatch();
  probe.close();

  for (let sw = 0; sw < state.length; sw++) {
    if (state[sw] === 1 && !uncertain.has(sw) && !present.has(sw)) res.missing++;
  }
  const lostByZone = [0, 0, 0, 0];
  let lostMin = Infinity;
  let lostMax = 0;
  let newest = 0;
  seen.forEach((id, b) => {
    const n = (b >>> SEEN_D_SHIFT) & 3;
    if (n > 1) res.duplicateDestroys++;
    if (n > 0) {
      res.destroysSeen++;
      if (finalIds.has(id)) res.killedLive++;
    }
    if ((b & SEEN_NEW) === 0) return;
    if (id > newest) newest = id;
    // Every connection it saw created and that is gone produced its DESTROY (when it lost no NEW,
    // this is every connection created while it was attached).
    if (n === 0 && !finalIds.has(id)) {
      res.lostDestroys++;
      lostByZone[(b >>> 1) & 3]!++;
      lostMin = Math.min(lostMin, id);
      lostMax = Math.max(lostMax, id);
    }
  });
  if (res.lostDestroys > 0) log(`lost DESTROYs by zone ${lostByZone.slice(0, 3)}, ids ${lostMin}..${lostMax} of ${newest}`);
  res.subscriberLost = fast.lost;
  if (res.fastSkipped === 0) res.fastSkipped = fast.lostDestroys;
  res.fastDropped = fast.dropped;
  res.fastOverruns = fastOverruns;
  // By design: silent for the stall time, or its tail held by a killed (or descheduled) producer's
  // unpublished DESTROY record until the ring and the park queue filled.
  res.fastOverrunsUnexplained = fastOverruns.filter((x) => x.silentMs <= STALL_MS && x.tailBlockedMs === 0).length;
  for (const x of fastOverruns) {
    log(`fast subscriber overrun at ${x.atS} s: ${x.dropped} dropped after ${x.silentMs} ms without a poll (stall time ${STALL_MS} ms; ` +
      `its tail held ${x.tailBlockedMs} ms by an unpublished record; an idle control thread's longest gap meanwhile ${x.machineGapMs} ms)`);
  }
  if (slowDone) {
    const sd = slowDone as { destroys: [number, number][]; dropped: number };
    res.slowDropped = sd.dropped;
    for (const [id, n] of sd.destroys) {
      if (n > 1) res.duplicateDestroys++;
      if (finalIds.has(id)) res.killedLive++;
    }
  }
  res.created = Atomics.load(c, C_CREATED);
  res.refused = Atomics.load(c, C_REFUSED);
  res.wrongfulTableFull = Atomics.load(c, C_WRONGFUL);
  const st = table.stats().total;
  res.stallsDetected = st['stall_expelled']!;
  res.stallEvents = stallEvents;
  res.stallsCounted = table.stalls;
  const me2 = table.registerWorker();
  reclaimOrphans(table, me2);
  table.releaseWorker(me2);
  const inv = checkInvariants(table);
  res.invariantsOk = inv.ok && inv.slots.leaked === 0;
  res.invariants = formatInvariants(inv);
  const es = eventStats(table);
  res.overruns = es.overruns;
  res.parkFull = es.parkFull;
  res.tombstones = es.tombstones;
  res.fastSkipped = fast.lostDestroys;
  if (es.parked > 0 || res.lostDestroys > 0) log(`at the end: ${es.parked} parked, ${es.subscribers} subscribers, emitted ${es.emitted}, parked in all ${es.parkedTotal}`);
  fast.close();
  return res;
}

/** Bits of IdBytes' byte per id: NEW seen, its zone (2 bits), DESTROYs seen (2 bits, saturating). */
const SEEN_NEW = 1;
const SEEN_D_SHIFT = 3;
const CHUNK_BITS = 20;

/** One byte per 32-bit id, in chunks allocated as ids appear: no rehash, no copy, ever. */
class IdBytes {
  private readonly chunks = new Map<number, Uint8Array>();
  /** Ids with a non-zero byte. */
  count = 0;
  private at(id: number): [Uint8Array, number] {
    const k = id >>> CHUNK_BITS;
    let c = this.chunks.get(k);
    if (c === undefined) { c = new Uint8Array(1 << CHUNK_BITS); this.chunks.set(k, c); }
    return [c, id & ((1 << CHUNK_BITS) - 1)];
  }
  or(id: number, bits: number): void {
    const [c, i] = this.at(id);
    if (c[i] === 0) this.count++;
    c[i]! |= bits;
  }
  countDestroy(id: number): void {
    const [c, i] = this.at(id);
    const b = c[i]!;
    if (b === 0) this.count++;
    const n = (b >>> SEEN_D_SHIFT) & 3;
    if (n < 3) c[i] = (b & ~(3 << SEEN_D_SHIFT)) | ((n + 1) << SEEN_D_SHIFT);
  }
  forEach(fn: (id: number, b: number) => void): void {
    for (const [k, c] of this.chunks) {
      for (let i = 0; i < c.length; i++) if (c[i] !== 0) fn(((k << CHUNK_BITS) | i) >>> 0, c[i]!);
    }
  }
}
