/**
 * Snapshot and restore: write a table's connections to a file and load them into a new table
 * (of any size), so a restarted process keeps its connections.
 *
 * File format (little-endian), version 1:
 *
 *   header, HEADER_BYTES (64):
 *     0  magic "CTSBSNAP" (8 bytes)
 *     8  u16 version, u16 header bytes
 *    12  u32 flags (FLAG_EXT: records carry extension words)
 *    16  u32 record count
 *    20  u32 body bytes
 *    24  u32 CRC32 of the body
 *    28  u32 table clock at the snapshot (ms, wrapping): remaining timeouts are relative to it
 *    32  f64 wall clock at the snapshot (epoch ms, informational)
 *    40  u32 nf_conntrack_max of the table saved
 *    44  u32 words per record (REC_WORDS, without extension words)
 *    48  u32 next conntrack id of the table saved
 *    52  8 bytes reserved (zero)
 *    60  u32 CRC32 of header bytes 0..59
 *   body:
 *     sysctls:    u32 n, n x (u8 name length, name (ASCII), i32 value)
 *     statistics: u32 names, names x (u8 length, name), u32 rows, rows x (u32 worker record,
 *                 u32 value per name), then u32 GC runs, GC sweeps, GC busy µs, QSBR epoch
 *     zones:      u32 n, n x (u32 zone, u32 entries): the zone accounting of the records
 *     namespaces: u32 n, n x (u32 namespace, u32 limit)
 *     records:    count x (REC_WORDS x i32, then the extension words the record declares:
 *                 0, or one EXT_WORDS block: flags, accounting, timestamps, labels)
 *
 * Timeouts, and the protocol words that hold table-clock times (UDP's stream mark), are stored
 * relative to the snapshot's clock and re-based on the clock of the table they are loaded
 * into. Loading validates the whole file, and checks that every record fits the target table
 * (room under nf_conntrack_max, no duplicate tuple, no hash chain past the cap), before the
 * first entry is inserted: a refused snapshot leaves the table untouched.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { Conntrack } from '../track/core.js';
import { CONFIRM_OK, KILL_DELETE } from '../table/chains.js';
import { extAlloc } from '../table/ext.js';
import {
  E_EXT, E_HASH, E_ID, E_MARK, E_NS, E_PRIV, E_PROTO, E_STATUS, E_TIMEOUT, E_TUPLE, E_ZONE, ENTRY_WORDS,
  H_EPOCH, H_GC_BUSY_US, H_ID_EPOCH, H_GC_RUNS, H_GC_SWEEPS, H_MAX_CHAIN, H_NEXT_ID, IPS_ALLOCATED,
  IPS_CONFIRMED, IPS_DYING, NS_LIMIT, NS_WORDS, PRIV_WORDS, STAT_NAMES, TUPLE_WORDS, UDP_STREAM_TS,
  EXT_TIMEOUT, EXT_TSTAMP, EXT_WORDS, X_FLAGS, X_LINK, X_POLICY, X_TSTAMP, XC_EXT_FREE_COUNT,
} from '../table/layout.js';
import { NFPROTO_IPV4, NFPROTO_IPV6 } from '../input/packet/packet.js';
import { CtOps, workerStats } from './ops.js';
import { findSysctl, S_MAX } from '../table/sysctl.js';
import type { ConntrackTable } from '../table/table.js';
import { familyOf, l4protoOf } from '../track/tuple.js';
import { ConntrackError, abortError, argError, checkAbort } from '../errors.js';

export const SNAPSHOT_MAGIC = 'CTSBSNAP';
export const SNAPSHOT_VERSION = 1;
export const HEADER_BYTES = 64;
/** Records carry extension words (acct, timestamps, labels; src/table/ext.ts). */
export const FLAG_EXT = 1;

// A record's words.
export const R_PROTO = 0;
export const R_ZONE = 1;
export const R_NS = 2;
export const R_STATUS = 3;
export const R_MARK = 4;
export const R_ID = 5;
export const R_TIMEOUT = 6; // remaining ms, relative to the snapshot's clock
export const R_TUPLE = 7; // both tuples, 2 * TUPLE_WORDS
export const R_PRIV = R_TUPLE + 2 * TUPLE_WORDS; // protocol words, PRIV_WORDS
export const R_EXT_WORDS = R_PRIV + PRIV_WORDS; // extension words that follow the record
export const REC_WORDS = R_EXT_WORDS + 1;

/** Status bits a snapshot keeps: the kernel's IPS_* (not CONFIRMED / DYING, which belong to the table). */
const STATUS_KEPT = 0xffff & ~(IPS_CONFIRMED | IPS_DYING);

const UDP = 17;
const UDPLITE = 136;

