/**
 * TCP connection tracking with the decisions of Linux's nf_conntrack_proto_tcp.c (6.x):
 * the state table, window tracking (td_end / td_maxend / td_maxwin / td_maxack, scaling, SACK),
 * mid-stream pickup, retransmission counting, the ignore/resync logic and RST validation.
 *
 * Private words (layout.ts, TCP_*): one packed state word, last_seq/ack/end/win, four uint32
 * window words per direction and one word with both directions' td_scale and flags.
 * Everything is read into module scratch variables, worked on, and written back before return:
 * a thread handles one packet at a time and the caller holds the entry's lock.
 */

import {
  E_PRIV,
  E_STATUS,
  E_TIMEOUT,
  IPS_ASSURED,
  IPS_FIXED_TIMEOUT,
  IPS_SEEN_REPLY,
  TCP_DIR,
  TCP_DIR_WORDS,
  TCP_LAST_ACK,
  TCP_LAST_END,
  TCP_LAST_SEQ,
  TCP_LAST_WIN,
  TCP_SCALE_FLAGS,
  TCP_STATE,
  TD_END,
  TD_MAXACK,
  TD_MAXEND,
  TD_MAXWIN,
} from '../../table/layout.js';
import {
  EV_ASSURED,
  EV_DESTROY,
  EV_PROTOINFO,
  PROTO_ACCEPT,
  PROTO_INVALID,
  PROTO_REPEAT,
  type ProtoResult,
  type TrackerContext,
} from './l4proto.js';
import {
  S_CHECKSUM,
  S_CHECKSUM_OFFLOAD,
  S_TCP_BE_LIBERAL,
  S_TCP_IGNORE_INVALID_RST,
  S_TCP_LOOSE,
  S_TCP_MAX_RETRANS,
  S_TCP_TIMEOUT_CLOSE,
  S_TCP_TIMEOUT_CLOSE_WAIT,
  S_TCP_TIMEOUT_ESTABLISHED,
  S_TCP_TIMEOUT_FIN_WAIT,
  S_TCP_TIMEOUT_LAST_ACK,
  S_TCP_TIMEOUT_MAX_RETRANS,
  S_TCP_TIMEOUT_SYN_RECV,
  S_TCP_TIMEOUT_SYN_SENT,
  S_TCP_TIMEOUT_TIME_WAIT,
  S_TCP_TIMEOUT_UNACKNOWLEDGED,
} from '../../table/sysctl.js';
import { TH_ACK, TH_CWR, TH_ECE, TH_FIN, TH_PSH, TH_RST, TH_SYN, TH_URG, type Packet } from '../../input/packet/packet.js';
import { CSUM_OK, CSUM_PARTIAL, l4ChecksumCheck } from '../../input/packet/checksum.js';

// ---------------------------------------------------------------------------------------------
// States, kernel numbering (enum tcp_conntrack).
export const TCP_CONNTRACK_NONE = 0;
export const TCP_CONNTRACK_SYN_SENT = 1;
export const TCP_CONNTRACK_SYN_RECV = 2;
export const TCP_CONNTRACK_ESTABLISHED = 3;
export const TCP_CONNTRACK_FIN_WAIT = 4;
export const TCP_CONNTRACK_CLOSE_WAIT = 5;
export const TCP_CONNTRACK_LAST_ACK = 6;
export const TCP_CONNTRACK_TIME_WAIT = 7;
export const TCP_CONNTRACK_CLOSE = 8;
export const TCP_CONNTRACK_SYN_SENT2 = 9;
/** Table value "invalid" (sIV). */
export const TCP_CONNTRACK_MAX = 10;
/** Table value "ignore" (sIG). */
export const TCP_CONNTRACK_IGNORE = 11;
/** Timeout slots only. */
export const TCP_CONNTRACK_RETRANS = 12;
export const TCP_CONNTRACK_UNACK = 13;

/** TCP conntrack state names by state number (the kernel's, e.g. 'ESTABLISHED'). */
export const TCP_STATE_NAMES: readonly string[] = [
  'NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT',
  'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2',
];

// Per-direction flags (ip_ct_tcp_state.flags) and last_flags bits, kernel values.
export const IP_CT_TCP_FLAG_WINDOW_SCALE = 0x01;
export const IP_CT_TCP_FLAG_SACK_PERM = 0x02;
export const IP_CT_TCP_FLAG_CLOSE_INIT = 0x04;
export const IP_CT_TCP_FLAG_BE_LIBERAL = 0x08;
export const IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED = 0x10;
export const IP_CT_TCP_FLAG_MAXACK_SET = 0x20;
export const IP_CT_EXP_CHALLENGE_ACK = 0x40;
export const IP_CT_TCP_SIMULTANEOUS_OPEN = 0x80;

