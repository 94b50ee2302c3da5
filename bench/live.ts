/**
 * The `live` bench section (root only): real traffic forwarded by a router namespace, through
 *   none        plain forwarding (no conntrack, no queue): the path's own limit
 *   kernel      the kernel's conntrack alone (ct state rules, no queue)
 *   ceiling     NFQUEUE with a trivial accept-all reader in this runtime (koffi, same loop, no tracking)
 *   ours        NFQUEUE with our tracker deciding (enforce mode: raw notrack, our verdicts)
 * with 1 and 2 queues/workers. Throughput: K parallel HTTP downloads from client addresses
 * .2-.6 (the kernel spreads queues by address pair), packets/s counted on the router's
 * interfaces. Latency: UDP request/response round trips; the added latency per packet is half
 * the round trip's excess over plain forwarding (a round trip crosses the queue twice).
 */
import { execFileSync } from 'node:child_process';
import { LiveNet, liveSkipReason } from '../test/helpers/live-net.js';
import { LiveQueues, type LiveMode } from '../src/input/live/live.js';
import { ConntrackTable } from '../src/table/table.js';
import { Conntrack } from '../src/track/core.js';
import { LiveDecider } from '../src/input/live/decider.js';
import { MessageWriter, NFQA_MARK, NFQA_PACKET_HDR, NFQA_PAYLOAD, NFQNL_MSG_PACKET, VerdictBatcher } from '../src/input/live/nfqueue.js';
import { tcp4 } from '../test/helpers/frames.js';

/**
 * The worker's per-packet work without the kernel: netlink packet messages of an established TCP
 * transfer (1448-byte segments and their ACKs) parsed, decided (enforce, a 3-rule policy) and
 * their verdicts built, in batches of 64, on this thread. ns per packet.
 */
export function offlineDecideNs(copy: number, packets = 200_000): number {
  // be_liberal: the stream goes round and round (seq numbers repeat each lap); the window
  // tracking still runs, out-of-window laps are not made invalid.
  const table = ConntrackTable.create({ max: 4096, sysctls: { nf_conntrack_tcp_be_liberal: 1 } });
  const ct = new Conntrack(table);
  const dec = new LiveDecider(ct, {
    mode: 'enforce',
    policy: { default: 'drop', connmark: true, rules: [{ action: 'drop', src: '10.9.0.0/16' }, { action: 'accept', proto: 'udp', dport: 53 }, { action: 'accept', proto: 'tcp', dport: 8080, mark: 16 }] },
  });
  const A = '10.200.1.2', B = '10.200.2.2';
  const frames: Uint8Array[] = [
    tcp4({ src: A, dst: B, sport: 40000, dport: 8080, flags: 'S', seq: 1000, win: 64240, options: { mss: 1460, wscale: 7, sackPerm: true } }),
    tcp4({ src: B, dst: A, sport: 8080, dport: 40000, flags: 'SA', seq: 5000, ack: 1001, win: 65160, options: { mss: 1460, wscale: 7, sackPerm: true } }),
    tcp4({ src: A, dst: B, sport: 40000, dport: 8080, flags: 'A', seq: 1001, ack: 5001, win: 502 }),
  ];
  const payload = new Uint8Array(1448).fill(0x61);
  let seq = 5001;
  for (let i = 0; i < 2000; i++) {
    frames.push(tcp4({ src: B, dst: A, sport: 8080, dport: 40000, flags: 'PA', seq, ack: 1001, win: 509, payload }));
    seq += 1448;
    if (i % 2 === 1) frames.push(tcp4({ src: A, dst: B, sport: 40000, dport: 8080, flags: 'A', seq: 1001, ack: seq, win: 2048 }));
  }
  // Messages as the kernel sends them, payload cut to `copy` bytes.
  const msgs: Uint8Array[] = frames.map((f, i) => {
    const w = new MessageWriter(f.length + 128);
    w.begin(NFQNL_MSG_PACKET, 0, 0);
    w.attrBytes(NFQA_PACKET_HDR, [0, 0, (i >> 8) & 255, i & 255, 8, 0, 2]);
    w.attrU32(NFQA_MARK, 0);
    w.attrBytes(NFQA_PAYLOAD, [...f.subarray(0, Math.min(copy, f.length))]);
    w.end();
    return w.buf.slice(0, w.len);
  });
  const vb = new VerdictBatcher(0, 1 << 16);
  const sink = { send: (_b: Uint8Array, n: number) => n };
  const bufs = msgs.map((m) => ({ b: m, dv: new DataView(m.buffer) }));
  let now = 1_000_000;
  const run = (n: number): void => {
    let k = 3; // after the handshake: the stream, round and round (seq wraps are re-sent as retransmissions)
    for (let done = 0; done < n;) {
      ct.beginBatch();
      for (let j = 0; j < 64; j++, done++) {
        const m = bufs[k]!;
        dec.message(m.b, m.dv, 0, m.b.length, now, vb);
        if (++k === bufs.length) k = 3;
      }
      ct.endBatch();
      vb.flush(sink as never);
      now++;
    }
  };
  ct.beginBatch();
  for (let k = 0; k < 3; k++) dec.message(bufs[k]!.b, bufs[k]!.dv, 0, bufs[k]!.b.length, now, vb);
  ct.endBatch();
  vb.flush(sink as never);
  run(20_000); // warm-up
  const t = performance.now();
  run(packets);
  const ns = (performance.now() - t) * 1e6 / packets;
  ct.close();
  if (dec.cEstablished < packets) throw new Error(`offline bench: ${dec.cInvalid} packets invalid, ${dec.cEstablished} established`);
  return Math.round(ns);
}

