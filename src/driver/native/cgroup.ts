/**
 * A domain's cgroup: the memory limits of <memtune> and the host nodes of 'restrictive'
 * <numatune> placement (cpuset.mems), enforced by the host's cgroups, v1 or v2, as libvirt's
 * QEMU driver enforces them. QEMU is put in the cgroup before it runs (a fixed shell step writes
 * its own pid into cgroup.procs and execs QEMU), so even memory it preallocates at start is
 * charged there; the cgroup is removed when the domain stops.
 *
 * Where: `<controller root>/virtmem/<name>` for the system state directory, and
 * `virtmem/<name>@<8 hex digits of the state directory>` for any other, so two state
 * directories with a domain of the same name never share one.
 *
 * Which files, per version (values in bytes; "unlimited" is v1's -1 and v2's "max"):
 *
 *   <memtune>          cgroup v1                      cgroup v2
 *   hard_limit         memory.limit_in_bytes          memory.max
 *   soft_limit         memory.soft_limit_in_bytes     memory.high
 *   swap_hard_limit    memory.memsw.limit_in_bytes    memory.swap.max = swap_hard_limit - hard_limit
 *   min_guarantee      (none: refused)                memory.min
 *
 * v1's memsw limit is memory plus swap, like libvirt's swap_hard_limit, and may never be below
 * the memory limit: the two are written in the order that keeps that true. v2's swap.max counts
 * swap alone, so it gets the difference (libvirt writes swap_hard_limit there unchanged, which
 * lets the guest use that much swap on top of hard_limit). The decisions are pure functions;
 * the thin part below creates, writes and removes.
 */
import { createHash } from 'node:crypto';
import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { MemtuneDef } from '../../domain/definition.js';
import { VirtError } from '../../domain/errors.js';
import { formatIdSet } from '../../domain/node-set.js';
import { hostControllers, readCgroupMemory, type Controller } from '../memory/cgroup-hierarchy.js';

export { chooseControllers, hostControllers, parseCgroupMounts, type CgroupMounts, type Controller } from '../memory/cgroup-hierarchy.js';

/** The state directory whose domains get cgroups named after the domain alone. */
const SYSTEM_STATE_DIR = '/var/lib/virtmem';

/** The domain's cgroup path under a controller root ("virtmem/web"). Pure. */
export function domainCgroupPath(stateRoot: string, name: string): string {
  if (stateRoot === SYSTEM_STATE_DIR) return join('virtmem', name);
  const tag = createHash('sha256').update(stateRoot).digest('hex').slice(0, 8);
  return join('virtmem', `${name}@${tag}`);
}

/** One write into a cgroup file (a name in the domain's cgroup directory). */
export interface CgroupWrite {
  file: string;
  value: string;
}

/** What the memory controller of this host can do beyond limits. */
export interface MemoryFiles {
  /** v1: memory.memsw.* exist (the kernel accounts swap); v2: memory.swap.max exists. */
  swap: boolean;
}

const bytes = (kib: number | undefined): number | null => (kib === undefined ? null : kib * 1024);

/**
 * The writes that give the domain's memory cgroup exactly `t` (absent limits back to
 * unlimited), in a safe order. `currentMemswBytes`: v1's memsw limit now (null: unlimited), to
 * order the two limits. Pure.
 * @throws VirtError CONFIG_UNSUPPORTED for min_guarantee on v1 (no such control), and
 *   NO_SUPPORT for a swap limit where the kernel does not account swap
 */
export function memtuneWrites(version: 1 | 2, t: MemtuneDef, files: MemoryFiles, currentMemswBytes: number | null = null): CgroupWrite[] {
  const hard = bytes(t.hardLimitKiB);
  const soft = bytes(t.softLimitKiB);
  const swap = bytes(t.swapHardLimitKiB);
  if (swap !== null && !files.swap) {
    throw new VirtError('NO_SUPPORT', `swap_hard_limit needs the kernel's swap accounting (${version === 1 ? 'memory.memsw.limit_in_bytes' : 'memory.swap.max'}), which this host does not have (boot with swapaccount=1)`);
  }
  if (version === 1) {
    if (t.minGuaranteeKiB !== undefined) {
      throw new VirtError('CONFIG_UNSUPPORTED', "unsupported configuration: min_guarantee needs cgroup v2 (memory.min); this host's memory controller is cgroup v1");
    }
    const v1 = (b: number | null): string => (b === null ? '-1' : String(b));
    const limit: CgroupWrite = { file: 'memory.limit_in_bytes', value: v1(hard) };
    const out: CgroupWrite[] = [];
    if (files.swap) {
      const memsw: CgroupWrite = { file: 'memory.memsw.limit_in_bytes', value: v1(swap) };
      // memsw >= limit must hold after each write: raise memsw first when the new limit would
      // pass the current memsw, else lower the limit first.
      const newLimit = hard ?? Infinity;
      out.push(...(newLimit > (currentMemswBytes ?? Infinity) ? [memsw, limit] : [limit, memsw]));
    } else {
      out.push(limit);
    }
    out.push({ file: 'memory.soft_limit_in_bytes', value: v1(soft) });
    return out;
  }
  const v2 = (b: number | null): string => (b === null ? 'max' : String(b));
  const out: CgroupWrite[] = [
    { file: 'memory.max', value: v2(hard) },
    { file: 'memory.high', value: v2(soft) },
  ];
  if (files.swap) out.push({ file: 'memory.swap.max', value: v2(swap === null ? null : Math.max(0, swap - (hard ?? 0))) });
  out.push({ file: 'memory.min', value: String(bytes(t.minGuaranteeKiB) ?? 0) });
  return out;
}