/** Protocol words that hold table-clock times (re-based on load), by l4 protocol. */
function clockWords(l4: number): readonly number[] {
  return l4 === UDP || l4 === UDPLITE ? [UDP_STREAM_TS] : [];
}

// ---------------------------------------------------------------------------------------------

/** CRC-32 (IEEE 802.3, zlib's) of buf[off, off + len). crc32(ascii "123456789") is 0xcbf43926. */
export function crc32(buf: Uint8Array, off = 0, len = buf.length - off): number {
  return zlibCrc32(buf.subarray(off, off + len)) >>> 0;
}

// ---------------------------------------------------------------------------------------------

/** A snapshot that cannot be read: says what is wrong and at which byte offset. */
export class SnapshotError extends ConntrackError {
  constructor(
    message: string,
    /** Byte offset in the snapshot where the problem was found. */
    readonly offset: number,
    code: 'ERR_CT_BAD_SNAPSHOT' | 'ERR_CT_SNAPSHOT_REFUSED' = 'ERR_CT_BAD_SNAPSHOT',
  ) {
    super(code, `${message} (at byte offset ${offset})`);
    this.name = 'SnapshotError';
  }
}

/** A valid snapshot the target table cannot take (restore inserted nothing). */
function refused(message: string, offset: number): SnapshotError {
  return new SnapshotError(message, offset, 'ERR_CT_SNAPSHOT_REFUSED');
}

export interface SnapshotStats {
  names: string[];
  rows: { wid: number; values: number[] }[];
  gcRuns: number;
  gcSweeps: number;
  gcBusyUs: number;
  epoch: number;
}

/** A decoded, validated snapshot. */
export interface Snapshot {
  version: number;
  flags: number;
  /** Table clock the remaining timeouts are relative to. */
  clock: number;
  wallMs: number;
  max: number;
  nextId: number;
  count: number;
  sysctls: Record<string, number>;
  stats: SnapshotStats;
  /** Entries per zone (original-direction zone, as the table counts them). */
  zones: Map<number, number>;
  /** Namespace limits (NS_LIMIT) that were set. */
  nsLimits: Map<number, number>;
  /** count * REC_WORDS words. */
  records: Int32Array;
  /** Extension words per record (null when the snapshot has none). */
  ext: (Int32Array | null)[] | null;
}

class Writer {
  buf = new Uint8Array(1 << 16);
  view = new DataView(this.buf.buffer);
  len = 0;
  need(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
    this.view = new DataView(b.buffer);
  }
  u8(v: number): void { this.need(1); this.view.setUint8(this.len, v); this.len += 1; }
  u32(v: number): void { this.need(4); this.view.setUint32(this.len, v >>> 0, true); this.len += 4; }
  i32(v: number): void { this.need(4); this.view.setInt32(this.len, v | 0, true); this.len += 4; }
  str(s: string): void {
    if (s.length > 255 || !/^[\x20-\x7e]*$/.test(s)) throw argError(`snapshot: cannot store name "${s}"`);
    this.u8(s.length);
    this.need(s.length);
    for (let i = 0; i < s.length; i++) this.buf[this.len++] = s.charCodeAt(i);
  }
}

class Reader {
  private readonly view: DataView;
  pos: number;
  constructor(private readonly buf: Uint8Array, start: number, private readonly end: number) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = start;
  }
  private need(n: number, what: string): void {
    if (this.pos + n > this.end) {
      throw new SnapshotError(`truncated body: ${what} needs ${n} bytes, ${this.end - this.pos} remain`, this.pos);
    }
  }
  u8(what: string): number { this.need(1, what); return this.view.getUint8(this.pos++); }
  u32(what: string): number { this.need(4, what); const v = this.view.getUint32(this.pos, true); this.pos += 4; return v; }
  i32(what: string): number { this.need(4, what); const v = this.view.getInt32(this.pos, true); this.pos += 4; return v; }
  str(what: string): string {
    const n = this.u8(what);
    this.need(n, what);
    let s = '';
    for (let i = 0; i < n; i++) s += String.fromCharCode(this.buf[this.pos + i]!);
    this.pos += n;
    return s;
  }
  count(what: string, elemBytes: number): number {
    const at = this.pos;
    const n = this.u32(`${what} count`);
    if (n * elemBytes > this.end - this.pos) {
      throw new SnapshotError(`${what}: count ${n} does not fit in the ${this.end - this.pos} bytes left`, at);
    }
    return n;
  }
  get left(): number { return this.end - this.pos; }
}

/** Options of encodeSnapshot(), saveSnapshotFile() and saveSnapshot(). */
export interface EncodeOptions {
  /** Table clock the snapshot is taken at (default: the table's clock). */
  now?: number;
  /** Wall clock to record (default Date.now()). */
  wallMs?: number;
  /** Stops the copy of the table between slices (AbortError, code ABORT_ERR); no file is written. */
  signal?: AbortSignal;
}

