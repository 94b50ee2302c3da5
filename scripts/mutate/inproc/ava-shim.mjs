// A minimal stand-in for ava's API (the subset the fast test files use), so that the in-process
// mutant runner (server.mjs) can register their tests once and run them again for every mutant.
// Assertions throw on failure, as ava's would fail the test.
import { isDeepStrictEqual, inspect } from 'node:util';

export const registry = [];
let currentFile = '';
export function setFile(f) { currentFile = f; }

class Fail extends Error {}
const show = (v) => inspect(v, { depth: 4, breakLength: 120 }).slice(0, 400);
function check(ok, msg, why) { if (!ok) throw new Fail(`${msg ? msg + ': ' : ''}${why}`); }

function matchesExpectation(err, exp) {
  if (exp === undefined || exp === null) return true;
  if (typeof exp === 'function') return err instanceof exp;
  if (exp.any) return true;
  if (exp.instanceOf && !(err instanceof exp.instanceOf)) return false;
  if (exp.message !== undefined) {
    const m = err?.message;
    if (typeof exp.message === 'string' && m !== exp.message) return false;
    if (exp.message instanceof RegExp && !exp.message.test(m)) return false;
    if (typeof exp.message === 'function' && !exp.message(m)) return false;
  }
  if (exp.name !== undefined && err?.name !== exp.name) return false;
  if (exp.code !== undefined && err?.code !== exp.code) return false;
  if (exp.is !== undefined && err !== exp.is) return false;
  return true;
}

function like(actual, sel) {
  if (sel === null || typeof sel !== 'object') return isDeepStrictEqual(actual, sel);
  if (actual === null || typeof actual !== 'object') return false;
  for (const k of Object.keys(sel)) if (!like(actual[k], sel[k])) return false;
  return true;
}

export function makeT(title) {
  const teardowns = [];
  const t = {
    title,
    context: {},
    teardowns,
    is: (a, b, m) => check(Object.is(a, b), m, `${show(a)} is not ${show(b)}`),
    not: (a, b, m) => check(!Object.is(a, b), m, `${show(a)} is ${show(b)}`),
    true: (a, m) => check(a === true, m, `${show(a)} is not true`),
    false: (a, m) => check(a === false, m, `${show(a)} is not false`),
    truthy: (a, m) => check(!!a, m, `${show(a)} is not truthy`),
    falsy: (a, m) => check(!a, m, `${show(a)} is not falsy`),
    assert: (a, m) => check(!!a, m, `${show(a)} is not truthy`),
    deepEqual: (a, b, m) => check(isDeepStrictEqual(a, b), m, `${show(a)} not deep-equal ${show(b)}`),
    notDeepEqual: (a, b, m) => check(!isDeepStrictEqual(a, b), m, 'deep-equal'),
    like: (a, s, m) => check(like(a, s), m, `${show(a)} not like ${show(s)}`),
    regex: (s, r, m) => check(typeof s === 'string' && r.test(s), m, `${show(s)} !~ ${r}`),
    notRegex: (s, r, m) => check(typeof s === 'string' && !r.test(s), m, `${show(s)} =~ ${r}`),
    pass: () => {},
    fail: (m) => { throw new Fail(m ?? 'fail'); },
    log: () => {},
    plan: () => {},
    timeout: () => {},
    teardown: (f) => teardowns.push(f),
    throws: (fn, exp, m) => {
      let err, threw = false;
      try { fn(); } catch (e) { err = e; threw = true; }
      check(threw, m, 'did not throw');
      check(matchesExpectation(err, exp), m, `unexpected error ${show(err)}`);
      return err;
    },
    notThrows: (fn, m) => { try { fn(); } catch (e) { throw new Fail(`${m ?? ''} threw ${show(e)}`); } },
    throwsAsync: async (p, exp, m) => {
      let err, threw = false;
      try { await (typeof p === 'function' ? p() : p); } catch (e) { err = e; threw = true; }
      check(threw, m, 'did not throw');
      check(matchesExpectation(err, exp), m, `unexpected error ${show(err)}`);
      return err;
    },
    notThrowsAsync: async (p, m) => { try { await (typeof p === 'function' ? p() : p); } catch (e) { throw new Fail(`${m ?? ''} threw ${show(e)}`); } },
  };
  return t;
}

function register(kind, title, impl, args) {
  let exec = impl;
  let name = title;
  if (impl && typeof impl === 'object' && impl.exec) {
    exec = impl.exec;
    if (impl.title) name = impl.title(title, ...args);
  }
  registry.push({ file: currentFile, title: name ?? '', exec, args, kind });
}

function test(title, impl, ...args) {
  if (typeof title !== 'string') { args.unshift(impl); impl = title; title = undefined; }
  register('test', title, impl, args);
}
test.serial = test;
test.only = test;
test.skip = (title, impl, ...args) => register('skip', title, impl, args);
test.todo = () => {};
test.failing = (title, impl, ...args) => register('failing', title, impl, args);
test.macro = (m) => (typeof m === 'function' ? { exec: m } : m);
for (const h of ['before', 'after', 'beforeEach', 'afterEach']) {
  test[h] = () => { throw new Error(`ava-shim: test.${h} is not supported; run this file with real ava`); };
  test.serial[h] = test[h];
}
export default test;
