// gc.ts's pure parts, which the mutation run found untested: option ranges (gcConfig) and the
// idle-time lower bound the soft-timeout recycling relies on (idleLowerBound). Expected values
// are worked out by hand from the kernel's default timeouts (nf_conntrack_udp_timeout 30 s,
// _udp_timeout_stream 120 s, _icmp(v6)_timeout 30 s, _generic_timeout 600 s).
import test from 'ava';
import { gcConfig, idleLowerBound } from '../src/table/gc.js';
import { ConntrackTable } from '../src/table/table.js';
import { ENTRY_WORDS, E_PRIV, E_PROTO, GRE_STREAM_TIMEOUT, GRE_TIMEOUT, SCTP_STATE } from '../src/table/layout.js';
import { Conntrack } from '../src/track/core.js';
import { tcpEstablished } from './helpers/conns.js';

test('gcConfig: defaults, every bound accepted, every value just outside refused', (t) => {
  t.deepEqual(gcConfig(), {
    budgetMs: 10, minIntervalMs: 1000, maxIntervalMs: 60000, wallPerClock: 1, sliceGapMs: 0, clockSkewMs: 10000, pressurePercent: 95,
  });
  const ranges: [keyof ReturnType<typeof gcConfig>, number, number][] = [
    ['budgetMs', 0.01, 60000], ['minIntervalMs', 1, 0x3fffffff], ['wallPerClock', 0, 1000],
    ['sliceGapMs', 0, 60000], ['clockSkewMs', 0, 0x3fffffff], ['pressurePercent', 1, 100],
  ];
  for (const [name, lo, hi] of ranges) {
    const extra = name === 'minIntervalMs' ? { maxIntervalMs: 0x3fffffff } : {};
    t.is(gcConfig({ ...extra, [name]: lo })[name], lo, `${name} = ${lo}`);
    t.is(gcConfig({ ...extra, [name]: hi })[name], hi, `${name} = ${hi}`);
    const below = lo === 0 ? -0.001 : lo * 0.999;
    for (const bad of [below, hi + 1, Number.NaN, Number.POSITIVE_INFINITY, '5' as unknown as number]) {
      t.throws(() => gcConfig({ ...extra, [name]: bad }), { message: new RegExp(`^gc option ${name}: .* is out of range ${lo}\\.\\.${hi}$`) }, `${name} = ${String(bad)}`);
    }
  }
  // The longest interval may not be shorter than the shortest.
  t.is(gcConfig({ minIntervalMs: 500, maxIntervalMs: 500 }).maxIntervalMs, 500);
  t.throws(() => gcConfig({ minIntervalMs: 500, maxIntervalMs: 499 }), { message: /maxIntervalMs: 499 is out of range 500\.\./ });
});

test('idleLowerBound: the smallest default timeout that covers the remaining time, minus it', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const ctx = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl };
  const e = table.sec.entries + 63 * ENTRY_WORDS; // a free slot's words, used as a scratch entry
  const at = (l4: number, remaining: number, skew = 0): number => {
    table.i32[e + E_PROTO] = 2 | (l4 << 8);
    return idleLowerBound(ctx, e, remaining, skew);
  };
  // UDP: 30 s or 120 s (stream). 20 s left: refreshed with 30 s, so idle >= 10 s.
  t.is(at(17, 20_000), 10_000);
  t.is(at(17, 30_000), 0); // exactly 30 s left: just refreshed
  t.is(at(17, 30_001), 120_000 - 30_001); // more than 30 s left: the stream timeout applied
  t.is(at(17, 120_000), 0);
  t.is(at(17, 120_001), 0); // more than any UDP timeout (a sysctl lowered since): unknown
  // The clock skew allowance lets a deadline run that far ahead of the timeout.
  t.is(at(17, 125_000, 10_000), 0);
  t.is(at(17, 35_000, 10_000), 0); // 30 s covers 35 - 10: idle 30 - 35 < 0, so 0
  t.is(at(17, 45_000, 10_000), 120_000 - 45_000);
  // ICMP and ICMPv6: 30 s; a protocol with no tracker of its own (253): the generic 600 s.
  t.is(at(1, 12_000), 18_000);
  t.is(at(58, 12_000), 18_000);
  t.is(at(58, 30_001), 0);
  t.is(at(253, 12_000), 588_000);
  t.is(at(253, 600_000), 0);
  t.is(at(253, 600_001), 0);
});

test('idleLowerBound for TCP: the state timeout, the retransmission and unacknowledged caps, the close timeout', (t) => {
  // Unacknowledged lowered to 200 s so the two caps differ: established 432,000 s, max_retrans
  // 300 s, unacknowledged 200 s, close 10 s.
  const table = ConntrackTable.create({ max: 64, sysctls: { nf_conntrack_tcp_timeout_unacknowledged: 200 } });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const slot = tcpEstablished(ct, 1, 1_000_000);
  ct.endBatch();
  const e = ct.chains.entry(slot);
  const ctx = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl };
  const at = (remaining: number): number => idleLowerBound(ctx, e, remaining, 0);
  t.is(at(5_000), 5_000); // an RST's close timeout (10 s) covers it
  t.is(at(10_000), 0);
  t.is(at(10_001), 200_000 - 10_001); // then unacknowledged data (200 s)
  t.is(at(150_000), 50_000);
  t.is(at(200_000), 0);
  t.is(at(250_000), 50_000); // then retransmissions (300 s)
  t.is(at(300_000), 0);
  t.is(at(300_001), 432_000_000 - 300_001); // then the established timeout itself
  t.is(at(432_000_001), 0);
  ct.close();
});

