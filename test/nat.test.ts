/**
 * NAT (src/track/nat/): rules, the unique-tuple search, bysource reuse, packet rewriting with
 * incremental checksums. Every rewritten packet is compared byte for byte with the packet an
 * independent builder (test/helpers/frames.ts, checksums computed from scratch) makes with the
 * translated addresses and ports: the incremental updates must give exactly that.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  Conntrack, ConntrackTable, CtOps, LINKTYPE_RAW, NAT_REWROTE_DST, NAT_REWROTE_INNER, NAT_REWROTE_SRC,
  bysourceCount, parseNatRule,
} from '../src/index.js';
import { csumReplace2, csumReplace4 } from '../src/track/nat/checksum.js';
import { hex, icmp4, icmp6, icmpError4, icmpError6, ipv4, inetChecksum, tcp4, tcp6, udp4, udp6 } from './helpers/frames.js';

const NOW = 1_000_000;

function setup(rules: Parameters<ConntrackTable['setNatRules']>[0]): { table: ConntrackTable; ct: Conntrack } {
  const table = ConntrackTable.create({ max: 4096 });
  table.setNatRules(rules);
  return { table, ct: new Conntrack(table) };
}

function decide(ct: Conntrack, f: Uint8Array, now = NOW) {
  const v = ct.decide(f, LINKTYPE_RAW, now);
  return { state: v.ctstate, dir: v.direction, nat: v.nat, reason: v.reason, drop: v.drop };
}

function hexOf(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

test('RFC 1624 incremental update equals a full recompute (literal reference)', (t) => {
  // IPv4 header of 10.0.0.1 -> 8.8.8.8; checksum 0x60bd, computed independently with Python.
  const h = hex('45000020 00000000 4011 60bd 0a000001 08080808');
  t.is(inetChecksum(h), 0); // a correct header sums to zero
  // Rewrite the source to 203.0.113.5 (0xcb007105) incrementally.
  csumReplace4(h, 10, 0x0a000001, 0xcb007105);
  h.set([0xcb, 0x00, 0x71, 0x05], 12);
  t.is(hexOf(h.subarray(10, 12)), '2eb8'); // Python's full recompute of the new header
  t.is(inetChecksum(h), 0);
  // A 16-bit change: the same.
  csumReplace2(h, 10, 0x4011, 0x3f11);
  h[8] = 0x3f;
  t.is(inetChecksum(h), 0);
});

test('SNAT UDP: translated packet equals one built from scratch, reply restored, ports exhausted', (t) => {
  const { table, ct } = setup(['ip saddr 10.0.0.0/8 snat to 203.0.113.5:40000-40001']);
  const mapped: number[] = [];
  for (const sport of [5000, 5001]) {
    const f = udp4({ src: '10.0.0.1', dst: '8.8.8.8', sport, dport: 53, payload: 'abcd' });
    const r = decide(ct, f);
    t.deepEqual([r.state, r.nat], ['new', NAT_REWROTE_SRC]);
    const port = (f[20]! << 8) | f[21]!;
    mapped.push(port);
    t.is(hexOf(f), hexOf(udp4({ src: '203.0.113.5', dst: '8.8.8.8', sport: port, dport: 53, payload: 'abcd' })));
  }
  t.deepEqual([...mapped].sort(), [40000, 40001]);
  // The reply to the first one comes back to 10.0.0.1:5000.
  const back = udp4({ src: '8.8.8.8', dst: '203.0.113.5', sport: 53, dport: mapped[0]!, payload: 'xy' });
  t.deepEqual(decide(ct, back).nat, NAT_REWROTE_DST);
  t.is(hexOf(back), hexOf(udp4({ src: '8.8.8.8', dst: '10.0.0.1', sport: 53, dport: 5000, payload: 'xy' })));
  // A third source port finds the range full: dropped and counted, never a shared mapping.
  const third = decide(ct, udp4({ src: '10.0.0.1', dst: '8.8.8.8', sport: 5002, dport: 53 }));
  t.is(third.state, 'invalid');
  t.true(third.drop);
  t.regex(third.reason ?? '', /no free tuple/);
  const ops = new CtOps(table);
  t.is(ops.stats().total.nat_failed, 1);
  // conntrack -L shows the reply tuple as translated, as the kernel prints it.
  const lines = ops.list({}, { now: NOW }).join('\n');
  t.regex(lines, new RegExp(`src=10\\.0\\.0\\.1 dst=8\\.8\\.8\\.8 sport=5000 dport=53 .*src=8\\.8\\.8\\.8 dst=203\\.0\\.113\\.5 sport=53 dport=${mapped[0]}`));
  t.is(bysourceCount(table), 2);
  ops.close();
  ct.close();
});

test('UDP without a checksum keeps checksum 0; UDP over IPv6 and UDP-Lite get theirs updated', (t) => {
  const { ct } = setup(['snat to 203.0.113.9', 'ip6 saddr fd00::/64 snat to [2001:db8::9]']);
  const f = udp4({ src: '10.0.0.1', dst: '8.8.8.8', sport: 7000, dport: 53, noChecksum: true });
  decide(ct, f);
  t.is(hexOf(f), hexOf(udp4({ src: '203.0.113.9', dst: '8.8.8.8', sport: 7000, dport: 53, noChecksum: true })));
  const g = udp6({ src: 'fd00::1', dst: '2001:db8::53', sport: 7000, dport: 53, payload: 'q' });
  t.is(decide(ct, g).nat, NAT_REWROTE_SRC);
  t.is(hexOf(g), hexOf(udp6({ src: '2001:db8::9', dst: '2001:db8::53', sport: 7000, dport: 53, payload: 'q' })));
  // UDP-Lite (136) with full coverage: checksum like UDP's, over the pseudo-header.
  const lite = (src: string): Uint8Array => {
    const b = new Uint8Array(10);
    b.set([0x1b, 0x58, 0x00, 0x35, 0, 0, 0, 0, 0x61, 0x62]); // 7000 -> 53, coverage 0 = all
    const ps = ipv4(136, b, { src, dst: '8.8.8.8' });
    // The kernel sums UDP-Lite with protocol 17 in the pseudo-header (see proto/udp.ts).
    const pseudo = new Uint8Array([...ps.subarray(12, 20), 0, 17, 0, 10]);
    const c = inetChecksum(pseudo, b);
    ps[26] = c >> 8; ps[27] = c & 255;
    return ps;
  };
  const l = lite('10.0.0.1');
  t.is(decide(ct, l).state, 'new');
  t.is(hexOf(l), hexOf(lite('203.0.113.9')));
});

test('DNAT port forwarding for TCP, both directions, and conntrack -L', (t) => {
  const { table, ct } = setup(['tcp dport 80 dnat to 10.0.0.2:8080']);
  const syn = tcp4({ src: '198.51.100.7', dst: '203.0.113.1', sport: 33000, dport: 80, flags: 'S', seq: 1000 });
  t.is(decide(ct, syn).nat, NAT_REWROTE_DST);
  t.is(hexOf(syn), hexOf(tcp4({ src: '198.51.100.7', dst: '10.0.0.2', sport: 33000, dport: 8080, flags: 'S', seq: 1000 })));
  const synack = tcp4({ src: '10.0.0.2', dst: '198.51.100.7', sport: 8080, dport: 33000, flags: 'SA', seq: 5000, ack: 1001 });
  const r = decide(ct, synack);
  t.deepEqual([r.state, r.dir, r.nat], ['established', 'reply', NAT_REWROTE_SRC]);
  t.is(hexOf(synack), hexOf(tcp4({ src: '203.0.113.1', dst: '198.51.100.7', sport: 80, dport: 33000, flags: 'SA', seq: 5000, ack: 1001 })));
  const ops = new CtOps(table);
  t.regex(ops.list({}, { now: NOW }).join('\n'),
    /tcp +6 \d+ SYN_RECV src=198\.51\.100\.7 dst=203\.0\.113\.1 sport=33000 dport=80 src=10\.0\.0\.2 dst=198\.51\.100\.7 sport=8080 dport=33000/);
  ops.close();
  ct.close();
});

test('IPv6 TCP SNAT with an address range and persistent flag stays in range', (t) => {
  const { ct } = setup([{ type: 'snat', family: 6, to: '[2001:db8::10]-[2001:db8::13]:20000-20009', persistent: true }]);
  const f = tcp6({ src: 'fd00::5', dst: '2001:db8:1::1', sport: 40000, dport: 443, flags: 'S' });
  t.is(decide(ct, f).nat, NAT_REWROTE_SRC);
  const last = f[8 + 15]!;
  t.true(last >= 0x10 && last <= 0x13);
  const port = (f[40]! << 8) | f[41]!;
  t.true(port >= 20000 && port <= 20009);
  const src = `2001:db8::${last.toString(16)}`;
  t.is(hexOf(f), hexOf(tcp6({ src, dst: '2001:db8:1::1', sport: port, dport: 443, flags: 'S' })));
});

test('ICMP echo ids are remapped when two hosts use the same id behind one address', (t) => {
  const { ct } = setup(['ip saddr 10.0.0.0/24 snat to 203.0.113.5']);
  const a = icmp4({ src: '10.0.0.1', dst: '8.8.8.8', id: 77, seq: 1 });
  const b = icmp4({ src: '10.0.0.2', dst: '8.8.8.8', id: 77, seq: 1 });
  t.is(decide(ct, a).nat, NAT_REWROTE_SRC);
  t.is(hexOf(a), hexOf(icmp4({ src: '203.0.113.5', dst: '8.8.8.8', id: 77, seq: 1 }))); // original id kept
  decide(ct, b);
  const id = (b[24]! << 8) | b[25]!;
  t.not(id, 77);
  t.is(hexOf(b), hexOf(icmp4({ src: '203.0.113.5', dst: '8.8.8.8', id, seq: 1 })));
  const reply = icmp4({ src: '8.8.8.8', dst: '203.0.113.5', type: 0, id, seq: 1 });
  t.is(decide(ct, reply).dir, 'reply');
  t.is(hexOf(reply), hexOf(icmp4({ src: '8.8.8.8', dst: '10.0.0.2', type: 0, id: 77, seq: 1 })));
  // ICMPv6 echo: pseudo-header and id.
  const { ct: ct6 } = setup(['ip6 saddr fd00::/64 snat to [2001:db8::5]']);
  const e6 = icmp6({ src: 'fd00::1', dst: '2001:db8::8', id: 9 });
  decide(ct6, e6);
  t.is(hexOf(e6), hexOf(icmp6({ src: '2001:db8::5', dst: '2001:db8::8', id: 9 })));
});

test('ICMP errors for a NAT\'d connection: quote and outer header translated, checksums recomputed', (t) => {
  const { ct } = setup(['ip saddr 10.0.0.0/8 snat to 203.0.113.5']);
  const out = udp4({ src: '10.0.0.1', dst: '8.8.8.8', sport: 5000, dport: 53, payload: 'hello' });
  decide(ct, out);
  // As the server side saw it, and the port unreachable a router there sends back.
  const seen = udp4({ src: '203.0.113.5', dst: '8.8.8.8', sport: 5000, dport: 53, payload: 'hello' });
  t.is(hexOf(out), hexOf(seen));
  const err = icmpError4(3, 3, seen, { src: '192.0.2.99', dst: '203.0.113.5' });
  const r = decide(ct, err);
  t.deepEqual([r.state, r.dir, r.nat], ['related', 'reply', NAT_REWROTE_DST | NAT_REWROTE_INNER]);
  const orig = udp4({ src: '10.0.0.1', dst: '8.8.8.8', sport: 5000, dport: 53, payload: 'hello' });
  t.is(hexOf(err), hexOf(icmpError4(3, 3, orig, { src: '192.0.2.99', dst: '10.0.0.1' })));
  // A quote cut short (8 bytes of UDP, no payload): the same translation.
  const short = icmpError4(11, 0, seen, { src: '192.0.2.98', dst: '203.0.113.5', quote: 28 });
  decide(ct, short);
  t.is(hexOf(short), hexOf(icmpError4(11, 0, orig, { src: '192.0.2.98', dst: '10.0.0.1', quote: 28 })));
  // ICMPv6 packet too big for an IPv6 SNAT'd flow.
  const { ct: ct6 } = setup(['ip6 saddr fd00::/64 snat to [2001:db8::5]']);
  const o6 = tcp6({ src: 'fd00::1', dst: '2001:db8::80', sport: 1234, dport: 80, flags: 'S' });
  decide(ct6, o6);
  const s6 = tcp6({ src: '2001:db8::5', dst: '2001:db8::80', sport: 1234, dport: 80, flags: 'S' });
  t.is(hexOf(o6), hexOf(s6));
  const e6 = icmpError6(2, 0, s6, { src: '2001:db8::fe', dst: '2001:db8::5', rest: 1280 });
  t.is(decide(ct6, e6).state, 'related');
  const orig6 = tcp6({ src: 'fd00::1', dst: '2001:db8::80', sport: 1234, dport: 80, flags: 'S' });
  t.is(hexOf(e6), hexOf(icmpError6(2, 0, orig6, { src: '2001:db8::fe', dst: 'fd00::1', rest: 1280 })));
});

test('hairpin: DNAT to a LAN server plus masquerade on the LAN interface', (t) => {
  const { ct } = setup({
    interfaces: [
      { name: 'lan0', address: '10.0.0.254', routes: ['10.0.0.0/24'] },
      { name: 'wan0', address: '203.0.113.1', routes: ['0.0.0.0/0'] },
    ],
    rules: [
      'ip daddr 203.0.113.1 tcp dport 80 dnat to 10.0.0.2:8080',
      'ip saddr 10.0.0.0/24 oifname lan0 masquerade',
      'oifname wan0 masquerade',
    ],
  });
  const syn = tcp4({ src: '10.0.0.3', dst: '203.0.113.1', sport: 40000, dport: 80, flags: 'S' });
  t.is(decide(ct, syn).nat, NAT_REWROTE_SRC | NAT_REWROTE_DST);
  t.is(hexOf(syn), hexOf(tcp4({ src: '10.0.0.254', dst: '10.0.0.2', sport: 40000, dport: 8080, flags: 'S' })));
  const synack = tcp4({ src: '10.0.0.2', dst: '10.0.0.254', sport: 8080, dport: 40000, flags: 'SA', ack: 1 });
  t.is(decide(ct, synack).dir, 'reply');
  t.is(hexOf(synack), hexOf(tcp4({ src: '203.0.113.1', dst: '10.0.0.3', sport: 80, dport: 40000, flags: 'SA', ack: 1 })));
  // Out to the internet: masquerade to the WAN address.
  const web = tcp4({ src: '10.0.0.3', dst: '198.51.100.1', sport: 40001, dport: 443, flags: 'S' });
  t.is(decide(ct, web).nat, NAT_REWROTE_SRC);
  t.is(hexOf(web), hexOf(tcp4({ src: '203.0.113.1', dst: '198.51.100.1', sport: 40001, dport: 443, flags: 'S' })));
});

test('SNAT persistence (bysource) and the null binding that moves a clashing source port', (t) => {
  const { table, ct } = setup(['ip saddr 10.0.0.0/24 snat to 203.0.113.5:1024-1100', 'tcp dport 22 dnat to 10.0.1.1']);
  // Source port 5000 is outside the range: the first flow gets a port, the second (another
  // destination) reuses that mapping through bysource.
  const a = udp4({ src: '10.0.0.1', dst: '8.8.8.8', sport: 5000, dport: 53 });
  const b = udp4({ src: '10.0.0.1', dst: '1.1.1.1', sport: 5000, dport: 53 });
  decide(ct, a);
  decide(ct, b);
  t.is((a[20]! << 8) | a[21]!, (b[20]! << 8) | b[21]!);
  // Two clients DNAT'd onto the same server with the same source port and no SNAT rule for
  // them: the second connection's source port moves (the kernel's null binding), not a clash.
  const c1 = tcp4({ src: '192.0.2.1', dst: '203.0.113.5', sport: 6000, dport: 22, flags: 'S' });
  const c2 = tcp4({ src: '192.0.2.1', dst: '203.0.113.6', sport: 6000, dport: 22, flags: 'S' });
  t.is(decide(ct, c1).nat, NAT_REWROTE_DST);
  const r2 = decide(ct, c2);
  t.is(r2.state, 'new');
  t.is(r2.nat, NAT_REWROTE_SRC | NAT_REWROTE_DST);
  const p2 = (c2[20]! << 8) | c2[21]!;
  t.not(p2, 6000);
  t.true(p2 >= 1024);
  // Entries leave bysource when they leave the table.
  t.is(bysourceCount(table), 4);
  ct.flush();
  t.is(bysourceCount(table), 0);
});

test('rule text parses as nft writes it; bad rules are refused with a clear error', (t) => {
  t.like(parseNatRule('ip saddr 10.0.0.0/8 oifname "wan0" snat ip to 1.2.3.4-1.2.3.8:1000-2000 random,persistent'), {
    type: 'snat', family: 4, saddr: '10.0.0.0/8', oif: 'wan0', to: '1.2.3.4-1.2.3.8:1000-2000', random: true, persistent: true,
  });
  t.like(parseNatRule('udp dport 5353 redirect to :53'), { type: 'redirect', protocol: 'udp', dport: '5353', to: ':53' });
  t.like(parseNatRule('ct zone 3 ct mark 0x10/0xf0 masquerade fully-random'), { type: 'masquerade', zone: 3, mark: 16, markMask: 240, fullyRandom: true });
  const table = ConntrackTable.create({ max: 64 });
  t.throws(() => table.setNatRules(['snat']), { message: /needs "to"/ });
  t.throws(() => table.setNatRules(['tcp dport 80 dnat to 300.1.1.1']), { message: /bad IPv4/ });
  t.throws(() => table.setNatRules(['oifname x masquerade']), { message: /unknown interface "x"/ });
  t.throws(() => table.setNatRules(['ip saddr 10.0.0.0/8 dnat to [::1]']), { message: /family/ });
  t.throws(() => table.setNatRules(['dport 80 dnat to 1.1.1.1']), { message: /unexpected "dport"/ });
  t.deepEqual(table.natRules().rules, []);
  table.setNatRules(['udp dport 53 dnat to 10.0.0.53']);
  t.is(table.natRules().rules.length, 1);
});

test('redirect and masquerade take the interface address; no NAT without rules', (t) => {
  const { ct } = setup({
    interfaces: [{ name: 'lan0', address: '10.0.0.254', routes: ['10.0.0.0/24'] }],
    rules: ['iifname lan0 tcp dport 80 redirect to :3128'],
  });
  const f = tcp4({ src: '10.0.0.3', dst: '93.184.216.34', sport: 41000, dport: 80, flags: 'S' });
  t.is(decide(ct, f).nat, NAT_REWROTE_DST);
  t.is(hexOf(f), hexOf(tcp4({ src: '10.0.0.3', dst: '10.0.0.254', sport: 41000, dport: 3128, flags: 'S' })));
  const plain = ConntrackTable.create({ max: 64 });
  const pct = new Conntrack(plain);
  const g = udp4({ src: '10.0.0.1', dst: '8.8.8.8' });
  const before = hexOf(g);
  t.is(decide(pct, g).nat, 0);
  t.is(hexOf(g), before);
  t.is(bysourceCount(plain), 0);
});

test('bytes per connection stay within 230 at nf_conntrack_max 65536 with NAT inline', (t) => {
  const table = ConntrackTable.create({ max: 65536 });
  t.true(table.bytesPerConnection() <= 230, `${table.bytesPerConnection()}`);
});

test('README NAT example runs and prints what it promises', (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## NAT'));
  const m = /```js\n([\s\S]*?)```/.exec(section);
  t.truthy(m, 'README has a js example under "## NAT"');
  const code = m![1]!;
  const expected = [...code.matchAll(/console\.log\([^;]*;\s*\/\/\s*(.+)$/gm)].map((x) => x[1]!.trim());
  t.true(expected.length >= 2);
  const file = new URL('../readme-nat-example.mjs', import.meta.url);
  writeFileSync(file, code);
  const out = execFileSync(process.execPath, [fileURLToPath(file)], { encoding: 'utf8' });
  t.deepEqual(out.trim().split('\n'), expected);
});

test('NAT across threads: two workers allocating from one narrow range never share a tuple', async (t) => {
  const { ConntrackPool, BatchVerdict } = await import('../src/index.js');
  const table = ConntrackTable.create({ max: 4096 });
  table.setNatRules(['ip saddr 10.0.0.0/8 snat to 203.0.113.5:30000-30099']);
  const pool = new ConntrackPool({ table, workers: 2, dispatch: 'free' });
  try {
    const flows = 160; // more than the 100 ports: some must fail, none may share
    const batch = pool.createBatch({ capacity: flows });
    for (let i = 0; i < flows; i++) {
      const f = udp4({ src: `10.0.${i >> 8}.${(i & 255) + 1}`, dst: '8.8.8.8', sport: 5000, dport: 53 });
      batch.push(LINKTYPE_RAW, f, 0, f.length, NOW);
    }
    await pool.process(batch);
    const out = new BatchVerdict();
    let isNew = 0;
    for (let i = 0; i < flows; i++) if (batch.read(i, out).ctstate === 'new') isNew++;
    const ops = new CtOps(table);
    const lines = ops.list({}, { now: NOW });
    const stats = ops.stats().total;
    ops.close();
    const replies = lines.map((l) => /src=8\.8\.8\.8 dst=203\.0\.113\.5 sport=53 dport=(\d+)/.exec(l)?.[1]);
    t.true(replies.every((p) => p !== undefined && Number(p) >= 30000 && Number(p) <= 30099));
    t.is(new Set(replies).size, lines.length, 'every reply tuple is unique');
    t.is(lines.length, isNew);
    t.true(isNew <= 100);
    t.is(stats.nat_failed, flows - isNew);
    t.is(bysourceCount(table), isNew);
    const { checkNatInvariants } = await import('../src/index.js');
    t.deepEqual(checkNatInvariants(table), []);
  } finally {
    await pool.close();
  }
});

test('placement experiment variant: the bysource link in an extension block works the same', async (t) => {
  const { setNatPlacement } = await import('../src/index.js');
  const table = ConntrackTable.create({ max: 1024, extensions: 1024 });
  setNatPlacement(table, 'extension');
  table.setNatRules(['ip saddr 10.0.0.0/8 snat to 203.0.113.5:1024-1100']);
  const ct = new Conntrack(table);
  const a = udp4({ src: '10.0.0.1', dst: '8.8.8.8', sport: 5000, dport: 53 });
  const b = udp4({ src: '10.0.0.1', dst: '1.1.1.1', sport: 5000, dport: 53 });
  decide(ct, a);
  decide(ct, b);
  t.is((a[20]! << 8) | a[21]!, (b[20]! << 8) | b[21]!); // bysource reuse through the extension link
  t.is(bysourceCount(table), 2);
  ct.flush();
  t.is(bysourceCount(table), 0);
  t.throws(() => { decide(ct, udp4({ src: '10.0.0.2' })); setNatPlacement(table, 'inline'); }, { message: /empty/ });
});

/** Bitwise CRC32c (independent of src/). */
function crc32cBits(b: Uint8Array): number {
  let c = -1;
  for (const x of b) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

function sctpInit(src: string, dst: string, sport: number, dport: number): Uint8Array {
  const b = new Uint8Array(12 + 20);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, sport);
  dv.setUint16(2, dport);
  dv.setUint32(4, 0); // vtag 0 on INIT
  b[12] = 1; // INIT
  dv.setUint16(14, 20);
  dv.setUint32(16, 0x11111111); // initiate tag
  dv.setUint32(20, 65536);
  dv.setUint16(24, 1);
  dv.setUint16(26, 1);
  dv.setUint32(28, 1);
  dv.setUint32(8, crc32cBits(b), true);
  return ipv4(132, b, { src, dst });
}

