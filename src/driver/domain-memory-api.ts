/**
 * A domain's memory beyond its size, as the neutral driver API offers it: the memory cgroup's
 * limits (virsh memtune), host NUMA placement (numatune), memory devices attached, detached and
 * updated while the guest runs (attach-device, detach-device, update-memory-device), bulk
 * statistics (domstats) and the dirty page rate (domdirtyrate-calc). Shaped after libvirt's
 * virDomain* calls so virsh's commands map onto it one to one; both drivers implement it
 * (`HypervisorDriver` optional members). Units are in the names; libvirt's typed parameters keep
 * their wire type, so virsh's formatting applies to either driver's answer.
 */
import type { AffectFlags } from './api.js';

/** libvirt's VIR_DOMAIN_MEMORY_PARAM_UNLIMITED (KiB): "no limit" on the wire. */
export const MEMORY_PARAM_UNLIMITED_KIB = 9007199254740991;

/** The memory limits virsh memtune names, in its order: option, libvirt field, definition key. */
export const MEMORY_PARAMETER_FIELDS = [
  ['hard-limit', 'hard_limit', 'hardLimitKiB'],
  ['soft-limit', 'soft_limit', 'softLimitKiB'],
  ['swap-hard-limit', 'swap_hard_limit', 'swapHardLimitKiB'],
  ['min-guarantee', 'min_guarantee', 'minGuaranteeKiB'],
] as const;

/** A definition key of a memory limit (domain/definition.ts MemtuneDef). */
export type MemoryLimitKey = (typeof MEMORY_PARAMETER_FIELDS)[number][2];

/** One memory limit as libvirt reports it: its field name and KiB, null for unlimited. */
export interface MemoryParameter {
  field: string;
  valueKiB: number | null;
}

/** Limits to set; an absent key stays as it is, null is unlimited. */
export type MemoryParametersUpdate = { [K in MemoryLimitKey]?: number | null };

/** libvirt's virDomainNumatuneMemMode, in its numbering (numatune --mode takes a name or the number). */
export const NUMA_MODES = ['strict', 'preferred', 'interleave', 'restrictive'] as const;

/** numatune's answer: the mode (libvirt's number) and the host nodeset ('' when none is set). */
export interface NumaParameters {
  mode: number;
  nodeset: string;
}

/** numatune's change: a mode number (checked by the driver) and/or a nodeset text. */
export interface NumaParametersUpdate {
  mode?: number;
  nodeset?: string;
}

/** libvirt's typed parameter value, as the driver got or made it. */
export type StatValue =
  | { type: 'int'; value: number } | { type: 'uint'; value: number }
  | { type: 'llong'; value: bigint } | { type: 'ullong'; value: bigint }
  | { type: 'double'; value: number } | { type: 'boolean'; value: boolean }
  | { type: 'string'; value: string };

export interface StatParam {
  field: string;
  value: StatValue;
}

/** One domain's statistics (virDomainStatsRecord): libvirt's field names, in its order. */
export interface DomainStatsRecord {
  name: string;
  params: StatParam[];
}

/** The statistics groups (virDomainStatsTypes), by virsh's option name, with libvirt's bit. */
export const STATS_GROUPS = {
  state: 1, 'cpu-total': 2, balloon: 4, vcpu: 8, interface: 16, block: 32, perf: 64, iothread: 128, memory: 256, dirtyrate: 512, vm: 1024,
} as const;
export type StatsGroup = keyof typeof STATS_GROUPS;

/** The domain filters and flags of virConnectGetAllDomainStats, by virsh's option name, with libvirt's bit. */
export const STATS_FLAGS = {
  'list-active': 1, 'list-inactive': 2, 'list-persistent': 4, 'list-transient': 8, 'list-running': 16, 'list-paused': 32,
  'list-shutoff': 64, 'list-other': 128, nowait: 1 << 29, backing: 1 << 30, enforce: 2 ** 31,
} as const;
export type StatsFlag = keyof typeof STATS_FLAGS;

export interface DomainStatsRequest {
  /** The domains asked for (name, uuid or id), or null: every domain the filters let through. */
  domains: string[] | null;
  /** Groups; none means every group the driver has. */
  groups: StatsGroup[];
  flags: StatsFlag[];
  signal?: AbortSignal;
}

/** domdirtyrate-calc's modes (virDomainDirtyRateCalcFlags), by virsh's name. */
export const DIRTY_RATE_MODES = ['page-sampling', 'dirty-bitmap', 'dirty-ring'] as const;
export type DirtyRateMode = (typeof DIRTY_RATE_MODES)[number];

