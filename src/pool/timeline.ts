/**
 * A replay's timeline, for measuring (issue 13): with CTSAB_TIMELINE=1 in the environment, each
 * thread writes a line to stderr at each phase of `replay` (module loaded, table created, pool
 * started, first batch, end...):
 *
 *   ctsab-timeline THREAD WALL_MS CPU_MS WHAT
 *
 * WALL_MS is epoch ms (comparable across threads), CPU_MS the thread's own CPU time so far
 * (/proc/thread-self/schedstat, Linux; NaN elsewhere). At exit the main thread adds one line per
 * OS thread of the process (V8's compiler and GC threads, libuv). `bench/replay-timeline.ts`
 * turns the lines into a table. Off (the default), mark() is one test of a constant.
 */
import { readdirSync, readFileSync, writeSync } from 'node:fs';
import { isMainThread, threadId } from 'node:worker_threads';

export const TIMELINE = process.env['CTSAB_TIMELINE'] === '1';

/** This thread's CPU time in ms (ns on CPU, from the scheduler), NaN when unknown. */
export function threadCpuMs(): number {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6;
  } catch {
    return NaN;
  }
}

const who = isMainThread ? 'main' : `w${threadId}`;
let started = false;

function line(wall: number, cpu: number, what: string): void {
  writeSync(2, `ctsab-timeline ${who} ${wall.toFixed(1)} ${cpu.toFixed(1)} ${what}\n`);
}

/** Record that this thread reached `what` (no-op unless CTSAB_TIMELINE=1). */
export function mark(what: string): void {
  if (!TIMELINE) return;
  if (!started) {
    started = true;
    line(performance.timeOrigin, 0, 'thread start'); // the thread's (the process's) own start
  }
  line(performance.timeOrigin + performance.now(), threadCpuMs(), what);
}

if (TIMELINE && isMainThread) {
  process.on('exit', () => {
    mark('exit');
    // Every OS thread's CPU: the workers (gone by now) are not listed; V8's and libuv's are.
    try {
      for (const t of readdirSync('/proc/self/task')) {
        const comm = readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim().replace(/\s+/g, '_');
        const ns = Number(readFileSync(`/proc/self/task/${t}/schedstat`, 'utf8').split(' ')[0]);
        writeSync(2, `ctsab-timeline os-thread ${t === String(process.pid) ? 'main' : t} ${(ns / 1e6).toFixed(1)} ${comm}\n`);
      }
    } catch {
      // not Linux
    }
  });
}
