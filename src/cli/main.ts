#!/usr/bin/env node
/** The `conntrack-sab` command line. */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { runReplay } from './replay-cmd.js';
import { runStressCli } from './stress.js';
import { runBenchCli } from './bench.js';
import { registerTableCommands } from './table-cmds.js';
import { registerLiveCommands } from './nfqueue.js';
import { EXIT_DATA, EXIT_USAGE, usageLine, VERSION } from './common.js';

const program = new Command();
program
  .name('conntrack-sab')
  .description('Linux-netfilter-style connection tracking on a SharedArrayBuffer table')
  .version(`conntrack-sab ${VERSION}`, '-V, --version', 'print the version')
  // Usage errors are reported below as one line and a pointer to --help, not the whole help.
  .configureOutput({ outputError: () => {} })
  .exitOverride();

/** Integer option values: a usage error unless the whole value is a number. */
function intOpt(name: string): (v: string) => number {
  return (v: string) => {
    if (!/^\d+$/.test(v.trim())) throw new InvalidArgumentError(`${name} expects an integer, got "${v}"`);
    return Number(v);
  };
}

function collect(value: string, previous: string[]): string[] {
  return previous.concat([value]);
}

program
  .command('replay')
  .description('replay a capture (pcap or pcapng, gzip too) through a fresh table')
  .argument('<capture>', "capture file, FIFO or '-' for stdin")
  .option('--per-packet <file>', 'write one JSON object per packet (JSON Lines)')
  .option('--sysctl <name=value>', 'set a sysctl (kernel name, with or without net.netfilter.)', collect, [])
  .option('-L, --dump', 'print the final table like conntrack -L')
  .option('-S, --stats', 'print statistics like conntrack -S')
  .option('-E, --event', 'print the event stream like conntrack -E')
  .addOption(new Option('-o, --output <fmt>', 'output format for -L/-E: extended, timestamp, id, json (comma separated)'))
  .option('--json', 'JSON lines as they go: events (with -E), entries, then a summary (counts, statistics)')
  .option('--max <n>', 'nf_conntrack_max of the table', intOpt('--max'))
  .option('--head <n>', 'with -L: print only the first n entries (the count says how many there are)', intOpt('--head'))
  .option('--no-progress', 'never show a progress bar (shown only on a terminal, for replays over a second)')
  .option('--workers <n>', 'decide packets on n threads sharing the table: n - 1 workers and this thread (n workers with -E, NAT or --dispatch free; default 1: this thread alone)', intOpt('--workers'))
  .addOption(new Option('--dispatch <mode>', 'with --workers: flow (decisions as on one thread) or free').choices(['flow', 'free']).default('flow'))
  .addOption(new Option('--checksum <mode>', 'offload: accept checksums left to offload (pseudo-header sums), as the kernel does; strict: invalid').choices(['offload', 'strict']))
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
  .option('--only <list>', 'sections: hot,zones,mixed,flood,lookup,replay,exp,nat,live')
  .option('--out <dir>', 'where to write the JSON and SVG (default bench/results)')
  .option('--ovs <path>', "Open vSwitch's ovstest: its test-conntrack benchmarks run interleaved with ours")
  .action(async (opts: Record<string, unknown>) => {
    process.exitCode = await runBenchCli(opts);
  });

// list, count, metrics, snapshot, delete: on a snapshot file or a replayed capture.
registerTableCommands(program);
// nfqueue, monitor: live traffic (src/cli/nfqueue.ts).
registerLiveCommands(program);

/** The subcommand named on the command line (for error lines), null when none is. */
function commandName(): string | null {
  const known = new Set(program.commands.map((c) => c.name()));
  for (const a of process.argv.slice(2)) {
    if (known.has(a)) return a;
    if (!a.startsWith('-')) return null;
  }
  return null;
}

if (process.argv.length <= 2) {
  process.stderr.write(usageLine(null, `missing command (${program.commands.map((c) => c.name()).join(', ')})`));
  process.exitCode = EXIT_USAGE;
} else {
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version') {
        process.exitCode = 0;
      } else {
        // Commander's message starts with "error: ".
        const msg = err.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ');
        process.stderr.write(usageLine(err.code === 'commander.unknownCommand' ? null : commandName(), msg));
        process.exitCode = EXIT_USAGE;
      }
    } else {
      process.stderr.write(`conntrack-sab${commandName() ? ' ' + commandName() : ''}: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = EXIT_DATA;
    }
  }
}
