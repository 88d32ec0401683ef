/**
 * The thin I/O shell under the host readers: read and write one small kernel file (sysfs,
 * procfs) and turn an errno into the words libvirt prints for it (strerror), so an error
 * reads as virsh's. Everything above this file is pure or uses only these three functions.
 */
import { readFile, readdir, writeFile } from 'node:fs/promises';

/** Reads, writes and lists kernel files; a test gives its own to play a kernel. */
export interface HostFiles {
  read(path: string): Promise<string>;
  /** Writes into an existing file (never creates one: a missing sysfs file is an error). */
  write(path: string, text: string): Promise<void>;
  list(dir: string): Promise<string[]>;
}

export const hostFiles: HostFiles = {
  read: (path) => readFile(path, 'utf8'),
  write: (path, text) => writeFile(path, text, { flag: 'r+' }),
  list: (dir) => readdir(dir),
};

/** glibc's strerror text for the errno codes a kernel file answers with. */
const STRERROR: Record<string, string> = {
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EIO: 'Input/output error',
  ENOMEM: 'Cannot allocate memory',
  EACCES: 'Permission denied',
  EBUSY: 'Device or resource busy',
  EINVAL: 'Invalid argument',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
  ERANGE: 'Numerical result out of range',
  EOPNOTSUPP: 'Operation not supported',
};

/** The strerror words for a failed fs call (Node's own message for codes not listed). */
export function strerror(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return (e?.code && STRERROR[e.code]) || e?.message || String(err);
}

/** Whether a failed fs call failed because the file is not there. */
export const isMissing = (err: unknown): boolean => (err as NodeJS.ErrnoException)?.code === 'ENOENT';
