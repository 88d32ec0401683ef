/**
 * Memory arithmetic of a definition. libvirt's <memory> includes the memory devices ("the
 * memory allocation includes possible additional memory devices specified at start"): initial
 * RAM is <memory> minus the full size of every device. validate-def.ts enforces the same rule.
 */
import type { DomainDef, NumaCellDef } from './definition.js';

/**
 * virtio-mem's block on x86 when a definition names none, and the smallest QEMU takes there
 * (the transparent huge page size): 2 MiB, as libvirt's default too.
 */
export const VIRTIO_MEM_BLOCK_KIB = 2048;

/** KiB of memory devices counted in <memory>. */
export function deviceMemoryKiB(def: Pick<DomainDef, 'memoryDevices'>): number {
  return def.memoryDevices.reduce((sum, d) => sum + d.sizeKiB, 0);
}

/** Initial RAM: what QEMU's -m size gets. */
export function bootMemoryKiB(def: Pick<DomainDef, 'memory' | 'memoryDevices'>): number {
  return def.memory.maxKiB - deviceMemoryKiB(def);
}

/**
 * The guest's NUMA cells: the definition's own, or with memory hot-plug the one cell libvirt's
 * QEMU driver insists on (every vCPU, all boot RAM), which a definition without cells means;
 * undefined for a guest with neither (QEMU's single implicit node).
 */
export function guestNumaCells(def: Pick<DomainDef, 'numa' | 'memory' | 'memoryDevices' | 'vcpus'>): NumaCellDef[] | undefined {
  if (def.numa !== undefined) return def.numa.cells;
  if (def.memory.hotplug === undefined) return undefined;
  return [{ cpus: Array.from({ length: def.vcpus }, (_, i) => i), memoryKiB: bootMemoryKiB(def) }];
}

/**
 * What the balloon leaves the guest of its boot RAM when it takes memory first: the guest's
 * unmovable allocations (kernel, page tables) can only live in boot RAM (virtio-mem memory is
 * onlined movable), so a quarter of it, at least 64 MiB, stays out of the balloon's reach.
 */
export function balloonKeepKiB(bootKiB: number): number {
  return Math.min(bootKiB, Math.max(64 * 1024, Math.ceil(bootKiB / 4)));
}

/**
 * How a memory change is split between the balloon and virtio-mem (driver/memory/plan.ts
 * planSplit): 'plain' (setmem's), 'balloon-first' (shrink into the balloon, grow by plugging),
 * 'balloon-back' (grow by deflating, shrink by unplugging).
 */
export type MemorySplit = 'plain' | 'balloon-first' | 'balloon-back';
