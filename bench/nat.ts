/**
 * The `nat` workload and experiment (iii), NAT placement (run by bench/run.ts, section `nat`).
 *
 * nat-snat: UDP flows from many hosts to ONE server port behind one SNAT address, so every flow
 *   competes for the same reply tuples (only the port varies): the port search works harder as
 *   the range fills and the last flows find it exhausted (dropped, counted in nat_failed).
 *   Insert pass (first packets: NAT decision + rewrite), then a lookup pass (the same flows
 *   again: found + rewrite). Reported: rate, allocation failures, p99 of 32-packet batches.
 * nat-dnat: flows from many clients to one VIP:80, DNAT to 16 backends (an address range).
 * Experiment (iii): the same SNAT flows (no exhaustion) and null-binding flows (NAT on, no rule
 *   matches) with the bysource link inline (E_LINK) or in an extension block per connection:
 *   memory per connection, insert rate, lookup rate.
 *
 * Frames are rewritten in place by NAT, so every run gets fresh frames and a fresh table. In the
 * lookup pass of nat-snat the flows that found no port try again (and fail again): they are
 * new connections each time, as a client's retransmissions would be.
 */
import { ConntrackTable } from '../src/table/table.js';
import { CtOps } from '../src/ops/ops.js';
import { EXT_BYTES } from '../src/table/layout.js';
import { setNatPlacement } from '../src/track/nat/bysource.js';
import { FrameSet } from './frames.js';
import type { BenchPool, RunResult } from './harness.js';
import type { Job } from './engine.js';
import { median } from './stats.js';

const T0 = 1_000_000;

export interface NatRow {
  name: string;
  workers: number;
  pass: 'insert' | 'lookup';
  rate: number;
  min: number;
  max: number;
  unit: string;
  natFailed: number;
  p99us: number;
  flows: number;
}

export interface NatPlacementRow {
  traffic: 'snat' | 'null-binding';
  placement: 'inline' | 'extension';
  bytesPerConnection: number;
  insertRate: number;
  lookupRate: number;
}

function ip(a: number, b: number, c: number, d: number): number {
  return ((a << 24) | (b << 16) | (c << 8) | d) | 0;
}

/** n UDP flows from distinct hosts 10.x.y.z:(1024 + i % 50000) to dst:dport. */
function snatFrames(n: number, dst: number, dport: number): FrameSet {
  const fs = new FrameSet(n);
  fs.now = T0;
  for (let i = 0; i < n; i++) fs.udp(ip(10, (i >>> 16) & 255, (i >>> 8) & 255, (i & 255) | 1), dst, 1024 + (i % 50000), dport);
  return fs;
}

function dnatFrames(n: number): FrameSet {
  const fs = new FrameSet(n);
  fs.now = T0;
  for (let i = 0; i < n; i++) fs.udp(ip(100, 64 + ((i >>> 16) & 63), (i >>> 8) & 255, i & 255), ip(198, 51, 100, 80), 20000 + (i % 40000), 80);
  return fs;
}


function p99(rs: RunResult): number {
  const all: number[] = [];
  for (const r of rs.results) if (r.lat) for (const v of r.lat) all.push(v);
  all.sort((a, b) => a - b);
  return all.length === 0 ? 0 : all[Math.min(all.length - 1, Math.floor(all.length * 0.99))]!;
}

/** One run: fresh table and frames, insert pass then lookup pass on w workers. */
async function runOnce(
  pool: BenchPool, w: number, n: number, make: () => FrameSet, setup: (t: ConntrackTable) => void, max: number, ext: number,
): Promise<{ ins: RunResult; look: RunResult; failedIns: number; failedLook: number; bpc: number }> {
  const table = ConntrackTable.create({ max, extensions: ext, events: false });
  table.clock = T0;
  setup(table);
  const a = make();
  const b = make(); // the same flows again, untranslated, for the lookup pass
  const job = (fs: FrameSet, k: number): Job => {
    const from = Math.floor((n * k) / w);
    const to = Math.floor((n * (k + 1)) / w);
    return { kind: 'track', tracker: 'ours', table: table.buffer, frames: fs.handle(), from, to, repeat: 1, batch: 32, latency: true };
  };
  const ops = new CtOps(table);
  const failed = (): number => ops.stats().total['nat_failed'] ?? 0;
  const ins = await pool.run(Array.from({ length: w }, (_, k) => job(a, k)));
  const failedIns = failed();
  const look = await pool.run(Array.from({ length: w }, (_, k) => job(b, k)));
  const failedLook = failed() - failedIns;
  ops.close();
  return { ins, look, failedIns, failedLook, bpc: table.bytesPerConnection() };
}

