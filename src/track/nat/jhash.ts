/**
 * Bob Jenkins' lookup3 word hash (the kernel's jhash2), so that the address a NAT rule with an
 * address range picks is the kernel's own (find_best_ips_proto hashes with it). All arithmetic
 * is on uint32 words; callers pass the words as the kernel reads them from memory.
 */

const INITVAL = 0xdeadbeef;

function rol(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** jhash2 of words k[0..n) with `initval`; returns a uint32. */
export function jhash2(k: ArrayLike<number>, n: number, initval: number): number {
  let a = (INITVAL + (n << 2) + initval) | 0;
  let b = a;
  let c = a;
  let i = 0;
  while (n > 3) {
    a = (a + k[i]!) | 0; b = (b + k[i + 1]!) | 0; c = (c + k[i + 2]!) | 0;
    // mix
    a = (a - c) | 0; a ^= rol(c, 4); c = (c + b) | 0;
    b = (b - a) | 0; b ^= rol(a, 6); a = (a + c) | 0;
    c = (c - b) | 0; c ^= rol(b, 8); b = (b + a) | 0;
    a = (a - c) | 0; a ^= rol(c, 16); c = (c + b) | 0;
    b = (b - a) | 0; b ^= rol(a, 19); a = (a + c) | 0;
    c = (c - b) | 0; c ^= rol(b, 4); b = (b + a) | 0;
    n -= 3;
    i += 3;
  }
  if (n === 0) return c >>> 0;
  if (n === 3) c = (c + k[i + 2]!) | 0;
  if (n >= 2) b = (b + k[i + 1]!) | 0;
  a = (a + k[i]!) | 0;
  // final
  c ^= b; c = (c - rol(b, 14)) | 0;
  a ^= c; a = (a - rol(c, 11)) | 0;
  b ^= a; b = (b - rol(a, 25)) | 0;
  c ^= b; c = (c - rol(b, 16)) | 0;
  a ^= c; a = (a - rol(c, 4)) | 0;
  b ^= a; b = (b - rol(a, 14)) | 0;
  c ^= b; c = (c - rol(b, 24)) | 0;
  return c >>> 0;
}

/** A network-order address word (ours: big-endian numeric) as a little-endian CPU loads it. */
export function bswap32(x: number): number {
  return (((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) | 0;
}
