/**
 * Types shared by the capture readers: the reused record, the error, the reader interface.
 */
import { ConntrackError } from '../../errors.js';

/**
 * One captured frame. A reader fills and returns the same object for every frame (no allocation
 * per packet): copy what you need before asking for the next one.
 */
export class CaptureRecord {
  /** pcap LINKTYPE_* of the frame (pcapng: of its interface). */
  linktype = 0;
  /** The bytes holding the frame, buf[off, off + len): the whole capture in memory, or a streaming reader's window. */
  buf: Uint8Array = new Uint8Array(0);
  off = 0;
  /** Captured bytes. */
  len = 0;
  /** Length of the frame on the wire (>= len unless the writer lied). */
  origLen = 0;
  /** Timestamp, ms since the epoch, with a fraction for µs/ns precision. */
  tsMs = 0;
  /** pcapng interface id (0 for classic pcap). */
  ifIndex = 0;
  /** Byte offset of the record (pcap record header / pcapng block) in the file (or decompressed stream). */
  recordOffset = 0;
  /** True when the file's multi-byte fields are big-endian (useful for NFLOG TLVs). */
  bigEndian = false;

  /** The frame's bytes (a view, valid until the reader moves on; copy to keep). */
  get data(): Uint8Array {
    return this.buf.subarray(this.off, this.off + this.len);
  }
}

/** A corrupt or truncated capture. `offset` is the byte offset in the file where it was found. */
export class CaptureError extends ConntrackError {
  readonly offset: number;
  constructor(message: string, offset: number) {
    super('ERR_CT_BAD_CAPTURE', message);
    this.name = 'CaptureError';
    this.offset = offset;
  }
}

export type CaptureFormat = 'pcap' | 'pcapng';

/**
 * A reader over capture bytes: the whole capture in memory, or (streaming) a window of it that
 * push() extends and end() closes. `next()` returns the reused CaptureRecord, or null at the end
 * (streaming: also when the next record is not complete yet; `done` tells which). A corruption
 * throws a CaptureError only once every record before it has been returned; after that, every
 * further next() throws the same error.
 * Iterating with for..of also allocates nothing per record (the iterator result is reused).
 */
export interface CaptureReader extends Iterable<CaptureRecord>, AsyncIterable<CaptureRecord> {
  readonly format: CaptureFormat;
  /** Link type of the first interface (pcap: the file's), -1 while none is known. */
  readonly linktype: number;
  /** Byte offset of the next record to read. */
  readonly offset: number;
  /** True once every byte was read (in memory, or end() was called) and consumed. */
  readonly done: boolean;
  next(): CaptureRecord | null;
}

/** Largest block or record a streaming reader waits for before calling the capture corrupt (64 MiB). */
export const MAX_STREAM_RECORD = 64 << 20;

/**
 * Shared byte window and for..of support. In memory, the window is the caller's buffer (no
 * copy); streaming, an own buffer that push() compacts and grows. Positions inside the readers
 * are window-relative; `base` is the file offset of window byte 0.
 */
export abstract class ReaderBase implements CaptureReader {
  abstract readonly format: CaptureFormat;
  abstract readonly linktype: number;
  abstract next(): CaptureRecord | null;
  protected buf: Uint8Array;
  protected dv: DataView;
  /** Valid bytes in the window. */
  protected end: number;
  /** File offset of buf[0]. */
  protected base = 0;
  /** Window position of the next record. */
  protected pos = 0;
  /** No more bytes will come. */
  protected ended: boolean;
  private owned = false;

  constructor(bytes: Uint8Array, streaming: boolean) {
    this.buf = bytes;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.end = bytes.length;
    this.ended = !streaming;
  }

  get offset(): number {
    return this.base + this.pos;
  }

  get done(): boolean {
    return this.ended && this.pos >= this.end;
  }

  /** Streaming: append bytes. Records returned before are invalid afterwards (the window moves). */
  push(chunk: Uint8Array): void {
    if (this.ended) throw new Error('push() after end()');
    const keep = this.end - this.pos;
    if (!this.owned || this.end + chunk.length > this.buf.length) {
      const target = keep + chunk.length;
      let buf = this.buf;
      if (!this.owned || target > buf.length) {
        let size = Math.max(1 << 20, this.owned ? buf.length : 0);
        while (size < target) size *= 2;
        buf = new Uint8Array(size);
        this.owned = true;
      }
      if (buf === this.buf) buf.copyWithin(0, this.pos, this.end);
      else buf.set(this.buf.subarray(this.pos, this.end), 0);
      if (buf !== this.buf) {
        this.buf = buf;
        this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
        this.rebind(buf);
      }
      this.base += this.pos;
      this.pos = 0;
      this.end = keep;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  /** Streaming: no more bytes; what is left must be whole records. */
  finish(): void {
    this.ended = true;
  }

  /** The window moved to a new buffer (records must point at it). */
  protected abstract rebind(buf: Uint8Array): void;

  [Symbol.iterator](): Iterator<CaptureRecord> {
    const result: { done: boolean; value: CaptureRecord } = { done: false, value: new CaptureRecord() };
    const it: Iterator<CaptureRecord> = {
      next: (): IteratorResult<CaptureRecord> => {
        const r = this.next();
        if (r === null) {
          result.done = true;
        } else {
          result.done = false;
          result.value = r;
        }
        return result as IteratorResult<CaptureRecord>;
      },
    };
    return it;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<CaptureRecord> {
    for (let r = this.next(); r !== null; r = this.next()) yield r;
  }
}

/** Largest captured length accepted for a record whose snaplen does not allow more (256 KiB). */
export const MAX_CAPLEN = 262144;

export function hex32(v: number): string {
  return '0x' + (v >>> 0).toString(16).padStart(8, '0');
}
