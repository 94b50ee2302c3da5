/** bench/ratios.ts: parsing Open vSwitch's ovstest output (a stand-in script prints its format) and the goal table. */
import test from 'ava';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatRatios, ovsHot, ovsProblem, ovsZones, ratioRows, type RatioInput } from '../bench/ratios.js';

/** A stand-in for ovstest printing what test-conntrack.c prints (shape of OVS 3.x). */
function fakeOvstest(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ctsab-ovs-'));
  const path = join(dir, 'ovstest');
  writeFileSync(path, `#!/bin/sh
[ "$1" = test-conntrack ] || { echo "unknown test $1" >&2; exit 1; }
case "$2" in
benchmark) echo "conntrack:    250 ms" ;;
benchmark-zones)
  echo "initial packet generation time: 3 ms"
  echo "results:"
  echo "         | ct execute (commit) | ct execute (no commit) | flush full zone | flush empty zone |"
  echo "+--------+---------------------+------------------------+-----------------+------------------+"
  echo "| Min    |            30000 us |                10000 us |         8000 us |            1 us |"
  echo "| Avg    |         40000.00 us |             20000.00 us |      10000.00 us |          1.00 us |" ;;
*) exit 1 ;;
esac
`);
  chmodSync(path, 0o755);
  return path;
}

test('ovstest output parsed into rates; a missing binary is "not measured"', (t) => {
  if (process.platform === 'win32') return t.pass('needs /bin/sh');
  const ovs = fakeOvstest();
  t.is(ovsProblem(ovs), null);
  t.regex(ovsProblem(null)!, /not measured/);
  t.regex(ovsProblem(join(tmpdir(), 'no-such-ovstest'))!, /not measured .*does not exist/);
  // 2 threads x 1,000,000 packets in 250 ms.
  t.is(ovsHot(ovs, 2, 1_000_000, 32), 8_000_000);
  const z = ovsZones(ovs, 20_000, 1);
  t.is(z.ins, 500_000); // 20k connections in 40 ms
  t.is(z.look, 1_000_000);
  t.is(z.flush, 10);
});

test('ratio table: ours / OVS, 2w / 1w, goals met or not', (t) => {
  const w = (name: string, tracker: string, workers: number, rate: number, unit = 'pkt/s') => ({ name, tracker, workers, rate, unit });
  const input: RatioInput = {
    workloads: [
      w('hot', 'ours', 1, 9e6), w('hot', 'ours', 2, 17e6), w('hot', 'ovs', 1, 16e6),
      w('zones-insert', 'ours', 1, 500e3, 'conn/s'), w('zones-insert', 'ours', 2, 800e3, 'conn/s'), w('zones-insert', 'ovs', 1, 600e3, 'conn/s'),
      w('zones-flush', 'ours', 1, 10, 'ms'), w('zones-flush', 'ovs', 1, 8, 'ms'),
    ],
    scaling: [{ workers: 1, rate: 1 }, { workers: 2, rate: 1.9 }],
    scalingEnd: [{ workers: 1, rate: 1 }, { workers: 2, rate: 1.8 }],
    zonesPerZone: 20_000,
    lookup: [{ entries: 100_000, findOnly: 4e6, plainWalk: 5e6 }],
    cLoop: [{ entries: 100_000, rate: 20e6 }],
    ovs: null,
    replay: { bytes: 1 << 20, packets: 1000, w1: 2, w2: 1, ratio: 2, rounds: [2] },
  };
  const rows = ratioRows(input);
  const row = (name: string) => rows.find((r) => r.workload.startsWith(name))!;
  t.is(row('hot').vsPeer, '0.56');
  t.is(row('hot').scale, '1.89');
  t.is(row('hot').met, 'yes'); // 9 Mpps >= 8 and 0.56 >= 0.5
  t.is(row('zones-insert').vsPeer, '0.83');
  t.is(row('zones-insert').met, 'no');
  t.is(row('zone flush').ours1w, '0.500 µs');
  t.is(row('zone flush').vsPeer, '0.80');
  t.is(row('zone flush').met, 'no');
  t.is(row('Chains.find').vsPeer, '0.200');
  t.is(row('Chains.find').met, 'no');
  t.is(row('replay').met, 'yes');
  t.is(row('mixed').met, 'n/a');
  const text = formatRatios(input).join('\n');
  t.regex(text, /ceiling \(pure compute\): 1\.90 at the start, 1\.80 at the end/);
  t.regex(formatRatios({ ...input, cLoop: null, ovs: 'not measured (no --ovs PATH/ovstest given)' }).join('\n'), /C loop not measured/);
});