test('SCTP: DNAT port forwarding recomputes the CRC32c', (t) => {
  const { ct } = setup(['meta l4proto sctp ip daddr 203.0.113.1 dnat to 10.0.0.2:5001']);
  const f = sctpInit('198.51.100.7', '203.0.113.1', 40000, 5000);
  const r = decide(ct, f);
  t.deepEqual([r.state, r.nat], ['new', NAT_REWROTE_DST]);
  t.is(hexOf(f), hexOf(sctpInit('198.51.100.7', '10.0.0.2', 40000, 5001)));
});

test('a snapshot keeps NAT mappings: restored entries translate and are back in bysource', async (t) => {
  const { encodeSnapshot, restoreSnapshot } = await import('../src/index.js');
  const { table, ct } = setup(['ip saddr 10.0.0.0/8 snat to 203.0.113.5:40000-40009']);
  const f = udp4({ src: '10.0.0.1', dst: '8.8.8.8', sport: 5000, dport: 53 });
  decide(ct, f);
  const port = (f[20]! << 8) | f[21]!;
  const snap = encodeSnapshot(table);
  const t2 = ConntrackTable.create({ max: 4096 });
  t2.setNatRules(table.natRules());
  t.is(restoreSnapshot(t2, snap, { now: NOW }).restored, 1);
  t.is(bysourceCount(t2), 1);
  const ct2 = new Conntrack(t2);
  const back = udp4({ src: '8.8.8.8', dst: '203.0.113.5', sport: 53, dport: port });
  const r = decide(ct2, back);
  t.deepEqual([r.dir, r.nat], ['reply', NAT_REWROTE_DST]);
  t.is(hexOf(back), hexOf(udp4({ src: '8.8.8.8', dst: '10.0.0.1', sport: 53, dport: 5000 })));
});

