/**
 * Pool replay of a pcap file read straight into the batches (src/pool/direct-pcap.ts) decides,
 * lists and fails exactly as the streamed path does on the same file: byte orders, nanosecond
 * timestamps, records straddling reads and batches, truncated and corrupt files.
 */
import test from 'ava';
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodePcap } from '../src/input/capture/reader.js';
import { DirectPcapFeeder } from '../src/pool/direct-pcap.js';
import { ConntrackPool } from '../src/pool/pool.js';
import { ConntrackTable } from '../src/table/table.js';
import { TRAFFIC_LINKTYPE, traffic } from './helpers/traffic.js';

interface Outcome { packets: string[]; counts: Record<string, number>; error: string | null; now: number; progress: number[] }

async function pooled(source: string | Uint8Array | NodeJS.ReadableStream, batch: number): Promise<Outcome> {
  const table = ConntrackTable.create({ max: 8192, hashKey: [5, 6] });
  const pool = new ConntrackPool({ table, workers: 2, dispatch: 'flow' });
  const packets: string[] = [];
  const progress: number[] = [];
  try {
    const r = await pool.replay(source, {
      batch,
      onPacket: (i, v, tsMs) => { packets.push(JSON.stringify([i, v.state, v.dir, v.reason, v.protoState, v.drop, tsMs])); },
      onProgress: (done, total) => { progress.push(total); },
    });
    return { packets, counts: r.counts, error: r.error?.message ?? null, now: r.now, progress: [progress[progress.length - 1]!] };
  } finally {
    await pool.close();
  }
}

const dir = mkdtempSync(join(tmpdir(), 'ctsab-direct-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const frames = traffic(1500, 21);
const variants: [string, Uint8Array, number][] = [];
const le = encodePcap(TRAFFIC_LINKTYPE, frames.map((f) => ({ data: f.data, tsMs: f.tsMs })));
const beNs = encodePcap(TRAFFIC_LINKTYPE, frames.map((f) => ({ data: f.data, tsMs: f.tsMs + 0.123456 })), { bigEndian: true, nanosecond: true });
variants.push(['little-endian µs, batches of 64', le, 64]);
variants.push(['big-endian ns, batches of 7', beNs, 7]);
variants.push(['default batches', le, 4096]);
// Cut inside a record's data, inside a record header; a captured length over snaplen and 256 KiB.
variants.push(['truncated inside a record', le.subarray(0, le.length - 10), 64]);
variants.push(['truncated inside a record header', le.subarray(0, 24 + 16 + frames[0]!.data.length + 7), 64]);
const bad = le.slice();
new DataView(bad.buffer).setUint32(24 + 16 + frames[0]!.data.length + 8, 0x7fffffff, true);
variants.push(['corrupt captured length', bad, 64]);
// A snaplen that allows it: over the streaming limit, and over a batch's data area.
for (const [name, caplen] of [['over the streaming limit', (64 << 20) + 1], ['over a batch', 8 << 20]] as const) {
  const big = le.slice();
  const dv = new DataView(big.buffer);
  dv.setUint32(16, 0xffffffff, true);
  dv.setUint32(24 + 16 + frames[0]!.data.length + 8, caplen, true);
  variants.push([`captured length ${name}`, big, 64]);
}

// A whole record larger than a batch's data area (256 KiB at batches of 64), snaplen permitting.
const huge = encodePcap(TRAFFIC_LINKTYPE, [
  ...frames.slice(0, 100).map((f) => ({ data: f.data, tsMs: f.tsMs })),
  { data: new Uint8Array(300_000), tsMs: frames[100]!.tsMs },
  ...frames.slice(101, 200).map((f) => ({ data: f.data, tsMs: f.tsMs })),
], { snaplen: 0xffffffff });
variants.push(['a record larger than a batch', huge, 64]);

for (const [label, bytes, batch] of variants) {
  test(`file read into the batches = streamed bytes: ${label}`, async (t) => {
    const path = join(dir, `${label.replace(/\W+/g, '-')}.pcap`);
    writeFileSync(path, bytes);
    const f = DirectPcapFeeder.open(path);
    t.not(f, null, 'the direct path is taken for a classic pcap file');
    f?.close();
    // The reference: the same file streamed (what a path went through before).
    const streamed = await pooled(createReadStream(path), batch);
    const direct = await pooled(path, batch);
    t.true(streamed.packets.length > 0);
    t.deepEqual(direct.packets, streamed.packets);
    t.deepEqual(direct.counts, streamed.counts);
    t.is(direct.error, streamed.error);
    t.is(direct.now, streamed.now);
    t.is(direct.progress[0], bytes.length);
    if (/^(truncated|corrupt|captured|a record)/.test(label)) t.truthy(direct.error);
  });
}

test('not a classic pcap file: the streamed path (pcapng, gzip, short, missing)', (t) => {
  const ng = join(dir, 'x.pcapng');
  writeFileSync(ng, new Uint8Array([0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 28, 0, 0, 0]));
  const gz = join(dir, 'x.pcap.gz');
  writeFileSync(gz, new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, ...new Array(20).fill(0)]));
  const short = join(dir, 'short.pcap');
  writeFileSync(short, le.subarray(0, 20));
  for (const p of [ng, gz, short, join(dir, 'missing.pcap'), '-']) t.is(DirectPcapFeeder.open(p), null, p);
});
