// Module resolve hook: `import test from 'ava'` in the test files loads ava-shim.mjs instead.
const shim = new URL('./ava-shim.mjs', import.meta.url).href;
export async function resolve(specifier, context, next) {
  if (specifier === 'ava') return { url: shim, shortCircuit: true };
  return next(specifier, context);
}
