/**
 * SCTP tracker with the decisions of Linux's nf_conntrack_proto_sctp.c (6.x): chunk sanity
 * checks, the CRC32c check, verification tags (RFC 4960 section 8.5 and its special cases), the
 * per-direction state machine, ASSURED on reaching ESTABLISHED, one timeout per state.
 *
 * Private words (layout.ts, SCTP_*): one state word (state and flags) and the verification tag
 * expected in each direction. A packet is worked on in module scratch variables and written back
 * before return: a thread handles one packet at a time, and for a confirmed entry the caller
 * holds the original tuple's bucket lock (a fresh entry is private to the thread).
 */
import { E_PRIV, E_STATUS, IPS_ASSURED, IPS_CONFIRMED, SCTP_STATE, SCTP_VTAG } from '../../table/layout.js';
import { sctpChecksumOk } from '../../input/packet/checksum.js';
import type { Packet } from '../../input/packet/packet.js';
import {
  S_CHECKSUM, S_SCTP_TIMEOUT_CLOSED, S_SCTP_TIMEOUT_COOKIE_ECHOED, S_SCTP_TIMEOUT_COOKIE_WAIT,
  S_SCTP_TIMEOUT_ESTABLISHED, S_SCTP_TIMEOUT_HEARTBEAT_SENT, S_SCTP_TIMEOUT_SHUTDOWN_ACK_SENT,
  S_SCTP_TIMEOUT_SHUTDOWN_RECD, S_SCTP_TIMEOUT_SHUTDOWN_SENT,
} from '../../table/sysctl.js';
import {
  EV_ASSURED, EV_PROTOINFO, PROTO_ACCEPT, PROTO_INVALID, type ProtoResult, type TrackerContext,
} from './l4proto.js';

export const IPPROTO_SCTP = 132;

// ---------------------------------------------------------------------------------------------
// States, kernel numbering (enum sctp_conntrack).
export const SCTP_CONNTRACK_NONE = 0;
export const SCTP_CONNTRACK_CLOSED = 1;
export const SCTP_CONNTRACK_COOKIE_WAIT = 2;
export const SCTP_CONNTRACK_COOKIE_ECHOED = 3;
export const SCTP_CONNTRACK_ESTABLISHED = 4;
export const SCTP_CONNTRACK_SHUTDOWN_SENT = 5;
export const SCTP_CONNTRACK_SHUTDOWN_RECD = 6;
export const SCTP_CONNTRACK_SHUTDOWN_ACK_SENT = 7;
export const SCTP_CONNTRACK_HEARTBEAT_SENT = 8;
/** Table value "invalid". */
export const SCTP_CONNTRACK_MAX = 9;

export const SCTP_STATE_NAMES: readonly string[] = [
  'NONE', 'CLOSED', 'COOKIE_WAIT', 'COOKIE_ECHOED', 'ESTABLISHED', 'SHUTDOWN_SENT',
  'SHUTDOWN_RECD', 'SHUTDOWN_ACK_SENT', 'HEARTBEAT_SENT',
];

// Flags in SCTP_STATE above the state bits.
const STATE_MASK = 0xf;
const F_INIT_ORIG = 1 << 4; // an INIT was seen in the original direction (init[0])
const F_INIT_REPLY = 1 << 5; // ... in the reply direction (init[1])
const F_HB_VTAG_FAILED = 1 << 6; // a HEARTBEAT carried an unexpected tag
const F_LAST_DIR_REPLY = 1 << 7; // direction of that HEARTBEAT

// Chunk types (RFC 4960 section 3.2).
const CID_DATA = 0;
const CID_INIT = 1;
const CID_INIT_ACK = 2;
const CID_HEARTBEAT = 4;
const CID_HEARTBEAT_ACK = 5;
const CID_ABORT = 6;
const CID_SHUTDOWN = 7;
const CID_SHUTDOWN_ACK = 8;
const CID_ERROR = 9;
const CID_COOKIE_ECHO = 10;
const CID_COOKIE_ACK = 11;
const CID_SHUTDOWN_COMPLETE = 14;
/** Chunk flag T (ABORT, SHUTDOWN COMPLETE): the sender used the peer's tag. */
const CHUNK_FLAG_T = 1;

const COMMON_HDR = 12; // source port, destination port, verification tag, checksum
const VTAG_OFF = 4;
const CHUNK_HDR = 4; // type, flags, length
const INIT_HDR = 16; // initiate tag, a_rwnd, streams, initial TSN
/** Chunk types below this are remembered in the per-packet type mask (all that matter are). */
const MASK_TYPES = 32;

