/**
 * Streaming input: the incremental readers give exactly what the in-memory ones give, whatever
 * the chunking (corrupt captures too: same records, same error, same offset); gzip by magic;
 * replay() and the pool take streams; the CLI reads `-`, /dev/stdin and FIFOs; a 200 MB capture
 * through a pipe replays in flat memory (the child's peak RSS is bounded).
 */
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import {
  CaptureError, CaptureStream, GzipError, encodePcap, encodePcapng, readCapture, type CaptureRecord,
} from '../src/input/capture/reader.js';
import { replay } from '../src/ops/replay.js';
import { ConntrackPool } from '../src/pool/pool.js';
import { ConntrackTable } from '../src/table/table.js';
import { TRAFFIC_LINKTYPE, traffic } from './helpers/traffic.js';
import { synthPcap } from './helpers/synth-pcap.js';

const dir = mkdtempSync(join(tmpdir(), 'ctsab-stream-'));
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const synthJs = fileURLToPath(new URL('./helpers/synth-pcap.js', import.meta.url));
const rssJs = fileURLToPath(new URL('./helpers/report-rss.js', import.meta.url));

interface Got { recs: string[]; error: string | null; offset: number }

function key(r: CaptureRecord): string {
  return `${r.linktype}|${r.recordOffset}|${r.tsMs}|${r.origLen}|${Buffer.from(r.buf.subarray(r.off, r.off + r.len)).toString('hex')}`;
}

function inMemory(bytes: Uint8Array): Got {
  const recs: string[] = [];
  try {
    for (const r of readCapture(bytes)) recs.push(key(r));
  } catch (e) {
    if (!(e instanceof CaptureError)) throw e;
    return { recs, error: e.message, offset: e.offset };
  }
  return { recs, error: null, offset: -1 };
}

async function streamed(source: AsyncIterable<Uint8Array> | Uint8Array | string): Promise<Got> {
  const recs: string[] = [];
  try {
    for await (const r of readCapture(source as AsyncIterable<Uint8Array>)) recs.push(key(r));
  } catch (e) {
    if (!(e instanceof CaptureError)) throw e;
    return { recs, error: e.message, offset: e.offset };
  }
  return { recs, error: null, offset: -1 };
}

async function* chunks(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.slice(i, i + size);
}

const frames = traffic(60, 3);
const pcap = encodePcap(TRAFFIC_LINKTYPE, frames);
const pcapng = encodePcapng([{ linktype: TRAFFIC_LINKTYPE, tsresol: 9 }], frames);

test('streamed readers match the in-memory ones for every chunk size (pcap, pcapng, truncated, corrupt)', async (t) => {
  const corrupt = Uint8Array.from(pcap);
  new DataView(corrupt.buffer).setUint32(24 + 16 + frames[0]!.data.length + 8, 0x7fffffff, true); // 2nd record's caplen
  const cases: [string, Uint8Array][] = [
    ['pcap', pcap], ['pcapng', pcapng],
    ['pcap cut in a record', pcap.subarray(0, pcap.length - 7)],
    ['pcapng cut in a block', pcapng.subarray(0, pcapng.length - 5)],
    ['pcap cut in the file header', pcap.subarray(0, 13)],
    ['corrupt caplen', corrupt],
  ];
  for (const [name, bytes] of cases) {
    const want = inMemory(bytes);
    for (const size of [1, 3, 7, 16, 100, 1000, 1 << 20]) {
      t.deepEqual(await streamed(chunks(bytes, size)), want, `${name}, chunks of ${size}`);
    }
    if (want.error === null) t.is(want.recs.length, frames.length, name);
  }
});

test('gzip is recognised by its magic (path, Readable, bytes); corrupt gzip is a GzipError after the good records', async (t) => {
  const want = inMemory(pcap);
  const gz = gzipSync(pcap);
  const f = join(dir, 'capture-without-suffix');
  writeFileSync(f, gz);
  t.deepEqual(await streamed(f), want);
  t.deepEqual(await streamed(Readable.from([Buffer.from(gz)])), want);
  t.deepEqual(inMemory(gz), want); // synchronous path: small buffers
  const cut = gz.subarray(0, gz.length - 20);
  const cs = new CaptureStream(chunks(cut, 512));
  let n = 0;
  const err = await t.throwsAsync(async () => {
    for (let r = await cs.pull(); r !== null; r = await cs.pull()) while (r.next() !== null) n++;
  }, { instanceOf: GzipError });
  t.regex(err!.message, /^gzip: unexpected end of file/);
  t.true(n > 0 && n < frames.length, `${n} records before the damage`);
  t.true(cs.gzip);
});

