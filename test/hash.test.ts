/** hashTuple: the unrolled HalfSipHash-1-3 equals the plain one-word-per-round form. */
import test from 'ava';
import { hashTuple, tupleHash } from '../src/table/hash.js';

const rotl = (x: number, b: number): number => (x << b) | (x >>> (32 - b));

/** HalfSipHash-1-3 over 12 32-bit words (9 tuple words, proto, zone, ns), as written in the spec. */
function reference(w: Int32Array, off: number, proto: number, zone: number, ns: number, k0: number, k1: number): number {
  return sip13([...Array.from(w.subarray(off, off + 9)), proto, zone, ns], k0, k1);
}

/** HalfSipHash-1-3 of a list of 32-bit words (the final block carries the length in bytes). */
function sip13(words: number[], k0: number, k1: number): number {
  const v = [k0 | 0, k1 | 0, (0x6c796765 ^ k0) | 0, (0x74656462 ^ k1) | 0];
  const round = (): void => {
    v[0] = (v[0]! + v[1]!) | 0; v[1] = rotl(v[1]!, 5); v[1] ^= v[0]; v[0] = rotl(v[0], 16);
    v[2] = (v[2]! + v[3]!) | 0; v[3] = rotl(v[3]!, 8); v[3] ^= v[2];
    v[0] = (v[0] + v[3]) | 0; v[3] = rotl(v[3], 7); v[3] ^= v[0];
    v[2] = (v[2] + v[1]) | 0; v[1] = rotl(v[1], 13); v[1] ^= v[2]; v[2] = rotl(v[2], 16);
  };
  const msg = [...words, (words.length * 4) << 24];
  for (const m of msg) { v[3]! ^= m; round(); v[0]! ^= m; }
  v[2]! ^= 0xff;
  round(); round(); round();
  return (v[1]! ^ v[3]!) >>> 0;
}

test('hashTuple equals the reference HalfSipHash-1-3 on random tuples, keys, zones and namespaces', (t) => {
  let s = 99;
  const rnd = (): number => (s = (Math.imul(s, 1664525) + 1013904223) | 0);
  const w = new Int32Array(9 * 64 + 3);
  for (let i = 0; i < w.length; i++) w[i] = rnd();
  let same = 0;
  const seen = new Set<number>();
  for (let k = 0; k < 2000; k++) {
    const off = (k % 64) * 9 + (k % 3);
    const args = [off, rnd() & 0xffff, rnd() & 0xffff, rnd() & 7, rnd(), rnd()] as const;
    const h = hashTuple(w, ...args);
    if (h === reference(w, ...args)) same++;
    seen.add(h);
  }
  t.is(same, 2000);
  t.true(seen.size > 1990); // and it is not constant
});

test('tupleHash: IPv4 hashes [src, dst, ports, proto, zone, ns] (the words that can differ), other families as hashTuple', (t) => {
  let s = 7;
  const rnd = (): number => (s = (Math.imul(s, 1664525) + 1013904223) | 0);
  const w = new Int32Array(9);
  const seen = new Set<number>();
  for (let k = 0; k < 1000; k++) {
    w.fill(0);
    w[0] = rnd(); w[4] = rnd(); w[8] = rnd();
    const k0 = rnd(), k1 = rnd(), zone = rnd() & 0xffff, ns = rnd() & 3;
    const v4 = 2 | ((k % 3 === 0 ? 6 : 17) << 8); // NFPROTO_IPV4, TCP or UDP
    const h = tupleHash(w, 0, v4, zone, ns, k0, k1);
    t.is(h, sip13([w[0]!, w[4]!, w[8]!, v4, zone, ns], k0, k1));
    seen.add(h);
    for (let i = 1; i < 8; i++) if (i !== 4) w[i] = rnd();
    const v6 = 10 | (17 << 8); // NFPROTO_IPV6
    t.is(tupleHash(w, 0, v6, zone, ns, k0, k1), hashTuple(w, 0, v6, zone, ns, k0, k1));
  }
  t.true(seen.size > 990);
});
