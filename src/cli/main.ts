#!/usr/bin/env node
/** The `conntrack-sab` command line. */
import { Command, CommanderError, Option } from 'commander';
import { runReplay } from './replay-cmd.js';

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
  .action(async (capture: string, opts: Record<string, unknown>) => {
    process.exitCode = await runReplay(capture, opts);
  });

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
