#!/usr/bin/env node
// Summarise Stryker results (mutation-testing-report-schema JSON: reports/stryker-incremental*.json
// or reports/mutation/mutation.json): score per file and every surviving or uncovered mutant
// with its line and replacement, for docs/mutation.md.
//   node scripts/mutate/report.mjs [--merge OUT.json] [--equivalent EQ.json] FILE.json ...
// --merge writes the union of the inputs' mutants as one incremental file (reports/stryker-incremental.json).
// --equivalent names survivors judged equivalent or unreachable, each with its reason:
//   [{ "file": "src/...", "line": 12, "mutator": "EqualityOperator", "replacement": "a <= b", "why": "..." }]
// (replacement: the mutant's replacement text with whitespace collapsed; mutator optional; column
// optional, Stryker's start column, for a line with several mutants of the same replacement). They
// are left out of the score (killed / (mutants - equivalent)) and listed apart.
import { readFileSync, writeFileSync } from 'node:fs';

const args = process.argv.slice(2);
let merge = null;
let eqFile = null;
const inputs = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--merge') merge = args[++i];
  else if (args[i] === '--equivalent') eqFile = args[++i];
  else inputs.push(args[i]);
}
const equivalents = eqFile ? JSON.parse(readFileSync(eqFile, 'utf8')) : [];
const eqUsed = new Set();
const norm = (x) => (x ?? '').replace(/\s+/g, ' ').trim();
function equivalentOf(path, m) {
  for (let i = 0; i < equivalents.length; i++) {
    const q = equivalents[i];
    if (q.file === path && q.line === m.location.start.line && (q.column === undefined || q.column === m.location.start.column) && (!q.mutator || q.mutator === m.mutatorName) && norm(q.replacement) === norm(m.replacement)) {
      eqUsed.add(i);
      return q;
    }
  }
  return null;
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
  // Runs over line ranges of one file each hold part of its mutants: keep them all; a mutant in
  // several inputs (a re-run of survivors) takes the result of the last one.
  const key = (m) => `${m.location.start.line}:${m.location.start.column}:${m.location.end.line}:${m.location.end.column}:${m.mutatorName}:${m.replacement}`;
  for (const [path, f] of Object.entries(r.files)) {
    if (files[path]) {
      const byKey = new Map(files[path].mutants.map((m) => [key(m), m]));
      for (const m of f.mutants) byKey.set(key(m), m);
      files[path] = { ...f, mutants: [...byKey.values()] };
    } else files[path] = f;
  }
}
if (merge) writeFileSync(merge, JSON.stringify({ ...base, files }));
const killedLike = new Set(['Killed', 'Timeout']);
let tk = 0, ts = 0, tn = 0, te = 0, tq = 0;
const rows = [];
const survivors = [];
const eqList = [];
for (const [path, f] of Object.entries(files).sort()) {
  const lines = f.source.split('\n');
  let k = 0, s = 0, n = 0, e = 0, q = 0;
  for (const m of f.mutants) {
    if (killedLike.has(m.status)) k++;
    else if ((m.status === 'Survived' || m.status === 'NoCoverage') && equivalentOf(path, m)) {
      q++;
      const l = m.location.start.line;
      eqList.push(`- ${path}:${l} ${m.mutatorName} \`${(m.replacement ?? '').replace(/\s+/g, ' ').slice(0, 60)}\`: ${equivalentOf(path, m).why}`);
    } else if (m.status === 'Survived' || m.status === 'NoCoverage') {
      s++;
      const l = m.location.start.line;
      survivors.push({ path, line: l, mutator: m.mutatorName, status: m.status, code: (lines[l - 1] ?? '').trim(), replacement: (m.replacement ?? '').replace(/\s+/g, ' ') });
    } else if (m.status === 'CompileError' || m.status === 'RuntimeError') e++;
    else n++; // Ignored, Pending
  }
  tk += k; ts += s; tn += n; te += e; tq += q;
  rows.push(`| ${path} | ${k + s + q} | ${k} | ${s} | ${q} | ${k + s ? ((100 * k) / (k + s)).toFixed(1) : '-'} % |`);
}
console.log('| file | mutants tested | killed (incl. timeouts) | survived | equivalent | score (killed / non-equivalent) |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
console.log(`| **total** | ${tk + ts + tq} | ${tk} | ${ts} | ${tq} | **${tk + ts ? ((100 * tk) / (tk + ts)).toFixed(1) : '-'} %** |`);
if (eqList.length) console.log('\nEquivalent or unreachable:\n\n' + eqList.join('\n'));
const unused = equivalents.filter((_, i) => !eqUsed.has(i));
if (unused.length) console.log(`\n(${unused.length} --equivalent entries matched no survivor: ${unused.map((u) => `${u.file}:${u.line}`).join(', ')})`);
if (te || tn) console.log(`\n(${te} compile/runtime errors and ${tn} ignored/pending not counted)`);
console.log('\nSurvivors:\n');
for (const v of survivors) console.log(`- ${v.path}:${v.line} ${v.mutator}${v.status === 'NoCoverage' ? ' (no coverage)' : ''}: \`${v.code.slice(0, 110)}\` → \`${v.replacement.slice(0, 80)}\``);
