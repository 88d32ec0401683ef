/**
 * Locks across processes, fair and bounded: a domain's job lock (every mutation of a domain runs
 * under it, so two invocations at once never lose a change) and a guest's monitor turn
 * (context.ts). Read-only queries do not take the job lock.
 *
 * The lock is a file created with O_EXCL holding the holder's pid and start time (pid reuse
 * safe); a lock whose holder died is taken over. Waiters queue in arrival order: each leaves a
 * ticket beside the lock, `NAME.lock@<arrival>-<pid>-<n>` (the arrival is CLOCK_MONOTONIC in
 * nanoseconds, one clock for every process on the host; '@' is in no domain name, so tickets of
 * one lock never match another's), and only the first ticket tries to take the lock. A newcomer
 * never overtakes a waiter: polling with backoff did, and starved old waiters until their bound
 * (9 of 1,425 setmem calls failed that way under 20 clients). Waiters wake when the directory
 * changes (inotify through fs.watch) and on a short poll in case a change was missed. A ticket
 * whose process died is removed by the next in line; a first ticket that leaves a free lock
 * untaken for HEAD_GRACE_MS (its process is stopped) is passed over.
 */
import { linkSync, readdirSync, unlinkSync, watch, type FSWatcher } from 'node:fs';
import { access, link, readFile, readdir, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { VirtError } from '../../domain/errors.js';
import { LOCK_WAIT_MS, seconds, stoppedBy } from '../bounds.js';
import { isProcessAlive, readProcStat } from './host-process.js';

export interface LockOptions {
  /** Bound on the wait (default LOCK_WAIT_MS). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** What the lock guards, for the time-out message (default "state change lock", libvirt's words). */
  what?: string;
}

/** A held lock; `release()` is idempotent. */
export interface HeldLock {
  release(): Promise<void>;
}

/** A waiter looks again at least this often when no change of the directory woke it... */
const POLL_MS = 250;
/** ... and this often when there is no inotify to wake it. */
const POLL_UNWATCHED_MS = 50;
/** Whether the first waiter's or the holder's process died is looked at no more often than this. */
const LIVENESS_MS = 250;
/** A free lock the first waiter has not taken for this long is open to the next ones. */
const HEAD_GRACE_MS = 2_000;

let selfStartTicks: number | undefined;
async function ownStartTicks(): Promise<number> {
  if (selfStartTicks === undefined) selfStartTicks = (await readProcStat(process.pid))?.startTicks ?? 0;
  return selfStartTicks;
}

/** Tickets of one process are told apart by this counter. */
let ticketCount = 0;

/** This process's stamp file per lock directory (see ownStamp), made once: callers at once share the making. */
const stamps = new Map<string, Promise<string>>();
/** The stamps made, removed at exit. */
const madeStamps = new Set<string>();

/**
 * This process's stamp in `dir`: a file holding our pid and start time, made once, that every
 * lock and ticket we take is a hard link of. Linking it into place (link fails when the name
 * exists, as O_EXCL does) means nobody ever reads a lock or ticket without its pid: a waiter
 * took a just-created, still empty lock file for a dead holder's and removed it, and two
 * processes then held the lock (a setmem --config lost under load in CI). The name carries the
 * start time too, so a later process with the same pid never rewrites a dead one's stamp (which
 * a dead holder's lock, the same inode, would then show as alive). Removed when the process
 * exits; those of killed processes are removed by the next process that makes its own.
 */
function ownStamp(dir: string): Promise<string> {
  let p = stamps.get(dir);
  if (!p) {
    p = makeStamp(dir);
    stamps.set(dir, p);
    p.catch(() => stamps.delete(dir)); // the next caller tries again
  }
  return p;
}

async function makeStamp(dir: string): Promise<string> {
  const start = await ownStartTicks();
  const path = join(dir, `.stamp-${process.pid}-${start}`);
  await unlink(path).catch(() => {});
  await writeFile(path, `${process.pid} ${start}\n`, { mode: 0o600, flag: 'wx' });
  if (madeStamps.size === 0) process.once('exit', () => { for (const f of madeStamps) { try { unlinkSync(f); } catch { /* gone already */ } } });
  madeStamps.add(path);
  void pruneStamps(dir, path);
  return path;
}

/** Removes the stamps of processes that are gone (killed before they could). Never throws. */
async function pruneStamps(dir: string, mine: string): Promise<void> {
  for (const n of await readdir(dir).catch(() => [] as string[])) {
    const m = /^\.stamp-([0-9]+)-/.exec(n);
    if (!m || join(dir, n) === mine) continue;
    // By pid alone: a stamp of a reused pid stays (harmless), a live process's never goes.
    if (!(await isProcessAlive(Number(m[1])).catch(() => true))) await unlink(join(dir, n)).catch(() => {});
  }
}

/** Creates `path` as a link of our stamp; false when it exists. */
async function createStamped(path: string): Promise<boolean> {
  try {
    await link(await ownStamp(dirname(path)), path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/**
 * The uncontended case, synchronously: nobody in line and the lock free, taken with two system
 * calls on the local lock directory (no thread-pool round trips on the hot path of a change).
 * False when someone waits or holds it: the caller queues.
 */
function takeIfFree(stamp: string, path: string): boolean {
  const base = basename(path);
  const prefix = `${base}@`;
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return false;
  }
  if (names.some((n) => n.startsWith(prefix))) return false;
  try {
    linkSync(stamp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/** Whether the pid-stamped file names a process that is gone; false when the file vanished. */
async function holderGone(path: string): Promise<boolean> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return false; // vanished meanwhile: simply look again
  }
  const [pidText, startText] = text.trim().split(' ');
  const pid = Number(pidText);
  // Lock files are linked into place whole (createStamped): one without a pid is damaged, stale.
  if (!Number.isInteger(pid) || pid <= 0) return true;
  return !(await isProcessAlive(pid, startText ? Number(startText) : undefined));
}

async function holderPid(path: string): Promise<string> {
  return (await readFile(path, 'utf8').catch(() => '')).split(' ')[0] || 'unknown';
}

/** The tickets waiting for the lock whose file name is `base`, first in line first. */
async function queue(dir: string, base: string): Promise<string[]> {
  const prefix = `${base}@`;
  return (await readdir(dir).catch(() => [] as string[])).filter((n) => n.startsWith(prefix)).sort();
}

/** Wakes a waiter when a file of its lock changes, or after a poll interval; never throws. */
class Waker {
  #watcher: FSWatcher | null = null;
  #changed = false;
  #wake: (() => void) | null = null;

  /** Watches `dir` for the lock file `base` and its tickets. */
  constructor(dir: string, base: string) {
    try {
      this.#watcher = watch(dir, { persistent: false }, (_event, file) => { if (!file || file.startsWith(base)) this.#poke(); });
      this.#watcher.on('error', () => { this.#watcher?.close(); this.#watcher = null; });
    } catch {
      this.#watcher = null; // no inotify instance left: polling alone still works
    }
  }

  #poke(): void {
    this.#changed = true;
    this.#wake?.();
  }

  /** Resolves on a change since the last call, after `ms`, or when `signal` aborts. */
  async next(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.#changed) { this.#changed = false; return; }
    await new Promise<void>((resolve) => {
      const done = (): void => { clearTimeout(t); signal?.removeEventListener('abort', done); this.#wake = null; resolve(); };
      const t = setTimeout(done, Math.max(1, ms));
      signal?.addEventListener('abort', done, { once: true });
      this.#wake = done;
    });
    this.#changed = false;
  }

  /** How long to sleep when nothing wakes the waiter. */
  get pollMs(): number {
    return this.#watcher ? POLL_MS : POLL_UNWATCHED_MS;
  }

  close(): void {
    this.#watcher?.close();
  }
}

function heldLock(path: string): HeldLock {
  let released = false;
  return {
    // Synchronous: the lock is free before the caller's next step (a change answered right
    // after its release, then the same client's next change, finds it free, not still held).
    release: async () => {
      if (released) return;
      released = true;
      try { unlinkSync(path); } catch { /* removed already (taken over as stale) */ }
    },
  };
}

/**
 * The lock at `path` if it is free and nobody waits for it, at once; else null (never waits).
 * For periodic work that can do without it this round.
 */
export async function tryLock(path: string): Promise<HeldLock | null> {
  return takeIfFree(await ownStamp(dirname(path)), path) ? heldLock(path) : null;
}

/**
 * Acquire the lock at `path`, in turn behind the waiters that came first, waiting at most
 * `timeoutMs` (default LOCK_WAIT_MS).
 * @throws VirtError TIMEOUT naming the holder when the turn does not come in time; TIMEOUT or
 *   ABORTED when `signal` ends the wait (bounds.ts stoppedBy)
 */
export async function acquireLock(path: string, opts: LockOptions = {}): Promise<HeldLock> {
  const boundMs = opts.timeoutMs ?? LOCK_WAIT_MS;
  const deadline = Date.now() + boundMs;
  const what = opts.what ?? 'state change lock';
  const arrival = process.hrtime.bigint();
  const { signal } = opts;
  if (signal?.aborted) throw stoppedBy(signal.reason, `waiting for the ${what}`);
  const dir = dirname(path);
  const base = basename(path);
  // Nobody in line: take it now if it is free.
  if (takeIfFree(await ownStamp(dir), path)) return heldLock(path);

  const mine = `${base}@${arrival.toString().padStart(20, '0')}-${process.pid}-${++ticketCount}`;
  const ticket = join(dir, mine);
  const waker = new Waker(dir, base);
  let freeSince: number | null = null;
  let livenessAt = 0;
  try {
    await createStamped(ticket);
    for (;;) {
      const line = await queue(dir, base);
      // Removed by someone who took our process for dead (it is not): back in line, same place.
      if (!line.includes(mine)) { await createStamped(ticket); continue; }
      const first = line[0]!;
      // A process dies rarely: whether it did is read from /proc now and then, not at every wake.
      const lookAtLiveness = Date.now() - livenessAt >= LIVENESS_MS;
      if (lookAtLiveness) livenessAt = Date.now();
      if (lookAtLiveness && first !== mine && (await holderGone(join(dir, first)))) { await unlink(join(dir, first)).catch(() => {}); continue; }
      const free = await access(path).then(() => false, () => true);
      if (!free) {
        freeSince = null;
        // Only the first in line takes over a dead holder's lock: two at once could remove the
        // lock the other has just taken.
        if (lookAtLiveness && first === mine && (await holderGone(path))) { await unlink(path).catch(() => {}); continue; }
      } else {
        freeSince ??= Date.now();
        if (first === mine || Date.now() - freeSince > HEAD_GRACE_MS) {
          if (await createStamped(path)) return heldLock(path);
          continue;
        }
      }
      if (signal?.aborted) throw stoppedBy(signal.reason, `cannot acquire ${what} (held by pid ${await holderPid(path)})`);
      const left = deadline - Date.now();
      if (left <= 0) {
        const ahead = line.indexOf(mine);
        throw new VirtError(
          'TIMEOUT',
          `Timed out during operation: cannot acquire ${what} (held by pid ${await holderPid(path)}) within ${seconds(boundMs)}` +
            (ahead > 0 ? `; ${ahead} more call${ahead === 1 ? ' was' : 's were'} waiting ahead of this one` : ''),
        );
      }
      await waker.next(Math.min(waker.pollMs, left), signal);
    }
  } finally {
    waker.close();
    await unlink(ticket).catch(() => {});
  }
}

/** Run `fn` under the lock at `path`. @throws as acquireLock, and what `fn` throws */
export async function withLock<T>(path: string, fn: () => Promise<T>, opts?: LockOptions): Promise<T> {
  const lock = await acquireLock(path, opts);
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