export async function natBench(
  pool: BenchPool, workers: number[], quick: boolean, runs: number, log: (s: string) => void,
): Promise<{ rows: NatRow[]; placement: NatPlacementRow[] }> {
  const rows: NatRow[] = [];
  const nSnat = quick ? 24_000 : 70_000;
  const nDnat = quick ? 50_000 : 200_000;
  // SNAT range 1024-65535 (64,512 ports) for the full run; 1024-20999 (19,976) for --quick:
  // either way the last flows find the range exhausted.
  const snatRule = `ip saddr 10.0.0.0/8 snat to 203.0.113.1:1024-${quick ? 20999 : 65535}`;
  const workloads: { name: string; n: number; make: () => FrameSet; rule: string }[] = [
    { name: 'nat-snat', n: nSnat, make: () => snatFrames(nSnat, ip(192, 0, 2, 53), 53), rule: snatRule },
    { name: 'nat-dnat', n: nDnat, make: () => dnatFrames(nDnat), rule: 'ip daddr 198.51.100.80 udp dport 80 dnat to 10.1.0.1-10.1.0.16:8080' },
  ];
  for (const wl of workloads) {
    for (const w of workers.filter((x) => x <= 2)) {
      const res: { ins: number; look: number; failedIns: number; failedLook: number; p99i: number; p99l: number }[] = [];
      for (let r = -1; r < runs; r++) {
        const x = await runOnce(pool, w, wl.n, wl.make, (t) => t.setNatRules([wl.rule]), wl.n + 1024, 64);
        if (r >= 0) res.push({ ins: x.ins.rate, look: x.look.rate, failedIns: x.failedIns, failedLook: x.failedLook, p99i: p99(x.ins), p99l: p99(x.look) });
      }
      for (const pass of ['insert', 'lookup'] as const) {
        const xs = res.map((x) => (pass === 'insert' ? x.ins : x.look));
        const row: NatRow = {
          name: wl.name, workers: w, pass, rate: median(xs), min: Math.min(...xs), max: Math.max(...xs), unit: 'pkt/s',
          natFailed: median(res.map((x) => (pass === 'insert' ? x.failedIns : x.failedLook))), p99us: median(res.map((x) => (pass === 'insert' ? x.p99i : x.p99l))), flows: wl.n,
        };
        rows.push(row);
        log(`  ${wl.name.padEnd(9)} ${pass.padEnd(6)} ${w}w  ${Math.round(row.rate)} pkt/s  nat_failed ${row.natFailed} of ${wl.n}  p99 ${row.p99us.toFixed(1)} µs/batch`);
      }
    }
  }
  // Experiment (iii): placement.
  const placement: NatPlacementRow[] = [];
  const nP = quick ? 30_000 : 100_000;
  const traffics: { traffic: 'snat' | 'null-binding'; rule: string }[] = [
    { traffic: 'snat', rule: 'ip saddr 10.0.0.0/8 snat to 203.0.113.1' },
    { traffic: 'null-binding', rule: 'ip saddr 172.16.0.0/12 snat to 203.0.113.1' }, // NAT on, nothing matches
  ];
  // Distinct destinations: no port competition, so only the placement differs.
  const make = (): FrameSet => {
    const fs = new FrameSet(nP);
    fs.now = T0;
    for (let i = 0; i < nP; i++) fs.udp(ip(10, (i >>> 16) & 255, (i >>> 8) & 255, (i & 255) | 1), ip(192, 0, (i >>> 8) & 255, i & 255), 4000, 53);
    return fs;
  };
  // Reference: the same flows with no NAT at all (no rules: no NAT work, no bysource).
  {
    const ins: number[] = [], look: number[] = [];
    for (let r = -1; r < runs; r++) {
      const x = await runOnce(pool, 1, nP, make, () => {}, nP + 1024, 64);
      if (r >= 0) { ins.push(x.ins.rate); look.push(x.look.rate); }
    }
    for (const pass of ['insert', 'lookup'] as const) {
      const xs = pass === 'insert' ? ins : look;
      rows.push({ name: 'no-nat', workers: 1, pass, rate: median(xs), min: Math.min(...xs), max: Math.max(...xs), unit: 'pkt/s', natFailed: 0, p99us: 0, flows: nP });
    }
    log(`  reference, no NAT rules: insert ${Math.round(median(ins))}/s  lookup ${Math.round(median(look))}/s`);
  }
  for (const tr of traffics) {
    const acc: Record<string, { ins: number[]; look: number[]; bpc: number }> = {};
    for (let r = -1; r < runs; r++) {
      for (const where of ['inline', 'extension'] as const) {
        // Side by side: the variants alternate run by run.
        const x = await runOnce(pool, 1, nP, make, (t) => { setNatPlacement(t, where); t.setNatRules([tr.rule]); }, nP + 1024,
          where === 'extension' ? nP + 1024 : 64);
        // Extension variant: every connection carries a block; its slab is sized for all of them.
        const bpc = x.bpc + (where === "extension" ? EXT_BYTES : 0);
        const a = (acc[where] ??= { ins: [], look: [], bpc });
        if (r >= 0) { a.ins.push(x.ins.rate); a.look.push(x.look.rate); }
      }
    }
    for (const where of ['inline', 'extension'] as const) {
      const a = acc[where]!;
      const row: NatPlacementRow = { traffic: tr.traffic, placement: where, bytesPerConnection: a.bpc, insertRate: median(a.ins), lookupRate: median(a.look) };
      placement.push(row);
      log(`  placement ${tr.traffic.padEnd(12)} ${where.padEnd(9)} ${row.bytesPerConnection.toFixed(1)} B/conn  insert ${Math.round(row.insertRate)}/s  lookup ${Math.round(row.lookupRate)}/s`);
    }
  }
  return { rows, placement };
}
