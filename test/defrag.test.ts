/**
 * Defragmentation before tracking (src/input/defrag): the kernel's queueing, overlap, duplicate,
 * length and timeout rules for IPv4 (ip_fragment.c) and IPv6 (nf_conntrack_reasm.c), per-packet
 * reporting, and the memory bound under a fragment flood.
 */
import test from 'ava';
import { Conntrack, LINKTYPE_RAW } from '../src/index.js';
import { ConntrackTable } from '../src/table/table.js';
import { FRAG_DONE, FRAG_DROP, FRAG_HELD, FRAG_PASS } from '../src/track/verdict.js';
import {
  R_FRAG_BAD_END, R_FRAG_DUP, R_FRAG_EVICTED, R_FRAG_OVERLAP, R_FRAG_TIMEOUT, R_FRAG_TOO_BIG,
} from '../src/input/defrag/defrag.js';
import { tcp4, udp4, udp6, icmp4 } from './helpers/frames.js';
import { even, frag4, frag6, type Piece } from './helpers/fragment.js';

interface Seen { state: string; dir: string | null; frag: number; reason: string | null; tags: number[]; dropped: { reason: string; tags: number[] }[] }

function engine(sysctls: Record<string, number> = {}): { ct: Conntrack; table: ConntrackTable; feed: (f: Uint8Array, now?: number) => Seen } {
  const table = ConntrackTable.create({ max: 1024, sysctls });
  const ct = new Conntrack(table);
  let i = 0;
  let clock = 1_000_000;
  const feed = (f: Uint8Array, now?: number): Seen => {
    if (now !== undefined) clock = now;
    ct.beginBatch();
    ct.fragTag = i++;
    const v = ct.frame(LINKTYPE_RAW, f, 0, f.length, clock);
    const s: Seen = {
      state: v.ctstate, dir: v.direction, frag: v.frag, reason: v.reason,
      tags: Array.from(ct.fragTags.subarray(0, ct.fragTagCount)).sort((a, b) => a - b),
      dropped: ct.fragDropped.map((d) => ({ reason: d.reason, tags: [...d.tags] })),
    };
    ct.endBatch();
    return s;
  };
  return { ct, table, feed };
}

const big4 = udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 5000, dport: 53, payload: new Uint8Array(3000).fill(0x41) });
const big6 = udp6({ src: 'fd00::1', dst: 'fd00::2', sport: 5000, dport: 53, payload: new Uint8Array(3000).fill(0x42) });
const L4 = big4.length - 20; // 3008
const L6 = big6.length - 40;

test('IPv4 in order: fragments held, the last completes the datagram and carries its verdict; the reply is established', (t) => {
  const { ct, table, feed } = engine();
  const fr = frag4(big4, even(L4, 1480));
  t.is(fr.length, 3);
  const a = feed(fr[0]!);
  t.is(a.state, 'held');
  t.is(a.frag, FRAG_HELD);
  t.is(feed(fr[1]!).state, 'held');
  const c = feed(fr[2]!);
  t.is(c.state, 'new');
  t.is(c.dir, 'original');
  t.is(c.frag, FRAG_DONE);
  t.deepEqual(c.tags, [0, 1, 2]);
  // The tracker saw the datagram itself: the same bytes as before fragmentation.
  t.deepEqual(Array.from(ct.pkt.buf.subarray(ct.pkt.l3off, ct.pkt.l3off + ct.pkt.ipLen).subarray(20)), Array.from(big4.subarray(20)));
  t.is(ct.pkt.ipLen, big4.length);
  const reply = feed(udp4({ src: '10.0.0.2', dst: '10.0.0.1', sport: 53, dport: 5000, payload: 'ok' }));
  t.is(reply.state, 'established');
  t.is(reply.dir, 'reply');
  const st = table.stats().total;
  t.is(st['frag_held'], 2);
  t.is(st['frag_reasm'], 1);
  t.is(ct.defragMemory().queues, 0);
  t.is(ct.defragMemory().mem, 0);
  ct.close();
});

