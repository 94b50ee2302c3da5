/**
 * A synthetic pcap of any size, generated on the fly (nothing is stored): Ethernet/IPv4 TCP
 * connections that open, exchange data both ways and close (FIN, FIN, ACK), plus UDP
 * query/answer pairs, many connections interleaved, 1 ms of capture time per packet. Every
 * checksum is right and every segment in window, so the replay decides them all as valid.
 *
 *   for (const chunk of synthPcap({ bytes: 200 << 20 })) sink.write(chunk);
 *   node dist/test/helpers/synth-pcap.js 10G > /dev/stdout     # to a pipe: | conntrack-sab replay -
 */
import { writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface SynthOptions {
  /** Stop after the first whole record that reaches this many bytes (file header included). */
  bytes: number;
  /** Connections in progress at once (default 512). */
  concurrent?: number;
  /** Data segments per TCP connection, both directions together (default 16). */
  segments?: number;
  /** Payload bytes of a server (resp. client) data segment (default 1400, 200). */
  serverPayload?: number;
  clientPayload?: number;
  /** Bytes per chunk yielded (default 1 MiB). */
  chunk?: number;
  /** Capture time of the first packet, ms since the epoch. */
  startMs?: number;
}

const ETH = 14;
const IP = 20;
const TCPH = 20;
const UDPH = 8;

interface Flow {
  tcp: boolean;
  client: number; // IPv4 address as uint32
  server: number;
  sport: number;
  dport: number;
  step: number;
  c: number; // client's next sequence number
  s: number;
}

/** Sum of 16-bit big-endian words of b[off, off + len) (not folded). */
function sum16(b: Uint8Array, off: number, len: number): number {
  let s = 0;
  let i = off;
  const end = off + (len & ~1);
  for (; i < end; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  if (len & 1) s += b[i]! << 8;
  return s;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 65536);
  return s;
}

/** The synthetic capture, chunk by chunk. */
export function* synthPcap(o: SynthOptions): Generator<Uint8Array> {
  const K = o.concurrent ?? 512;
  const D = o.segments ?? 16;
  const SP = o.serverPayload ?? 1400;
  const CP = o.clientPayload ?? 200;
  const chunkBytes = o.chunk ?? 1 << 20;
  const maxRec = 16 + ETH + IP + TCPH + Math.max(SP, CP);
  const payload = new Uint8Array(Math.max(SP, CP));
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + 3) & 0xff;
  const paySum = [0, 0]; // [client, server] payload sums
  paySum[0] = sum16(payload, 0, CP);
  paySum[1] = sum16(payload, 0, SP);

  let buf = new Uint8Array(chunkBytes + maxRec);
  let dv = new DataView(buf.buffer);
  let p = 0;
  // pcap file header: µs, little-endian, Ethernet.
  dv.setUint32(0, 0xa1b2c3d4, true);
  dv.setUint16(4, 2, true);
  dv.setUint16(6, 4, true);
  dv.setUint32(16, 65535, true);
  dv.setUint32(20, 1, true);
  p = 24;
  let total = 24;
  let tsUs = (o.startMs ?? 1_700_000_000_000) * 1000;
  let nextFlow = 0;
  let ipId = 0;

  const newFlow = (): Flow => {
    const n = nextFlow++;
    return {
      tcp: n % 8 !== 7,
      client: (10 << 24) | (1 + ((n >>> 8) % 250) << 8) | (1 + (n % 250)),
      server: (192 << 24) | (168 << 16) | (1 << 8) | (1 + ((n >>> 3) % 64)),
      sport: 1024 + (n % 60000),
      dport: n % 8 === 7 ? 53 : 443,
      step: 0,
      c: (n * 2654435761) >>> 0,
      s: (n * 40503 + 12345) >>> 0,
    };
  };
  const flows: Flow[] = [];
  for (let k = 0; k < K; k++) flows.push(newFlow());

  /** Write one packet record at p. fromClient: direction; flags: TCP flags; pay: payload bytes. */
  const emit = (f: Flow, fromClient: boolean, flags: number, seq: number, ack: number, pay: number): void => {
    const l4 = f.tcp ? TCPH : UDPH;
    const ipLen = IP + l4 + pay;
    const caplen = ETH + ipLen;
    const sec = Math.floor(tsUs / 1e6);
    dv.setUint32(p, sec, true);
    dv.setUint32(p + 4, tsUs - sec * 1e6, true);
    dv.setUint32(p + 8, caplen, true);
    dv.setUint32(p + 12, caplen, true);
    tsUs += 1000;
    const e = p + 16;
    // Ethernet: dst, src MACs, IPv4.
    buf.fill(0, e, e + 12);
    buf[e + 5] = fromClient ? 2 : 1;
    buf[e + 11] = fromClient ? 1 : 2;
    buf[e + 12] = 0x08;
    buf[e + 13] = 0x00;
    const ip = e + ETH;
    const src = fromClient ? f.client : f.server;
    const dst = fromClient ? f.server : f.client;
    buf[ip] = 0x45;
    buf[ip + 1] = 0;
    dv.setUint16(ip + 2, ipLen);
    dv.setUint16(ip + 4, ipId = (ipId + 1) & 0xffff);
    dv.setUint16(ip + 6, 0x4000); // DF
    buf[ip + 8] = 64;
    buf[ip + 9] = f.tcp ? 6 : 17;
    dv.setUint16(ip + 10, 0);
    dv.setUint32(ip + 12, src >>> 0);
    dv.setUint32(ip + 16, dst >>> 0);
    dv.setUint16(ip + 10, ~fold(sum16(buf, ip, IP)) & 0xffff);
    const t = ip + IP;
    dv.setUint16(t, fromClient ? f.sport : f.dport);
    dv.setUint16(t + 2, fromClient ? f.dport : f.sport);
    if (pay > 0) buf.set(payload.subarray(0, pay), t + l4);
    const pseudo = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + (f.tcp ? 6 : 17) + l4 + pay;
    const psum = pay === 0 ? 0 : pay === CP ? paySum[0]! : paySum[1]!;
    if (f.tcp) {
      dv.setUint32(t + 4, seq >>> 0);
      dv.setUint32(t + 8, ack >>> 0);
      buf[t + 12] = 5 << 4;
      buf[t + 13] = flags;
      dv.setUint16(t + 14, 65535);
      dv.setUint32(t + 16, 0); // checksum, urgent pointer
      dv.setUint16(t + 16, ~fold(pseudo + sum16(buf, t, TCPH) + psum) & 0xffff);
    } else {
      dv.setUint16(t + 4, UDPH + pay);
      dv.setUint16(t + 6, 0);
      const c = ~fold(pseudo + sum16(buf, t, UDPH) + psum) & 0xffff;
      dv.setUint16(t + 6, c === 0 ? 0xffff : c);
    }
    p += 16 + caplen;
    total += 16 + caplen;
  };

  const SYN = 0x02, ACK = 0x10, FIN = 0x01, PSH = 0x08;
  let j = 0;
  while (total < o.bytes) {
    const f = flows[j]!;
    if (f.tcp) {
      const st = f.step++;
      if (st === 0) { emit(f, true, SYN, f.c, 0, 0); f.c = (f.c + 1) >>> 0; }
      else if (st === 1) { emit(f, false, SYN | ACK, f.s, f.c, 0); f.s = (f.s + 1) >>> 0; }
      else if (st === 2) emit(f, true, ACK, f.c, f.s, 0);
      else if (st < 3 + D) {
        if ((st - 3) % 2 === 0) { emit(f, true, PSH | ACK, f.c, f.s, CP); f.c = (f.c + CP) >>> 0; }
        else { emit(f, false, PSH | ACK, f.s, f.c, SP); f.s = (f.s + SP) >>> 0; }
      } else if (st === 3 + D) { emit(f, true, FIN | ACK, f.c, f.s, 0); f.c = (f.c + 1) >>> 0; }
      else if (st === 4 + D) { emit(f, false, FIN | ACK, f.s, f.c, 0); f.s = (f.s + 1) >>> 0; }
      else { emit(f, true, ACK, f.c, f.s, 0); flows[j] = newFlow(); }
    } else {
      if (f.step++ === 0) emit(f, true, 0, 0, 0, CP);
      else { emit(f, false, 0, 0, 0, CP); flows[j] = newFlow(); }
    }
    j = j + 1 === K ? 0 : j + 1;
    if (p >= chunkBytes) {
      yield buf.subarray(0, p);
      // The consumer may still hold the chunk: write the next one into a fresh buffer.
      buf = new Uint8Array(chunkBytes + maxRec);
      dv = new DataView(buf.buffer);
      p = 0;
    }
  }
  if (p > 0) yield buf.subarray(0, p);
}

/** Parse "200M", "10G", "3GiB", "12345". */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(s.trim());
  if (!m) throw new Error(`not a size: ${s}`);
  const mult: Record<string, number> = { '': 1, k: 1024, m: 1 << 20, g: 1 << 30, t: 2 ** 40 };
  return Math.round(Number(m[1]) * mult[m[2]!.toLowerCase()]!);
}

// Run directly: write the capture to stdout (a pipe, or a file with >).
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const bytes = parseSize(process.argv[2] ?? '100M');
  for (const chunk of synthPcap({ bytes })) {
    let off = 0;
    while (off < chunk.length) {
      try {
        off += writeSync(1, chunk, off, chunk.length - off);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1); continue; }
        if (code === 'EPIPE') process.exit(0);
        throw e;
      }
    }
  }
}