test('replay() takes a stream and decides as it does on bytes; the pool streams too', async (t) => {
  const bytes = encodePcap(TRAFFIC_LINKTYPE, traffic(3000, 9));
  const lines = (into: string[]) => (i: number, v: { ctstate: string; direction: string | null; reason: string | null }) => {
    into.push(`${i} ${v.ctstate} ${v.direction} ${v.reason}`);
  };
  const a: string[] = [];
  const ra = replay(bytes, { tableOptions: { hashKey: [1, 2] }, onPacket: lines(a) });
  ra.conntrack.close();
  const b: string[] = [];
  const rb = await replay(chunks(bytes, 4093), { tableOptions: { hashKey: [1, 2] }, onPacket: lines(b) });
  rb.conntrack.close();
  t.is(a.length, 3000);
  t.deepEqual(b, a);
  t.deepEqual(rb.counts, ra.counts);
  const f = join(dir, 'traffic.pcap.gz');
  writeFileSync(f, gzipSync(bytes));
  const table = ConntrackTable.create({ hashKey: [1, 2] });
  const pool = new ConntrackPool({ table, workers: 2, dispatch: 'flow' });
  const c: string[] = [];
  try {
    const rc = await pool.replay(f, { batch: 500, onPacket: lines(c) });
    t.is(rc.error, null);
    t.deepEqual(rc.counts, ra.counts);
  } finally {
    await pool.close();
  }
  t.deepEqual(c, a);
});

/** Run a shell pipeline; stdout, stderr, status. */
function sh(cmd: string, timeout = 60_000): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn('/bin/sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'], timeout });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    c.on('error', reject);
    c.on('close', (code) => resolve({ code: code ?? -1, out, err }));
  });
}

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
const node = q(process.execPath);

test('the CLI reads -, /dev/stdin and a FIFO', async (t) => {
  const f = join(dir, 'small.pcap');
  writeFileSync(f, pcap);
  const want = await sh(`${node} ${q(cli)} replay ${q(f)}`);
  t.is(want.code, 0, want.err);
  t.regex(want.out, /^60 packets: /);
  for (const arg of ['-', '/dev/stdin']) {
    const r = await sh(`cat ${q(f)} | ${node} ${q(cli)} replay ${arg}`);
    t.is(r.code, 0, r.err);
    t.is(r.out, want.out, arg);
  }
  const fifo = join(dir, 'capture.fifo');
  execFileSync('mkfifo', [fifo]);
  const r = await sh(`cat ${q(f)} > ${q(fifo)} & ${node} ${q(cli)} replay ${q(fifo)}; wait`);
  t.is(r.code, 0, r.err);
  t.is(r.out, want.out, 'fifo');
});

test('200 MB through a pipe: replayed in flat memory (peak RSS of the replaying process bounded)', async (t) => {
  const size = 200 << 20;
  // The generator writes to the pipe as the replay reads it: nothing is stored on disk.
  const r = await sh(`${node} ${q(synthJs)} ${size} | ${node} --import ${q(rssJs)} ${q(cli)} replay - -S`, 120_000);
  t.is(r.code, 0, r.err);
  const m = /maxrss_kb=(\d+)/.exec(r.err);
  t.truthy(m, r.err);
  const rssMb = Number(m![1]) / 1024;
  t.log(`peak RSS ${rssMb.toFixed(0)} MB for a ${size >> 20} MB capture on stdin`);
  // Reading the capture whole would take more than its 200 MB alone (plus ~80 MB of node).
  t.true(rssMb < 180, `peak RSS ${rssMb.toFixed(0)} MB`);
  // Every packet decided as valid: checksums right, segments in window, no table-full drops.
  const st = /cpu=0\s+found=(\d+) invalid=(\d+) insert=(\d+) insert_failed=\d+ drop=(\d+) early_drop=(\d+)/.exec(r.out);
  t.truthy(st, r.out);
  t.is(Number(st![2]), 0, 'invalid');
  t.is(Number(st![4]), 0, 'drop');
  t.is(Number(st![5]), 0, 'early_drop');
  t.true(Number(st![1]) + Number(st![3]) > 300_000);
  // The generator is deterministic: it yields the size asked for, in whole records.
  let total = 0;
  for (const c of synthPcap({ bytes: 1 << 20 })) total += c.length;
  t.true(total >= 1 << 20 && total < (1 << 20) + 2000);
});