// Packet classes: the middle index of the state table (enum tcp_bit_set).
export const TCP_SYN_SET = 0;
export const TCP_SYNACK_SET = 1;
export const TCP_FIN_SET = 2;
export const TCP_ACK_SET = 3;
export const TCP_RST_SET = 4;
export const TCP_NONE_SET = 5;

const DIR_ORIG = 0;
const DIR_REPL = 1;

// Invalid / ignore reasons (fixed strings, never built per packet).
export const R_TRUNCATED = 'truncated TCP header';
export const R_CHECKSUM = 'bad TCP checksum';
export const R_FLAGS = 'invalid tcp flag combination';
export const R_INVALID_NEW = 'invalid new: not a SYN or ACK first packet';
export const R_NO_PICKUP = 'not a SYN and nf_conntrack_tcp_loose is 0';
export const R_INVALID_STATE = 'invalid state';
export const R_IGNORED = 'packet ignored, state may be out of sync';
export const R_CHALLENGE_ACK = 'challenge ACK ignored';
export const R_INVALID_RST = 'invalid RST';
export const R_OVERSHOT = 'SEQ is over the upper bound by less than the receive window (more bytes than expected)';
export const R_SEQ_OVER = 'SEQ is over the upper bound (over the window of the receiver)';
export const R_ACK_OVER = 'ACK is over the upper bound (ACKed data not seen yet)';
export const R_SEQ_UNDER = 'SEQ is under the lower bound (already ACKed data retransmitted)';
export const R_ACK_UNDER = 'ACK is under the lower bound (possible overly delayed ACK)';

// ---------------------------------------------------------------------------------------------
// The transition table, [dir][class][old state], as the kernel's tcp_conntracks.
const sNO = TCP_CONNTRACK_NONE;
const sSS = TCP_CONNTRACK_SYN_SENT;
const sSR = TCP_CONNTRACK_SYN_RECV;
const sES = TCP_CONNTRACK_ESTABLISHED;
const sFW = TCP_CONNTRACK_FIN_WAIT;
const sCW = TCP_CONNTRACK_CLOSE_WAIT;
const sLA = TCP_CONNTRACK_LAST_ACK;
const sTW = TCP_CONNTRACK_TIME_WAIT;
const sCL = TCP_CONNTRACK_CLOSE;
const sS2 = TCP_CONNTRACK_SYN_SENT2;
const sIV = TCP_CONNTRACK_MAX;
const sIG = TCP_CONNTRACK_IGNORE;
void sNO;

const NSTATES = 10;
// prettier-ignore
const TABLE = Uint8Array.from([
  // ORIGINAL       sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2
  /* syn    */      sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2,
  /* synack */      sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR,
  /* fin    */      sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV,
  /* ack    */      sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV,
  /* rst    */      sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL,
  /* none   */      sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV,
  // REPLY
  /* syn    */      sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2,
  /* synack */      sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR,
  /* fin    */      sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV,
  /* ack    */      sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG,
  /* rst    */      sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL,
  /* none   */      sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV,
]);

function nextState(dir: number, index: number, old: number): number {
  return TABLE[(dir * 6 + index) * NSTATES + old];
}

/** Flag combinations tcp_error accepts, after dropping PSH, ECE and CWR. */
const VALID_FLAGS = new Uint8Array(64);
VALID_FLAGS[TH_SYN] = 1;
VALID_FLAGS[TH_SYN | TH_URG] = 1;
VALID_FLAGS[TH_SYN | TH_ACK] = 1;
VALID_FLAGS[TH_RST] = 1;
VALID_FLAGS[TH_RST | TH_ACK] = 1;
VALID_FLAGS[TH_FIN | TH_ACK] = 1;
VALID_FLAGS[TH_FIN | TH_ACK | TH_URG] = 1;
VALID_FLAGS[TH_ACK] = 1;
VALID_FLAGS[TH_ACK | TH_URG] = 1;

/** Sysctl index of each timeout slot; -1: no sysctl (SYN_SENT2 and NONE keep the 120 s default). */
const TIMEOUT_SYSCTL = Int32Array.from([
  -1, // NONE
  S_TCP_TIMEOUT_SYN_SENT,
  S_TCP_TIMEOUT_SYN_RECV,
  S_TCP_TIMEOUT_ESTABLISHED,
  S_TCP_TIMEOUT_FIN_WAIT,
  S_TCP_TIMEOUT_CLOSE_WAIT,
  S_TCP_TIMEOUT_LAST_ACK,
  S_TCP_TIMEOUT_TIME_WAIT,
  S_TCP_TIMEOUT_CLOSE,
  -1, // SYN_SENT2
  -1, // MAX (unused)
  -1, // IGNORE (unused)
  S_TCP_TIMEOUT_MAX_RETRANS,
  S_TCP_TIMEOUT_UNACKNOWLEDGED,
]);
const FIXED_TIMEOUT_S = 120;

