/**
 * The daemon's live model of one guest's memory and how QEMU events change it. Pure: the
 * watcher (guest-watcher.ts) feeds it answers and events; the HTTP layer and /metrics read it.
 */
import type { DomainDef } from '../domain/definition.js';
import type { DomainState } from '../driver/native/run-status.js';
import { defLayout } from '../driver/memory/layout.js';
import type { BalloonGuestStats, MemoryDeviceInfo } from '../qmp/index.js';
import { freshStallPct, type GuestPressure } from './guest-pressure.js';

/** The daemon's connection to the guest's watch monitor. */
export type MonitorState = 'connecting' | 'connected' | 'stale' | 'down';

export interface DeviceModel {
  id: string;
  model: 'virtio-mem' | 'dimm';
  sizeBytes: number;
  requestedBytes: number;
  pluggedBytes: number;
}

/** Guest statistics in bytes/counts; a key is absent when the guest never reported it. */
export interface GuestStatsModel {
  availableBytes?: number;
  usableBytes?: number;
  unusedBytes?: number;
  diskCachesBytes?: number;
  swapInBytes?: number;
  swapOutBytes?: number;
  majorFaults?: number;
  minorFaults?: number;
  /** Seconds since the epoch of the guest's last report (absent: never). */
  lastUpdateS?: number;
}

export interface GuestModel {
  name: string;
  uuid: string;
  id: number | null;
  state: DomainState;
  monitor: MonitorState;
  staleSinceS: number | null;
  qemuPid: number | null;
  maxMemoryBytes: number;
  /** The target last set (live definition's current memory). */
  targetBytes: number;
  bootBytes: number;
  hasBalloon: boolean;
  /** Deflate on guest OOM: the guest's MemTotal then still counts the balloon's pages. */
  balloonAutodeflate: boolean;
  balloonBytes: number;
  balloonTargetBytes: number | null;
  dimmBytes: number;
  devices: DeviceModel[];
  statsPeriodS: number;
  stats: GuestStatsModel;
  /** The guest's own memory stall, where it reports one (src/daemon/guest-pressure.ts). */
  pressure: GuestPressure | null;
  rssBytes: number | null;
  updatedAtS: number;
  /** Counters since the daemon started watching. */
  counters: { balloonChanges: number; deviceSizeChanges: number; monitorTimeouts: number; reconnects: number };
}

const KIB = 1024;

/** A fresh model from the live definition, before QEMU answered anything. */
export function modelFromDefinition(live: DomainDef, info: { id: number | null; state: DomainState; pid: number | null }, nowS: number): GuestModel {
  const layout = defLayout(live);
  const devices: DeviceModel[] = layout.vmem.map((v) => ({ id: v.id, model: 'virtio-mem', sizeBytes: v.sizeKiB * KIB, requestedBytes: v.pluggedKiB * KIB, pluggedBytes: v.pluggedKiB * KIB }));
  const hasBalloon = live.balloon.model !== 'none';
  const requested = layout.vmem.reduce((s, v) => s + v.pluggedKiB, 0);
  const balloonTargetKiB = Math.min(layout.bootKiB, Math.max(0, live.memory.currentKiB - layout.dimmKiB - requested));
  return {
    name: live.name, uuid: live.uuid, id: info.id, state: info.state, monitor: 'connecting', staleSinceS: null,
    qemuPid: info.pid, maxMemoryBytes: live.memory.maxKiB * KIB, targetBytes: live.memory.currentKiB * KIB,
    bootBytes: layout.bootKiB * KIB, hasBalloon, balloonAutodeflate: hasBalloon && live.balloon.autodeflate, balloonBytes: layout.bootKiB * KIB,
    balloonTargetBytes: hasBalloon ? balloonTargetKiB * KIB : null, dimmBytes: layout.dimmKiB * KIB, devices,
    statsPeriodS: live.balloon.statsPeriodS, stats: {}, pressure: null, rssBytes: null, updatedAtS: nowS,
    counters: { balloonChanges: 0, deviceSizeChanges: 0, monitorTimeouts: 0, reconnects: 0 },
  };
}

