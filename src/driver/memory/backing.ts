/**
 * What a definition's memory is on the host, as both drivers report it (dominfo, the API, the
 * live views): the huge page size each RAM region gets (the one rule; the native driver's QEMU
 * command line uses it too), the pools RAM takes, shared/locked/mergeable, and the host NUMA
 * placement <numatune> asks for. Pure.
 */
import type { DomainDef, MemAccess, MemoryDeviceDef, NumaMode } from '../../domain/definition.js';
import { guestNumaCells, bootMemoryKiB } from '../../domain/memory.js';
import { formatIdSet } from '../../domain/node-set.js';
import { BASE_PAGE_KIB } from '../../domain/validate-memory.js';
import type { GuestHostMemory } from '../domain-memory-api.js';

/** The host's default huge page size when it is not known (x86_64's). */
export const DEFAULT_HUGEPAGE_KIB = 2048;

/** One RAM region of a guest: a guest NUMA cell (or all boot RAM: null), or a memory device. */
export interface RamRegion {
  cell: number | null;
  device?: MemoryDeviceDef;
}

type BackingDef = Pick<DomainDef, 'memoryBacking' | 'numa' | 'numatune' | 'memory' | 'memoryDevices' | 'vcpus'>;

/**
 * The huge page size (KiB) a region is backed with, or null for base pages: a DIMM's or
 * virtio-mem's own <pagesize>, else the <page> naming its cell, else the <page> naming no cell,
 * else the host's default size for a bare <hugepages/>. "Huge" pages of the base page size are
 * no huge pages (libvirt).
 */
export function regionHugepageKiB(def: Pick<DomainDef, 'memoryBacking'>, region: RamRegion, hostDefaultKiB: number): number | null {
  const dev = region.device;
  const own = dev !== undefined && (dev.model === 'dimm' || dev.model === 'virtio-mem') ? dev.source?.pageSizeKiB : undefined;
  let size: number | null = own ?? null;
  const pages = def.memoryBacking?.hugepages;
  if (size === null && pages !== undefined) {
    const forCell = region.cell === null ? undefined : pages.find((p) => p.cells?.includes(region.cell!));
    const page = forCell ?? pages.find((p) => p.cells === undefined);
    if (page !== undefined) size = page.sizeKiB;
    else if (pages.length === 0) size = hostDefaultKiB;
  }
  return size === null || size === BASE_PAGE_KIB ? null : size;
}

/** The access mode of a region: the device's, its cell's, else <memoryBacking>'s. */
function regionAccess(def: BackingDef, region: RamRegion): MemAccess | undefined {
  const cell = region.cell === null ? undefined : def.numa?.cells[region.cell];
  return region.device?.access ?? cell?.memAccess ?? def.memoryBacking?.access;
}

/** Every RAM region with the KiB it holds now: cells (or boot RAM), DIMMs, plugged virtio-mem. */
function regions(def: BackingDef): Array<{ region: RamRegion; kib: number }> {
  const cells = guestNumaCells(def);
  const out: Array<{ region: RamRegion; kib: number }> = cells === undefined
    ? [{ region: { cell: null }, kib: bootMemoryKiB(def) }]
    : cells.map((c, i) => ({ region: { cell: i }, kib: c.memoryKiB }));
  for (const d of def.memoryDevices) {
    if (d.model === 'dimm') out.push({ region: { cell: d.node ?? 0, device: d }, kib: d.sizeKiB });
    else if (d.model === 'virtio-mem') out.push({ region: { cell: d.node ?? 0, device: d }, kib: d.requestedKiB });
  }
  return out;
}

/** How a definition's memory is backed on the host. */
export function guestBacking(def: BackingDef, hostDefaultHugepageKiB = DEFAULT_HUGEPAGE_KIB): GuestHostMemory['backing'] {
  const pools = new Map<number, number>();
  let shared = false;
  for (const { region, kib } of regions(def)) {
    const size = regionHugepageKiB(def, region, hostDefaultHugepageKiB);
    if (size !== null && kib > 0) pools.set(size, (pools.get(size) ?? 0) + Math.ceil(kib / size));
    if (regionAccess(def, region) === 'shared') shared = true;
  }
  const b = def.memoryBacking;
  return {
    hugepages: [...pools].sort((x, y) => x[0] - y[0]).map(([sizeKiB, pages]) => ({ sizeKiB, pages })),
    source: b?.source ?? 'anonymous',
    shared,
    locked: b?.locked === true,
    mergeable: b?.nosharepages !== true,
  };
}

/** Host NUMA placement (<numatune>), or null when the definition leaves it to the host. */
export function guestPlacement(def: Pick<DomainDef, 'numatune'>): GuestHostMemory['placement'] {
  const t = def.numatune;
  if (t === undefined) return null;
  // Automatic placement has no nodeset in the definition (the running guest's is in its run record).
  const text = (m: { mode: NumaMode; hostNodes: number[] } | { mode: NumaMode; placement: 'auto' }): { mode: string; nodeset: string } =>
    ({ mode: m.mode, nodeset: 'hostNodes' in m ? formatIdSet(m.hostNodes) : '' });
  return {
    ...(t.memory ? text(t.memory) : { mode: 'strict', nodeset: '' }),
    memnodes: (t.memnodes ?? []).map((n) => ({ cell: n.cell, ...text(n) })),
  };
}
