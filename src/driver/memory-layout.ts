/**
 * How a definition's memory numbers relate. libvirt's <memory> includes the memory devices
 * ("the memory allocation includes possible additional memory devices specified at start"):
 * initial RAM is <memory> minus the full size of every device (see validate-def.ts, which
 * enforces the same rule).
 */
import type { DomainDef } from './definition.js';
import type { MemoryLayout, VirtioMemState } from './memory-plan.js';


/** QOM id of the i-th virtio-mem device; the monitor addresses devices by it. */
export const virtioMemId = (i: number): string => `vmem${i}`;

/** KiB of memory devices counted in <memory>. */
export function deviceMemoryKiB(def: Pick<DomainDef, 'memoryDevices'>): number {
  return def.memoryDevices.reduce(
    (sum, d) => sum + d.sizeKiB,
    0,
  );
}

/** Initial RAM: what QEMU's -m size gets. */
export function bootMemoryKiB(def: Pick<DomainDef, 'memory' | 'memoryDevices'>): number {
  return def.memory.maxKiB - deviceMemoryKiB(def);
}

/** The layout a definition describes, with each virtio-mem device at its requested size. */
export function defLayout(def: Pick<DomainDef, 'memory' | 'memoryDevices'>): MemoryLayout {
  let i = 0;
  const vmem: VirtioMemState[] = [];
  let dimmKiB = 0;
  for (const d of def.memoryDevices) {
    if (d.model === 'virtio-mem') vmem.push({ id: virtioMemId(i++), sizeKiB: d.sizeKiB, blockKiB: d.blockKiB, pluggedKiB: d.requestedKiB });
    else dimmKiB += d.sizeKiB;
  }
  return { bootKiB: bootMemoryKiB(def), dimmKiB, vmem };
}

/** A copy of `def` whose virtio-mem devices request what `requestedKiB` says, in order. */
export function withRequested<T extends Pick<DomainDef, 'memoryDevices'>>(def: T, requestedKiB: number[]): T {
  let i = 0;
  return {
    ...def,
    memoryDevices: def.memoryDevices.map((d) => (d.model === 'virtio-mem' ? { ...d, requestedKiB: requestedKiB[i++] ?? d.requestedKiB } : d)),
  };
}