/**
 * Take a snapshot of a live table (any thread; packet workers may keep tracking: entries are
 * copied out slice by slice, so one taken under traffic is a fuzzy, per-entry-consistent one).
 * Entries whose timeout has passed are left out.
 */
export function encodeSnapshot(table: ConntrackTable, opts: EncodeOptions = {}): Uint8Array {
  const now = (opts.now ?? table.clock) | 0;
  const ops = new CtOps(table);
  let dump;
  try {
    dump = ops.dump({}, { now, signal: opts.signal });
  } finally {
    ops.close();
  }
  const w = new Writer();
  w.need(HEADER_BYTES);
  w.len = HEADER_BYTES;
  const bodyStart = w.len;

  const sysctls = table.sysctls();
  const names = Object.keys(sysctls);
  w.u32(names.length);
  for (const n of names) { w.str(n); w.i32(sysctls[n]!); }

  const st = workerStats(table);
  w.u32(STAT_NAMES.length);
  for (const n of STAT_NAMES) w.str(n);
  const rows = st.perWorker.filter((r) => STAT_NAMES.some((n) => r.stats[n] !== 0));
  w.u32(rows.length);
  for (const r of rows) {
    w.u32(r.wid);
    for (const n of STAT_NAMES) w.u32(r.stats[n] ?? 0);
  }
  // Counters published by the GC worker and reclaimers: Atomics.load for a current value.
  w.u32(Atomics.load(table.i32, H_GC_RUNS));
  w.u32(Atomics.load(table.i32, H_GC_SWEEPS));
  w.u32(Atomics.load(table.i32, H_GC_BUSY_US));
  w.u32(Atomics.load(table.i32, H_EPOCH));

  const src = dump.words;
  const zones = new Map<number, number>();
  for (let i = 0; i < dump.count; i++) {
    const z = src[i * ENTRY_WORDS + E_ZONE]! & 0xffff;
    zones.set(z, (zones.get(z) ?? 0) + 1);
  }
  const zlist = [...zones.entries()].sort((a, b) => a[0] - b[0]);
  w.u32(zlist.length);
  for (const [z, n] of zlist) { w.u32(z); w.u32(n); }

  const limits: [number, number][] = [];
  for (let n = 0; n < table.namespaces; n++) {
    // NS_LIMIT: set by the table owner, read atomically.
    const lim = Atomics.load(table.i32, table.sec.ns + n * NS_WORDS + NS_LIMIT);
    if (lim !== 0) limits.push([n, lim]);
  }
  w.u32(limits.length);
  for (const [n, lim] of limits) { w.u32(n); w.u32(lim); }

  w.need(dump.count * REC_WORDS * 4);
  let anyExt = false;
  for (let i = 0; i < dump.count; i++) {
    const e = i * ENTRY_WORDS;
    const l4 = l4protoOf(src[e + E_PROTO]!);
    w.i32(src[e + E_PROTO]!);
    w.i32(src[e + E_ZONE]!);
    w.i32(src[e + E_NS]!);
    w.i32(src[e + E_STATUS]! & STATUS_KEPT);
    w.i32(src[e + E_MARK]!);
    w.i32(src[e + E_ID]!);
    w.i32((src[e + E_TIMEOUT]! - now) | 0);
    for (let k = 0; k < 2 * TUPLE_WORDS; k++) w.i32(src[e + E_TUPLE + k]!);
    const rel = clockWords(l4);
    for (let k = 0; k < PRIV_WORDS; k++) {
      const v = src[e + E_PRIV + k]!;
      w.i32(rel.includes(k) ? (v - now) | 0 : v);
    }
    // Extension block: flags, accounting, timestamps (start re-based), labels. A timeout
    // policy is a definition of the table saved, not of the connection: it is not carried.
    const x = i * EXT_WORDS;
    const flags = dump.ext[x + X_FLAGS]! & ~EXT_TIMEOUT;
    if (flags === 0) { w.u32(0); continue; }
    anyExt = true;
    w.u32(EXT_WORDS);
    for (let k = 0; k < EXT_WORDS; k++) {
      let val = dump.ext[x + k]!;
      if (k === X_LINK || k === X_POLICY) val = 0;
      else if (k === X_FLAGS) val = flags;
      else if (k === X_TSTAMP && (flags & EXT_TSTAMP)) val = (val - now) | 0;
      w.i32(val);
    }
  }

  const bodyLen = w.len - bodyStart;
  const out = w.buf.subarray(0, w.len);
  const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let i = 0; i < 8; i++) out[i] = SNAPSHOT_MAGIC.charCodeAt(i);
  v.setUint16(8, SNAPSHOT_VERSION, true);
  v.setUint16(10, HEADER_BYTES, true);
  v.setUint32(12, anyExt ? FLAG_EXT : 0, true);
  v.setUint32(16, dump.count, true);
  v.setUint32(20, bodyLen, true);
  v.setUint32(24, crc32(out, bodyStart, bodyLen), true);
  v.setUint32(28, now >>> 0, true);
  v.setFloat64(32, opts.wallMs ?? Date.now(), true);
  v.setUint32(40, table.max, true);
  v.setUint32(44, REC_WORDS, true);
  // H_NEXT_ID: Atomics.load, other threads take ids with Atomics.add.
  v.setUint32(48, Atomics.load(table.i32, H_NEXT_ID) >>> 0, true);
  v.setUint32(60, crc32(out, 0, 60), true);
  return out.slice();
}

