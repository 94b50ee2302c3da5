/**
 * Pool replay of a classic pcap file without copying frames: the file is read straight into a
 * batch's own shared data area (readSync), and the batch's index points at the frames where they
 * lie (pushRef). The streaming reader path copies every byte twice on the dispatching thread
 * (chunk into its window, frame into the batch), which capped `replay --workers N`: the main
 * thread now reads, walks the 16-byte record headers and dispatches.
 *
 * Only for a regular file that starts with a classic pcap magic (not gzip, not pcapng, not a
 * pipe) and has its whole file header; anything else goes through CaptureStream as before. The
 * errors are the pcap reader's (pcap.ts), with the same messages and file offsets.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { CaptureError, MAX_CAPLEN, MAX_STREAM_RECORD } from '../input/capture/record.js';
import { PCAP_MAGIC_MODIFIED, PCAP_MAGIC_NS, PCAP_MAGIC_US } from '../input/capture/pcap.js';
import { BH_DATA_BYTES, BH_DATA_USED, type PacketBatch } from './batch.js';

/** File header bytes of a classic pcap. */
const PCAP_FILE_HEADER = 24;
/** Bytes read per readSync (the tail of a read that holds no whole record is carried over). */
const READ_CHUNK = 1 << 20;

/** One fill's outcome: an error ends the capture (the frames before it were pushed). */
export interface DirectFill {
  eof: boolean;
  error: CaptureError | null;
}

export class DirectPcapFeeder {
  readonly linktype: number;
  readonly totalBytes: number;
  private fd: number;
  private readonly le: boolean;
  private readonly nanosecond: boolean;
  private readonly hdrLen: number;
  private readonly snaplen: number;
  /** File offset of the next byte to read. */
  private readAt = PCAP_FILE_HEADER;
  /** The file's end was read. */
  private fileEnd = false;
  /** The unparsed tail of the last filled area: copied to the front of the next one. */
  private carryBuf: Uint8Array | null = null;
  private carryFrom = 0;
  private carryTo = 0;
  /** File offset of the carried tail's first byte. */
  private carryAt = PCAP_FILE_HEADER;

  private constructor(fd: number, size: number, head: Uint8Array) {
    this.fd = fd;
    this.totalBytes = size;
    const be = ((head[0]! << 24) | (head[1]! << 16) | (head[2]! << 8) | head[3]!) >>> 0;
    this.le = !(be === PCAP_MAGIC_US || be === PCAP_MAGIC_NS || be === PCAP_MAGIC_MODIFIED);
    const magic = this.le ? (((head[3]! << 24) | (head[2]! << 16) | (head[1]! << 8) | head[0]!) >>> 0) : be;
    this.nanosecond = magic === PCAP_MAGIC_NS;
    this.hdrLen = magic === PCAP_MAGIC_MODIFIED ? 24 : 16;
    this.snaplen = u32(head, 16, this.le);
    this.linktype = u32(head, 20, this.le) & 0xffff;
  }

