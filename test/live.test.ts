/**
 * Live traffic through NFQUEUE (root only): client - router - server namespaces, the router
 * queues FORWARD traffic to 2 queues, one packet worker each. Real traffic (HTTP transfers of
 * several MB both ways, short connections, ping v4/v6, UDP request/response, a refused TCP port,
 * an ICMP port unreachable) and crafted invalid packets.
 *  - shadow (the CLI): every packet's state and direction equal the kernel's;
 *  - enforce (the library): transfers complete with the right bytes, crafted packets dropped,
 *    policy marks reach the kernel, a packet worker killed mid-transfer is recovered.
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LiveNet, liveSkipReason } from './helpers/live-net.js';
import { LiveQueues } from '../src/input/live/live.js';
import { ConntrackTable } from '../src/table/table.js';
import { checkInvariants } from '../src/table/invariants.js';
import { W_ALIVE, WORKER_WORDS } from '../src/table/layout.js';

/** Worker records of a table still claimed. */
function workerRecordsInUse(table: ConntrackTable): number {
  let n = 0;
  for (let w = 0; w < table.maxWorkers; w++) if (Atomics.load(table.i32, table.sec.workers + w * WORKER_WORDS + W_ALIVE) === 1) n++;
  return n;
}

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const skip = await liveSkipReason();
const net = new LiveNet('ctH');
/** Shadow traffic: 4 MiB each way and 20 short connections; more with CTSAB_LIVE_MB / CTSAB_LIVE_SHORT (long mode). */
const SHADOW_MB = Number(process.env['CTSAB_LIVE_MB'] ?? 4);
const SHADOW_SHORT = Number(process.env['CTSAB_LIVE_SHORT'] ?? 20);

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function assertTraffic(t: { true(v: boolean, m?: string): void; is(a: unknown, b: unknown, m?: string): void }, r: Json): void {
  t.true(r['download'].ok, `download: ${JSON.stringify(r['download'])}`);
  t.true(r['upload'].ok, `upload: ${JSON.stringify(r['upload'])}`);
  t.is(r['short'].ok, r['short'].of, 'short connections');
  t.is(r['ping'].v4, 3, 'ping v4');
  t.is(r['ping'].v6, 3, 'ping v6');
  t.is(r['udp'].v4, 3, 'udp v4');
  t.is(r['udp'].v6, 3, 'udp v6');
  t.is(r['refused'].v4, 'refused', 'RST from a closed TCP port (v4)');
  t.is(r['refused'].v6, 'refused', 'RST from a closed TCP port (v6)');
  t.is(r['unreachable'].v4, 'unreachable', 'ICMP port unreachable (v4)');
  t.is(r['unreachable'].v6, 'unreachable', 'ICMPv6 port unreachable');
}