test('IPv4 out of order and duplicates: any order completes; a duplicate is dropped alone', (t) => {
  const { ct, feed } = engine();
  const fr = frag4(big4, even(L4, 1000));
  t.is(fr.length, 4);
  t.is(feed(fr[3]!).state, 'held');
  t.is(feed(fr[1]!).state, 'held');
  const dup = feed(fr[1]!);
  t.is(dup.frag, FRAG_DROP);
  t.is(dup.reason, R_FRAG_DUP);
  t.deepEqual(dup.tags, [], 'the queue stays');
  t.is(feed(fr[0]!).state, 'held');
  const done = feed(fr[2]!);
  t.is(done.state, 'new');
  t.deepEqual(done.tags, [0, 1, 3, 4]);
  ct.close();
});

test('IPv4 overlap drops the whole queue (and the tiny-fragment/offset-1 TCP flag rewrite attack)', (t) => {
  const { ct, feed } = engine();
  const fr = frag4(big4, [[0, 1480, true], [1472, 1480, true], [2952, L4 - 2952, false]]);
  t.is(feed(fr[0]!).state, 'held');
  const o = feed(fr[1]!);
  t.is(o.frag, FRAG_DROP);
  t.is(o.reason, R_FRAG_OVERLAP);
  t.deepEqual(o.tags, [0], 'the held fragment went with it');
  t.is(ct.defragMemory().queues, 0);
  // The last fragment now starts a queue of its own that never completes.
  t.is(feed(fr[2]!).state, 'held');
  // RFC 1858: a SYN-less first fragment, then a fragment at offset 8 bytes rewriting the TCP
  // header's flags (here: overlapping the first) -- the datagram is dropped, never tracked.
  const syn = tcp4({ src: '10.0.0.5', dst: '10.0.0.6', flags: 'A', payload: new Uint8Array(40) });
  const [f1] = frag4(syn, [[0, 24, true]], 7);
  const [f2] = frag4(tcp4({ src: '10.0.0.5', dst: '10.0.0.6', flags: 'S', payload: new Uint8Array(40) }), [[8, L4 > 0 ? 52 : 0, false]], 7);
  t.is(feed(f1!).state, 'held');
  const atk = feed(f2!);
  t.is(atk.reason, R_FRAG_OVERLAP);
  t.is(atk.state, 'invalid');
  ct.close();
});

test('IPv4 length rules: a fragment past a known end drops the queue; the datagram must fit 64 KiB', (t) => {
  const { ct, feed } = engine();
  const fr = frag4(big4, even(L4, 1480));
  t.is(feed(fr[2]!).state, 'held'); // last: length known (3008)
  // A non-last fragment reaching past the known end.
  const [past] = frag4(big4, [[1480, 1480, true]]);
  const far = new Uint8Array(past!);
  // Move it beyond the end: offset 2960.
  far[6] = 0x20 | ((2960 >> 3) >> 8); far[7] = (2960 >> 3) & 255;
  far[10] = 0; far[11] = 0;
  let s = 0; for (let k = 0; k < 20; k += 2) s += (far[k]! << 8) | far[k + 1]!;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  far[10] = (~s >> 8) & 255; far[11] = ~s & 255;
  const r = feed(far);
  t.is(r.reason, R_FRAG_BAD_END);
  t.deepEqual(r.tags, [0]);
  // 64 KiB: a last fragment at offset 65528 with 16 bytes makes 20 + 65544 > 65535.
  const tail = frag4(icmp4({ src: '10.0.0.9', dst: '10.0.0.8', payload: new Uint8Array(65520) }), [[0, 1480, true], [65528, 8, false]], 99);
  t.is(feed(tail[0]!).state, 'held');
  t.is(feed(tail[1]!).state, 'held');
  ct.close();
});

test('IPv4 oversize: the completing fragment finds the datagram over 64 KiB and drops it', (t) => {
  const { ct, feed } = engine();
  // Payload 65520 bytes in pieces of 8184, plus a last one so that ihl + len = 65536.
  const dg = icmp4({ src: '10.1.0.1', dst: '10.1.0.2', payload: new Uint8Array(65508) }); // L4 = 65516
  const pieces: Piece[] = [];
  for (let o = 0; o < 65512; o += 8184) pieces.push([o, Math.min(8184, 65512 - o), true]);
  const fr = frag4(dg, pieces, 77);
  // A last fragment of 4 bytes at 65512 carved by hand: end 65516 -> 20 + 65516 = 65536.
  const last = new Uint8Array(24);
  last.set(fr[0]!.subarray(0, 20));
  last[2] = 0; last[3] = 24; last[6] = (65512 >> 3) >> 8; last[7] = (65512 >> 3) & 255;
  last[10] = 0; last[11] = 0;
  let s = 0; for (let k = 0; k < 20; k += 2) s += (last[k]! << 8) | last[k + 1]!;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  last[10] = (~s >> 8) & 255; last[11] = ~s & 255;
  for (const f of fr) t.is(feed(f).state, 'held');
  const r = feed(last);
  t.is(r.reason, R_FRAG_TOO_BIG);
  t.is(r.frag, FRAG_DROP);
  t.is(r.tags.length, fr.length + 1);
  ct.close();
});

