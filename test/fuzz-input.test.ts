/**
 * Robustness: random and mutated frames through parseFrame for every link type, and mutated or
 * truncated capture files through the readers. Nothing may throw (other than CaptureError from a
 * reader) or hang; every frame ends with reason === null or a reason string.
 */

import test from 'ava';
import fc from 'fast-check';
import { parseFrame } from '../src/input/packet/parse.js';
import { l4ChecksumOk } from '../src/input/packet/checksum.js';
import { CaptureError, encodePcap, encodePcapng, readCapture } from '../src/input/capture/reader.js';
import {
  LINKTYPE_ETHERNET,
  LINKTYPE_IPV4,
  LINKTYPE_IPV6,
  LINKTYPE_LINUX_SLL,
  LINKTYPE_LINUX_SLL2,
  LINKTYPE_NFLOG,
  LINKTYPE_RAW,
  Packet,
} from '../src/input/packet/packet.js';
import {
  concat,
  eth,
  fixIpv4Checksum,
  icmp4,
  icmp6,
  icmpError4,
  icmpError6,
  ipv6,
  nflog,
  sll,
  sll2,
  tcp4,
  tcp6,
  udp4,
  udp6,
} from './helpers/frames.js';

/** xorshift32: fast, seeded, reproducible. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

// ---------------------------------------------------------------------------------------------
// Seed packets (raw IP)

const ipSeeds: Uint8Array[] = [
  tcp4({ flags: 'S', options: { mss: 1460, wscale: 7, sackPerm: true, ts: [1, 2] } }),
  tcp4({ flags: 'PA', payload: 40, options: { sack: [[1, 2], [3, 0xffffffff]] } }),
  tcp4({ flags: 'A', ipOptions: [0x94, 4, 0, 0] }),
  tcp6({ flags: 'SA', options: { mss: 1220, wscale: 14 }, ext: [{ type: 'hop' }, { type: 'dst' }] }),
  tcp6({ flags: 'A', ext: [{ type: 'frag', more: true }, { type: 'ah' }], payload: 12 }),
  udp4({ payload: 12 }),
  udp4({ mf: true, payload: 8 }),
  udp6({ payload: 9, ext: [{ type: 'routing' }] }),
  icmp4({ payload: 16 }),
  icmp6({ payload: 8 }),
  icmpError4(3, 3, udp4({ payload: 4 })),
  icmpError4(11, 0, tcp4({ ipOptions: [1, 1, 1, 1] })),
  icmpError4(3, 1, icmp4()),
  icmpError6(1, 4, tcp6({ ext: [{ type: 'dst' }] })),
  icmpError6(2, 0, icmp6()),
  ipv6(59, new Uint8Array(0), { ext: [{ type: 'hop' }] }),
  ipv6(6, new Uint8Array(30), { ext: [{ type: 'frag', offset: 8 }] }),
];

interface LinkCase {
  name: string;
  linktype: number;
  seeds: Uint8Array[];
}

const v4 = ipSeeds.filter((s) => s[0] >> 4 === 4);
const v6 = ipSeeds.filter((s) => s[0] >> 4 === 6);

const cases: LinkCase[] = [
  { name: 'ethernet', linktype: LINKTYPE_ETHERNET, seeds: ipSeeds.flatMap((s) => [eth(s), eth(s, { vlan: [5] }), eth(s, { vlan: [1, 2], pad: true })]) },
  { name: 'raw', linktype: LINKTYPE_RAW, seeds: ipSeeds },
  { name: 'ipv4', linktype: LINKTYPE_IPV4, seeds: v4 },
  { name: 'ipv6', linktype: LINKTYPE_IPV6, seeds: v6 },
  { name: 'sll', linktype: LINKTYPE_LINUX_SLL, seeds: ipSeeds.map((s) => sll(s)) },
  { name: 'sll2', linktype: LINKTYPE_LINUX_SLL2, seeds: ipSeeds.map((s) => sll2(s)) },
  { name: 'nflog', linktype: LINKTYPE_NFLOG, seeds: ipSeeds.flatMap((s) => [nflog(s, { prefix: 'x', tsMs: 1 }), nflog(s, { bigEndian: true, payloadFirst: true })]) },
  { name: 'loopback', linktype: 0, seeds: v4.map((s) => concat(Uint8Array.of(2, 0, 0, 0), s)) },
];

const INTERESTING = [0, 1, 2, 3, 4, 5, 6, 7, 8, 0x0f, 0x10, 0x3f, 0x40, 0x45, 0x4f, 0x60, 0x7f, 0x80, 0xfe, 0xff];

const scratch = new Uint8Array(4096);
const pkt = new Packet();

/** Fills scratch[base..] with a mutation of seed; returns its length. */
function mutate(seed: Uint8Array, rnd: () => number, base: number): number {
  let n = seed.length;
  const kind = rnd() % 10;
  if (kind === 0) {
    // Fully random bytes.
    n = rnd() % 200;
    for (let i = 0; i < n; i++) scratch[base + i] = rnd() & 255;
    return n;
  }
  scratch.set(seed, base);
  if (kind === 1) return rnd() % (n + 1); // truncation
  if (kind === 2) {
    // Extend with random bytes.
    const extra = rnd() % 64;
    for (let i = 0; i < extra; i++) scratch[base + n + i] = rnd() & 255;
    n += extra;
  }
  const edits = 1 + (rnd() % 6);
  for (let e = 0; e < edits; e++) {
    const at = base + (rnd() % Math.max(1, n));
    switch (rnd() % 4) {
      case 0:
        scratch[at] ^= 1 << (rnd() & 7);
        break;
      case 1:
        scratch[at] = INTERESTING[rnd() % INTERESTING.length];
        break;
      case 2:
        scratch[at] = rnd() & 255;
        break;
      default:
        // A 16-bit field to a boundary value (lengths, offsets).
        scratch[at] = rnd() & 1 ? 0xff : 0;
        scratch[at + 1] = rnd() & 255;
        break;
    }
  }
  if (rnd() & 1) n = rnd() % (n + 1) > n / 2 ? n : rnd() % (n + 1);
  return n;
}

