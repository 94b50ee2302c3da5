import test from 'ava';

import {
  E_PRIV,
  E_TIMEOUT,
  IPS_ASSURED,
  IPS_SEEN_REPLY,
  TCP_LAST_ACK,
  TCP_LAST_END,
  TCP_LAST_SEQ,
  TCP_LAST_WIN,
  TCP_SCALE_FLAGS,
  TD_END,
  TD_MAXACK,
  TD_MAXEND,
  TD_MAXWIN,
} from '../src/table/layout.js';
import { EV_ASSURED, EV_PROTOINFO } from '../src/track/proto/l4proto.js';
import { NFPROTO_IPV4, Packet, IPPROTO_TCP, TH_ACK, TH_CWR, TH_ECE, TH_FIN, TH_PSH, TH_RST, TH_SYN, TH_URG } from '../src/input/packet/packet.js';
import {
  S_CHECKSUM,
  S_TCP_BE_LIBERAL,
  S_TCP_IGNORE_INVALID_RST,
  S_TCP_LOOSE,
  S_TCP_TIMEOUT_ESTABLISHED,
  S_TCP_TIMEOUT_MAX_RETRANS,
  S_TCP_TIMEOUT_SYN_SENT,
  S_TCP_TIMEOUT_UNACKNOWLEDGED,
} from '../src/table/sysctl.js';
import {
  IP_CT_TCP_FLAG_BE_LIBERAL,
  IP_CT_TCP_FLAG_CLOSE_INIT,
  IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED,
  IP_CT_TCP_FLAG_MAXACK_SET,
  IP_CT_TCP_FLAG_SACK_PERM,
  IP_CT_TCP_FLAG_WINDOW_SCALE,
  R_ACK_OVER,
  R_ACK_UNDER,
  R_CHALLENGE_ACK,
  R_CHECKSUM,
  R_FLAGS,
  R_IGNORED,
  R_INVALID_NEW,
  R_INVALID_RST,
  R_INVALID_STATE,
  R_NO_PICKUP,
  R_OVERSHOT,
  R_SEQ_OVER,
  R_SEQ_UNDER,
  R_TRUNCATED,
  TCP_CONNTRACK_CLOSE,
  TCP_CONNTRACK_CLOSE_WAIT,
  TCP_CONNTRACK_ESTABLISHED,
  TCP_CONNTRACK_FIN_WAIT,
  TCP_CONNTRACK_LAST_ACK,
  TCP_CONNTRACK_SYN_RECV,
  TCP_CONNTRACK_SYN_SENT,
  TCP_CONNTRACK_SYN_SENT2,
  TCP_CONNTRACK_TIME_WAIT,
  TCP_STATE_NAMES,
  tcpCanEarlyDrop,
  tcpError,
  tcpFormat,
  tcpIsClosing,
} from '../src/track/proto/tcp.js';
import { seg, TcpHarness } from './helpers/tcpctx.js';

const S = TH_SYN;
const A = TH_ACK;
const F = TH_FIN;
const R = TH_RST;
const P = TH_PSH;
const O = 0; // original direction
const Y = 1; // reply direction

// Client ISN 1000 (window 1000), server ISN 5000 (window 2000) unless said otherwise.
const C = 1000;
const SV = 5000;

/** SYN, SYN/ACK, ACK: leaves an ESTABLISHED, ASSURED entry. */
function handshake(h: TcpHarness): void {
  h.step(O, seg(S, C, 0, { win: 1000 }));
  h.step(Y, seg(S | A, SV, C + 1, { win: 2000 }));
  h.step(O, seg(A, C + 1, SV + 1, { win: 1000 }));
}

test('state names and numbering follow the kernel', (t) => {
  t.deepEqual(TCP_STATE_NAMES, [
    'NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT',
    'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2',
  ]);
  t.is(TCP_CONNTRACK_SYN_SENT2, 9);
});

