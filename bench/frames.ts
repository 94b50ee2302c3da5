/**
 * Raw IPv4 frame builders for the benches (LINKTYPE_RAW): each writes one packet straight into a
 * byte buffer at an offset (no allocation) with correct IPv4, TCP and ICMP checksums; UDP frames
 * carry checksum 0 (none), as most tunnelled and benchmark traffic does.
 *
 * FrameSet: frames laid end to end in one SharedArrayBuffer plus an index (IX_* words per
 * packet), so worker threads read them in place.
 */
export const LT_RAW = 101; // LINKTYPE_RAW

export const TH_FIN = 0x01;
export const TH_SYN = 0x02;
export const TH_RST = 0x04;
export const TH_PSH = 0x08;
export const TH_ACK = 0x10;

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}
function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}
function sum(b: Uint8Array, o: number, n: number, acc: number): number {
  for (let k = 0; k < n; k += 2) acc += (b[o + k]! << 8) | (k + 1 < n ? b[o + k + 1]! : 0);
  return acc;
}
function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

function ipHeader(b: Uint8Array, o: number, total: number, proto: number, src: number, dst: number): void {
  b.fill(0, o, o + 20);
  b[o] = 0x45;
  put16(b, o + 2, total);
  b[o + 6] = 0x40; // DF
  b[o + 8] = 64;
  b[o + 9] = proto;
  put32(b, o + 12, src);
  put32(b, o + 16, dst);
  put16(b, o + 10, ~fold(sum(b, o, 20, 0)) & 0xffff);
}

/** IPv4 + UDP (checksum 0) + `payload` bytes. Returns the frame length. */
export function udp4(b: Uint8Array, o: number, src: number, dst: number, sport: number, dport: number, payload = 4): number {
  const len = 28 + payload;
  ipHeader(b, o, len, IPPROTO_UDP, src, dst);
  put16(b, o + 20, sport);
  put16(b, o + 22, dport);
  put16(b, o + 24, 8 + payload);
  put16(b, o + 26, 0);
  for (let k = 0; k < payload; k++) b[o + 28 + k] = (k * 7 + 1) & 0xff;
  return len;
}

/** IPv4 + TCP (no options) + `payload` bytes, with a correct checksum. Returns the length. */
export function tcp4(b: Uint8Array, o: number, src: number, dst: number, sport: number, dport: number,
  flags: number, seq: number, ack: number, win = 65535, payload = 0): number {
  const l4 = 20 + payload;
  const len = 20 + l4;
  ipHeader(b, o, len, IPPROTO_TCP, src, dst);
  const t = o + 20;
  b.fill(0, t, t + 20);
  put16(b, t, sport);
  put16(b, t + 2, dport);
  put32(b, t + 4, seq >>> 0);
  put32(b, t + 8, ack >>> 0);
  b[t + 12] = 5 << 4;
  b[t + 13] = flags;
  put16(b, t + 14, win);
  for (let k = 0; k < payload; k++) b[t + 20 + k] = (k * 13 + 5) & 0xff;
  let s = sum(b, o + 12, 8, 0) + IPPROTO_TCP + l4;
  s = sum(b, t, l4, s);
  put16(b, t + 16, ~fold(s) & 0xffff);
  return len;
}

/** IPv4 + ICMP echo request (type 8) or reply (type 0) with 4 payload bytes. Returns the length. */
export function icmpEcho4(b: Uint8Array, o: number, src: number, dst: number, type: number, id: number, seq: number): number {
  const len = 20 + 12;
  ipHeader(b, o, len, IPPROTO_ICMP, src, dst);
  const t = o + 20;
  b[t] = type;
  b[t + 1] = 0;
  put16(b, t + 2, 0);
  put16(b, t + 4, id);
  put16(b, t + 6, seq);
  put32(b, t + 8, 0x01020304);
  put16(b, t + 2, ~fold(sum(b, t, 12, 0)) & 0xffff);
  return len;
}

// ---------------------------------------------------------------------------------------------
// Frame sets in shared memory.

export const IX_OFF = 0;
export const IX_LEN = 1;
export const IX_NOW = 2; // table clock, ms
export const IX_ZONE = 3;
export const IX_WORDS = 4;

/** Largest frame the builders write (TCP with 64 payload bytes). */
export const MAX_FRAME = 128;

export interface FrameSetData {
  readonly data: SharedArrayBuffer;
  readonly index: SharedArrayBuffer;
  readonly count: number;
}

export class FrameSet implements FrameSetData {
  readonly data: SharedArrayBuffer;
  readonly index: SharedArrayBuffer;
  readonly bytes: Uint8Array;
  readonly ix: Int32Array;
  readonly capacity: number;
  count = 0;
  used = 0;
  /** Defaults for add(): table clock and zone of the next frames. */
  now = 0;
  zone = 0;

  constructor(capacity: number, bytesPerFrame = 64) {
    this.capacity = capacity;
    this.data = new SharedArrayBuffer(Math.max(MAX_FRAME, capacity * bytesPerFrame + MAX_FRAME));
    this.index = new SharedArrayBuffer(Math.max(4, capacity * IX_WORDS * 4));
    this.bytes = new Uint8Array(this.data);
    this.ix = new Int32Array(this.index);
  }

  private room(): number {
    if (this.count >= this.capacity || this.used + MAX_FRAME > this.bytes.length) {
      throw new Error(`frame set full (${this.count} frames, ${this.used} bytes)`);
    }
    return this.used;
  }

  private commit(len: number): number {
    const x = this.count * IX_WORDS;
    this.ix[x + IX_OFF] = this.used;
    this.ix[x + IX_LEN] = len;
    this.ix[x + IX_NOW] = this.now | 0;
    this.ix[x + IX_ZONE] = this.zone;
    this.used += (len + 7) & ~7;
    return this.count++;
  }

  udp(src: number, dst: number, sport: number, dport: number, payload = 4): number {
    return this.commit(udp4(this.bytes, this.room(), src, dst, sport, dport, payload));
  }
  tcp(src: number, dst: number, sport: number, dport: number, flags: number, seq: number, ack: number, win = 65535, payload = 0): number {
    return this.commit(tcp4(this.bytes, this.room(), src, dst, sport, dport, flags, seq, ack, win, payload));
  }
  icmp(src: number, dst: number, type: number, id: number, seq: number): number {
    return this.commit(icmpEcho4(this.bytes, this.room(), src, dst, type, id, seq));
  }

  /** Plain data for a worker (the buffers are shared, not copied). */
  handle(): FrameSetData {
    return { data: this.data, index: this.index, count: this.count };
  }
}
