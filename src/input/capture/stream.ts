/**
 * Captures read incrementally: from a file (any size), a pipe, a FIFO, stdin (`-`), a Node
 * Readable or any async iterable of byte chunks; gzip-compressed captures are recognised by
 * their magic and decompressed on the fly. Memory stays flat: the reader keeps a window of the
 * bytes not yet consumed (a little more than one chunk), never the whole capture.
 *
 *   const cs = new CaptureStream('-');
 *   for (let r = await cs.pull(); r !== null; r = await cs.pull()) {
 *     for (let rec = r.next(); rec !== null; rec = r.next()) use(rec);   // synchronous, no await per packet
 *   }
 */
import { createReadStream, statSync } from 'node:fs';
import { Readable } from 'node:stream';
import { createGunzip, type Gunzip } from 'node:zlib';
import { PcapReader, isPcapMagic } from './pcap.js';
import { PcapngReader, isPcapngMagic } from './pcapng.js';
import { CaptureError, hex32, type CaptureReader, type CaptureRecord, type ReaderBase } from './record.js';

/** Where a capture comes from: a path (`-` is stdin), bytes in memory, a Readable, or async chunks. */
export type CaptureSource = string | Uint8Array | NodeJS.ReadableStream | AsyncIterable<Uint8Array>;

/** Bytes read from the source per chunk when it is a file. */
const FILE_CHUNK = 1 << 20;

/** gzip's magic: 1f 8b. */
export function isGzipMagic(b: Uint8Array): boolean {
  return b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;
}

/** Why the first bytes are not a capture (the message of the CaptureError). */
function notACapture(head: Uint8Array): string {
  if (head.length === 0) return 'not a capture (empty)';
  let text = true;
  for (let i = 0; i < Math.min(head.length, 64); i++) {
    const c = head[i]!;
    if (c < 9 || (c > 13 && c < 32) || c > 126) { text = false; break; }
  }
  const m = head.length >= 4 ? hex32(((head[0]! << 24) | (head[1]! << 16) | (head[2]! << 8) | head[3]!) >>> 0) : `${head.length} bytes`;
  return `not a capture (${text ? 'text' : 'neither pcap nor pcapng'}; magic ${m} at offset 0)`;
}

/** A corrupt gzip stream (the capture inside could not be read on). */
export class GzipError extends CaptureError {
  constructor(message: string, offset: number) {
    super(message, offset);
    this.name = 'GzipError';
  }
}

/** Incremental capture reading from a path, `-`, a Readable or async chunks (gzip detected by magic), with flat memory. */
export class CaptureStream {
  /** The reader once the file header was seen (null before the first pull()). */
  reader: CaptureReader | null = null;
  /** Total bytes of the source when known (a regular file), else -1. */
  readonly totalBytes: number;
  /** True when the source turned out to be gzip-compressed. */
  gzip = false;
  private chunks: AsyncIterator<Uint8Array> | null = null;
  private raw: AsyncIterator<Uint8Array> | null = null;
  private rawBytes = 0;
  private gunzip: Gunzip | null = null;
  private inMemory: Uint8Array | null = null;
  private state: 'new' | 'open' | 'last' | 'done' = 'new';
  private readonly source: CaptureSource;

  constructor(source: CaptureSource) {
    this.source = source;
    let total = -1;
    if (typeof source === 'string' && source !== '-' && source !== '/dev/stdin') {
      try {
        const st = statSync(source);
        if (st.isFile()) total = st.size;
      } catch {
        // reported by the first pull()
      }
    } else if (source instanceof Uint8Array) {
      total = source.length;
    }
    this.totalBytes = total;
  }

  /** Bytes consumed from the source so far (compressed bytes for a gzip source). */
  get bytesRead(): number {
    if (this.inMemory) return this.reader ? this.reader.offset : 0;
    return this.rawBytes;
  }

  private openRaw(): AsyncIterator<Uint8Array> {
    const s = this.source;
    let it: AsyncIterable<Uint8Array>;
    if (typeof s === 'string') {
      it = s === '-' || s === '/dev/stdin' ? process.stdin : createReadStream(s, { highWaterMark: FILE_CHUNK });
    } else if (s instanceof Uint8Array) {
      it = (async function* () { yield s; })();
    } else {
      it = s as AsyncIterable<Uint8Array>;
    }
    const inner = it[Symbol.asyncIterator]();
    return {
      next: async (): Promise<IteratorResult<Uint8Array>> => {
        const r = await inner.next();
        if (!r.done) this.rawBytes += r.value.length;
        return r;
      },
      return: async (): Promise<IteratorResult<Uint8Array>> => {
        if (inner.return) await inner.return();
        return { done: true, value: undefined };
      },
    };
  }