/** Take the targets of a (possibly changed) live definition: after setmem/setmaxmem. */
export function applyDefinition(m: GuestModel, live: DomainDef, nowS: number): boolean {
  const fresh = modelFromDefinition(live, { id: m.id, state: m.state, pid: m.qemuPid }, nowS);
  let changed = false;
  for (const k of ['maxMemoryBytes', 'targetBytes', 'balloonTargetBytes', 'statsPeriodS', 'bootBytes', 'dimmBytes'] as const) {
    if (m[k] !== fresh[k]) { (m as unknown as Record<string, unknown>)[k] = fresh[k]; changed = true; }
  }
  // New devices (setmaxmem --live hot-adds one); sizes and requests from the definition.
  for (const d of fresh.devices) {
    const have = m.devices.find((x) => x.id === d.id);
    if (!have) { m.devices.push(d); changed = true; continue; }
    if (have.sizeBytes !== d.sizeBytes || have.requestedBytes !== d.requestedBytes) {
      have.sizeBytes = d.sizeBytes; have.requestedBytes = d.requestedBytes; changed = true;
    }
  }
  if (changed) m.updatedAtS = nowS;
  return changed;
}

/** An answer of query-balloon. Returns whether the model changed. */
export function applyBalloon(m: GuestModel, actualBytes: number, nowS: number): boolean {
  if (m.balloonBytes === actualBytes) return false;
  m.balloonBytes = actualBytes;
  m.updatedAtS = nowS;
  return true;
}

/** An answer of query-memory-devices. Returns whether the model changed. */
export function applyDevices(m: GuestModel, devices: readonly MemoryDeviceInfo[], nowS: number): boolean {
  let changed = false;
  for (const d of devices) {
    if (d.type !== 'virtio-mem' || !d.id) continue;
    let have = m.devices.find((x) => x.id === d.id);
    if (!have) {
      have = { id: d.id, model: 'virtio-mem', sizeBytes: d.maxSizeBytes, requestedBytes: d.requestedSizeBytes, pluggedBytes: d.sizeBytes };
      m.devices.push(have);
      changed = true;
      continue;
    }
    if (have.pluggedBytes !== d.sizeBytes || have.requestedBytes !== d.requestedSizeBytes || have.sizeBytes !== d.maxSizeBytes) {
      have.pluggedBytes = d.sizeBytes; have.requestedBytes = d.requestedSizeBytes; have.sizeBytes = d.maxSizeBytes;
      changed = true;
    }
  }
  if (changed) m.updatedAtS = nowS;
  return changed;
}

/** QEMU stat keys -> model keys. */
const STAT_KEYS: ReadonlyArray<[qemu: string, key: Exclude<keyof GuestStatsModel, 'lastUpdateS'>]> = [
  ['stat-total-memory', 'availableBytes'],
  ['stat-available-memory', 'usableBytes'],
  ['stat-free-memory', 'unusedBytes'],
  ['stat-disk-caches', 'diskCachesBytes'],
  ['stat-swap-in', 'swapInBytes'],
  ['stat-swap-out', 'swapOutBytes'],
  ['stat-major-faults', 'majorFaults'],
  ['stat-minor-faults', 'minorFaults'],
];

/** An answer of qom-get guest-stats. Statistics reported as -1 stay absent. Returns whether the model changed. */
export function applyGuestStats(m: GuestModel, raw: BalloonGuestStats, nowS: number): boolean {
  const next: GuestStatsModel = {};
  for (const [q, k] of STAT_KEYS) {
    const v = raw.stats[q];
    if (typeof v === 'number' && v >= 0) next[k] = v;
  }
  if (raw.lastUpdate > 0) next.lastUpdateS = raw.lastUpdate;
  const changed = JSON.stringify(next) !== JSON.stringify(m.stats);
  m.stats = next;
  if (changed) m.updatedAtS = nowS;
  return changed;
}

