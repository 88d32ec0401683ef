/**
 * The host's cgroup hierarchies and what a memory cgroup holds, read the same way for either
 * driver's guests: where the memory and cpuset controllers are mounted (v1 or v2), which memory
 * cgroup a process is in (/proc/PID/cgroup), and that cgroup's limits and usage in KiB. The
 * decisions are pure; the readers never throw for a file that is not there.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Where the host mounts cgroups: v1 controllers by name, and the v2 (unified) hierarchy. */
export interface CgroupMounts {
  v1: ReadonlyMap<string, string>;
  v2: string | null;
}

/** cgroup mounts from /proc/mounts text. Pure. */
export function parseCgroupMounts(mountsText: string): CgroupMounts {
  const v1 = new Map<string, string>();
  let v2: string | null = null;
  for (const line of mountsText.split('\n')) {
    const [, path, type, options] = line.split(' ');
    if (path === undefined || options === undefined) continue;
    if (type === 'cgroup2' && v2 === null) v2 = path;
    if (type === 'cgroup') for (const o of options.split(',')) if (!v1.has(o)) v1.set(o, path);
  }
  return { v1, v2 };
}

/** One controller as the domain uses it. */
export interface Controller {
  version: 1 | 2;
  /** The hierarchy's mount point. */
  root: string;
}

/**
 * The memory and cpuset controllers: v1 where the host binds them to a v1 hierarchy (a
 * controller serves one hierarchy only), else v2 when the unified hierarchy offers them
 * (`v2Controllers`: the words of its cgroup.controllers). Pure.
 */
export function chooseControllers(mounts: CgroupMounts, v2Controllers: readonly string[]): { memory?: Controller; cpuset?: Controller } {
  const pick = (name: string): Controller | undefined => {
    const v1 = mounts.v1.get(name);
    if (v1 !== undefined) return { version: 1, root: v1 };
    if (mounts.v2 !== null && v2Controllers.includes(name)) return { version: 2, root: mounts.v2 };
    return undefined;
  };
  const out: { memory?: Controller; cpuset?: Controller } = {};
  const memory = pick('memory');
  if (memory) out.memory = memory;
  const cpuset = pick('cpuset');
  if (cpuset) out.cpuset = cpuset;
  return out;
}

/** The host's controllers now. */
export async function hostControllers(proc = '/proc'): Promise<{ memory?: Controller; cpuset?: Controller }> {
  const mounts = parseCgroupMounts(await readFile(join(proc, 'mounts'), 'utf8').catch(() => ''));
  const v2Controllers = mounts.v2 === null ? [] : (await readFile(join(mounts.v2, 'cgroup.controllers'), 'utf8').catch(() => '')).trim().split(/\s+/);
  return chooseControllers(mounts, v2Controllers);
}

/** A process's cgroup per v1 controller, and its v2 cgroup, from /proc/PID/cgroup text. Pure. */
export function parseProcCgroup(text: string): { v1: Map<string, string>; v2: string | null } {
  const v1 = new Map<string, string>();
  let v2: string | null = null;
  for (const line of text.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === '') v2 = m[2]!;
    else for (const c of m[1]!.split(',')) v1.set(c, m[2]!);
  }
  return { v1, v2 };
}

/** The memory cgroup a process is in, as a path under its controller's root (e.g. "/machine/qemu-1-web.libvirt-qemu"), or null. */
export async function processMemoryCgroup(pid: number, c: Controller, proc = '/proc'): Promise<string | null> {
  const text = await readFile(join(proc, String(pid), 'cgroup'), 'utf8').catch(() => null);
  if (text === null) return null;
  const p = parseProcCgroup(text);
  return (c.version === 1 ? p.v1.get('memory') : p.v2) ?? null;
}

/** A memory cgroup's limits and usage, KiB (absent: unlimited, or not readable). */
export interface CgroupMemory {
  hardLimitKiB?: number;
  softLimitKiB?: number;
  /** Memory plus swap, as libvirt's swap_hard_limit. */
  swapHardLimitKiB?: number;
  minGuaranteeKiB?: number;
  usageKiB?: number;
}

/**
 * What the kernel holds for the memory cgroup in `dir` (v1: limit_in_bytes, soft_limit_in_bytes,
 * memsw.limit_in_bytes, usage_in_bytes; v2: max, high, swap.max + max, min, current).
 */
export async function readCgroupMemory(c: Controller, dir: string): Promise<CgroupMemory> {
  const read = async (file: string): Promise<number | undefined> => {
    const text = (await readFile(join(dir, file), 'utf8').catch(() => '')).trim();
    // v1 prints "unlimited" as a page-rounded LLONG_MAX, v2 as "max".
    if (!/^\d+$/.test(text) || Number(text) >= 2 ** 62) return undefined;
    return Math.floor(Number(text) / 1024);
  };
  const out: CgroupMemory = {};
  const set = (k: keyof CgroupMemory, v: number | undefined): void => { if (v !== undefined) out[k] = v; };
  if (c.version === 1) {
    set('hardLimitKiB', await read('memory.limit_in_bytes'));
    set('softLimitKiB', await read('memory.soft_limit_in_bytes'));
    set('swapHardLimitKiB', await read('memory.memsw.limit_in_bytes'));
    set('usageKiB', await read('memory.usage_in_bytes'));
  } else {
    const hard = await read('memory.max');
    set('hardLimitKiB', hard);
    set('softLimitKiB', await read('memory.high'));
    const swap = await read('memory.swap.max');
    if (swap !== undefined) out.swapHardLimitKiB = swap + (hard ?? 0);
    const min = await read('memory.min');
    if (min) out.minGuaranteeKiB = min;
    set('usageKiB', await read('memory.current'));
  }
  return out;
}