export interface LiveBenchRow {
  config: string;
  workers: number;
  mbitPerSec: number;
  packetsPerSec: number;
  rttP50us: number;
  rttP99us: number;
  /** Per packet, over plain forwarding: (rtt - rtt of "none") / 2. */
  addedP50us: number | null;
  addedP99us: number | null;
  /** Packets each queue decided (queue configs). */
  perQueue?: number[];
  /** Inside the worker, per packet: deciding (parse, track, policy, verdict), and a whole turn (receive → verdicts sent), ns. */
  decideNsPerPacket?: number;
  turnNsPerPacket?: number;
  /** Packets received per turn (one verdict send each), on average. */
  packetsPerTurn?: number;
  /** RTT of plain forwarding measured right after this configuration's (the baseline of added*). */
  baseP50us: number;
  baseP99us: number;
  complete: boolean;
}

export interface LiveBenchReport {
  skipped: string | null;
  rows: LiveBenchRow[];
  /** The worker's per-packet work without the kernel (offlineDecideNs), ns: whole packets and 128-byte copies. */
  offline: { fullNs: number; copy128Ns: number };
  /** ours ÷ ceiling, packets/s, per worker count. */
  ratios: Array<{ workers: number; oursOverCeiling: number | null; copyRange: number }>;
  settings: { mb: number; conns: number; rttCount: number; copyRange: number; runs: number };
}

function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

function routerPackets(net: LiveNet): number {
  const j = JSON.parse(execFileSync('ip', ['-n', net.router, '-j', '-s', 'link', 'show'], { encoding: 'utf8' })) as Array<{ ifname: string; stats64?: { rx: { packets: number } } }>;
  return j.filter((l) => l.ifname !== 'lo').reduce((s, l) => s + (l.stats64?.rx.packets ?? 0), 0);
}