function check(linktype: number, buf: Uint8Array, off: number, len: number): string | null {
  parseFrame(linktype, buf, off, len, pkt);
  const r = pkt.reason;
  if (r !== null && (typeof r !== 'string' || r.length === 0)) return 'reason is not a string';
  if (pkt.innerReason !== null && typeof pkt.innerReason !== 'string') return 'innerReason is not a string';
  if (r === null) {
    if (pkt.family !== 2 && pkt.family !== 10) return 'parsed without a family';
    if (pkt.l4off < off || pkt.l4off + pkt.l4len > off + len) return 'layer 4 outside the frame';
    if (pkt.l4len < 0) return 'negative l4len';
    l4ChecksumOk(pkt);
  }
  if (pkt.notIp && r === null) return 'notIp without reason';
  return null;
}

function hexOf(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

const PER_LINKTYPE = 100_000;

for (const c of cases) {
  test(`fuzz parseFrame: ${c.name} (${PER_LINKTYPE} mutated frames)`, (t) => {
    const rnd = prng(0x9e3779b9 ^ c.linktype * 7919);
    let parsed = 0;
    let invalid = 0;
    for (let i = 0; i < PER_LINKTYPE; i++) {
      const seed = c.seeds[rnd() % c.seeds.length];
      const base = rnd() & 1 ? 0 : 1 + (rnd() % 32);
      const n = mutate(seed, rnd, base);
      // Half the time keep the IPv4 header checksum right so the mutation reaches deeper checks.
      if (rnd() & 1) {
        const l3 = base + (c.linktype === LINKTYPE_ETHERNET ? 14 : c.linktype === LINKTYPE_LINUX_SLL ? 16 : c.linktype === LINKTYPE_LINUX_SLL2 ? 20 : c.linktype === 0 ? 4 : 0);
        if (scratch[l3] >> 4 === 4 && l3 + 60 < scratch.length) fixIpv4Checksum(scratch, l3);
      }
      let err: string | null;
      try {
        err = check(c.linktype, scratch, base, n);
      } catch (e) {
        err = `threw ${String(e)}`;
      }
      if (err !== null) {
        t.fail(`${err}: linktype ${c.linktype} frame ${hexOf(scratch.subarray(base, base + n))}`);
        return;
      }
      if (pkt.reason === null) parsed++;
      else invalid++;
    }
    // The mutations must leave a fair share of frames parseable, or the fuzz only tests the front door.
    t.true(parsed > PER_LINKTYPE / 20, `parsed ${parsed}`);
    t.true(invalid > PER_LINKTYPE / 20, `invalid ${invalid}`);
  });
}

test('fuzz parseFrame with fast-check: arbitrary bytes, offsets and link types', (t) => {
  const linktypes = [0, 1, 12, 14, 101, 108, 113, 228, 229, 239, 276, 5, 65535];
  fc.assert(
    fc.property(
      fc.constantFrom(...linktypes),
      fc.uint8Array({ maxLength: 300 }),
      fc.integer({ min: -2, max: 310 }),
      fc.integer({ min: -2, max: 400 }),
      (lt, bytes, off, len) => check(lt, bytes, off, len) === null,
    ),
    { numRuns: 5000, seed: 42 },
  );
  // Seeds with fast-check-chosen overwrites.
  const all = cases.flatMap((c) => c.seeds.map((s) => [c.linktype, s] as const));
  fc.assert(
    fc.property(
      fc.constantFrom(...all),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
      fc.nat(),
      ([lt, seed], edits, cut) => {
        const f = Uint8Array.from(seed);
        for (const [at, v] of edits) f[at % f.length] = v;
        return check(lt, f, 0, cut % (f.length + 1)) === null;
      },
    ),
    { numRuns: 10000, seed: 7 },
  );
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// Capture files

const capFrames = [eth(tcp4({ flags: 'S' })), eth(udp6({ payload: 7 })), eth(icmp4()), eth(tcp6({ payload: 3 }))];
const capFiles: Uint8Array[] = [
  encodePcap(LINKTYPE_ETHERNET, capFrames.map((data, i) => ({ data, tsMs: 1e12 + i }))),
  encodePcap(LINKTYPE_ETHERNET, capFrames.map((data) => ({ data })), { bigEndian: true, nanosecond: true }),
  encodePcapng(
    [{ linktype: LINKTYPE_ETHERNET, tsresol: 9 }, { linktype: LINKTYPE_RAW }],
    [...capFrames.map((data) => ({ data, ifIndex: 0 })), { data: tcp4(), ifIndex: 1, tsMs: 5 }],
  ),
  encodePcapng([{ linktype: LINKTYPE_NFLOG, tsresol: 0x80 | 20 }], [{ data: nflog(tcp4(), { prefix: 'a' }) }], { bigEndian: true }),
];

/** Offsets where a clean end of file is allowed: after the file header and after each record/block. */
function boundaries(file: Uint8Array): number[] {
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
  if (file[0] !== 0x0a) {
    const le = dv.getUint32(0, true) === 0xa1b2c3d4 || dv.getUint32(0, true) === 0xa1b23c4d;
    const out = [24];
    for (let p = 24; p < file.length; ) {
      p += 16 + dv.getUint32(p + 8, le);
      out.push(p);
    }
    return out;
  }
  const le = dv.getUint32(8, true) === 0x1a2b3c4d;
  const out: number[] = [];
  for (let p = 0; p < file.length; ) {
    p += dv.getUint32(p + 4, le);
    out.push(p);
  }
  return out;
}

/** Reads a capture to the end; returns an error description or null. */
function readAll(bytes: Uint8Array): { error: string | null; records: number; captureError: CaptureError | null } {
  let records = 0;
  try {
    const r = readCapture(bytes);
    const limit = bytes.length / 12 + 2; // every record/block takes at least 12 bytes
    for (let rec = r.next(); rec !== null; rec = r.next()) {
      if (++records > limit) return { error: 'reader does not advance', records, captureError: null };
      if (!(rec.off >= 0 && rec.len >= 0 && rec.off + rec.len <= bytes.length)) {
        return { error: `record outside the file: ${rec.off}+${rec.len}`, records, captureError: null };
      }
      parseFrame(rec.linktype, rec.buf, rec.off, rec.len, pkt);
    }
  } catch (e) {
    if (e instanceof CaptureError) {
      if (!(e.offset >= 0 && e.offset <= bytes.length)) {
        return { error: `error offset ${e.offset} outside the file`, records, captureError: e };
      }
      return { error: null, records, captureError: e };
    }
    return { error: `threw ${String(e)}`, records, captureError: null };
  }
  return { error: null, records, captureError: null };
}

test('fuzz capture readers: truncation at every byte gives the complete records, then an error', (t) => {
  for (const file of capFiles) {
    const whole = readAll(file);
    t.is(whole.captureError, null);
    // Record ends, to know how many records a truncated copy must still give.
    const ends: number[] = [];
    const r = readCapture(file);
    for (let rec = r.next(); rec !== null; rec = r.next()) ends.push(r.offset);
    const bounds = boundaries(file);
    for (let cut = 0; cut < file.length; cut++) {
      const res = readAll(file.subarray(0, cut));
      t.is(res.error, null);
      const complete = ends.filter((e) => e <= cut).length;
      t.is(res.records, complete, `cut ${cut}`);
      if (bounds.includes(cut)) t.is(res.captureError, null, `cut ${cut} at a boundary`);
      else t.truthy(res.captureError, `cut ${cut} must give an error`);
    }
  }
});

test('fuzz capture readers: mutated files give records or a CaptureError, never another exception', (t) => {
  const rnd = prng(12345);
  const buf = new Uint8Array(2048);
  let errors = 0;
  let clean = 0;
  const N = 4000;
  for (let i = 0; i < N; i++) {
    const file = capFiles[rnd() % capFiles.length];
    buf.set(file);
    let n = file.length;
    const edits = 1 + (rnd() % 4);
    for (let e = 0; e < edits; e++) {
      const at = rnd() % n;
      switch (rnd() % 5) {
        case 0:
          buf[at] ^= 1 << (rnd() & 7);
          break;
        case 1:
          buf[at] = INTERESTING[rnd() % INTERESTING.length];
          break;
        case 2: {
          // A random 32-bit value at a 4-aligned position (length fields are there).
          const a = at & ~3;
          const v = rnd();
          buf[a] = v & 255;
          buf[a + 1] = (v >>> 8) & 255;
          buf[a + 2] = rnd() & 1 ? 0 : (v >>> 16) & 255;
          buf[a + 3] = rnd() & 1 ? 0 : v >>> 24;
          break;
        }
        case 3:
          n = rnd() % (n + 1);
          break;
        default:
          buf[at] = rnd() & 255;
      }
    }
    const res = readAll(buf.subarray(0, n));
    if (res.error !== null) {
      t.fail(`${res.error}: ${hexOf(buf.subarray(0, n))}`);
      return;
    }
    if (res.captureError) errors++;
    else clean++;
  }
  // Both outcomes must be common, or the corruption only ever tests one of them.
  t.true(errors > N / 20, `errors ${errors}`);
  t.true(clean > N / 20, `clean ${clean}`);
});
