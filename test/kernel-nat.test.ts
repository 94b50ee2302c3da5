/**
 * NAT against the kernel: every fixture recorded by scripts/oracle/record-nat.sh (nft NAT in
 * the router) replayed with the same rules must agree 100% (src/ops/oracle-nat.ts says how).
 */
import test from 'ava';
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { compareNatWithKernel } from '../src/ops/oracle-nat.js';

const root = fileURLToPath(new URL('../../test/fixtures/kernel-nat/', import.meta.url));
const dirs = existsSync(root) ? readdirSync(root).filter((d) => existsSync(`${root}${d}/before.pcap`)).sort() : [];

test('NAT fixtures are present', (t) => {
  t.true(dirs.length >= 5, `fixtures in ${root}: ${dirs.join(', ')}`);
});

for (const d of dirs) {
  test(`kernel NAT fixture ${d}`, (t) => {
    const r = compareNatWithKernel(`${root}${d}`);
    t.log(`${r.packets} packets: ${r.verdictsAgree} verdicts agree, ${r.identical} identical bytes, ` +
      `${r.randomChoice} kernel random choices matched in range, ${r.natDropped} NAT drops; ` +
      `conntrack -L ${r.tableAgree}/${r.tableKernel}`);
    t.deepEqual(r.problems, []);
    t.is(r.verdictsAgree + r.natDropped, r.packets);
    t.is(r.tableAgree, r.tableKernel);
    t.true(r.identical > 0);
  });
}
