/**
 * IPv6 reassembly rules (the kernel's nf_ct_frag6_gather / nf_ct_frag6_queue / nf_ct_frag6_reasm,
 * net/ipv6/netfilter/nf_conntrack_reasm.c): queues keyed by (source, destination, id, zone),
 * no protocol; RFC 5722: an overlapping fragment drops the whole datagram; a duplicate is
 * dropped alone; a fragment past 64 KiB, a last fragment that disagrees with the known length,
 * a fragment past a known end or an empty one is dropped alone (the queue stays); a non-last
 * fragment whose length is not a multiple of 8 kills its queue and goes on unreassembled (the
 * tracker then decides it as it is). Atomic fragments (offset 0, no M flag) never get here: the
 * parser treats them as unfragmented. The reassembled datagram has no fragment header.
 */
import type { Packet } from '../packet/packet.js';
import {
  CHUNK, F_END, F_HDR, F_NEXT, F_OFF, FRAG_COST, type FragStore, INSERT_DUP, INSERT_NOMEM, INSERT_OK, IP_MAX,
  Q_ECN, Q_FIRST, Q_FLAGS, Q_FRAGS, Q_LEN, Q_MEAT, Q_NHOFF, QF_FIRST_IN, QF_LAST_IN, QUEUE_COST,
} from './store.js';
import {
  DF_DONE, DF_DROP, DF_HELD, DF_PASS, type Defrag, R_FRAG_BAD_END, R_FRAG_DUP, R_FRAG_ECN, R_FRAG_EMPTY,
  R_FRAG_NOMEM, R_FRAG_OVERLAP, R_FRAG_TOO_BIG, R_FRAG_TRUNC, R_FRAG_UNALIGNED, ecnBit,
} from './defrag.js';

const NEXTHDR_HOP = 0;
const NEXTHDR_ROUTING = 43;
const NEXTHDR_FRAGMENT = 44;
const NEXTHDR_AUTH = 51;
const NEXTHDR_DEST = 60;
const IPV6_HDR = 40;
const FRAG_HDR = 8;
const IP6_MF = 1;

/** Results of findFragHeader (module scratch, no allocation). */
let fhoff = 0;
let prevhoff = 0;

/**
 * find_prev_fhdr: walk the extension headers before the fragment header; sets fhoff (its
 * offset) and prevhoff (the byte naming it). False when there is none within [p, end).
 */
function findFragHeader(b: Uint8Array, p: number, end: number): boolean {
  let nh = b[p + 6]!;
  let prev = p + 6;
  let at = p + IPV6_HDR;
  while (nh !== NEXTHDR_FRAGMENT) {
    if (nh !== NEXTHDR_HOP && nh !== NEXTHDR_ROUTING && nh !== NEXTHDR_AUTH && nh !== NEXTHDR_DEST) return false;
    if (end - at < 2) return false;
    const len = nh === NEXTHDR_AUTH ? (b[at + 1]! + 2) << 2 : (b[at + 1]! + 1) << 3;
    prev = at;
    nh = b[at]!;
    at += len;
  }
  if (end - at < FRAG_HDR) return false;
  fhoff = at;
  prevhoff = prev;
  return true;
}

function drop(d: Defrag, s: FragStore, q: number, reason: string): void {
  if (q >= 0) {
    d.listTags(s, q);
    s.kill(q);
  }
  d.status = DF_DROP;
  d.reason = reason;
}

