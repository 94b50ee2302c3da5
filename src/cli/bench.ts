/**
 * `conntrack-sab bench`: the multicore throughput bench (bench/run.ts), with its options passed
 * through. Loaded on demand so the other commands do not pay for it.
 */
import { usageLine } from './common.js';
export interface BenchCliOptions {
  json?: boolean;
  quick?: boolean;
  inline?: boolean;
  workers?: string;
  runs?: string;
  only?: string;
  out?: string;
  ovs?: string;
}

/** Returns the exit code (0 done, 2 bad options). */
export async function runBenchCli(opts: BenchCliOptions): Promise<number> {
  // Checked here too, so that usage errors read as every command's do.
  if (opts.workers !== undefined && !/^\s*\d+\s*(,\s*\d+\s*)*$/.test(opts.workers)) {
    process.stderr.write(usageLine('bench', `--workers: bad worker count "${opts.workers}" (a comma-separated list of integers)`));
    return 2;
  }
  if (opts.runs !== undefined && !/^\s*\d+\s*$/.test(opts.runs)) {
    process.stderr.write(usageLine('bench', `--runs expects an integer, got "${opts.runs}"`));
    return 2;
  }
  const argv: string[] = [];
  if (opts.quick) argv.push('--quick');
  if (opts.json) argv.push('--json');
  if (opts.inline) argv.push('--inline');
  if (opts.workers !== undefined) argv.push('--workers', opts.workers);
  if (opts.runs !== undefined) argv.push('--runs', opts.runs);
  if (opts.only !== undefined) argv.push('--only', opts.only);
  if (opts.out !== undefined) argv.push('--out', opts.out);
  if (opts.ovs !== undefined) argv.push('--ovs', opts.ovs);
  const { benchMain } = await import(new URL('../../bench/run.js', import.meta.url).href) as typeof import('../../bench/run.js');
  return benchMain(argv);
}
