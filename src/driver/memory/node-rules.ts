/**
 * The rules both drivers obey for the host's memory (freecell, freepages, allocpages,
 * node-memory-tune, nodememstats): the argument checks libvirt's client library makes before a
 * call leaves the process (virsh users see their words), what a pool resize means, and the
 * guards virtmem adds so a change the host cannot take is refused before anything is written.
 * Pure: callers bring what they read from the host.
 */
import { VirtError, invalidArg } from '../../domain/errors.js';
import { ALL_CELLS, NODE_MEMORY_PARAMETER_FIELDS, type NodeMemoryParametersUpdate } from '../node-api.js';

const UINT_MAX = 0xffff_ffff;

/**
 * virNodeGetCellsFreeMemory's own checks (libvirt-host.c), in its words.
 * @throws VirtError INVALID_ARG
 */
export function checkCellsFreeArgs(startCell: number, maxCells: number): void {
  if (maxCells <= 0) throw invalidArg('maxCells in virNodeGetCellsFreeMemory must be greater than zero');
  if (startCell < 0) throw invalidArg('startCell in virNodeGetCellsFreeMemory must be zero or greater');
}

/**
 * virNodeGetMemoryStats's own check: a cell number, or -1 for the whole host.
 * @throws VirtError INVALID_ARG
 */
export function checkStatsCell(cell: number): void {
  if (cell < 0 && cell !== ALL_CELLS) throw invalidArg(`cellNum in virNodeGetMemoryStats only accepts ${ALL_CELLS} as a negative value`);
}

/**
 * libvirt's error for a cell past the last one (virHostMemGetCellsFree, virHostMemGetFreePages,
 * virHostMemAllocPages), or null when the cell is in range.
 */
export function cellOutOfRange(startCell: number, lastCell: number): VirtError | null {
  return startCell > lastCell ? new VirtError('INVALID_ARG', `internal error: start cell ${startCell} out of range (0-${lastCell})`) : null;
}

/** libvirt's error for a page size a cell (or the host, ALL_CELLS) does not have. */
export function pageSizeUnavailable(pageSizeKiB: number, cell: number): VirtError {
  return new VirtError('INVALID_ARG', `operation failed: page size ${pageSizeKiB} is not available${cell === ALL_CELLS ? '' : ` on node ${cell}`}`);
}

/** libvirt's refusal to resize the pool of ordinary pages. */
export function systemPagesUnsupported(): VirtError {
  return new VirtError('NO_SUPPORT', "Operation not supported: system pages pool can't be modified");
}

/**
 * The size a pool is asked to have, or null when there is nothing to do (adding nothing, or
 * setting the size it has): virNumaSetPagePoolSize writes nothing then.
 */
export function poolTarget(currentCount: number, pageCount: number, add: boolean): number | null {
  if (add) return pageCount === 0 ? null : currentCount + pageCount;
  return currentCount === pageCount ? null : pageCount;
}

/** One pool resize a request makes: cell (or ALL_CELLS), from and to in pages. */
export interface PoolChange {
  cell: number;
  pageSizeKiB: number;
  fromCount: number;
  toCount: number;
}

/**
 * Why resizing the pools as `changes` says is more than the host can back, or null. Growth is
 * summed over the pools and compared with what the host has available now (`source` names
 * where that number came from); shrinking is always fine. virsh has no such check: libvirt
 * writes the count, the kernel takes what it can get (all free memory, for a count too large)
 * and the pool stays there.
 */
export function poolGrowthRefusal(changes: readonly PoolChange[], availableKiB: number | null, source: string): string | null {
  for (const c of changes) {
    if (!Number.isSafeInteger(c.toCount) || !Number.isSafeInteger(c.toCount * c.pageSizeKiB)) {
      return `refusing to size the ${c.pageSizeKiB} KiB page pool${where(c.cell)}: that many pages are more memory than any host has; nothing was changed`;
    }
  }
  const growKiB = changes.reduce((s, c) => s + Math.max(0, c.toCount - c.fromCount) * c.pageSizeKiB, 0);
  if (growKiB === 0 || availableKiB === null || growKiB <= availableKiB) return null;
  const first = changes.find((c) => c.toCount > c.fromCount)!;
  const what = changes.length === 1 ? `the ${first.pageSizeKiB} KiB page pool${where(first.cell)} from ${first.fromCount} to ${first.toCount} pages` : `${changes.length} page pools`;
  return `refusing to grow ${what}: that takes ${growKiB} KiB and the host has only ${availableKiB} KiB available (${source}); nothing was changed`;
}

const where = (cell: number): string => (cell === ALL_CELLS ? '' : ` of node ${cell}`);

/** libvirt's words for a pool the kernel filled only in part, and what virtmem did about it. */
export function partialAllocation(asked: number, got: number, undone: boolean): VirtError {
  const tail = undone ? ' (undone: every pool is back at its size before the call)' : '';
  return new VirtError('OPERATION_FAILED', `operation failed: Unable to allocate ${asked} pages. Allocated only ${got}${tail}`);
}

/**
 * Checks KSM knob values before anything is written: each an unsigned 32-bit integer (libvirt
 * sends them as VIR_TYPED_PARAM_UINT) and merge-across-nodes 0 or 1 (the kernel refuses
 * anything else, and libvirt would have written the knobs before it by then).
 * @throws VirtError INVALID_ARG naming the parameter; also when the update sets nothing.
 */
export function validateKsmUpdate(update: NodeMemoryParametersUpdate): Array<{ field: string; value: number }> {
  const out: Array<{ field: string; value: number }> = [];
  for (const [key, field] of NODE_MEMORY_PARAMETER_FIELDS) {
    const v = update[key];
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < 0 || v > UINT_MAX) throw invalidArg(`invalid argument: ${field} must be an integer from 0 to ${UINT_MAX}, not ${v}`);
    if (field === 'shm_merge_across_nodes' && v > 1) throw invalidArg(`invalid argument: ${field} must be 0 or 1, not ${v}`);
    out.push({ field, value: v });
  }
  if (out.length === 0) throw invalidArg('invalid argument: no memory parameter to set');
  return out;
}
