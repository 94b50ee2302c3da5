/**
 * Frame builders for tests: raw IPv4/IPv6 packets with TCP, UDP, ICMP, ICMPv6 (correct checksums),
 * ICMP errors quoting an inner packet, and link-layer wrappers (Ethernet with VLAN tags, Linux
 * cooked SLL/SLL2, NFLOG).
 *
 *   const syn = tcp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 40000, dport: 80, flags: 'S',
 *                      seq: 1000, options: { mss: 1460, wscale: 7, sackPerm: true } });
 *   parseFrame(LINKTYPE_ETHERNET, eth(syn), 0, eth(syn).length, pkt);
 *
 * The checksum code here is deliberately separate from src/input/packet/checksum.ts so the tests
 * cross-check it.
 */

import { parseFrame } from '../../src/input/packet/parse.js';
import {
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  LINKTYPE_RAW,
  Packet,
} from '../../src/input/packet/packet.js';

export type Payload = Uint8Array | string | number | readonly number[];

// ---------------------------------------------------------------------------------------------
// Addresses

/** '10.0.0.1' as a big-endian uint32 (how Packet.src[0] holds it). */
export function ip4(addr: string): number {
  const parts = addr.split('.');
  if (parts.length !== 4) throw new Error(`bad IPv4 address ${addr}`);
  let v = 0;
  for (const p of parts) {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 0 || n > 255) throw new Error(`bad IPv4 address ${addr}`);
    v = v * 256 + n;
  }
  return v;
}

