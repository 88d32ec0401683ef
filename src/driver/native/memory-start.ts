/**
 * What `start` checks and prepares on the host before QEMU gets a guest's memory: the host NUMA
 * nodes its placement names exist, the huge page pools hold enough free pages for what QEMU
 * preallocates (per page size, on the nodes a strict binding allows; refused naming how many
 * pages are missing, before anything starts), a hugetlbfs mount for each page size file backends
 * use (found in /proc/mounts, or mounted under the state directory by root), and the directory
 * for file-backed RAM. The decisions are pure functions of the plan and the host's numbers.
 */
import { mkdir, readFile } from 'node:fs/promises';
import type { DomainDef } from '../../domain/definition.js';
import { VirtError } from '../../domain/errors.js';
import { formatIdSet } from '../../domain/node-set.js';
import type { NativeContext } from './context.js';
import type { RunPaths } from './paths.js';
import { defaultHugepageKiB, hugetlbfsMounts, mountHugetlbfs } from './host/hugetlbfs.js';
import { listHugepageSizesKiB, readPoolCounter } from './host/hugepages.js';
import { listNodeIds, parseNodeMeminfoKiB, readNodeMeminfo } from './host/numa-nodes.js';
import { allBackends, hugetlbfsSizesNeeded, planMemoryLayout, type BackingPaths, type MemoryLayoutPlan } from './qemu-memory.js';

/** Huge pages QEMU takes at start: of one size, from the given host nodes (null: any). */
export interface HugepageDemand {
  pageSizeKiB: number;
  hostNodes: number[] | null;
  pages: number;
}

/**
 * The huge pages a plan preallocates, grouped by page size and by the host nodes a strict
 * (bind) placement confines them to; preferred and interleaved backends may take any node's.
 * Pure.
 */
export function hugepageDemand(plan: MemoryLayoutPlan): HugepageDemand[] {
  const groups = new Map<string, HugepageDemand>();
  for (const b of allBackends(plan)) {
    if (b.hugepageKiB === null || b.preallocKiB === 0) continue;
    const nodes = b.policy === 'bind' && b.hostNodes !== undefined ? b.hostNodes : null;
    const key = `${b.hugepageKiB}:${nodes === null ? '*' : formatIdSet(nodes)}`;
    const g = groups.get(key) ?? { pageSizeKiB: b.hugepageKiB, hostNodes: nodes, pages: 0 };
    g.pages += Math.ceil(b.preallocKiB / b.hugepageKiB);
    groups.set(key, g);
  }
  return [...groups.values()];
}

/** Free huge pages by page size: host-wide (free less reserved) and per host node. */
export interface FreeHugepages {
  sizesKiB: number[];
  hostWide: ReadonlyMap<number, number>;
  perNode: ReadonlyMap<number, ReadonlyMap<number, number>>;
}

/**
 * Why the pools cannot give a plan its pages, or null when they can: the first page size (or
 * node set) short of pages, with how many are missing and how to reserve them. Pure.
 */
export function hugepageShortfall(demand: readonly HugepageDemand[], free: FreeHugepages): string | null {
  for (const size of [...new Set(demand.map((d) => d.pageSizeKiB))].sort((a, b) => a - b)) {
    if (!free.sizesKiB.includes(size)) {
      return `the host has no ${size} KiB huge pages (its huge page sizes: ${free.sizesKiB.length === 0 ? 'none' : free.sizesKiB.map((s) => `${s} KiB`).join(', ')})`;
    }
    const ofSize = demand.filter((d) => d.pageSizeKiB === size);
    for (const d of ofSize.filter((x) => x.hostNodes !== null)) {
      const have = d.hostNodes!.reduce((s, n) => s + (free.perNode.get(size)?.get(n) ?? 0), 0);
      if (have < d.pages) return shortfall(size, d.pages, have, d.hostNodes);
    }
    const need = ofSize.reduce((s, d) => s + d.pages, 0);
    const have = free.hostWide.get(size) ?? 0;
    if (have < need) return shortfall(size, need, have, null);
  }
  return null;
}

