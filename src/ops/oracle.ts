/**
 * Comparing our decisions with the kernel's: an NFLOG capture recorded by
 * scripts/oracle/record.sh carries, for every forwarded packet, the kernel's verdict in its log
 * prefix (`ct:<state>[:<direction>]`). Replaying the capture must give the same verdicts.
 */
import { LINKTYPE_NFLOG, Packet } from '../input/packet/packet.js';
import { nflogPrefix, parseFrame } from '../input/packet/parse.js';
import { readCapture } from '../input/capture/reader.js';
import type { Conntrack } from '../track/core.js';
import { FRAG_DONE, FRAG_DROP, FRAG_HELD, FRAG_NONE, FRAG_PASS } from '../track/verdict.js';
import { replay } from './replay.js';
import { TCP_STATE_NAMES } from '../track/proto/tcp.js';

export interface KernelLabel {
  ctstate: string;
  dir: string | null;
}

/** Parse a recorder prefix such as `ct:established:reply` or `ct:invalid`; null if not ours. */
export function parseLabel(prefix: string | null): KernelLabel | null {
  if (prefix === null || !prefix.startsWith('ct:')) return null;
  const [, state, dir] = prefix.trim().split(':');
  if (!state) return null;
  return { ctstate: state, dir: dir ?? null };
}

export interface Mismatch {
  index: number;
  expected: KernelLabel | null;
  got: KernelLabel;
  reason: string | null;
  tcpState: string | null;
  tsMs: number;
}

export interface OracleComparison {
  packets: number;
  /** Packets carrying a kernel label. */
  labelled: number;
  agree: number;
  mismatches: Mismatch[];
  captureError: string | null;
}

/** Replay an NFLOG capture and compare each packet's decision with the kernel's label. */
export function compareWithKernel(bytes: Uint8Array, sysctls: Record<string, number> = {}): OracleComparison {
  let labelled = 0;
  let agree = 0;
  const mismatches: Mismatch[] = [];
  let expected: KernelLabel | null = null;
  const res = replay(bytes, {
    tableOptions: { sysctls },
    onPacket: (index, v, _pkt, tsMs) => {
      const got: KernelLabel = { ctstate: v.ctstate, dir: v.direction };
      if (expected === null) {
        mismatches.push({ index, expected: null, got, reason: v.reason, tcpState: null, tsMs });
        return;
      }
      labelled++;
      if (expected.ctstate === got.ctstate && expected.dir === got.dir) {
        agree++;
      } else {
        mismatches.push({
          index, expected, got, reason: v.reason,
          tcpState: v.protoState >= 0 ? TCP_STATE_NAMES[v.protoState] ?? null : null, tsMs,
        });
      }
    },
    onRecord: (linktype, buf, off, len) => {
      expected = linktype === LINKTYPE_NFLOG ? parseLabel(nflogPrefix(buf, off, len)) : null;
    },
  });
  res.conntrack.close();
  return { packets: res.packets, labelled, agree, mismatches, captureError: res.error ? res.error.message : null };
}

// ---------------------------------------------------------------------------------------------
// Fragments: the router's ingress capture (wire.pcap, fragments as they arrived) against the
// NFLOG labels of the reassembled datagrams (capture.pcap). The kernel logs each datagram once,
// when FORWARD sees it whole; we decide it on the fragment that completes it.

/** Identity of an IP packet for matching: family, addresses, protocol and the layer-4 bytes. */
function packetKey(pkt: Packet): string {
  let h = 0x811c9dc5;
  const b = pkt.buf;
  const end = pkt.l4off + pkt.l4len;
  for (let k = pkt.l4off; k < end; k++) h = Math.imul(h ^ b[k]!, 0x01000193);
  return `${pkt.family}|${pkt.src.join('.')}|${pkt.dst.join('.')}|${pkt.l4proto}|${pkt.l4len}|${h >>> 0}`;
}

export interface WireComparison {
  /** Packets (fragments included) in the wire capture. */
  wirePackets: number;
  /** Fragments among them. */
  fragments: number;
  /** Datagrams the kernel logged (NFLOG records). */
  kernelDatagrams: number;
  /** Kernel records matched by one of our decided packets / datagrams, and of those, agreeing. */
  matched: number;
  agree: number;
  /** Fragments whose datagram's verdict (ours, reported on its completing fragment) agrees. */
  fragmentsAgree: number;
  /** Fragments we held or dropped whose datagram the kernel never logged either. */
  fragmentsUnlogged: number;
  mismatches: string[];
}

