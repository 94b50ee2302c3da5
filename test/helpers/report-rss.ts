/**
 * Preload (`node --import ./dist/test/helpers/report-rss.js ...`): on exit, write the process's
 * peak resident set size to stderr as `maxrss_kb=N` (getrusage's ru_maxrss, worker threads
 * included), so a test can bound a child's memory.
 */
import { writeSync } from 'node:fs';

process.on('exit', () => {
  writeSync(2, `maxrss_kb=${process.resourceUsage().maxRSS}\n`);
});
