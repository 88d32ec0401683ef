/**
 * A definition's memory as the parts a running guest has: boot RAM under the balloon, DIMMs,
 * virtio-mem devices (domain/memory.ts has the arithmetic). NVDIMMs and virtio-pmem devices
 * count with the DIMMs as fixed memory, as libvirt's <memory> and <currentMemory> count them.
 */
import type { DomainDef } from '../../domain/definition.js';
import { bootMemoryKiB } from '../../domain/memory.js';
import type { MemoryLayout, VirtioMemState } from './plan.js';

export { bootMemoryKiB };

/** QOM id of the i-th virtio-mem device; the monitor addresses devices by it. */
export const virtioMemId = (i: number): string => `vmem${i}`;

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
