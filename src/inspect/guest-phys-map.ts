/**
 * The guest-physical address map of a running QEMU, and the GPA -> HVA mapping: built from the
 * flat view of the "memory" address space (`info mtree -f`), the RAM blocks (`info ramblock`),
 * each RAM block's host address, and the memory devices (`query-memory-devices`). Pure.
 *
 * Guest RAM *is* host memory: each RAM block is one mmap in the QEMU process, and a flat range
 * backed by it at offset `o` lies at host address `block base + o`.
 */
import type { MemoryDeviceInfo } from '../qmp/index.js';
import type { FlatRange, MtreeType } from './hmp-mtree.js';
import { ramBlockOfRegion, type RamBlock } from './hmp-ramblock.js';

/**
 * What lies at a guest-physical address: RAM, read-only memory (firmware, or RAM the chipset
 * write-protects), a device (MMIO: reading it has side effects, so it is never read here), or
 * nothing at all (a hole).
 */
export type RegionKind = 'ram' | 'rom' | 'device' | 'hole';

/** A hot-pluggable memory device and how much of it the guest has. */
export interface MemoryDeviceSummary {
  model: 'virtio-mem' | 'dimm' | 'nvdimm';
  id: string | null;
  /** Backend object, e.g. /objects/mem-vmem0. */
  memdev: string;
  /** The device's whole guest-physical region. */
  regionBytes: number;
  /** What the guest has now: virtio-mem's plugged size, a DIMM's size. */
  pluggedBytes: number;
  /** virtio-mem only: what the host asked for (the guest converges to it). */
  requestedBytes?: number;
  blockSizeBytes?: number;
}

export interface MapRegion {
  start: bigint;
  /** Last byte (inclusive), as QEMU prints ranges. */
  end: bigint;
  sizeBytes: number;
  kind: RegionKind;
  /** QEMU's region type (ram, rom, romd, ramd, i/o); null for holes. */
  qemuType: MtreeType | null;
  /** Memory region name (`info mtree`); null for holes. */
  name: string | null;
  /** Offset of `start` in that region (= in its RAM block, for RAM). */
  offset: bigint | null;
  /** RAM block (`info ramblock` idstr) backing it, for ram and rom. */
  ramBlock: string | null;
  /** Host virtual address of `start` in the QEMU process, for ram and rom when known. */
  hva: bigint | null;
  /** Set when a memory device (virtio-mem, DIMM) provides this range. */
  memoryDevice: MemoryDeviceSummary | null;
}

export interface PhysMapInputs {
  ranges: readonly FlatRange[];
  ramBlocks: readonly RamBlock[];
  /** Host address of offset 0 of each RAM block, by block name; blocks missing here get no HVA. */
  ramBlockHva: ReadonlyMap<string, bigint>;
  memoryDevices: readonly MemoryDeviceInfo[];
}

const kindOf = (t: MtreeType): RegionKind => (t === 'ram' ? 'ram' : t === 'rom' ? 'rom' : 'device');

/**
 * A memory device as summarised here, with the name of its backend's memory region (the
 * basename of its memdev path); null for device kinds not interpreted.
 */
export function summarizeMemoryDevice(d: MemoryDeviceInfo): { regionName: string; summary: MemoryDeviceSummary } | null {
  if (d.type === 'other') return null;
  const regionName = d.memdev.slice(d.memdev.lastIndexOf('/') + 1);
  if (d.type === 'virtio-mem') {
    return {
      regionName,
      summary: {
        model: 'virtio-mem', id: d.id ?? null, memdev: d.memdev, regionBytes: d.maxSizeBytes,
        pluggedBytes: d.sizeBytes, requestedBytes: d.requestedSizeBytes, blockSizeBytes: d.blockSizeBytes,
      },
    };
  }
  return { regionName, summary: { model: d.type, id: d.id ?? null, memdev: d.memdev, regionBytes: d.sizeBytes, pluggedBytes: d.sizeBytes } };
}

/** The guest-physical map with lookups; immutable once built. */
export class GuestPhysMap {
  /** Every range in address order, holes between them included. */
  readonly regions: readonly MapRegion[];

  constructor(regions: readonly MapRegion[]) {
    this.regions = regions;
  }

  /** Builds the map; ranges QEMU does not list between two listed ones become holes. */
  static build(inp: PhysMapInputs): GuestPhysMap {
    const devices = inp.memoryDevices.map(summarizeMemoryDevice).filter((d) => d !== null);
    const regions: MapRegion[] = [];
    let next = 0n;
    for (const r of inp.ranges) {
      if (r.start > next) regions.push(hole(next, r.start - 1n));
      const kind = kindOf(r.type);
      const block = kind === 'device' ? undefined : ramBlockOfRegion(inp.ramBlocks, r.region);
      const base = block ? inp.ramBlockHva.get(block.name) : undefined;
      regions.push({
        start: r.start, end: r.end, sizeBytes: Number(r.end - r.start + 1n), kind, qemuType: r.type,
        name: r.region, offset: r.offset, ramBlock: block?.name ?? null,
        hva: base === undefined ? null : base + r.offset,
        memoryDevice: devices.find((d) => d.regionName === r.region)?.summary ?? null,
      });
      next = r.end + 1n;
    }
    return new GuestPhysMap(regions);
  }

  /**
   * The region holding `gpa`; past the last listed range, a hole reaching to the end of the
   * 64-bit space.
   */
  locate(gpa: bigint): MapRegion {
    let lo = 0;
    let hi = this.regions.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.regions[mid]!;
      if (gpa < r.start) hi = mid - 1;
      else if (gpa > r.end) lo = mid + 1;
      else return r;
    }
    const last = this.regions[this.regions.length - 1];
    return hole(last ? last.end + 1n : 0n, (1n << 64n) - 1n);
  }

  /** Host virtual address of `gpa` in the QEMU process, or null when it is not readable memory. */
  hvaOf(gpa: bigint): bigint | null {
    const r = this.locate(gpa);
    return r.hva === null || !isMemory(r) ? null : r.hva + (gpa - r.start);
  }
}

/** Whether a region is guest memory that may be read (RAM or ROM: no side effects). */
export function isMemory(r: MapRegion): boolean {
  return r.kind === 'ram' || r.kind === 'rom';
}

/** Why `gpa` in region `r` is not readable guest memory, in words. */
export function whyNotMemory(gpa: bigint, r: MapRegion): string {
  const at = `guest-physical 0x${gpa.toString(16)}`;
  if (r.kind === 'hole') return `${at} is not guest RAM: nothing is mapped there (a hole in the guest-physical map)`;
  return `${at} is not guest RAM: it belongs to the device region "${r.name}" (${r.qemuType}), which is not read because device reads have side effects`;
}

function hole(start: bigint, end: bigint): MapRegion {
  const size = end - start + 1n;
  return {
    start, end, sizeBytes: Number(size), kind: 'hole', qemuType: null, name: null, offset: null,
    ramBlock: null, hva: null, memoryDevice: null,
  };
}
