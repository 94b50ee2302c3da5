/**
 * Small capture writers for tests and tools: classic pcap (µs or ns, either byte order) and a
 * minimal pcapng (SHB, one IDB per interface, EPBs).
 */

import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { PCAP_MAGIC_NS, PCAP_MAGIC_US } from './pcap.js';
import { PCAPNG_BOM, PCAPNG_EPB, PCAPNG_IDB, PCAPNG_SHB } from './pcapng.js';

export interface PcapWriteRecord {
  /** Frame bytes (captured part). */
  data: Uint8Array;
  /** Timestamp in ms since the epoch (fractions kept to the file's precision). Default 0. */
  tsMs?: number;
  /** Length on the wire; default data.length. */
  origLen?: number;
}

export interface PcapEncodeOptions {
  bigEndian?: boolean;
  nanosecond?: boolean;
  snaplen?: number;
}

function splitTs(tsMs: number, perSec: number): [number, number] {
  const units = Math.round(tsMs * (perSec / 1000));
  const sec = Math.floor(units / perSec);
  return [sec, units - sec * perSec];
}

/** Encodes a classic pcap file. */
export function encodePcap(linktype: number, records: Iterable<PcapWriteRecord>, opts: PcapEncodeOptions = {}): Uint8Array {
  const list = [...records];
  let size = 24;
  for (const r of list) size += 16 + r.data.length;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  const le = !opts.bigEndian;
  const ns = opts.nanosecond === true;
  dv.setUint32(0, ns ? PCAP_MAGIC_NS : PCAP_MAGIC_US, le);
  dv.setUint16(4, 2, le);
  dv.setUint16(6, 4, le);
  dv.setUint32(16, opts.snaplen ?? 262144, le);
  dv.setUint32(20, linktype, le);
  let p = 24;
  for (const r of list) {
    const [sec, frac] = splitTs(r.tsMs ?? 0, ns ? 1e9 : 1e6);
    dv.setUint32(p, sec, le);
    dv.setUint32(p + 4, frac, le);
    dv.setUint32(p + 8, r.data.length, le);
    dv.setUint32(p + 12, r.origLen ?? r.data.length, le);
    out.set(r.data, p + 16);
    p += 16 + r.data.length;
  }
  return out;
}

/** Writes a classic pcap file (little-endian, microsecond timestamps). */
export function writePcap(path: string, linktype: number, records: Iterable<PcapWriteRecord>): void {
  writeFileSync(path, encodePcap(linktype, records));
}

export interface PcapngInterface {
  linktype: number;
  snaplen?: number;
  /** if_tsresol byte (default 6: µs). 9 = ns, 0x80 | n = 2^-n seconds. */
  tsresol?: number;
}

export interface PcapngPacket extends PcapWriteRecord {
  /** Interface index (default 0). */
  ifIndex?: number;
}

function unitsPerSec(tsresol: number): number {
  return (tsresol & 0x80) !== 0 ? Math.pow(2, tsresol & 0x7f) : Math.pow(10, tsresol);
}

