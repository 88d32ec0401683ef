/**
 * The rules for virtmem's private files and directories, in one place: a directory virtmem
 * keeps state in must not be writable by anyone but its owner (who could otherwise plant
 * definitions, sockets or links in it), a secret (the API token) must not be readable by
 * everyone, and files made by a child process (QEMU) are made under an owner-only umask.
 * Like ssh with a key file of loose mode, virtmem refuses rather than warns: a warning scrolls
 * by, and the damage (a planted definition, a leaked token) is done by then.
 */
import type { Stats } from 'node:fs';
import { stat } from 'node:fs/promises';

/** A file or directory's mode lets others in where only the owner belongs. */
export class LoosePermissionsError extends Error {
  readonly code = 'LOOSE_PERMISSIONS' as const;
  constructor(message: string) {
    super(message);
    this.name = 'LoosePermissionsError';
  }
}

const octal = (mode: number): string => `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;

/** Whether the owner of `st` is someone this process may trust with its state: itself or root. */
function trustedOwner(st: Stats): boolean {
  const uid = process.geteuid?.() ?? 0;
  return st.uid === uid || st.uid === 0;
}

/**
 * Why the directory `st` (at `path`) is unfit to hold virtmem's state, or null when it is fit:
 * writable by its group or others (sticky or not), or owned by another user than this one or
 * root. Pure.
 */
export function looseDirReason(path: string, st: Stats): string | null {
  if (!st.isDirectory()) return `${path} is not a directory`;
  if ((st.mode & 0o022) !== 0) {
    return `${path} is writable by ${(st.mode & 0o002) !== 0 ? 'everyone' : 'its group'} (mode ${octal(st.mode)}): others could plant definitions, sockets or links in it; run \`chmod go-w ${path}\``;
  }
  if (!trustedOwner(st)) return `${path} belongs to uid ${st.uid}, not to this user or root; its owner could change what virtmem reads from it`;
  return null;
}

/**
 * Refuse a state directory (or one of its subdirectories) that others could write into. A
 * directory that does not exist yet passes: virtmem creates it owner-only.
 * @throws LoosePermissionsError naming the directory, its mode and the fix.
 */
export async function checkPrivateDir(path: string): Promise<void> {
  let st: Stats;
  try {
    st = await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const why = looseDirReason(path, st);
  if (why) throw new LoosePermissionsError(`refusing to use state directory: ${why}`);
}

/**
 * Why the secret file `st` (at `path`) is unfit, or null: readable by everyone, writable by
 * anyone but its owner, or owned by another user than this one or root. Group read is allowed
 * (0640: a scraper's group may read the token, as Prometheus's credentials_file does). Pure.
 */
export function looseSecretReason(path: string, st: Stats): string | null {
  if ((st.mode & 0o004) !== 0) return `${path} is readable by everyone (mode ${octal(st.mode)}); run \`chmod o-rwx ${path}\``;
  if ((st.mode & 0o022) !== 0) return `${path} is writable by others (mode ${octal(st.mode)}); run \`chmod go-w ${path}\``;
  if (!trustedOwner(st)) return `${path} belongs to uid ${st.uid}, not to this user or root`;
  return null;
}

/**
 * Run `fn` (synchronous) with the process umask set to `mask`, and restore it before anything
 * else can run. For a child process: spawn() forks synchronously, so the child inherits `mask`
 * and keeps it after exec (QEMU then creates its sockets, pidfile and logs owner-only), while
 * the parent's umask is back before any other JavaScript runs. fs calls already queued on
 * libuv's thread pool during those microseconds get the stricter mask, never a looser one.
 */
export function withUmask<T>(mask: number, fn: () => T): T {
  const old = process.umask(mask);
  try {
    return fn();
  } finally {
    process.umask(old);
  }
}