/** Which memory device update-memory-device changes, and how. */
export interface MemoryDeviceUpdate {
  /** The device with this alias (exclusive with node). */
  alias?: string;
  /** The device on this guest NUMA node. */
  node?: number;
  /** virtio-mem's new requested size (KiB). */
  requestedKiB?: number;
  /** Only say what would be sent: the device's XML, nothing changed. */
  printXml?: boolean;
}

/** A device change's flags: libvirt's live/config/current (neither: current). */
export type DeviceFlags = AffectFlags & { signal?: AbortSignal };

/**
 * What a domain's memory is on the host: how it is backed, where NUMA places it, its memory
 * cgroup, and what KSM merges of it. The static parts come from the (live) definition; usage and
 * KSM are read from the host (/proc/PID/ksm_stat, the cgroup's usage file) when known.
 */
export interface GuestHostMemory {
  backing: {
    /** Huge page pools RAM regions take: page size (KiB) and pages; empty for base pages. */
    hugepages: Array<{ sizeKiB: number; pages: number }>;
    /** Where guest RAM comes from (libvirt <source type>): anonymous, file or memfd. */
    source: 'anonymous' | 'file' | 'memfd';
    /** A shared mapping (<access mode='shared'>) somewhere in guest RAM. */
    shared: boolean;
    /** Locked in host memory (<locked/>). */
    locked: boolean;
    /** KSM may merge it (no <nosharepages/>). */
    mergeable: boolean;
  };
  /** Host NUMA placement of guest RAM (<numatune>), null: the host's default policy. */
  placement: { mode: string; nodeset: string; memnodes: Array<{ cell: number; mode: string; nodeset: string }> } | null;
  /** The guest's memory cgroup: its limits (KiB, null: unlimited) and what is charged now (null: unknown). */
  cgroup: { hardLimitKiB: number | null; softLimitKiB: number | null; usageKiB: number | null } | null;
  /** KSM on the guest's QEMU process (the kernel's per-process counters), null where unknown. */
  ksm: { mergingPages: number; mergingKiB: number; zeroPages: number | null; profitKiB: number | null } | null;
}

/** Whether a guest's backing is what libvirt gives when nothing is asked (dominfo then says nothing of it). */
export function isPlainBacking(b: GuestHostMemory['backing']): boolean {
  return b.hugepages.length === 0 && b.source === 'anonymous' && !b.shared && !b.locked && b.mergeable;
}

/** The API's GuestHostMemory document (docs/openapi.json): the face's record with sizes in bytes. */
export function hostMemoryDocument(h: GuestHostMemory): Record<string, unknown> {
  const bytes = (kib: number | null): number | null => (kib === null ? null : kib * 1024);
  return {
    backing: { ...h.backing, hugepages: h.backing.hugepages.map((p) => ({ pageSizeBytes: p.sizeKiB * 1024, pages: p.pages })) },
    placement: h.placement,
    cgroup: h.cgroup && { hardLimitBytes: bytes(h.cgroup.hardLimitKiB), softLimitBytes: bytes(h.cgroup.softLimitKiB), usageBytes: bytes(h.cgroup.usageKiB) },
    ksm: h.ksm && { mergingPages: h.ksm.mergingPages, mergingBytes: h.ksm.mergingKiB * 1024, zeroPages: h.ksm.zeroPages, profitBytes: bytes(h.ksm.profitKiB) },
  };
}

/** The face's GuestHostMemory from its API document (the daemon's client). */
export function hostMemoryFromDocument(d: Record<string, any>): GuestHostMemory {
  const kib = (b: number | null): number | null => (b === null ? null : Math.trunc(b / 1024));
  return {
    backing: { ...d.backing, hugepages: d.backing.hugepages.map((p: { pageSizeBytes: number; pages: number }) => ({ sizeKiB: p.pageSizeBytes / 1024, pages: p.pages })) },
    placement: d.placement,
    cgroup: d.cgroup && { hardLimitKiB: kib(d.cgroup.hardLimitBytes), softLimitKiB: kib(d.cgroup.softLimitBytes), usageKiB: kib(d.cgroup.usageBytes) },
    ksm: d.ksm && { mergingPages: d.ksm.mergingPages, mergingKiB: d.ksm.mergingBytes / 1024, zeroPages: d.ksm.zeroPages, profitKiB: kib(d.ksm.profitBytes) },
  };
}
