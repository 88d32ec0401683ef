/**
 * The host's base (system) page size. Node has no sysconf(_SC_PAGESIZE); every mapping in
 * /proc/self/smaps says "KernelPageSize: 4 kB", and the first mapping is near the top of the
 * file, so a few KiB of it are enough. The parser is pure.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';

/** The first KernelPageSize in smaps text, in KiB, or null when there is none. Pure. */
export function kernelPageSizeKiB(smaps: string): number | null {
  const m = /^KernelPageSize:\s+(\d+) kB$/m.exec(smaps);
  return m ? Number(m[1]) : null;
}

let cached: number | null = null;

/** The system page size in KiB (4 on x86), read once; 4 when smaps cannot be read. */
export async function systemPageSizeKiB(procRoot = '/proc'): Promise<number> {
  if (cached !== null && procRoot === '/proc') return cached;
  let text = '';
  const fh = await open(join(procRoot, 'self/smaps'), 'r').catch(() => null);
  if (fh) {
    try {
      const buf = Buffer.alloc(8192);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      text = buf.toString('utf8', 0, bytesRead);
    } finally {
      await fh.close();
    }
  }
  const kib = kernelPageSizeKiB(text) ?? 4;
  if (procRoot === '/proc') cached = kib;
  return kib;
}
