#!/usr/bin/env node
/** The `conntrack-sab` command line. */
import { Command, CommanderError, Option } from 'commander';
import { runReplay } from './replay-cmd.js';
import { runStressCli } from './stress.js';
import { runBenchCli } from './bench.js';
import { registerTableCommands } from './table-cmds.js';

const program = new Command();
program
  .name('conntrack-sab')
  .description('Linux-netfilter-style connection tracking on a SharedArrayBuffer table')
  .showHelpAfterError()
  .exitOverride();

function collect(value: string, previous: string[]): string[] {
  return previous.concat([value]);
}

program
  .command('replay')
  .description('replay a capture (pcap or pcapng) through a fresh table')
  .argument('<capture>', 'capture file')
  .option('--per-packet <file>', 'write one JSON object per packet (JSON Lines)')
  .option('--sysctl <name=value>', 'set a sysctl (kernel name, with or without net.netfilter.)', collect, [])
  .option('-L, --dump', 'print the final table like conntrack -L')
  .option('-S, --stats', 'print statistics like conntrack -S')
  .option('-E, --event', 'print the event stream like conntrack -E')
  .addOption(new Option('-o, --output <fmt>', 'output format for -L/-E: extended, timestamp, id (comma separated)'))
  .option('--json', 'print one JSON object with the table, counts and statistics')
  .option('--max <n>', 'nf_conntrack_max of the table', (v) => parseInt(v, 10))
  .option('--no-progress', 'never show a progress bar')
  .option('--workers <n>', 'decide packets on n worker threads sharing the table (default 1: this thread)', (v) => parseInt(v, 10))
  .addOption(new Option('--dispatch <mode>', 'with --workers: flow (decisions as on one thread) or free').choices(['flow', 'free']).default('flow'))
  .option('--nat <rule>', 'a NAT rule in nft syntax, e.g. "ip saddr 10.0.0.0/8 snat to 203.0.113.1" (repeatable)', collect, [])
  .option('--nat-rules <file>', 'NAT rules: one per line in nft syntax (# comments), or JSON { rules, interfaces }')
  .option('-w, --write <file>', 'write the capture as translated by NAT (pcap)')
  .action(async (capture: string, opts: Record<string, unknown>) => {
    process.exitCode = await runReplay(capture, opts);
  });

program
  .command('stress')
  .description('run a concurrent insert/lookup/delete/expiry mix on one table from N threads, then check its invariants')
  .option('--workers <n>', 'worker threads (default 2)')
  .option('--seconds <s>', 'how long to run (default 10)')
  .option('--max <n>', 'nf_conntrack_max of the table (default 65536)')
  .option('--discipline <d>', 'reclamation: noref (default) or refcount')
  .option('--no-gc', 'do not run the GC worker')
  .option('--json', 'print one JSON object (ok, operations, opsPerSecond, gracePeriods, slotsRecycled, invariants)')
  .exitOverride((err) => {
    // Usage errors of this command exit with 2, like its own option checks.
    if (err.exitCode !== 0) throw new CommanderError(2, err.code, err.message);
    throw err;
  })
  .action(async (opts: Record<string, unknown>) => {
    process.exitCode = await runStressCli(opts);
  });

program
  .command('bench')
  .description('multicore throughput bench: hot, zones, mixed and flood workloads, baselines, experiments (see bench/README.md)')
  .option('--json', 'print one JSON object (workloads, baselines, experiments, ...)')
  .option('--quick', 'smaller sizes (under 2 minutes)')
  .option('--workers <list>', 'worker counts, comma separated (default 1 .. available cores)')
  .option('--inline', 'run the packet loops on the main thread (for profiling; 1 worker only)')
  .option('--runs <n>', 'measured runs per point (default 5, after a warm-up)')
  .option('--only <list>', 'sections: hot,zones,mixed,flood,lookup,exp,nat')
  .option('--out <dir>', 'where to write the JSON and SVG (default bench/results)')
  .action(async (opts: Record<string, unknown>) => {
    process.exitCode = await runBenchCli(opts);
  });

// list, count, metrics, snapshot, delete: on a snapshot file or a replayed capture.
registerTableCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode;
  } else {
    process.stderr.write(`conntrack-sab: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