test('idleLowerBound for UDP-Lite, GRE and SCTP: their own timeouts, not the generic 600 s', (t) => {
  // Kernel defaults: UDP-Lite shares UDP's 30 s / 120 s; GRE 30 s unreplied, 180 s stream (copied
  // into the entry at creation); SCTP per state (ESTABLISHED 210 s, CLOSED 10 s). Taking 600 s
  // for these made an ASSURED entry refreshed seconds ago look idle past a soft timeout < 600 s.
  const table = ConntrackTable.create({ max: 64 });
  const ctx = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl };
  const e = table.sec.entries + 63 * ENTRY_WORDS; // a free slot's words, used as a scratch entry
  const at = (l4: number, remaining: number): number => {
    table.i32[e + E_PROTO] = 2 | (l4 << 8);
    return idleLowerBound(ctx, e, remaining, 0);
  };
  t.is(at(136, 20_000), 10_000);
  t.is(at(136, 100_000), 20_000);
  table.i32[e + E_PRIV + GRE_TIMEOUT] = 30;
  table.i32[e + E_PRIV + GRE_STREAM_TIMEOUT] = 180;
  t.is(at(47, 20_000), 10_000);
  t.is(at(47, 175_000), 5_000);
  t.is(at(47, 180_001), 0);
  table.i32[e + E_PRIV + SCTP_STATE] = 4; // ESTABLISHED
  t.is(at(132, 200_000), 10_000);
  table.i32[e + E_PRIV + SCTP_STATE] = 1; // CLOSED
  t.is(at(132, 4_000), 6_000);
  t.is(at(132, 10_001), 0);
});

test('idleLowerBound: a timeout set to 0 is no candidate; the smallest covering one wins whatever its place', (t) => {
  // A sysctl of 0 means that timeout was never applied to a living entry (it would have expired
  // at once): the bound comes from the others. Remaining 5 s inside a 10 s skew allowance: every
  // non-zero candidate covers it, and the smallest gives the bound.
  const sysctlsOf = (s: Record<string, number>): { i32: Int32Array; u32: Uint32Array; sys: number; e: number } => {
    const table = ConntrackTable.create({ max: 64, sysctls: s });
    const ct = new Conntrack(table);
    ct.beginBatch();
    const slot = tcpEstablished(ct, 1, 0);
    ct.endBatch();
    return { i32: table.i32, u32: table.u32, sys: table.sec.sysctl, e: ct.chains.entry(slot) };
  };
  const udpAt = (s: Record<string, number>, remaining: number, skew: number): number => {
    const table = ConntrackTable.create({ max: 64, sysctls: s });
    const e = table.sec.entries + 63 * ENTRY_WORDS; // a free slot's words, used as a scratch entry
    table.i32[e + E_PROTO] = 2 | (17 << 8);
    return idleLowerBound({ i32: table.i32, u32: table.u32, sys: table.sec.sysctl }, e, remaining, skew);
  };
  t.is(udpAt({ nf_conntrack_udp_timeout: 0 }, 5000, 10_000), 120_000 - 5000, 'UDP 0 s: the stream timeout');
  t.is(udpAt({ nf_conntrack_udp_timeout_stream: 0 }, 5000, 10_000), 30_000 - 5000, 'stream 0 s: the 30 s one');
  const tcpAt = (s: Record<string, number>, remaining: number, skew: number): number => {
    const x = sysctlsOf(s);
    return idleLowerBound({ i32: x.i32, u32: x.u32, sys: x.sys }, x.e, remaining, skew);
  };
  // ESTABLISHED 432,000 s, max_retrans 300 s, unacknowledged 300 s, close 10 s by default.
  t.is(tcpAt({ nf_conntrack_tcp_timeout_unacknowledged: 0 }, 5000, 10_000), 10_000 - 5000, 'unacknowledged 0 s: close 10 s');
  t.is(tcpAt({ nf_conntrack_tcp_timeout_close: 0 }, 5000, 10_000), 300_000 - 5000, 'close 0 s: 300 s');
  // Raised above max_retrans (300 s), unacknowledged (400 s) and close (1,000 s) are not the
  // smallest: 250 s left is covered by 300 s first.
  t.is(tcpAt({ nf_conntrack_tcp_timeout_unacknowledged: 400 }, 250_000, 0), 50_000);
  t.is(tcpAt({ nf_conntrack_tcp_timeout_close: 1000 }, 250_000, 0), 50_000);
});

test('idleLowerBound for TCP when only the close timeout covers the remaining time', (t) => {
  // ESTABLISHED lowered to 5 s: the state timeout, the retransmission and unacknowledged caps
  // are all 5 s; 8 s left can only come from an RST's close timeout (10 s): idle >= 2 s.
  const table = ConntrackTable.create({ max: 64, sysctls: { nf_conntrack_tcp_timeout_established: 5 } });
  const ct = new Conntrack(table);
  ct.beginBatch();
  const slot = tcpEstablished(ct, 1, 0);
  ct.endBatch();
  const ctx = { i32: table.i32, u32: table.u32, sys: table.sec.sysctl };
  t.is(idleLowerBound(ctx, ct.chains.entry(slot), 8000, 0), 2000);
  t.is(idleLowerBound(ctx, ct.chains.entry(slot), 4000, 0), 1000, '5 s covers 4 s');
  ct.close();
});
