/**
 * Keyed tuple hashing: HalfSipHash-1-3 (the kernel's hsiphash on 32-bit machines) over 32-bit
 * words, with a random 64-bit secret per table, so that an attacker who chooses tuples cannot
 * aim them at one bucket (hash flooding). All arithmetic is 32-bit; no allocation.
 */

function rotl(x: number, b: number): number {
  return (x << b) | (x >>> (32 - b));
}

/**
 * Hash one tuple of `TUPLE_WORDS` words at words[off..] together with the protocol word, the
 * zone of this direction and the namespace. Returns an unsigned 32-bit hash.
 */
export function hashTuple(
  words: Int32Array, off: number, proto: number, zone: number, ns: number, k0: number, k1: number,
): number {
  let v0 = k0 | 0;
  let v1 = k1 | 0;
  let v2 = (0x6c796765 ^ k0) | 0;
  let v3 = (0x74656462 ^ k1) | 0;
  // 12 message words: the 9 tuple words (a loop with no branch), then proto, zone, namespace.
  for (let i = off, end = off + 9; i < end; i++) {
    const m = words[i]! | 0;
    v3 ^= m;
    // one SipRound (the "1" of 1-3)
    v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
    v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
    v0 ^= m;
  }
  v3 ^= proto;
  v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
  v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
  v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  v0 ^= proto;
  v3 ^= zone;
  v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
  v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
  v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  v0 ^= zone;
  v3 ^= ns;
  v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
  v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
  v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  v0 ^= ns;
  const b = 48 << 24; // message length in bytes, as the final block
  v3 ^= b;
  v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
  v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
  v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  v0 ^= b;
  v2 ^= 0xff;
  for (let r = 0; r < 3; r++) {
    v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
    v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  }
  return (v1 ^ v3) >>> 0;
}
