// A destroy-hook module for startGc({ hookModule }) (test/gc-handle.test.ts): loaded inside the
// GC thread, it reports each removed entry's id and reason on a BroadcastChannel.
import { BroadcastChannel } from 'node:worker_threads';
import type { Chains, DestroyHook } from '../../src/table/chains.js';
import { E_ID } from '../../src/table/layout.js';
import type { ConntrackTable } from '../../src/table/table.js';

export const HOOK_CHANNEL = 'ctsab-gc-hook-test';

export function createDestroyHook(table: ConntrackTable, _chains: Chains): DestroyHook {
  const ch = new BroadcastChannel(HOOK_CHANNEL);
  ch.unref();
  return (e, why) => ch.postMessage({ id: table.i32[e + E_ID]!, why });
}
