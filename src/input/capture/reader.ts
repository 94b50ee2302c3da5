/**
 * Capture readers, pcap or pcapng sniffed from the first bytes.
 *
 *   for (const rec of readCapture(bytes)) parse(rec);                // in memory, synchronous
 *   for await (const rec of readCapture('big.pcap.gz')) parse(rec);  // path, '-', Readable, chunks: streamed
 *
 * The record object is reused: read what you need before the next iteration. A corrupt or
 * truncated file throws a CaptureError (with the byte offset) after every good record before the
 * damage has been yielded.
 */

import { readFileSync } from 'node:fs';
import { PcapReader, isPcapMagic } from './pcap.js';
import { PcapngReader, isPcapngMagic } from './pcapng.js';
import { CaptureError, hex32, type CaptureReader, type CaptureRecord } from './record.js';
import { captureFrames, GzipError, isGzipMagic, type CaptureSource } from './stream.js';
import { gunzipSync } from 'node:zlib';

export { CaptureError, CaptureRecord, MAX_CAPLEN, type CaptureFormat, type CaptureReader } from './record.js';
export { PcapReader } from './pcap.js';
export { PcapngReader } from './pcapng.js';
export { CaptureStream, GzipError, isGzipMagic, type CaptureSource } from './stream.js';
export { PcapFileWriter, writePcap, encodePcap, encodePcapng, type PcapWriteRecord, type PcapngInterface, type PcapngPacket } from './writer.js';

/**
 * Bytes in memory: a synchronous reader over them (also async-iterable). A path (`-` or
 * `/dev/stdin` for stdin), a Readable or an async iterable of chunks: an async iterator of
 * frames read incrementally (gzip recognised by its magic), memory flat whatever the size.
 * Either way the yielded CaptureRecord is reused: copy what you need before the next one.
 */
export function readCapture(bytes: Uint8Array): CaptureReader;
export function readCapture(source: string | NodeJS.ReadableStream | AsyncIterable<Uint8Array>): AsyncGenerator<CaptureRecord, void, undefined>;
export function readCapture(source: CaptureSource): CaptureReader | AsyncGenerator<CaptureRecord, void, undefined>;
export function readCapture(source: CaptureSource): CaptureReader | AsyncGenerator<CaptureRecord, void, undefined> {
  if (!(source instanceof Uint8Array)) return captureFrames(source);
  let bytes = source;
  if (isGzipMagic(bytes)) {
    try {
      bytes = gunzipSync(bytes);
    } catch (e) {
      throw new GzipError(`gzip: ${(e as Error).message}`, 0);
    }
  }
  if (isPcapngMagic(bytes)) return new PcapngReader(bytes);
  if (isPcapMagic(bytes)) return new PcapReader(bytes);
  if (bytes.length < 4) {
    throw new CaptureError(`not a pcap or pcapng file (only ${bytes.length} bytes)`, 0);
  }
  const m = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
  throw new CaptureError(`not a pcap or pcapng file (magic ${hex32(m)} at offset 0)`, 0);
}

/** Reads the whole file into memory once and returns a reader over it. */
export function openCapture(path: string): CaptureReader {
  return readCapture(readFileSync(path));
}
