/**
 * pcapng reader: Section Header Blocks in either byte order (several sections per file, each with
 * its own interfaces), Interface Description Blocks (link type, snaplen, if_tsresol, if_tsoffset),
 * Enhanced, Simple and (obsolete) Packet Blocks. Other blocks are skipped.
 *
 * Block: type (u32), total length (u32), body, total length again; total length is a multiple of 4.
 */

import { CaptureError, CaptureRecord, MAX_STREAM_RECORD, ReaderBase, hex32, type CaptureFormat } from './record.js';

export const PCAPNG_SHB = 0x0a0d0d0a;
export const PCAPNG_IDB = 0x00000001;
export const PCAPNG_OPB = 0x00000002;
export const PCAPNG_SPB = 0x00000003;
export const PCAPNG_EPB = 0x00000006;
export const PCAPNG_BOM = 0x1a2b3c4d;

const OPT_END = 0;
const IF_TSRESOL = 9;
const IF_TSOFFSET = 14;

/** True when the file starts with a pcapng Section Header Block type. */
export function isPcapngMagic(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x0a && bytes[1] === 0x0d && bytes[2] === 0x0d && bytes[3] === 0x0a;
}

export class PcapngReader extends ReaderBase {
  readonly format: CaptureFormat = 'pcapng';
  private le = true;
  private sections = 0;
  private error: CaptureError | null = null;
  private readonly rec = new CaptureRecord();
  private firstLinktype = -1;
  // Interfaces of the current section.
  private ifLinktype: number[] = [];
  private ifSnaplen: number[] = [];
  private ifUnitsPerMs: number[] = [];
  private ifOffsetMs: number[] = [];
  /** Last timestamp seen (Simple Packet Blocks have none and reuse it). */
  private lastTs = 0;

  /** `bytes`: the whole capture, or with `streaming` its first bytes; push() the rest, then finish(). */
  constructor(bytes: Uint8Array, streaming = false) {
    super(bytes, streaming);
    this.rec.buf = bytes;
    if (!isPcapngMagic(bytes)) {
      const m = bytes.length >= 4 ? this.dv.getUint32(0, false) : 0;
      throw new CaptureError(`not a pcapng file (magic ${hex32(m)} at offset 0)`, 0);
    }
  }

  protected rebind(buf: Uint8Array): void {
    this.rec.buf = buf;
  }

  /** Link type of the first interface seen, -1 before any. */
  get linktype(): number {
    return this.firstLinktype;
  }

  /** Number of interfaces of the current section. */
  get interfaceCount(): number {
    return this.ifLinktype.length;
  }

