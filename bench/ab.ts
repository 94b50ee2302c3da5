/**
 * Paired A/B of two builds in one process, on CPU time: how the per-thread figures of issue 13
 * were measured on a machine too busy for wall-clock comparisons.
 *
 *   node dist/bench/ab.js BASE_DIST [NEW_DIST] [--rounds 5] [--only hot,zones,flush] [--flush-n 100000]
 *
 * BASE_DIST / NEW_DIST are `dist/` folders of two builds (e.g. `git archive <commit> | tar -x -C
 * /tmp/base && (cd /tmp/base && ln -s $PWD/node_modules && npx tsc)`; NEW_DIST defaults to this
 * build). Both are loaded here; each gets its own copy of the packet loop (so the call sites'
 * type feedback is not shared), they alternate, and every run is timed with process.cpuUsage
 * (a descheduled thread does not count). Prints the medians and the per-round ratios. Repeat in
 * a few processes: the JIT's inlining differs from one process to the next.
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { distModuleUrl, importBuild, median, takeOption } from './stats.js';

interface Build {
  Table: { create(o: { max: number }): { clock: number } };
  Conntrack: new (t: unknown) => { frame(...a: number[] | unknown[]): unknown; beginBatch(): void; endBatch(): void; close(): void };
  Ops: new (t: unknown) => { flush(f: { zone?: number }): number; close(): void };
  W: { T0: number; ZONE_A: number; hotFrames(n: number): { fs: Frames; establish(k: number): [number, number]; burst(k: number): [number, number] }; zoneFrames(n: number): Frames };
  F: { IX_OFF: number; IX_LEN: number; IX_NOW: number; IX_ZONE: number; IX_WORDS: number; LT_RAW: number };
}
interface Frames { ix: Int32Array; bytes: Uint8Array; count: number }
type Loop = (b: Build, ct: InstanceType<Build['Conntrack']>, fs: Frames, from: number, to: number, repeat: number) => number;

// One source, compiled once per build: separate functions, separate feedback.
const LOOP_SRC = `return function loop(b, ct, fs, from, to, repeat) {
  const ix = fs.ix, bytes = fs.bytes, F = b.F;
  let n = 0;
  const c0 = process.cpuUsage();
  for (let r = 0; r < repeat; r++) {
    ct.beginBatch();
    for (let i = from; i < to; i++) {
      const x = i * F.IX_WORDS;
      ct.frame(F.LT_RAW, bytes, ix[x + F.IX_OFF], ix[x + F.IX_LEN], ix[x + F.IX_NOW], ix[x + F.IX_ZONE]);
      if ((++n & 31) === 0) { ct.endBatch(); ct.beginBatch(); }
    }
    ct.endBatch();
  }
  const c = process.cpuUsage(c0);
  return n / ((c.user + c.system) / 1e6);
}`;

async function load(dist: string): Promise<Build> {
  return { ...(await importBuild(dist)), Ops: (await import(distModuleUrl(dist, 'src/ops/ops.js'))).CtOps } as Build;
}


async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, def: string): string => takeOption(args, name, def);
  const rounds = Number(opt('--rounds', '5'));
  const flushN = Number(opt('--flush-n', '100000'));
  const only = opt('--only', 'hot,zones').split(',');
  const here = fileURLToPath(new URL('../', import.meta.url));
  // Absolute folders: ab-scale's worker threads build their module URLs from them too.
  const [baseDir, newDir = here] = args.map((a) => resolve(a));
  if (!baseDir || !Number.isInteger(rounds) || rounds < 1) {
    process.stderr.write('usage: node dist/bench/ab.js BASE_DIST [NEW_DIST] [--rounds N] [--only hot,zones,flush] [--flush-n N]\n');
    process.exitCode = 2;
    return;
  }
  const names = ['base', 'new'] as const;
  const runs: Record<string, Record<string, () => number[]>> = {};
  for (const [k, dir] of [['base', baseDir], ['new', newDir]] as const) {
    const b = await load(dir);
    const loop = new Function('process', LOOP_SRC)(process) as Loop;
    const hf = b.W.hotFrames(2);
    const ht = b.Table.create({ max: 65536 });
    ht.clock = b.W.T0;
    const hct = new b.Conntrack(ht);
    loop(b, hct, hf.fs, ...hf.establish(0), 1);
    const [h0, h1] = hf.burst(0);
    const N = 20000;
    const zf = b.W.zoneFrames(N);
    const FN = flushN; // default: the full bench's zone size (a 20k flush is ~12 ms of CPU: noisier)
    const ff = b.W.zoneFrames(FN);
    runs[k] = {
      hot: () => [loop(b, hct, hf.fs, h0, h1, 10000)],
      zones: () => {
        const t = b.Table.create({ max: Math.ceil(2 * N * 1.05) });
        t.clock = b.W.T0;
        const ct = new b.Conntrack(t);
        const r = [loop(b, ct, zf, 0, zf.count, 1), loop(b, ct, zf, 0, zf.count, 1)];
        ct.close();
        return r;
      },
      // One zone of N connections flushed through CtOps (its zone list): entries per CPU second.
      flush: () => {
        const t = b.Table.create({ max: Math.ceil(2 * FN * 1.05) });
        t.clock = b.W.T0;
        const ct = new b.Conntrack(t);
        loop(b, ct, ff, 0, ff.count, 1);
        ct.close();
        const ops = new b.Ops(t);
        const c0 = process.cpuUsage();
        const n = ops.flush({ zone: b.W.ZONE_A });
        const c = process.cpuUsage(c0);
        ops.close();
        if (n !== FN) throw new Error(`flush removed ${n} of ${FN}`);
        return [n / ((c.user + c.system) / 1e6)];
      },
    };
  }
  const labels: Record<string, string[]> = { hot: ['hot'], zones: ['zones insert', 'zones lookup'], flush: ['zone flush (entries)'] };
  for (const w of only) {
    if (!labels[w]) throw new Error(`unknown workload ${w} (hot, zones, flush)`);
    for (const k of names) runs[k]![w]!(); // warm-up
    const vals: Record<string, number[][]> = { base: [], new: [] };
    const ratios: number[][] = [];
    for (let r = 0; r < rounds; r++) {
      const res: Record<string, number[]> = {};
      for (const k of r % 2 ? [...names].reverse() : names) res[k] = runs[k]![w]!();
      res['new']!.forEach((x, i) => {
        (ratios[i] ??= []).push(x / res['base']![i]!);
        (vals['new']![i] ??= []).push(x);
        (vals['base']![i] ??= []).push(res['base']![i]!);
      });
    }
    labels[w]!.forEach((label, i) => {
      process.stdout.write(`${label}: base ${(median(vals['base']![i]!) / 1e6).toFixed(2)}M/s, new ${(median(vals['new']![i]!) / 1e6).toFixed(2)}M/s (CPU time), ` +
        `new/base ${median(ratios[i]!).toFixed(2)} (per round ${ratios[i]!.map((x) => x.toFixed(2)).join(' ')})\n`);
    });
  }
}

await main();