  /**
   * Read more of the source into the reader and return it; null once everything was returned.
   * Drain the reader (next() until null) before pulling again: records point into its window.
   * Throws the source's I/O errors (ENOENT, EISDIR, ...), a CaptureError when the start is not
   * a capture, a GzipError when compressed data is corrupt.
   */
  async pull(): Promise<CaptureReader | null> {
    if (this.state === 'done') return null;
    if (this.state === 'last') {
      this.state = 'done';
      return null;
    }
    if (this.state === 'new') {
      this.state = 'open';
      const src = this.source;
      if (src instanceof Uint8Array && !isGzipMagic(src)) {
        // Bytes in memory: one reader over them, no copy.
        this.inMemory = src;
        this.reader = openReader(src, false);
        this.state = 'last';
        return this.reader;
      }
      this.raw = this.openRaw();
      // The first chunk tells whether the stream is gzip-compressed.
      let first = await this.readRaw(2);
      if (isGzipMagic(first)) {
        this.gzip = true;
        this.chunks = this.gunzipped(first);
      } else {
        this.chunks = this.raw;
        if (first.length > 0) this.pending = first;
      }
      first = await this.readAtLeast(24);
      this.reader = openReader(first, true);
      if (this.eof) {
        (this.reader as ReaderBase).finish();
        this.state = 'last';
      }
      return this.reader;
    }
    const r = this.reader as ReaderBase;
    const chunk = await this.nextChunk();
    if (chunk === null) {
      r.finish();
      this.state = 'last';
    } else {
      r.push(chunk);
    }
    return r;
  }

  private pending: Uint8Array | null = null;
  private eof = false;

  /** Next decompressed (or plain) chunk; null at the end. */
  private async nextChunk(): Promise<Uint8Array | null> {
    if (this.pending) {
      const p = this.pending;
      this.pending = null;
      return p;
    }
    if (this.eof) return null;
    let r: IteratorResult<Uint8Array>;
    try {
      r = await this.chunks!.next();
    } catch (e) {
      if (this.gzip && !(e instanceof CaptureError)) {
        throw new GzipError(`gzip: ${(e as Error).message} (compressed byte ${this.gunzip?.bytesWritten ?? this.rawBytes})`, this.reader?.offset ?? 0);
      }
      throw e;
    }
    if (r.done) {
      this.eof = true;
      return null;
    }
    return r.value;
  }

  /** At least `n` bytes from the start of the stream (fewer only at its end). */
  private async readAtLeast(n: number): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let got = 0;
    while (got < n) {
      const c = await this.nextChunk();
      if (c === null) break;
      parts.push(c);
      got += c.length;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** At least `n` raw bytes from the start of the source. */
  private async readRaw(n: number): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let got = 0;
    while (got < n) {
      const r = await this.raw!.next();
      if (r.done) break;
      parts.push(r.value);
      got += r.value.length;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** The raw chunks through gunzip (backpressure: the gunzip stream pulls from the source). */
  private gunzipped(first: Uint8Array): AsyncIterator<Uint8Array> {
    const raw = this.raw!;
    const input = Readable.from((async function* () {
      yield first;
      for (;;) {
        const r = await raw.next();
        if (r.done) return;
        yield r.value;
      }
    })(), { objectMode: false });
    const gz = createGunzip({ chunkSize: 1 << 16 });
    this.gunzip = gz;
    input.on('error', (e) => gz.destroy(e));
    input.pipe(gz);
    return gz[Symbol.asyncIterator]() as AsyncIterator<Uint8Array>;
  }

  /** Stop reading (closes a file stream early). */
  async close(): Promise<void> {
    this.state = 'done';
    this.gunzip?.destroy();
    if (this.raw?.return) await this.raw.return().catch(() => {});
  }
}

/** A reader for the first bytes of a capture: pcap or pcapng by magic; "not a capture" otherwise. */
function openReader(head: Uint8Array, streaming: boolean): CaptureReader {
  if (isPcapngMagic(head)) return new PcapngReader(head, streaming);
  if (isPcapMagic(head)) return new PcapReader(head, streaming);
  throw new CaptureError(notACapture(head), 0);
}

/**
 * Frames of a capture from any source, as an async iterator of the reused CaptureRecord
 * (`linktype`, `buf.subarray(off, off + len)`, `tsMs`): read what you need before the next one.
 */
export async function* captureFrames(source: CaptureSource): AsyncGenerator<CaptureRecord, void, undefined> {
  const cs = new CaptureStream(source);
  try {
    for (let r = await cs.pull(); r !== null; r = await cs.pull()) {
      for (let rec = r.next(); rec !== null; rec = r.next()) yield rec;
    }
  } finally {
    await cs.close();
  }
}
