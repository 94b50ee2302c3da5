/**
 * Checksum offload as the kernel sees it: a TCP/UDP/UDP-Lite checksum field holding the
 * pseudo-header partial sum (what a sender with CHECKSUM_PARTIAL leaves, and what a capture on
 * that host shows) is accepted and counted (csum_offload); 'strict' refuses it; a wrong checksum
 * is refused either way. Then, as root, a real host capture with the veth offloads left on.
 */
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Conntrack, LINKTYPE_RAW } from '../src/index.js';
import { ConntrackTable } from '../src/table/table.js';
import { replay } from '../src/ops/replay.js';
import { inetChecksum, ipv4, ipv6, pseudo4, pseudo6, tcp4, tcp6, udp4, udp6 } from './helpers/frames.js';

/** Folded (not complemented) sum of the pseudo-header: what CHECKSUM_PARTIAL leaves in the field. */
function partial(pseudo: Uint8Array): number {
  return ~inetChecksum(pseudo) & 0xffff;
}

/** Replace the layer-4 checksum (at `at` bytes into layer 4) of a raw IP packet. */
function withCheck(pkt: Uint8Array, l4off: number, at: number, value: number): Uint8Array {
  const b = pkt.slice();
  b[l4off + at] = value >> 8;
  b[l4off + at + 1] = value & 0xff;
  return b;
}

interface Case { name: string; pkt: Uint8Array; l4off: number; at: number; pseudo: Uint8Array }

function cases(): Case[] {
  const t4 = tcp4({ flags: 'S', sport: 40000, dport: 80 });
  const t6 = tcp6({ flags: 'S', sport: 40000, dport: 80 });
  const u4 = udp4({ sport: 40001, dport: 53, payload: 'query' });
  const u6 = udp6({ sport: 40001, dport: 53, payload: 'query' });
  // UDP-Lite (136), full coverage: header 8 bytes + 4 of data.
  const lite = (v6: boolean): Case => {
    const l = new Uint8Array(12);
    l.set([0x9c, 0x41, 0x00, 0x35, 0, 0, 0, 0, 1, 2, 3, 4]);
    // A correct checksum as the kernel verifies it (IPPROTO_UDP in the pseudo-header).
    const p17 = v6 ? pseudo6('fd00::1', 'fd00::2', 17, 12) : pseudo4('10.0.0.1', '10.0.0.2', 17, 12);
    const c = inetChecksum(p17, l);
    l[6] = c >> 8;
    l[7] = c & 0xff;
    const pkt = v6 ? ipv6(136, l, { src: 'fd00::1', dst: 'fd00::2' }) : ipv4(136, l, { src: '10.0.0.1', dst: '10.0.0.2' });
    const ps = v6 ? pseudo6('fd00::1', 'fd00::2', 136, 12) : pseudo4('10.0.0.1', '10.0.0.2', 136, 12);
    return { name: `UDP-Lite v${v6 ? 6 : 4}`, pkt, l4off: v6 ? 40 : 20, at: 6, pseudo: ps };
  };
  return [
    { name: 'TCP v4', pkt: t4, l4off: 20, at: 16, pseudo: pseudo4('10.0.0.1', '10.0.0.2', 6, t4.length - 20) },
    { name: 'TCP v6', pkt: t6, l4off: 40, at: 16, pseudo: pseudo6('fd00::1', 'fd00::2', 6, t6.length - 40) },
    { name: 'UDP v4', pkt: u4, l4off: 20, at: 6, pseudo: pseudo4('10.0.0.1', '10.0.0.2', 17, u4.length - 20) },
    { name: 'UDP v6', pkt: u6, l4off: 40, at: 6, pseudo: pseudo6('fd00::1', 'fd00::2', 17, u6.length - 40) },
    lite(false), lite(true),
  ];
}

function decideOne(pkt: Uint8Array, checksum?: 'offload' | 'strict'): { state: string; reason: string | null; offload: number } {
  const table = ConntrackTable.create({ max: 64, ...(checksum ? { checksum } : {}) });
  const ct = new Conntrack(table);
  const v = ct.decide(pkt, LINKTYPE_RAW, 1000);
  const r = { state: v.ctstate, reason: v.reason, offload: table.stats().total['csum_offload']! };
  ct.close();
  return r;
}