/** True when `bytes` starts with the snapshot magic. */
export function isSnapshot(bytes: Uint8Array): boolean {
  if (bytes.length < 8) return false;
  for (let i = 0; i < 8; i++) if (bytes[i] !== SNAPSHOT_MAGIC.charCodeAt(i)) return false;
  return true;
}

/** Decode and validate a snapshot; throws a SnapshotError naming what is wrong and where. */
export function decodeSnapshot(bytes: Uint8Array): Snapshot {
  if (bytes.length < HEADER_BYTES) {
    throw new SnapshotError(`truncated snapshot: the header needs ${HEADER_BYTES} bytes, the file has ${bytes.length}`, bytes.length);
  }
  if (!isSnapshot(bytes)) throw new SnapshotError('not a conntrack-sab snapshot (bad magic)', 0);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = v.getUint16(8, true);
  if (version !== SNAPSHOT_VERSION) {
    throw new SnapshotError(`unsupported snapshot version ${version} (this build reads version ${SNAPSHOT_VERSION})`, 8);
  }
  const hcrc = crc32(bytes, 0, 60);
  if (v.getUint32(60, true) !== hcrc) {
    throw new SnapshotError(`corrupt snapshot header: CRC32 is 0x${hcrc.toString(16)}, the header says 0x${v.getUint32(60, true).toString(16)}`, 60);
  }
  const headerBytes = v.getUint16(10, true);
  if (headerBytes !== HEADER_BYTES) throw new SnapshotError(`header length ${headerBytes} is not ${HEADER_BYTES}`, 10);
  const flags = v.getUint32(12, true);
  if (flags & ~FLAG_EXT) throw new SnapshotError(`unknown flags 0x${flags.toString(16)}`, 12);
  const count = v.getUint32(16, true);
  const bodyLen = v.getUint32(20, true);
  const have = bytes.length - HEADER_BYTES;
  if (bodyLen > have) {
    throw new SnapshotError(`truncated snapshot: the body should be ${bodyLen} bytes, the file has ${have} after the header`, bytes.length);
  }
  if (bodyLen < have) {
    throw new SnapshotError(`${have - bodyLen} unexpected bytes after the body`, HEADER_BYTES + bodyLen);
  }
  const bcrc = crc32(bytes, HEADER_BYTES, bodyLen);
  if (v.getUint32(24, true) !== bcrc) {
    throw new SnapshotError(`corrupt snapshot body: CRC32 is 0x${bcrc.toString(16)}, the header says 0x${v.getUint32(24, true).toString(16)}`, HEADER_BYTES);
  }
  const recWords = v.getUint32(44, true);
  if (recWords !== REC_WORDS) throw new SnapshotError(`records of ${recWords} words, this build reads ${REC_WORDS}`, 44);

  const r = new Reader(bytes, HEADER_BYTES, HEADER_BYTES + bodyLen);
  const sysctls: Record<string, number> = {};
  const ns = r.count('sysctls', 5);
  for (let i = 0; i < ns; i++) {
    const at = r.pos;
    const name = r.str('sysctl name');
    const value = r.i32(`sysctl ${name}`);
    if (name in sysctls) throw new SnapshotError(`sysctl ${name} appears twice`, at);
    sysctls[name] = value;
  }

  const nn = r.count('statistic names', 1);
  const names: string[] = [];
  for (let i = 0; i < nn; i++) names.push(r.str('statistic name'));
  const nr = r.count('statistic rows', 4 + 4 * nn);
  const rows: { wid: number; values: number[] }[] = [];
  for (let i = 0; i < nr; i++) {
    const wid = r.u32('statistic row');
    const values: number[] = [];
    for (let k = 0; k < nn; k++) values.push(r.u32('statistic value'));
    rows.push({ wid, values });
  }
  const stats: SnapshotStats = {
    names, rows, gcRuns: r.u32('GC runs'), gcSweeps: r.u32('GC sweeps'), gcBusyUs: r.u32('GC busy time'), epoch: r.u32('epoch'),
  };

  const zones = new Map<number, number>();
  const nz = r.count('zones', 8);
  for (let i = 0; i < nz; i++) {
    const at = r.pos;
    const z = r.u32('zone');
    const n = r.u32('zone count');
    if (z > 0xffff || zones.has(z)) throw new SnapshotError(`zone ${z} is out of range or listed twice`, at);
    zones.set(z, n);
  }
  const nsLimits = new Map<number, number>();
  const nl = r.count('namespace limits', 8);
  for (let i = 0; i < nl; i++) {
    const at = r.pos;
    const id = r.u32('namespace');
    const lim = r.u32('namespace limit');
    if (nsLimits.has(id)) throw new SnapshotError(`namespace ${id} listed twice`, at);
    // The same range as setNamespaceLimit: a value >= 2^31 would load as a negative limit.
    if (lim > 0x7ffffffe) throw new SnapshotError(`namespace ${id}: limit ${lim} is out of range 0..${0x7ffffffe}`, at);
    nsLimits.set(id, lim);
  }

  const recStart = r.pos;
  if (count * REC_WORDS * 4 > r.left) {
    throw new SnapshotError(`the header announces ${count} records, the ${r.left} bytes left hold at most ${Math.floor(r.left / (REC_WORDS * 4))}`, recStart);
  }
  const records = new Int32Array(count * REC_WORDS);
  const ext: (Int32Array | null)[] = [];
  const seen = new Map<string, number>();
  const zoneCount = new Map<number, number>();
  for (let i = 0; i < count; i++) {
    const at = r.pos;
    const o = i * REC_WORDS;
    for (let k = 0; k < REC_WORDS; k++) records[o + k] = r.i32(`record ${i}`);
    const bad = (what: string): never => { throw new SnapshotError(`record ${i}: ${what}`, at); };
    const pw = records[o + R_PROTO]!;
    const fam = familyOf(pw);
    if (fam !== NFPROTO_IPV4 && fam !== NFPROTO_IPV6) bad(`unknown address family ${fam}`);
    if ((pw & ~0xffff) !== 0) bad(`bad protocol word 0x${(pw >>> 0).toString(16)}`);
    if (records[o + R_STATUS]! & ~STATUS_KEPT) bad(`status bits 0x${(records[o + R_STATUS]! >>> 0).toString(16)} are not stored in snapshots`);
    if (records[o + R_TIMEOUT]! <= 0) bad(`remaining timeout ${records[o + R_TIMEOUT]} ms is not positive`);
    if (records[o + R_NS]! < 0) bad(`namespace ${records[o + R_NS]} is negative`);
    if (fam === NFPROTO_IPV4) {
      for (const t of [R_TUPLE, R_TUPLE + TUPLE_WORDS]) {
        for (const a of [t, t + 4]) {
          if (records[o + a + 1] !== 0 || records[o + a + 2] !== 0 || records[o + a + 3] !== 0) bad('IPv4 address with IPv6 words set');
        }
      }
    }
    const xw = records[o + R_EXT_WORDS]!;
    if (xw !== 0 && xw !== EXT_WORDS) bad(`${xw} extension words (a block is ${EXT_WORDS})`);
    if (xw !== 0 && (flags & FLAG_EXT) === 0) bad('extension words in a snapshot without extension data');
    if (xw !== 0) {
      const xb = new Int32Array(EXT_WORDS);
      for (let k = 0; k < EXT_WORDS; k++) xb[k] = r.i32(`record ${i} extension`);
      if (xb[X_FLAGS] === 0 || (xb[X_FLAGS]! & EXT_TIMEOUT) || xb[X_LINK] !== 0 || xb[X_POLICY] !== 0) bad('malformed extension block');
      ext.push(xb);
    } else {
      ext.push(null);
    }
    // Each direction's key at most once (the table would refuse the second as a clash).
    const z = records[o + R_ZONE]!;
    for (let d = 0; d < 2; d++) {
      const t = o + R_TUPLE + d * TUPLE_WORDS;
      let key = `${pw}/${d === 0 ? z & 0xffff : z >>> 16}/${records[o + R_NS]}`;
      for (let k = 0; k < TUPLE_WORDS; k++) key += `/${records[t + k]}`;
      const prev = seen.get(key);
      if (prev !== undefined) bad(`its ${d === 0 ? 'original' : 'reply'} tuple is already held by record ${prev}`);
      seen.set(key, i);
    }
    zoneCount.set(z & 0xffff, (zoneCount.get(z & 0xffff) ?? 0) + 1);
  }
  if (r.left !== 0) throw new SnapshotError(`${r.left} bytes after the last of ${count} records`, r.pos);
  for (const [z, n] of zones) {
    if ((zoneCount.get(z) ?? 0) !== n) throw new SnapshotError(`zone ${z}: the accounting says ${n} entries, the records hold ${zoneCount.get(z) ?? 0}`, recStart);
  }
  for (const [z, n] of zoneCount) {
    if (!zones.has(z)) throw new SnapshotError(`zone ${z}: ${n} records but no accounting entry`, recStart);
  }
  return {
    version, flags, clock: v.getUint32(28, true) | 0, wallMs: v.getFloat64(32, true), max: v.getUint32(40, true),
    nextId: v.getUint32(48, true), count, sysctls, stats, zones, nsLimits, records,
    ext: ext.some((b) => b !== null) ? ext : null,
  };
}