function shortfall(size: number, need: number, have: number, nodes: number[] | null): string {
  const where = nodes === null ? '' : ` on host NUMA node${nodes.length === 1 ? '' : 's'} ${formatIdSet(nodes)}`;
  const cell = nodes !== null && nodes.length === 1 ? ` --cellno ${nodes[0]}` : '';
  return `not enough free ${size} KiB huge pages${where}: the guest needs ${need}, ${have} ${have === 1 ? 'is' : 'are'} free (${need - have} missing); reserve them first, e.g. virtmem allocpages ${size} ${need - have}${cell} --add`;
}

/** Host nodes a plan names (bindings, and restrictive placement), ascending. Pure. */
export function hostNodesNamed(plan: MemoryLayoutPlan): number[] {
  const nodes = allBackends(plan).flatMap((b) => b.placement?.hostNodes ?? []);
  return [...new Set(nodes)].sort((a, b) => a - b);
}

/** Where the host's kernel files are (tests give a fixture tree). */
export interface HostRoots {
  sys: string;
  proc: string;
}
const HOST: HostRoots = { sys: '/sys', proc: '/proc' };

/**
 * The host nodes a guest with placement='auto' gets (where libvirt asks numad): the fewest
 * nodes, most free memory first, whose free memory holds the whole guest; all nodes when none
 * do, so the kernel spreads it. Ascending. Pure.
 */
export function chooseAutoNodes(freeKiBByNode: ReadonlyMap<number, number>, needKiB: number): number[] {
  const byFree = [...freeKiBByNode].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  const chosen: number[] = [];
  let have = 0;
  for (const [node, free] of byFree) {
    chosen.push(node);
    have += free;
    if (have >= needKiB) return chosen.sort((a, b) => a - b);
  }
  return [...freeKiBByNode.keys()].sort((a, b) => a - b);
}

/** `def` with automatic placement replaced by the host nodes chosen for it (unchanged without). Pure. */
export function withAutoPlacement(def: DomainDef, nodes: readonly number[] | undefined): DomainDef {
  const memory = def.numatune?.memory;
  if (memory === undefined || !('placement' in memory) || nodes === undefined) return def;
  return { ...def, numatune: { ...def.numatune, memory: { mode: memory.mode, hostNodes: [...nodes] } } };
}

/**
 * For a guest with placement='auto': the host nodes it gets now, from each node's free memory
 * (nodeN/meminfo; a host without NUMA nodes is node 0). undefined for static placement.
 */
export async function autoPlacementNodes(def: DomainDef, roots: HostRoots = HOST): Promise<number[] | undefined> {
  const memory = def.numatune?.memory;
  if (memory === undefined || !('placement' in memory)) return undefined;
  const ids = await listNodeIds(roots.sys);
  if (ids.length === 0) return [0];
  const free = new Map<number, number>();
  for (const n of ids) {
    const text = await readNodeMeminfo(roots.sys, n).catch(() => '');
    free.set(n, parseNodeMeminfoKiB(text).get('MemFree') ?? 0);
  }
  return chooseAutoNodes(free, def.memory.maxKiB);
}


/** The free pages of each size, host-wide and on each node. */
async function readFreeHugepages(roots: HostRoots): Promise<FreeHugepages> {
  const sizesKiB = await listHugepageSizesKiB(roots.sys);
  const nodes = await listNodeIds(roots.sys);
  const hostWide = new Map<number, number>();
  const perNode = new Map<number, Map<number, number>>();
  for (const size of sizesKiB) {
    const free = await readPoolCounter(roots.sys, -1, size, 'free_hugepages').catch(() => 0);
    const reserved = await readPoolCounter(roots.sys, -1, size, 'resv_hugepages').catch(() => 0);
    hostWide.set(size, Math.max(0, free - reserved));
    perNode.set(size, new Map(await Promise.all(nodes.map(async (n) => [n, await readPoolCounter(roots.sys, n, size, 'free_hugepages').catch(() => 0)] as const))));
  }
  return { sizesKiB, hostWide, perNode };
}

