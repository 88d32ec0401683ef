/**
 * Atomic persistent writes: write a temporary file next to the target, fsync it, rename it over
 * the target, fsync the directory. A reader sees the old content or the new, never a torn one,
 * even if the process dies half way. Used for definitions, run records and the guest cache.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { checkPrivateDir } from './private-files.js';

/**
 * Create a directory (and parents) readable only by its owner; one that already exists must
 * not be writable by others.
 * @throws LoosePermissionsError for an existing directory others can write into; the fs error.
 */
export async function ensurePrivateDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o700 });
  await checkPrivateDir(path);
}

/**
 * Replace `path` with `data` atomically, with file mode `mode` (default owner-only). With
 * `durable: false` the fsyncs are left out: still all-or-nothing for readers and across a crash
 * of the writer, but not across a crash of the host (for state that does not outlive one).
 * @throws the underlying fs error; the target is untouched in that case.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string, mode = 0o600, opts: { durable?: boolean } = {}): Promise<void> {
  const durable = opts.durable ?? true;
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let renamed = false;
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      if (durable) await fh.sync();
    } finally {
      await fh.close();
    }
    await chmod(tmp, mode); // open()'s mode is filtered by the umask
    await rename(tmp, path);
    renamed = true;
    if (durable) await syncDir(dirname(path));
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
    // The rename itself is atomic either way; only its durability across a crash is at stake.
  }
}
