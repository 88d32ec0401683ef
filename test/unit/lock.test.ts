import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp as makeTemp, rm, writeFile, readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireLock, withLock } from '../../src/driver/native/lock.js';
import { writeFileAtomic } from '../../src/util/atomic-file.js';
import { VirtError } from '../../src/domain/errors.js';
import { BoundReached } from '../../src/driver/bounds.js';
import { readProcStat } from '../../src/driver/native/host-process.js';
import { until } from '../helpers/poll.js';

const LOCK_MODULE = new URL('../../src/driver/native/lock.js', import.meta.url).href;

/** What a directory holds besides this process's own stamp (lock.ts ownStamp: it stays while the process lives). */
async function leftovers(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => !n.startsWith(`.stamp-${process.pid}-`));
}

/** Temporary directories, removed after the tests. */
const temps: string[] = [];
after(() => Promise.all(temps.map((d) => rm(d, { recursive: true, force: true }))));
async function mkdtemp(prefix: string): Promise<string> {
  const d = await makeTemp(prefix);
  temps.push(d);
  return d;
}

test('a held lock makes the next taker wait, then it gets it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  const order: string[] = [];
  const first = await acquireLock(path);
  const second = withLock(path, async () => { order.push('second'); });
  await until('the second taker is in line', async () => (await readdir(dir)).filter((n) => n.startsWith('d.lock@')).length, (n) => n === 1, () => {}, 10_000);
  order.push('first-release');
  await first.release();
  await second;
  assert.deepEqual(order, ['first-release', 'second']);
  assert.deepEqual(await leftovers(dir), [], 'no lock file and no ticket left behind');
});

test('waiting is bounded: TIMEOUT names the holder and the bound', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  const held = await acquireLock(path);
  await assert.rejects(acquireLock(path, { timeoutMs: 100 }), (e: unknown) =>
    e instanceof VirtError && e.code === 'TIMEOUT' && e.message.includes(`cannot acquire state change lock (held by pid ${process.pid}) within 0.1 s`));
  await held.release();
  assert.deepEqual(await leftovers(dir), [], 'the ticket of the waiter that gave up is gone');
});

test('a lock left by a dead process is taken over', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  await writeFile(path, '4194300 1\n');
  const l = await acquireLock(path, { timeoutMs: 1000 });
  assert.match(await readFile(path, 'utf8'), new RegExp(`^${process.pid} `));
  await l.release();
});

test('waiters in other processes get the lock in the order they came', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  const out = join(dir, 'order.txt');
  const held = await acquireLock(path);
  const children: Array<Promise<number | null>> = [];
  const N = 6;
  for (let i = 0; i < N; i++) {
    const script = `
      import { acquireLock } from ${JSON.stringify(LOCK_MODULE)};
      import { appendFileSync } from 'node:fs';
      const l = await acquireLock(${JSON.stringify(path)}, { timeoutMs: 60000 });
      appendFileSync(${JSON.stringify(out)}, '${i}\\n');
      await l.release();`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(new Promise((resolve) => child.once('exit', resolve)));
    // The next one starts only when this one is in line, so the order of arrival is known.
    await until(`waiter ${i} in line`, async () => (await readdir(dir)).filter((n) => n.startsWith('d.lock@')).length, (n) => n === i + 1, () => {}, 30_000);
  }
  await held.release();
  assert.deepEqual(await Promise.all(children), Array(N).fill(0));
  assert.deepEqual((await readFile(out, 'utf8')).trim().split('\n'), Array.from({ length: N }, (_, i) => String(i)));
});

test('in one process too, many waiters are served in the order they came', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  const held = await acquireLock(path);
  const order: number[] = [];
  const waiters: Array<Promise<void>> = [];
  // A waiter's place is the moment it called, so calls made one after the other are in order
  // even when their tickets appear in another order.
  for (let i = 0; i < 20; i++) waiters.push(withLock(path, async () => { order.push(i); }));
  await until('all in line', async () => (await readdir(dir)).filter((n) => n.startsWith('d.lock@')).length, (n) => n === 20, () => {}, 10_000);
  await held.release();
  await Promise.all(waiters);
  assert.deepEqual(order, Array.from({ length: 20 }, (_, i) => i));
});

