/**
 * Deterministic mixed traffic for pool tests: TCP connections (handshake, data, FIN/RST), UDP
 * request/response, ICMP echo, ICMP errors quoting earlier packets, IPv6, a few broken frames.
 * Connections interleave; each keeps its own packet order; timestamps only grow.
 */
import { LINKTYPE_RAW } from '../../src/input/packet/packet.js';
import { corruptChecksum, icmp4, icmp6, icmpError4, tcp4, tcp6, udp4, udp6 } from './frames.js';

export interface Frame {
  data: Uint8Array;
  tsMs: number;
}

export const TRAFFIC_LINKTYPE = LINKTYPE_RAW;

/** xorshift32: reproducible choices. */
function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

export function traffic(packets: number, seed = 1, t0 = 1_700_000_000_000): Frame[] {
  const r = rng(seed);
  const flows: Uint8Array[][] = [];
  let made = 0;
  let f = 0;
  while (made < packets) {
    const a = `10.${(f >> 8) & 255}.${f & 255}.1`;
    const b = `192.0.2.${(f % 200) + 1}`;
    const sport = 20000 + (f % 40000);
    const kind = f % 7;
    const list: Uint8Array[] = [];
    if (kind <= 2) {
      const isn = 1000 + f * 7;
      const rsn = 500000 + f * 13;
      const six = kind === 2;
      const tcp = six ? tcp6 : tcp4;
      const A = six ? `fd00::${(f & 0xffff).toString(16)}` : a;
      const B = six ? 'fd00:1::1' : b;
      list.push(tcp({ src: A, dst: B, sport, dport: 443, flags: 'S', seq: isn, win: 64240, options: { mss: 1460, wscale: 7, sackPerm: true } }));
      list.push(tcp({ src: B, dst: A, sport: 443, dport: sport, flags: 'SA', seq: rsn, ack: isn + 1, win: 65160, options: { mss: 1460, wscale: 7, sackPerm: true } }));
      list.push(tcp({ src: A, dst: B, sport, dport: 443, flags: 'A', seq: isn + 1, ack: rsn + 1, win: 502 }));
      list.push(tcp({ src: A, dst: B, sport, dport: 443, flags: 'PA', seq: isn + 1, ack: rsn + 1, win: 502, payload: 'hello' }));
      list.push(tcp({ src: B, dst: A, sport: 443, dport: sport, flags: 'A', seq: rsn + 1, ack: isn + 6, win: 509 }));
      if (r() < 0.5) {
        list.push(tcp({ src: A, dst: B, sport, dport: 443, flags: 'FA', seq: isn + 6, ack: rsn + 1, win: 502 }));
        list.push(tcp({ src: B, dst: A, sport: 443, dport: sport, flags: 'FA', seq: rsn + 1, ack: isn + 7, win: 509 }));
        list.push(tcp({ src: A, dst: B, sport, dport: 443, flags: 'A', seq: isn + 7, ack: rsn + 2, win: 502 }));
      } else {
        // An out-of-window segment (invalid) then a RST.
        list.push(tcp({ src: A, dst: B, sport, dport: 443, flags: 'A', seq: isn + 5_000_000, ack: rsn + 1, win: 502 }));
        list.push(tcp({ src: B, dst: A, sport: 443, dport: sport, flags: 'R', seq: rsn + 1, win: 0 }));
      }
    } else if (kind === 3) {
      const q = udp4({ src: a, dst: b, sport, dport: 53, payload: 'query' });
      list.push(q);
      list.push(udp4({ src: b, dst: a, sport: 53, dport: sport, payload: 'answer' }));
      list.push(udp4({ src: a, dst: b, sport, dport: 53, payload: 'again' }));
      // The router reports the next query unreachable: RELATED to the flow.
      list.push(icmpError4(3, 3, q, { src: b, dst: a }));
    } else if (kind === 4) {
      list.push(icmp4({ src: a, dst: b, id: f & 0xffff, seq: 1 }));
      list.push(icmp4({ src: b, dst: a, type: 0, id: f & 0xffff, seq: 1 }));
      list.push(icmp6({ src: `fd00::${(f & 0xffff).toString(16)}`, dst: 'fd00:2::1', id: f & 0xffff }));
    } else if (kind === 5) {
      list.push(udp6({ src: `fd00::${(f & 0xffff).toString(16)}`, dst: 'fd00:3::1', sport, dport: 123, payload: 'ntp' }));
      list.push(udp6({ src: 'fd00:3::1', dst: `fd00::${(f & 0xffff).toString(16)}`, sport: 123, dport: sport, payload: 'ntp' }));
    } else {
      // Broken frames and strays: bad checksum, ICMP error for nothing, a mid-stream ACK.
      list.push(corruptChecksum(udp4({ src: a, dst: b, sport, dport: 9, payload: 'x' })));
      list.push(icmpError4(3, 1, udp4({ src: a, dst: b, sport: sport + 1, dport: 7 }), { src: b, dst: a }));
      list.push(tcp4({ src: a, dst: b, sport, dport: 22, flags: 'A', seq: 77, ack: 88, win: 100 }));
    }
    flows.push(list);
    made += list.length;
    f++;
  }
  // Interleave: repeatedly take the next packet of a random live flow among a window of flows.
  const out: Frame[] = [];
  const pos = new Array<number>(flows.length).fill(0);
  let lo = 0;
  let ts = t0;
  const window = 16;
  while (out.length < packets && lo < flows.length) {
    const hi = Math.min(flows.length, lo + window);
    const k = lo + Math.floor(r() * (hi - lo));
    const list = flows[k]!;
    if (pos[k]! < list.length) {
      ts += Math.floor(r() * 3);
      out.push({ data: list[pos[k]!++]!, tsMs: ts });
    }
    while (lo < flows.length && pos[lo]! >= flows[lo]!.length) lo++;
  }
  return out;
}
