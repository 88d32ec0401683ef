/**
 * A guest's memory as the host holds it (domain-memory-api.ts GuestHostMemory), for both
 * drivers: the facts its definition fixes (backing, NUMA placement, cgroup limits: backing.ts)
 * and the ones the host counts as it runs, read cheaply enough for every watch tick: KSM's
 * per-process counters (/proc/PID/ksm_stat, kernel 6.1+; ksm_merging_pages on 5.19/6.0) and
 * the memory cgroup's usage. Parsers are pure; readers never throw for a missing file.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DomainDef } from '../../domain/definition.js';
import { BASE_PAGE_KIB } from '../../domain/validate-memory.js';
import type { GuestHostMemory } from '../domain-memory-api.js';
import { DEFAULT_HUGEPAGE_KIB, guestBacking, guestPlacement } from './backing.js';
import { readCgroupMemory, type Controller } from './cgroup-hierarchy.js';

/** /proc/PID/ksm_stat's counters (pages, and the profit in bytes, which may be negative). Pure; null when none is there. */
export function parseKsmStat(text: string): { mergingPages: number; zeroPages: number | null; profitBytes: number | null } | null {
  const field = (name: string): number | null => {
    const m = new RegExp(`^${name}:? (-?\\d+)$`, 'm').exec(text);
    return m ? Number(m[1]) : null;
  };
  const merging = field('ksm_merging_pages');
  if (merging === null) return null;
  return { mergingPages: merging, zeroPages: field('ksm_zero_pages'), profitBytes: field('ksm_process_profit') };
}

/** What KSM merges of a process now, or null where the kernel has no per-process counters (or the process is gone). */
export async function readProcessKsm(pid: number, proc = '/proc'): Promise<GuestHostMemory['ksm']> {
  const dir = join(proc, String(pid));
  let s = parseKsmStat(await readFile(join(dir, 'ksm_stat'), 'utf8').catch(() => ''));
  if (s === null) {
    const pages = (await readFile(join(dir, 'ksm_merging_pages'), 'utf8').catch(() => '')).trim();
    if (!/^\d+$/.test(pages)) return null;
    s = { mergingPages: Number(pages), zeroPages: null, profitBytes: null };
  }
  return {
    mergingPages: s.mergingPages, mergingKiB: s.mergingPages * BASE_PAGE_KIB, zeroPages: s.zeroPages,
    profitKiB: s.profitBytes === null ? null : Math.trunc(s.profitBytes / 1024),
  };
}

/**
 * What a definition fixes: backing, placement, and the cgroup limits it asks for (usage unknown
 * until read; null without limits), KSM unknown. Pure.
 */
export function definedHostMemory(def: DomainDef, hostDefaultHugepageKiB = DEFAULT_HUGEPAGE_KIB): GuestHostMemory {
  const t = def.memtune;
  const limited = t?.hardLimitKiB !== undefined || t?.softLimitKiB !== undefined;
  return {
    backing: guestBacking(def, hostDefaultHugepageKiB),
    placement: guestPlacement(def),
    cgroup: limited ? { hardLimitKiB: t?.hardLimitKiB ?? null, softLimitKiB: t?.softLimitKiB ?? null, usageKiB: null } : null,
    ksm: null,
  };
}

/** A guest's own memory cgroup as the kernel holds it now: limits and usage (KiB, null: unlimited / unknown). */
export async function readGuestCgroup(c: Controller, dir: string): Promise<NonNullable<GuestHostMemory['cgroup']>> {
  const m = await readCgroupMemory(c, dir);
  return { hardLimitKiB: m.hardLimitKiB ?? null, softLimitKiB: m.softLimitKiB ?? null, usageKiB: m.usageKiB ?? null };
}

/** Whether two host-memory records say the same (a watch reports a change only when they do not). */
export function sameHostMemory(a: GuestHostMemory | undefined, b: GuestHostMemory | undefined): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}