test('the ticket of a waiter that died does not hold up the line', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  // First in line, but its process (pid 4194300, beyond pid_max) is gone.
  await writeFile(join(dir, 'd.lock@00000000000000000001-4194300-1'), '4194300 1\n');
  const l = await acquireLock(path, { timeoutMs: 10_000 });
  await l.release();
  assert.deepEqual(await leftovers(dir), []);
});

test('a first waiter that leaves a free lock untaken (its process stopped) is passed over', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  const stopped = spawn('sleep', ['60'], { stdio: 'ignore' });
  try {
    const st = await readProcStat(stopped.pid!);
    await writeFile(join(dir, 'd.lock@00000000000000000001-' + stopped.pid + '-1'), `${stopped.pid} ${st!.startTicks}\n`);
    const l = await acquireLock(path, { timeoutMs: 20_000 });
    await l.release();
  } finally {
    stopped.kill('SIGKILL');
  }
});

test('a caller\'s bound ends the wait with TIMEOUT naming the lock, its holder and that bound; another abort is ABORTED', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  const held = await acquireLock(path);
  const bounded = new AbortController();
  const p = acquireLock(path, { signal: bounded.signal });
  setTimeout(() => bounded.abort(new BoundReached('virtmemd answers a request within 10 s')), 50);
  await assert.rejects(p, (e: unknown) => e instanceof VirtError && e.code === 'TIMEOUT'
    && e.message === `Timed out during operation: cannot acquire state change lock (held by pid ${process.pid}) (virtmemd answers a request within 10 s)`);
  const plain = new AbortController();
  const q = acquireLock(path, { signal: plain.signal });
  setTimeout(() => plain.abort(), 50);
  await assert.rejects(q, (e: unknown) => e instanceof VirtError && e.code === 'ABORTED');
  await held.release();
  assert.deepEqual(await leftovers(dir), []);
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

test('a lock file is never seen without its holder\u2019s pid, so no waiter takes a new lock for a dead one', async () => {
  // A waiter first in line reads the lock file to see whether its holder died, and removes a file
  // without a pid. Were the file created empty and written after, a read in between would find it
  // empty: the waiter removed a live lock and both held it.
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  let reads = 0;
  let empty = 0;
  let done = false;
  const reader = (async () => {
    while (!done) {
      const text = await readFile(path, 'utf8').catch(() => null);
      if (text === null) continue;
      reads++;
      if (!/^\d+ \d+\n$/.test(text)) empty++;
    }
  })();
  for (let i = 0; i < 500; i++) {
    const l = await acquireLock(path);
    // Held across a turn of the event loop, so the reader's reads can land while it is.
    await new Promise((r) => setTimeout(r, 0));
    await l.release();
  }
  done = true;
  await reader;
  assert.ok(reads > 0, 'the reader saw the lock held at least once');
  assert.equal(empty, 0, `${empty} of ${reads} reads found the lock file without a pid`);
  assert.deepEqual((await leftovers(dir)).filter((n) => n !== 'd.lock'), [], 'no other stamp and no ticket left behind');
});

test('a process\u2019s stamp goes with it; one a killed process left is removed by the next', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  const path = join(dir, 'd.lock');
  // A process that takes the lock and exits leaves nothing.
  const script = `
    import { acquireLock } from ${JSON.stringify(LOCK_MODULE)};
    const l = await acquireLock(${JSON.stringify(path)}, { timeoutMs: 60000 });
    await l.release();`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'inherit'] });
  assert.equal(await new Promise((resolve) => child.once('exit', resolve)), 0);
  assert.deepEqual(await readdir(dir), [], 'the exited process removed its stamp');
  // One left by a killed process (pid 4194300, beyond pid_max) goes when the next process makes its own.
  await writeFile(join(dir, '.stamp-4194300-1'), '4194300 1\n');
  await (await acquireLock(path)).release();
  await until('the dead process\u2019s stamp is removed', () => leftovers(dir), (l) => l.length === 0, () => {}, 10_000);
});

test('the first locks a process takes in a directory, many at once, all work (one stamp, made once)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lk-'));
  // Twenty different locks at the same moment: each needs the process's stamp in this directory.
  await Promise.all(Array.from({ length: 20 }, (_, i) => withLock(join(dir, `d${i}.lock`), async () => {})));
  assert.deepEqual(await leftovers(dir), []);
  assert.equal((await readdir(dir)).length, 1, 'one stamp of this process');
});