/** The timeout (seconds) the tracker applies in a TCP state (TCP_CONNTRACK_*), before caps. */
export function tcpStateTimeout(ctx: TrackerContext, state: number): number {
  return timeoutOf(ctx, state);
}

function timeoutOf(ctx: TrackerContext, slot: number): number {
  const s = TIMEOUT_SYSCTL[slot];
  return s < 0 ? FIXED_TIMEOUT_S : ctx.i32[ctx.sys + s];
}

// ---------------------------------------------------------------------------------------------
// Sequence arithmetic on uint32 values (plain JS numbers in 0 .. 2^32-1, sums allowed).
function before(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}
function after(a: number, b: number): boolean {
  return ((b - a) | 0) < 0;
}

/** Class of a segment (get_conntrack_index): RST first, then SYN(/ACK), FIN, ACK. */
function classOf(flags: number): number {
  if (flags & TH_RST) return TCP_RST_SET;
  if (flags & TH_SYN) return flags & TH_ACK ? TCP_SYNACK_SET : TCP_SYN_SET;
  if (flags & TH_FIN) return TCP_FIN_SET;
  if (flags & TH_ACK) return TCP_ACK_SET;
  return TCP_NONE_SET;
}

/**
 * Layer-4 length as the kernel sees it (skb->len - dataoff, the IP length): l4len when the
 * packet was captured whole (then it is bounded by the IP length only), else derived from the
 * IP length, as a short capture does not shorten what the kernel had.
 */
function l4Length(pkt: Packet): number {
  if (pkt.complete || pkt.ipLen <= 0) return pkt.l4len;
  const n = pkt.ipLen - (pkt.l4off - pkt.l3off);
  return n > pkt.l4len ? n : pkt.l4len;
}