test('IPv6: out of order completes; an overlap drops the datagram (RFC 5722); a duplicate alone; atomic fragments are unfragmented', (t) => {
  const { ct, feed } = engine();
  const fr = frag6(big6, even(L6, 1232));
  t.is(fr.length, 3);
  t.is(feed(fr[1]!).state, 'held');
  t.is(feed(fr[1]!).reason, R_FRAG_DUP);
  t.is(feed(fr[0]!).state, 'held');
  const done = feed(fr[2]!);
  t.is(done.state, 'new');
  t.is(done.frag, FRAG_DONE);
  t.deepEqual(done.tags, [0, 2, 3]);
  t.is(ct.pkt.ipLen, big6.length);
  t.deepEqual(Array.from(ct.pkt.buf.subarray(0, big6.length)), Array.from(big6), 'no fragment header left');
  // Overlap.
  const ov = frag6(big6, [[0, 1232, true], [1224, 1232, true]], 9);
  t.is(feed(ov[0]!).state, 'held');
  const o = feed(ov[1]!);
  t.is(o.reason, R_FRAG_OVERLAP);
  t.deepEqual(o.tags, [4]);
  // Atomic fragment: offset 0, M clear -> tracked at once, no queue.
  const [atomic] = frag6(udp6({ src: 'fd00::7', dst: 'fd00::8', sport: 1, dport: 2, payload: 'x' }), [[0, 9, false]], 11);
  const a = feed(atomic!);
  t.is(a.state, 'new');
  t.is(a.frag, 0);
  t.is(ct.defragMemory().queues, 0);
  ct.close();
});

test('IPv6 rules that drop only the fragment, and a non-multiple-of-8 fragment passes unreassembled', (t) => {
  const { ct, feed } = engine();
  const fr = frag6(big6, even(L6, 1232));
  t.is(feed(fr[2]!).state, 'held'); // last: length known
  // Another "last" fragment with a different end: dropped alone (the queue stays).
  const [other] = frag6(big6, [[1232, 1000, false]]);
  const r = feed(other!);
  t.is(r.reason, R_FRAG_BAD_END);
  t.deepEqual(r.tags, []);
  t.is(feed(fr[0]!).state, 'held');
  t.is(feed(fr[1]!).state, 'new');
  // Not a multiple of 8 with M set: queue killed, the packet decided as it is (invalid first fragment).
  const [odd] = frag6(big6, [[0, 1001, true]], 5);
  const p = feed(odd!);
  t.is(p.frag, FRAG_PASS);
  t.is(p.state, 'invalid');
  ct.close();
});

test('ipfrag_time (30 s IPv4) and nf_conntrack_frag6_timeout (60 s) by the table clock; the drop is reported with the fragments', (t) => {
  const { ct, table, feed } = engine();
  const fr = frag4(big4, even(L4, 1480));
  const fr6 = frag6(big6, even(L6, 1232));
  t.is(feed(fr[0]!, 1_000_000).state, 'held');
  t.is(feed(fr6[0]!, 1_000_000).state, 'held');
  // 29.9 s later the IPv4 queue is still there: the datagram completes.
  t.is(feed(fr[1]!, 1_029_900).state, 'held');
  // 30 s after creation it is gone; the next packet (any) reports it.
  const other = feed(udp4({ src: '10.9.9.9', dst: '10.9.9.8', payload: 'x' }), 1_030_000);
  t.is(other.state, 'new');
  t.deepEqual(other.dropped, [{ reason: R_FRAG_TIMEOUT, tags: [0, 2] }]);
  // The last fragment alone now starts a new queue.
  t.is(feed(fr[2]!, 1_030_001).state, 'held');
  const late = feed(udp4({ src: '10.9.9.9', dst: '10.9.9.8', payload: 'y' }), 1_060_000);
  t.deepEqual(late.dropped.map((d) => d.tags), [[1]], 'the IPv6 queue lasts 60 s');
  const later = feed(udp4({ src: '10.9.9.9', dst: '10.9.9.8', payload: 'z' }), 1_060_001);
  t.deepEqual(later.dropped.map((d) => d.tags), [[4]]);
  t.is(table.stats().total['frag_timeout'], 3);
  t.is(ct.drainFragments().length, 0);
  ct.close();
});

