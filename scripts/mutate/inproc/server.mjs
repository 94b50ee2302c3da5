// In-process mutant runner (scripts/mutate/fast-tests.sh with MUTATE_INPROC=1): loads the test
// files once in this process (cwd: Stryker's sandbox, whose dist/ holds the instrumented build),
// then for each mutant id sent by client.mjs sets Stryker's active mutant
// (globalThis.__stryker__.activeMutant, which the instrumented code reads on every call) and
// runs every registered test again, stopping at the first failure. Replies:
//   'killed' | 'survived' | 'fallback' (the mutant was reached while the modules loaded, so
//   only a fresh process sees it: the client then runs real ava).
// After a killed mutant the unmutated tests run once more; if they fail (state left behind by
// the mutant) the server exits and the next request starts a fresh one.
import { createServer } from 'node:net';
import { register } from 'node:module';
import { pathToFileURL } from 'node:url';
import { unlinkSync, existsSync, writeFileSync } from 'node:fs';

const [sock, ...files] = process.argv.slice(2);
// The same titles fast-tests.sh leaves out (host capture: root, real interfaces, minutes; it
// collides with other runs' captures on a shared machine).
const EXCLUDE = ['several threads', 'rogue namespace', 'while packet workers', '100,000', 'at the same time', 'host capture'];
register(new URL('./hooks.mjs', import.meta.url));
const shim = await import(new URL('./ava-shim.mjs', import.meta.url).href);
const ns = (globalThis.__stryker__ ??= {});
delete process.env.__STRYKER_ACTIVE_MUTANT__;
ns.activeMutant = undefined;

for (const f of files) {
  shim.setFile(f);
  await import(pathToFileURL(`${process.cwd()}/dist/test/${f}.test.js`).href);
}
const tests = shim.registry.filter((r) => r.kind === 'test' && !EXCLUDE.some((x) => r.title.toLowerCase().includes(x)));
const staticIds = new Set(Object.keys(ns.mutantCoverage?.static ?? {}));

let asyncError = null;
process.on('uncaughtException', (e) => { asyncError = e; });
process.on('unhandledRejection', (e) => { asyncError = e; });

const profile = process.env.MUTATE_INPROC_PROFILE ? [] : null;
async function runAll() {
  asyncError = null;
  for (const r of tests) {
    const t = shim.makeT(r.title);
    const t0 = performance.now();
    try {
      await r.exec(t, ...r.args);
      for (const f of t.teardowns.reverse()) await f();
    } catch (e) {
      return `${r.file} › ${r.title}: ${String(e?.message ?? e).slice(0, 300)}`;
    }
    profile?.push([performance.now() - t0, `${r.file} › ${r.title}`]);
    if (asyncError) return `${r.file} › ${r.title}: async ${String(asyncError?.message ?? asyncError).slice(0, 300)}`;
  }
  return null;
}

const HIT_LIMIT = 20_000_000;
function activate(id) {
  ns.activeMutant = id;
  ns.hitCount = id === undefined ? undefined : 0;
  ns.hitLimit = HIT_LIMIT;
  if (id === undefined) delete process.env.__STRYKER_ACTIVE_MUTANT__;
  else process.env.__STRYKER_ACTIVE_MUTANT__ = id; // for worker threads the tests start
}

const base = await runAll();
if (profile) {
  for (const [ms, name] of profile.sort((a, b) => b[0] - a[0]).slice(0, 25)) console.log(ms.toFixed(0).padStart(6), name);
  process.exit(0);
}
if (base) {
  console.error(`baseline fails: ${base}`);
  process.exit(3);
}

let idle;
const arm = () => { clearTimeout(idle); idle = setTimeout(() => process.exit(0), 120_000); };
arm();
if (existsSync(sock)) unlinkSync(sock);
writeFileSync(`${sock}.pid`, String(process.pid));
const server = createServer((c) => {
  let buf = '';
  c.on('data', async (d) => {
    buf += d;
    if (!buf.endsWith('\n')) return;
    const id = JSON.parse(buf).id ?? undefined;
    arm();
    let reply;
    const t0 = performance.now();
    if (id !== undefined && staticIds.has(id)) reply = { result: 'fallback' };
    else {
      activate(id);
      const why = await runAll();
      activate(undefined);
      reply = { result: why ? 'killed' : 'survived', why };
      if (why) {
        const again = await runAll();
        if (again) reply.restart = again;
      }
    }
    c.end(JSON.stringify(reply) + '\n');
    console.log(`${id} ${reply.result} ${(performance.now() - t0).toFixed(0)} ms${reply.restart ? ' (restart)' : ''}${reply.why ? ' ' + reply.why.slice(0, 120) : ''}`);
    if (reply.restart) { server.close(); try { unlinkSync(sock); } catch {} process.exit(0); }
  });
});
server.listen(sock, () => console.log(`ready ${process.pid} ${tests.length} tests, ${staticIds.size} static mutants`));
