// ava settings for `npm run mutate` (scripts/mutate/fast-tests.sh): the fast unit and fixture
// files only, in worker threads (cheaper to start than processes), one at a time.
import base from './ava.config.js';

export default { ...base, workerThreads: true, concurrency: 1, timeout: '60s' };