export function defrag6(d: Defrag, s: FragStore, pkt: Packet, zone: number, now: number, tag: number): void {
  const b = pkt.buf;
  const p = pkt.l3off;
  const plen = (b[p + 4]! << 8) | b[p + 5]!;
  if (plen === 0) return; // a jumbogram carries no fragment header: DF_PASS
  const captured = pkt.l4off + pkt.l4len;
  if (!findFragHeader(b, p, captured)) return;
  if (captured - p < IPV6_HDR + plen) {
    d.status = DF_DROP;
    d.reason = R_FRAG_TRUNC;
    return;
  }
  const fo = (b[fhoff + 2]! << 8) | b[fhoff + 3]!;
  const offset = fo & ~7;
  const end = offset + plen - (fhoff + FRAG_HDR - (p + IPV6_HDR));
  const id = ((b[fhoff + 4]! << 24) | (b[fhoff + 5]! << 16) | (b[fhoff + 6]! << 8) | b[fhoff + 7]!) | 0;
  if (end > IP_MAX) return drop(d, s, -1, R_FRAG_TOO_BIG);
  const v4 = false;
  const fh = fhoff;
  const prev = prevhoff;
  s.lock(d.owner);
  try {
    d.expireLocked(s, now);
    const high = d.high(s, v4);
    let q = s.find(pkt.family, 0, id, zone, pkt.src, pkt.dst);
    if (q < 0) {
      if (!d.makeRoom(s, QUEUE_COST, high, d.low(v4), -1)) return drop(d, s, -1, R_FRAG_NOMEM);
      q = s.create(pkt.family, 0, id, zone, pkt.src, pkt.dst, now + d.timeoutMs(v4), high);
      if (q < 0) return drop(d, s, -1, R_FRAG_NOMEM);
    }
    const i32 = s.i32;
    const o = s.q(q);
    const flags = i32[o + Q_FLAGS]!;
    if ((fo & IP6_MF) === 0) {
      if (end < i32[o + Q_LEN]! || ((flags & QF_LAST_IN) !== 0 && end !== i32[o + Q_LEN])) return drop(d, s, -1, R_FRAG_BAD_END);
      i32[o + Q_FLAGS] = flags | QF_LAST_IN;
      i32[o + Q_LEN] = end;
    } else {
      if (end & 7) {
        // RFC 8200 wants a multiple of 8: the queue goes, the fragment passes unreassembled.
        d.listTags(s, q);
        s.kill(q);
        d.status = DF_PASS;
        d.reason = R_FRAG_UNALIGNED;
        return;
      }
      if (end > i32[o + Q_LEN]!) {
        if (flags & QF_LAST_IN) return drop(d, s, -1, R_FRAG_BAD_END);
        i32[o + Q_LEN] = end;
      }
    }
    if (end === offset) return drop(d, s, -1, R_FRAG_EMPTY);
    // The first fragment keeps the unfragmentable part and its fragment header.
    const hdr = offset === 0 ? fh + FRAG_HDR - p : 0;
    const n = hdr + end - offset;
    const need = FRAG_COST + Math.ceil(n / CHUNK) * CHUNK;
    if (!d.makeRoom(s, need, high, d.low(v4), q)) return drop(d, s, q, R_FRAG_NOMEM);
    const r = s.insert(q, offset, end, b, fh + FRAG_HDR - hdr, hdr, tag, high);
    if (r !== INSERT_OK) {
      if (r === INSERT_DUP) return drop(d, s, -1, R_FRAG_DUP);
      return drop(d, s, q, r === INSERT_NOMEM ? R_FRAG_NOMEM : R_FRAG_OVERLAP);
    }
    i32[o + Q_MEAT]! += end - offset;
    const tc = ((b[p]! & 0xf) << 4) | (b[p + 1]! >> 4);
    i32[o + Q_ECN]! |= ecnBit(tc);
    if (offset === 0) {
      i32[o + Q_FLAGS]! |= QF_FIRST_IN;
      // Where the next-header byte naming the fragment header is, and what the fragment header names.
      i32[o + Q_NHOFF] = (prev - p) | (b[fh]! << 16);
    }
    if (i32[o + Q_FLAGS] !== (QF_FIRST_IN | QF_LAST_IN) || i32[o + Q_MEAT] !== i32[o + Q_LEN]) {
      d.status = DF_HELD;
      return;
    }
    reasm6(d, s, q);
  } finally {
    s.unlock();
  }
}

/** nf_ct_frag6_reasm: the unfragmentable part of the first fragment, then every payload; no fragment header. */
function reasm6(d: Defrag, s: FragStore, q: number): void {
  const i32 = s.i32;
  const o = s.q(q);
  const first = i32[o + Q_FIRST]!;
  const unfrag = i32[s.f(first) + F_HDR]! - FRAG_HDR;
  const payload = unfrag - IPV6_HDR + i32[o + Q_LEN]!;
  if (payload > IP_MAX) return drop(d, s, q, R_FRAG_TOO_BIG);
  const ecn = d.ecn(s, q);
  if (ecn < 0) return drop(d, s, q, R_FRAG_ECN);
  const out = d.out;
  s.copyOut(first, 0, unfrag, out, 0);
  for (let f = i32[o + Q_FRAGS]!; f >= 0; f = i32[s.f(f) + F_NEXT]!) {
    const fo = s.f(f);
    const off = i32[fo + F_OFF]!;
    s.copyOut(f, i32[fo + F_HDR]!, i32[fo + F_END]! - off, out, unfrag + off);
  }
  const nh = i32[o + Q_NHOFF]!;
  out[nh & 0xffff] = nh >>> 16;
  out[1] = out[1]! | (ecn << 4);
  out[4] = payload >> 8;
  out[5] = payload & 0xff;
  d.outLen = IPV6_HDR + payload;
  d.listTags(s, q);
  s.kill(q);
  d.status = DF_DONE;
}