test('three-way handshake: SYN_SENT, SYN_RECV, ESTABLISHED and ASSURED on the third packet', (t) => {
  const h = new TcpHarness();
  let r = h.step(O, seg(S, C, 0, { win: 1000 }));
  t.is(r.verdict, 'new');
  t.is(h.state, TCP_CONNTRACK_SYN_SENT);
  t.is(r.timeout, 120);
  t.is(r.events, EV_PROTOINFO);
  t.is(h.td(O, TD_END), C + 1);
  t.is(h.td(O, TD_MAXEND), C + 1);
  t.is(h.td(O, TD_MAXWIN), 1000);
  t.is(h.td(Y, TD_MAXEND), 1000); // 0 + window: the receiver's bound until it is seen

  r = h.step(Y, seg(S | A, SV, C + 1, { win: 2000 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_SYN_RECV);
  t.is(r.timeout, 60);
  t.is(r.events, EV_PROTOINFO);
  t.is(h.status & IPS_ASSURED, 0);
  t.is(h.td(Y, TD_END), SV + 1);
  t.is(h.td(Y, TD_MAXACK), C + 1);
  t.is(h.td(O, TD_MAXEND), C + 1 + 2000);

  r = h.step(O, seg(A, C + 1, SV + 1, { win: 1000 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
  t.is(r.timeout, 432000);
  t.is(r.events, EV_PROTOINFO | EV_ASSURED);
  t.not(h.status & IPS_ASSURED, 0);
  t.is(tcpFormat(h.ctx, h.e), 'ESTABLISHED');
  t.false(tcpCanEarlyDrop(h.ctx, h.e));
  t.false(tcpIsClosing(h.ctx, h.e));
});

test('data in flight shortens the timeout to unacknowledged, the ACK restores it', (t) => {
  const h = new TcpHarness();
  handshake(h);
  let r = h.step(O, seg(A | P, C + 1, SV + 1, { len: 100 }));
  t.is(r.verdict, 'established');
  t.is(r.timeout, 300);
  t.is(h.flags(O) & IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED, IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED);
  r = h.step(Y, seg(A, SV + 1, C + 101, { win: 2000 }));
  t.is(r.timeout, 432000);
  t.is(h.flags(O) & IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED, 0);
});

test('client closes first: FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT', (t) => {
  const h = new TcpHarness();
  handshake(h);
  let r = h.step(O, seg(F | A, C + 1, SV + 1));
  t.is(h.state, TCP_CONNTRACK_FIN_WAIT);
  t.is(r.timeout, 120);
  t.is(r.events, EV_PROTOINFO);
  t.is(h.flags(O) & IP_CT_TCP_FLAG_CLOSE_INIT, IP_CT_TCP_FLAG_CLOSE_INIT);
  t.is(h.flags(Y) & IP_CT_TCP_FLAG_CLOSE_INIT, 0);
  r = h.step(Y, seg(A, SV + 1, C + 2, { win: 2000 }));
  t.is(h.state, TCP_CONNTRACK_CLOSE_WAIT);
  t.is(r.timeout, 60);
  r = h.step(Y, seg(F | A, SV + 1, C + 2, { win: 2000 }));
  t.is(h.state, TCP_CONNTRACK_LAST_ACK);
  t.is(r.timeout, 30);
  r = h.step(O, seg(A, C + 2, SV + 2));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_TIME_WAIT);
  t.is(r.timeout, 120);
  t.true(tcpIsClosing(h.ctx, h.e));
  // Retransmitted last ACK: stays in TIME_WAIT.
  r = h.step(O, seg(A, C + 2, SV + 2));
  t.is(h.state, TCP_CONNTRACK_TIME_WAIT);
  t.is(r.events, 0);
  t.is(r.timeout, 120);
});

test('server closes first, then simultaneous FIN ordering ends in TIME_WAIT', (t) => {
  const h = new TcpHarness();
  handshake(h);
  h.step(Y, seg(F | A, SV + 1, C + 1, { win: 2000 }));
  t.is(h.state, TCP_CONNTRACK_FIN_WAIT);
  t.is(h.flags(Y) & IP_CT_TCP_FLAG_CLOSE_INIT, IP_CT_TCP_FLAG_CLOSE_INIT);
  h.step(O, seg(A, C + 1, SV + 2));
  t.is(h.state, TCP_CONNTRACK_CLOSE_WAIT);
  h.step(O, seg(F | A, C + 1, SV + 2));
  t.is(h.state, TCP_CONNTRACK_LAST_ACK);
  const r = h.step(Y, seg(A, SV + 2, C + 2, { win: 2000 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_TIME_WAIT);
  t.is(r.timeout, 120);

  // Both FINs cross: FIN_WAIT -> LAST_ACK -> TIME_WAIT.
  const g = new TcpHarness();
  handshake(g);
  g.step(O, seg(F | A, C + 1, SV + 1));
  g.step(Y, seg(F | A, SV + 1, C + 1, { win: 2000 }));
  t.is(g.state, TCP_CONNTRACK_LAST_ACK);
  g.step(O, seg(A, C + 2, SV + 2));
  t.is(g.state, TCP_CONNTRACK_TIME_WAIT);
});

test('RST answering a SYN before any reply kills the entry', (t) => {
  const h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  const r = h.step(Y, seg(R | A, 0, C + 1, { win: 0 }));
  t.is(r.verdict, 'established');
  t.true(r.killed);
  t.is(r.timeout, 0);
  t.false(h.exists);
});

test('RST in SYN_RECV closes with the close timeout', (t) => {
  const h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  h.step(Y, seg(S | A, SV, C + 1, { win: 2000 }));
  const r = h.step(O, seg(R, C + 1, 0, { win: 0 }));
  t.is(r.verdict, 'established');
  t.false(r.killed);
  t.is(h.state, TCP_CONNTRACK_CLOSE);
  t.is(r.timeout, 10);
  t.is(r.events, EV_PROTOINFO);
});

test('RST in ESTABLISHED: exact seq closes, old seq is invalid, inexact seq keeps the state', (t) => {
  const h = new TcpHarness();
  handshake(h);
  let r = h.step(O, seg(R, C + 1, 0, { win: 0 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_CLOSE);
  t.is(r.timeout, 10);

  const g = new TcpHarness();
  handshake(g);
  r = g.step(O, seg(R, C - 100, 0, { win: 0 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_INVALID_RST);
  t.is(g.state, TCP_CONNTRACK_ESTABLISHED);

  // Above the peer's maxack but in window: state stays for a possible challenge ACK,
  // yet the timeout drops to the close timeout.
  r = g.step(O, seg(R, C + 500, 0, { win: 0 }));
  t.is(r.verdict, 'established');
  t.is(g.state, TCP_CONNTRACK_ESTABLISHED);
  t.is(r.timeout, 10);
  t.is(r.events, 0);
});

test('nf_conntrack_tcp_ignore_invalid_rst lets an old-seq RST through without closing', (t) => {
  const h = new TcpHarness({ [S_TCP_IGNORE_INVALID_RST]: 1 });
  handshake(h);
  const r = h.step(O, seg(R, C - 100, 0, { win: 0 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
  t.is(r.timeout, 10);
});

test('RST right after the same side\'s data segment closes', (t) => {
  const h = new TcpHarness();
  handshake(h);
  h.step(Y, seg(A | P, SV + 1, C + 1, { win: 2000, len: 19 }));
  const r = h.step(Y, seg(R | A, SV + 20, C + 1, { win: 0 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_CLOSE);
});

test('RST in closing states skips all checks', (t) => {
  for (const [name, setup] of [
    ['FIN_WAIT', (h: TcpHarness) => h.step(O, seg(F | A, C + 1, SV + 1))],
    ['CLOSE_WAIT', (h: TcpHarness) => { h.step(O, seg(F | A, C + 1, SV + 1)); h.step(Y, seg(A, SV + 1, C + 2, { win: 2000 })); }],
    ['LAST_ACK', (h: TcpHarness) => { h.step(O, seg(F | A, C + 1, SV + 1)); h.step(Y, seg(F | A, SV + 1, C + 2, { win: 2000 })); }],
    ['TIME_WAIT', (h: TcpHarness) => {
      h.step(O, seg(F | A, C + 1, SV + 1));
      h.step(Y, seg(F | A, SV + 1, C + 2, { win: 2000 }));
      h.step(O, seg(A, C + 2, SV + 2));
    }],
  ] as const) {
    const h = new TcpHarness();
    handshake(h);
    setup(h);
    t.is(tcpFormat(h.ctx, h.e), name);
    // A wildly out-of-window RST still closes.
    const r = h.step(Y, seg(R, 0x7fff0000, 0, { win: 0 }));
    t.is(r.verdict, 'established', name);
    t.is(h.state, TCP_CONNTRACK_CLOSE, name);
    t.is(r.timeout, 10, name);
  }
});

test('retransmitted SYN keeps SYN_SENT and does not refresh the timeout', (t) => {
  const h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  h.now += 50_000;
  let r = h.step(O, seg(S, C, 0, { win: 1000 }));
  t.is(r.verdict, 'new');
  t.is(h.state, TCP_CONNTRACK_SYN_SENT);
  t.is(r.timeout, -1);
  t.is(r.events, 0);
  t.is(h.timeoutLeft, 70);
  // A SYN with a higher ISN re-initialises the original side.
  r = h.step(O, seg(S, C + 100000, 0, { win: 3000 }));
  t.is(r.verdict, 'new');
  t.is(r.timeout, -1);
  t.is(h.td(O, TD_END), C + 100001);
  t.is(h.td(O, TD_MAXWIN), 3000);
});

test('simultaneous open: SYN_SENT2, SYN_RECV, then ESTABLISHED on the reply ACK', (t) => {
  const h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  let r = h.step(Y, seg(S, SV, 0, { win: 2000 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_SYN_SENT2);
  t.is(r.timeout, -1); // SYN while SYN_SENT and no reply yet: not refreshed
  t.is(r.events, EV_PROTOINFO);
  r = h.step(O, seg(S | A, C, SV + 1, { win: 1000 }));
  t.is(h.state, TCP_CONNTRACK_SYN_RECV);
  t.is(r.timeout, 60);
  t.is(h.status & IPS_ASSURED, 0);
  r = h.step(Y, seg(A, SV + 1, C + 1, { win: 2000 }));
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
  t.is(r.timeout, 432000);
  t.is(r.events, EV_PROTOINFO | EV_ASSURED);
});

test('invalid transitions: FIN or ACK in SYN_SENT from the client', (t) => {
  const h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  let r = h.step(O, seg(F | A, C + 1, 0));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_INVALID_STATE);
  t.is(h.state, TCP_CONNTRACK_SYN_SENT);
  r = h.step(O, seg(A, C + 1, 0));
  t.is(r.verdict, 'invalid');
  t.is(h.state, TCP_CONNTRACK_SYN_SENT);
});

test('out-of-window data is invalid in both directions and changes nothing', (t) => {
  const h = new TcpHarness();
  handshake(h);
  const before = [h.td(O, TD_END), h.td(O, TD_MAXEND), h.td(Y, TD_END), h.td(Y, TD_MAXEND)];
  let r = h.step(O, seg(A, C + 200000, SV + 1, { len: 10 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_SEQ_OVER);
  t.is(r.timeout, -1);
  r = h.step(Y, seg(A, SV + 1, C + 5000, { win: 2000 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_ACK_OVER);
  r = h.step(Y, seg(A, SV + 300000, C + 1, { win: 2000, len: 10 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_SEQ_OVER);
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
  t.deepEqual([h.td(O, TD_END), h.td(O, TD_MAXEND), h.td(Y, TD_END), h.td(Y, TD_MAXEND)], before);
});

test('a small window overrun is ignored (accepted) and its ACK then passes', (t) => {
  const h = new TcpHarness();
  handshake(h);
  t.is(h.td(O, TD_MAXEND), C + 1 + 2000);
  let r = h.step(O, seg(A, C + 2002, SV + 1, { len: 10 }));
  t.is(r.verdict, 'established');
  t.is(r.reason, R_OVERSHOT);
  t.is(r.timeout, -1);
  t.is(h.td(O, TD_END), C + 2012);
  r = h.step(Y, seg(A, SV + 1, C + 2012, { win: 2000 }));
  t.is(r.verdict, 'established');
  t.is(r.reason, null);
});

test('already-acked data and overly delayed ACKs are ignored, not invalid', (t) => {
  const h = new TcpHarness();
  handshake(h);
  // Move the client's end forward with acked data: 1001..4001.
  for (let s = C + 1; s < C + 3001; s += 1000) {
    t.is(h.step(O, seg(A, s, SV + 1, { len: 1000 })).verdict, 'established');
    t.is(h.step(Y, seg(A, SV + 1, s + 1000, { win: 2000 })).verdict, 'established');
  }
  t.is(h.td(O, TD_END), C + 3001);
  t.is(h.td(Y, TD_MAXWIN), 2000);
  let r = h.step(O, seg(A, C + 1, SV + 1, { len: 500 }));
  t.is(r.verdict, 'established');
  t.is(r.reason, R_SEQ_UNDER);
  t.is(r.timeout, -1);
  r = h.step(Y, seg(A, SV + 1, (C + 3001 - 70000) >>> 0, { win: 2000 }));
  t.is(r.verdict, 'established');
  t.is(r.reason, R_ACK_UNDER);
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
});

test('be_liberal accepts out-of-window segments and refreshes the timeout', (t) => {
  const h = new TcpHarness({ [S_TCP_BE_LIBERAL]: 1 });
  handshake(h);
  const r = h.step(O, seg(A, C + 200000, SV + 1, { len: 10 }));
  t.is(r.verdict, 'established');
  t.is(r.reason, null);
  t.is(r.timeout, 432000);
  t.is(h.td(O, TD_END), C + 1); // accepted without window updates
});

test('max_retrans: the fourth identical segment drops the timeout to max_retrans', (t) => {
  const h = new TcpHarness({ [S_TCP_TIMEOUT_MAX_RETRANS]: 200 });
  handshake(h);
  const timeouts: number[] = [];
  for (let i = 0; i < 5; i++) timeouts.push(h.step(O, seg(A | P, C + 1, SV + 1, { len: 100 })).timeout);
  t.deepEqual(timeouts, [300, 300, 300, 200, 200]);
  // An ACK from the other side resets the count.
  const r = h.step(Y, seg(A, SV + 1, C + 101, { win: 2000 }));
  t.is(r.timeout, 432000);
});

test('a zero window shortens an ESTABLISHED timeout to max_retrans', (t) => {
  const h = new TcpHarness({ [S_TCP_TIMEOUT_MAX_RETRANS]: 200 });
  handshake(h);
  const r = h.step(Y, seg(A, SV + 1, C + 1, { win: 0 }));
  t.is(r.verdict, 'established');
  t.is(r.timeout, 200);
});

test('loose=1 picks up a mid-stream ACK; ASSURED after a reply and one more packet', (t) => {
  const h = new TcpHarness();
  let r = h.step(O, seg(A, 1000, 2000, { win: 500 }));
  t.is(r.verdict, 'new');
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
  t.is(r.timeout, 300);
  t.is(r.events, EV_PROTOINFO);
  const lib = IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_BE_LIBERAL;
  t.is(h.flags(O), lib);
  t.is(h.flags(Y), lib);
  t.is(h.td(O, TD_END), 1000);
  t.is(h.td(O, TD_MAXWIN), 500);
  t.is(h.td(O, TD_MAXEND), 1500);

  r = h.step(Y, seg(A, 2000, 1000, { win: 800 }));
  t.is(r.verdict, 'established');
  t.is(r.timeout, 300); // no SEEN_REPLY yet while this reply is handled
  t.is(h.td(Y, TD_END), 2000);
  t.is(h.td(Y, TD_MAXWIN), 800);
  t.is(h.td(O, TD_MAXEND), 1800);
  t.not(h.status & IPS_SEEN_REPLY, 0);
  t.is(h.status & IPS_ASSURED, 0);

  r = h.step(O, seg(A, 1000, 2000, { win: 500 }));
  t.is(r.verdict, 'established');
  t.is(r.events, EV_ASSURED);
  t.is(r.timeout, 432000);
});

test('loose=0 refuses to pick up; non-SYN/ACK first packets are never new', (t) => {
  const h = new TcpHarness({ [S_TCP_LOOSE]: 0 });
  let r = h.step(O, seg(A, 1000, 2000));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_NO_PICKUP);
  t.false(h.exists);
  r = h.step(O, seg(S, 1000, 0));
  t.is(r.verdict, 'new');

  const g = new TcpHarness();
  for (const f of [S | A, F | A, R, R | A]) {
    r = g.step(O, seg(f, 1000, 2000));
    t.is(r.verdict, 'invalid');
    t.is(r.reason, R_INVALID_NEW);
    t.false(g.exists);
  }
});

test('TIME_WAIT reopened by a new SYN: REPEAT, then a fresh SYN_SENT entry', (t) => {
  const h = new TcpHarness();
  handshake(h);
  h.step(O, seg(F | A, C + 1, SV + 1));
  h.step(Y, seg(F | A, SV + 1, C + 2, { win: 2000 }));
  h.step(O, seg(A, C + 2, SV + 2));
  t.is(h.state, TCP_CONNTRACK_TIME_WAIT);
  const r = h.step(O, seg(S, 90000, 0, { win: 1000 }));
  t.true(r.reopened);
  t.is(r.verdict, 'new');
  t.is(h.state, TCP_CONNTRACK_SYN_SENT);
  t.is(r.timeout, 120);
  t.is(h.status & IPS_ASSURED, 0);
  t.is(h.td(O, TD_END), 90001);
});

test('SYN after our own RST reopens; after the peer\'s RST it is ignored and resynced by the SYN/ACK', (t) => {
  const h = new TcpHarness();
  handshake(h);
  h.step(O, seg(R, C + 1, 0, { win: 0 }));
  t.is(h.state, TCP_CONNTRACK_CLOSE);
  let r = h.step(O, seg(S, 7000, 0));
  t.true(r.reopened);
  t.is(h.state, TCP_CONNTRACK_SYN_SENT);

  const g = new TcpHarness();
  handshake(g);
  g.step(Y, seg(R, SV + 1, 0, { win: 0 }));
  t.is(g.state, TCP_CONNTRACK_CLOSE);
  r = g.step(O, seg(S, 7000, 0, { win: 1000 }));
  t.false(r.reopened);
  t.is(r.verdict, 'established');
  t.is(r.reason, R_IGNORED);
  t.is(r.timeout, -1);
  t.is(g.state, TCP_CONNTRACK_CLOSE);
  r = g.step(Y, seg(S | A, 9000, 7001, { win: 2000 }));
  t.is(r.verdict, 'established');
  t.is(r.reason, null);
  t.is(g.state, TCP_CONNTRACK_SYN_RECV);
  t.is(r.events, EV_PROTOINFO);
  t.is(r.timeout, 60);
  t.is(g.td(O, TD_END), 7001);
  t.is(g.td(O, TD_MAXEND), 9001);
  t.is(g.td(Y, TD_END), 9001);
  t.is(g.flags(Y), IP_CT_TCP_FLAG_MAXACK_SET);
  r = g.step(O, seg(A, 7001, 9001, { win: 1000 }));
  t.is(g.state, TCP_CONNTRACK_ESTABLISHED);
  t.is(r.timeout, 432000);
});

test('SYN in ESTABLISHED is ignored; a SYN/ACK answering it resyncs', (t) => {
  const h = new TcpHarness();
  handshake(h);
  let r = h.step(O, seg(S, 50000, 0, { win: 1000, wscale: 3, sackPerm: true }));
  t.is(r.verdict, 'established');
  t.is(r.reason, R_IGNORED);
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
  r = h.step(Y, seg(S | A, 80000, 50001, { win: 2000, wscale: 2, sackPerm: true }));
  t.is(h.state, TCP_CONNTRACK_SYN_RECV);
  t.is(h.scale(O), 3);
  t.is(h.scale(Y), 2);
  t.is(h.flags(O), IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM);
});

test('challenge ACK in LAST_ACK after an ignored SYN does not move to TIME_WAIT', (t) => {
  const h = new TcpHarness();
  handshake(h);
  h.step(O, seg(F | A, C + 1, SV + 1));
  h.step(Y, seg(F | A, SV + 1, C + 2, { win: 2000 }));
  t.is(h.state, TCP_CONNTRACK_LAST_ACK);
  let r = h.step(O, seg(S, 70000, 0));
  t.is(r.reason, R_IGNORED);
  r = h.step(Y, seg(A, SV + 2, C + 2, { win: 2000 }));
  t.is(r.verdict, 'established');
  t.is(r.reason, R_CHALLENGE_ACK);
  t.is(r.timeout, -1);
  t.is(h.state, TCP_CONNTRACK_LAST_ACK);
});

test('reply ACK to a SYN is ignored; the client RST answering it closes without checks', (t) => {
  const h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  let r = h.step(Y, seg(A, 33333, 44444, { win: 2000 }));
  t.is(r.verdict, 'established');
  t.is(r.reason, R_IGNORED);
  t.is(h.state, TCP_CONNTRACK_SYN_SENT);
  r = h.step(O, seg(R, 44444, 0, { win: 0 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_CLOSE);
  t.is(r.timeout, 10);
});

test('out-of-window FIN then RST from the other side lowers a long timeout', (t) => {
  const h = new TcpHarness();
  handshake(h);
  t.is(h.timeoutLeft, 432000);
  let r = h.step(O, seg(F | A, C + 500000, SV + 1));
  t.is(r.verdict, 'invalid');
  t.is(r.timeout, -1);
  r = h.step(Y, seg(R, SV + 600000, 0, { win: 0 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_SEQ_OVER);
  t.is(r.timeout, 300);
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
});

test('window scaling applies when both sides offer it', (t) => {
  const run = (serverScale: number | undefined) => {
    const h = new TcpHarness();
    h.step(O, seg(S, C, 0, { win: 20000, wscale: 7, sackPerm: true }));
    h.step(Y, seg(S | A, SV, C + 1, { win: 65160, wscale: serverScale }));
    h.step(O, seg(A, C + 1, SV + 1, { win: 502 }));
    return h;
  };
  const h = run(7);
  t.is(h.scale(O), 7);
  t.is(h.scale(Y), 7);
  t.is(h.flags(O) & IP_CT_TCP_FLAG_WINDOW_SCALE, IP_CT_TCP_FLAG_WINDOW_SCALE);
  t.is(h.td(Y, TD_MAXEND), SV + 1 + (502 << 7));
  t.is(h.td(O, TD_MAXWIN), 502 << 7);
  const ok = h.step(Y, seg(A, SV + 60000, C + 1, { win: 509, len: 10 }));
  t.is(ok.verdict, 'established');
  t.is(ok.reason, null);

  const g = run(undefined);
  t.is(g.scale(O), 0);
  t.is(g.scale(Y), 0);
  t.is(g.td(Y, TD_MAXEND), SV + 1 + 502);
  t.is(g.td(O, TD_MAXWIN), 20000);
  // 59508 bytes past the bound: more than the receiver's window, so not a tolerated overrun.
  const r = g.step(Y, seg(A, SV + 60000, C + 1, { win: 509, len: 10 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_SEQ_OVER);
});

test('asymmetric scales (client wscale 0, server 10): scaled bounds, and an ACK for unseen data changes nothing', (t) => {
  // The shape of tcp_window_scale_sack's real transfer: the client offers wscale 0 (scaling on,
  // factor 1), the server 10 and advertises ~70 << 10. Its first recording had lost 15 client data
  // segments: the server's ACK for them was then "ACK over the upper bound" here (as in the kernel
  // for that input), td_maxend was not pushed, and the next client segments were "SEQ over".
  const h = new TcpHarness();
  const MSS = 1448;
  h.step(O, seg(S, C, 0, { win: 32120, wscale: 0, sackPerm: true }));
  h.step(Y, seg(S | A, SV, C + 1, { win: 65160, wscale: 10, sackPerm: true }));
  h.step(O, seg(A, C + 1, SV + 1, { win: 32120 }));
  t.is(h.scale(O), 0);
  t.is(h.scale(Y), 10);
  t.is(h.flags(O) & IP_CT_TCP_FLAG_WINDOW_SCALE, IP_CT_TCP_FLAG_WINDOW_SCALE);
  // Server ACKs with a raw window of 70: 71680 bytes, beyond any unscaled window.
  let r = h.step(Y, seg(A, SV + 1, C + 1, { win: 70 }));
  t.is(r.verdict, 'established');
  t.is(h.td(O, TD_MAXEND), C + 1 + (70 << 10));
  t.is(h.td(Y, TD_MAXWIN), 70 << 10);
  // 40 full segments fill most of it (57920 bytes > 65535 - 32120 unscaled slack).
  for (let k = 0; k < 40; k++) {
    r = h.step(O, seg(A, C + 1 + k * MSS, SV + 1, { win: 32120, len: MSS }));
    t.is(r.verdict, 'established');
    t.is(r.reason, null);
  }
  const seen = C + 1 + 40 * MSS;
  t.is(h.td(O, TD_END), seen);
  // An ACK for 8 segments conntrack never saw: invalid, no window state touched.
  const maxend = h.td(O, TD_MAXEND);
  t.is(h.td(Y, TD_MAXWIN), 70 << 10);
  r = h.step(Y, seg(A, SV + 1, seen + 8 * MSS, { win: 77 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_ACK_OVER);
  t.is(h.td(O, TD_MAXEND), maxend);
  // Data past the (not advanced) upper bound by more than the receiver's window (71680): invalid.
  r = h.step(O, seg(A, maxend + 100000, SV + 1, { win: 32120, len: MSS }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_SEQ_OVER);
  // Once the segments are seen, the same ACK passes and pushes td_maxend by 77 << 10.
  for (let k = 0; k < 8; k++) h.step(O, seg(A, seen + k * MSS, SV + 1, { win: 32120, len: MSS }));
  r = h.step(Y, seg(A, SV + 1, seen + 8 * MSS, { win: 77 }));
  t.is(r.verdict, 'established');
  t.is(h.td(O, TD_MAXEND), seen + 8 * MSS + (77 << 10));
});

test('SACK blocks move the bounds only when the receiver permitted SACK', (t) => {
  const run = (sackPerm: boolean) => {
    const h = new TcpHarness();
    h.step(O, seg(S, C, 0, { win: 1000, sackPerm }));
    h.step(Y, seg(S | A, SV, C + 1, { win: 2000, sackPerm }));
    h.step(O, seg(A, C + 1, SV + 1, { win: 1000 }));
    h.step(O, seg(A, C + 1, SV + 1, { len: 500 }));
    h.step(O, seg(A, C + 501, SV + 1, { len: 500 }));
    return h;
  };
  const h = run(true);
  t.is(h.td(O, TD_END), C + 1001);
  let r = h.step(Y, seg(A, SV + 1, C + 1, { win: 2000, sack: C + 1001 }));
  t.is(r.verdict, 'established');
  t.is(h.td(O, TD_MAXEND), C + 1001 + 2000);
  t.is(h.td(Y, TD_MAXWIN), 3000);
  r = h.step(Y, seg(A, SV + 1, C + 1, { win: 2000, sack: C + 1501 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_ACK_OVER);

  const g = run(false);
  r = g.step(Y, seg(A, SV + 1, C + 1, { win: 2000, sack: C + 1001 }));
  t.is(r.verdict, 'established');
  t.is(g.td(O, TD_MAXEND), C + 1 + 2000);
  t.is(g.td(Y, TD_MAXWIN), 2000);
  r = g.step(Y, seg(A, SV + 1, C + 1, { win: 2000, sack: C + 1501 }));
  t.is(r.verdict, 'established');
});

test('tcpError: flag combinations', (t) => {
  const h = new TcpHarness();
  const bad = [0, F, S | F, S | R, S | A | TH_URG, F | P | TH_URG, R | F, S | R | A, F | TH_URG, P];
  for (const f of bad) t.is(tcpError(h.ctx, seg(f, 1, 1)), R_FLAGS, `flags 0x${f.toString(16)}`);
  const good = [S, S | TH_URG, S | A, R, R | A, F | A, F | A | TH_URG, A, A | TH_URG, R | A | P, A | TH_ECE | TH_CWR, S | TH_ECE | TH_CWR];
  for (const f of good) t.is(tcpError(h.ctx, seg(f, 1, 1)), null, `flags 0x${f.toString(16)}`);
});

test('tcpError: truncated header', (t) => {
  const h = new TcpHarness();
  const p = seg(A, 1, 1);
  p.doff = 16;
  t.is(tcpError(h.ctx, p), R_TRUNCATED);
  const q = seg(A, 1, 1, { wscale: 2 });
  q.l4len = 28; // header says 32 bytes
  t.is(tcpError(h.ctx, q), R_TRUNCATED);
});

test('tcpError: checksum checked only when nf_conntrack_checksum is on', (t) => {
  const h = new TcpHarness();
  const p = new Packet();
  p.family = NFPROTO_IPV4;
  p.l4proto = IPPROTO_TCP;
  p.src[0] = 0x0a000001;
  p.dst[0] = 0x0a000002;
  p.buf = new Uint8Array(20);
  p.buf[12] = 5 << 4;
  p.buf[13] = TH_ACK;
  p.l4off = 0;
  p.l4len = 20;
  p.doff = 20;
  p.tcpFlags = TH_ACK;
  t.is(tcpError(h.ctx, p), R_CHECKSUM);
  h.set(S_CHECKSUM, 0);
  t.is(tcpError(h.ctx, p), null);
});

// Recorded against 6.18 with the fuzzer's `file` generator (docs/kernel-quirks.md, row 3).
test('RST answering an ignored segment: after the sender\'s own SYN it is window-checked (6.18)', (t) => {
  // SYN, a reply ACK ignored in SYN_SENT, then the originator's RST/ACK acking that ACK: closes.
  let h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  t.is(h.step(Y, seg(A, SV + 1, 90000, { win: 2000 })).reason, R_IGNORED);
  let r = h.step(O, seg(R | A, C + 3, SV + 1));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_CLOSE);
  // The same with the SYN sent again in between (same or new ISN): now the window check runs
  // and the reply side, never seen, has no data to ack.
  for (const isn of [C, C + 90000]) {
    h = new TcpHarness();
    h.step(O, seg(S, C, 0, { win: 1000 }));
    h.step(Y, seg(A, SV + 1, 90000, { win: 2000 }));
    t.is(h.step(O, seg(S, isn, 0, { win: 1000 })).verdict, 'established');
    r = h.step(O, seg(R | A, isn + 1, SV + 1));
    t.is(r.verdict, 'invalid');
    t.is(h.state, TCP_CONNTRACK_SYN_SENT);
  }
  // After an in-window ACK that is not assured, a RST from the same side acking it still closes.
  h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  h.step(Y, seg(S | A, SV, C + 1, { win: 2000 }));
  h.step(Y, seg(A, SV + 1, C + 1, { win: 2000 }));
  r = h.step(Y, seg(R | A, SV + 1, SV + 1));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_CLOSE);
});

// The reasons carry the kernel's own log messages (nf_conntrack_proto_tcp.c, 6.x: tcp_error,
// tcp_in_window, nf_conntrack_tcp_packet), so a verdict's reason says which rule fired.
test('reason texts name the kernel\'s check, each one distinct', (t) => {
  const kernel: [string, RegExp][] = [
    [R_TRUNCATED, /truncated/],
    [R_CHECKSUM, /checksum/],
    [R_FLAGS, /^invalid tcp flag combination$/],
    [R_INVALID_NEW, /invalid new/],
    [R_NO_PICKUP, /loose/],
    [R_INVALID_STATE, /^invalid state$/],
    [R_IGNORED, /ignored/],
    [R_CHALLENGE_ACK, /challenge ACK/i],
    [R_INVALID_RST, /invalid RST/i],
    [R_OVERSHOT, /more bytes than expected/],
    [R_SEQ_OVER, /^SEQ is over the upper bound \(over the window of the receiver\)$/],
    [R_ACK_OVER, /^ACK is over the upper bound \(ACKed data not seen yet\)$/],
    [R_SEQ_UNDER, /^SEQ is under the lower bound \(already ACKed data retransmitted\)$/],
    [R_ACK_UNDER, /^ACK is under the lower bound \(possible overly delayed/],
  ];
  for (const [text, re] of kernel) t.regex(text, re);
  t.is(new Set(kernel.map(([s]) => s)).size, kernel.length);
});

// ---------------------------------------------------------------------------------------------
// Rules the mutation run found unchecked (docs/mutation.md); expected values from the kernel's
// nf_conntrack_proto_tcp.c (6.x), computed by hand.

test('a segment captured short counts with its IP length: the kernel had the whole datagram', (t) => {
  // segment_seq_plus_len uses skb->len: a 100-byte segment whose capture kept only the headers
  // still ends at seq + 100. Ethernet (l3off 14), IPv4 header 20, TCP header 20.
  const h = new TcpHarness();
  handshake(h);
  const p = seg(A | P, C + 1, SV + 1, { len: 100 });
  p.complete = false;
  p.l3off = 14;
  p.l4off = 34;
  p.l4len = 20;
  p.dataLen = 0;
  p.ipLen = 20 + 20 + 100;
  t.is(tcpError(h.ctx, p), null);
  const r = h.step(O, p);
  t.is(r.verdict, 'established');
  t.is(h.td(O, TD_END), C + 1 + 100);
  t.is(r.timeout, 300, 'unacknowledged data');
});

test('a newer SYN restarts the sender keeping its options when it has none; scales clamp at 14', (t) => {
  // tcp_options: an option-less header (doff 5) leaves td_scale and flags alone; a window scale
  // above 14 counts as 14 (RFC 7323). tcp_init_sender zeroes both scales only for the reply
  // direction when one side did not offer scaling. The restart (a SYN with a higher sequence in
  // SYN_SENT) then goes on with the window checks: the receiver's td_maxend becomes sack + win
  // = 0 + 3000 (no ACK: sack is the receiver's td_end, 0).
  const h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000, wscale: 15, sackPerm: true }));
  t.is(h.scale(O), 14);
  t.is(h.td(Y, TD_MAXEND), 1000);
  const r = h.step(O, seg(S, C + 100, 0, { win: 3000 }));
  t.is(r.verdict, 'new');
  t.is(h.td(O, TD_END), C + 101);
  t.is(h.td(Y, TD_MAXEND), 3000);
  t.is(h.scale(O), 14);
  t.is(h.flags(O), IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM);
  h.step(Y, seg(S | A, SV, C + 101, { win: 2000, wscale: 3 }));
  t.is(h.state, TCP_CONNTRACK_SYN_RECV);
  t.deepEqual([h.scale(O), h.scale(Y)], [14, 3]);
});

test('an ignored SYN\'s options are taken on resync: a scale of 0 counts as offered, 15 as 14', (t) => {
  // The IGNORE case notes the SYN's options in last_flags / last_wscale (tcp_options on a
  // zeroed state); the SYN/ACK that answers it restores that side from them.
  for (const [ws, scale] of [[0, 0], [15, 14]] as const) {
    const h = new TcpHarness();
    handshake(h);
    t.is(h.step(O, seg(S, 50000, 0, { win: 1500, wscale: ws })).reason, R_IGNORED);
    h.step(Y, seg(S | A, 80000, 50001, { win: 2000, wscale: 2 }));
    t.is(h.state, TCP_CONNTRACK_SYN_RECV);
    t.is(h.flags(O), IP_CT_TCP_FLAG_WINDOW_SCALE, `wscale ${ws}`);
    t.is(h.scale(O), scale, `wscale ${ws}`);
    t.is(h.td(O, TD_END), 50001);
    t.is(h.td(O, TD_MAXEND), 50001 + 2000, 'then the SYN/ACK\'s window: sack + win');
    t.is(h.td(O, TD_MAXWIN), 1500, 'the ignored SYN\'s window');
  }
});

test('simultaneous open: the reply SYN changes nothing but its own side; ignored SYN/ACKs keep the flag', (t) => {
  // tcp_in_window returns at once for a SYN without ACK from the side not seen yet (simultaneous
  // open): the original side's bounds stay. Ignored segments other than an original SYN leave
  // last_flags (IP_CT_TCP_SIMULTANEOUS_OPEN) alone, so the reply ACK still establishes.
  const h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  const before = [h.td(O, TD_END), h.td(O, TD_MAXEND), h.td(O, TD_MAXWIN)];
  h.step(Y, seg(S, SV, 0, { win: 2000 }));
  t.deepEqual([h.td(O, TD_END), h.td(O, TD_MAXEND), h.td(O, TD_MAXWIN)], before);
  h.step(O, seg(S | A, C, SV + 1, { win: 1000 }));
  t.is(h.state, TCP_CONNTRACK_SYN_RECV);
  t.is(h.step(Y, seg(S | A, SV, C + 1, { win: 2000 })).reason, R_IGNORED);
  h.step(Y, seg(A, SV + 1, C + 1, { win: 2000 }));
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
});

test('picked up mid-stream: the peer\'s first segment acking one past the known end answers a keepalive', (t) => {
  // tcp_in_window, sender unseen and not a SYN: if sack == receiver->td_end + 1, td_end++.
  const h = new TcpHarness();
  h.step(O, seg(A, C, SV, { win: 1000, len: 10 }));
  t.is(h.td(O, TD_END), C + 10);
  h.step(Y, seg(A, SV, C + 11, { win: 2000 }));
  t.is(h.td(O, TD_END), C + 11);
  // Any other ack leaves it.
  const g = new TcpHarness();
  g.step(O, seg(A, C, SV, { win: 1000, len: 10 }));
  g.step(Y, seg(A, SV, C + 10, { win: 2000 }));
  t.is(g.td(O, TD_END), C + 10);
});

test('a RST with sequence 0 answering our SYN is taken at the sender\'s end (large ISN)', (t) => {
  // tcp_in_window: RST, seq 0, state SYN_SENT: seq = end = sender->td_end. With an ISN above
  // 2^31, seq 0 is "after" td_maxend + 1 and would be out of window without that rule. The
  // packet is accepted; no reply yet, so the entry goes (nf_ct_kill).
  const isn = 3_000_000_000;
  const h = new TcpHarness();
  h.step(O, seg(S, isn, 0, { win: 1000 }));
  const r = h.step(O, seg(R, 0, 0, { win: 0 }));
  t.is(r.verdict, 'new');
  t.true(r.killed);
  // The same RST in another state gets no such help: after a SYN/ACK it is out of window.
  const g = new TcpHarness();
  g.step(O, seg(S, isn, 0, { win: 1000 }));
  g.step(Y, seg(S | A, SV, isn + 1, { win: 2000 }));
  t.is(g.state, TCP_CONNTRACK_SYN_RECV);
  t.is(g.step(O, seg(R, 0, 0, { win: 0 })).verdict, 'invalid');
});

test('before a reply only ESTABLISHED is capped at the unacknowledged timeout', (t) => {
  // nf_conntrack_tcp_packet: without SEEN_REPLY, new_state ESTABLISHED and timeout > UNACK ->
  // UNACK; other states keep theirs (a long syn_sent stays long), a short established too.
  // (A first SYN has no recorded window, last_win 0: its timeout is capped at max_retrans
  // first, so max_retrans is raised here.)
  let h = new TcpHarness({ [S_TCP_TIMEOUT_SYN_SENT]: 600, [S_TCP_TIMEOUT_MAX_RETRANS]: 1000 });
  t.is(h.step(O, seg(S, C, 0, { win: 1000 })).timeout, 600);
  h = new TcpHarness({ [S_TCP_TIMEOUT_ESTABLISHED]: 100 });
  t.is(h.step(O, seg(A, C, SV, { win: 1000 })).timeout, 100);
  h = new TcpHarness();
  t.is(h.step(O, seg(A, C, SV, { win: 1000 })).timeout, 300);
});

test('handleInvalid: only a long remaining timeout (120 s or more) is lowered, and only when above UNACK', (t) => {
  // nf_tcp_handle_invalid: expires < 120 s: nothing; else if expires > timeouts[UNACK]: UNACK.
  const lower = (leftMs: number, unack = 300): number => {
    const h = new TcpHarness({ [S_TCP_TIMEOUT_UNACKNOWLEDGED]: unack });
    handshake(h);
    h.step(O, seg(F | A, C + 500000, SV + 1));
    const rst = seg(R, SV + 600000, 0, { win: 0 });
    rst.now = h.now;
    h.i32[h.e + E_TIMEOUT] = (h.now + leftMs) | 0;
    return h.step(Y, rst).timeout;
  };
  t.is(lower(119_999, 100), -1, 'under 120 s left');
  t.is(lower(120_000, 100), 100, 'exactly 120 s left, UNACK 100 s');
  t.is(lower(120_000, 120), -1, 'left == UNACK: not lowered');
  t.is(lower(120_001, 120), 120);
  t.is(lower(200_000), -1, 'below UNACK 300');
});

test('window bounds at their edges: a zero window opens one byte, ACK and SEQ lower bounds are inclusive', (t) => {
  // tcp_in_window: receiver->td_maxend = sack + win, plus one when win == 0; IV: sack >=
  // receiver->td_end - MAXACKWINDOW (66000 here); II: end >= sender->td_end - receiver->td_maxwin.
  let h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  h.step(Y, seg(S | A, SV, C + 1, { win: 10 }));
  h.step(O, seg(A, C + 1, SV + 1, { win: 1000 }));
  t.is(h.td(O, TD_MAXEND), C + 11);
  h.step(O, seg(A | P, C + 1, SV + 1, { win: 1000, len: 10 }));
  h.step(Y, seg(A, SV + 1, C + 11, { win: 0 }));
  t.is(h.td(O, TD_MAXEND), C + 12);
  // IV: the server's td_end is SV + 1; an ACK exactly 66000 below passes, one more is ignored.
  h = new TcpHarness();
  handshake(h);
  let r = h.step(O, seg(A, C + 1, SV + 1 - 66000, { win: 1000 }));
  t.deepEqual([r.verdict, r.reason], ['established', null]);
  r = h.step(O, seg(A, C + 1, SV + 1 - 66001, { win: 1000 }));
  t.deepEqual([r.verdict, r.reason], ['established', R_ACK_UNDER]);
  // II: after 2000 bytes (the server's whole window) the client's td_end is C + 2001; a
  // segment ending at C + 1 = td_end - 2000 passes, one ending a byte earlier is ignored.
  h = new TcpHarness();
  handshake(h);
  h.step(O, seg(A | P, C + 1, SV + 1, { win: 1000, len: 2000 }));
  t.is(h.td(O, TD_END), C + 2001);
  t.is(h.td(Y, TD_MAXWIN), 2000);
  r = h.step(O, seg(A, C + 1, SV + 1, { win: 1000 }));
  t.deepEqual([r.verdict, r.reason], ['established', null]);
  r = h.step(O, seg(A, C, SV + 1, { win: 1000 }));
  t.deepEqual([r.verdict, r.reason], ['established', R_SEQ_UNDER]);
});

test('retransmission counting needs the same seq and the same ack, not just the same end', (t) => {
  // nf_conntrack_tcp_packet counts a segment as a retransmission only when dir, seq, ack, end
  // and window all equal the last one; max_retrans (3) of them cap the timeout at
  // timeouts[RETRANS] (200 s here, so it differs from UNACK's 300 s).
  const run = (segs: [number, number, number][]): number => {
    const h = new TcpHarness({ [S_TCP_TIMEOUT_MAX_RETRANS]: 200 });
    handshake(h);
    let last = 0;
    for (const [seq, ack, len] of segs) last = h.step(O, seg(A | P, seq, ack, { win: 1000, len })).timeout;
    return last;
  };
  const same: [number, number, number] = [C + 1, SV + 1, 10];
  t.is(run([same, same, same, same]), 200, 'four identical: retransmissions');
  // Same end (C + 11), sequence moving: new data each time, never a retransmission.
  t.is(run([[C + 1, SV + 1, 10], [C + 2, SV + 1, 9], [C + 3, SV + 1, 8], [C + 4, SV + 1, 7]]), 300);
  // Same seq and end, ack moving (the server sent data meanwhile): not retransmissions either.
  const h = new TcpHarness({ [S_TCP_TIMEOUT_MAX_RETRANS]: 200 });
  handshake(h);
  h.step(Y, seg(A | P, SV + 1, C + 1, { win: 2000, len: 100 }));
  let to = 0;
  for (let k = 0; k < 4; k++) to = h.step(O, seg(A | P, C + 1, SV + 1 + k, { win: 1000, len: 10 })).timeout;
  t.is(to, 300);
});

// ---------------------------------------------------------------------------------------------
// Mutation gaps (docs/mutation/mutcore.md): each expectation worked out by hand from the kernel's
// nf_conntrack_proto_tcp.c (tcp_in_window, nf_conntrack_tcp_packet, tcp_new), not from our code.

/** A ct->proto.tcp.last_* word (TCP_LAST_SEQ / ACK / END / WIN). */
function last(h: TcpHarness, word: number): number {
  return h.u32[h.e + E_PRIV + word];
}

test('overshoot rule at its receiver-window edge: end must be after sender end - receiver maxwin - 1', (t) => {
  // The receiver's td_maxwin made huge the kernel's way: swin = win + (sack - ack) with a SACK
  // block below an ack far ahead (tcp_in_window checks sack, not ack).
  const h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000, sackPerm: true }));
  h.step(Y, seg(S | A, SV, C + 1, { win: 2000, sackPerm: true }));
  h.step(O, seg(A, C + 1, SV + 1, { win: 1000 }));
  t.is(h.td(O, TD_END), C + 1);
  t.is(h.td(O, TD_MAXEND), C + 2001);
  let r = h.step(Y, seg(A, SV + 1, C + 4002, { win: 2000, sack: C + 1 }));
  t.is(r.verdict, 'established');
  t.is(h.td(Y, TD_MAXWIN), 2 ** 32 - 2001); // 2000 + (C + 1) - (C + 4002), as u32
  // seq = td_maxend + 1: overshot = 2 <= maxwin; td_end - maxwin - 1 = C + 1 + 2001 - 1 = C + 2001,
  // and end C + 2002 is after it by exactly one: in the receive window, so ignored (accepted).
  r = h.step(O, seg(A, C + 2002, SV + 1, { win: 1000 }));
  t.is(r.verdict, 'established');
  t.is(r.reason, R_OVERSHOT);
  t.is(h.td(O, TD_END), C + 2002);
  // Now td_end - maxwin - 1 = C + 2002 + 2001 - 1 = C + 4002: end C + 4002 is not after it.
  r = h.step(O, seg(A, C + 4002, SV + 1, { win: 1000 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_SEQ_OVER);
  r = h.step(O, seg(A, C + 4003, SV + 1, { win: 1000 }));
  t.is(r.verdict, 'established');
  t.is(r.reason, R_OVERSHOT);
  t.is(h.td(O, TD_END), C + 4003);
});

test('identical ACKs from the two sides are not retransmissions (last_dir must match)', (t) => {
  // Both ISNs 1000, so each side's ACK has seq 1001, ack 1001, window 1000: same numbers.
  const h = new TcpHarness({ [S_TCP_TIMEOUT_MAX_RETRANS]: 200 });
  h.step(O, seg(S, 1000, 0, { win: 1000 }));
  h.step(Y, seg(S | A, 1000, 1001, { win: 1000 }));
  h.step(O, seg(A, 1001, 1001, { win: 1000 }));
  const timeouts: number[] = [];
  for (let i = 0; i < 4; i++) {
    timeouts.push(h.step(Y, seg(A, 1001, 1001, { win: 1000 })).timeout);
    timeouts.push(h.step(O, seg(A, 1001, 1001, { win: 1000 })).timeout);
  }
  t.deepEqual(timeouts, Array(8).fill(432000));
  // The same side four times does count (the 4th reaches max_retrans 3).
  const same: number[] = [];
  for (let i = 0; i < 4; i++) same.push(h.step(O, seg(A, 1001, 1001, { win: 1000 })).timeout);
  t.deepEqual(same, [432000, 432000, 200, 200]);
});

test('tcp_new clears the whole tcp state of a recycled slot', (t) => {
  const h = new TcpHarness();
  h.u32.fill(0xdeadbeef, h.e + E_PRIV, h.e + E_PRIV + TCP_SCALE_FLAGS + 1);
  const r = h.step(O, seg(S, C, 0, { win: 1000 }));
  t.is(r.verdict, 'new');
  t.is(h.state, TCP_CONNTRACK_SYN_SENT);
  // The reply side is unseen: td_end, td_maxwin, td_maxack 0; td_maxend = 0 + the SYN's window.
  t.is(h.td(Y, TD_END), 0);
  t.is(h.td(Y, TD_MAXWIN), 0);
  t.is(h.td(Y, TD_MAXACK), 0);
  t.is(h.td(Y, TD_MAXEND), 1000);
  t.is(h.td(O, TD_MAXACK), 0);
  for (const w of [TCP_LAST_SEQ, TCP_LAST_ACK, TCP_LAST_END, TCP_LAST_WIN]) t.is(last(h, w), 0);
  t.is(h.scale(O) | h.scale(Y) | h.flags(Y), 0);
  t.is(h.step(Y, seg(S | A, SV, C + 1, { win: 2000 })).verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_SYN_RECV);
});

test('last_ack is written by an ignored segment only for a reply ACK in SYN_SENT', (t) => {
  // An original SYN ignored in ESTABLISHED: last_ack keeps the handshake ACK's ack.
  let h = new TcpHarness();
  handshake(h);
  t.is(last(h, TCP_LAST_ACK), SV + 1);
  t.is(h.step(O, seg(S, 70000, 777)).reason, R_IGNORED);
  t.is(last(h, TCP_LAST_ACK), SV + 1);
  t.is(last(h, TCP_LAST_SEQ), 70000);
  // A reply SYN/ACK ignored in ESTABLISHED: the same.
  h = new TcpHarness();
  handshake(h);
  t.is(h.step(Y, seg(S | A, 90000, 777, { win: 2000 })).reason, R_IGNORED);
  t.is(last(h, TCP_LAST_ACK), SV + 1);
  // A reply ACK ignored in SYN_SENT2 (simultaneous open): not SYN_SENT, so still 0.
  h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  h.step(Y, seg(S, SV, 0, { win: 2000 }));
  t.is(h.state, TCP_CONNTRACK_SYN_SENT2);
  t.is(h.step(Y, seg(A, SV + 1, 777, { win: 2000 })).reason, R_IGNORED);
  t.is(last(h, TCP_LAST_ACK), 0);
  // A reply ACK ignored in SYN_SENT: recorded (its RST answer is matched by it).
  h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  t.is(h.step(Y, seg(A, 33333, 777, { win: 2000 })).reason, R_IGNORED);
  t.is(last(h, TCP_LAST_ACK), 777);
});

/** Both FINs sent: LAST_ACK, waiting for the original side's last ACK (seq C + 2, ack SV + 2). */
function toLastAck(h: TcpHarness): void {
  handshake(h);
  h.step(O, seg(F | A, C + 1, SV + 1));
  h.step(Y, seg(F | A, SV + 1, C + 2, { win: 2000 }));
}

test('RFC 5961 challenge ACK in LAST_ACK: only from the other side, right after the ignored SYN, once', (t) => {
  // The ACK from the SYN's own side is the last ACK: TIME_WAIT.
  let h = new TcpHarness();
  toLastAck(h);
  t.is(h.state, TCP_CONNTRACK_LAST_ACK);
  t.is(h.step(O, seg(S, 70000, 0)).reason, R_IGNORED);
  let r = h.step(O, seg(A, C + 2, SV + 2));
  t.is(r.reason, null);
  t.is(h.state, TCP_CONNTRACK_TIME_WAIT);
  // A segment in between (a retransmitted FIN, LAST_ACK stays) makes last_index FIN: the
  // reply's ACK then is no challenge ACK and moves to TIME_WAIT.
  h = new TcpHarness();
  toLastAck(h);
  t.is(h.step(O, seg(S, 70000, 0)).reason, R_IGNORED);
  r = h.step(O, seg(F | A, C + 1, SV + 2));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_LAST_ACK);
  r = h.step(Y, seg(A, SV + 2, C + 2, { win: 2000 }));
  t.is(r.reason, null);
  t.is(h.state, TCP_CONNTRACK_TIME_WAIT);
  // The flag is cleared by the first challenge ACK: a second reply ACK is a normal one.
  h = new TcpHarness();
  toLastAck(h);
  t.is(h.step(O, seg(S, 70000, 0)).reason, R_IGNORED);
  r = h.step(Y, seg(A, SV + 2, C + 2, { win: 2000 }));
  t.is(r.reason, R_CHALLENGE_ACK);
  t.is(h.state, TCP_CONNTRACK_LAST_ACK);
  r = h.step(Y, seg(A, SV + 2, C + 2, { win: 2000 }));
  t.is(r.reason, null);
  t.is(h.state, TCP_CONNTRACK_TIME_WAIT);
});

test('RST checks use nf_conntrack_tcp_established: ESTABLISHED and ASSURED both', (t) => {
  // ASSURED but back in SYN_RECV (an ignored SYN resynced by the SYN/ACK answering it): an RST
  // above td_maxack with an inexact seq is not "established", so it closes.
  let h = new TcpHarness();
  handshake(h);
  t.is(h.step(O, seg(S, 70000, 0)).reason, R_IGNORED);
  h.step(Y, seg(S | A, 90000, 70001, { win: 2000 }));
  t.is(h.state, TCP_CONNTRACK_SYN_RECV);
  t.not(h.status & IPS_ASSURED, 0);
  t.is(h.td(Y, TD_MAXACK), 70001);
  let r = h.step(O, seg(R, 70011, 0, { win: 0 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_CLOSE);
  // ESTABLISHED but not ASSURED (picked up; one reply): the same RST closes, and seq 0 is
  // taken for an answer to a SYN, not refused as below td_maxack.
  for (const seq of [1500, 0]) {
    h = new TcpHarness();
    h.step(O, seg(A, 1000, 2000, { win: 500 }));
    h.step(Y, seg(A, 2000, 1000, { win: 500 }));
    t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
    t.is(h.status & IPS_ASSURED, 0);
    r = h.step(O, seg(R, seq, 0, { win: 0 }));
    t.is(r.verdict, 'established', `seq ${seq}`);
    t.is(r.reason, null);
    t.is(h.state, TCP_CONNTRACK_CLOSE, `seq ${seq}`);
  }
  // Established: seq 0 is below td_maxack, an invalid RST.
  h = new TcpHarness();
  handshake(h);
  r = h.step(O, seg(R, 0, 0, { win: 0 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_INVALID_RST);
});

test('RST train rule: last_index ACK, last_dir the RST\'s side, seq = last_end, all three', (t) => {
  // Reference: the same side's data ended at the RST's seq: closes.
  let h = new TcpHarness();
  handshake(h);
  h.step(O, seg(A | P, C + 1, SV + 1, { len: 10 }));
  let r = h.step(O, seg(R, C + 11, 0, { win: 0 }));
  t.is(h.state, TCP_CONNTRACK_CLOSE);
  // seq != last_end: state kept.
  h = new TcpHarness();
  handshake(h);
  h.step(O, seg(A | P, C + 1, SV + 1, { len: 10 }));
  r = h.step(O, seg(R, C + 5, 0, { win: 0 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
  // last segment from the other side with last_end = the RST's seq (equal ISNs): state kept.
  h = new TcpHarness();
  h.step(O, seg(S, 1000, 0, { win: 1000 }));
  h.step(Y, seg(S | A, 1000, 1001, { win: 1000 }));
  h.step(O, seg(A, 1001, 1001, { win: 1000 }));
  h.step(O, seg(A | P, 1001, 1001, { len: 10, win: 1000 }));
  t.is(last(h, TCP_LAST_END), 1011);
  r = h.step(Y, seg(R, 1011, 0, { win: 0 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
  // last segment an ignored SYN/ACK of the RST's side ending at its seq: not an ACK, state kept.
  h = new TcpHarness();
  handshake(h);
  t.is(h.step(Y, seg(S | A, SV + 1, 777, { win: 2000 })).reason, R_IGNORED);
  t.is(last(h, TCP_LAST_END), SV + 2);
  r = h.step(Y, seg(R, SV + 2, 0, { win: 0 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_ESTABLISHED);
});

test('RST after a challenge ACK skips the window check only in SYN_SENT and only with seq = that ACK', (t) => {
  // SYN_SENT, the reply's ACK ignored (last_ack 44444): an RST+ACK with an ack over the window
  // and seq 44444 passes unchecked; with another seq it is window-checked and invalid.
  let h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  h.step(Y, seg(A, 33333, 44444, { win: 2000 }));
  let r = h.step(O, seg(R | A, 44444, 12345, { win: 0 }));
  t.is(r.verdict, 'established');
  t.is(h.state, TCP_CONNTRACK_CLOSE);
  h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  h.step(Y, seg(A, 33333, 44444, { win: 2000 }));
  r = h.step(O, seg(R | A, C + 1, 12345, { win: 0 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_ACK_OVER);
  t.is(h.state, TCP_CONNTRACK_SYN_SENT);
  // SYN_SENT2: the reply's ignored ACK leaves last_ack 0; an RST+ACK with seq 0 is still
  // window-checked (not SYN_SENT): its ack beyond the reply's end is invalid.
  h = new TcpHarness();
  h.step(O, seg(S, C, 0, { win: 1000 }));
  h.step(Y, seg(S, SV, 0, { win: 2000 }));
  t.is(h.step(Y, seg(A, SV + 1, 777, { win: 2000 })).reason, R_IGNORED);
  r = h.step(O, seg(R | A, 0, SV + 100, { win: 0 }));
  t.is(r.verdict, 'invalid');
  t.is(r.reason, R_ACK_OVER);
  t.is(h.state, TCP_CONNTRACK_SYN_SENT2);
});