/** A QMP event. Returns whether the model changed. */
export function applyEvent(m: GuestModel, event: string, data: Record<string, unknown>, nowS: number): boolean {
  switch (event) {
    case 'BALLOON_CHANGE':
      m.counters.balloonChanges++;
      return typeof data.actual === 'number' ? applyBalloon(m, data.actual, nowS) : false;
    case 'MEMORY_DEVICE_SIZE_CHANGE': {
      m.counters.deviceSizeChanges++;
      const d = m.devices.find((x) => x.id === data.id);
      if (!d || typeof data.size !== 'number' || d.pluggedBytes === data.size) return false;
      d.pluggedBytes = data.size;
      m.updatedAtS = nowS;
      return true;
    }
    case 'STOP':
      return setState(m, 'paused', nowS);
    case 'RESUME':
      return setState(m, 'running', nowS);
    case 'SHUTDOWN':
      return setState(m, 'shutoff', nowS);
    default:
      return false;
  }
}

export function setState(m: GuestModel, state: DomainState, nowS: number): boolean {
  if (m.state === state) return false;
  m.state = state;
  m.updatedAtS = nowS;
  return true;
}

export function setMonitor(m: GuestModel, monitor: MonitorState, nowS: number): boolean {
  if (m.monitor === monitor) return false;
  const wasCurrent = m.monitor === 'connected';
  m.monitor = monitor;
  if (monitor === 'connected') m.staleSinceS = null;
  else if (wasCurrent || m.staleSinceS === null) m.staleSinceS = nowS;
  m.updatedAtS = nowS;
  return true;
}

export const pluggedBytes = (m: GuestModel): number => m.devices.reduce((s, d) => s + (d.model === 'virtio-mem' ? d.pluggedBytes : 0), 0);
export const totalBytes = (m: GuestModel): number => m.balloonBytes + m.dimmBytes + pluggedBytes(m);

/** The API's Guest document (docs/openapi.json#/components/schemas/Guest). */
export function guestDocument(m: GuestModel, nowS: number): Record<string, unknown> {
  const vmem = m.devices.filter((d) => d.model === 'virtio-mem');
  const stats: Record<string, unknown> = {
    periodS: m.statsPeriodS,
    ageS: m.stats.lastUpdateS === undefined ? null : Math.max(0, Math.round((nowS - m.stats.lastUpdateS) * 10) / 10),
    ...m.stats,
  };
  if (m.rssBytes !== null) stats.rssBytes = m.rssBytes;
  const stall = freshStallPct(m.pressure, nowS);
  if (stall !== undefined) stats.stallPct = Math.round(stall * 100) / 100;
  return {
    name: m.name, uuid: m.uuid, id: m.id, state: m.state, monitor: m.monitor, stale: m.monitor !== 'connected',
    staleSinceS: m.staleSinceS, maxMemoryBytes: m.maxMemoryBytes,
    memory: {
      totalBytes: totalBytes(m), targetBytes: m.targetBytes, bootBytes: m.bootBytes, balloonBytes: m.balloonBytes,
      balloonTargetBytes: m.balloonTargetBytes, dimmBytes: m.dimmBytes, pluggedBytes: pluggedBytes(m),
      requestedBytes: vmem.reduce((s, d) => s + d.requestedBytes, 0), hotplugSizeBytes: vmem.reduce((s, d) => s + d.sizeBytes, 0),
      devices: m.devices.map((d) => ({ ...d })),
    },
    stats, updatedAtS: m.updatedAtS, qemuPid: m.qemuPid,
  };
}

/** The API's DomainSummary document. */
export function summaryDocument(m: Pick<GuestModel, 'name' | 'uuid' | 'id' | 'state' | 'monitor'>): Record<string, unknown> {
  return { name: m.name, uuid: m.uuid, id: m.id, state: m.state, monitor: m.monitor, stale: m.state !== 'shutoff' && m.monitor !== 'connected' };
}
