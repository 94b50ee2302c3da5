/** `npm run chaos -- --seconds N [--discipline noref|refcount] [--seed S]`: one long chaos run. */
import { runChaos } from './chaos.js';

const args = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : def;
};
const seconds = Number(opt('seconds', '60'));
const discipline = opt('discipline', 'noref');
if (!Number.isFinite(seconds) || seconds <= 0 || (discipline !== 'noref' && discipline !== 'refcount')) {
  console.error('usage: chaos-cli --seconds N [--discipline noref|refcount] [--seed S]');
  process.exit(2);
}
const r = await runChaos({ seconds, discipline, seed: Number(opt('seed', '12345')), log: (s) => console.log(s) });
const { invariants, ...figures } = r;
console.log(JSON.stringify(figures, null, 1));
console.log(invariants);
// A lost DESTROY passes only as one of the checker's counted drops, each drop only after it had
// not polled for the stall time (the README's promise; see chaos.ts FastOverrun).
const bad = r.wedges + r.missing + r.killedLive + r.duplicateDestroys + Math.abs(r.lostDestroys - r.fastDropped) +
  r.fastOverrunsUnexplained + r.wrongfulTableFull + (r.invariantsOk ? 0 : 1);
process.exit(bad === 0 ? 0 : 1);