/**
 * Checks the host for a guest's memory and prepares it; returns the memory plan and where its
 * files go. `def` is the definition QEMU is started with (virtio-mem requested sizes set).
 * @throws VirtError CONFIG_UNSUPPORTED (a host node does not exist, a size overflows),
 *   OPERATION_FAILED (not enough free huge pages; a mount failed), NO_SUPPORT (no hugetlbfs
 *   mount and not root to make one)
 */
export async function prepareHostMemory(ctx: NativeContext, def: DomainDef, run: RunPaths, roots: HostRoots = HOST): Promise<{ plan: MemoryLayoutPlan; backing: BackingPaths }> {
  const meminfo = await readFile(`${roots.proc}/meminfo`, 'utf8').catch(() => '');
  const defaultKiB = defaultHugepageKiB(meminfo) ?? 2048;
  const plan = planMemoryLayout(def, { defaultHugepageKiB: defaultKiB });

  const named = hostNodesNamed(plan);
  if (named.length > 0) {
    const present = new Set(await listNodeIds(roots.sys));
    // A host without a NUMA directory is one node, 0.
    if (present.size === 0) present.add(0);
    const missing = named.find((n) => !present.has(n));
    if (missing !== undefined) throw new VirtError('CONFIG_UNSUPPORTED', `unsupported configuration: NUMA node ${missing} is unavailable`);
  }

  const demand = hugepageDemand(plan);
  if (demand.length > 0) {
    const problem = hugepageShortfall(demand, await readFreeHugepages(roots));
    if (problem !== null) throw new VirtError('OPERATION_FAILED', `operation failed: ${problem}`);
  }

  const hugetlbfs = await hugetlbfsFor(ctx, hugetlbfsSizesNeeded(plan), defaultKiB, roots);
  if (allBackends(plan).some((b) => b.file?.kind === 'memory-dir')) await mkdir(run.memoryDir, { recursive: true, mode: 0o700 });
  return { plan, backing: { hugetlbfs, memoryDir: run.memoryDir } };
}

/**
 * The memory plan of a running guest's definition with the host's paths as they are now (no
 * checks, nothing mounted): for a device hot-added to a guest that started with them.
 */
export async function currentHostMemory(def: DomainDef, run: RunPaths, roots: HostRoots = HOST): Promise<{ plan: MemoryLayoutPlan; backing: BackingPaths }> {
  const meminfo = await readFile(`${roots.proc}/meminfo`, 'utf8').catch(() => '');
  const defaultKiB = defaultHugepageKiB(meminfo) ?? 2048;
  const mounts = hugetlbfsMounts(await readFile(`${roots.proc}/mounts`, 'utf8').catch(() => ''), defaultKiB);
  return { plan: planMemoryLayout(def, { defaultHugepageKiB: defaultKiB }), backing: { hugetlbfs: mounts, memoryDir: run.memoryDir } };
}

/**
 * A hugetlbfs mount for each size: the host's own when /proc/mounts lists one, else one the
 * driver mounts under its state directory (root only), under a lock so two starts do not both
 * mount it.
 */
async function hugetlbfsFor(ctx: NativeContext, sizes: number[], defaultKiB: number, roots: HostRoots): Promise<Map<number, string>> {
  if (sizes.length === 0) return new Map();
  const read = async (): Promise<Map<number, string>> => hugetlbfsMounts(await readFile(`${roots.proc}/mounts`, 'utf8').catch(() => ''), defaultKiB);
  let mounts = await read();
  if (sizes.every((s) => mounts.has(s))) return mounts;
  if (process.getuid?.() !== 0) {
    const size = sizes.find((s) => !mounts.has(s))!;
    throw new VirtError('NO_SUPPORT', `hugetlbfs filesystem for ${size} KiB pages is not mounted: mount one (mount -t hugetlbfs -o pagesize=${size}K hugetlbfs DIR) or start the domain as root, which mounts it under ${ctx.paths.hugetlbfs(size)}`);
  }
  return ctx.withDomainLock('.hugetlbfs', async () => {
    mounts = await read();
    for (const size of sizes) {
      if (mounts.has(size)) continue;
      const dir = ctx.paths.hugetlbfs(size);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await mountHugetlbfs(dir, size);
      mounts.set(size, dir);
    }
    return mounts;
  });
}
