// Stryker's per-mutant command in MUTATE_INPROC=1 mode (see server.mjs): asks this sandbox's
// server (started on first use) to run the tests with __STRYKER_ACTIVE_MUTANT__ active.
// Exit 0: survived, 1: killed (or timed out); 'fallback' runs real ava (fast-tests.sh).
import { connect } from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { openSync, readFileSync } from 'node:fs';

const files = process.argv.slice(2);
const key = createHash('sha1').update(process.cwd() + '\0' + files.join(' ')).digest('hex').slice(0, 16);
const sock = `/tmp/ctsab-mut-${key}.sock`;
const id = process.env.__STRYKER_ACTIVE_MUTANT__;
const TIMEOUT_MS = Number(process.env.MUTATE_INPROC_TIMEOUT_MS ?? 12000);

function ask() {
  return new Promise((resolve) => {
    const c = connect(sock);
    let buf = '';
    let timer;
    c.on('connect', () => {
      c.write(JSON.stringify({ id }) + '\n');
      timer = setTimeout(() => { c.destroy(); resolve({ result: 'timeout' }); }, TIMEOUT_MS);
    });
    c.on('data', (d) => { buf += d; });
    c.on('end', () => { clearTimeout(timer); try { resolve(JSON.parse(buf)); } catch { resolve({ result: 'error' }); } });
    c.on('error', () => { clearTimeout(timer); resolve({ result: 'noserver' }); });
  });
}

let r = await ask();
if (r.result === 'noserver') {
  const log = openSync(`/tmp/ctsab-mut-${key}.log`, 'a');
  const s = spawn(process.execPath, ['--max-old-space-size=1536', new URL('./server.mjs', import.meta.url).pathname, sock, ...files], { detached: true, stdio: ['ignore', log, log], env: { ...process.env, __STRYKER_ACTIVE_MUTANT__: '' } });
  s.unref();
  const t0 = Date.now();
  while (r.result === 'noserver' && Date.now() - t0 < 120000) {
    await new Promise((res) => setTimeout(res, 200));
    if (s.exitCode !== null) break;
    r = await ask();
  }
}
if (r.result === 'timeout') {
  // The server is stuck in this mutant (an endless loop): kill it; the next mutant starts another.
  try { process.kill(Number(readFileSync(`${sock}.pid`, 'utf8')), 'SIGKILL'); } catch {}
  process.exit(1);
}
if (r.result === 'killed') { console.log(r.why); process.exit(1); }
if (r.result === 'survived') process.exit(0);
// fallback (mutant reached at module load): the same tests in a fresh process that loads the
// modules with the mutant active (server.mjs, MUTATE_INPROC_ONCE); no server: real ava.
if (r.result === 'fallback' && id) {
  const once = spawnSync(process.execPath, ['--max-old-space-size=1536', new URL('./server.mjs', import.meta.url).pathname, '-', ...files],
    { stdio: 'inherit', timeout: TIMEOUT_MS * 2, env: { ...process.env, MUTATE_INPROC_ONCE: id } });
  process.exit(once.status ?? 1); // killed by the timeout: status null, a timed-out mutant
}
const res = spawnSync('sh', [new URL('../fast-tests.sh', import.meta.url).pathname], { stdio: 'inherit', env: { ...process.env, MUTATE_INPROC: '' } });
process.exit(res.status ?? 1);
