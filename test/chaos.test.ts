/**
 * The chaos test (issue 9), CI-sized: CHAOS_SECONDS (default 20) split between the two
 * disciplines. The long modes: `npm run chaos -- --seconds 600 [--discipline refcount]`.
 */
import test from 'ava';
import { runChaos } from './helpers/chaos.js';

const total = Number(process.env['CHAOS_SECONDS'] ?? 20);

for (const discipline of ['noref', 'refcount'] as const) {
  test.serial(`chaos: kills and stalls of every thread kind, ${discipline}`, async (t) => {
    const seconds = discipline === 'noref' ? Math.ceil(total * 0.6) : Math.floor(total * 0.4);
    t.timeout((seconds + 120) * 1000);
    const r = await runChaos({ seconds, discipline, seed: 0x1234567 + seconds, log: (s) => t.log(s) });
    t.log(`${discipline} ${seconds} s: kills ${JSON.stringify(r.kills)}, stalls ${r.stalls} (detected ${r.stallsDetected}), ` +
      `created ${r.created}, refused ${r.refused}, DESTROYs ${r.destroysSeen}, overruns ${r.overruns}, slow dropped ${r.slowDropped}, ` +
      `checker dropped ${r.fastDropped} (machine gaps ${r.machineGaps}), stall events ${JSON.stringify(r.stallEvents)} of ${r.stallsCounted} stalls counted`);
    // Each stall found is counted and reported as an event: the checker gets every one, bar those
    // whose reporter was killed mid-report (its record became a tombstone).
    const reported = r.stallEvents.worker + r.stallEvents.subscriber;
    t.true(reported <= r.stallsCounted && reported >= r.stallsCounted - r.tombstones,
      `${reported} stall events, ${r.stallsCounted} stalls counted, ${r.tombstones} tombstones`);
    t.is(r.wedges, 0, 'no thread wedged (deadlock)');
    t.is(r.missing, 0, 'every connection that must exist exists');
    t.is(r.killedLive, 0, 'no DESTROY for a connection still in the table');
    t.is(r.duplicateDestroys, 0, 'no DESTROY twice');
    // The checker polls every 5 ms; it is overrun only if it went silent for the stall time
    // (the machine not running it: see the control thread's gaps in the log), and then every
    // DESTROY it missed is one of its counted drops.
    t.is(r.fastOverrunsUnexplained, 0, 'the checker was never overrun while it polled within the stall time');
    t.is(r.lostDestroys, r.fastDropped, 'every removed connection produced its DESTROY (or a counted drop)');
    t.is(r.wrongfulTableFull, 0, 'no "table full" below 90 % full');
    t.true(r.invariantsOk, r.invariants);
    t.true(r.created > 1000);
    t.true(r.kills.packet + r.kills.gc + r.kills.flusher + r.kills.subscriber > 0);
  });
}
