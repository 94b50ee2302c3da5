/**
 * Incremental Internet checksum updates (RFC 1624, equation 3: HC' = ~(~HC + ~m + m')), as the
 * kernel's csum_replace2/4 and inet_proto_csum_replace*: when a 16-bit word m of the covered data
 * becomes m', the checksum field is patched without reading the rest of the packet.
 * Offsets are byte offsets into the frame; values are big-endian as on the wire.
 */

export function rd16(b: Uint8Array, off: number): number {
  return (b[off]! << 8) | b[off + 1]!;
}

export function wr16(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 8) & 0xff;
  b[off + 1] = v & 0xff;
}

/** Ones'-complement sum of ~m + m' folded into `acc` (a running 32-bit sum). */
function add(acc: number, oldv: number, newv: number): number {
  return acc + ((~oldv) & 0xffff) + (newv & 0xffff);
}

function finish(b: Uint8Array, off: number, acc: number): void {
  // ~HC was added by the caller; fold twice (the sum of a few 16-bit terms fits after two folds).
  acc = (acc & 0xffff) + (acc >>> 16);
  acc = (acc & 0xffff) + (acc >>> 16);
  wr16(b, off, (~acc) & 0xffff);
}

/** Checksum at `csumOff` covers a 16-bit word that changed from `oldv` to `newv`. */
export function csumReplace2(b: Uint8Array, csumOff: number, oldv: number, newv: number): void {
  if (oldv === newv) return;
  finish(b, csumOff, add((~rd16(b, csumOff)) & 0xffff, oldv, newv));
}

/** Checksum at `csumOff` covers a 32-bit word (two 16-bit halves) that changed. */
export function csumReplace4(b: Uint8Array, csumOff: number, oldv: number, newv: number): void {
  if ((oldv | 0) === (newv | 0)) return;
  let acc = (~rd16(b, csumOff)) & 0xffff;
  acc = add(acc, oldv >>> 16, newv >>> 16);
  acc = add(acc, oldv & 0xffff, newv & 0xffff);
  finish(b, csumOff, acc);
}

/** Checksum covers the 4 words (IPv6 address; IPv4 uses word 0 only) old[oo..] -> new[no..]. */
export function csumReplaceAddr(
  b: Uint8Array, csumOff: number, old: Int32Array | Uint32Array, oo: number, nw: Int32Array, no: number, words: number,
): void {
  let acc = (~rd16(b, csumOff)) & 0xffff;
  let same = true;
  for (let i = 0; i < words; i++) {
    const o = old[oo + i]! >>> 0;
    const n = nw[no + i]! >>> 0;
    if (o === n) continue;
    same = false;
    acc = add(acc, o >>> 16, n >>> 16);
    acc = add(acc, o & 0xffff, n & 0xffff);
    acc = (acc & 0xffff) + (acc >>> 16);
  }
  if (!same) finish(b, csumOff, acc);
}

/** Full ones'-complement sum of n bytes (odd length padded with a zero byte), unfolded. */
export function sumBytes(b: Uint8Array, off: number, n: number, acc = 0): number {
  let i = 0;
  for (; i + 1 < n; i += 2) acc += (b[off + i]! << 8) | b[off + i + 1]!;
  if (i < n) acc += b[off + i]! << 8;
  // Keep the running sum small enough for exact double arithmetic on huge inputs.
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return acc;
}

export function foldNot(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return (~acc) & 0xffff;
}