test('sysctls: ipfrag_time shorter; nf_conntrack_defrag=0 decides fragments one by one as before', (t) => {
  const a = engine({ 'net.ipv4.ipfrag_time': 2 });
  const fr = frag4(big4, even(L4, 1480));
  a.feed(fr[0]!, 5000);
  t.deepEqual(a.feed(fr[1]!, 7000).dropped, [{ reason: R_FRAG_TIMEOUT, tags: [0] }]);
  a.ct.close();
  const b = engine({ nf_conntrack_defrag: 0 });
  const first = b.feed(fr[0]!);
  t.is(first.state, 'invalid');
  t.is(first.reason, 'bad UDP length'); // the first fragment's UDP length covers the whole datagram
  t.is(b.feed(fr[1]!).reason, 'fragment');
  b.ct.close();
});

test('fragment flood: memory stays under ipfrag_high_thresh, the oldest queues are evicted, new datagrams still complete', (t) => {
  const { ct, table, feed } = engine();
  const bound = 4 * 1024 * 1024;
  const first = frag4(big4, even(L4, 1480))[0]!;
  let evicted = 0;
  const n = 20_000; // 20,000 first fragments of distinct datagrams: 29 MB of fragments
  for (let k = 0; k < n; k++) {
    first[4] = k >> 8; first[5] = k & 255; first[12 + 3] = 1 + (k >> 16); // distinct id (and source past 65536)
    first[10] = 0; first[11] = 0;
    let s = 0; for (let j = 0; j < 20; j += 2) s += (first[j]! << 8) | first[j + 1]!;
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    first[10] = (~s >> 8) & 255; first[11] = ~s & 255;
    const r = feed(first);
    for (const d of r.dropped) if (d.reason === R_FRAG_EVICTED) evicted++;
    if (k % 1000 === 0) t.true(ct.defragMemory().mem <= bound);
  }
  const m = ct.defragMemory();
  t.log(`flood: ${n} fragments of 1480 bytes (${(n * 1500 / 1048576).toFixed(1)} MiB); defrag memory ${m.mem} B now, peak ${m.peak} B, bound ${bound} B; ${m.queues} queues held, ${evicted} evicted`);
  t.true(m.peak <= bound, `peak ${m.peak} <= ${bound}`);
  t.true(evicted > 0);
  t.is(table.stats().total['frag_evict'], evicted);
  // A datagram still completes after the flood.
  const fr = frag4(big6.length ? big4 : big4, even(L4, 1480), 0xbeef);
  feed(fr[0]!); feed(fr[1]!);
  t.is(feed(fr[2]!).state, 'new');
  ct.close();
});

test('pool: fragments spread over batches and workers get the single-thread verdicts (shared queues, flow dispatch)', async (t) => {
  const { readFileSync } = await import('node:fs');
  const { ConntrackPool } = await import('../src/pool/pool.js');
  const { replay } = await import('../src/ops/replay.js');
  const wire = readFileSync(new URL('../../test/fixtures/kernel/frag_wire/wire.pcap', import.meta.url));
  const one: string[] = [];
  const r1 = replay(wire, { onPacket: (_i, v) => { one.push(`${v.ctstate}/${v.direction}/${v.frag}`); } });
  r1.conntrack.close();
  const table = ConntrackTable.create({ max: 1024, maxWorkers: 8 });
  const pool = new ConntrackPool({ table, workers: 2, dispatch: 'flow' });
  const many: string[] = [];
  try {
    // 5 packets per batch: most datagrams start in one batch and complete in another.
    await pool.replay(wire, { batch: 5, onPacket: (_i, v) => { many.push(`${v.ctstate}/${v.direction}/${v.frag}`); } });
  } finally {
    await pool.close();
  }
  t.is(many.length, one.length);
  t.deepEqual(many, one);
  t.is(one.filter((s) => s.endsWith(`/${FRAG_DONE}`)).length, 18, "18 datagrams complete");
  t.is(table.stats().total['frag_reasm'], r1.table.stats().total['frag_reasm']);
});
