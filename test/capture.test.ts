import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CaptureError,
  CaptureRecord,
  encodePcap,
  encodePcapng,
  openCapture,
  readCapture,
  writePcap,
  type CaptureReader,
} from '../src/input/capture/reader.js';
import { nflogPrefix, nflogTimestampMs, parseFrame } from '../src/input/packet/parse.js';
import { l4ChecksumOk } from '../src/input/packet/checksum.js';
import {
  LINKTYPE_ETHERNET,
  LINKTYPE_NFLOG,
  LINKTYPE_RAW,
  NFPROTO_IPV6,
  Packet,
} from '../src/input/packet/packet.js';
import { concat, eth, icmp4, nflog, tcp4, tcp6, udp4, udp6 } from './helpers/frames.js';

interface Rec {
  linktype: number;
  data: number[];
  origLen: number;
  tsMs: number;
  ifIndex: number;
  off: number;
}

function snapshot(r: CaptureRecord): Rec {
  return {
    linktype: r.linktype,
    data: [...r.buf.subarray(r.off, r.off + r.len)],
    origLen: r.origLen,
    tsMs: r.tsMs,
    ifIndex: r.ifIndex,
    off: r.recordOffset,
  };
}

/** Reads every record; returns them and the error that ended the read (if any). */
function drain(bytes: Uint8Array): { recs: Rec[]; error: CaptureError | null } {
  const recs: Rec[] = [];
  let reader: CaptureReader;
  try {
    reader = readCapture(bytes);
  } catch (e) {
    if (e instanceof CaptureError) return { recs, error: e };
    throw e;
  }
  try {
    for (const r of reader) recs.push(snapshot(r));
  } catch (e) {
    if (e instanceof CaptureError) return { recs, error: e };
    throw e;
  }
  return { recs, error: null };
}

const frames = [
  eth(tcp4({ flags: 'S', seq: 1, options: { mss: 1460 } })),
  eth(tcp4({ flags: 'SA', src: '10.0.0.2', dst: '10.0.0.1', sport: 80, dport: 40000, seq: 7, ack: 2 })),
  eth(udp6({ payload: 30 })),
  eth(icmp4({ payload: 20 }), { pad: true }),
];
const times = [1700000000000.001, 1700000000000.5, 1700000001234.567, 1700000002000];

function approx(t: import('ava').ExecutionContext, a: number, b: number, eps: number, msg?: string): void {
  t.true(Math.abs(a - b) <= eps, `${msg ?? ''} ${a} vs ${b}`);
}

// ---------------------------------------------------------------------------------------------
// Classic pcap

for (const bigEndian of [false, true]) {
  for (const nanosecond of [false, true]) {
    test(`pcap ${bigEndian ? 'BE' : 'LE'} ${nanosecond ? 'ns' : 'µs'}`, (t) => {
      const file = encodePcap(
        LINKTYPE_ETHERNET,
        frames.map((data, i) => ({ data, tsMs: times[i], origLen: data.length + i })),
        { bigEndian, nanosecond },
      );
      const reader = readCapture(file);
      t.is(reader.format, 'pcap');
      t.is(reader.linktype, LINKTYPE_ETHERNET);
      const { recs, error } = drain(file);
      t.is(error, null);
      t.is(recs.length, frames.length);
      recs.forEach((r, i) => {
        t.is(r.linktype, LINKTYPE_ETHERNET);
        t.deepEqual(r.data, [...frames[i]]);
        t.is(r.origLen, frames[i].length + i);
        approx(t, r.tsMs, times[i], nanosecond ? 1e-5 : 1e-3);
      });
      // Nanosecond files keep sub-microsecond precision.
      if (nanosecond) {
        const f = encodePcap(LINKTYPE_RAW, [{ data: tcp4(), tsMs: 1000.000123 }], { nanosecond: true, bigEndian });
        approx(t, drain(f).recs[0].tsMs, 1000.000123, 1e-9);
      }
    });
  }
}

test('pcap: the record object is reused and next() returns null at the end', (t) => {
  const file = encodePcap(LINKTYPE_RAW, [{ data: tcp4() }, { data: udp4() }]);
  const r = readCapture(file);
  const a = r.next();
  const b = r.next();
  t.truthy(a);
  t.is(a, b);
  t.is(r.next(), null);
  t.is(r.next(), null);
  t.is(r.offset, file.length);
});

