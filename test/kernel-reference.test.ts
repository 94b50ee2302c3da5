/**
 * Boundaries the kernel fixtures do not reach, each checked against a value computed by hand
 * from the kernel's rule (named in each test), never against our own output. Each test kills a
 * mutation that survived the rest of the suite (docs/mutation.md).
 */
import test from 'ava';
import { Conntrack } from '../src/track/core.js';
import { startGc, type GcOptions } from '../src/table/gc.js';
import { E_STATUS, E_TIMEOUT, H_COUNT, IPS_ASSURED, IPS_CONFIRMED, IPS_DYING, TD_MAXEND, TD_MAXWIN } from '../src/table/layout.js';
import { ConntrackTable } from '../src/table/table.js';
import { LINKTYPE_RAW, TH_ACK, TH_SYN } from '../src/input/packet/packet.js';
import { R_OVERSHOT, R_SEQ_OVER, TCP_CONNTRACK_FIN_WAIT, tcpState } from '../src/track/proto/tcp.js';
import { CT_INVALID, CT_NEW } from '../src/track/verdict.js';
import { seg, TcpHarness } from './helpers/tcpctx.js';
import { tcpClosing, tcpEstablished } from './helpers/conns.js';
import { icmp4, ipv4, udp4 } from './helpers/frames.js';

function stat(table: ConntrackTable, name: string): number {
  return table.stats().total[name]!;
}

test('TCP window overrun: exactly the receiver\'s max window over is ignored, one byte more is invalid', (t) => {
  // tcp_in_window: a segment past td_maxend is let through (ignored, its end remembered) when
  // overshot = end - sender.td_maxend + 1 <= receiver.td_maxwin; otherwise "SEQ is over".
  // Client ISN 1000, window 1000; server ISN 5000, window 2000: after the handshake the client's
  // td_maxend is 1001 + 2000 = 3001 and the server's td_maxwin is 2000.
  const boundary = (len: number): { verdict: string; reason: string | null } => {
    const h = new TcpHarness();
    h.step(0, seg(TH_SYN, 1000, 0, { win: 1000 }));
    h.step(1, seg(TH_SYN | TH_ACK, 5000, 1001, { win: 2000 }));
    h.step(0, seg(TH_ACK, 1001, 5001, { win: 1000 }));
    t.is(h.td(0, TD_MAXEND), 3001);
    t.is(h.td(1, TD_MAXWIN), 2000);
    // seq 3002 (just past td_maxend): end = 3002 + len; overshot = end - 3001 + 1 = len + 2.
    const r = h.step(0, seg(TH_ACK, 3002, 5001, { len, win: 1000 }));
    return { verdict: r.verdict, reason: r.reason };
  };
  t.deepEqual(boundary(1998), { verdict: 'established', reason: R_OVERSHOT }); // overshot 2000
  t.deepEqual(boundary(1999), { verdict: 'invalid', reason: R_SEQ_OVER }); // overshot 2001
});

test('ICMP types above 18 (NR_ICMP_TYPES) are invalid as such and counted as errors', (t) => {
  // icmp_error: type > NR_ICMP_TYPES (18) is "invalid icmp type", an error; 18 (address mask
  // reply) passes that check and is refused later because it cannot open a connection.
  const table = ConntrackTable.create({ max: 256 });
  const ct = new Conntrack(table);
  for (const type of [19, 20, 30, 40, 41, 127, 255]) {
    const errors = stat(table, 'error');
    const v = ct.decide(icmp4({ src: '10.0.0.1', dst: '10.0.0.2', type }), LINKTYPE_RAW, 1000);
    t.is(v.state, CT_INVALID, `type ${type}`);
    t.is(v.reason, 'invalid ICMP type', `type ${type}`);
    t.is(stat(table, 'error'), errors + 1, `type ${type} counted as an error`);
  }
  const errors = stat(table, 'error');
  const v = ct.decide(icmp4({ src: '10.0.0.1', dst: '10.0.0.2', type: 18 }), LINKTYPE_RAW, 1000);
  t.is(v.state, CT_INVALID);
  t.is(v.reason, 'ICMP type cannot create a connection');
  t.is(stat(table, 'error'), errors, 'type 18 is not a header error');
  t.is(ct.decide(icmp4({ src: '10.0.0.1', dst: '10.0.0.2', type: 17 }), LINKTYPE_RAW, 1000).state, CT_NEW);
  ct.close();
});

