/**
 * Markdown tables of a bench report, for bench/README.md:
 *   node dist/bench/markdown.js bench/results/bench-full.json
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fmt, type BenchReport } from './run.js';

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export function markdown(r: BenchReport): string {
  const out: string[] = [];
  const ceil = (xs: { workers: number; rate: number }[]): string => xs.length === 0 ? 'not measured' : xs.map((x) => `${x.workers}w ${(x.rate / xs[0]!.rate).toFixed(2)}x`).join(', ');
  out.push(`${r.quick ? 'Quick' : 'Full'} bench: ${r.machine.cpus} CPUs (${r.machine.model}), node ${r.machine.node}, median of ${r.runs} runs after a warm-up, ${r.seconds} s in all. ` +
    `Machine scaling ceiling (pure compute, no shared memory) at the start: ${ceil(r.scaling)}; at the end: ${ceil(r.scalingEnd)}.`);
  out.push('');
  out.push(table(['workload', 'tracker', 'workers', 'median', 'min', 'max', 'unit', 'extra'], r.workloads.map((w) => {
    const extra: string[] = [];
    if (w['p99BatchUs'] !== undefined) extra.push(`p99 batch ${w['p99BatchUs']} µs`);
    if (w['earlyDrops'] !== undefined) extra.push(`early drops ${w['earlyDrops']}, drops ${w['drops']}, ASSURED lost ${w['assuredLost']}`);
    return [w.name, w.tracker, String(w.workers), fmt(w.rate), fmt(w.min), fmt(w.max), w.unit, extra.join('; ')];
  })));
  out.push('');
  out.push(table(['workload', 'workers', 'ours', '× Map (1 thread)', '× sharedmap (same workers)'], r.ratios.map((x) =>
    [x.workload, String(x.workers), fmt(x.ours), x.vsMap === null ? 'n/a' : x.vsMap.toFixed(2), x.vsSharedmap === null ? 'n/a' : x.vsSharedmap.toFixed(2)])));
  if (r.lookup.length) {
    out.push('');
    out.push(table(['entries', 'hash + find /s', 'find only /s', 'plain JS walk /s', 'native C loop /s (measured, cc -O2)', 'find only ÷ C'], r.lookup.map((l) =>
      [String(l.entries), fmt(l.hashAndFind), fmt(l.findOnly), fmt(l.plainWalk), l.nativeReference === null ? 'not measured' : fmt(l.nativeReference), l.nativeReference === null ? 'n/a' : (l.findOnly / l.nativeReference).toFixed(2)])));
  }
  if (r.experiments.length) {
    out.push('');
    out.push(table(['experiment', 'A', 'B', 'A', 'B', 'A ÷ B', 'unit'], r.experiments.map((e) =>
      [e.name, e.a, e.b, e.rateA === null ? 'pending' : fmt(e.rateA), e.rateB === null ? 'pending' : fmt(e.rateB), e.ratio === null ? 'pending' : e.ratio.toFixed(2), e.unit])));
  }
  out.push('');
  out.push(`Memory: ${r.memory.bytesPerConnection} bytes per connection; a table for 1,000,000 connections: ${(r.memory.tableBytesAt1M / 2 ** 20).toFixed(1)} MiB` +
    (r.memory.sharedmapBytesPerConnection ? `; sharedmap baseline: ${r.memory.sharedmapBytesPerConnection} bytes per connection.` : '.'));
  return out.join('\n') + '\n';
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node dist/bench/markdown.js bench/results/bench-full.json\n');
    process.exitCode = 2;
  } else {
    process.stdout.write(markdown(JSON.parse(readFileSync(file, 'utf8')) as BenchReport));
  }
}
