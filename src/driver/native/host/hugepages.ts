/**
 * Huge page pools: the sizes the kernel offers (/sys/kernel/mm/hugepages/hugepages-<N>kB) and
 * each pool's size and free pages, host-wide there or per NUMA node under
 * /sys/devices/system/node/nodeN/hugepages. Writing nr_hugepages asks the kernel to resize a
 * pool; it may get fewer pages than asked. Parsers are pure; readers and the writer are thin.
 */
import { join } from 'node:path';
import { VirtError } from '../../../domain/errors.js';
import { hostFiles, type HostFiles } from './sysfs.js';
import { nodeDir } from './numa-nodes.js';

/** The page size in KiB a "hugepages-2048kB" directory holds, or null for other names. Pure. */
export function hugepageSizeFromDirName(name: string): number | null {
  const m = /^hugepages-(\d+)kB$/i.exec(name);
  return m ? Number(m[1]) : null;
}

/**
 * A pool counter file's text ("512\n") as a number, as libvirt reads it: digits and the newline.
 * @throws VirtError INTERNAL with libvirt's words when the text is anything else
 */
export function parsePoolCount(text: string): number {
  if (!/^\d+\n$/.test(text) || !Number.isSafeInteger(Number(text.trim()))) throw new VirtError('INTERNAL', `internal error: unable to parse: ${text}`);
  return Number(text.trim());
}

/** The directory of one pool: host-wide for cell -1, else the node's. */
export function poolDir(sysRoot: string, cell: number, pageSizeKiB: number): string {
  const base = cell < 0 ? join(sysRoot, 'kernel/mm/hugepages') : join(nodeDir(sysRoot, cell), 'hugepages');
  return join(base, `hugepages-${pageSizeKiB}kB`);
}

/** Huge page sizes in KiB the host offers, ascending; empty without hugetlbfs support. */
export async function listHugepageSizesKiB(sysRoot: string, files: HostFiles = hostFiles): Promise<number[]> {
  const names = await files.list(join(sysRoot, 'kernel/mm/hugepages')).catch(() => []);
  return names.flatMap((n) => { const s = hugepageSizeFromDirName(n); return s === null ? [] : [s]; }).sort((a, b) => a - b);
}

/**
 * A pool counter: "nr_hugepages" (the pool's size), "free_hugepages", or "resv_hugepages" (free
 * pages promised to mappings that have not touched them yet; host-wide only).
 * @throws the fs error (ENOENT when the cell or the page size does not exist); VirtError when unparsable
 */
export async function readPoolCounter(sysRoot: string, cell: number, pageSizeKiB: number, counter: 'nr_hugepages' | 'free_hugepages' | 'resv_hugepages', files: HostFiles = hostFiles): Promise<number> {
  return parsePoolCount(await files.read(join(poolDir(sysRoot, cell, pageSizeKiB), counter)));
}

/**
 * Asks the kernel for a pool of `count` pages. The caller has validated the count.
 * @throws the fs error
 */
export function writePoolSize(sysRoot: string, cell: number, pageSizeKiB: number, count: number, files: HostFiles = hostFiles): Promise<void> {
  return files.write(join(poolDir(sysRoot, cell, pageSizeKiB), 'nr_hugepages'), String(count));
}
