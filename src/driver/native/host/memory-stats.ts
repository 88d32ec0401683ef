/**
 * The node memory statistics libvirt reports (virHostMemGetStats on Linux): from /proc/meminfo
 * for the whole host (total, free, buffers, cached), from nodeN/meminfo for one NUMA node
 * (total, free), values in KiB, in the file's order. Pure.
 */
import { parseMeminfo } from '../../memory/host-memory.js';
import type { NodeMemoryStat } from '../../node-api.js';
import { stripNodePrefix } from './numa-nodes.js';

/** meminfo line -> libvirt's field (VIR_NODE_MEMORY_STATS_TOTAL, _FREE, _BUFFERS, _CACHED). */
const FIELDS: ReadonlyMap<string, string> = new Map([['MemTotal', 'total'], ['MemFree', 'free'], ['Buffers', 'buffers'], ['Cached', 'cached']]);

/**
 * libvirt's statistics from a meminfo text: host-wide (`wholeHost`) four of them, per node
 * two (a node's meminfo has no Buffers or Cached line; libvirt stops after the first two).
 * Pure; an empty list when the text has none of the lines.
 */
export function memoryStatsFromMeminfo(text: string, wholeHost: boolean): NodeMemoryStat[] {
  const want = wholeHost ? 4 : 2;
  const out: NodeMemoryStat[] = [];
  for (const [name, bytes] of parseMeminfo(stripNodePrefix(text))) {
    const field = FIELDS.get(name);
    if (field === undefined) continue;
    out.push({ field, valueKiB: bytes / 1024 });
    if (out.length >= want) break;
  }
  return out;
}
