#!/usr/bin/env node
// Compare fixtures with the kernel's recording in full (src/ops/oracle.ts compareFixtureDir):
// per-packet verdicts, the conntrack -E stream, the final conntrack -L table.
//   npm run build && node scripts/oracle/compare.mjs [fixture-dir-or-name ...]
// With no argument: every folder of test/fixtures/kernel. Exit 1 if anything differs.
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const lib = join(repo, 'dist/src/ops/oracle.js');
if (!existsSync(lib)) {
  console.error('compare.mjs: build first (npm run build)');
  process.exit(2);
}
const { compareFixtureDir, formatDifference } = await import(lib);
const root = process.env.CTSAB_FIXTURES ?? join(repo, 'test/fixtures/kernel');
const args = process.argv.slice(2);
const dirs = args.length > 0
  ? args.map((a) => (existsSync(a) ? a : join(root, a)))
  : readdirSync(root, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => join(root, d.name)).sort();
let bad = 0;
for (const dir of dirs) {
  const r = compareFixtureDir(dir);
  const name = dir.split('/').filter(Boolean).pop();
  const ok = r.differences.length === 0 && r.captureError === null && r.labelled === r.packets;
  if (!ok) bad++;
  console.log(`${ok ? 'ok  ' : 'DIFF'} ${name}: ${r.agree}/${r.packets} packets, ${r.events} events, ${r.destroys} destroys, ` +
    `${r.tableEntries} table entries (dump ${r.dumpWindowMs[0]}..${r.dumpWindowMs[1]} ms after the last packet)`);
  if (r.captureError) console.log(`     capture: ${r.captureError}`);
  for (const d of r.differences.slice(0, 20)) console.log(`     ${formatDifference(d)}`);
  if (r.differences.length > 20) console.log(`     ... ${r.differences.length - 20} more`);
}
process.exit(bad > 0 ? 1 : 0);
