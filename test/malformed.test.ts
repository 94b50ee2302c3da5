/**
 * Bad input through the whole path: random and mutated frames and capture files never throw,
 * every packet gets a verdict (invalid ones with a reason), and the table stays consistent.
 */
import test from 'ava';
import { encodePcap } from '../src/input/capture/reader.js';
import { Conntrack } from '../src/track/core.js';
import { replay } from '../src/ops/replay.js';
import { ConntrackTable } from '../src/table/table.js';
import { CT_INVALID, CT_UNTRACKED, CT_HELD } from '../src/track/verdict.js';
import {
  LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_NFLOG, LINKTYPE_RAW,
} from '../src/input/packet/packet.js';
import { eth, icmp4, icmp6, icmpError4, icmpError6, nflog, sll, sll2, tcp4, tcp6, udp4, udp6 } from './helpers/frames.js';
import { checkInvariants } from '../src/table/invariants.js';

/** xorshift32: reproducible randomness without a dependency per value. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

function seeds(): Uint8Array[] {
  const A = '10.1.0.1';
  const B = '10.2.0.2';
  const A6 = 'fd00:1::1';
  const B6 = 'fd00:2::2';
  return [
    tcp4({ src: A, dst: B, sport: 1000, dport: 80, flags: 'S', seq: 1, win: 65535, options: { mss: 1460, wscale: 7, sackPerm: true } }),
    tcp4({ src: B, dst: A, sport: 80, dport: 1000, flags: 'SA', seq: 9, ack: 2, win: 65535, options: { mss: 1460, wscale: 7, sackPerm: true } }),
    tcp4({ src: A, dst: B, sport: 1000, dport: 80, flags: 'PA', seq: 2, ack: 10, win: 500, payload: 'GET / HTTP/1.0\r\n\r\n', options: { sack: [[100, 200]] } }),
    udp4({ src: A, dst: B, sport: 5353, dport: 53, payload: 'query' }),
    icmp4({ src: A, dst: B, type: 8, id: 3, seq: 1 }),
    icmpError4(3, 3, udp4({ src: A, dst: B, sport: 5353, dport: 53, payload: 'q' }), { src: B, dst: A }),
    tcp6({ src: A6, dst: B6, sport: 2000, dport: 443, flags: 'S', seq: 5, win: 1000, ext: [{ type: 'hop' }, { type: 'dst' }] }),
    udp6({ src: A6, dst: B6, sport: 7, dport: 7, payload: 'x' }),
    icmp6({ src: A6, dst: B6, type: 128, id: 9, seq: 1 }),
    icmpError6(1, 4, udp6({ src: A6, dst: B6, sport: 7, dport: 7, payload: 'x' }), { src: B6, dst: A6 }),
  ];
}

interface Framed { linktype: number; frame: Uint8Array }

function framings(p: Uint8Array): Framed[] {
  return [
    { linktype: LINKTYPE_RAW, frame: p },
    { linktype: LINKTYPE_ETHERNET, frame: eth(p) },
    { linktype: LINKTYPE_ETHERNET, frame: eth(p, { vlan: [10, 20] }) },
    { linktype: LINKTYPE_LINUX_SLL, frame: sll(p) },
    { linktype: LINKTYPE_LINUX_SLL2, frame: sll2(p) },
    { linktype: LINKTYPE_NFLOG, frame: nflog(p, { prefix: 'ct:new:original', tsMs: 1700000000000 }) },
  ];
}

function mutate(r: () => number, f: Uint8Array): Uint8Array {
  const kind = Math.floor(r() * 5);
  if (kind === 0) return f.subarray(0, Math.floor(r() * f.length)); // truncate
  if (kind === 1) {
    const out = Uint8Array.from(f);
    const flips = 1 + Math.floor(r() * 8);
    for (let k = 0; k < flips; k++) out[Math.floor(r() * out.length)]! ^= 1 << Math.floor(r() * 8);
    return out;
  }
  if (kind === 2) {
    const out = Uint8Array.from(f);
    const at = Math.floor(r() * out.length);
    for (let k = at; k < Math.min(out.length, at + 4); k++) out[k] = Math.floor(r() * 256);
    return out;
  }
  if (kind === 3) {
    const out = new Uint8Array(Math.floor(r() * 120));
    for (let k = 0; k < out.length; k++) out[k] = Math.floor(r() * 256);
    return out;
  }
  return f; // some valid frames keep real connections in the table
}

test('100,000 random and mutated frames: no exception, a verdict for each, table consistent', (t) => {
  const table = ConntrackTable.create({ max: 4096 });
  const ct = new Conntrack(table);
  const r = rng(0xc0ffee);
  const base = seeds().flatMap(framings);
  let invalidWithoutReason = 0;
  let now = 1_000_000;
  ct.beginBatch();
  for (let i = 0; i < 100_000; i++) {
    const b = base[Math.floor(r() * base.length)]!;
    const f = mutate(r, b.frame);
    now += 1 + Math.floor(r() * 50);
    const v = ct.frame(b.linktype, f, 0, f.length, now);
    t.true(v.state >= 0 && v.state <= CT_HELD); // CT_HELD: a fragment held for reassembly
    if ((v.state === CT_INVALID) && v.reason === null) invalidWithoutReason++;
    if (i % 256 === 255) { ct.endBatch(); ct.beginBatch(); }
  }
  ct.endBatch();
  t.is(invalidWithoutReason, 0, 'every invalid verdict names its reason');
  ct.close();
  const inv = checkInvariants(table);
  t.deepEqual(inv.invariants.filter((x) => !x.ok), []);
  t.true(inv.ok);
});

test('mutated capture files: records before the damage are decided, then a CaptureError', (t) => {
  const r = rng(1234);
  const recs = seeds().map((p, i) => ({ data: eth(p), tsMs: 1700000000000 + i * 10 }));
  const good = encodePcap(LINKTYPE_ETHERNET, recs);
  const table = ConntrackTable.create({ max: 1024 });
  let errors = 0;
  for (let k = 0; k < 3000; k++) {
    const m = mutate(r, good);
    let seen = 0;
    try {
      const res = replay(m, { table, onPacket: () => { seen++; } });
      if (res.error) {
        errors++;
        t.true(res.error.offset >= 0 && res.error.offset <= m.length);
      }
      t.is(res.packets, seen);
      res.conntrack.close();
    } catch (e) {
      // Only an unreadable header may throw, and then as a CaptureError before any packet.
      t.is((e as Error).name, 'CaptureError');
      t.is(seen, 0);
    }
  }
  t.true(errors > 0);
  const inv = checkInvariants(table);
  t.true(inv.ok, JSON.stringify(inv.invariants.filter((x) => !x.ok)));
});
