/** Table operations: filters, get/delete, flush (also under live packet workers), marks, formats. */
import test from 'ava';
import { Conntrack } from '../src/track/core.js';
import { formatProcEntry } from '../src/ops/format.js';
import { checkInvariants, formatInvariants } from '../src/table/invariants.js';
import { H_COUNT, zoneRec } from '../src/table/layout.js';
import { LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { ConntrackPool } from '../src/pool/pool.js';
import { CtMatcher, CtOps, parseCidr, type CtFilter } from '../src/ops/ops.js';
import { ConntrackTable } from '../src/table/table.js';
import { icmp4, tcp4, tcp6, udp4, udp6 } from './helpers/frames.js';

const NOW = 5_000_000;

interface Conn {
  i: number;
  family: 'ipv4' | 'ipv6';
  proto: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  zone: number;
  state: string | null;
  mark: number;
  replied: boolean;
}

/** A table with many kinds of connections, each with a distinct original source port. */
function build(n = 120): { table: ConntrackTable; conns: Conn[] } {
  const table = ConntrackTable.create({ max: 4096 });
  const ct = new Conntrack(table);
  const conns: Conn[] = [];
  ct.beginBatch();
  const f = (frame: Uint8Array, zone: number): void => { ct.frame(LINKTYPE_RAW, frame, 0, frame.length, NOW, zone); };
  for (let i = 0; i < n; i++) {
    const zone = i % 3 === 0 ? 0 : i % 3 === 1 ? 7 : 300;
    const sport = 10000 + i;
    const kind = i % 5;
    const v6 = kind === 3;
    const src = v6 ? `2001:db8:${i % 4}::${i + 1}` : `10.${i % 4}.0.${i + 1}`;
    const dst = v6 ? '2001:db8:ff::1' : `192.0.2.${(i % 2) + 1}`;
    const dport = i % 2 ? 53 : 443;
    const replied = i % 4 !== 0;
    let proto = 17;
    let state: string | null = null;
    if (kind === 0 || kind === 1) {
      proto = 6;
      f(tcp4({ src, dst, sport, dport, flags: 'S', seq: 100, win: 64000 }), zone);
      state = 'SYN_SENT';
      if (replied) {
        f(tcp4({ src: dst, dst: src, sport: dport, dport: sport, flags: 'SA', seq: 900, ack: 101, win: 64000 }), zone);
        f(tcp4({ src, dst, sport, dport, flags: 'A', seq: 101, ack: 901, win: 64000 }), zone);
        state = 'ESTABLISHED';
      }
    } else if (kind === 3) {
      f(udp6({ src, dst, sport, dport }), zone);
      if (replied) f(udp6({ src: dst, dst: src, sport: dport, dport: sport }), zone);
      if (i % 10 === 8) {
        proto = 6;
        f(tcp6({ src, dst, sport: sport + 30000, dport, flags: 'S', seq: 1, win: 1000 }), zone);
      }
    } else {
      f(udp4({ src, dst, sport, dport }), zone);
      if (replied) f(udp4({ src: dst, dst: src, sport: dport, dport: sport }), zone);
    }
    conns.push({ i, family: v6 ? 'ipv6' : 'ipv4', proto: kind === 3 ? 17 : proto, src, dst, sport, dport, zone, state, mark: 0, replied });
    if (kind === 3 && i % 10 === 8) {
      conns.push({ i: 1000 + i, family: 'ipv6', proto: 6, src, dst, sport: sport + 30000, dport, zone, state: 'SYN_SENT', mark: 0, replied: false });
    }
  }
  // One ICMP echo (no ports) in zone 0.
  f(icmp4({ src: '10.9.9.9', dst: '192.0.2.1', type: 8, id: 77 }), 0);
  conns.push({ i: 5000, family: 'ipv4', proto: 1, src: '10.9.9.9', dst: '192.0.2.1', sport: -1, dport: -1, zone: 0, state: null, mark: 0, replied: false });
  ct.endBatch();
  ct.close();
  table.clock = NOW;
  return { table, conns };
}

function inCidr(addr: string, cidr: string): boolean {
  const a = parseCidr(addr);
  const c = parseCidr(cidr);
  if (a.family !== c.family) return false;
  for (let k = 0; k < 4; k++) if ((a.net[k]! & c.mask[k]!) !== c.net[k]) return false;
  return true;
}

/** The reference predicate, written independently of CtMatcher. */
function expected(conns: Conn[], f: CtFilter): string[] {
  return conns.filter((c) => {
    if (f.family && c.family !== f.family) return false;
    if (f.proto !== undefined && c.proto !== (typeof f.proto === 'number' ? f.proto : { tcp: 6, udp: 17, icmp: 1 }[f.proto])) return false;
    if (f.zone !== undefined && c.zone !== f.zone) return false;
    if (f.src && !inCidr(c.src, f.src)) return false;
    if (f.dst && !inCidr(c.dst, f.dst)) return false;
    if (f.replySrc && !inCidr(c.dst, f.replySrc)) return false;
    if (f.addr && !inCidr(c.src, f.addr) && !inCidr(c.dst, f.addr)) return false;
    if (f.sport !== undefined && c.sport !== f.sport) return false;
    if (f.dport !== undefined && c.dport !== f.dport) return false;
    if (f.replySport !== undefined && c.dport !== f.replySport) return false;
    if (f.port !== undefined && c.sport !== f.port && c.dport !== f.port) return false;
    if (f.state !== undefined && (c.state === null || !String(f.state).split(',').includes(c.state))) return false;
    if (f.mark !== undefined && (c.mark & (f.markMask ?? 0xffffffff)) !== ((f.mark & (f.markMask ?? 0xffffffff)) >>> 0)) return false;
    return true;
  }).map(key).sort();
}

function key(c: { src: string; sport?: number }): string {
  return `${parseCidr(c.src).net.join('.')}:${c.sport ?? -1}`;
}

function got(ops: CtOps, f: CtFilter): string[] {
  return ops.dump(f).json().map((j) => key({ src: j.original.src, sport: j.original.sport ?? -1 })).sort();
}

test('filters select exactly the right entries', (t) => {
  const { table, conns } = build();
  const ops = new CtOps(table, { sliceBuckets: 7 });
  // Give every connection a distinct mark through setMark (by its source port).
  for (const c of conns) {
    if (c.sport < 0) continue;
    c.mark = (c.i * 0x101) >>> 0;
    t.is(ops.setMark({ sport: c.sport, src: c.src }, c.mark), 1);
  }
  const filters: CtFilter[] = [
    {}, { family: 'ipv4' }, { family: 'ipv6' }, { proto: 'tcp' }, { proto: 17 }, { proto: 'icmp' },
    { zone: 0 }, { zone: 7 }, { zone: 300 }, { zone: 9 },
    { src: '10.1.0.0/16' }, { src: '10.0.0.0/8', proto: 'udp' }, { dst: '192.0.2.2' }, { dst: '192.0.2.0/31' },
    { src: '2001:db8:2::/48' }, { addr: '192.0.2.1' }, { addr: '2001:db8:ff::/64', zone: 7 }, { replySrc: '192.0.2.1' },
    { sport: 10005 }, { dport: 53 }, { dport: 443, zone: 300 }, { replySport: 53 }, { port: 10010 }, { port: 443 },
    { state: 'ESTABLISHED' }, { state: 'SYN_SENT' }, { state: 'SYN_SENT,ESTABLISHED', family: 'ipv6' },
    { mark: 0x101 * 7 }, { mark: 0x1, markMask: 0x1 }, { mark: 0x100, markMask: 0xf00 },
  ];
  for (const f of filters) {
    t.deepEqual(got(ops, f), expected(conns, f), JSON.stringify(f));
    t.is(ops.count(f), expected(conns, f).length, `count ${JSON.stringify(f)}`);
  }
  t.is(ops.count(), conns.length);
  t.throws(() => new CtMatcher({ state: 'BOGUS' }), { message: /unknown state/ });
  t.throws(() => new CtMatcher({ src: '10.0.0.0/33' }), { message: /prefix/ });
  t.throws(() => new CtMatcher({ proto: 'nope' }), { message: /unknown protocol/ });
  t.throws(() => new CtMatcher({ label: 300 }), { message: /label/ });
  // Labels (extension blocks): set on a filter, then filter by them.
  t.is(ops.count({ label: 3 }), 0);
  t.is(ops.setLabel({ zone: 7, proto: 'udp' }, 3), expected(conns, { zone: 7, proto: 'udp' }).length);
  t.deepEqual(got(ops, { label: 3 }), expected(conns, { zone: 7, proto: 'udp' }));
  t.is(ops.setLabel({ zone: 7, dport: 53 }, 3, false), expected(conns, { zone: 7, dport: 53 }).length);
  t.deepEqual(got(ops, { label: 3 }), expected(conns, { zone: 7, proto: 'udp', dport: 443 }));
  t.is(ops.dump({ label: 3 }).json()[0]?.labels, '0x8');
  ops.close();
});

test('get and delete by tuple, in either direction', (t) => {
  const { table } = build(20);
  const ops = new CtOps(table);
  const spec = { proto: 'udp', src: '10.0.0.13', dst: '192.0.2.1', sport: 10012, dport: 443 } as const; // i = 12: zone 0
  const g = ops.get(spec);
  t.truthy(g);
  t.regex(g!.lines()[0]!, /^udp +17 \d+ src=10\.0\.0\.13 dst=192\.0\.2\.1 sport=10012 dport=443 \[UNREPLIED\] src=192\.0\.2\.1/);
  // The reply direction finds the same entry.
  const r = ops.get({ proto: 'udp', src: '192.0.2.1', dst: '10.0.0.13', sport: 443, dport: 10012 });
  t.deepEqual(r!.json(), g!.json());
  t.is(ops.get({ ...spec, zone: 7 }), null, 'zone is part of the key');
  const before = ops.count();
  t.true(ops.delete(spec));
  t.false(ops.delete(spec));
  t.is(ops.get(spec), null);
  t.is(ops.count(), before - 1);
  t.true(checkInvariants(table).ok);
  ops.close();
});

test('flush by filter removes exactly the matches; flush removes the rest; invariants hold', (t) => {
  const { table, conns } = build();
  const ops = new CtOps(table, { sliceBuckets: 16 });
  const z7 = expected(conns, { zone: 7 }).length;
  t.is(ops.flush({ zone: 7 }), z7);
  t.is(ops.count({ zone: 7 }), 0);
  t.is(ops.count(), conns.length - z7);
  t.is(table.i32[table.sec.zones + zoneRec(7)], 0);
  const tcp = expected(conns, { proto: 'tcp' }).filter((k) => !expected(conns, { zone: 7 }).includes(k)).length;
  t.is(ops.flush({ proto: 'tcp' }), tcp);
  t.is(ops.flush(), conns.length - z7 - tcp);
  t.is(ops.count(), 0);
  ops.close();
  const inv = checkInvariants(table);
  t.true(inv.ok, formatInvariants(inv));
});

test('/proc/net/nf_conntrack lines', (t) => {
  const table = ConntrackTable.create({ max: 64 });
  const ct = new Conntrack(table);
  ct.decide(tcp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 40000, dport: 80, flags: 'S', seq: 1, win: 1000 }), LINKTYPE_RAW, NOW);
  ct.decide(tcp4({ src: '10.0.0.2', dst: '10.0.0.1', sport: 80, dport: 40000, flags: 'SA', seq: 9, ack: 2, win: 1000 }), LINKTYPE_RAW, NOW);
  ct.decide(tcp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 40000, dport: 80, flags: 'A', seq: 2, ack: 10, win: 1000 }), LINKTYPE_RAW, NOW);
  ct.decide(udp6({ src: '2001:db8::1', dst: '2001:db8::2', sport: 5000, dport: 53 }), LINKTYPE_RAW, NOW, 4);
  ct.close();
  const ops = new CtOps(table);
  const lines = ops.dump({}, { now: NOW }).procLines().sort();
  t.deepEqual(lines, [
    'ipv4     2 tcp      6 432000 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=2',
    'ipv6     10 udp      17 30 src=2001:0db8:0000:0000:0000:0000:0000:0001 dst=2001:0db8:0000:0000:0000:0000:0000:0002 sport=5000 dport=53 [UNREPLIED] src=2001:0db8:0000:0000:0000:0000:0000:0002 dst=2001:0db8:0000:0000:0000:0000:0000:0001 sport=53 dport=5000 mark=0 zone=4 use=2',
  ]);
  // The kernel's field layout: "%-8s %u %-8s %u " then the timeout.
  for (const l of lines) t.regex(l, /^(ipv4|ipv6) {4} (2|10) [a-z]+ +\d+ \d+ /);
  // Directional zones print zone-orig= / zone-reply= after their tuple.
  const dump = ops.dump({}, { now: NOW });
  const w = dump.words;
  w[9] = 5; // E_ZONE of the first copy: original zone 5, reply zone 0
  t.regex(formatProcEntry(dump.ctx, 0, NOW), /dport=\d+ zone-orig=5 (\[UNREPLIED\] )?src=.* mark=0 use=2$/);
  ops.close();
});