/** IPv6 text (with '::' and an optional dotted IPv4 tail) to 16 bytes. */
export function ip6Bytes(addr: string): Uint8Array {
  let s = addr;
  const lastColon = s.lastIndexOf(':');
  const tailStr = s.slice(lastColon + 1);
  if (tailStr.includes('.')) {
    const v4 = ip4(tailStr);
    s = s.slice(0, lastColon + 1) + (v4 >>> 16).toString(16) + ':' + (v4 & 0xffff).toString(16);
  }
  const tail: number[] = [];
  const halves = s.split('::');
  if (halves.length > 2) throw new Error(`bad IPv6 address ${addr}`);
  const parse = (h: string): number[] => (h === '' ? [] : h.split(':').map((g) => {
    const n = parseInt(g, 16);
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new Error(`bad IPv6 address ${addr}`);
    return n;
  }));
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  const groups = 8 - tail.length;
  let words: number[];
  if (halves.length === 2) {
    const zeros = groups - head.length - rest.length;
    if (zeros < 0) throw new Error(`bad IPv6 address ${addr}`);
    words = [...head, ...new Array<number>(zeros).fill(0), ...rest, ...tail];
  } else {
    words = [...head, ...tail];
  }
  if (words.length !== 8) throw new Error(`bad IPv6 address ${addr}`);
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** An address as the 4 words Packet.src/dst hold (IPv4 in word 0, the rest zero). */
export function addrWords(addr: string): number[] {
  if (!addr.includes(':')) return [ip4(addr), 0, 0, 0];
  const b = ip6Bytes(addr);
  const w: number[] = [];
  for (let i = 0; i < 16; i += 4) w.push(((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0);
  return w;
}

function ip4Bytes(addr: string): Uint8Array {
  const v = ip4(addr);
  return Uint8Array.of(v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
}

// ---------------------------------------------------------------------------------------------
// Bytes

export function bytes(p: Payload | undefined): Uint8Array {
  if (p === undefined) return new Uint8Array(0);
  if (typeof p === 'string') return new TextEncoder().encode(p);
  if (typeof p === 'number') {
    const b = new Uint8Array(p);
    for (let i = 0; i < p; i++) b[i] = (i * 7 + 3) & 0xff;
    return b;
  }
  return Uint8Array.from(p);
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Hex string (whitespace ignored) to bytes. */
export function hex(s: string): Uint8Array {
  const t = s.replace(/\s+/g, '');
  const out = new Uint8Array(t.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(t.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 255;
  b[o + 1] = v & 255;
}

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 255;
  b[o + 1] = (v >>> 16) & 255;
  b[o + 2] = (v >>> 8) & 255;
  b[o + 3] = v & 255;
}

/** Plain RFC 1071 checksum over the concatenation of parts (independent of src/). */
export function inetChecksum(...parts: Uint8Array[]): number {
  const all = concat(...parts);
  let s = 0;
  for (let i = 0; i < all.length; i += 2) s += (all[i] << 8) + (i + 1 < all.length ? all[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 65536);
  return ~s & 0xffff;
}

// ---------------------------------------------------------------------------------------------
// IP

export interface Ext6 {
  /** 'hop' (0), 'routing' (43), 'frag' (44), 'dst' (60), 'ah' (51), or a number. */
  type: 'hop' | 'routing' | 'frag' | 'dst' | 'ah' | number;
  /** Option/data bytes after the 2-byte header (padded to the header's unit); fragment: ignored. */
  body?: number;
  /** Fragment header: offset in bytes (multiple of 8), more-fragments flag, id. */
  offset?: number;
  more?: boolean;
  id?: number;
}

export interface IpOpts {
  src?: string;
  dst?: string;
  /** IPv4 TTL / IPv6 hop limit (default 64). */
  ttl?: number;
  /** IPv4 identification. */
  id?: number;
  tos?: number;
  df?: boolean;
  /** IPv4 more-fragments flag. */
  mf?: boolean;
  /** IPv4 fragment offset in bytes (multiple of 8). */
  fragOffset?: number;
  /** IPv4 options (padded to 4 bytes with EOL). */
  ipOptions?: readonly number[] | Uint8Array;
  /** Override the IPv4 total length / IPv6 payload length field. */
  ipLength?: number;
  /** Leave a wrong IPv4 header checksum. */
  badIpChecksum?: boolean;
  /** IPv6 extension headers, in order, before the upper-layer header. */
  ext?: readonly Ext6[];
  /** Bytes appended after the packet (not counted in the IP length: e.g. Ethernet padding). */
  trailer?: number;
}

const EXT_NUM: Record<string, number> = { hop: 0, routing: 43, frag: 44, dst: 60, ah: 51 };

function v6(o: IpOpts): boolean {
  return (o.src ?? '').includes(':') || (o.dst ?? '').includes(':');
}

/** Raw IPv4 packet: header (+ options) then `payload` as layer 4. */
export function ipv4(proto: number, payload: Uint8Array, o: IpOpts = {}): Uint8Array {
  const opts = o.ipOptions ? Uint8Array.from(o.ipOptions) : new Uint8Array(0);
  const optLen = (opts.length + 3) & ~3;
  const ihl = 20 + optLen;
  const trailer = o.trailer ?? 0;
  const b = new Uint8Array(ihl + payload.length + trailer);
  b[0] = 0x40 | (ihl >> 2);
  b[1] = o.tos ?? 0;
  put16(b, 2, o.ipLength ?? ihl + payload.length);
  put16(b, 4, o.id ?? 0x1234);
  const frag = (o.df ? 0x4000 : 0) | (o.mf ? 0x2000 : 0) | (((o.fragOffset ?? 0) >> 3) & 0x1fff);
  put16(b, 6, frag);
  b[8] = o.ttl ?? 64;
  b[9] = proto;
  b.set(ip4Bytes(o.src ?? '10.0.0.1'), 12);
  b.set(ip4Bytes(o.dst ?? '10.0.0.2'), 16);
  b.set(opts, 20);
  put16(b, 10, inetChecksum(b.subarray(0, ihl)) ^ (o.badIpChecksum ? 0x0f0f : 0));
  b.set(payload, ihl);
  for (let i = 0; i < trailer; i++) b[ihl + payload.length + i] = 0xee;
  return b;
}

/** Raw IPv6 packet: header, extension headers, then `payload` as the upper layer `proto`. */
export function ipv6(proto: number, payload: Uint8Array, o: IpOpts = {}): Uint8Array {
  const exts = o.ext ?? [];
  const extBytes: Uint8Array[] = [];
  for (let i = 0; i < exts.length; i++) {
    const e = exts[i];
    const type = typeof e.type === 'number' ? e.type : EXT_NUM[e.type];
    const next = i + 1 < exts.length ? (typeof exts[i + 1].type === 'number' ? (exts[i + 1].type as number) : EXT_NUM[exts[i + 1].type as string]) : proto;
    let h: Uint8Array;
    if (type === 44) {
      h = new Uint8Array(8);
      put16(h, 2, ((e.offset ?? 0) & 0xfff8) | (e.more ? 1 : 0));
      put32(h, 4, e.id ?? 0xabcd);
    } else if (type === 51) {
      const n = (((e.body ?? 10) + 2 + 3) & ~3); // total multiple of 4
      h = new Uint8Array(n);
      h[1] = n / 4 - 2;
    } else {
      const n = ((e.body ?? 6) + 2 + 7) & ~7;
      h = new Uint8Array(n);
      h[1] = n / 8 - 1;
      if (type !== 43) {
        // PadN covering the option area.
        if (n - 2 >= 2) {
          h[2] = 1;
          h[3] = n - 4;
        }
      }
    }
    h[0] = next;
    extBytes.push(h);
  }
  const ext = concat(...extBytes);
  const first = exts.length ? (typeof exts[0].type === 'number' ? exts[0].type : EXT_NUM[exts[0].type]) : proto;
  const trailer = o.trailer ?? 0;
  const b = new Uint8Array(40 + ext.length + payload.length + trailer);
  b[0] = 0x60;
  put16(b, 4, o.ipLength ?? ext.length + payload.length);
  b[6] = first;
  b[7] = o.ttl ?? 64;
  b.set(ip6Bytes(o.src ?? 'fd00::1'), 8);
  b.set(ip6Bytes(o.dst ?? 'fd00::2'), 24);
  b.set(ext, 40);
  b.set(payload, 40 + ext.length);
  for (let i = 0; i < trailer; i++) b[40 + ext.length + payload.length + i] = 0xee;
  return b;
}

export function pseudo4(src: string, dst: string, proto: number, len: number): Uint8Array {
  const p = new Uint8Array(12);
  p.set(ip4Bytes(src), 0);
  p.set(ip4Bytes(dst), 4);
  p[9] = proto;
  put16(p, 10, len);
  return p;
}

export function pseudo6(src: string, dst: string, proto: number, len: number): Uint8Array {
  const p = new Uint8Array(40);
  p.set(ip6Bytes(src), 0);
  p.set(ip6Bytes(dst), 16);
  put32(p, 32, len);
  p[39] = proto;
  return p;
}

// ---------------------------------------------------------------------------------------------
// TCP

export interface TcpOptions {
  mss?: number;
  wscale?: number;
  sackPerm?: boolean;
  /** SACK blocks [left, right). */
  sack?: readonly (readonly [number, number])[];
  /** Timestamps [tsval, tsecr]. */
  ts?: readonly [number, number];
  /** Raw option bytes appended after the others (before padding). */
  raw?: readonly number[];
}

export interface TcpSpec extends IpOpts {
  sport?: number;
  dport?: number;
  /** Letters F S R P A U E C (e.g. 'SA', 'FA', 'PA'), or the flag byte. Default 'A'. */
  flags?: string | number;
  seq?: number;
  ack?: number;
  win?: number;
  urp?: number;
  options?: TcpOptions;
  payload?: Payload;
  /** Override the data offset field (header length in bytes, written as bytes / 4). */
  doff?: number;
}

export function tcpFlags(f: string | number | undefined): number {
  if (f === undefined) return 0x10;
  if (typeof f === 'number') return f;
  const bits: Record<string, number> = { F: 1, S: 2, R: 4, P: 8, A: 16, U: 32, E: 64, C: 128 };
  let v = 0;
  for (const c of f.toUpperCase()) {
    if (!(c in bits)) throw new Error(`bad TCP flag ${c}`);
    v |= bits[c];
  }
  return v;
}

export function tcpOptionBytes(o: TcpOptions | undefined): Uint8Array {
  if (!o) return new Uint8Array(0);
  const b: number[] = [];
  if (o.mss !== undefined) b.push(2, 4, (o.mss >> 8) & 255, o.mss & 255);
  if (o.sackPerm) b.push(4, 2);
  if (o.ts) {
    b.push(8, 10);
    for (const v of o.ts) b.push((v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
  }
  if (o.wscale !== undefined) b.push(1, 3, 3, o.wscale);
  if (o.sack && o.sack.length) {
    b.push(1, 1, 5, 2 + 8 * o.sack.length);
    for (const [l, r] of o.sack) {
      for (const v of [l, r]) b.push((v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
    }
  }
  if (o.raw) b.push(...o.raw);
  while (b.length % 4) b.push(0);
  return Uint8Array.from(b);
}

function tcpSegment(s: TcpSpec, pseudo: (len: number) => Uint8Array): Uint8Array {
  const opts = tcpOptionBytes(s.options);
  const data = bytes(s.payload);
  const hl = 20 + opts.length;
  const b = new Uint8Array(hl + data.length);
  put16(b, 0, s.sport ?? 40000);
  put16(b, 2, s.dport ?? 80);
  put32(b, 4, (s.seq ?? 1000) >>> 0);
  put32(b, 8, (s.ack ?? 0) >>> 0);
  b[12] = ((s.doff ?? hl) >> 2) << 4;
  b[13] = tcpFlags(s.flags);
  put16(b, 14, s.win ?? 65535);
  put16(b, 18, s.urp ?? 0);
  b.set(opts, 20);
  b.set(data, hl);
  put16(b, 16, inetChecksum(pseudo(b.length), b));
  return b;
}

export function tcp4(s: TcpSpec = {}): Uint8Array {
  const src = s.src ?? '10.0.0.1';
  const dst = s.dst ?? '10.0.0.2';
  return ipv4(IPPROTO_TCP, tcpSegment(s, (n) => pseudo4(src, dst, IPPROTO_TCP, n)), { ...s, src, dst });
}

export function tcp6(s: TcpSpec = {}): Uint8Array {
  const src = s.src ?? 'fd00::1';
  const dst = s.dst ?? 'fd00::2';
  return ipv6(IPPROTO_TCP, tcpSegment(s, (n) => pseudo6(src, dst, IPPROTO_TCP, n)), { ...s, src, dst });
}

/** tcp4 or tcp6 by the address family of src/dst. */
export function tcp(s: TcpSpec = {}): Uint8Array {
  return v6(s) ? tcp6(s) : tcp4(s);
}

// ---------------------------------------------------------------------------------------------
// UDP

export interface UdpSpec extends IpOpts {
  sport?: number;
  dport?: number;
  payload?: Payload;
  /** Override the UDP length field. */
  udpLength?: number;
  /** Send checksum 0 (IPv4: "no checksum"). */
  noChecksum?: boolean;
}

function udpDatagram(s: UdpSpec, pseudo: (len: number) => Uint8Array): Uint8Array {
  const data = bytes(s.payload);
  const b = new Uint8Array(8 + data.length);
  put16(b, 0, s.sport ?? 5353);
  put16(b, 2, s.dport ?? 53);
  put16(b, 4, s.udpLength ?? b.length);
  b.set(data, 8);
  if (!s.noChecksum) {
    let c = inetChecksum(pseudo(b.length), b);
    if (c === 0) c = 0xffff;
    put16(b, 6, c);
  }
  return b;
}

export function udp4(s: UdpSpec = {}): Uint8Array {
  const src = s.src ?? '10.0.0.1';
  const dst = s.dst ?? '10.0.0.2';
  return ipv4(IPPROTO_UDP, udpDatagram(s, (n) => pseudo4(src, dst, IPPROTO_UDP, n)), { ...s, src, dst });
}

export function udp6(s: UdpSpec = {}): Uint8Array {
  const src = s.src ?? 'fd00::1';
  const dst = s.dst ?? 'fd00::2';
  return ipv6(IPPROTO_UDP, udpDatagram(s, (n) => pseudo6(src, dst, IPPROTO_UDP, n)), { ...s, src, dst });
}

export function udp(s: UdpSpec = {}): Uint8Array {
  return v6(s) ? udp6(s) : udp4(s);
}

// ---------------------------------------------------------------------------------------------
// ICMP / ICMPv6

export interface IcmpSpec extends IpOpts {
  /** Default: echo request (8 for ICMP, 128 for ICMPv6). */
  type?: number;
  code?: number;
  id?: number;
  seq?: number;
  payload?: Payload;
}

function icmpMessage(type: number, code: number, rest: number, body: Uint8Array, pseudo: ((len: number) => Uint8Array) | null): Uint8Array {
  const b = new Uint8Array(8 + body.length);
  b[0] = type;
  b[1] = code;
  put32(b, 4, rest >>> 0);
  b.set(body, 8);
  put16(b, 2, pseudo ? inetChecksum(pseudo(b.length), b) : inetChecksum(b));
  return b;
}

export function icmp4(s: IcmpSpec = {}): Uint8Array {
  const { id: _ipId, ...ip } = s;
  const rest = ((s.id ?? 0x4242) << 16) | (s.seq ?? 1);
  return ipv4(IPPROTO_ICMP, icmpMessage(s.type ?? 8, s.code ?? 0, rest, bytes(s.payload), null), ip);
}

export function icmp6(s: IcmpSpec = {}): Uint8Array {
  const src = s.src ?? 'fd00::1';
  const dst = s.dst ?? 'fd00::2';
  const { id: _ipId, ...ip } = s;
  const rest = ((s.id ?? 0x4242) << 16) | (s.seq ?? 1);
  return ipv6(
    IPPROTO_ICMPV6,
    icmpMessage(s.type ?? 128, s.code ?? 0, rest, bytes(s.payload), (n) => pseudo6(src, dst, IPPROTO_ICMPV6, n)),
    { ...ip, src, dst },
  );
}

export interface IcmpErrorOpts extends IpOpts {
  /** Bytes of the inner packet to quote (default: all of it, capped at 548 / 1232). */
  quote?: number;
  /** The 4 "rest of header" bytes (e.g. MTU for type 3 code 4 / ICMPv6 type 2). */
  rest?: number;
}

/** ICMP error (type 3, 4, 5, 11, 12) from src to dst quoting `inner` (a raw IPv4 packet). */
export function icmpError4(type: number, code: number, inner: Uint8Array, o: IcmpErrorOpts = {}): Uint8Array {
  const q = inner.subarray(0, Math.min(inner.length, o.quote ?? 548));
  return ipv4(IPPROTO_ICMP, icmpMessage(type, code, o.rest ?? 0, q, null), { src: '192.0.2.1', dst: '10.0.0.1', ...o });
}

/** ICMPv6 error (type 1..4) quoting `inner` (a raw IPv6 packet). */
export function icmpError6(type: number, code: number, inner: Uint8Array, o: IcmpErrorOpts = {}): Uint8Array {
  const src = o.src ?? '2001:db8::1';
  const dst = o.dst ?? 'fd00::1';
  const q = inner.subarray(0, Math.min(inner.length, o.quote ?? 1232));
  return ipv6(
    IPPROTO_ICMPV6,
    icmpMessage(type, code, o.rest ?? 0, q, (n) => pseudo6(src, dst, IPPROTO_ICMPV6, n)),
    { ...o, src, dst },
  );
}

// ---------------------------------------------------------------------------------------------
// Link layers

export interface EthOpts {
  /** VLAN ids, outermost first; each tag uses `tpid` (default 0x8100; give 0x88a8 for S-tags). */
  vlan?: readonly number[];
  /** TPIDs per tag (default: 0x88a8 for the outer tags when several, 0x8100 for the innermost). */
  tpids?: readonly number[];
  /** Override the ethertype (default from the IP version nibble). */
  ethertype?: number;
  /** Pad the frame to 60 bytes (as Ethernet does). */
  pad?: boolean;
}

function etherTypeOf(pkt: Uint8Array): number {
  return pkt.length > 0 && pkt[0] >> 4 === 6 ? 0x86dd : 0x0800;
}

/** Ethernet II frame around an IP packet. */
export function eth(pkt: Uint8Array, o: EthOpts = {}): Uint8Array {
  const vlans = o.vlan ?? [];
  const tags = new Uint8Array(4 * vlans.length);
  vlans.forEach((id, i) => {
    const tpid = o.tpids?.[i] ?? (i < vlans.length - 1 ? 0x88a8 : 0x8100);
    put16(tags, 4 * i, tpid);
    put16(tags, 4 * i + 2, id & 0x0fff);
  });
  const hdr = new Uint8Array(12);
  hdr.set([0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
  const et = new Uint8Array(2);
  put16(et, 0, o.ethertype ?? etherTypeOf(pkt));
  // The first tag replaces the ethertype position: dst, src, [tpid, tci]..., ethertype.
  let frame = concat(hdr, tags, et, pkt);
  if (o.pad && frame.length < 60) frame = concat(frame, new Uint8Array(60 - frame.length));
  return frame;
}

/** Linux cooked capture v1 (LINKTYPE_LINUX_SLL, 16-byte header). */
export function sll(pkt: Uint8Array, o: { protocol?: number; packetType?: number } = {}): Uint8Array {
  const h = new Uint8Array(16);
  put16(h, 0, o.packetType ?? 0);
  put16(h, 2, 1); // ARPHRD_ETHER
  put16(h, 4, 6);
  h.set([0x02, 0, 0, 0, 0, 1], 6);
  put16(h, 14, o.protocol ?? etherTypeOf(pkt));
  return concat(h, pkt);
}

/** Linux cooked capture v2 (LINKTYPE_LINUX_SLL2, 20-byte header). */
export function sll2(pkt: Uint8Array, o: { protocol?: number; ifindex?: number } = {}): Uint8Array {
  const h = new Uint8Array(20);
  put16(h, 0, o.protocol ?? etherTypeOf(pkt));
  put32(h, 4, o.ifindex ?? 2);
  put16(h, 8, 1);
  h[10] = 0;
  h[11] = 6;
  h.set([0x02, 0, 0, 0, 0, 1], 12);
  return concat(h, pkt);
}

export interface NflogOpts {
  /** Address family byte (default from the IP version: 2 or 10). */
  family?: number;
  prefix?: string;
  /** NFULA_TIMESTAMP in ms (µs precision). */
  tsMs?: number;
  /** Write TLV length/type big-endian (a capture from a big-endian host). */
  bigEndian?: boolean;
  /** Put the payload TLV first / omit it. */
  payloadFirst?: boolean;
  noPayload?: boolean;
}

/** LINKTYPE_NFLOG frame: 4-byte header then TLVs (packet header, prefix, timestamp, payload). */
export function nflog(pkt: Uint8Array, o: NflogOpts = {}): Uint8Array {
  const le = !o.bigEndian;
  const tlv = (type: number, value: Uint8Array): Uint8Array => {
    const len = 4 + value.length;
    const b = new Uint8Array((len + 3) & ~3);
    const dv = new DataView(b.buffer);
    dv.setUint16(0, len, le);
    dv.setUint16(2, type, le);
    b.set(value, 4);
    return b;
  };
  const fam = o.family ?? (pkt.length > 0 && pkt[0] >> 4 === 6 ? 10 : 2);
  const head = Uint8Array.of(fam, 0, 0, 1); // family, version 0, resource id 1 (big-endian)
  const parts: Uint8Array[] = [];
  const hw = new Uint8Array(4);
  put16(hw, 0, etherTypeOf(pkt)); // NFULA_PACKET_HDR: hw_protocol (BE), hook, pad
  hw[2] = 1;
  const payload = tlv(9, pkt);
  if (o.payloadFirst && !o.noPayload) parts.push(payload);
  parts.push(tlv(1, hw));
  if (o.prefix !== undefined) parts.push(tlv(10, concat(new TextEncoder().encode(o.prefix), Uint8Array.of(0))));
  if (o.tsMs !== undefined) {
    const v = new Uint8Array(16);
    const us = Math.round(o.tsMs * 1000);
    const sec = Math.floor(us / 1e6);
    const usec = us - sec * 1e6;
    put32(v, 0, Math.floor(sec / 4294967296));
    put32(v, 4, sec >>> 0);
    put32(v, 12, usec);
    parts.push(tlv(3, v));
  }
  if (!o.payloadFirst && !o.noPayload) parts.push(payload);
  return concat(head, ...parts);
}

// ---------------------------------------------------------------------------------------------
// Corruption

const scratch = new Packet();

/**
 * Parses a frame into a Packet (a new one unless given) and returns it; default link type raw IP.
 * Handy in tracker tests: `const p = parsePacket(tcp4({ flags: 'S' }));`.
 */
export function parsePacket(frame: Uint8Array, linktype = LINKTYPE_RAW, pkt: Packet = new Packet(), now = 0): Packet {
  parseFrame(linktype, frame, 0, frame.length, pkt);
  pkt.now = now;
  return pkt;
}

/**
 * A copy of a frame with its layer-4 checksum changed (TCP, UDP, ICMP, ICMPv6). The frame is
 * located with parseFrame (linktype default raw IP).
 */
export function corruptChecksum(frame: Uint8Array, linktype = LINKTYPE_RAW): Uint8Array {
  const out = Uint8Array.from(frame);
  parseFrame(linktype, out, 0, out.length, scratch);
  const q = scratch.l4off;
  let at: number;
  switch (scratch.l4proto) {
    case IPPROTO_TCP: at = q + 16; break;
    case IPPROTO_UDP: at = q + 6; break;
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6: at = q + 2; break;
    default: throw new Error('corruptChecksum: no TCP/UDP/ICMP header');
  }
  out[at] ^= 0x5a;
  out[at + 1] ^= 0xa5;
  return out;
}

/** Recomputes the IPv4 header checksum of the header at off (after editing it). */
export function fixIpv4Checksum(frame: Uint8Array, off = 0): Uint8Array {
  const ihl = (frame[off] & 15) * 4;
  put16(frame, off + 10, 0);
  put16(frame, off + 10, inetChecksum(frame.subarray(off, off + ihl)));
  return frame;
}