/** Start the CLI; resolves once it listens. stop() sends SIGTERM and resolves with the exit code. */
async function startCli(args: string[]): Promise<{ out: () => string; err: () => string; stop: () => Promise<number | null> }> {
  const p = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout.on('data', (b: Buffer) => { out += b.toString(); });
  await new Promise<void>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${args[0]} did not start: ${err}`)), 10000);
    p.stderr.on('data', (b: Buffer) => {
      err += b.toString();
      if (err.includes('SIGINT/SIGTERM to stop')) { clearTimeout(timer); ok(); }
    });
    p.once('exit', (c) => { clearTimeout(timer); fail(new Error(`${args[0]} exited ${c}: ${err}`)); });
  });
  const exited = new Promise<number | null>((ok) => p.once('exit', ok));
  return { out: () => out, err: () => err, stop: () => { p.kill('SIGTERM'); return exited; } };
}

if (skip) {
  test.skip(`live NFQUEUE tests skipped: ${skip}`, () => {});
} else {
  test.before(async () => {
    net.up();
    await net.serve();
  });
  test.after.always(() => net.down());

  test.serial('shadow mode: every live packet agrees with the kernel\'s conntrack state', async (t) => {
    net.rules('shadow', '0:1');
    const cliRun = await startCli(['nfqueue', '--netns', net.router, '--queues', '0-1', '--shadow', '--json']);
    const before = net.phantomCount();
    const r = await net.traffic(['client', '--mb', String(SHADOW_MB), '--short', String(SHADOW_SHORT)], 600000);
    const crafted = await net.traffic(['craft']);
    t.is(await cliRun.stop(), 0, cliRun.err());
    const out = cliRun.out();
    const err = cliRun.err();
    assertTraffic(t, r);
    t.is(net.phantomCount() - before, crafted['sent'] as number, 'shadow mode lets the kernel decide: crafted packets pass');
    const res = JSON.parse(out.trim().split('\n').pop()!) as Json;
    const tot = res['totals'] as Record<string, number>;
    t.log(`shadow: ${tot['packets']} packets on 2 queues (${res['queues'].map((q: Json) => q['packets']).join(' + ')}), ` +
      `checked ${tot['shadowChecked']}, mismatches ${tot['mismatches']}, invalid ${tot['invalid']}`);
    t.true(tot['packets']! > 5000, 'several MB both ways went through the queues');
    t.is(tot['shadowChecked'], tot['packets'], 'every packet carried the kernel\'s state');
    t.is(tot['mismatches'], 0, `mismatches (see stderr): ${err.split('\n').filter((l) => l.includes('mismatch')).slice(0, 5).join('\n')}`);
    t.true(tot['invalid']! >= (crafted['sent'] as number), 'the crafted packets were invalid for both');
    t.true(tot['related']! >= 2, 'ICMP port unreachable (v4, v6) related');
    t.is(tot['accepted'], tot['packets']);
  });

  test.serial('a queue another socket holds: start fails with the kernel\'s reason and leaves nothing behind', async (t) => {
    net.rules('enforce', '0:1');
    const t1 = ConntrackTable.create({ max: 1024, maxWorkers: 8 });
    const first = await LiveQueues.start({ table: t1, queues: [0], mode: 'enforce', netns: net.router, gc: false });
    try {
      const t2 = ConntrackTable.create({ max: 1024, maxWorkers: 8 });
      await t.throwsAsync(LiveQueues.start({ table: t2, queues: [1, 0], mode: 'enforce', netns: net.router, gc: false }),
        { message: /queue 0: nfqueue bind \(queue 0\): Operation not permitted \(errno 1\): queue 0 is bound by another socket/ });
      t.deepEqual(checkInvariants(t2).invariants.filter((x) => !x.ok), []);
      t.is(workerRecordsInUse(t2), 0, 'every worker record given back');
    } finally {
      await first.stop();
    }
  });

  test.serial('monitor mode (AF_PACKET, no queue): the router interface\'s traffic tracked passively', async (t) => {
    net.rules('none', '0:0');
    const snap = join(mkdtempSync(join(tmpdir(), 'ctH-live-')), 'monitor.snap');
    const { out, err, stop } = await startCli(['monitor', '--netns', net.router, '--interface', 'ctHr1', '--json', '-w', snap]);
    const r = await net.traffic(['client', '--mb', '1', '--short', '6']);
    const crafted = await net.traffic(['craft']);
    t.is(await stop(), 0, err());
    assertTraffic(t, r);
    const res = JSON.parse(out().trim().split('\n').pop()!) as Json;
    const tot = res['totals'] as Record<string, number>;
    t.log(`monitor: ${tot['packets']} frames, new ${tot['new']}, established ${tot['established']}, related ${tot['related']}, invalid ${tot['invalid']}`);
    t.is(tot['invalid'], crafted['sent'] as number, 'only the crafted packets are invalid');
    t.true(tot['related']! >= 2, 'the ICMP port unreachables are related');
    const closed = (res['entries'] as Json[]).filter((e) => e['proto'] === 'tcp' && e['original'].dport === 8080 && e['state'] === 'TIME_WAIT');
    t.is(closed.length, 8, 'two transfers and six short connections, each closed (TIME_WAIT)');
    // The snapshot saved at exit lists the same connections.
    const listed = spawnSync(process.execPath, [cli, 'count', snap], { encoding: 'utf8' });
    t.is(listed.status, 0, listed.stderr);
    t.is(Number(listed.stdout.trim()), (res['entries'] as Json[]).length);
  });

  test.serial('enforce mode: our decisions are the verdicts; a killed packet worker is recovered', async (t) => {
    net.rules('enforce', '0:1');
    const table = ConntrackTable.create({ max: 65536, maxWorkers: 16 });
    const errors: string[] = [];
    const lq = await LiveQueues.start({
      table, queues: [0, 1], mode: 'enforce', netns: net.router, onError: (q, m) => errors.push(`queue ${q}: ${m}`),
      policy: {
        default: 'drop', connmark: true,
        rules: [
          { action: 'accept', proto: 'tcp', dst: ['10.200.2.2', 'fd00:200:0:2::/64'], dport: 8080, mark: 0x10 },
          { action: 'accept', proto: 'tcp', dport: 81 },
          { action: 'accept', proto: 'udp', dport: '81,9999' },
          { action: 'accept', proto: 'icmp' },
          { action: 'accept', proto: 'icmpv6' },
        ],
      },
    });
    try {
      const before = net.phantomCount();
      const marked = net.markedCount();
      const r = await net.traffic(['client', '--mb', '4', '--short', '20']);
      const crafted = await net.traffic(['craft']);
      assertTraffic(t, r);
      t.is(net.phantomCount() - before, 0, 'no crafted invalid packet reached the server');
      const c = lq.totals();
      t.true(c['dropped']! >= (crafted['sent'] as number), `dropped ${c['dropped']}`);
      t.true(c['packets']! > 5000);
      // Both transfers' packets in both directions carry the connmark of their connection.
      t.true(net.markedCount() - marked > 5000, `marked ${net.markedCount() - marked}`);

      // Kill: each worker exits holding its batch after 1500 more packets, mid-transfer.
      lq.crashAfter(0, 1500);
      lq.crashAfter(1, 1500);
      const bulk = await net.traffic(['bulk', '--mb', '8'], 30000);
      lq.crashAfter(0, -1); // disarm the queue that carried no transfer
      lq.crashAfter(1, -1);
      t.is(bulk['bytes'], bulk['expected'], `the transfer completed with every byte: ${JSON.stringify(bulk)} ${JSON.stringify(lq.counters())} ${JSON.stringify(lq.recoveries)} ${errors.join('; ')}`);
      await lq.settled();
      t.true(lq.recoveries.length >= 1, 'a worker died and was recovered');
      t.log(`killed mid-transfer: ${lq.recoveries.map((x) => `queue ${x.queue} (exit ${x.exitCode}, recovered ${x.report?.recovered})`).join(', ')}; ` +
        `8 MiB in ${(bulk['seconds'] as number).toFixed(2)} s`);
      // And the replacement still decides: another short exchange passes.
      const again = await net.traffic(['client', '--mb', '0.5', '--short', '2']);
      assertTraffic(t, again);
    } finally {
      await lq.stop();
    }
    const inv = checkInvariants(table);
    t.deepEqual(inv.invariants.filter((x) => !x.ok), [], 'table invariants after the kill and the stop');
  });
}