/** Encodes a one-section pcapng file: SHB, the interfaces' IDBs, then one EPB per packet. */
export function encodePcapng(
  interfaces: readonly PcapngInterface[],
  packets: Iterable<PcapngPacket>,
  opts: { bigEndian?: boolean } = {},
): Uint8Array {
  const le = !opts.bigEndian;
  const blocks: Uint8Array[] = [];
  const block = (type: number, body: Uint8Array): void => {
    const len = 12 + ((body.length + 3) & ~3);
    const b = new Uint8Array(len);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, type, le);
    dv.setUint32(4, len, le);
    b.set(body, 8);
    dv.setUint32(len - 4, len, le);
    blocks.push(b);
  };
  {
    const body = new Uint8Array(16);
    const dv = new DataView(body.buffer);
    dv.setUint32(0, PCAPNG_BOM, le);
    dv.setUint16(4, 1, le);
    dv.setUint16(6, 0, le);
    dv.setInt32(8, -1, le);
    dv.setInt32(12, -1, le);
    block(PCAPNG_SHB, body);
  }
  for (const i of interfaces) {
    const hasRes = i.tsresol !== undefined;
    const body = new Uint8Array(8 + (hasRes ? 12 : 0));
    const dv = new DataView(body.buffer);
    dv.setUint16(0, i.linktype, le);
    dv.setUint32(4, i.snaplen ?? 262144, le);
    if (hasRes) {
      dv.setUint16(8, 9, le);
      dv.setUint16(10, 1, le);
      body[12] = i.tsresol ?? 6;
      // then opt_endofopt (4 zero bytes)
    }
    block(PCAPNG_IDB, body);
  }
  for (const p of packets) {
    const ifIndex = p.ifIndex ?? 0;
    const ups = unitsPerSec(interfaces[ifIndex]?.tsresol ?? 6);
    const units = Math.round((p.tsMs ?? 0) * (ups / 1000));
    const hi = Math.floor(units / 4294967296);
    const lo = units - hi * 4294967296;
    const body = new Uint8Array(20 + p.data.length);
    const dv = new DataView(body.buffer);
    dv.setUint32(0, ifIndex, le);
    dv.setUint32(4, hi, le);
    dv.setUint32(8, lo, le);
    dv.setUint32(12, p.data.length, le);
    dv.setUint32(16, p.origLen ?? p.data.length, le);
    body.set(p.data, 20);
    block(PCAPNG_EPB, body);
  }
  let size = 0;
  for (const b of blocks) size += b.length;
  const out = new Uint8Array(size);
  let o = 0;
  for (const b of blocks) {
    out.set(b, o);
    o += b.length;
  }
  return out;
}

/**
 * A classic pcap file written record by record (little-endian, µs), for outputs of any size:
 * records are buffered and written in large chunks; close() flushes and closes the file.
 */
export class PcapFileWriter {
  private readonly fd: number;
  private readonly buf = new Uint8Array(1 << 20);
  private readonly dv = new DataView(this.buf.buffer);
  private used = 0;

  constructor(path: string, linktype: number, snaplen = 262144) {
    this.fd = openSync(path, 'w');
    const dv = this.dv;
    dv.setUint32(0, PCAP_MAGIC_US, true);
    dv.setUint16(4, 2, true);
    dv.setUint16(6, 4, true);
    dv.setUint32(16, snaplen, true);
    dv.setUint32(20, linktype, true);
    this.used = 24;
  }

  /** Append one record: bytes [off, off + len) of `data`, time in ms since the epoch. */
  write(data: Uint8Array, off: number, len: number, tsMs: number, origLen = len): void {
    if (this.used + 16 + len > this.buf.length) this.flush();
    if (16 + len > this.buf.length) {
      const hdr = new Uint8Array(16);
      this.header(new DataView(hdr.buffer), 0, len, tsMs, origLen);
      writeSync(this.fd, hdr);
      writeSync(this.fd, data.subarray(off, off + len));
      return;
    }
    this.header(this.dv, this.used, len, tsMs, origLen);
    this.buf.set(data.subarray(off, off + len), this.used + 16);
    this.used += 16 + len;
  }

  private header(dv: DataView, p: number, len: number, tsMs: number, origLen: number): void {
    const [sec, frac] = splitTs(tsMs, 1e6);
    dv.setUint32(p, sec, true);
    dv.setUint32(p + 4, frac, true);
    dv.setUint32(p + 8, len, true);
    dv.setUint32(p + 12, origLen, true);
  }

  private flush(): void {
    let p = 0;
    while (p < this.used) p += writeSync(this.fd, this.buf, p, this.used - p);
    this.used = 0;
  }

  close(): void {
    this.flush();
    closeSync(this.fd);
  }
}
