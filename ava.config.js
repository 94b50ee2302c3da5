// Tests are written in TypeScript and compiled by `npm run build` (run by `npm test`).
export default {
  files: ['dist/test/**/*.test.js'],
  timeout: '5m',
  workerThreads: false,
  concurrency: 2,
};
