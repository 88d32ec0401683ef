/**
 * Parser for HMP `info mtree -f` (QEMU softmmu/memory.c, mtree_print_flatview): the rendered
 * ("flat") view of each address space. Lines of a view look like
 *
 *   0000000000100000-000000001fffffff (prio 0, ram): pc.ram @0000000000100000
 *
 * with the end inclusive, the type one of ram / rom / romd / ramd / i/o (optionally prefixed
 * `nv-`), and `@offset` the offset into the named memory region. Pure.
 */
import { VirtError } from '../domain/errors.js';

/** QEMU's memory region types as `info mtree` prints them. */
export type MtreeType = 'ram' | 'rom' | 'romd' | 'ramd' | 'i/o';

/** One range of a flat view. */
export interface FlatRange {
  start: bigint;
  /** Last byte (inclusive), as QEMU prints it. */
  end: bigint;
  priority: number;
  type: MtreeType;
  nonVolatile: boolean;
  /** Name of the memory region that answers here (for RAM: its RAM block's region). */
  region: string;
  /** Offset of `start` within that region. */
  offset: bigint;
}

const RANGE_RE = /^\s+([0-9a-f]+)-([0-9a-f]+) \(prio (-?\d+), (nv-)?(ram|rom|romd|ramd|i\/o)\): (.*?)(?: @([0-9a-f]+))?\s*$/;

/**
 * The flat view of address space `space` (default "memory", the CPUs' and devices' view of
 * guest-physical memory), in address order.
 * @throws VirtError OPERATION_FAILED when the output has no view for that address space.
 */
export function parseFlatView(text: string, space = 'memory'): FlatRange[] {
  const lines = text.replace(/\r/g, '').split('\n');
  let inView = false;
  let found = false;
  const out: FlatRange[] = [];
  for (const line of lines) {
    if (/^FlatView #\d+/.test(line)) {
      if (found) break;
      inView = false;
      continue;
    }
    const as = /^ AS "(.*)", root: /.exec(line);
    if (as) {
      if (as[1] === space) inView = found = true;
      continue;
    }
    if (!inView) continue;
    const m = RANGE_RE.exec(line);
    if (!m) continue;
    out.push({
      start: BigInt(`0x${m[1]}`),
      end: BigInt(`0x${m[2]}`),
      priority: Number(m[3]),
      type: m[5] as MtreeType,
      nonVolatile: m[4] !== undefined,
      region: m[6]!,
      offset: m[7] === undefined ? 0n : BigInt(`0x${m[7]}`),
    });
  }
  if (!found) throw new VirtError('OPERATION_FAILED', `QEMU's 'info mtree -f' output has no flat view of address space "${space}"`);
  return out.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
}
