/**
 * Atomic file replacement for the guest cache: write a temp file beside the target, fsync it,
 * rename it over the target, fsync the directory. A reader sees the old file or the new one,
 * never a half-written one, also after a crash.
 */

import { randomBytes } from 'node:crypto';
import { chmod, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Atomically replaces `path` with `data` (file mode `mode`). Throws the fs error on failure. */
export async function writeFileAtomic(path: string, data: Buffer | string, mode: number): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let renamed = false;
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await chmod(tmp, mode); // open()'s mode is filtered by the umask
    await rename(tmp, path);
    renamed = true;
    await syncDir(dirname(path));
  } finally {
    if (!renamed) await rm(tmp, { force: true });
  }
}

/** fsync a directory so a rename in it is durable. Best effort: some filesystems refuse. */
async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Durability of the rename is a nicety here; the cache can always be rebuilt.
  }
}