test('mutated and truncated frames through NAT: never a crash, never a write past the frame', (t) => {
  const { ct } = setup({
    interfaces: [{ name: 'lan0', address: '10.0.0.254', routes: ['10.0.0.0/24'] }, { name: 'wan0', address: '203.0.113.1', address6: '2001:db8::1', routes: ['0.0.0.0/0', '::/0'] }],
    rules: ['oifname wan0 masquerade', 'tcp dport 80 dnat to 10.0.0.2:8080', 'ip6 saddr fd00::/64 snat to [2001:db8::9]'],
  });
  const seen = udp4({ src: '203.0.113.1', dst: '8.8.8.8', sport: 5000, dport: 53, payload: 'hello' });
  const bases = [
    udp4({ src: '10.0.0.1', dst: '8.8.8.8', sport: 5000, dport: 53, payload: 'hello' }),
    udp4({ src: '8.8.8.8', dst: '203.0.113.1', sport: 53, dport: 5000, payload: 'answer' }),
    tcp4({ src: '198.51.100.7', dst: '203.0.113.1', sport: 33000, dport: 80, flags: 'S' }),
    icmp4({ src: '10.0.0.1', dst: '8.8.8.8', id: 5 }),
    icmpError4(3, 3, seen, { src: '192.0.2.99', dst: '203.0.113.1' }),
    udp6({ src: 'fd00::1', dst: '2001:db8::53', sport: 7000, dport: 53 }),
    icmpError6(1, 4, udp6({ src: '2001:db8::9', dst: '2001:db8::53', sport: 7000, dport: 53 }), { src: '2001:db8::fe', dst: '2001:db8::9' }),
  ];
  for (const b of bases) decide(ct, b.slice()); // the connections exist
  let seed = 12345;
  const rnd = (n: number): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed % n; };
  let n = 0;
  for (let i = 0; i < 3000; i++) {
    const base = bases[i % bases.length]!;
    const len = rnd(4) === 0 ? rnd(base.length + 1) : base.length;
    const buf = new Uint8Array(len + 16).fill(0xaa);
    buf.set(base.subarray(0, len), 8);
    for (let k = rnd(4); k > 0 && len > 0; k--) buf[8 + rnd(len)] = rnd(256);
    const v = ct.decide(buf.subarray(8, 8 + len), LINKTYPE_RAW, NOW);
    t.true(typeof v.ctstate === 'string');
    // Bytes outside the frame are untouched.
    if (buf.subarray(0, 8).some((x) => x !== 0xaa) || buf.subarray(8 + len).some((x) => x !== 0xaa)) t.fail(`frame ${i} wrote outside`);
    n++;
  }
  t.is(n, 3000);
});

