/**
 * Guard rails for memory changes on a running guest: do not take away memory the guest is
 * using, do not promise memory the host cannot back. Decisions are pure; `--force` skips them.
 */
import { readFile } from 'node:fs/promises';
import { parseMeminfo } from '../native/host-memory.js';
import type { BalloonGuestStats } from '../../qmp/index.js';

/**
 * Why shrinking to `targetKiB` would hurt the guest, or null when it is fine or unknown.
 * "In use" is the guest's own MemTotal - MemAvailable from its balloon statistics; without a
 * report yet (stats off, driver not loaded) there is nothing to go by and no refusal.
 */
export function shrinkRefusal(targetKiB: number, stats: BalloonGuestStats | null): string | null {
  const total = stats?.stats['stat-total-memory'];
  const avail = stats?.stats['stat-available-memory'];
  if (!stats || !stats.lastUpdate || total === undefined || avail === undefined || total < 0 || avail < 0) return null;
  const inUseKiB = Math.ceil((total - avail) / 1024);
  if (targetKiB >= inUseKiB) return null;
  return `refusing to shrink to ${targetKiB} KiB: the guest is using ${inUseKiB} KiB (MemTotal - MemAvailable from its statistics); use --force to shrink anyway`;
}

/** Why growing by `growKiB` is more than the host can back, or null. */
export function growthRefusal(growKiB: number, hostAvailableKiB: number | null): string | null {
  if (hostAvailableKiB === null || growKiB <= hostAvailableKiB) return null;
  return `refusing to grow by ${growKiB} KiB: the host has only ${hostAvailableKiB} KiB available (MemAvailable); use --force to grow anyway`;
}

/** The host's MemAvailable in KiB, or null when /proc/meminfo cannot be read. */
export async function hostMemAvailableKiB(): Promise<number | null> {
  const bytes = parseMeminfo(await readFile('/proc/meminfo', 'utf8').catch(() => '')).get('MemAvailable');
  return bytes === undefined ? null : bytes / 1024;
}
