/**
 * NAT with many workers: a flow-dispatched replay on 2 workers makes the same NAT decisions as
 * one thread (same translated capture, byte for byte, and the same conntrack -L), on the kernel
 * NAT fixtures' traffic (clashes, exhaustion and hairpin included): with NAT on, 'flow' dispatch
 * partitions by connection and decides new connections in capture order (pool/dispatch.ts).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const fx = fileURLToPath(new URL('../../test/fixtures/kernel-nat/', import.meta.url));

for (const sc of ['nat_dnat', 'nat_dnat_pool', 'nat_hairpin', 'nat_masquerade', 'nat_snat_exhaust']) {
  test(`2 flow-dispatched workers translate ${sc} exactly as one thread`, (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'ctsab-natw-'));
    try {
      const nat = ['--nat-rules', join(fx, sc, 'nat.json')];
      const run = (workers: number, out: string): string => execFileSync(process.execPath,
        [cli, 'replay', join(fx, sc, 'before.pcap'), ...nat, '-w', out, '-L', '--no-progress', ...(workers > 1 ? ['--workers', String(workers), '--dispatch', 'flow'] : [])],
        { encoding: 'utf8' });
      const one = run(1, join(dir, 'one.pcap'));
      const two = run(2, join(dir, 'two.pcap'));
      const rows = (s: string): string[] => s.trim().split('\n').map((l) => l.replace(/^(\S+\s+\d+\s+)\d+/, '$1T')).sort();
      t.deepEqual(rows(two), rows(one));
      t.true(rows(one).length >= 2);
      t.true(Buffer.compare(readFileSync(join(dir, 'one.pcap')), readFileSync(join(dir, 'two.pcap'))) === 0);
      t.false(Buffer.compare(readFileSync(join(dir, 'one.pcap')), readFileSync(join(fx, sc, 'before.pcap'))) === 0, 'NAT rewrote something');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('NAT under churn: 2 free-dispatch workers insert while the GC worker expires NAT\'d connections; invariants hold', async (t) => {
  const { ConntrackTable, ConntrackPool, startGc, checkNatInvariants, bysourceCount, LINKTYPE_RAW } = await import('../src/index.js');
  const { udp4 } = await import('./helpers/frames.js');
  const { H_COUNT } = await import('../src/table/layout.js');
  const count = (): number => Atomics.load(table.i32, H_COUNT); // confirmed entries
  const table = ConntrackTable.create({ max: 8192, sysctls: { nf_conntrack_udp_timeout: 1 } });
  table.setNatRules(['ip saddr 10.0.0.0/8 snat to 203.0.113.5:20000-21999']);
  const pool = new ConntrackPool({ table, workers: 2, dispatch: 'free' });
  const gc = startGc(table, { wallPerClock: 0.001, minIntervalMs: 100 });
  try {
    let now = 1_000_000;
    let inserted = 0;
    for (let round = 0; round < 12; round++) {
      const batch = pool.createBatch({ capacity: 600 });
      for (let i = 0; i < 600; i++) {
        const f = udp4({ src: `10.1.${round}.${(i % 250) + 1}`, dst: `192.0.2.${(i % 3) + 1}`, sport: 1000 + i, dport: 53 });
        batch.push(LINKTYPE_RAW, f, 0, f.length, now);
      }
      table.clock = now;
      await pool.process(batch);
      inserted += 600;
      now += 700; // older rounds expire (1 s UDP timeout) while new ones come
      await new Promise((r) => setTimeout(r, 20));
    }
    table.clock = now + 5000;
    const t0 = Date.now();
    while (count() > 0 && Date.now() - t0 < 10000) await new Promise((r) => setTimeout(r, 20));
    t.is(count(), 0, 'the GC expired everything');
    t.is(bysourceCount(table), 0, 'and unlinked it from bysource');
    t.deepEqual(checkNatInvariants(table), []);
    t.true(inserted === 7200);
  } finally {
    await gc.stop();
    await pool.close();
  }
});
