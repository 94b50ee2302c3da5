/** The README's examples run as written, and print what their comments say. */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Run the first ```js block under `heading` and compare its output with its `// expected` comments. */
function runExample(t: import('ava').ExecutionContext, heading: string, name: string): string {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const at = readme.indexOf(heading);
  t.true(at >= 0, `README has a "${heading}" section`);
  const m = /```js\n([\s\S]*?)```/.exec(readme.slice(at));
  t.truthy(m, `README has a js example under "${heading}"`);
  const code = m![1]!;
  const expected = [...code.matchAll(/console\.log\([^;]*;\s*\/\/\s*(.+)$/gm)].map((x) => x[1]!.trim());
  t.true(expected.length >= 1);
  // Inside the package, so `import 'conntrack-sab'` resolves to this package (self-reference).
  const file = new URL(`../${name}`, import.meta.url);
  writeFileSync(file, code);
  const out = execFileSync(process.execPath, [fileURLToPath(file)], { encoding: 'utf8', timeout: 60_000 });
  t.deepEqual(out.trim().split('\n'), expected);
  return code;
}

test('README embedding example runs and prints what it promises', (t) => {
  runExample(t, '## Embedding', 'readme-example.mjs');
});

test('README many-threads example runs with 1514-byte frames and prints what it promises', (t) => {
  const code = runExample(t, '## Many threads', 'readme-threads.mjs');
  t.regex(code, /new Uint8Array\(1514\)/, 'the example uses full-size frames');
});
