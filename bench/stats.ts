/** Small helpers shared by the bench scripts: medians and `--name value` options. */

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