test('UDP: ASSURED and the stream timeout only for traffic more than 2 s after the first packet', (t) => {
  // nf_conntrack_udp_packet: a replied flow is a stream once a packet arrives after
  // stream_ts = first packet + 2 s; before that the reply keeps the 30 s unreplied timeout.
  const table = ConntrackTable.create({ max: 256 });
  const ct = new Conntrack(table);
  const q = udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 4000, dport: 53, payload: 'q' });
  const a = udp4({ src: '10.0.0.2', dst: '10.0.0.1', sport: 53, dport: 4000, payload: 'a' });
  const T = 100_000;
  const status = (v: { slot: number }): number => Atomics.load(table.i32, ct.chains.entry(v.slot) + E_STATUS);
  const left = (v: { slot: number }, now: number): number => (table.i32[ct.chains.entry(v.slot) + E_TIMEOUT]! - now) / 1000;
  ct.decide(q, LINKTYPE_RAW, T);
  let v = ct.decide(a, LINKTYPE_RAW, T + 1000);
  t.is(status(v) & IPS_ASSURED, 0);
  v = ct.decide(q, LINKTYPE_RAW, T + 2000); // exactly 2 s: not after stream_ts yet
  t.is(status(v) & IPS_ASSURED, 0, 'at 2.000 s: not a stream');
  t.is(left(v, T + 2000), 30);
  v = ct.decide(q, LINKTYPE_RAW, T + 2001);
  t.truthy(status(v) & IPS_ASSURED, 'at 2.001 s: a stream');
  t.is(left(v, T + 2001), 120);
  ct.close();
});

test('above 95% of nf_conntrack_max the GC evicts closing TCP connections even when ASSURED', async (t) => {
  // gc_worker_can_early_drop: not ASSURED, or a TCP connection that is closing. Here every
  // entry is ASSURED; only the 10 FIN_WAIT ones are closing: 100 entries, mark 95 -> 5 of them go.
  const table = ConntrackTable.create({ max: 100 });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const keep: number[] = [];
  for (let i = 0; i < 90; i++) keep.push(tcpEstablished(ct, i, 0));
  const closing: number[] = [];
  for (let i = 90; i < 100; i++) closing.push(tcpClosing(ct, i, 0));
  ct.endBatch();
  const live = (s: number): boolean => (Atomics.load(table.i32, ct.chains.entry(s) + E_STATUS) & (IPS_CONFIRMED | IPS_DYING)) === IPS_CONFIRMED;
  for (const s of closing) {
    t.truthy(Atomics.load(table.i32, ct.chains.entry(s) + E_STATUS) & IPS_ASSURED);
    t.is(tcpState({ i32: table.i32, u32: table.u32, sys: table.sec.sysctl }, ct.chains.entry(s)), TCP_CONNTRACK_FIN_WAIT);
  }
  t.is(Atomics.load(table.i32, H_COUNT), 100);
  table.clock = 1000;
  const gc = startGc(table, { wallPerClock: 0.001 } satisfies GcOptions);
  try {
    await gc.ready;
    await gc.sweep();
    t.is(Atomics.load(table.i32, H_COUNT), 95);
    t.is(stat(table, 'gc_evict'), 5);
    t.true(keep.every(live), 'ESTABLISHED ASSURED entries are kept');
    t.is(closing.filter((s) => !live(s)).length, 5);
  } finally {
    await gc.stop();
    ct.close();
  }
});

test('an empty first fragment of a protocol without ports is invalid and creates nothing', (t) => {
  // Offset 0 with more-fragments set and no layer-4 byte. With reassembly (the default, as
  // nf_defrag_ipv4) ip_fragment.c drops an empty fragment; without it (nf_conntrack_defrag=0)
  // there is nothing to track. The same packet unfragmented is a new generic connection.
  for (const [defrag, reason] of [[1, 'empty fragment (dropped)'], [0, 'non-first fragment (no reassembly)']] as const) {
    const table = ConntrackTable.create({ max: 256, sysctls: { nf_conntrack_defrag: defrag } });
    const ct = new Conntrack(table);
    for (const proto of [47, 253]) {
      const frag = ipv4(proto, new Uint8Array(0), { src: '10.0.0.1', dst: '10.0.0.2', mf: true });
      const v = ct.decide(frag, LINKTYPE_RAW, 1000);
      t.is(v.state, CT_INVALID, `protocol ${proto}, defrag ${defrag}`);
      t.is(v.reason, reason);
    }
    t.is(Atomics.load(table.i32, H_COUNT), 0);
    t.is(ct.decide(ipv4(253, new Uint8Array(0), { src: '10.0.0.1', dst: '10.0.0.2' }), LINKTYPE_RAW, 1000).state, CT_NEW);
    ct.close();
  }
});
