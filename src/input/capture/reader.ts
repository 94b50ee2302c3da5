/**
 * Opens a capture file of either format (sniffed from its first bytes) as an in-memory reader.
 *
 *   for (const rec of openCapture('x.pcap')) parseFrame(rec.linktype, rec.buf, rec.off, rec.len, pkt);
 *
 * The record object is reused: read what you need before the next iteration. A corrupt or
 * truncated file throws a CaptureError (with the byte offset) after every good record before the
 * damage has been yielded.
 */

import { readFileSync } from 'node:fs';
import { PcapReader, isPcapMagic } from './pcap.js';
import { PcapngReader, isPcapngMagic } from './pcapng.js';
import { CaptureError, hex32, type CaptureReader } from './record.js';

export { CaptureError, CaptureRecord, MAX_CAPLEN, type CaptureFormat, type CaptureReader } from './record.js';
export { PcapReader } from './pcap.js';
export { PcapngReader } from './pcapng.js';
export { writePcap, encodePcap, encodePcapng, type PcapWriteRecord, type PcapngInterface, type PcapngPacket } from './writer.js';

/** Reader over capture bytes already in memory (pcap or pcapng, sniffed). */
export function readCapture(bytes: Uint8Array): CaptureReader {
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
