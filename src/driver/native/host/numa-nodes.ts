/**
 * NUMA nodes as the kernel lists them in /sys/devices/system/node: which nodes exist (libnuma,
 * and so libvirt, take the nodeN entries there) and each node's meminfo, whose lines are
 * /proc/meminfo's with a "Node N " prefix. Parsers are pure; readers are thin.
 */
import { join } from 'node:path';
import { parseMeminfo } from '../../memory/host-memory.js';
import { hostFiles, type HostFiles } from './sysfs.js';

/** Node ids from the entries of /sys/devices/system/node ("node0", "node12"), ascending. Pure. */
export function nodeIdsFromEntries(names: readonly string[]): number[] {
  return names.flatMap((n) => (/^node(\d+)$/.exec(n) ? [Number(n.slice(4))] : [])).sort((a, b) => a - b);
}

/**
 * A nodeN/meminfo text as /proc/meminfo text: each line loses its first two words ("Node 0 "),
 * as libvirt's virHostMemGetStatsLinux skips them. Pure.
 */
export function stripNodePrefix(text: string): string {
  return text.split('\n').map((l) => (l.startsWith('Node ') ? l.replace(/^Node \S+ /, '') : l)).join('\n');
}

/** Fields of a nodeN/meminfo text in KiB (the file says "kB" and means KiB). Pure. */
export function parseNodeMeminfoKiB(text: string): Map<string, number> {
  const bytes = parseMeminfo(stripNodePrefix(text));
  return new Map([...bytes].map(([k, v]) => [k, v / 1024]));
}

export const nodeDir = (sysRoot: string, node: number): string => join(sysRoot, 'devices/system/node', `node${node}`);

/** The ids of the host's NUMA nodes; empty when the kernel has no NUMA directory. */
export async function listNodeIds(sysRoot: string, files: HostFiles = hostFiles): Promise<number[]> {
  return nodeIdsFromEntries(await files.list(join(sysRoot, 'devices/system/node')).catch(() => []));
}

/**
 * One node's meminfo text.
 * @throws the fs error (ENOENT for a node that does not exist)
 */
export function readNodeMeminfo(sysRoot: string, node: number, files: HostFiles = hostFiles): Promise<string> {
  return files.read(join(nodeDir(sysRoot, node), 'meminfo'));
}
