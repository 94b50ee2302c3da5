#!/usr/bin/env node
// Joins incremental files (report.mjs --merge) and drops their Survived / NoCoverage / Timeout-free
// survivors, so the next Stryker run with that incremental file re-tests exactly those mutants
// (after tests were added), and keeps every killed result.
//   node scripts/mutate/retest.mjs OUT.json IN.json ...
import { readFileSync, writeFileSync } from 'node:fs';

const [out, ...inputs] = process.argv.slice(2);
let base = null;
const files = {};
let dropped = 0;
for (const f of inputs) {
  const r = JSON.parse(readFileSync(f, 'utf8'));
  base ??= r;
  for (const [path, x] of Object.entries(r.files)) {
    const keep = x.mutants.filter((m) => m.status !== 'Survived' && m.status !== 'NoCoverage');
    dropped += x.mutants.length - keep.length;
    files[path] = files[path] ? { ...x, mutants: [...files[path].mutants, ...keep] } : { ...x, mutants: keep };
  }
}
writeFileSync(out, JSON.stringify({ ...base, files }));
console.log(`${out}: kept ${Object.values(files).reduce((n, x) => n + x.mutants.length, 0)} results, ${dropped} survivors to re-test`);
