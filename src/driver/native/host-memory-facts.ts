/**
 * A native guest's memory as the host holds it (GuestHostMemory): what its definition fixes,
 * its own memory cgroup (`virtmem/NAME` when <memtune> or a live memtune made one; a guest
 * without one is charged wherever its starter runs, which says nothing about the guest), and
 * KSM's counters of its QEMU process. Cheap enough for every watch tick: a handful of small
 * /proc and cgroup files; the host's controllers and default huge page size are read once.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DomainDef } from '../../domain/definition.js';
import type { GuestHostMemory } from '../domain-memory-api.js';
import { DEFAULT_HUGEPAGE_KIB } from '../memory/backing.js';
import { hostControllers, processMemoryCgroup, type Controller } from '../memory/cgroup-hierarchy.js';
import { definedHostMemory, readGuestCgroup, readProcessKsm } from '../memory/guest-host-memory.js';
import { domainCgroupPath } from './cgroup.js';
import { defaultHugepageKiB } from './host/hugetlbfs.js';

let hostFacts: Promise<{ memory: Controller | null; hugepageKiB: number }> | null = null;

/** The memory controller and the default huge page size, read once per process (they do not change while it runs). */
function host(): Promise<{ memory: Controller | null; hugepageKiB: number }> {
  hostFacts ??= Promise.all([
    hostControllers().catch(() => ({} as { memory?: Controller })),
    readFile('/proc/meminfo', 'utf8').catch(() => ''),
  ]).then(([c, meminfo]) => ({ memory: c.memory ?? null, hugepageKiB: defaultHugepageKiB(meminfo) ?? DEFAULT_HUGEPAGE_KIB }));
  return hostFacts;
}

/**
 * The guest's host memory now. `pid`: its running QEMU (null: shut off, only the definition's
 * facts). Never throws: what cannot be read stays unknown.
 */
export async function guestHostMemory(stateRoot: string, name: string, def: DomainDef, pid: number | null): Promise<GuestHostMemory> {
  const h = await host();
  const out = definedHostMemory(def, h.hugepageKiB);
  if (pid === null) return out;
  const rel = domainCgroupPath(stateRoot, name);
  const [inCgroup, ksm] = await Promise.all([h.memory ? processMemoryCgroup(pid, h.memory) : null, readProcessKsm(pid)]);
  // Only the guest's own cgroup speaks about the guest.
  if (h.memory && inCgroup === `/${rel}`) out.cgroup = await readGuestCgroup(h.memory, join(h.memory.root, rel));
  out.ksm = ksm;
  return out;
}