for (const c of cases()) {
  test(`${c.name}: a partial-sum checksum is offload (accepted, counted), strict refuses it, a wrong one is invalid`, (t) => {
    const p = partial(c.pseudo);
    for (const value of [p, ~p & 0xffff]) {
      const pkt = withCheck(c.pkt, c.l4off, c.at, value);
      const off = decideOne(pkt);
      t.is(off.state, 'new', `0x${value.toString(16)}: ${off.reason}`);
      t.is(off.offload, 1);
      const strict = decideOne(pkt, 'strict');
      t.is(strict.state, 'invalid');
      t.regex(strict.reason ?? '', /checksum/);
      t.is(strict.offload, 0);
    }
    // A correct checksum: not counted as offload.
    const good = decideOne(c.pkt);
    t.is(good.state, 'new');
    t.is(good.offload, 0);
    // Neither right nor a partial sum.
    const bad = withCheck(c.pkt, c.l4off, c.at, (p + 0x1111) & 0xffff);
    t.is(decideOne(bad).state, 'invalid');
  });
}

test('the sysctl nf_conntrack_checksum_offload=0 is strict too; nf_conntrack_checksum=0 accepts anything', (t) => {
  const c = cases()[0]!;
  const pkt = withCheck(c.pkt, c.l4off, c.at, partial(c.pseudo));
  const t1 = ConntrackTable.create({ max: 64, sysctls: { nf_conntrack_checksum_offload: 0 } });
  const ct1 = new Conntrack(t1);
  t.is(ct1.decide(pkt, LINKTYPE_RAW, 1).ctstate, 'invalid');
  ct1.close();
  const t2 = ConntrackTable.create({ max: 64, checksum: 'strict', sysctls: { nf_conntrack_checksum: 0 } });
  const ct2 = new Conntrack(t2);
  t.is(ct2.decide(pkt, LINKTYPE_RAW, 1).ctstate, 'new');
  ct2.close();
});

// ---------------------------------------------------------------------------------------------
// A real host capture (root).

const script = new URL('../../scripts/offload/record-host.sh', import.meta.url).pathname;
function missingTool(): string | null {
  for (const tool of ['ip', 'nft', 'tcpdump', 'ethtool']) {
    if (spawnSync('sh', ['-c', `PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v ${tool}`]).status !== 0) return tool;
  }
  if (!existsSync('/usr/bin/python3')) return 'python3';
  return null;
}
const why = process.getuid?.() !== 0 ? 'not root' : missingTool() !== null ? `missing ${missingTool()}` : null;

(why ? test.skip : test)(`host capture with offloads on replays with the kernel's verdicts${why ? ` (skipped: ${why})` : ''}`, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ctsab-offload-'));
  try {
    execFileSync(script, [dir], { env: { ...process.env, CTSAB_NS_PREFIX: 'ctA' }, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
    const kernel = JSON.parse(readFileSync(join(dir, 'kernel.json'), 'utf8')) as { invalid: number; packets: number; tx_checksumming: string; dropped: Record<string, number> };
    t.true(kernel.packets > 0, 'the kernel counted the traffic (nft counters)');
    t.log(`kernel: ${kernel.packets} packets, ${kernel.invalid} invalid; tx-checksumming ${kernel.tx_checksumming}`);
    for (const name of ['host.pcap', 'any.pcap']) {
      t.is(kernel.dropped[name], 0, `tcpdump lost packets of ${name}: the capture cannot be compared`);
      const bytes = readFileSync(join(dir, name));
      const ours = replay(bytes);
      const offload = ours.table.stats().total['csum_offload']!;
      const reasm = ours.table.stats().total['frag_reasm']!;
      ours.conntrack.close();
      const strict = replay(bytes, { tableOptions: { checksum: 'strict' } });
      strict.conntrack.close();
      t.log(`${name}: ${ours.packets} packets, invalid ${ours.counts['invalid']} (strict: ${strict.counts['invalid']}), csum_offload ${offload}, datagrams reassembled ${reasm}`);
      t.is(ours.error, null);
      t.true(ours.packets >= 20, 'the capture holds the traffic');
      t.true(reasm >= 8, 'the 3000-byte UDP and echo datagrams (v4 and v6, both ways) were reassembled');
      t.deepEqual(ours.fragmentsIncomplete, []);
      if (kernel.invalid === 0) t.is(ours.counts['invalid'], 0, `${name}: the kernel found nothing invalid`);
      // The capture really holds offloaded checksums (else this test would show nothing).
      if (kernel.tx_checksumming === 'on') {
        t.true(offload > 0, `${name}: offloaded checksums seen`);
        t.is(strict.counts['invalid'], offload, 'strict refuses exactly the offloaded ones');
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
