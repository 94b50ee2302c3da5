/**
 * Comparing our decisions with the kernel's: an NFLOG capture recorded by
 * scripts/oracle/record.sh carries, for every forwarded packet, the kernel's verdict in its log
 * prefix (`ct:<state>[:<direction>]`). Replaying the capture must give the same verdicts.
 */
import { LINKTYPE_NFLOG } from '../input/packet/packet.js';
import { nflogPrefix } from '../input/packet/parse.js';
import { replay } from './replay.js';
import { TCP_STATE_NAMES } from '../track/proto/tcp.js';

/** The kernel's verdict for one packet, read from an NFLOG prefix. */
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

/** One packet where we decided differently from the kernel. */
export interface Mismatch {
  index: number;
  expected: KernelLabel | null;
  got: KernelLabel;
  reason: string | null;
  tcpState: string | null;
  tsMs: number;
}

/** The result of compareWithKernel(): packets compared, and the mismatches. */
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
