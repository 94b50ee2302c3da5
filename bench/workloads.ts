/**
 * Traffic for the benches, written as raw frames into FrameSets (bench/frames.ts).
 * Addresses are numbers (IPv4 as a uint32); every generator is deterministic.
 */
import { FrameSet, TH_ACK, TH_FIN, TH_PSH, TH_SYN } from './frames.js';

/** Table clock of the benches (ms): far from 0 so nothing looks "just wrapped". */
export const T0 = 100_000_000;

const SERVER = 0xc0a80000; // 192.168.0.0/16
const CLIENT = 0x0a000000; // 10.0.0.0/8: prefilled flows
const NEWNET = 0x0b000000; // 11.0.0.0/8: connections created during a run
const FLOODNET = 0x0c000000; // 12.0.0.0/8: spoofed SYN sources

/** xorshift32 */
export function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

// ---------------------------------------------------------------------------------------------
// hot: one established UDP flow per worker, bursts of 32 identical packets.

export interface HotFrames {
  fs: FrameSet;
  /** Establishing frames of flow w: [2w, 2w + 2). */
  establish(w: number): [number, number];
  /** Burst of flow w: [from, to). */
  burst(w: number): [number, number];
}

export function hotFrames(flows: number, burst = 32): HotFrames {
  const fs = new FrameSet(flows * (2 + burst));
  fs.now = T0;
  for (let w = 0; w < flows; w++) {
    const c = (CLIENT + 0x100 + w) >>> 0;
    const s = (SERVER + 1) >>> 0;
    fs.udp(c, s, 10000 + w, 53);
    fs.udp(s, c, 53, 10000 + w);
  }
  for (let w = 0; w < flows; w++) {
    const c = (CLIENT + 0x100 + w) >>> 0;
    for (let k = 0; k < burst; k++) fs.udp(c, (SERVER + 1) >>> 0, 10000 + w, 53);
  }
  return {
    fs,
    establish: (w) => [2 * w, 2 * w + 2],
    burst: (w) => [2 * flows + w * burst, 2 * flows + (w + 1) * burst],
  };
}

// ---------------------------------------------------------------------------------------------
// zones: n UDP connections in each of two zones (the same tuples in both).

export const ZONE_A = 1;
export const ZONE_B = 2;

export function zoneFrames(n: number): FrameSet {
  const fs = new FrameSet(2 * n);
  fs.now = T0;
  for (const z of [ZONE_A, ZONE_B]) {
    fs.zone = z;
    for (let i = 0; i < n; i++) {
      fs.udp((CLIENT + 0x10000 + i) >>> 0, (SERVER + 2 + (i & 0xff)) >>> 0, 1024 + (i % 60000), 5353);
    }
  }
  return fs;
}

// ---------------------------------------------------------------------------------------------
// Prefill: established connections (TCP 60 %, UDP 30 %, ICMP 10 %), or for the flood half
// ASSURED TCP and half SYN_SENT.

function flowKind(f: number): number {
  const k = f % 10;
  return k < 6 ? 0 : k < 9 ? 1 : 2;
}
function client(f: number): number { return (CLIENT + 0x100000 + f) >>> 0; }
function server(f: number): number { return (SERVER + 0x100 + (f & 0xff)) >>> 0; }
function cport(f: number): number { return 1024 + (f % 60000); }
function isn(f: number): number { return (f * 7919 + 1000) >>> 0; }
function rsn(f: number): number { return (f * 104729 + 500000) >>> 0; }

/** Frames that establish flows [from, to) of the mixed population. */
export function prefillMixed(from: number, to: number): FrameSet {
  const fs = new FrameSet((to - from) * 3);
  fs.now = T0;
  for (let f = from; f < to; f++) {
    const c = client(f), s = server(f), p = cport(f);
    const k = flowKind(f);
    if (k === 0) {
      fs.tcp(c, s, p, 443, TH_SYN, isn(f), 0);
      fs.tcp(s, c, 443, p, TH_SYN | TH_ACK, rsn(f), isn(f) + 1);
      fs.tcp(c, s, p, 443, TH_ACK, isn(f) + 1, rsn(f) + 1);
    } else if (k === 1) {
      fs.udp(c, s, p, 53);
      fs.udp(s, c, 53, p);
      fs.udp(c, s, p, 53);
    } else {
      fs.icmp(c, s, 8, f & 0xffff, 1);
      fs.icmp(s, c, 0, f & 0xffff, 1);
    }
  }
  return fs;
}

/** Flood prefill: even flows ASSURED TCP (handshake), odd flows a lone SYN (not ASSURED). */
export function prefillFlood(from: number, to: number): FrameSet {
  const fs = new FrameSet((to - from) * 3);
  fs.now = T0;
  for (let f = from; f < to; f++) {
    const c = client(f), s = server(f), p = cport(f);
    fs.tcp(c, s, p, 80, TH_SYN, isn(f), 0);
    if ((f & 1) === 0) {
      fs.tcp(s, c, 80, p, TH_SYN | TH_ACK, rsn(f), isn(f) + 1);
      fs.tcp(c, s, p, 80, TH_ACK, isn(f) + 1, rsn(f) + 1);
    }
  }
  return fs;
}

/** `count` SYNs from unique spoofed sources, starting at source number `first`. */
export function synFlood(first: number, count: number): FrameSet {
  const fs = new FrameSet(count);
  fs.now = T0 + 1000;
  const r = rng(first + 1);
  for (let i = 0; i < count; i++) {
    const src = (FLOODNET + ((first + i) % 0xffffff)) >>> 0;
    fs.tcp(src, (SERVER + 0x200 + (i & 0xff)) >>> 0, 1024 + Math.floor(r() * 60000), 80, TH_SYN, Math.floor(r() * 0xffffffff), 0);
  }
  return fs;
}

