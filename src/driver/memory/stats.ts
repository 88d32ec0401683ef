/**
 * dommemstat's numbers: QEMU's balloon statistics mapped to libvirt's names and order, plus the
 * host's resident size of the QEMU process. Pure.
 */
import type { DomainDef } from '../../domain/definition.js';
import type { BalloonGuestStats } from '../../qmp/index.js';

/** One statistic in KiB (or seconds for last_update), in libvirt's naming. */
export interface MemoryStat {
  name: string;
  value: number;
}

export interface MemoryStats {
  /** In libvirt's order; statistics the guest did not report are absent, as in libvirt. */
  stats: MemoryStat[];
  /** The statistics polling period now in force (0: off). */
  periodS: number;
}

/** QEMU guest-stats keys -> libvirt names, in libvirt's (virsh dommemstat) order. */
const GUEST_STATS: ReadonlyArray<[qemuKey: string, name: string, bytes: boolean]> = [
  ['stat-swap-in', 'swap_in', true],
  ['stat-swap-out', 'swap_out', true],
  ['stat-major-faults', 'major_fault', false],
  ['stat-minor-faults', 'minor_fault', false],
  ['stat-free-memory', 'unused', true],
  ['stat-total-memory', 'available', true],
  ['stat-available-memory', 'usable', true],
];
const GUEST_STATS_TAIL: ReadonlyArray<[qemuKey: string, name: string, bytes: boolean]> = [
  ['stat-disk-caches', 'disk_caches', true],
  ['stat-htlb-pgalloc', 'hugetlb_pgalloc', false],
  ['stat-htlb-pgfail', 'hugetlb_pgfail', false],
];

export interface RawMemoryStats {
  live: DomainDef;
  balloonBytes: number | null;
  /** Validated `qom-get <balloon> guest-stats` (-1: not reported). */
  guestStats: BalloonGuestStats | null;
  rssKiB: number | null;
}

/** Map raw numbers to libvirt's statistics. */
export function toMemoryStats(raw: RawMemoryStats): MemoryStats {
  const out: MemoryStat[] = [];
  if (raw.balloonBytes !== null) out.push({ name: 'actual', value: Math.floor(raw.balloonBytes / 1024) });
  const stats: Record<string, number> = raw.guestStats?.stats ?? {};
  // QEMU reports a statistic the guest never sent as -1 (and everything as -1 before the first
  // report); libvirt leaves those out, and so do we.
  const take = (table: typeof GUEST_STATS): void => {
    for (const [key, name, bytes] of table) {
      const v = stats[key];
      if (typeof v === 'number' && v >= 0) out.push({ name, value: bytes ? Math.floor(v / 1024) : v });
    }
  };
  take(GUEST_STATS);
  const lastUpdate = raw.guestStats?.lastUpdate;
  if (lastUpdate !== undefined && lastUpdate > 0) out.push({ name: 'last_update', value: lastUpdate });
  take(GUEST_STATS_TAIL);
  if (raw.rssKiB !== null) out.push({ name: 'rss', value: raw.rssKiB });
  return { stats: out, periodS: raw.live.balloon.statsPeriodS };
}
