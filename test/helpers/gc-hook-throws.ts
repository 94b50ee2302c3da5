// A destroy-hook module whose hook throws (test/gc-handle.test.ts): the GC thread's failure after
// it started must reach stop().
import type { DestroyHook } from '../../src/table/chains.js';

export function createDestroyHook(): DestroyHook {
  return () => {
    throw new Error('destroy hook failed on purpose');
  };
}
