/** The README's embedding example runs as written, and prints what its comments say. */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

test('README embedding example runs and prints what it promises', (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Embedding'));
  const m = /```js\n([\s\S]*?)```/.exec(section);
  t.truthy(m, 'README has a js example under "## Embedding"');
  const code = m![1]!;
  const expected = [...code.matchAll(/console\.log\([^;]*;\s*\/\/\s*(.+)$/gm)].map((x) => x[1]!.trim());
  t.true(expected.length >= 2);
  // Inside the package, so `import 'conntrack-sab'` resolves to this package (self-reference).
  const file = new URL('../readme-example.mjs', import.meta.url);
  writeFileSync(file, code);
  const out = execFileSync(process.execPath, [fileURLToPath(file)], { encoding: 'utf8' });
  t.deepEqual(out.trim().split('\n'), expected);
});