/** Options of restoreSnapshot(). */
export interface RestoreOptions {
  /** Table clock of the target table to re-base timeouts on (default: its clock). */
  now?: number;
  /** Apply the snapshot's sysctls, except nf_conntrack_max (default true). */
  sysctls?: boolean;
  /**
   * Checked until the first insert (AbortError, code ABORT_ERR, table untouched). Once inserting
   * has begun the restore runs to the end, so a restore is never left half done.
   */
  signal?: AbortSignal;
}

/** What restoreSnapshot() did. */
export interface RestoreResult {
  restored: number;
  /** Sysctls of the snapshot this build does not know (left alone). */
  unknownSysctls: string[];
}

/**
 * Load a snapshot into `table`, which must hold no connections. Everything is checked before
 * the first insert (see the module comment); a SnapshotError leaves the table untouched.
 */
export function restoreSnapshot(table: ConntrackTable, input: Snapshot | Uint8Array, opts: RestoreOptions = {}): RestoreResult {
  checkAbort(opts.signal, 'restore');
  const snap = input instanceof Uint8Array ? decodeSnapshot(input) : input;
  const now = (opts.now ?? table.clock) | 0;
  const recs = snap.records;
  const n = snap.count;

  // 1. Sysctls: known names with values in range (applied only after every check passed).
  const apply: [string, number][] = [];
  const unknownSysctls: string[] = [];
  if (opts.sysctls !== false) {
    for (const [name, value] of Object.entries(snap.sysctls)) {
      const d = findSysctl(name);
      if (!d) { unknownSysctls.push(name); continue; }
      if (d.index === S_MAX) continue; // the target table's size is its own
      if (value < d.min || value > d.max) throw new SnapshotError(`sysctl ${name}: ${value} is out of range ${d.min}..${d.max}`, HEADER_BYTES);
      apply.push([name, value]);
    }
  }
  // 2. Room: an empty table, nf_conntrack_max not exceeded, namespaces that exist.
  // The entry count (H_COUNT plus the records' unfolded parts); packet workers change it.
  const have = table.count;
  if (have !== 0) throw refused(`restore needs an empty table; this one holds ${have} connections`, 0);
  if (n > table.max) {
    throw refused(`the snapshot holds ${n} connections, the table's nf_conntrack_max is ${table.max}`, 16);
  }
  for (let i = 0; i < n; i++) {
    if (recs[i * REC_WORDS + R_NS]! >= table.namespaces) {
      throw refused(`record ${i}: namespace ${recs[i * REC_WORDS + R_NS]} does not exist in this table (it has ${table.namespaces})`, HEADER_BYTES);
    }
  }
  for (const id of snap.nsLimits.keys()) {
    if (id >= table.namespaces) throw refused(`namespace ${id} has a limit but does not exist in this table (it has ${table.namespaces})`, HEADER_BYTES);
  }

  // Extension blocks: enough free ones for every record that carries one.
  const needExt = snap.ext ? snap.ext.filter((b) => b !== null).length : 0;
  if (needExt > 0) {
    // XC_EXT_FREE_COUNT changes under XC_EXT_LOCK; an atomic read for a current value.
    const free = Atomics.load(table.i32, table.sec.xctl + XC_EXT_FREE_COUNT);
    if (needExt > free) {
      throw refused(`${needExt} connections carry extension data (accounting, timestamps, labels), the table has ${free} free extension blocks (table option \`extensions\`)`, 12);
    }
  }

  const ct = new Conntrack(table);
  const c = ct.chains;
  try {
    // 3. Hashes under this table's key, and chain lengths: no insert may fail on the cap.
    const hashes = new Int32Array(2 * n);
    const perBucket = new Int32Array(table.buckets);
    const maxChain = table.i32[H_MAX_CHAIN]!;
    for (let i = 0; i < n; i++) {
      const o = i * REC_WORDS;
      const z = recs[o + R_ZONE]!;
      for (let d = 0; d < 2; d++) {
        const h = c.hash(recs, o + R_TUPLE + d * TUPLE_WORDS, recs[o + R_PROTO]!, d === 0 ? z & 0xffff : z >>> 16, recs[o + R_NS]!);
        hashes[2 * i + d] = h;
        const b = h & c.mask;
        if (++perBucket[b]! > maxChain) {
          throw refused(`record ${i}: hash bucket ${b} of this table would hold more than ${maxChain} entries (the chain cap); use a table with more buckets`, HEADER_BYTES);
        }
      }
    }

    checkAbort(opts.signal, 'restore'); // the last point where nothing was inserted
    // 4. Insert. Nothing above touched the table; a failure here (not expected after the
    //    checks) removes what was inserted before it is reported.
    const inserted: number[] = [];
    let maxId = 0;
    ct.beginBatch();
    try {
      for (let i = 0; i < n; i++) {
        const o = i * REC_WORDS;
        const slot = c.newEntry(hashes[2 * i]!, now);
        if (slot < 0) throw refused(`record ${i}: the table refused a new entry (full)`, HEADER_BYTES);
        const e = c.entry(slot);
        const i32 = table.i32;
        // The entry is private until confirm() publishes it: plain stores.
        i32.set(recs.subarray(o + R_TUPLE, o + R_TUPLE + 2 * TUPLE_WORDS), e + E_TUPLE);
        i32[e + E_PROTO] = recs[o + R_PROTO]!;
        i32[e + E_ZONE] = recs[o + R_ZONE]!;
        i32[e + E_NS] = recs[o + R_NS]!;
        i32[e + E_HASH] = hashes[2 * i]!;
        i32[e + E_HASH + 1] = hashes[2 * i + 1]!;
        i32[e + E_MARK] = recs[o + R_MARK]!;
        i32[e + E_ID] = recs[o + R_ID]!;
        i32[e + E_EXT] = 0;
        const rel = clockWords(l4protoOf(recs[o + R_PROTO]!));
        for (let k = 0; k < PRIV_WORDS; k++) {
          const w = recs[o + R_PRIV + k]!;
          i32[e + E_PRIV + k] = rel.includes(k) ? (now + w) | 0 : w;
        }
        i32[e + E_TIMEOUT] = (now + recs[o + R_TIMEOUT]!) | 0;
        const xb = snap.ext ? snap.ext[i] ?? null : null;
        if (xb) {
          const b = extAlloc(table, c.wid, slot);
          if (b === 0) {
            c.discard(slot);
            throw refused(`record ${i}: the extension slab ran out`, HEADER_BYTES);
          }
          const x = table.sec.ext + b * EXT_WORDS;
          // The block is ours until the entry is published: plain stores (X_LINK keeps the owner).
          for (let k = 0; k < EXT_WORDS; k++) {
            if (k === X_LINK) continue;
            i32[x + k] = k === X_TSTAMP && (xb[X_FLAGS]! & EXT_TSTAMP) ? (now + xb[k]!) | 0 : xb[k]!;
          }
          i32[e + E_EXT] = b;
        }
        // Status: the saved bits on top of ALLOCATED; confirm() adds CONFIRMED. Atomic like
        // every status write.
        Atomics.store(i32, e + E_STATUS, IPS_ALLOCATED | recs[o + R_STATUS]!);
        const k = c.confirm(slot);
        if (k !== CONFIRM_OK) {
          if (k >= 0 && !c.noref) c.put(k >>> 1); // a clash handed us a reference
          c.discard(slot);
          throw refused(`record ${i}: the table refused it (confirm result ${k})`, HEADER_BYTES);
        }
        inserted.push(slot);
        if ((recs[o + R_ID]! >>> 0) > maxId) maxId = recs[o + R_ID]! >>> 0;
      }
    } catch (err) {
      for (const s of inserted) c.kill(s, KILL_DELETE);
      throw err;
    } finally {
      ct.endBatch();
    }

    // 5. Ids: new connections must not reuse a restored id. CAS: other threads Atomics.add it.
    const want = Math.max(snap.nextId >>> 0, maxId + 1) | 0;
    for (;;) {
      const cur = Atomics.load(table.i32, H_NEXT_ID);
      if (((cur - want) | 0) >= 0) break;
      if (Atomics.compareExchange(table.i32, H_NEXT_ID, cur, want) === cur) {
        // Workers may hold ranges below `want`: the epoch change makes them take new ones.
        Atomics.add(table.i32, H_ID_EPOCH, 1);
        break;
      }
    }
    for (const [name, value] of apply) table.setSysctl(name, value);
    for (const [id, lim] of snap.nsLimits) {
      // NS_LIMIT: read by inserters; Atomics.store publishes it.
      Atomics.store(table.i32, table.sec.ns + id * NS_WORDS + NS_LIMIT, lim | 0);
    }
    return { restored: n, unknownSysctls };
  } finally {
    ct.close();
  }
}

