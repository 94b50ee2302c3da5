/**
 * Connections made with real packets through Conntrack.frame (raw IPv4), for GC and
 * reclamation tests. Each helper returns the verdict's slot of the connection (or -1).
 */
import type { Conntrack } from '../../src/track/core.js';
import { LINKTYPE_RAW } from '../../src/input/packet/packet.js';
import { tcp4, udp4 } from './frames.js';

export function feed(ct: Conntrack, frame: Uint8Array, now: number): ReturnType<Conntrack['frame']> {
  return ct.frame(LINKTYPE_RAW, frame, 0, frame.length, now);
}

/** Client address of connection i (distinct tuples for i < 65536). */
export function client(i: number): string {
  return `10.1.${(i >> 8) & 255}.${i & 255}`;
}

/** One UDP packet, no reply: a not-ASSURED entry (udp timeout). */
export function udpOneWay(ct: Conntrack, i: number, now: number): ReturnType<Conntrack['frame']> {
  return feed(ct, udp4({ src: client(i), dst: '192.0.2.1', sport: 5000, dport: 53, payload: 'q' }), now);
}

/** Request, reply, and a request more than 2 s later: an ASSURED UDP stream. */
export function udpAssured(ct: Conntrack, i: number, now: number): number {
  const a = client(i);
  feed(ct, udp4({ src: a, dst: '192.0.2.2', sport: 6000, dport: 53, payload: 'q' }), now - 2500);
  feed(ct, udp4({ src: '192.0.2.2', dst: a, sport: 53, dport: 6000, payload: 'r' }), now - 2500);
  return feed(ct, udp4({ src: a, dst: '192.0.2.2', sport: 6000, dport: 53, payload: 'q' }), now).slot;
}

/** SYN, SYN/ACK, ACK: an ASSURED TCP entry in ESTABLISHED (established timeout). */
export function tcpEstablished(ct: Conntrack, i: number, now: number, dst = '192.0.2.3'): number {
  const a = client(i);
  feed(ct, tcp4({ src: a, dst, sport: 40000, dport: 80, flags: 'S', seq: 1000, win: 64000 }), now);
  feed(ct, tcp4({ src: dst, dst: a, sport: 80, dport: 40000, flags: 'SA', seq: 5000, ack: 1001, win: 64000 }), now);
  return feed(ct, tcp4({ src: a, dst, sport: 40000, dport: 80, flags: 'A', seq: 1001, ack: 5001, win: 64000 }), now).slot;
}

/** An established connection whose client then sent a FIN: ASSURED, TCP closing (FIN_WAIT). */
export function tcpClosing(ct: Conntrack, i: number, now: number): number {
  const dst = '192.0.2.4';
  tcpEstablished(ct, i, now, dst);
  return feed(ct, tcp4({ src: client(i), dst, sport: 40000, dport: 80, flags: 'FA', seq: 1001, ack: 5001, win: 64000 }), now).slot;
}

/** A fresh SYN from a new client: the first packet of a new connection. */
export function tcpSyn(ct: Conntrack, i: number, now: number): ReturnType<Conntrack['frame']> {
  return feed(ct, tcp4({ src: client(i), dst: '192.0.2.5', sport: 41000, dport: 80, flags: 'S', seq: 7, win: 64000 }), now);
}
