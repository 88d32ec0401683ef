import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireLock, withLock } from '../../src/driver/native/lock.js';
import { writeFileAtomic } from '../../src/util/atomic-file.js';
import { VirtError } from '../../src/domain/errors.js';

test('a held lock makes the next taker wait, then it gets it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  const order: string[] = [];
  const first = await acquireLock(path);
  const second = withLock(path, async () => { order.push('second'); });
  await new Promise((r) => setTimeout(r, 50));
  order.push('first-release');
  await first.release();
  await second;
  assert.deepEqual(order, ['first-release', 'second']);
});

test('waiting is bounded: TIMEOUT names the holder', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  const held = await acquireLock(path);
  await assert.rejects(acquireLock(path, { timeoutMs: 100 }), (e: unknown) => e instanceof VirtError && e.code === 'TIMEOUT' && e.message.includes(String(process.pid)));
  await held.release();
});

test('a lock left by a dead process is taken over', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  await writeFile(path, '4194300 1\n');
  const l = await acquireLock(path, { timeoutMs: 1000 });
  assert.match(await readFile(path, 'utf8'), new RegExp(`^${process.pid} `));
  await l.release();
});

test('atomic writes leave no temporary files and are owner-only', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'aw-'));
  const path = join(dir, 'x.json');
  await writeFileAtomic(path, 'one');
  await writeFileAtomic(path, 'two');
  assert.equal(await readFile(path, 'utf8'), 'two');
  assert.deepEqual(await readdir(dir), ['x.json']);
  const { stat } = await import('node:fs/promises');
  assert.equal((await stat(path)).mode & 0o777, 0o600);
});