test('flush while a pool of packet workers tracks: no crash, invariants hold, counts agree', async (t) => {
  const table = ConntrackTable.create({ max: 20000, maxWorkers: 8 });
  const pool = new ConntrackPool({ table, workers: 2, dispatch: 'free' });
  const ops = new CtOps(table, { sliceBuckets: 64 });
  let flushed = 0;
  try {
    for (let round = 0; round < 12; round++) {
      const batch = pool.createBatch();
      const now = NOW + round * 10;
      for (let i = 0; i < 1500; i++) {
        const a = `10.${round}.${i >> 8}.${i & 255}`;
        const q = udp4({ src: a, dst: '192.0.2.9', sport: 2000 + (i % 50), dport: 53 });
        batch.push(LINKTYPE_RAW, q, 0, q.length, now, i % 2);
        const r = udp4({ src: '192.0.2.9', dst: a, sport: 53, dport: 2000 + (i % 50) });
        batch.push(LINKTYPE_RAW, r, 0, r.length, now, i % 2);
      }
      table.clock = now;
      const pending = pool.process(batch);
      // Flush zone 1, then everything, while the workers insert and look up.
      flushed += ops.flush({ zone: round % 2 });
      if (round % 4 === 3) flushed += ops.flush();
      await pending;
    }
  } finally {
    await pool.close();
  }
  const left = ops.count({}, { now: NOW, expired: true });
  t.is(left, Atomics.load(table.i32, H_COUNT));
  t.true(flushed > 0);
  t.is(ops.flush(), left);
  ops.close();
  const inv = checkInvariants(table);
  t.true(inv.ok, formatInvariants(inv));
  t.is(Atomics.load(table.i32, H_COUNT), 0);
});