export const R_SHORT = 'short SCTP packet';
export const R_CRC = 'bad SCTP CRC32c';
export const R_CHUNKS = 'bad SCTP chunk layout (COOKIE/INIT chunk not alone or first, zero-length chunk, or no chunk)';
export const R_OOTB = 'SCTP ABORT, SHUTDOWN COMPLETE or COOKIE ACK without a connection';
export const R_NEW = 'SCTP chunk cannot start a connection';
export const R_INIT_VTAG = 'SCTP INIT with a non-zero verification tag';
export const R_INIT_SHORT = 'truncated SCTP INIT/INIT ACK chunk';
export const R_VTAG = 'SCTP verification tag mismatch';
export const R_STATE = 'SCTP chunk invalid in this state';

// ---------------------------------------------------------------------------------------------
// The state machine: next state by direction, chunk row and current state (9 columns, NONE
// first). Rows follow ROW_* below; written with short names for readability.
const CL = SCTP_CONNTRACK_CLOSED;
const CW = SCTP_CONNTRACK_COOKIE_WAIT;
const CE = SCTP_CONNTRACK_COOKIE_ECHOED;
const ES = SCTP_CONNTRACK_ESTABLISHED;
const SS = SCTP_CONNTRACK_SHUTDOWN_SENT;
const SR = SCTP_CONNTRACK_SHUTDOWN_RECD;
const SA = SCTP_CONNTRACK_SHUTDOWN_ACK_SENT;
const HS = SCTP_CONNTRACK_HEARTBEAT_SENT;
const IV = SCTP_CONNTRACK_MAX;

const ROWS = 11;
const COLS = SCTP_CONNTRACK_MAX;
/** Row of each chunk type that changes state; -1 for the rest (DATA, SACK, ...). */
const CHUNK_ROW = new Int8Array(256).fill(-1);
CHUNK_ROW[CID_INIT] = 0;
CHUNK_ROW[CID_INIT_ACK] = 1;
CHUNK_ROW[CID_ABORT] = 2;
CHUNK_ROW[CID_SHUTDOWN] = 3;
CHUNK_ROW[CID_SHUTDOWN_ACK] = 4;
CHUNK_ROW[CID_ERROR] = 5;
CHUNK_ROW[CID_COOKIE_ECHO] = 6;
CHUNK_ROW[CID_COOKIE_ACK] = 7;
CHUNK_ROW[CID_SHUTDOWN_COMPLETE] = 8;
CHUNK_ROW[CID_HEARTBEAT] = 9;
CHUNK_ROW[CID_HEARTBEAT_ACK] = 10;

// Columns: from NONE, CLOSED, COOKIE_WAIT, COOKIE_ECHOED, ESTABLISHED, SHUTDOWN_SENT,
// SHUTDOWN_RECD, SHUTDOWN_ACK_SENT, HEARTBEAT_SENT.
const TABLE = new Uint8Array([
  // original direction
  CL, CL, CW, CE, ES, CL, CL, SA, CW, // INIT
  CL, CL, CW, CE, ES, SS, SR, SA, CL, // INIT ACK
  CL, CL, CL, CL, CL, CL, CL, CL, CL, // ABORT
  CL, CL, CW, CE, SS, SS, SR, SA, CL, // SHUTDOWN
  SA, CL, CW, CE, ES, SA, SA, SA, SA, // SHUTDOWN ACK
  CL, CL, CW, CE, ES, SS, SR, SA, CL, // ERROR
  CL, CL, CE, CE, ES, SS, SR, SA, CL, // COOKIE ECHO
  CL, CL, CW, ES, ES, SS, SR, SA, CL, // COOKIE ACK
  CL, CL, CW, CE, ES, SS, SR, CL, CL, // SHUTDOWN COMPLETE
  HS, CL, CW, CE, ES, SS, SR, SA, HS, // HEARTBEAT
  CL, CL, CW, CE, ES, SS, SR, SA, HS, // HEARTBEAT ACK
  // reply direction
  IV, CL, CW, CE, ES, SS, SR, SA, IV, // INIT
  IV, CW, CW, CE, ES, SS, SR, SA, IV, // INIT ACK
  IV, CL, CL, CL, CL, CL, CL, CL, IV, // ABORT
  IV, CL, CW, CE, SR, SS, SR, SA, IV, // SHUTDOWN
  IV, CL, CW, CE, ES, SA, SA, SA, IV, // SHUTDOWN ACK
  IV, CL, CW, CL, ES, SS, SR, SA, IV, // ERROR
  IV, CL, CE, CE, ES, SS, SR, SA, IV, // COOKIE ECHO
  IV, CL, CW, ES, ES, SS, SR, SA, IV, // COOKIE ACK
  IV, CL, CW, CE, ES, SS, SR, CL, IV, // SHUTDOWN COMPLETE
  IV, CL, CW, CE, ES, SS, SR, SA, HS, // HEARTBEAT
  IV, CL, CW, CE, ES, SS, SR, SA, ES, // HEARTBEAT ACK
]);