test('a TCP SYN that finds its one port held by a TIME_WAIT connection evicts it (nf_nat_used_tuple_harder)', (t) => {
  const { table, ct } = setup(['ip saddr 10.0.0.0/8 snat to 203.0.113.5:40000-40000']);
  const C = '10.0.0.1', S = '192.0.2.80', N = '203.0.113.5';
  const c2s = (sport: number, flags: string, seq: number, ack = 0) => tcp4({ src: C, dst: S, sport, dport: 80, flags, seq, ack });
  const s2n = (flags: string, seq: number, ack: number) => tcp4({ src: S, dst: N, sport: 80, dport: 40000, flags, seq, ack });
  t.is(decide(ct, c2s(5000, 'S', 1000)).nat, NAT_REWROTE_SRC);
  decide(ct, s2n('SA', 9000, 1001));
  decide(ct, c2s(5000, 'A', 1001, 9001));
  decide(ct, c2s(5000, 'FA', 1001, 9001));
  decide(ct, s2n('FA', 9001, 1002));
  decide(ct, c2s(5000, 'A', 1002, 9002));
  const ops = new CtOps(table);
  t.regex(ops.list({}, { now: NOW }).join('\n'), /TIME_WAIT src=10\.0\.0\.1 .* dport=40000/);
  // Another client port, same server: the only port is taken by the TIME_WAIT connection.
  const syn = c2s(5001, 'S', 50000);
  const r = decide(ct, syn);
  t.deepEqual([r.state, r.nat], ['new', NAT_REWROTE_SRC]);
  t.is((syn[20]! << 8) | syn[21]!, 40000);
  const lines = ops.list({}, { now: NOW }).join('\n');
  t.notRegex(lines, /TIME_WAIT/);
  t.regex(lines, /SYN_SENT src=10\.0\.0\.1 dst=192\.0\.2\.80 sport=5001 .* dport=40000/);
  // An ESTABLISHED holder is never evicted: the next SYN finds no port.
  decide(ct, s2n('SA', 7000, 50001));
  decide(ct, c2s(5001, 'A', 50001, 7001));
  const third = decide(ct, c2s(5002, 'S', 90000));
  t.deepEqual([third.state, third.drop], ['invalid', true]);
  ops.close();
});
