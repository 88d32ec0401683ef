/**
 * hugetlbfs mounts: where files of huge pages of each size can be made. The kernel lists every
 * mount in /proc/mounts; a hugetlbfs mount serves the page size of its pagesize= option, or the
 * host's default huge page size (Hugepagesize in /proc/meminfo) without one. Parsers are pure;
 * the mount itself is one `mount` run with an argv array.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { VirtError } from '../../../domain/errors.js';

/** "2M" / "1024M" / "1G" / "2048k" (the kernel prints M mostly) as KiB, or null. Pure. */
export function pageSizeOptionKiB(text: string): number | null {
  const m = /^(\d+)([kKmMgG])?$/.exec(text);
  if (m === null) return null;
  const scale = { k: 1, m: 1024, g: 1024 * 1024 }[(m[2] ?? 'k').toLowerCase() as 'k' | 'm' | 'g'];
  return Number(m[1]) * scale;
}

/** A path field of /proc/mounts: the kernel escapes space, tab, newline and backslash in octal. */
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Writable hugetlbfs mounts by page size (KiB), the first listed for each size. Pure.
 * @param defaultKiB the host's default huge page size, for mounts without pagesize=
 */
export function hugetlbfsMounts(mountsText: string, defaultKiB: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const line of mountsText.split('\n')) {
    const [, path, type, options] = line.split(' ');
    if (type !== 'hugetlbfs' || path === undefined || options === undefined) continue;
    const opts = options.split(',');
    if (!opts.includes('rw')) continue;
    const sizeOpt = opts.find((o) => o.startsWith('pagesize='));
    const kib = sizeOpt === undefined ? defaultKiB : pageSizeOptionKiB(sizeOpt.slice('pagesize='.length));
    if (kib !== null && !out.has(kib)) out.set(kib, unescapeMountPath(path));
  }
  return out;
}

/** The host's default huge page size in KiB from /proc/meminfo text, or null. Pure. */
export function defaultHugepageKiB(meminfo: string): number | null {
  const m = /^Hugepagesize:\s+(\d+) kB$/m.exec(meminfo);
  return m ? Number(m[1]) : null;
}

/**
 * Mounts a hugetlbfs of `pageSizeKiB` pages on `dir` (an existing, empty directory), only the
 * owner may use it. Needs root (CAP_SYS_ADMIN).
 * @throws VirtError OPERATION_FAILED with mount's own words
 */
export async function mountHugetlbfs(dir: string, pageSizeKiB: number): Promise<void> {
  try {
    await promisify(execFile)('mount', ['-t', 'hugetlbfs', '-o', `pagesize=${pageSizeKiB}K,mode=0700`, 'hugetlbfs', dir]);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new VirtError('OPERATION_FAILED', `operation failed: cannot mount hugetlbfs for ${pageSizeKiB} KiB pages on ${dir}: ${stderr || (err as Error).message}`, { cause: err });
  }
}
