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
  /** The whole capture file; the frame is buf[off, off + len). */
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
  /** Byte offset of the record (pcap record header / pcapng block) in the file. */
  recordOffset = 0;
  /** True when the file's multi-byte fields are big-endian (useful for NFLOG TLVs). */
  bigEndian = false;
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
 * A reader over a capture held in memory. `next()` returns the reused CaptureRecord, or null at
 * the end. A corruption throws a CaptureError only once every record before it has been
 * returned; after that, every further next() throws the same error.
 * Iterating with for..of also allocates nothing per record (the iterator result is reused).
 */
export interface CaptureReader extends Iterable<CaptureRecord> {
  readonly format: CaptureFormat;
  /** Link type of the first interface (pcap: the file's), -1 while none is known. */
  readonly linktype: number;
  /** Byte offset of the next record to read. */
  readonly offset: number;
  next(): CaptureRecord | null;
}

/** Shared for..of support: an iterator that reuses one result object. */
export abstract class ReaderBase implements CaptureReader {
  abstract readonly format: CaptureFormat;
  abstract readonly linktype: number;
  abstract readonly offset: number;
  abstract next(): CaptureRecord | null;

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
}

/** Largest captured length accepted for a record whose snaplen does not allow more (256 KiB). */
export const MAX_CAPLEN = 262144;

export function hex32(v: number): string {
  return '0x' + (v >>> 0).toString(16).padStart(8, '0');
}
