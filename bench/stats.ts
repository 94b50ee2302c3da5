/** Small helpers shared by the bench scripts: medians, `--name value` options, build folders. */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/** The median (the mean of the two middle values for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Take `name value` out of `args` (in place) and return the value, or `def` when absent. */
export function takeOption(args: string[], name: string, def: string): string {
  const i = args.indexOf(name);
  if (i < 0) return def;
  const v = args[i + 1] ?? def;
  args.splice(i, 2);
  return v;
}

/** The file: URL of module `p` inside build folder `dist` (a relative folder is taken from the cwd). */
export function distModuleUrl(dist: string, p: string): string {
  return pathToFileURL(resolve(dist, p)).href;
}

/** The modules every paired bench loads from a build folder (callers add their own and type them). */
export async function importBuild(dist: string): Promise<Record<string, unknown>> {
  const u = (p: string): string => distModuleUrl(dist, p);
  return {
    Table: (await import(u('src/table/table.js'))).ConntrackTable,
    Conntrack: (await import(u('src/track/core.js'))).Conntrack,
    W: await import(u('bench/workloads.js')),
    F: await import(u('bench/frames.js')),
  };
}
