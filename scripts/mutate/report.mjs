#!/usr/bin/env node
// Summarise Stryker results (mutation-testing-report-schema JSON: reports/stryker-incremental*.json
// or reports/mutation/mutation.json): score per file and every surviving or uncovered mutant
// with its line and replacement, for docs/mutation.md.
//   node scripts/mutate/report.mjs [--merge OUT.json] FILE.json ...
// --merge writes the union of the inputs' mutants as one incremental file (reports/stryker-incremental.json).
import { readFileSync, writeFileSync } from 'node:fs';

const args = process.argv.slice(2);
let merge = null;
const inputs = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--merge') merge = args[++i];
  else inputs.push(args[i]);
}
if (inputs.length === 0) {
  console.error('usage: report.mjs [--merge OUT.json] FILE.json ...');
  process.exit(2);
}
let base = null;
const files = {};
for (const f of inputs) {
  const r = JSON.parse(readFileSync(f, 'utf8'));
  base ??= r;
  // Runs over line ranges of one file each hold part of its mutants: keep them all.
  for (const [path, f] of Object.entries(r.files)) {
    if (files[path]) files[path] = { ...f, mutants: [...files[path].mutants, ...f.mutants] };
    else files[path] = f;
  }
}
if (merge) writeFileSync(merge, JSON.stringify({ ...base, files }));
const killedLike = new Set(['Killed', 'Timeout']);
let tk = 0, ts = 0, tn = 0, te = 0;
const rows = [];
const survivors = [];
for (const [path, f] of Object.entries(files).sort()) {
  const lines = f.source.split('\n');
  let k = 0, s = 0, n = 0, e = 0;
  for (const m of f.mutants) {
    if (killedLike.has(m.status)) k++;
    else if (m.status === 'Survived' || m.status === 'NoCoverage') {
      s++;
      const l = m.location.start.line;
      survivors.push({ path, line: l, mutator: m.mutatorName, status: m.status, code: (lines[l - 1] ?? '').trim(), replacement: (m.replacement ?? '').replace(/\s+/g, ' ') });
    } else if (m.status === 'CompileError' || m.status === 'RuntimeError') e++;
    else n++; // Ignored, Pending
  }
  tk += k; ts += s; tn += n; te += e;
  rows.push(`| ${path} | ${k + s} | ${k} | ${s} | ${k + s ? ((100 * k) / (k + s)).toFixed(1) : '-'} % |`);
}
console.log('| file | mutants tested | killed (incl. timeouts) | survived | score |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(r);
console.log(`| **total** | ${tk + ts} | ${tk} | ${ts} | **${tk + ts ? ((100 * tk) / (tk + ts)).toFixed(1) : '-'} %** |`);
if (te || tn) console.log(`\n(${te} compile/runtime errors and ${tn} ignored/pending not counted)`);
console.log('\nSurvivors:\n');
for (const v of survivors) console.log(`- ${v.path}:${v.line} ${v.mutator}${v.status === 'NoCoverage' ? ' (no coverage)' : ''}: \`${v.code.slice(0, 110)}\` → \`${v.replacement.slice(0, 80)}\``);