test('modified pcap (0xa1b2cd34, 24-byte record headers)', (t) => {
  const data = tcp4();
  const file = new Uint8Array(24 + 24 + data.length);
  const dv = new DataView(file.buffer);
  dv.setUint32(0, 0xa1b2cd34, true);
  dv.setUint16(4, 2, true);
  dv.setUint16(6, 4, true);
  dv.setUint32(16, 65535, true);
  dv.setUint32(20, LINKTYPE_RAW, true);
  dv.setUint32(24, 10, true);
  dv.setUint32(28, 250000, true);
  dv.setUint32(32, data.length, true);
  dv.setUint32(36, data.length, true);
  file.set(data, 48);
  const { recs, error } = drain(file);
  t.is(error, null);
  t.is(recs.length, 1);
  t.deepEqual(recs[0].data, [...data]);
  t.is(recs[0].tsMs, 10250);
});

test('writePcap / openCapture round trip through a file', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-cap-'));
  try {
    const path = join(dir, 'x.pcap');
    writePcap(path, LINKTYPE_ETHERNET, frames.map((data, i) => ({ data, tsMs: times[i] })));
    const pkt = new Packet();
    let n = 0;
    for (const r of openCapture(path)) {
      parseFrame(r.linktype, r.buf, r.off, r.len, pkt);
      t.is(pkt.reason, null);
      t.true(l4ChecksumOk(pkt));
      approx(t, r.tsMs, times[n], 1e-3);
      n++;
    }
    t.is(n, frames.length);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// pcapng

/** A raw pcapng block with the given body (padded to 4 bytes). */
function block(type: number, body: Uint8Array, le = true): Uint8Array {
  const len = 12 + ((body.length + 3) & ~3);
  const b = new Uint8Array(len);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, type, le);
  dv.setUint32(4, len, le);
  b.set(body, 8);
  dv.setUint32(len - 4, len, le);
  return b;
}

function u32s(le: boolean, ...v: number[]): Uint8Array {
  const b = new Uint8Array(4 * v.length);
  const dv = new DataView(b.buffer);
  v.forEach((x, i) => dv.setUint32(4 * i, x >>> 0, le));
  return b;
}

for (const bigEndian of [false, true]) {
  test(`pcapng ${bigEndian ? 'BE' : 'LE'}: two interfaces with different link types and tsresol`, (t) => {
    const a = eth(tcp4({ flags: 'S' }));
    const b = tcp6({ flags: 'S' });
    const c = udp4({ payload: 3 });
    const file = encodePcapng(
      [
        { linktype: LINKTYPE_ETHERNET, tsresol: 9 },
        { linktype: LINKTYPE_RAW, tsresol: 0x80 | 10 }, // 1/1024 s
      ],
      [
        { data: a, tsMs: 1700000000000.000001, ifIndex: 0 },
        { data: b, tsMs: 1700000000500, ifIndex: 1 },
        { data: c, tsMs: 1700000001000.25, ifIndex: 1, origLen: 999 },
      ],
      { bigEndian },
    );
    const reader = readCapture(file);
    t.is(reader.format, 'pcapng');
    const { recs, error } = drain(file);
    t.is(error, null);
    t.is(recs.length, 3);
    t.deepEqual(recs.map((r) => r.linktype), [LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_RAW]);
    t.deepEqual(recs.map((r) => r.ifIndex), [0, 1, 1]);
    t.deepEqual(recs[0].data, [...a]);
    t.deepEqual(recs[1].data, [...b]);
    t.is(recs[2].origLen, 999);
    approx(t, recs[0].tsMs, 1700000000000.000001, 1e-3);
    approx(t, recs[1].tsMs, 1700000000500, 1);
    approx(t, recs[2].tsMs, 1700000001000.25, 1);
    const pkt = new Packet();
    const r1 = readCapture(file);
    r1.next();
    const r = r1.next();
    if (!r) return t.fail();
    parseFrame(r.linktype, r.buf, r.off, r.len, pkt);
    t.is(pkt.family, NFPROTO_IPV6);
    t.is(pkt.reason, null);
  });
}

test('pcapng: default µs resolution, if_tsoffset, SPB, OPB, unknown blocks, second section in the other byte order', (t) => {
  const le = true;
  const shb = (l: boolean) => block(0x0a0d0d0a, concat(u32s(l, 0x1a2b3c4d), Uint8Array.of(...(l ? [1, 0, 0, 0] : [0, 1, 0, 0])), u32s(l, 0xffffffff, 0xffffffff)), l);
  const idbBody = (l: boolean, lt: number, opts: Uint8Array) => {
    const h = new Uint8Array(8);
    const dv = new DataView(h.buffer);
    dv.setUint16(0, lt, l);
    dv.setUint32(4, 0, l);
    return concat(h, opts);
  };
  // if_tsoffset = 100 s (option 14, 8 bytes), then opt_endofopt.
  const tsoff = new Uint8Array(16);
  {
    const dv = new DataView(tsoff.buffer);
    dv.setUint16(0, 14, le);
    dv.setUint16(2, 8, le);
    dv.setUint32(4, 100, le);
    dv.setUint32(8, 0, le);
  }
  const p1 = tcp4({ payload: 5 });
  const p2 = udp4({ payload: 3 });
  const p3 = tcp6();
  const epb = (l: boolean, ifId: number, tsUnits: number, data: Uint8Array) =>
    block(6, concat(u32s(l, ifId, Math.floor(tsUnits / 4294967296), tsUnits >>> 0, data.length, data.length), data), l);
  const spb = (l: boolean, data: Uint8Array) => block(3, concat(u32s(l, data.length), data), l);
  const opbBody = (l: boolean, data: Uint8Array) => {
    const h = new Uint8Array(4);
    new DataView(h.buffer).setUint16(0, 0, l);
    return concat(h, u32s(l, 0, 2000000, data.length, data.length), data);
  };
  const file = concat(
    shb(le),
    block(1, idbBody(le, LINKTYPE_RAW, tsoff), le),
    block(0x0bad, new Uint8Array(9), le), // unknown block, skipped
    block(5, new Uint8Array(20), le), // interface statistics, skipped
    epb(le, 0, 1500000, p1), // 1.5 s + 100 s offset
    spb(le, p2),
    shb(false),
    block(1, idbBody(false, LINKTYPE_RAW, new Uint8Array(0)), false),
    block(2, opbBody(false, p3), false),
  );
  const { recs, error } = drain(file);
  t.is(error, null);
  t.is(recs.length, 3);
  t.deepEqual(recs[0].data, [...p1]);
  t.is(recs[0].tsMs, 101500);
  t.deepEqual(recs[1].data, [...p2]);
  t.is(recs[1].tsMs, 101500); // SPB: no timestamp of its own, keeps the last one
  t.deepEqual(recs[2].data, [...p3]);
  t.is(recs[2].tsMs, 2000);
});

// ---------------------------------------------------------------------------------------------
// NFLOG

test('NFLOG capture: prefix, timestamp, payload', (t) => {
  const payloads = [tcp4({ flags: 'S', sport: 1000 }), udp6({ sport: 2000 }), icmp4()];
  const fr = payloads.map((p, i) => nflog(p, { prefix: `rule-${i}`, tsMs: 1700000000000 + i * 1.5 }));
  const file = encodePcap(LINKTYPE_NFLOG, fr.map((data) => ({ data })));
  const pkt = new Packet();
  let i = 0;
  for (const r of readCapture(file)) {
    t.is(r.linktype, LINKTYPE_NFLOG);
    t.is(nflogPrefix(r.buf, r.off, r.len), `rule-${i}`);
    approx(t, nflogTimestampMs(r.buf, r.off, r.len) ?? 0, 1700000000000 + i * 1.5, 1e-3);
    parseFrame(r.linktype, r.buf, r.off, r.len, pkt);
    t.is(pkt.reason, null);
    t.true(l4ChecksumOk(pkt));
    if (i === 0) t.is(pkt.sport, 1000);
    if (i === 1) t.is(pkt.sport, 2000);
    i++;
  }
  t.is(i, 3);
  // A big-endian capture host.
  const be = nflog(tcp4(), { prefix: 'be', tsMs: 5, bigEndian: true });
  const f2 = encodePcap(LINKTYPE_NFLOG, [{ data: be }], { bigEndian: true });
  const r = readCapture(f2).next();
  if (!r) return t.fail();
  t.is(nflogPrefix(r.buf, r.off, r.len), 'be');
  t.is(nflogTimestampMs(r.buf, r.off, r.len), 5);
  parseFrame(r.linktype, r.buf, r.off, r.len, pkt);
  t.is(pkt.reason, null);
});

// ---------------------------------------------------------------------------------------------
// Corrupt files

function expectError(t: import('ava').ExecutionContext, bytes: Uint8Array, records: number, offset: number, re: RegExp): void {
  const { recs, error } = drain(bytes);
  t.is(recs.length, records, 'records before the error');
  t.truthy(error, 'an error');
  if (!error) return;
  t.true(error instanceof CaptureError);
  t.is(error.offset, offset, error.message);
  t.regex(error.message, re);
}

const good = encodePcap(LINKTYPE_ETHERNET, frames.map((data, i) => ({ data, tsMs: times[i] })));
const recOff = [24];
for (const f of frames) recOff.push(recOff[recOff.length - 1] + 16 + f.length);

test('not a capture: bad magic, empty, too short', (t) => {
  expectError(t, new TextEncoder().encode('hello world, not a pcap'), 0, 0, /not a pcap or pcapng file \(magic 0x68656c6c at offset 0\)/);
  expectError(t, new Uint8Array(0), 0, 0, /not a pcap or pcapng file/);
  expectError(t, good.subarray(0, 20), 0, 0, /truncated pcap file header/);
  t.throws(() => openCapture('/nonexistent/file.pcap'), { code: 'ENOENT' });
});

test('pcap truncated in a record header, after the complete records', (t) => {
  for (const cut of [1, 8, 15]) {
    expectError(t, good.subarray(0, recOff[2] + cut), 2, recOff[2], new RegExp(`truncated record header at offset ${recOff[2]}`));
  }
  // Exactly at a record boundary: a clean end.
  t.is(drain(good.subarray(0, recOff[3])).error, null);
  t.is(drain(good.subarray(0, recOff[3])).recs.length, 3);
});

test('pcap truncated in record data', (t) => {
  expectError(t, good.subarray(0, recOff[3] + 20), 3, recOff[3], /captured length .* exceeds the .* bytes left/);
});

test('pcap absurd captured length', (t) => {
  const f = Uint8Array.from(good);
  new DataView(f.buffer).setUint32(recOff[1] + 8, 300000, true);
  expectError(t, f, 1, recOff[1], /captured length 300000 exceeds snaplen/);
  // The error is sticky.
  const r = readCapture(f);
  r.next();
  t.throws(() => r.next(), { instanceOf: CaptureError });
  t.throws(() => r.next(), { instanceOf: CaptureError });
});

test('pcapng corruptions', (t) => {
  const file = encodePcapng([{ linktype: LINKTYPE_ETHERNET }], frames.map((data) => ({ data })));
  // Block offsets: SHB 28, IDB 20, then EPBs.
  const offs = [48];
  for (const f of frames) offs.push(offs[offs.length - 1] + 32 + ((f.length + 3) & ~3));
  t.is(offs[offs.length - 1], file.length);
  t.is(drain(file).recs.length, frames.length);

  // Truncated block header.
  expectError(t, file.subarray(0, offs[2] + 5), 2, offs[2], new RegExp(`truncated block header at offset ${offs[2]}`));
  // Truncated block.
  expectError(t, file.subarray(0, offs[2] + 30), 2, offs[2], /truncated block at offset .*exceeds/);
  // Length not a multiple of 4.
  let f = Uint8Array.from(file);
  new DataView(f.buffer).setUint32(offs[1] + 4, 0x41, true);
  expectError(t, f, 1, offs[1], /bad block length 65/);
  // Length below 12.
  f = Uint8Array.from(file);
  new DataView(f.buffer).setUint32(offs[1] + 4, 8, true);
  expectError(t, f, 1, offs[1], /bad block length 8/);
  // Trailer mismatch.
  f = Uint8Array.from(file);
  new DataView(f.buffer).setUint32(offs[3] - 4, 12, true);
  expectError(t, f, 2, offs[3] - 4, /trailing length 12 does not match/);
  // Unknown interface.
  f = Uint8Array.from(file);
  new DataView(f.buffer).setUint32(offs[2] + 8, 3, true);
  expectError(t, f, 2, offs[2], /names interface 3, but the section has 1/);
  // Captured length larger than the block.
  f = Uint8Array.from(file);
  new DataView(f.buffer).setUint32(offs[2] + 20, 5000, true);
  expectError(t, f, 2, offs[2], /captured length 5000 exceeds the block/);
  // Bad byte-order magic.
  f = Uint8Array.from(file);
  f[8] ^= 0xff;
  expectError(t, f, 0, 0, /bad byte-order magic/);
  // A packet block before any interface.
  const noIdb = concat(file.subarray(0, 28), file.subarray(48));
  expectError(t, noIdb, 0, 28, /names interface 0, but the section has 0/);
});
