/**
 * Parser for HMP `info ramblock` (QEMU softmmu/physmem.c, ram_block_format): one line per RAM
 * block, `idstr  psize  0xoffset 0xused 0xtotal`. `offset` is the block's place in QEMU's
 * ram_addr space (not a guest-physical address); `used` is its current length, `total` its
 * maximum. Pure.
 */
import { VirtError } from '../domain/errors.js';

export interface RamBlock {
  /** QEMU's idstr, e.g. "pc.ram" or "0000:00:03.0/mem-vmem0" (device path + region name). */
  name: string;
  /** Host page size backing the block, in bytes (4096, or a huge page size). */
  pageSizeBytes: number;
  /** Offset in QEMU's ram_addr space. */
  ramAddr: bigint;
  usedBytes: number;
  maxBytes: number;
}

const UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };
const ROW_RE = /^\s*(.+?)\s+(\d+(?:\.\d+)?) (B|KiB|MiB|GiB|TiB)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s*$/;

/**
 * Parses `info ramblock`.
 * @throws VirtError OPERATION_FAILED when the header is missing (not that command's output).
 */
export function parseRamBlocks(text: string): RamBlock[] {
  const lines = text.replace(/\r/g, '').split('\n');
  if (!lines.some((l) => /^\s*Block Name\s+PSize\s+Offset\s+Used\s+Total\s*$/.test(l))) {
    throw new VirtError('OPERATION_FAILED', `unexpected 'info ramblock' output from QEMU: ${text.slice(0, 200)}`);
  }
  const out: RamBlock[] = [];
  for (const line of lines) {
    const m = ROW_RE.exec(line);
    if (!m) continue;
    out.push({
      name: m[1]!,
      pageSizeBytes: Math.round(Number(m[2]) * UNITS[m[3]!]!),
      ramAddr: BigInt(`0x${m[4]}`),
      usedBytes: Number(BigInt(`0x${m[5]}`)),
      maxBytes: Number(BigInt(`0x${m[6]}`)),
    });
  }
  return out;
}

/**
 * The RAM block behind a memory region of a flat view. A block's idstr is the region name,
 * prefixed with the owning device's path when a device owns it ("0000:00:03.0/mem-vmem0").
 */
export function ramBlockOfRegion(blocks: readonly RamBlock[], region: string): RamBlock | undefined {
  return blocks.find((b) => b.name === region) ?? blocks.find((b) => b.name.endsWith(`/${region}`));
}