/** A temporary file name next to `path` (same directory, so the rename stays on one file system). */
function tempPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

function savedCount(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(16, true);
}

/**
 * Write a snapshot of `table` to `path`, atomically: the bytes go to a temporary file in the same
 * directory, which is flushed to disk (fsync) and then renamed over `path`. A crash or an error
 * at any point leaves the previous file at `path` intact (at worst a `.NAME.*.tmp` file stays
 * behind). Returns the number of connections saved.
 */
export function saveSnapshotFile(table: ConntrackTable, path: string, opts: EncodeOptions = {}): number {
  const bytes = encodeSnapshot(table, opts);
  writeFileAtomic(path, bytes);
  return savedCount(bytes);
}

/**
 * @internal Write `bytes` to `path` atomically (temporary file in the same directory, fsync,
 * rename). A path that exists and is not a regular file (a FIFO, /dev/stdout) is written directly.
 */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  let special = false;
  try {
    special = !statSync(path).isFile();
  } catch { /* does not exist yet */ }
  if (special) {
    writeFileSync(path, bytes);
    return;
  }
  const tmp = tempPath(path);
  const fd = openSync(tmp, 'wx', 0o644);
  let open = true;
  let ok = false;
  try {
    for (let off = 0; off < bytes.length;) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
    open = false;
    closeSync(fd);
    renameSync(tmp, path);
    ok = true;
  } finally {
    if (!ok) {
      if (open) closeSync(fd);
      try { unlinkSync(tmp); } catch { /* not there */ }
    }
  }
}

