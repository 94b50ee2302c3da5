/**
 * IPv4 reassembly rules (the kernel's ip_frag_queue / ip_frag_reasm, net/ipv4/ip_fragment.c, as
 * nf_defrag_ipv4 uses them): queues keyed by (source, destination, id, protocol, zone); a
 * non-last fragment's length is rounded down to 8 bytes; a last fragment that disagrees with
 * what is known, a fragment past a known end, an empty fragment or an overlap drops the whole
 * queue; a duplicate (inside what is held) is dropped alone; the datagram must fit 64 KiB.
 * Every failure consumes the fragment (the kernel steals it), nothing is passed on in pieces.
 */
import type { Packet } from '../packet/packet.js';
import { fold16, sum16 } from '../packet/checksum.js';
import {
  CHUNK, F_END, F_HDR, F_NEXT, F_OFF, FRAG_COST, type FragStore, INSERT_DUP, INSERT_NOMEM, INSERT_OK, IP_MAX,
  Q_ECN, Q_FIRST, Q_FLAGS, Q_FRAGS, Q_LEN, Q_MEAT, QF_FIRST_IN, QF_LAST_IN, QUEUE_COST,
} from './store.js';
import {
  DF_DONE, DF_DROP, DF_HELD, type Defrag, R_FRAG_BAD_END, R_FRAG_DUP, R_FRAG_ECN, R_FRAG_EMPTY, R_FRAG_NOMEM,
  R_FRAG_OVERLAP, R_FRAG_TOO_BIG, R_FRAG_TRUNC, ecnBit,
} from './defrag.js';

const IP_MF = 0x2000;
const IP_OFFSET = 0x1fff;

/** Drop the fragment (and its queue when `q >= 0`, listing the queue's fragments first). */
function drop(d: Defrag, s: FragStore, q: number, reason: string): void {
  if (q >= 0) {
    d.listTags(s, q);
    s.kill(q);
  }
  d.status = DF_DROP;
  d.reason = reason;
}

export function defrag4(d: Defrag, s: FragStore, pkt: Packet, zone: number, now: number, tag: number): void {
  const b = pkt.buf;
  const p = pkt.l3off;
  const ihl = pkt.l4off - p;
  const tot = pkt.ipLen;
  if (pkt.l4len < tot - ihl) {
    // Snaplen cut the payload: what is missing cannot be reassembled.
    d.status = DF_DROP;
    d.reason = R_FRAG_TRUNC;
    return;
  }
  const fw = (b[p + 6]! << 8) | b[p + 7]!;
  const offset = (fw & IP_OFFSET) << 3;
  let end = offset + tot - ihl;
  const id = (b[p + 4]! << 8) | b[p + 5]!;
  const v4 = true;
  s.lock(d.owner);
  try {
    d.expireLocked(s, now);
    const high = d.high(s, v4);
    let q = s.find(pkt.family, pkt.l4proto, id, zone, pkt.src, pkt.dst);
    if (q < 0) {
      if (!d.makeRoom(s, QUEUE_COST, high, d.low(v4), -1)) return drop(d, s, -1, R_FRAG_NOMEM);
      q = s.create(pkt.family, pkt.l4proto, id, zone, pkt.src, pkt.dst, now + d.timeoutMs(v4), high);
      if (q < 0) return drop(d, s, -1, R_FRAG_NOMEM);
    }
    const i32 = s.i32;
    const o = s.q(q);
    const flags = i32[o + Q_FLAGS]!;
    if ((fw & IP_MF) === 0) {
      // The last fragment: it fixes the length, which must agree with what is known.
      if (end < i32[o + Q_LEN]! || ((flags & QF_LAST_IN) !== 0 && end !== i32[o + Q_LEN])) return drop(d, s, q, R_FRAG_BAD_END);
      i32[o + Q_FLAGS] = flags | QF_LAST_IN;
      i32[o + Q_LEN] = end;
    } else {
      end &= ~7; // a non-last fragment carries a multiple of 8 bytes (the rest is trimmed)
      if (end > i32[o + Q_LEN]!) {
        if (flags & QF_LAST_IN) return drop(d, s, q, R_FRAG_BAD_END);
        i32[o + Q_LEN] = end;
      }
    }
    if (end === offset) return drop(d, s, q, R_FRAG_EMPTY);
    // The first fragment keeps its header for the reassembled datagram.
    const hdr = offset === 0 ? ihl : 0;
    const n = hdr + end - offset;
    const need = FRAG_COST + Math.ceil(n / CHUNK) * CHUNK;
    if (!d.makeRoom(s, need, high, d.low(v4), q)) return drop(d, s, q, R_FRAG_NOMEM);
    const r = s.insert(q, offset, end, b, p + ihl - hdr, hdr, tag, high);
    if (r !== INSERT_OK) {
      if (r === INSERT_DUP) return drop(d, s, -1, R_FRAG_DUP);
      return drop(d, s, q, r === INSERT_NOMEM ? R_FRAG_NOMEM : R_FRAG_OVERLAP);
    }
    i32[o + Q_MEAT]! += end - offset;
    i32[o + Q_ECN]! |= ecnBit(b[p + 1]!);
    if (offset === 0) i32[o + Q_FLAGS]! |= QF_FIRST_IN;
    if (i32[o + Q_FLAGS] !== (QF_FIRST_IN | QF_LAST_IN) || i32[o + Q_MEAT] !== i32[o + Q_LEN]) {
      d.status = DF_HELD;
      return;
    }
    reasm4(d, s, q);
  } finally {
    s.unlock();
  }
}

/** Build the datagram (ip_frag_reasm): first fragment's header, every payload at its offset. */
function reasm4(d: Defrag, s: FragStore, q: number): void {
  const i32 = s.i32;
  const o = s.q(q);
  const first = i32[o + Q_FIRST]!;
  const ihl = i32[s.f(first) + F_HDR]!;
  const len = ihl + i32[o + Q_LEN]!;
  if (len > IP_MAX) return drop(d, s, q, R_FRAG_TOO_BIG);
  const ecn = d.ecn(s, q);
  if (ecn < 0) return drop(d, s, q, R_FRAG_ECN);
  const out = d.out;
  s.copyOut(first, 0, ihl, out, 0);
  for (let f = i32[o + Q_FRAGS]!; f >= 0; f = i32[s.f(f) + F_NEXT]!) {
    const fo = s.f(f);
    const off = i32[fo + F_OFF]!;
    s.copyOut(f, i32[fo + F_HDR]!, i32[fo + F_END]! - off, out, ihl + off);
  }
  out[1] = out[1]! | ecn;
  out[2] = len >> 8;
  out[3] = len & 0xff;
  out[6] = 0; // no longer a fragment
  out[7] = 0;
  out[10] = 0;
  out[11] = 0;
  const c = ~fold16(sum16(out, 0, ihl)) & 0xffff;
  out[10] = c >> 8;
  out[11] = c & 0xff;
  d.outLen = len;
  d.listTags(s, q);
  s.kill(q);
  d.status = DF_DONE;
}
