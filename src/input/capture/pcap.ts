/**
 * Classic pcap reader: either byte order; microsecond (0xa1b2c3d4), nanosecond (0xa1b23c4d) and
 * the modified-pcap (0xa1b2cd34, 24-byte record headers) magics.
 *
 * File header (24 bytes): magic, version major/minor (u16 each), thiszone, sigfigs, snaplen,
 * link type (low 16 bits; the upper bits carry FCS information). Record header (16 bytes):
 * seconds, µs or ns, captured length, original length.
 */

import { CaptureError, CaptureRecord, MAX_CAPLEN, MAX_STREAM_RECORD, ReaderBase, hex32, type CaptureFormat } from './record.js';

export const PCAP_MAGIC_US = 0xa1b2c3d4;
export const PCAP_MAGIC_NS = 0xa1b23c4d;
export const PCAP_MAGIC_MODIFIED = 0xa1b2cd34;

/** True when the first 4 bytes are a classic pcap magic in either byte order. */
export function isPcapMagic(bytes: Uint8Array): boolean {
  if (bytes.length < 4) return false;
  const be = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
  const le = ((bytes[3] << 24) | (bytes[2] << 16) | (bytes[1] << 8) | bytes[0]) >>> 0;
  return (
    be === PCAP_MAGIC_US || be === PCAP_MAGIC_NS || be === PCAP_MAGIC_MODIFIED ||
    le === PCAP_MAGIC_US || le === PCAP_MAGIC_NS || le === PCAP_MAGIC_MODIFIED
  );
}

export class PcapReader extends ReaderBase {
  readonly format: CaptureFormat = 'pcap';
  readonly linktype: number;
  readonly snaplen: number;
  readonly bigEndian: boolean;
  readonly nanosecond: boolean;
  readonly versionMajor: number;
  readonly versionMinor: number;
  private readonly le: boolean;
  private readonly hdrLen: number;
  private error: CaptureError | null = null;
  private readonly rec = new CaptureRecord();

  /**
   * `bytes`: the whole capture, or with `streaming` its first bytes (at least the 24-byte file
   * header unless that is all there is); push() the rest, then finish().
   */
  constructor(bytes: Uint8Array, streaming = false) {
    super(bytes, streaming);
    const dv = this.dv;
    if (bytes.length < 4) {
      throw new CaptureError(`truncated pcap file header at offset 0 (${bytes.length} bytes)`, 0);
    }
    const be = dv.getUint32(0, false);
    const le = dv.getUint32(0, true);
    let magic: number;
    if (be === PCAP_MAGIC_US || be === PCAP_MAGIC_NS || be === PCAP_MAGIC_MODIFIED) {
      this.le = false;
      magic = be;
    } else if (le === PCAP_MAGIC_US || le === PCAP_MAGIC_NS || le === PCAP_MAGIC_MODIFIED) {
      this.le = true;
      magic = le;
    } else {
      throw new CaptureError(`not a pcap file (magic ${hex32(be)} at offset 0)`, 0);
    }
    if (bytes.length < 24) {
      throw new CaptureError(`truncated pcap file header at offset 0 (${bytes.length} of 24 bytes)`, 0);
    }
    this.bigEndian = !this.le;
    this.nanosecond = magic === PCAP_MAGIC_NS;
    this.hdrLen = magic === PCAP_MAGIC_MODIFIED ? 24 : 16;
    this.versionMajor = dv.getUint16(4, this.le);
    this.versionMinor = dv.getUint16(6, this.le);
    this.snaplen = dv.getUint32(16, this.le);
    this.linktype = dv.getUint32(20, this.le) & 0xffff;
    this.pos = 24;
    this.rec.buf = this.buf;
    this.rec.linktype = this.linktype;
    this.rec.bigEndian = this.bigEndian;
  }

  protected rebind(buf: Uint8Array): void {
    this.rec.buf = buf;
  }

  next(): CaptureRecord | null {
    if (this.error !== null) throw this.error;
    const at = this.pos;
    const left = this.end - at;
    const fileAt = this.base + at;
    if (left === 0) return null;
    if (left < this.hdrLen) {
      if (!this.ended) return null; // the rest of the header is still to come
      return this.fail(`truncated record header at offset ${fileAt} (${left} of ${this.hdrLen} bytes)`, fileAt);
    }
    const dv = this.dv;
    const le = this.le;
    const sec = dv.getUint32(at, le);
    const frac = dv.getUint32(at + 4, le);
    const caplen = dv.getUint32(at + 8, le);
    const origLen = dv.getUint32(at + 12, le);
    if (caplen > MAX_CAPLEN && caplen > this.snaplen) {
      return this.fail(
        `record at offset ${fileAt}: captured length ${caplen} exceeds snaplen ${this.snaplen} and the ${MAX_CAPLEN}-byte limit`,
        fileAt,
      );
    }
    const data = at + this.hdrLen;
    if (caplen > this.end - data) {
      if (!this.ended) {
        if (caplen <= MAX_STREAM_RECORD) return null; // wait for the rest of the record
        return this.fail(`record at offset ${fileAt}: captured length ${caplen} exceeds the ${MAX_STREAM_RECORD}-byte streaming limit`, fileAt);
      }
      return this.fail(
        `truncated record at offset ${fileAt}: captured length ${caplen} exceeds the ${this.end - data} bytes left in the file`,
        fileAt,
      );
    }
    const rec = this.rec;
    rec.off = data;
    rec.len = caplen;
    rec.origLen = origLen;
    rec.tsMs = sec * 1000 + (this.nanosecond ? frac / 1e6 : frac / 1e3);
    rec.recordOffset = fileAt;
    this.pos = data + caplen;
    return rec;
  }

  private fail(msg: string, at: number): never {
    this.error = new CaptureError(msg, at);
    throw this.error;
  }
}