/** sctp_new_state: the next state, the current one for chunks that change nothing. */
function nextState(dir: number, cur: number, type: number): number {
  const row = CHUNK_ROW[type]!;
  if (row < 0) return cur;
  return TABLE[(dir * ROWS + row) * COLS + cur]!;
}

/** Sysctl of each state's timeout; NONE uses CLOSED's (the kernel's "new" timeout). */
const TIMEOUT_SYSCTL = new Int32Array([
  S_SCTP_TIMEOUT_CLOSED, S_SCTP_TIMEOUT_CLOSED, S_SCTP_TIMEOUT_COOKIE_WAIT,
  S_SCTP_TIMEOUT_COOKIE_ECHOED, S_SCTP_TIMEOUT_ESTABLISHED, S_SCTP_TIMEOUT_SHUTDOWN_SENT,
  S_SCTP_TIMEOUT_SHUTDOWN_RECD, S_SCTP_TIMEOUT_SHUTDOWN_ACK_SENT, S_SCTP_TIMEOUT_HEARTBEAT_SENT,
]);

// ---------------------------------------------------------------------------------------------

function u16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

function u32(b: Uint8Array, o: number): number {
  return (b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!; // int32; compare with |0 values
}

/** Header checks (sctp_error): a full common header and, with nf_conntrack_checksum, the CRC32c. */
export function sctpError(ctx: TrackerContext, pkt: Packet): string | null {
  if (pkt.l4len < COMMON_HDR) return R_SHORT;
  if (ctx.i32[ctx.sys + S_CHECKSUM] !== 0 && !sctpChecksumOk(pkt)) return R_CRC;
  return null;
}

/** Result of basicChecks: the chunk types seen (bit t for type t < MASK_TYPES). */
let chunkMask = 0;

/**
 * do_basic_checks: at least one chunk, none of zero length, COOKIE ECHO / COOKIE ACK only as the
 * first chunk, INIT / INIT ACK / SHUTDOWN COMPLETE only alone. Fills chunkMask.
 */
function basicChecks(b: Uint8Array, q: number, end: number): boolean {
  let mask = 0;
  let alone = false;
  let count = 0;
  for (let o = q + COMMON_HDR; o < end && o + CHUNK_HDR <= end; count++) {
    const type = b[o]!;
    const len = u16(b, o + 2);
    if (type === CID_INIT || type === CID_INIT_ACK || type === CID_SHUTDOWN_COMPLETE) alone = true;
    if (((type === CID_COOKIE_ACK || type === CID_COOKIE_ECHO || alone) && count !== 0) || len === 0) return false;
    if (type < MASK_TYPES) mask |= 1 << type;
    o += (len + 3) & ~3;
  }
  chunkMask = mask;
  return count !== 0;
}

function has(type: number): boolean {
  return (chunkMask & (1 << type)) !== 0;
}

/** Types whose presence skips the plain verification-tag check (they have their own rules). */
const VTAG_SPECIAL = (1 << CID_INIT) | (1 << CID_SHUTDOWN_COMPLETE) | (1 << CID_COOKIE_ECHO) |
  (1 << CID_ABORT) | (1 << CID_SHUTDOWN_ACK) | (1 << CID_HEARTBEAT) | (1 << CID_HEARTBEAT_ACK);
const OOTB_DISCARD = (1 << CID_ABORT) | (1 << CID_SHUTDOWN_COMPLETE) | (1 << CID_COOKIE_ACK);

// Scratch copies of the private words while one packet is handled.
let sWord = 0;
let sVtag0 = 0;
let sVtag1 = 0;

function vtagOf(dir: number): number {
  return dir === 0 ? sVtag0 : sVtag1;
}
function setVtag(dir: number, v: number): void {
  if (dir === 0) sVtag0 = v;
  else sVtag1 = v;
}
function initFlag(dir: number): number {
  return dir === 0 ? F_INIT_ORIG : F_INIT_REPLY;
}

/** sctp_new for a fresh entry: every chunk must be able to open a connection. */
function sctpNew(b: Uint8Array, q: number, end: number, vtag: number): string | null {
  sWord = SCTP_CONNTRACK_NONE;
  sVtag0 = 0;
  sVtag1 = 0;
  for (let o = q + COMMON_HDR; o < end && o + CHUNK_HDR <= end; o += (u16(b, o + 2) + 3) & ~3) {
    const type = b[o]!;
    const ns = nextState(0, SCTP_CONNTRACK_NONE, type);
    if (ns === SCTP_CONNTRACK_NONE || ns === SCTP_CONNTRACK_MAX) return R_NEW;
    if (type === CID_INIT) {
      if (vtag !== 0) return R_INIT_VTAG;
      if (o + CHUNK_HDR + INIT_HDR > end) return R_INIT_SHORT;
      sVtag1 = u32(b, o + CHUNK_HDR); // the peer will use our initiate tag
    } else if (type === CID_HEARTBEAT) {
      sVtag0 = vtag;
    } else {
      // Any other opener is out of the blue: its tag is expected back (a SHUTDOWN ACK's
      // SHUTDOWN COMPLETE, else an ABORT), so it becomes the reply direction's tag.
      sVtag1 = vtag;
    }
  }
  return null;
}

function save(i32: Int32Array, e: number): void {
  i32[e + E_PRIV + SCTP_STATE] = sWord;
  i32[e + E_PRIV + SCTP_VTAG] = sVtag0;
  i32[e + E_PRIV + SCTP_VTAG + 1] = sVtag1;
}

/**
 * One packet of an SCTP connection (nf_conntrack_sctp_packet after sctp_error, which the core
 * runs first). For a confirmed entry the caller holds the original tuple's bucket lock.
 */
export function sctpPacket(
  ctx: TrackerContext, e: number, dir: number, pkt: Packet, res: ProtoResult,
): number {
  const i32 = ctx.i32;
  const b = pkt.buf;
  const q = pkt.l4off;
  const end = q + pkt.l4len;
  if (!basicChecks(b, q, end)) {
    res.reason = R_CHUNKS;
    return PROTO_INVALID;
  }
  const vtag = u32(b, q + VTAG_OFF);
  // Status bits change from several threads: read them atomically.
  const confirmed = (Atomics.load(i32, e + E_STATUS) & IPS_CONFIRMED) !== 0;
  if (!confirmed) {
    if (chunkMask & OOTB_DISCARD) {
      res.reason = R_OOTB;
      return PROTO_INVALID;
    }
    const r = sctpNew(b, q, end, vtag);
    if (r !== null) {
      res.reason = r;
      return PROTO_INVALID;
    }
  } else {
    sWord = i32[e + E_PRIV + SCTP_STATE]!;
    sVtag0 = i32[e + E_PRIV + SCTP_VTAG]!;
    sVtag1 = i32[e + E_PRIV + SCTP_VTAG + 1]!;
  }

  if ((chunkMask & VTAG_SPECIAL) === 0 && vtag !== vtagOf(dir)) {
    res.reason = R_VTAG;
    return PROTO_INVALID; // nothing changed yet
  }

  const other = dir ^ 1;
  let oldState = SCTP_CONNTRACK_NONE;
  let newState = SCTP_CONNTRACK_NONE;
  let ignore = false;
  let events = 0;
  let reason: string | null = null;
  for (let o = q + COMMON_HDR; o < end && o + CHUNK_HDR <= end; o += (u16(b, o + 2) + 3) & ~3) {
    const type = b[o]!;
    const flags = b[o + 1]!;
    // Verification tag rules of RFC 4960 section 8.5.1.
    if (type === CID_INIT) {
      if (vtag !== 0) { reason = R_INIT_VTAG; break; }
    } else if (type === CID_ABORT || type === CID_SHUTDOWN_COMPLETE) {
      const want = flags & CHUNK_FLAG_T ? vtagOf(other) : vtagOf(dir);
      if (vtag !== want) { reason = R_VTAG; break; }
    } else if (type === CID_COOKIE_ECHO) {
      if (vtag !== vtagOf(dir)) { reason = R_VTAG; break; }
    } else if (type === CID_COOKIE_ACK) {
      sWord &= ~(F_INIT_ORIG | F_INIT_REPLY);
    } else if (type === CID_HEARTBEAT) {
      if (vtagOf(dir) === 0) {
        setVtag(dir, vtag);
      } else if (vtag !== vtagOf(dir)) {
        if (has(CID_DATA) || ignore) { reason = R_VTAG; break; }
        // Maybe the peer restarted: remember it and let the packet through untouched.
        sWord = (sWord | F_HB_VTAG_FAILED) & ~F_LAST_DIR_REPLY;
        if (dir !== 0) sWord |= F_LAST_DIR_REPLY;
        ignore = true;
        continue;
      } else {
        sWord &= ~F_HB_VTAG_FAILED;
      }
    } else if (type === CID_HEARTBEAT_ACK) {
      if (vtagOf(dir) === 0) {
        setVtag(dir, vtag);
      } else if (vtag !== vtagOf(dir)) {
        if (has(CID_DATA) || ignore) { reason = R_VTAG; break; }
        const lastDir = sWord & F_LAST_DIR_REPLY ? 1 : 0;
        if ((sWord & F_HB_VTAG_FAILED) === 0 || lastDir === dir) { reason = R_VTAG; break; }
        // The answer to the odd HEARTBEAT: adopt the new tags.
        sWord &= ~F_HB_VTAG_FAILED;
        setVtag(dir, vtag);
        setVtag(other, 0);
      } else {
        sWord &= ~F_HB_VTAG_FAILED;
      }
    }

    oldState = sWord & STATE_MASK;
    newState = nextState(dir, oldState, type);
    if (newState === SCTP_CONNTRACK_MAX) { reason = R_STATE; break; }

    if (type === CID_INIT) {
      if (o + CHUNK_HDR + INIT_HDR > end) { reason = R_INIT_SHORT; break; }
      const mine = initFlag(dir);
      const theirs = initFlag(other);
      if ((sWord & mine) && (sWord & theirs)) sWord &= ~theirs;
      sWord |= mine;
      setVtag(other, u32(b, o + CHUNK_HDR));
      // A retransmitted INIT on a closed connection must not keep it alive.
      if (newState === SCTP_CONNTRACK_CLOSED && oldState === SCTP_CONNTRACK_CLOSED && confirmed) ignore = true;
    } else if (type === CID_INIT_ACK) {
      if (o + CHUNK_HDR + INIT_HDR > end) { reason = R_INIT_SHORT; break; }
      const tag = u32(b, o + CHUNK_HDR);
      const cur = vtagOf(other);
      const mine = (sWord & initFlag(dir)) !== 0;
      const theirs = (sWord & initFlag(other)) !== 0;
      if (!theirs && cur !== 0 && cur !== tag) { reason = R_VTAG; break; }
      if (mine && theirs && cur !== tag) { reason = R_VTAG; break; } // INIT collision
      setVtag(other, tag);
    }

    sWord = (sWord & ~STATE_MASK) | newState;
    if (oldState !== newState) {
      events |= EV_PROTOINFO;
      // Atomics.or: test-and-set, so exactly one thread reports ASSURED.
      if (newState === SCTP_CONNTRACK_ESTABLISHED &&
        (Atomics.or(i32, e + E_STATUS, IPS_ASSURED) & IPS_ASSURED) === 0) events |= EV_ASSURED;
    }
  }
  // Changes made by the chunks before a bad one stay, as in the kernel.
  save(i32, e);
  res.events |= events;
  if (reason !== null) {
    res.reason = reason;
    return PROTO_INVALID;
  }
  // An ignored packet passes without refreshing the timeout.
  if (!ignore) res.timeout = i32[ctx.sys + TIMEOUT_SYSCTL[newState]!]!;
  return PROTO_ACCEPT;
}

/** The timeout (seconds) the entry's state gives on a refresh (the state changes only with one). */
export function sctpStateTimeout(ctx: TrackerContext, e: number): number {
  return ctx.i32[ctx.sys + TIMEOUT_SYSCTL[sctpState(ctx, e)]!]!;
}

/** The state of an entry (SCTP_CONNTRACK_*). */
export function sctpState(ctx: TrackerContext, e: number): number {
  return ctx.i32[e + E_PRIV + SCTP_STATE]! & STATE_MASK;
}

/** The state as `conntrack -L` prints it. */
export function sctpFormat(ctx: TrackerContext, e: number): string {
  return SCTP_STATE_NAMES[sctpState(ctx, e)] ?? 'NONE';
}