  /** A feeder for `path`, or null when it is not a regular classic pcap file (use CaptureStream). */
  static open(path: string): DirectPcapFeeder | null {
    if (path === '-' || path === '/dev/stdin') return null;
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return null; // CaptureStream reports the error in its own words
    }
    try {
      const st = fstatSync(fd);
      const head = new Uint8Array(PCAP_FILE_HEADER);
      if (st.isFile() && st.size >= PCAP_FILE_HEADER && readSync(fd, head, 0, PCAP_FILE_HEADER, 0) === PCAP_FILE_HEADER && isPcap(head)) {
        const f = new DirectPcapFeeder(fd, st.size, head);
        fd = -1;
        return f;
      }
      return null;
    } finally {
      if (fd >= 0) closeSync(fd);
    }
  }

  /** File bytes consumed: up to the first record not yet pushed. */
  get bytesRead(): number {
    return this.carryAt;
  }

  get done(): boolean {
    return this.fileEnd && this.carryTo === this.carryFrom;
  }

  /**
   * Reset `b` and fill it with whole records (at most its capacity) read into its own data area;
   * times[i] gets packet i's capture time (ms). `clock(tsMs)` gives the table clock to store and
   * `timeOf` the capture time of a record (NFLOG: its own timestamp).
   */
  fill(
    b: PacketBatch, times: Float64Array,
    timeOf: (linktype: number, buf: Uint8Array, off: number, len: number, tsMs: number) => number,
    clock: (tsMs: number) => number,
  ): DirectFill {
    b.reset();
    const area = b.bytes;
    const size = b.i32[BH_DATA_BYTES]!;
    const cap = b.capacity;
    const hl = this.hdrLen;
    const le = this.le;
    const lt = this.linktype;
    let used = 0;
    if (this.carryBuf !== null && this.carryTo > this.carryFrom) {
      // The previous area (a batch still in flight: read only) ends with a partial record.
      area.set(this.carryBuf.subarray(this.carryFrom, this.carryTo), 0);
      used = this.carryTo - this.carryFrom;
    }
    const base = this.carryAt; // file offset of area[0]
    let pos = 0;
    let error: CaptureError | null = null;
    for (;;) {
      // Whole records in [pos, used).
      while (b.count < cap) {
        const left = used - pos;
        if (left < hl) break;
        const caplen = u32(area, pos + 8, le);
        if (caplen > MAX_CAPLEN && caplen > this.snaplen) {
          error = new CaptureError(`record at offset ${base + pos}: captured length ${caplen} exceeds snaplen ${this.snaplen} and the ${MAX_CAPLEN}-byte limit`, base + pos);
          break;
        }
        if (caplen > MAX_STREAM_RECORD) {
          error = new CaptureError(`record at offset ${base + pos}: captured length ${caplen} exceeds the ${MAX_STREAM_RECORD}-byte streaming limit`, base + pos);
          break;
        }
        if (hl + caplen > size) {
          const at = base + pos;
          const left = this.totalBytes - at - hl; // the streamed path reads to the end first
          error = caplen > left
            ? new CaptureError(`truncated record at offset ${at}: captured length ${caplen} exceeds the ${left} bytes left in the file`, at)
            : new CaptureError(`record at offset ${at}: captured length ${caplen} is too large for a pool batch (${size} bytes)`, at);
          break;
        }
        if (caplen > left - hl) break; // the rest is still to be read
        const sec = u32(area, pos, le);
        const frac = u32(area, pos + 4, le);
        const data = pos + hl;
        const t = timeOf(lt, area, data, caplen, sec * 1000 + (this.nanosecond ? frac / 1e6 : frac / 1e3));
        times[b.count] = t;
        b.pushRef(lt, data, caplen, clock(t));
        pos = data + caplen;
      }
      if (error !== null || b.count >= cap) break;
      if (this.fileEnd) {
        const left = used - pos;
        if (left > 0) {
          const at = base + pos;
          error = left < hl
            ? new CaptureError(`truncated record header at offset ${at} (${left} of ${hl} bytes)`, at)
            : new CaptureError(`truncated record at offset ${at}: captured length ${u32(area, pos + 8, le)} exceeds the ${left - hl} bytes left in the file`, at);
          pos = used;
        }
        break;
      }
      if (used >= size) break; // area full: the partial record goes to the next batch
      const n = readSync(this.fd, area, used, Math.min(READ_CHUNK, size - used), this.readAt);
      if (n === 0) this.fileEnd = true;
      this.readAt += n;
      used += n;
    }
    b.i32[BH_DATA_USED] = used;
    this.carryBuf = area;
    this.carryFrom = pos;
    this.carryTo = error !== null ? pos : used; // after an error nothing more is read
    this.carryAt = base + pos;
    if (error !== null) this.fileEnd = true;
    return { eof: this.done, error };
  }

  close(): void {
    if (this.fd >= 0) {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}

function u32(b: Uint8Array, o: number, le: boolean): number {
  return le
    ? ((b[o + 3]! << 24) | (b[o + 2]! << 16) | (b[o + 1]! << 8) | b[o]!) >>> 0
    : ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

function isPcap(h: Uint8Array): boolean {
  const be = u32(h, 0, false);
  const le = u32(h, 0, true);
  const ok = (m: number): boolean => m === PCAP_MAGIC_US || m === PCAP_MAGIC_NS || m === PCAP_MAGIC_MODIFIED;
  return ok(be) || ok(le);
}