/** seq + payload length + SYN + FIN (segment_seq_plus_len). */
function segEnd(pkt: Packet): number {
  const f = pkt.tcpFlags;
  return (pkt.seq + (l4Length(pkt) - pkt.doff) + (f & TH_SYN ? 1 : 0) + (f & TH_FIN ? 1 : 0)) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Scratch copy of the packed words of the entry being handled.
let cState = 0;
let cLastDir = 0;
let cLastIndex = 0;
let cLastWscale = 0;
let cLastFlags = 0;
let cRetrans = 0;
const cScale = new Int32Array(2);
const cFlags = new Int32Array(2);
/** Reason left by the window check. */
let winReason: string | null = null;

function load(u32: Uint32Array, p: number): void {
  const w = u32[p + TCP_STATE];
  cState = w & 15;
  cLastDir = (w >>> 4) & 1;
  cLastIndex = (w >>> 5) & 7;
  cLastWscale = (w >>> 8) & 15;
  cLastFlags = (w >>> 12) & 0xff;
  cRetrans = (w >>> 20) & 0xff;
  const sf = u32[p + TCP_SCALE_FLAGS];
  cScale[0] = sf & 0xff;
  cFlags[0] = (sf >>> 8) & 0xff;
  cScale[1] = (sf >>> 16) & 0xff;
  cFlags[1] = (sf >>> 24) & 0xff;
}

function store(u32: Uint32Array, p: number): void {
  u32[p + TCP_STATE] =
    (cState | (cLastDir << 4) | (cLastIndex << 5) | (cLastWscale << 8) | (cLastFlags << 12) | (cRetrans << 20)) >>> 0;
  u32[p + TCP_SCALE_FLAGS] =
    (cScale[0] | (cFlags[0] << 8) | (cScale[1] << 16) | (cFlags[1] << 24)) >>> 0;
}

/** First word of direction d's window state. */
function dirBase(p: number, d: number): number {
  return p + TCP_DIR + d * TCP_DIR_WORDS;
}

/**
 * Window scale and SACK-permitted options of a SYN into direction d (tcp_options). The kernel
 * leaves scale and flags untouched when the header has no options at all.
 */
function takeOptions(pkt: Packet, d: number): void {
  if (pkt.doff <= 20) return;
  cScale[d] = 0;
  cFlags[d] &= IP_CT_TCP_FLAG_BE_LIBERAL;
  if (pkt.sackPerm) cFlags[d] |= IP_CT_TCP_FLAG_SACK_PERM;
  if (pkt.wscale >= 0) {
    cScale[d] = pkt.wscale > 14 ? 14 : pkt.wscale;
    cFlags[d] |= IP_CT_TCP_FLAG_WINDOW_SCALE;
  }
}

/** Start tracking a sender from its SYN or SYN/ACK (tcp_init_sender). */
function initSender(u32: Uint32Array, p: number, dir: number, end: number, win: number, pkt: Packet): void {
  const s = dirBase(p, dir);
  u32[s + TD_END] = end;
  u32[s + TD_MAXEND] = end;
  u32[s + TD_MAXWIN] = win === 0 ? 1 : win;
  takeOptions(pkt, dir);
  // Scaling is on only when both sides offered it.
  if (
    dir === DIR_REPL &&
    !(cFlags[dir] & IP_CT_TCP_FLAG_WINDOW_SCALE && cFlags[1 - dir] & IP_CT_TCP_FLAG_WINDOW_SCALE)
  ) {
    cScale[dir] = 0;
    cScale[1 - dir] = 0;
  }
}

const W_IGNORE = 0;
const W_INVALID = 1;
const W_ACCEPT = 2;

/** An out-of-window verdict, unless liberal checking turns it into acceptance. */
function outOfWindow(ctx: TrackerContext, dir: number, verdict: number, reason: string): number {
  if (cFlags[dir] & IP_CT_TCP_FLAG_BE_LIBERAL || ctx.i32[ctx.sys + S_TCP_BE_LIBERAL] !== 0) return W_ACCEPT;
  winReason = reason;
  return verdict;
}

/** MAXACKWINDOW: how far below the receiver's end an ACK may lag. */
function maxAckWindow(maxwin: number): number {
  return maxwin > 66000 ? maxwin : 66000;
}

/** The sequence / ack / window checks and updates (tcp_in_window). */
function inWindow(ctx: TrackerContext, p: number, dir: number, index: number, pkt: Packet): number {
  const u32 = ctx.u32;
  const rdir = 1 - dir;
  const s = dirBase(p, dir);
  const r = dirBase(p, rdir);
  const f = pkt.tcpFlags;
  let seq = pkt.seq >>> 0;
  let ack = pkt.ack >>> 0;
  let sack = ack;
  const winRaw = pkt.window & 0xffff;
  let win = winRaw;
  let end = segEnd(pkt);

  if (cFlags[rdir] & IP_CT_TCP_FLAG_SACK_PERM && pkt.hasSack) {
    sack = pkt.sackMax >>> 0;
  }

  if (u32[s + TD_MAXWIN] === 0) {
    if (f & TH_SYN) {
      initSender(u32, p, dir, end, win, pkt);
      // A SYN from the reply side: simultaneous open, nothing more to check.
      if (!(f & TH_ACK)) return W_ACCEPT;
    } else {
      // First segment of this side of a picked-up connection: take it as it comes.
      u32[s + TD_END] = end;
      const swin = (win << cScale[dir]) >>> 0;
      const mw = swin === 0 ? 1 : swin;
      u32[s + TD_MAXWIN] = mw;
      u32[s + TD_MAXEND] = end + mw;
      if (u32[r + TD_MAXWIN] === 0) {
        // Other side unseen: let its ACK bounds pass until it shows up.
        u32[r + TD_END] = sack;
        u32[r + TD_MAXEND] = sack;
      } else if (sack === ((u32[r + TD_END] + 1) >>> 0)) {
        // Probably answering a keepalive.
        u32[r + TD_END] = sack;
      }
    }
  } else if (f & TH_SYN && after(end, u32[s + TD_END]) &&
             (cState === TCP_CONNTRACK_SYN_SENT || cState === TCP_CONNTRACK_SYN_RECV)) {
    // A newer SYN (higher sequence) during the handshake restarts this side.
    initSender(u32, p, dir, end, win, pkt);
    if (dir === DIR_REPL && !(f & TH_ACK)) return W_ACCEPT;
  }

  const rEnd0 = u32[r + TD_END];
  if (!(f & TH_ACK)) {
    // No ACK: treat as acking everything seen.
    ack = sack = rEnd0;
  } else if ((f & (TH_ACK | TH_RST)) === (TH_ACK | TH_RST) && ack === 0) {
    // Stacks that send RST+ACK with a zero ack.
    ack = sack = rEnd0;
  }

  if (f & TH_RST && seq === 0 && cState === TCP_CONNTRACK_SYN_SENT) {
    // RST answering a SYN.
    seq = end = u32[s + TD_END];
  }

  const sMaxend = u32[s + TD_MAXEND];
  const sEnd = u32[s + TD_END];
  const rMaxwin = u32[r + TD_MAXWIN];
  const rEnd = u32[r + TD_END];
  const ackFloor = rEnd - maxAckWindow(u32[s + TD_MAXWIN]) - 1;

  if (!before(seq, sMaxend + 1)) {
    const overshot = (end - sMaxend + 1) >>> 0;
    const ackOk = after(sack, ackFloor);
    const inRecvWin = rMaxwin !== 0 && after(end, sEnd - rMaxwin - 1);
    if (inRecvWin && ackOk && overshot <= rMaxwin && before(sack, rEnd + 1)) {
      // Sender overran the advertised window a little: remember the data so its ACK passes.
      u32[s + TD_END] = end;
      cFlags[dir] |= IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED;
      return outOfWindow(ctx, dir, W_IGNORE, R_OVERSHOT);
    }
    return outOfWindow(ctx, dir, W_INVALID, R_SEQ_OVER);
  }
  if (!before(sack, rEnd + 1)) return outOfWindow(ctx, dir, W_INVALID, R_ACK_OVER);
  if (!(rMaxwin === 0 || after(end, sEnd - rMaxwin - 1))) return outOfWindow(ctx, dir, W_IGNORE, R_SEQ_UNDER);
  if (!after(sack, ackFloor)) return outOfWindow(ctx, dir, W_IGNORE, R_ACK_UNDER);

  // In window: update the sender.
  if (!(f & TH_SYN)) win = (win << cScale[dir]) >>> 0;
  const swin = (win + (sack - ack)) >>> 0;
  if (u32[s + TD_MAXWIN] < swin) u32[s + TD_MAXWIN] = swin;
  if (after(end, sEnd)) {
    u32[s + TD_END] = end;
    cFlags[dir] |= IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED;
  }
  if (f & TH_ACK) {
    if (!(cFlags[dir] & IP_CT_TCP_FLAG_MAXACK_SET)) {
      u32[s + TD_MAXACK] = ack;
      cFlags[dir] |= IP_CT_TCP_FLAG_MAXACK_SET;
    } else if (after(ack, u32[s + TD_MAXACK])) {
      u32[s + TD_MAXACK] = ack;
    }
  }

  // And the receiver.
  if (rMaxwin !== 0 && after(end, sMaxend)) u32[r + TD_MAXWIN] = rMaxwin + (end - sMaxend);
  if (after(sack + win, u32[r + TD_MAXEND] - 1)) {
    u32[r + TD_MAXEND] = sack + win + (win === 0 ? 1 : 0);
  }
  if (ack === rEnd) cFlags[rdir] &= ~IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED;

  // Count identical ACK segments repeated by the same side.
  if (index === TCP_ACK_SET) {
    if (cLastDir === dir && u32[p + TCP_LAST_SEQ] === seq && u32[p + TCP_LAST_ACK] === ack &&
        u32[p + TCP_LAST_END] === end && u32[p + TCP_LAST_WIN] === winRaw) {
      cRetrans = (cRetrans + 1) & 0xff;
    } else {
      cLastDir = dir;
      u32[p + TCP_LAST_SEQ] = seq;
      u32[p + TCP_LAST_ACK] = ack;
      u32[p + TCP_LAST_END] = end;
      u32[p + TCP_LAST_WIN] = winRaw;
      cRetrans = 0;
    }
  }
  return W_ACCEPT;
}

/**
 * An assured connection got an out-of-window FIN or RST (nf_tcp_handle_invalid): when both
 * sides did so, shorten a long timeout to the unacknowledged one, else remember this one.
 */
function handleInvalid(ctx: TrackerContext, e: number, dir: number, index: number, pkt: Packet, res: ProtoResult): void {
  // Status bits are set by other threads; a plain atomic read of the current value suffices.
  const status = Atomics.load(ctx.i32, e + E_STATUS);
  if (!(status & IPS_ASSURED) || status & IPS_FIXED_TIMEOUT) return;
  if (index !== TCP_RST_SET && index !== TCP_FIN_SET) return;
  if (cLastDir !== dir && (cLastIndex === TCP_FIN_SET || cLastIndex === TCP_RST_SET)) {
    // Remaining lifetime in ms on the table clock (E_TIMEOUT is published by Atomics.store).
    let left = (Atomics.load(ctx.i32, e + E_TIMEOUT) - pkt.now) | 0;
    if (left < 0) left = 0;
    if (left < 120 * 1000) return;
    const unack = timeoutOf(ctx, TCP_CONNTRACK_UNACK);
    if (left > unack * 1000) res.timeout = unack;
  } else {
    cLastIndex = index;
    cLastDir = dir;
  }
}

// ---------------------------------------------------------------------------------------------
// The tracker API.

/** Header sanity (tcp_error): a reason makes the packet invalid, null passes. */
export function tcpError(ctx: TrackerContext, pkt: Packet): string | null {
  if (pkt.doff < 20 || l4Length(pkt) < pkt.doff) return R_TRUNCATED;
  // Our tracker always sits where the kernel's PRE_ROUTING hook does, so the checksum is checked.
  if (ctx.i32[ctx.sys + S_CHECKSUM] !== 0) {
    const k = l4ChecksumCheck(pkt);
    if (k !== CSUM_OK) {
      // An offloaded checksum (partial sum) passes unless strict (nf_conntrack_checksum_offload=0).
      if (k !== CSUM_PARTIAL || ctx.i32[ctx.sys + S_CHECKSUM_OFFLOAD] === 0) return R_CHECKSUM;
      pkt.csumPartial = true;
    }
  }
  if (!VALID_FLAGS[pkt.tcpFlags & ~(TH_ECE | TH_CWR | TH_PSH) & 0x3f]) return R_FLAGS;
  return null;
}

/** Initialise a fresh entry for its first packet (tcp_new); null = ok. */
export function tcpNew(ctx: TrackerContext, e: number, pkt: Packet): string | null {
  const u32 = ctx.u32;
  const p = e + E_PRIV;
  const ns = nextState(DIR_ORIG, classOf(pkt.tcpFlags), TCP_CONNTRACK_NONE);
  if (ns >= TCP_CONNTRACK_MAX) return R_INVALID_NEW;
  if (ns !== TCP_CONNTRACK_SYN_SENT && ctx.i32[ctx.sys + S_TCP_LOOSE] === 0) return R_NO_PICKUP;

  u32.fill(0, p, p + TCP_SCALE_FLAGS + 1);
  cState = TCP_CONNTRACK_NONE;
  cLastDir = 0;
  cLastWscale = 0;
  cLastFlags = 0;
  cRetrans = 0;
  cScale[0] = cScale[1] = 0;
  cFlags[0] = cFlags[1] = 0;

  const o = dirBase(p, DIR_ORIG);
  const end = segEnd(pkt);
  const win = pkt.window & 0xffff;
  const mw = win === 0 ? 1 : win;
  u32[o + TD_END] = end;
  u32[o + TD_MAXWIN] = mw;
  if (ns === TCP_CONNTRACK_SYN_SENT) {
    u32[o + TD_MAXEND] = end;
    takeOptions(pkt, DIR_ORIG);
  } else {
    // Mid-stream pickup: history unknown, so assume SACK and check windows liberally.
    u32[o + TD_MAXEND] = end + mw;
    cFlags[0] = cFlags[1] = IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_BE_LIBERAL;
  }
  cLastIndex = TCP_NONE_SET;
  store(u32, p);
  return null;
}

/**
 * Track one packet of the connection (nf_conntrack_tcp_packet after tcp_error / tcp_new).
 * Returns PROTO_ACCEPT, PROTO_INVALID or PROTO_REPEAT (kill the entry and handle the packet
 * again as the first of a new connection). res.reason: why invalid, or on an accepted packet
 * why it was ignored (the kernel logs these too); res.timeout: seconds to set, -1 = keep;
 * res.events: EV_PROTOINFO / EV_ASSURED, and EV_DESTROY when the connection must be removed
 * now while the packet itself is accepted (RST before any reply).
 */
export function tcpPacket(ctx: TrackerContext, e: number, dir: number, pkt: Packet, res: ProtoResult): number {
  const u32 = ctx.u32;
  const p = e + E_PRIV;
  load(u32, p);
  const verdict = track(ctx, e, p, dir, pkt, res);
  store(u32, p);
  return verdict;
}

function track(ctx: TrackerContext, e: number, p: number, dir: number, pkt: Packet, res: ProtoResult): number {
  const u32 = ctx.u32;
  const index = classOf(pkt.tcpFlags);
  let old = cState;
  let ns = nextState(dir, index, old);
  let checkWindow = true;

  switch (ns) {
    case TCP_CONNTRACK_SYN_SENT:
    case TCP_CONNTRACK_IGNORE: {
      if (ns === TCP_CONNTRACK_SYN_SENT) {
        if (old < TCP_CONNTRACK_TIME_WAIT) break;
        // SYN after a close (TIME_WAIT / CLOSE): reopen when the old one was closed by a FIN
        // or aborted by this side's RST.
        if ((cFlags[0] | cFlags[1]) & IP_CT_TCP_FLAG_CLOSE_INIT ||
            (cLastDir === dir && cLastIndex === TCP_RST_SET)) {
          return PROTO_REPEAT;
        }
        // Otherwise handled as an ignored packet.
      }
      if (index === TCP_SYNACK_SET && cLastIndex === TCP_SYN_SET && cLastDir !== dir &&
          pkt.ack >>> 0 === u32[p + TCP_LAST_END]) {
        // This SYN/ACK answers a SYN we ignored: both ends agree, so resync from that SYN.
        old = TCP_CONNTRACK_SYN_SENT;
        ns = TCP_CONNTRACK_SYN_RECV;
        const ld = cLastDir;
        const b = dirBase(p, ld);
        const lastEnd = u32[p + TCP_LAST_END];
        const lastWin = u32[p + TCP_LAST_WIN];
        u32[b + TD_END] = lastEnd;
        u32[b + TD_MAXEND] = lastEnd;
        u32[b + TD_MAXWIN] = lastWin === 0 ? 1 : lastWin;
        cScale[ld] = cLastWscale;
        cLastFlags &= ~IP_CT_EXP_CHALLENGE_ACK;
        cFlags[ld] = cLastFlags;
        const d = dirBase(p, dir);
        u32[d + TD_END] = 0;
        u32[d + TD_MAXEND] = 0;
        u32[d + TD_MAXWIN] = 0;
        u32[d + TD_MAXACK] = 0;
        cScale[dir] = 0;
        cFlags[dir] &= IP_CT_TCP_FLAG_BE_LIBERAL;
        break;
      }
      // Ignore, but remember the segment in case the peer's answer shows we are out of sync.
      cLastIndex = index;
      cLastDir = dir;
      u32[p + TCP_LAST_SEQ] = pkt.seq;
      u32[p + TCP_LAST_END] = segEnd(pkt);
      u32[p + TCP_LAST_WIN] = pkt.window & 0xffff;
      if (index === TCP_SYN_SET && dir === DIR_ORIG) {
        cLastFlags = 0;
        cLastWscale = 0;
        if (pkt.doff > 20) {
          if (pkt.wscale >= 0) {
            cLastFlags |= IP_CT_TCP_FLAG_WINDOW_SCALE;
            cLastWscale = pkt.wscale > 14 ? 14 : pkt.wscale;
          }
          if (pkt.sackPerm) cLastFlags |= IP_CT_TCP_FLAG_SACK_PERM;
        }
        // The peer may answer with an RFC 5961 challenge ACK, which must not close LAST_ACK.
        if (old === TCP_CONNTRACK_LAST_ACK) cLastFlags |= IP_CT_EXP_CHALLENGE_ACK;
      }
      // A reply ACK to our SYN may be a challenge ACK; its RST answer is matched by this.
      if (old === TCP_CONNTRACK_SYN_SENT && index === TCP_ACK_SET && dir === DIR_REPL) {
        u32[p + TCP_LAST_ACK] = pkt.ack;
      }
      res.reason = R_IGNORED;
      return PROTO_ACCEPT;
    }
    case TCP_CONNTRACK_MAX:
      res.reason = R_INVALID_STATE;
      return PROTO_INVALID;
    case TCP_CONNTRACK_TIME_WAIT:
      // An ACK in LAST_ACK answering an ignored SYN is a challenge ACK, not the last ACK.
      if (old === TCP_CONNTRACK_LAST_ACK && index === TCP_ACK_SET && cLastDir !== dir &&
          cLastIndex === TCP_SYN_SET && cLastFlags & IP_CT_EXP_CHALLENGE_ACK) {
        cLastFlags &= ~IP_CT_EXP_CHALLENGE_ACK;
        res.reason = R_CHALLENGE_ACK;
        return PROTO_ACCEPT;
      }
      break;
    case TCP_CONNTRACK_SYN_SENT2:
      cLastFlags |= IP_CT_TCP_SIMULTANEOUS_OPEN;
      break;
    case TCP_CONNTRACK_SYN_RECV:
      if (dir === DIR_REPL && index === TCP_ACK_SET && cLastFlags & IP_CT_TCP_SIMULTANEOUS_OPEN) {
        ns = TCP_CONNTRACK_ESTABLISHED;
      }
      break;
    case TCP_CONNTRACK_CLOSE: {
      if (index !== TCP_RST_SET) break;
      // Closing already: the tuple may be reused, our sequence state is stale; skip checks.
      if (tcpCanEarlyDropState(old)) {
        checkWindow = false;
        break;
      }
      const status = Atomics.load(ctx.i32, e + E_STATUS);
      const established = old === TCP_CONNTRACK_ESTABLISHED && (status & IPS_ASSURED) !== 0;
      const seq = pkt.seq >>> 0;
      checks: {
        if (cFlags[1 - dir] & IP_CT_TCP_FLAG_MAXACK_SET && cLastIndex !== TCP_SYN_SET) {
          const maxack = u32[dirBase(p, 1 - dir) + TD_MAXACK];
          // Outside ESTABLISHED, seq 0 is likely the answer to a SYN we let through.
          if (seq === 0 && !established) break checks;
          if (before(seq, maxack) && ctx.i32[ctx.sys + S_TCP_IGNORE_INVALID_RST] === 0) {
            res.reason = R_INVALID_RST;
            return PROTO_INVALID;
          }
          if (!established || seq === maxack) break checks;
          // The RST right after this side's last data segment.
          if (cLastIndex === TCP_ACK_SET && cLastDir === dir && seq === u32[p + TCP_LAST_END]) break checks;
          // Sequence not exact: keep the state, the peer may send a challenge ACK.
          ns = old;
        }
        if (((status & IPS_SEEN_REPLY && cLastIndex === TCP_SYN_SET && cLastDir !== dir) ||
             (!(status & IPS_ASSURED) && cLastIndex === TCP_ACK_SET)) &&
            pkt.ack >>> 0 === u32[p + TCP_LAST_END]) {
          // RST answering a SYN or ACK we ignored: accept without window checks. After a SYN
          // only from the other side: 6.18 does not take this for a RST following the sender's
          // own SYN (found by fuzzing, docs/kernel-quirks.md).
          checkWindow = false;
          break checks;
        }
        if (old === TCP_CONNTRACK_SYN_SENT && cLastIndex === TCP_ACK_SET && cLastDir === DIR_REPL &&
            seq === u32[p + TCP_LAST_ACK]) {
          // RST answering a challenge ACK we let through.
          checkWindow = false;
        }
      }
      break;
    }
    default:
      break;
  }

  if (checkWindow) {
    winReason = null;
    const w = inWindow(ctx, p, dir, index, pkt);
    if (w === W_IGNORE) {
      res.reason = winReason;
      return PROTO_ACCEPT;
    }
    if (w === W_INVALID) {
      res.reason = winReason;
      handleInvalid(ctx, e, dir, index, pkt, res);
      return PROTO_INVALID;
    }
  }

  // In-window from here on.
  cLastIndex = index;
  cLastDir = dir;
  cState = ns;
  if (old !== ns && ns === TCP_CONNTRACK_FIN_WAIT) cFlags[dir] |= IP_CT_TCP_FLAG_CLOSE_INIT;

  const tNew = timeoutOf(ctx, ns);
  const tRetrans = timeoutOf(ctx, TCP_CONNTRACK_RETRANS);
  const tUnack = timeoutOf(ctx, TCP_CONNTRACK_UNACK);
  let timeout: number;
  if (cRetrans >= ctx.i32[ctx.sys + S_TCP_MAX_RETRANS] && tNew > tRetrans) timeout = tRetrans;
  else if (index === TCP_RST_SET) timeout = timeoutOf(ctx, TCP_CONNTRACK_CLOSE);
  else if ((cFlags[0] | cFlags[1]) & IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED && tNew > tUnack) timeout = tUnack;
  else if (u32[p + TCP_LAST_WIN] === 0 && tNew > tRetrans) timeout = tRetrans;
  else timeout = tNew;

  if (ns !== old) res.events |= EV_PROTOINFO;

  // SEEN_REPLY is set by the core after an accepted reply; ASSURED only here (Atomics.or:
  // other threads set other status bits concurrently).
  const status = Atomics.load(ctx.i32, e + E_STATUS);
  if (!(status & IPS_SEEN_REPLY)) {
    if (pkt.tcpFlags & TH_RST) {
      // Only a RST came back: no connection, remove it now (the packet still passes).
      res.events |= EV_DESTROY;
      res.timeout = 0;
      return PROTO_ACCEPT;
    }
    // A retransmitted SYN does not extend the entry's life.
    if (index === TCP_SYN_SET && old === TCP_CONNTRACK_SYN_SENT) return PROTO_ACCEPT;
    // Picked up mid-stream and no answer yet: no long ESTABLISHED timeout.
    if (ns === TCP_CONNTRACK_ESTABLISHED && timeout > tUnack) timeout = tUnack;
  } else if (!(status & IPS_ASSURED) &&
             (old === TCP_CONNTRACK_SYN_RECV || old === TCP_CONNTRACK_ESTABLISHED) &&
             ns === TCP_CONNTRACK_ESTABLISHED) {
    Atomics.or(ctx.i32, e + E_STATUS, IPS_ASSURED);
    res.events |= EV_ASSURED;
  }
  res.timeout = timeout;
  return PROTO_ACCEPT;
}

function tcpCanEarlyDropState(state: number): boolean {
  return (
    state === TCP_CONNTRACK_FIN_WAIT ||
    state === TCP_CONNTRACK_LAST_ACK ||
    state === TCP_CONNTRACK_TIME_WAIT ||
    state === TCP_CONNTRACK_CLOSE ||
    state === TCP_CONNTRACK_CLOSE_WAIT
  );
}

/** Current TCP state of the entry. */
export function tcpState(ctx: TrackerContext, e: number): number {
  return ctx.u32[e + E_PRIV + TCP_STATE] & 15;
}

/**
 * The protocol part of the kernel's gc_worker_can_early_drop: under table pressure the GC evicts
 * an entry that is not ASSURED (the core checks that) or whose TCP state is closing.
 */
export function tcpIsClosing(ctx: TrackerContext, e: number): boolean {
  return tcpCanEarlyDropState(tcpState(ctx, e));
}

/** tcp_can_early_drop: FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE. */
export function tcpCanEarlyDrop(ctx: TrackerContext, e: number): boolean {
  return tcpCanEarlyDropState(tcpState(ctx, e));
}

/** What `conntrack -L` prints for the TCP part: the state name. */
export function tcpFormat(ctx: TrackerContext, e: number): string {
  return TCP_STATE_NAMES[tcpState(ctx, e)] ?? 'NONE';
}
