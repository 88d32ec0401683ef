/**
 * The README's test command runs every test file and nothing else: `npm test` hands node --test the
 * files dist/test/DIR/NAME.test.js (a shell glob), so a test file anywhere else would never run,
 * and a helper module taken for a test file could wait for ever (cli-worker.js reads stdin: the
 * CI run that took every .js under dist/test for a test did not finish in 90 minutes).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ROOT } from '../helpers/cli.js';

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]);
}

test('npm test runs the files dist/test/*/*.test.js, and every test file sits where that glob finds it', () => {
  const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  assert.match(scripts.test!, /node --test .*dist\/test\/\*\/\*\.test\.js$/);
  const tests = walk(join(ROOT, 'test')).filter((f) => f.endsWith('.test.ts')).map((f) => relative(join(ROOT, 'test'), f));
  assert.ok(tests.length > 50, `found only ${tests.length} test files`);
  const misplaced = tests.filter((f) => f.split('/').length !== 2);
  assert.deepEqual(misplaced, [], 'test files the glob dist/test/*/*.test.js does not reach');
});

test('no helper or fixture module is named like a test file', () => {
  const named = walk(join(ROOT, 'test')).filter((f) => /\.test\.ts$/.test(f) && /\/(helpers|fixtures)\//.test(f));
  assert.deepEqual(named, []);
});
