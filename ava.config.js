// Tests are written in TypeScript and compiled by `npm run build` (run by `npm test`).
export default {
  files: ['dist/test/**/*.test.js'],
  timeout: '5m',
  workerThreads: false,
  // One test file at a time: several files spawn worker threads, and the machine has 2 cores.
  concurrency: 1,
};