// ---------------------------------------------------------------------------------------------
// mixed: per worker, Zipf-distributed packets on its own share of the prefilled flows, new TCP
// connections (handshake, data, FIN close), new UDP exchanges and ICMP echoes.

/** Cumulative Zipf(s = 1) weights over n ranks. */
export function zipfCdf(n: number): Float64Array {
  const c = new Float64Array(n);
  let s = 0;
  for (let k = 0; k < n; k++) { s += 1 / (k + 1); c[k] = s; }
  for (let k = 0; k < n; k++) c[k] = c[k]! / s;
  return c;
}
function zipfPick(cdf: Float64Array, u: number): number {
  let lo = 0, hi = cdf.length - 1;
  while (lo < hi) {
    const m = (lo + hi) >>> 1;
    if (cdf[m]! < u) lo = m + 1; else hi = m;
  }
  return lo;
}

export interface MixedFrames {
  fs: FrameSet;
  /** Frames of worker w: [from, to). */
  range: (w: number) => [number, number];
}

let newFlowCounter = 0;

/**
 * `packets` packets for `workers` workers over `flows` prefilled flows; worker w uses flows
 * f = w (mod workers) only, so no two workers race on one connection.
 */
export function mixedFrames(flows: number, workers: number, packets: number, seed = 1): MixedFrames {
  const per = Math.ceil(packets / workers);
  const fs = new FrameSet(per * workers + 16 * workers, 72);
  fs.now = T0 + 500;
  const ranges: [number, number][] = [];
  const ranks = Math.max(1, Math.floor(flows / workers));
  const cdf = zipfCdf(ranks);
  const toggle = new Uint8Array(flows);
  for (let w = 0; w < workers; w++) {
    const r = rng(seed * 7919 + w);
    const from = fs.count;
    while (fs.count - from < per) {
      const u = r();
      if (u < 0.8) {
        const f = w + workers * zipfPick(cdf, r());
        if (f >= flows) continue;
        const c = client(f), s = server(f), p = cport(f);
        const back = (toggle[f] ^= 1) === 0;
        const k = flowKind(f);
        if (k === 0) {
          if (back) fs.tcp(s, c, 443, p, TH_ACK, rsn(f) + 1, isn(f) + 1);
          else fs.tcp(c, s, p, 443, TH_ACK, isn(f) + 1, rsn(f) + 1);
        } else if (k === 1) {
          if (back) fs.udp(s, c, 53, p); else fs.udp(c, s, p, 53);
        } else {
          fs.icmp(back ? s : c, back ? c : s, back ? 0 : 8, f & 0xffff, 1);
        }
      } else {
        const n = newFlowCounter++;
        const c = (NEWNET + (n % 0xffffff)) >>> 0;
        const s = (SERVER + 0x300 + (n & 0xff)) >>> 0;
        const p = 1024 + (n % 60000);
        if (u < 0.9) {
          const a = (n * 2654435761) >>> 0, b = (n * 40503 + 77) >>> 0;
          fs.tcp(c, s, p, 443, TH_SYN, a, 0);
          fs.tcp(s, c, 443, p, TH_SYN | TH_ACK, b, a + 1);
          fs.tcp(c, s, p, 443, TH_ACK, a + 1, b + 1);
          fs.tcp(c, s, p, 443, TH_PSH | TH_ACK, a + 1, b + 1, 65535, 32);
          fs.tcp(s, c, 443, p, TH_ACK, b + 1, a + 33);
          fs.tcp(c, s, p, 443, TH_FIN | TH_ACK, a + 33, b + 1);
          fs.tcp(s, c, 443, p, TH_FIN | TH_ACK, b + 1, a + 34);
          fs.tcp(c, s, p, 443, TH_ACK, a + 34, b + 2);
        } else if (u < 0.97) {
          fs.udp(c, s, p, 53);
          fs.udp(s, c, 53, p);
        } else {
          fs.icmp(c, s, 8, n & 0xffff, 1);
          fs.icmp(s, c, 0, n & 0xffff, 1);
        }
      }
    }
    ranges.push([from, fs.count]);
  }
  return { fs, range: (w) => ranges[w]! };
}

// ---------------------------------------------------------------------------------------------
// Experiment (ii): ACKs on k established TCP connections per worker.

export function tcpConnFrames(workers: number, k: number): { prefill: FrameSet; acks: FrameSet; range: (w: number) => [number, number] } {
  const n = workers * k;
  const prefill = new FrameSet(n * 3);
  prefill.now = T0;
  const acks = new FrameSet(n * 2);
  acks.now = T0 + 100;
  for (let f = 0; f < n; f++) {
    const c = client(f), s = server(f), p = cport(f);
    prefill.tcp(c, s, p, 8080, TH_SYN, isn(f), 0);
    prefill.tcp(s, c, 8080, p, TH_SYN | TH_ACK, rsn(f), isn(f) + 1);
    prefill.tcp(c, s, p, 8080, TH_ACK, isn(f) + 1, rsn(f) + 1);
  }
  for (let w = 0; w < workers; w++) {
    for (let j = 0; j < k; j++) {
      const f = w * k + j;
      const c = client(f), s = server(f), p = cport(f);
      acks.tcp(c, s, p, 8080, TH_ACK, isn(f) + 1, rsn(f) + 1);
      acks.tcp(s, c, 8080, p, TH_ACK, rsn(f) + 1, isn(f) + 1);
    }
  }
  return { prefill, acks, range: (w) => [w * 2 * k, (w + 1) * 2 * k] };
}