/** The writes confining the domain's memory to `hostNodes` (cpuset.mems; v1 needs cpus first). Pure. */
export function cpusetWrites(version: 1 | 2, hostNodes: readonly number[], parentCpus: string): CgroupWrite[] {
  const mems = { file: 'cpuset.mems', value: formatIdSet(hostNodes) };
  return version === 1 ? [{ file: 'cpuset.cpus', value: parentCpus }, mems] : [mems];
}

// ---- the thin part ---------------------------------------------------------------------------

/** What a domain's cgroup is for. */
export interface CgroupWants {
  memtune?: MemtuneDef;
  /** Host nodes of restrictive placement. */
  restrictiveNodes?: number[];
}

const exists = (path: string): Promise<boolean> => access(path).then(() => true, () => false);

async function write(dir: string, w: CgroupWrite): Promise<void> {
  try {
    await writeFile(join(dir, w.file), w.value, { flag: 'r+' });
  } catch (err) {
    throw new VirtError('OPERATION_FAILED', `operation failed: cannot set ${w.file} to ${w.value} in ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/** Creates `virtmem` and the domain's directory under a controller, making v2 delegate it. */
async function ensureDir(c: Controller, rel: string, controller: 'memory' | 'cpuset'): Promise<string> {
  const top = join(c.root, 'virtmem');
  await mkdir(top, { recursive: true });
  if (c.version === 2) {
    // v2 hands a controller down one level at a time (cgroup.subtree_control).
    for (const dir of [c.root, top]) await write(dir, { file: 'cgroup.subtree_control', value: `+${controller}` });
  } else if (controller === 'cpuset') {
    // A v1 cpuset starts empty; the parent's CPUs and nodes must be set before a child's.
    for (const f of ['cpuset.cpus', 'cpuset.mems']) {
      if ((await readFile(join(top, f), 'utf8')).trim() === '') await write(top, { file: f, value: (await readFile(join(c.root, f), 'utf8')).trim() });
    }
  }
  const dir = join(c.root, rel);
  await mkdir(dir, { recursive: true });
  return dir;
}

/**
 * Creates (or reuses) the domain's cgroup for what it wants and sets it; returns the
 * cgroup.procs files QEMU must join, or [] when it wants nothing.
 * @throws VirtError NO_SUPPORT (no such controller here, or not root), CONFIG_UNSUPPORTED,
 *   OPERATION_FAILED (the kernel refused a value)
 */
export async function setupDomainCgroup(stateRoot: string, name: string, wants: CgroupWants): Promise<string[]> {
  if (wants.memtune === undefined && wants.restrictiveNodes === undefined) return [];
  const controllers = await hostControllers();
  const rel = domainCgroupPath(stateRoot, name);
  const procs = new Set<string>();
  if (process.getuid?.() !== 0) throw new VirtError('NO_SUPPORT', 'memory limits (<memtune>) and restrictive NUMA placement need cgroups, which only root may create');
  if (wants.memtune !== undefined) {
    const c = controllers.memory;
    if (c === undefined) throw new VirtError('NO_SUPPORT', 'this host has no cgroup memory controller for <memtune>');
    const dir = await ensureDir(c, rel, 'memory');
    await applyMemtune(c, dir, wants.memtune);
    procs.add(join(dir, 'cgroup.procs'));
  }
  if (wants.restrictiveNodes !== undefined) {
    const c = controllers.cpuset;
    if (c === undefined) throw new VirtError('NO_SUPPORT', "this host has no cgroup cpuset controller for <numatune mode='restrictive'>");
    const dir = await ensureDir(c, rel, 'cpuset');
    const cpus = (await readFile(join(c.root, c.version === 1 ? 'cpuset.cpus' : 'cpuset.cpus.effective'), 'utf8')).trim();
    for (const w of cpusetWrites(c.version, wants.restrictiveNodes, cpus)) await write(dir, w);
    procs.add(join(dir, 'cgroup.procs'));
  }
  return [...procs];
}

async function applyMemtune(c: Controller, dir: string, t: MemtuneDef): Promise<void> {
  const swapFile = join(dir, c.version === 1 ? 'memory.memsw.limit_in_bytes' : 'memory.swap.max');
  const swap = await exists(swapFile);
  let current: number | null = null;
  if (c.version === 1 && swap) {
    const n = Number((await readFile(swapFile, 'utf8')).trim());
    // v1 prints "unlimited" as a page-rounded LLONG_MAX.
    current = Number.isFinite(n) && n < 2 ** 62 ? n : null;
  }
  for (const w of memtuneWrites(c.version, t, { swap }, current)) await write(dir, w);
}

/**
 * Sets the memory limits of a running domain's cgroup, creating it and moving QEMU (`pid`) in
 * when it has none yet (v1 moves the memory QEMU already has along with it; v2 never moves
 * charges, so memory touched before stays counted where it was).
 */
export async function setLiveMemtune(stateRoot: string, name: string, pid: number, t: MemtuneDef): Promise<void> {
  const c = (await hostControllers()).memory;
  if (c === undefined) throw new VirtError('NO_SUPPORT', 'this host has no cgroup memory controller for <memtune>');
  if (process.getuid?.() !== 0) throw new VirtError('NO_SUPPORT', 'memory limits (<memtune>) need cgroups, which only root may change');
  const dir = await ensureDir(c, domainCgroupPath(stateRoot, name), 'memory');
  const procs = (await readFile(join(dir, 'cgroup.procs'), 'utf8')).split('\n');
  if (!procs.includes(String(pid))) {
    // v1 can move the charges along; kernels since 6.x deprecate it and newer ones refuse the
    // write (EINVAL, seen on 6.18): then memory QEMU touched before stays charged where it was.
    if (c.version === 1) await write(dir, { file: 'memory.move_charge_at_immigrate', value: '3' }).catch(() => {});
    await applyMemtune(c, dir, t); // limits first: the move itself is then held to them
    await write(dir, { file: 'cgroup.procs', value: String(pid) });
    return;
  }
  await applyMemtune(c, dir, t);
}

/**
 * Confines a running domain's memory to `hostNodes` (numatune --live --nodeset): its cpuset
 * cgroup's mems, the cgroup created and QEMU (`pid`) moved in when it has none yet.
 * @throws VirtError NO_SUPPORT (no cpuset controller, not root), OPERATION_FAILED
 */
export async function setLiveCpusetMems(stateRoot: string, name: string, pid: number, hostNodes: readonly number[]): Promise<void> {
  const c = (await hostControllers()).cpuset;
  if (c === undefined) throw new VirtError('NO_SUPPORT', 'this host has no cgroup cpuset controller');
  if (process.getuid?.() !== 0) throw new VirtError('NO_SUPPORT', 'NUMA placement needs cgroups, which only root may change');
  const dir = await ensureDir(c, domainCgroupPath(stateRoot, name), 'cpuset');
  const cpus = (await readFile(join(c.root, c.version === 1 ? 'cpuset.cpus' : 'cpuset.cpus.effective'), 'utf8')).trim();
  const writes = cpusetWrites(c.version, hostNodes, cpus);
  // A cpuset already set keeps its CPUs: only the nodes move.
  const inPlace = (await readFile(join(dir, 'cpuset.cpus'), 'utf8').catch(() => '')).trim() !== '';
  for (const w of inPlace ? writes.filter((x) => x.file === 'cpuset.mems') : writes) await write(dir, w);
  const procs = (await readFile(join(dir, 'cgroup.procs'), 'utf8')).split('\n');
  if (!procs.includes(String(pid))) await write(dir, { file: 'cgroup.procs', value: String(pid) });
}

/** The memory limits the kernel holds for a domain now, in KiB (absent: unlimited or no cgroup). */
export async function readMemtune(stateRoot: string, name: string): Promise<MemtuneDef> {
  const c = (await hostControllers()).memory;
  if (c === undefined) return {};
  const { usageKiB: _usage, ...limits } = await readCgroupMemory(c, join(c.root, domainCgroupPath(stateRoot, name)));
  return limits;
}

/** Removes a stopped domain's cgroups; what is not there, or still busy, is left alone. */
export async function removeDomainCgroup(stateRoot: string, name: string): Promise<void> {
  const controllers = await hostControllers().catch(() => ({} as { memory?: Controller; cpuset?: Controller }));
  const rel = domainCgroupPath(stateRoot, name);
  const roots = new Set([controllers.memory?.root, controllers.cpuset?.root].filter((r): r is string => r !== undefined));
  await Promise.all([...roots].map((root) => rmdirWhenEmpty(join(root, rel))));
}

/**
 * Removes a cgroup directory. The kernel refuses (EBUSY) while the group still holds a task: a
 * QEMU that has just exited can be there a moment longer, until it is reaped. Bounded (2 s).
 */
async function rmdirWhenEmpty(dir: string): Promise<void> {
  const end = Date.now() + 2_000;
  for (;;) {
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY' || Date.now() > end) return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * QEMU's command, started through a fixed shell step that puts its own pid into each cgroup
 * and then becomes QEMU (exec keeps the pid): the files and QEMU's argv are its positional
 * arguments, never part of the script.
 */
export function spawnIntoCgroups(procsFiles: readonly string[], emulator: string, argv: readonly string[]): { file: string; args: string[] } {
  if (procsFiles.length === 0) return { file: emulator, args: [...argv] };
  const script = 'for f; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; done; while [ "$1" != -- ]; do shift; done; shift; exec "$@"';
  return { file: '/bin/sh', args: ['-c', script, 'virtmem-cgroup', ...procsFiles, '--', emulator, ...argv] };
}