export async function runLiveBench(opts: { quick: boolean; log: (s: string) => void }): Promise<LiveBenchReport> {
  const mb = opts.quick ? 8 : 32;
  const conns = 4;
  const rttCount = opts.quick ? 1000 : 4000;
  const runs = opts.quick ? 1 : 3;
  const copyRange = 0xffff;
  const settings = { mb, conns, rttCount, copyRange, runs };
  const offline = { fullNs: offlineDecideNs(0xffff), copy128Ns: offlineDecideNs(128) };
  opts.log(`live: the worker's per-packet work without the kernel: ${offline.fullNs} ns (whole packets), ${offline.copy128Ns} ns (128-byte copies)`);
  const skipped = await liveSkipReason();
  if (skipped) {
    opts.log(`live: skipped (${skipped})`);
    return { skipped, offline, rows: [], ratios: [], settings };
  }
  const net = new LiveNet(process.env['CTSAB_NS_PREFIX'] ?? 'ctHb');
  const rows: LiveBenchRow[] = [];
  net.up();
  try {
    await net.serve();
    const configs: Array<{ config: string; rules: string; mode: LiveMode | null; workers: number; copy?: number }> = [
      { config: 'none', rules: 'none', mode: null, workers: 0 },
      { config: 'kernel', rules: 'conntrack', mode: null, workers: 0 },
      { config: 'ceiling', rules: 'accept', mode: 'accept', workers: 1 },
      { config: 'ours', rules: 'enforce', mode: 'enforce', workers: 1 },
      { config: 'ours (copy 128)', rules: 'enforce', mode: 'enforce', workers: 1, copy: 128 },
      { config: 'ceiling', rules: 'accept', mode: 'accept', workers: 2 },
      { config: 'ours', rules: 'enforce', mode: 'enforce', workers: 2 },
    ];
    for (const c of configs) {
      net.rules(c.rules, c.workers > 0 ? `0:${c.workers - 1}` : '0:0');
      let lq: LiveQueues | null = null;
      const table = ConntrackTable.create({ max: 65536, maxWorkers: 16 });
      if (c.mode) {
        lq = await LiveQueues.start({
          table, queues: Array.from({ length: c.workers }, (_, i) => i), mode: c.mode, netns: net.router,
          copyRange: c.copy ?? copyRange, gc: c.mode !== 'accept',
        });
      }
      try {
        await net.traffic(['bulk', '--mb', '2', '--conns', String(conns)]); // warm-up
        // The median run (by rate) of `runs`: this machine is shared, single runs swing widely.
        const tries: Array<{ b: Record<string, unknown>; pkts: number; secs: number }> = [];
        for (let k = 0; k < runs; k++) {
          const p0 = routerPackets(net);
          const b = await net.traffic(['bulk', '--mb', String(mb), '--conns', String(conns)], 120000);
          tries.push({ b, pkts: routerPackets(net) - p0, secs: b['seconds'] as number });
        }
        tries.sort((x, y) => x.pkts / x.secs - y.pkts / y.secs);
        const { b, pkts, secs } = tries[Math.floor(tries.length / 2)]!;
        const r = await net.traffic(['rtt', '--count', String(rttCount)], 120000);
        const rtt = r['rtt_us'] as number[];
        const p50 = quantile(rtt, 0.5);
        const p99 = quantile(rtt, 0.99);
        // Baseline right after, on plain forwarding (the machine's load drifts between configs).
        net.rules('none', '0:0');
        const rb = (await net.traffic(['rtt', '--count', String(rttCount)], 120000))['rtt_us'] as number[];
        const base = { p50: quantile(rb, 0.5), p99: quantile(rb, 0.99) };
        const tot = lq?.totals();
        const row: LiveBenchRow = {
          config: c.config, workers: c.workers,
          mbitPerSec: Math.round((b['bytes'] as number) * 8 / secs / 1e5) / 10,
          packetsPerSec: Math.round(pkts / secs),
          rttP50us: Math.round(p50), rttP99us: Math.round(p99),
          addedP50us: Math.round((p50 - base.p50) / 2 * 10) / 10,
          addedP99us: Math.round((p99 - base.p99) / 2 * 10) / 10,
          baseP50us: Math.round(base.p50), baseP99us: Math.round(base.p99),
          ...(tot && tot['packets']! > 0 ? {
            decideNsPerPacket: Math.round(tot['decideUs']! * 1000 / tot['packets']!),
            turnNsPerPacket: Math.round(tot['turnUs']! * 1000 / tot['packets']!),
            packetsPerTurn: Math.round(tot['packets']! / Math.max(1, tot['batches']!) * 10) / 10,
          } : {}),
          complete: tries.every((x) => x.b['bytes'] === x.b['expected']) && rtt.length === rttCount,
          ...(lq ? { perQueue: lq.counters().map((x) => x['packets']!) } : {}),
        };
        rows.push(row);
        opts.log(`live: ${c.config}${c.workers ? ` ×${c.workers}` : ''}: ${row.mbitPerSec} Mbit/s, ${row.packetsPerSec} packets/s, ` +
          `rtt p50 ${row.rttP50us} µs p99 ${row.rttP99us} µs (plain ${row.baseP50us}/${row.baseP99us})` +
          `${row.perQueue ? `, per queue ${row.perQueue.join('/')}` : ''}` +
          `${row.decideNsPerPacket !== undefined ? `, in the worker ${row.decideNsPerPacket} ns deciding, ${row.turnNsPerPacket} ns a turn per packet, ${row.packetsPerTurn} packets a turn` : ''}${row.complete ? '' : ' (INCOMPLETE)'}`);
      } finally {
        await lq?.stop();
      }
    }
  } finally {
    net.down();
  }
  const ratios = [1, 2].map((w) => {
    const ours = rows.find((r) => r.config === 'ours' && r.workers === w);
    const ceil = rows.find((r) => r.config === 'ceiling' && r.workers === w);
    return { workers: w, oursOverCeiling: ours && ceil ? Math.round(ours.packetsPerSec / ceil.packetsPerSec * 100) / 100 : null, copyRange };
  });
  return { skipped: null, offline, rows, ratios, settings };
}

export function formatLiveBench(r: LiveBenchReport): string {
  const off = `the worker's per-packet work without the kernel (parse, track, policy, verdict): ${r.offline.fullNs} ns with whole packets, ${r.offline.copy128Ns} ns with 128-byte copies`;
  if (r.skipped) return `live: skipped (${r.skipped}); ${off}`;
  const lines = [`live (NFQUEUE, ${r.settings.conns} parallel downloads of ${r.settings.mb} MiB, median of ${r.settings.runs}; ${r.settings.rttCount} UDP round trips):`,
    '| config | workers | Mbit/s | packets/s | RTT p50 / p99 µs | plain forwarding p50 / p99 µs | added per packet p50 / p99 µs | worker ns/packet: deciding / whole turn |',
    '|---|---|---|---|---|---|---|---|'];
  for (const x of r.rows) {
    lines.push(`| ${x.config} | ${x.workers || '-'} | ${x.mbitPerSec} | ${x.packetsPerSec} | ${x.rttP50us} / ${x.rttP99us} | ${x.baseP50us} / ${x.baseP99us} | ` +
      `${x.addedP50us ?? '-'} / ${x.addedP99us ?? '-'} | ${x.decideNsPerPacket !== undefined ? `${x.decideNsPerPacket} / ${x.turnNsPerPacket}` : '-'} |`);
  }
  lines.push(off);
  for (const q of r.ratios) lines.push(`ours ÷ accept-all ceiling, ${q.workers} worker${q.workers > 1 ? 's' : ''}: ${q.oursOverCeiling ?? '-'} (packets/s)`);
  return lines.join('\n');
}