/**
 * Replay `wire` (with defragmentation) and compare each decided packet or reassembled datagram
 * with the kernel's label of the same packet in `nflog`, matched by content in order. Every
 * kernel record must be matched and agree, nothing we decided may be missing from the kernel's
 * log, and fragments we held or dropped must belong to datagrams the kernel did not log.
 */
export function compareWireWithKernel(wire: Uint8Array, nflog: Uint8Array, sysctls: Record<string, number> = {}): WireComparison {
  // The kernel's records: key -> labels in order.
  const kernel = new Map<string, KernelLabel[]>();
  let kernelDatagrams = 0;
  const kpkt = new Packet();
  const reader = readCapture(nflog);
  for (let rec = reader.next(); rec !== null; rec = reader.next()) {
    parseFrame(rec.linktype, rec.buf, rec.off, rec.len, kpkt);
    const label = rec.linktype === LINKTYPE_NFLOG ? parseLabel(nflogPrefix(rec.buf, rec.off, rec.len)) : null;
    if (!label) continue;
    kernelDatagrams++;
    const k = packetKey(kpkt);
    const list = kernel.get(k);
    if (list) list.push(label);
    else kernel.set(k, [label]);
  }
  const mismatches: string[] = [];
  let matched = 0;
  let agree = 0;
  let fragments = 0;
  let fragmentsAgree = 0;
  let fragmentsUnlogged = 0;
  const pending = new Set<number>(); // fragments held, not yet resolved
  let engine: Conntrack | null = null;
  const res = replay(wire, {
    tableOptions: { sysctls },
    onEngine: (c) => { engine = c; },
    onPacket: (index, v, pkt) => {
      const ct = engine!;
      for (const d of ct.fragDropped) for (const tg of d.tags) if (pending.delete(tg)) fragmentsUnlogged++;
      if (v.frag !== FRAG_NONE) fragments++;
      if (v.frag === FRAG_HELD) { pending.add(index); return; }
      const others = Array.from(ct.fragTags.subarray(0, ct.fragTagCount)).filter((x) => x !== index);
      if (v.frag === FRAG_DROP) {
        for (const tg of others) if (pending.delete(tg)) fragmentsUnlogged++;
        fragmentsUnlogged++;
        return;
      }
      const key = packetKey(pkt);
      const list = kernel.get(key);
      const got: KernelLabel = { ctstate: v.ctstate, dir: v.direction };
      if (!list || list.length === 0) {
        mismatches.push(`#${index}: ours ${got.ctstate}/${got.dir}${v.reason ? ` (${v.reason})` : ''}, not in the kernel's log`);
        return;
      }
      const exp = list.shift()!;
      matched++;
      const ok = exp.ctstate === got.ctstate && exp.dir === got.dir;
      if (ok) agree++;
      else mismatches.push(`#${index}: kernel ${exp.ctstate}/${exp.dir}, ours ${got.ctstate}/${got.dir}${v.reason ? ` (${v.reason})` : ''}`);
      if (v.frag === FRAG_DONE) {
        const n = others.length + 1;
        for (const tg of others) pending.delete(tg);
        if (ok) fragmentsAgree += n;
      } else if (v.frag === FRAG_PASS) {
        // Not reassembled (IPv6, length not a multiple of 8): the kernel logs the fragment itself.
        for (const tg of others) if (pending.delete(tg)) fragmentsUnlogged++;
        if (ok) fragmentsAgree++;
      }
    },
  });
  for (const d of res.fragmentsIncomplete ?? []) for (const tg of d.tags) if (pending.delete(tg)) fragmentsUnlogged++;
  res.conntrack.close();
  for (const [k, list] of kernel) for (const l of list) mismatches.push(`kernel ${l.ctstate}/${l.dir} for ${k}: no packet of ours`);
  if (res.error) mismatches.push(`wire capture: ${res.error.message}`);
  return { wirePackets: res.packets, fragments, kernelDatagrams, matched, agree, fragmentsAgree, fragmentsUnlogged, mismatches };
}
