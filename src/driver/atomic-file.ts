/**
 * Atomic, owner-only persistent writes: write a temporary file next to the target, fsync it,
 * rename it over the target, fsync the directory. A reader sees the old or the new content,
 * never a torn one, even if the process dies half way.
 */
import { open, rename, unlink, mkdir } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** Create a directory (and parents) readable only by its owner. */
export async function ensurePrivateDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o700 });
}

/**
 * Replace `path` with `data` atomically (mode 0600).
 * @throws the underlying fs error; the target is untouched in that case.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  // Make the rename itself durable.
  const dh = await open(dir, 'r');
  try { await dh.sync(); } finally { await dh.close(); }
}