/**
 * saveSnapshotFile() without blocking the event loop on the file system (the table copy itself
 * runs synchronously, slice by slice). Atomic the same way; `opts.signal` aborts it until the
 * rename (AbortError, code ABORT_ERR), leaving the previous file intact.
 */
export async function saveSnapshot(table: ConntrackTable, path: string, opts: EncodeOptions = {}): Promise<number> {
  checkAbort(opts.signal, 'saveSnapshot');
  const bytes = encodeSnapshot(table, opts);
  const tmp = tempPath(path);
  const fh = await open(tmp, 'wx', 0o644);
  let isOpen = true;
  let ok = false;
  try {
    for (let off = 0; off < bytes.length;) {
      checkAbort(opts.signal, 'saveSnapshot');
      off += (await fh.write(bytes, off, Math.min(bytes.length - off, 1 << 20))).bytesWritten;
    }
    await fh.sync();
    isOpen = false;
    await fh.close();
    checkAbort(opts.signal, 'saveSnapshot');
    await rename(tmp, path);
    ok = true;
  } finally {
    if (!ok) {
      if (isOpen) await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
    }
  }
  return savedCount(bytes);
}

/** Read and validate a snapshot file (SnapshotError, code ERR_CT_BAD_SNAPSHOT, when it is not valid). */
export function loadSnapshotFile(path: string): Snapshot {
  return decodeSnapshot(readFileSync(path));
}

