/**
 * Cutting whole raw IP datagrams into fragments for tests: IPv4 (offset/MF in the header) and
 * IPv6 (a fragment header after the fixed header). Pieces are [offset, length, more] over the
 * datagram's payload (after the IPv4 header / the IPv6 fixed header); lengths need not be
 * multiples of 8 (tests of the rules cut badly on purpose).
 */
import { inetChecksum } from './frames.js';

export type Piece = readonly [offset: number, length: number, more: boolean];

/** Cut an IPv4 datagram (no options) into fragments with identification `id`. */
export function frag4(dgram: Uint8Array, pieces: readonly Piece[], id = 0x4242, tos?: number): Uint8Array[] {
  const ihl = (dgram[0]! & 15) * 4;
  const payload = dgram.subarray(ihl);
  return pieces.map(([off, len, more]) => {
    const f = new Uint8Array(ihl + len);
    f.set(dgram.subarray(0, ihl), 0);
    f.set(payload.subarray(off, off + len), ihl);
    const n = ihl + len;
    f[2] = n >> 8; f[3] = n & 255;
    f[4] = id >> 8; f[5] = id & 255;
    const fw = (more ? 0x2000 : 0) | ((off >> 3) & 0x1fff);
    f[6] = fw >> 8; f[7] = fw & 255;
    if (tos !== undefined) f[1] = tos;
    f[10] = 0; f[11] = 0;
    const c = inetChecksum(f.subarray(0, ihl));
    f[10] = c >> 8; f[11] = c & 255;
    return f;
  });
}

/** Cut an IPv6 datagram (no extension headers) into fragments with identification `id`. */
export function frag6(dgram: Uint8Array, pieces: readonly Piece[], id = 0x42424242): Uint8Array[] {
  const nh = dgram[6]!;
  const payload = dgram.subarray(40);
  return pieces.map(([off, len, more]) => {
    const f = new Uint8Array(48 + len);
    f.set(dgram.subarray(0, 40), 0);
    f[6] = 44;
    const plen = 8 + len;
    f[4] = plen >> 8; f[5] = plen & 255;
    f[40] = nh;
    const fo = (off & 0xfff8) | (more ? 1 : 0);
    f[42] = fo >> 8; f[43] = fo & 255;
    f[44] = id >>> 24; f[45] = (id >>> 16) & 255; f[46] = (id >>> 8) & 255; f[47] = id & 255;
    f.set(payload.subarray(off, off + len), 48);
    return f;
  });
}

/** Even pieces of `size` bytes (a multiple of 8) over `total` payload bytes. */
export function even(total: number, size: number): Piece[] {
  const out: Piece[] = [];
  for (let o = 0; o < total; o += size) out.push([o, Math.min(size, total - o), o + size < total]);
  return out;
}
