/**
 * A libvirt guest's memory as the host holds it (GuestHostMemory): what its domain XML fixes
 * (read with virtmem's own reading of libvirt XML: backing, <numatune>, <memtune>), and, on this
 * machine's own libvirtd (qemu:///system over its unix socket), what the host counts: KSM's
 * counters of the guest's QEMU (libvirt's pid file names it) and the usage of the memory cgroup
 * libvirt put it in (machine/qemu-N-NAME.libvirt-qemu). A remote host's guests have the XML's facts only.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { GuestHostMemory } from '../domain-memory-api.js';
import { hostControllers, processMemoryCgroup } from '../memory/cgroup-hierarchy.js';
import { definedHostMemory, readGuestCgroup, readProcessKsm } from '../memory/guest-host-memory.js';
import type { LibvirtUri } from '../../libvirt/uri.js';

/** Where libvirt's system QEMU driver keeps its guests' pid files. */
const SYSTEM_RUN_DIR = '/run/libvirt/qemu';

/** The facts a domain XML fixes, or null when virtmem cannot read the XML as a definition. */
export async function hostMemoryFromXml(xml: string): Promise<GuestHostMemory | null> {
  const { parseDomainXml } = await import('../../domain/xml.js');
  try {
    return definedHostMemory(parseDomainXml(xml).def);
  } catch {
    return null;
  }
}

/** Whether the libvirt host is this machine's system libvirtd, whose guests' processes are ours to read. */
export function isLocalSystem(target: LibvirtUri): boolean {
  return target.transport === 'unix' && target.driver === 'qemu' && target.path === '/system' && !target.query.has('socket');
}

/**
 * `base` (the XML's facts) with what this machine counts for the guest now: its cgroup's usage
 * (and the limits the kernel holds) and KSM. Never throws: what cannot be read stays as it was.
 */
export async function withLocalCounts(name: string, base: GuestHostMemory, runDir = SYSTEM_RUN_DIR): Promise<GuestHostMemory> {
  const pidText = (await readFile(join(runDir, `${name}.pid`), 'utf8').catch(() => '')).trim();
  if (!/^\d+$/.test(pidText)) return base;
  const pid = Number(pidText);
  const c = (await hostControllers().catch(() => ({} as Awaited<ReturnType<typeof hostControllers>>))).memory;
  const [path, ksm] = await Promise.all([c ? processMemoryCgroup(pid, c) : null, readProcessKsm(pid)]);
  const out: GuestHostMemory = { ...base, ksm };
  // libvirt gives every guest a cgroup of its own; it says something about the guest when limits are set.
  if (c && path && path !== '/') {
    const cg = await readGuestCgroup(c, join(c.root, path));
    if (cg.hardLimitKiB !== null || cg.softLimitKiB !== null || base.cgroup !== null) out.cgroup = cg;
  }
  return out;
}