/** loadSnapshotFile() without blocking the event loop; `opts.signal` aborts the read. */
export async function loadSnapshot(path: string, opts: { signal?: AbortSignal } = {}): Promise<Snapshot> {
  checkAbort(opts.signal, 'loadSnapshot');
  const bytes = await readFile(path, opts.signal ? { signal: opts.signal } : {}).catch((e: unknown) => {
    if (opts.signal?.aborted) throw abortError(opts.signal, 'loadSnapshot');
    throw e;
  });
  checkAbort(opts.signal, 'loadSnapshot');
  return decodeSnapshot(bytes);
}

/** The records of a snapshot as entries (ENTRY_WORDS each, timeouts re-based on `now`), for formatting without a table. */
export function snapshotEntries(snap: Snapshot, now = snap.clock): Int32Array {
  const out = new Int32Array(snap.count * ENTRY_WORDS);
  for (let i = 0; i < snap.count; i++) {
    const o = i * REC_WORDS;
    const e = i * ENTRY_WORDS;
    out.set(snap.records.subarray(o + R_TUPLE, o + R_TUPLE + 2 * TUPLE_WORDS), e + E_TUPLE);
    out[e + E_PROTO] = snap.records[o + R_PROTO]!;
    out[e + E_ZONE] = snap.records[o + R_ZONE]!;
    out[e + E_NS] = snap.records[o + R_NS]!;
    out[e + E_MARK] = snap.records[o + R_MARK]!;
    out[e + E_ID] = snap.records[o + R_ID]!;
    out[e + E_STATUS] = snap.records[o + R_STATUS]! | IPS_CONFIRMED | IPS_ALLOCATED;
    out[e + E_TIMEOUT] = (now + snap.records[o + R_TIMEOUT]!) | 0;
    for (let k = 0; k < PRIV_WORDS; k++) out[e + E_PRIV + k] = snap.records[o + R_PRIV + k]!;
  }
  return out;
}
