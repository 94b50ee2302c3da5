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
  // 12 message words: 9 tuple words, proto, zone, namespace.
  for (let i = 0; i < 12; i++) {
    const m = i < 9 ? words[off + i]! : i === 9 ? proto : i === 10 ? zone : ns;
    v3 ^= m;
    // one SipRound (the "1" of 1-3)
    v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
    v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
    v0 ^= m;
  }
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

/** NFPROTO_IPV4: the family byte of the protocol word (tuple.ts protoWord). */
const FAMILY_IPV4 = 2;

/**
 * The chain hash of a tuple (Chains.hash, and whatever re-checks it). An IPv4 tuple's address
 * words 1-3 are always 0, so it hashes the 6 words that can differ, [src, dst, ports, proto, zone,
 * ns] (the family in `proto` keeps the encoding injective): half the rounds of hashTuple, the same
 * keyed PRF, so the same flooding resistance. Other families: hashTuple.
 */
export function tupleHash(
  words: Int32Array, off: number, proto: number, zone: number, ns: number, k0: number, k1: number,
): number {
  if ((proto & 0xff) !== FAMILY_IPV4) return hashTuple(words, off, proto, zone, ns, k0, k1);
  let v0 = k0 | 0;
  let v1 = k1 | 0;
  let v2 = (0x6c796765 ^ k0) | 0;
  let v3 = (0x74656462 ^ k1) | 0;
  // 6 message words, then the length block (24 bytes), one SipRound each; 3 final rounds. Written
  // out on purpose: the same rounds as a loop (like hashTuple) measured 1.36x slower per hash here.
  let m: number;
  m = words[off]! | 0;
  v3 ^= m;
  v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
  v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
  v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  v0 ^= m;
  m = words[off + 4]! | 0;
  v3 ^= m;
  v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
  v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
  v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  v0 ^= m;
  m = words[off + 8]! | 0;
  v3 ^= m;
  v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
  v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
  v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  v0 ^= m;
  m = proto;
  v3 ^= m;
  v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
  v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
  v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  v0 ^= m;
  m = zone;
  v3 ^= m;
  v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
  v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
  v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  v0 ^= m;
  m = ns;
  v3 ^= m;
  v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
  v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
  v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  v0 ^= m;
  m = 24 << 24;
  v3 ^= m;
  v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
  v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
  v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
  v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  v0 ^= m;
  v2 ^= 0xff;
  for (let r = 0; r < 3; r++) {
    v0 = (v0 + v1) | 0; v1 = rotl(v1, 5); v1 ^= v0; v0 = rotl(v0, 16);
    v2 = (v2 + v3) | 0; v3 = rotl(v3, 8); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = rotl(v3, 7); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = rotl(v1, 13); v1 ^= v2; v2 = rotl(v2, 16);
  }
  return (v1 ^ v3) >>> 0;
}