  next(): CaptureRecord | null {
    if (this.error !== null) throw this.error;
    for (;;) {
      const bytes = this.buf;
      const dv = this.dv;
      const at = this.pos;
      const left = this.end - at;
      const fileAt = this.base + at;
      if (left === 0) return null;
      if (left < 12 && !this.ended) return null; // a block header is still to come
      if (left < 8) return this.fail(`truncated block header at offset ${fileAt} (${left} of 8 bytes)`, fileAt);
      const type = dv.getUint32(at, this.le);
      if (type === PCAPNG_SHB) {
        if (left < 12) return this.fail(`truncated section header block at offset ${fileAt}`, fileAt);
        const bomLe = dv.getUint32(at + 8, true);
        if (bomLe === PCAPNG_BOM) this.le = true;
        else if (dv.getUint32(at + 8, false) === PCAPNG_BOM) this.le = false;
        else return this.fail(`bad byte-order magic ${hex32(bomLe)} in section header block at offset ${fileAt}`, fileAt);
      } else if (this.sections === 0) {
        return this.fail(`pcapng file does not start with a section header block (type ${hex32(type)} at offset ${fileAt})`, fileAt);
      }
      const le = this.le;
      const blen = dv.getUint32(at + 4, le);
      if (blen < 12 || (blen & 3) !== 0) {
        return this.fail(`bad block length ${blen} at offset ${fileAt} (block type ${hex32(type)})`, fileAt);
      }
      if (blen > left) {
        if (!this.ended) {
          if (blen <= MAX_STREAM_RECORD) return null; // wait for the rest of the block
          return this.fail(`block at offset ${fileAt}: length ${blen} exceeds the ${MAX_STREAM_RECORD}-byte streaming limit`, fileAt);
        }
        return this.fail(`truncated block at offset ${fileAt}: length ${blen} exceeds the ${left} bytes left in the file`, fileAt);
      }
      const trailer = dv.getUint32(at + blen - 4, le);
      if (trailer !== blen) {
        return this.fail(`block at offset ${fileAt}: trailing length ${trailer} does not match length ${blen}`, fileAt + blen - 4);
      }
      const body = at + 8;
      const bodyEnd = at + blen - 4;
      switch (type) {
        case PCAPNG_SHB: {
          if (blen < 28) return this.fail(`section header block at offset ${fileAt} too short (${blen} bytes)`, fileAt);
          const major = dv.getUint16(body + 4, le);
          if (major !== 1) return this.fail(`unsupported pcapng version ${major} at offset ${fileAt}`, fileAt);
          this.sections++;
          this.ifLinktype = [];
          this.ifSnaplen = [];
          this.ifUnitsPerMs = [];
          this.ifOffsetMs = [];
          break;
        }
        case PCAPNG_IDB: {
          if (blen < 20) return this.fail(`interface description block at offset ${fileAt} too short (${blen} bytes)`, fileAt);
          const lt = dv.getUint16(body, le);
          const snap = dv.getUint32(body + 4, le);
          let unitsPerSec = 1e6;
          let offsetSec = 0;
          // Options: code (u16), length (u16), value padded to 4 bytes.
          let o = body + 8;
          while (bodyEnd - o >= 4) {
            const code = dv.getUint16(o, le);
            const olen = dv.getUint16(o + 2, le);
            if (code === OPT_END) break;
            if (olen > bodyEnd - o - 4) break;
            if (code === IF_TSRESOL && olen >= 1) {
              const r = bytes[o + 4];
              const e = r & 0x7f;
              unitsPerSec = (r & 0x80) !== 0 ? Math.pow(2, e) : Math.pow(10, e);
            } else if (code === IF_TSOFFSET && olen >= 8) {
              const hi = dv.getInt32(o + 4 + (le ? 4 : 0), le);
              const lo = dv.getUint32(o + 4 + (le ? 0 : 4), le);
              offsetSec = hi * 4294967296 + lo;
            }
            o += 4 + ((olen + 3) & ~3);
          }
          if (!(unitsPerSec >= 1) || !Number.isFinite(unitsPerSec)) unitsPerSec = 1e6;
          this.ifLinktype.push(lt);
          this.ifSnaplen.push(snap);
          this.ifUnitsPerMs.push(unitsPerSec / 1000);
          this.ifOffsetMs.push(offsetSec * 1000);
          if (this.firstLinktype < 0) this.firstLinktype = lt;
          break;
        }
        case PCAPNG_EPB:
        case PCAPNG_OPB: {
          if (blen < 32) return this.fail(`packet block at offset ${fileAt} too short (${blen} bytes)`, fileAt);
          const ifId = type === PCAPNG_EPB ? dv.getUint32(body, le) : dv.getUint16(body, le);
          if (ifId >= this.ifLinktype.length) {
            return this.fail(
              `packet block at offset ${fileAt} names interface ${ifId}, but the section has ${this.ifLinktype.length}`,
              fileAt,
            );
          }
          const tsHi = dv.getUint32(body + 4, le);
          const tsLo = dv.getUint32(body + 8, le);
          const caplen = dv.getUint32(body + 12, le);
          const origLen = dv.getUint32(body + 16, le);
          const data = body + 20;
          if (caplen > bodyEnd - data) {
            return this.fail(
              `packet block at offset ${fileAt}: captured length ${caplen} exceeds the block's ${bodyEnd - data} data bytes`,
              fileAt,
            );
          }
          const ts = (tsHi * 4294967296 + tsLo) / this.ifUnitsPerMs[ifId] + this.ifOffsetMs[ifId];
          this.lastTs = ts;
          this.pos = at + blen;
          return this.emit(ifId, data, caplen, origLen, ts, fileAt);
        }
        case PCAPNG_SPB: {
          if (blen < 16) return this.fail(`simple packet block at offset ${fileAt} too short (${blen} bytes)`, fileAt);
          if (this.ifLinktype.length === 0) {
            return this.fail(`simple packet block at offset ${fileAt} before any interface description block`, fileAt);
          }
          const origLen = dv.getUint32(body, le);
          const data = body + 4;
          let caplen = bodyEnd - data;
          if (origLen < caplen) caplen = origLen;
          const snap = this.ifSnaplen[0];
          if (snap > 0 && snap < caplen) caplen = snap;
          this.pos = at + blen;
          return this.emit(0, data, caplen, origLen, this.lastTs, fileAt);
        }
        default:
          break;
      }
      this.pos = at + blen;
    }
  }

  private emit(ifId: number, off: number, len: number, origLen: number, ts: number, at: number): CaptureRecord {
    const rec = this.rec;
    rec.linktype = this.ifLinktype[ifId];
    rec.ifIndex = ifId;
    rec.off = off;
    rec.len = len;
    rec.origLen = origLen;
    rec.tsMs = ts;
    rec.recordOffset = at;
    rec.bigEndian = !this.le;
    return rec;
  }

  private fail(msg: string, at: number): never {
    this.error = new CaptureError(msg, at);
    throw this.error;
  }
}
