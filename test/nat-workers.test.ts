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

for (const sc of ['nat_dnat', 'nat_hairpin', 'nat_masquerade', 'nat_snat_exhaust']) {
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