test('flush of a full zone of 100,000 UDP connections removes exactly them, five times over (times logged)', (t) => {
  const N = 100_000;
  const table = ConntrackTable.create({ max: 131072 });
  const ct = new Conntrack(table);
  const ops = new CtOps(table);
  const frame = udp4({ src: '10.0.0.0', dst: '192.0.2.1', sport: 1, dport: 53 });
  const times: number[] = [];
  for (let run = 0; run < 5; run++) {
    ct.beginBatch();
    for (let i = 0; i < N; i++) {
      // Vary source address and port in place; UDP checksum 0 means none, IPv4 header checksum fixed below.
      frame[12] = 10; frame[13] = (i >> 16) & 255; frame[14] = (i >> 8) & 255; frame[15] = i & 255;
      frame[10] = 0; frame[11] = 0;
      let s = 0;
      for (let k = 0; k < 20; k += 2) s += (frame[k]! << 8) | frame[k + 1]!;
      while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
      frame[10] = (~s >> 8) & 255; frame[11] = ~s & 255;
      frame[26] = 0; frame[27] = 0;
      const v = ct.frame(LINKTYPE_RAW, frame, 0, frame.length, NOW, 5);
      if (v.state !== 0) throw new Error(`packet ${i}: ${v.reason}`);
      if ((i & 1023) === 1023) { ct.endBatch(); ct.beginBatch(); }
    }
    ct.endBatch();
    table.clock = NOW;
    t.is(table.i32[table.sec.zones + zoneRec(5)], N);
    const t0 = performance.now();
    const n = ops.flush({ zone: 5 });
    times.push(performance.now() - t0);
    t.is(n, N);
    t.is(ops.count(), 0);
  }
  times.sort((a, b) => a - b);
  t.log(`flush zone of ${N} UDP: median ${times[2]!.toFixed(1)} ms (runs ${times.map((x) => x.toFixed(1)).join(', ')})`);
  ops.close();
  ct.close();
  t.true(checkInvariants(table).ok);
});
