/**
 * Per-domain job lock across processes. Every mutation of a domain (definition or live state)
 * runs under its lock, so two invocations at once never corrupt a definition. Waiting for a lock
 * is bounded; a lock whose holder died is taken over.
 *
 * The lock is a file created with O_EXCL holding the holder's pid and start time (pid reuse
 * safe). Read-only queries do not take it.
 */
import { open, readFile, unlink } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { VirtError } from '../../domain/errors.js';
import { isProcessAlive, readProcStat } from './host-process.js';

export interface LockOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A held lock; `release()` is idempotent. */
export interface HeldLock {
  release(): Promise<void>;
}

let selfStartTicks: number | undefined;
async function ownStartTicks(): Promise<number> {
  if (selfStartTicks === undefined) selfStartTicks = (await readProcStat(process.pid))?.startTicks ?? 0;
  return selfStartTicks;
}

/** Returns true when the lock file names a holder that is no longer alive. */
async function isStale(path: string): Promise<boolean> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return false; // vanished meanwhile: simply retry
  }
  const [pidText, startText] = text.trim().split(' ');
  const pid = Number(pidText);
  // A half-written lock file (holder died between create and write) is stale too.
  if (!Number.isInteger(pid) || pid <= 0) return true;
  return !(await isProcessAlive(pid, startText ? Number(startText) : undefined));
}

/**
 * Acquire the lock at `path`, waiting at most `timeoutMs` (default 30 s).
 * @throws VirtError TIMEOUT when another live process holds it for longer; ABORTED on signal.
 */
export async function acquireLock(path: string, opts: LockOptions = {}): Promise<HeldLock> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let pauseMs = 5;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      const fh = await open(path, 'wx', 0o600);
      try {
        await fh.writeFile(`${process.pid} ${await ownStartTicks()}\n`);
      } finally {
        await fh.close();
      }
      let released = false;
      return {
        release: async () => {
          if (released) return;
          released = true;
          await unlink(path).catch(() => {});
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (await isStale(path)) {
      await unlink(path).catch(() => {});
      continue;
    }
    if (Date.now() >= deadline) {
      const holder = (await readFile(path, 'utf8').catch(() => '')).split(' ')[0] || 'unknown';
      throw new VirtError(
        'TIMEOUT',
        `Timed out during operation: cannot acquire state change lock (held by pid ${holder})`,
      );
    }
    try {
      await delay(Math.min(pauseMs, Math.max(1, deadline - Date.now())), undefined, { signal: opts.signal });
    } catch {
      throw new VirtError('ABORTED', 'operation aborted while waiting for the domain lock');
    }
    pauseMs = Math.min(pauseMs * 2, 100);
  }
}

/** Run `fn` under the lock at `path`. */
export async function withLock<T>(path: string, fn: () => Promise<T>, opts?: LockOptions): Promise<T> {
  const lock = await acquireLock(path, opts);
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
