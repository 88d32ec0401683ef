/**
 * A guest's live memory view: what a driver's watch (api.ts `DriverWatch`) keeps current for
 * every running guest of its host, from the hypervisor's events and answers (QEMU's on the
 * native driver, libvirt's on a libvirt host). Pure: the watches feed it; the daemon, the HTTP
 * API, /metrics and the policy read it. Sizes are bytes, as QEMU reports them.
 */
import type { DomainDef } from '../domain/definition.js';
import type { DomainState } from './api.js';
import { defLayout } from './memory/layout.js';
import { memoryTotal } from './memory/rules.js';
import { definedHostMemory, sameHostMemory } from './memory/guest-host-memory.js';
import type { GuestHostMemory } from './domain-memory-api.js';

/** The guest's own memory stall (PSI), where it reports one (native/guest-pressure.ts). */
export interface GuestPressure {
  /** Share of the time between the last two reports some task stalled on memory (percent). */
  somePct: number;
  /** The kernel's own 10 s average (percent). */
  someAvg10: number;
  /** When the last report arrived (seconds since the epoch, host clock). */
  atS: number;
}

/**
 * When a guest's statistics report was taken: the hypervisor says it to the whole second
 * (`lastUpdateS`); a watch that asked for the report and saw it arrive knows it closer
 * (`takenAtS`), and a later read of a report of the same second keeps the finer time the view
 * had (`prevS`). A finer time outside the report's second is not taken. Pure.
 */
export function reportTimeS(lastUpdateS: number, takenAtS: number | undefined, prevS: number | undefined): number {
  const within = (t: number | undefined): t is number => t !== undefined && t >= lastUpdateS && t < lastUpdateS + 1;
  return within(takenAtS) ? takenAtS : within(prevS) ? prevS : lastUpdateS;
}

/** A report older than this (the guest sends one a second) is not shown or acted on. */
export const PRESSURE_FRESH_S = 3;

/** The stall share of a report that is still fresh at `nowS`, else undefined. */
export function freshStallPct(p: { somePct: number; atS: number } | null | undefined, nowS: number): number | undefined {
  return p && nowS - p.atS <= PRESSURE_FRESH_S ? p.somePct : undefined;
}

/**
 * The watch's line to the guest: its watch monitor (native), or its host's connection
 * (libvirt). Anything but 'connected' means the numbers may be old.
 */
export type MonitorState = 'connecting' | 'connected' | 'stale' | 'down';

export interface DeviceView {
  id: string;
  model: 'virtio-mem' | 'dimm';
  sizeBytes: number;
  requestedBytes: number;
  pluggedBytes: number;
}

/** Guest statistics in bytes/counts; a key is absent when the guest never reported it. */
export interface GuestStatsView {
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

export interface GuestView {
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
  devices: DeviceView[];
  statsPeriodS: number;
  stats: GuestStatsView;
  /** The guest's own memory stall, where it reports one (src/daemon/guest-pressure.ts). */
  pressure: GuestPressure | null;
  rssBytes: number | null;
  /** CPU time the guest's QEMU used (seconds), as last read (every tick); null when unknown. */
  cpuTimeS: number | null;
  updatedAtS: number;
  /** Counters since the daemon started watching. */
  counters: { balloonChanges: number; deviceSizeChanges: number; monitorTimeouts: number; reconnects: number };
  /**
   * The guest's memory on the host: backing, NUMA placement and cgroup limits from its live
   * definition; cgroup usage and KSM as the watch last read them (absent where the driver cannot tell).
   */
  hostMemory?: GuestHostMemory;
}

const KIB = 1024;

/** A fresh model from the live definition, before QEMU answered anything. */
export function viewFromDefinition(live: DomainDef, info: { id: number | null; state: DomainState; pid: number | null }, nowS: number): GuestView {
  const layout = defLayout(live);
  const devices: DeviceView[] = layout.vmem.map((v) => ({ id: v.id, model: 'virtio-mem', sizeBytes: v.sizeKiB * KIB, requestedBytes: v.pluggedKiB * KIB, pluggedBytes: v.pluggedKiB * KIB }));
  const hasBalloon = live.balloon.model !== 'none';
  const requested = layout.vmem.reduce((s, v) => s + v.pluggedKiB, 0);
  const balloonTargetKiB = Math.min(layout.bootKiB, Math.max(0, live.memory.currentKiB - layout.dimmKiB - requested));
  return {
    name: live.name, uuid: live.uuid, id: info.id, state: info.state, monitor: 'connecting', staleSinceS: null,
    qemuPid: info.pid, maxMemoryBytes: live.memory.maxKiB * KIB, targetBytes: live.memory.currentKiB * KIB,
    bootBytes: layout.bootKiB * KIB, hasBalloon, balloonAutodeflate: hasBalloon && live.balloon.autodeflate, balloonBytes: layout.bootKiB * KIB,
    balloonTargetBytes: hasBalloon ? balloonTargetKiB * KIB : null, dimmBytes: layout.dimmKiB * KIB, devices,
    statsPeriodS: live.balloon.statsPeriodS, stats: {}, pressure: null, rssBytes: null, cpuTimeS: null, updatedAtS: nowS,
    counters: { balloonChanges: 0, deviceSizeChanges: 0, monitorTimeouts: 0, reconnects: 0 },
    hostMemory: definedHostMemory(live),
  };
}

/** Take the targets of a (possibly changed) live definition: after setmem/setmaxmem. */
export function applyDefinition(m: GuestView, live: DomainDef, nowS: number): boolean {
  const fresh = viewFromDefinition(live, { id: m.id, state: m.state, pid: m.qemuPid }, nowS);
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
  // Backing, placement and limits follow the definition; what the host counts stays until read again.
  if (fresh.hostMemory && m.hostMemory) {
    const next: GuestHostMemory = {
      ...fresh.hostMemory, ksm: m.hostMemory.ksm,
      cgroup: fresh.hostMemory.cgroup && { ...fresh.hostMemory.cgroup, usageKiB: m.hostMemory.cgroup?.usageKiB ?? null },
    };
    if (!sameHostMemory(next, m.hostMemory)) { m.hostMemory = next; changed = true; }
  }
  if (changed) m.updatedAtS = nowS;
  return changed;
}

/** A host-memory reading (guest-host-memory.ts): taken when it differs. Returns whether the model changed. */
export function applyHostMemory(m: GuestView, h: GuestHostMemory, nowS: number): boolean {
  if (sameHostMemory(m.hostMemory, h)) return false;
  m.hostMemory = h;
  m.updatedAtS = nowS;
  return true;
}

/** A new memory target was sent (a driver's fast path): the view takes it at once, the balloon its share of it. */
export function applyTarget(m: GuestView, currentKiB: number, nowS: number): void {
  const requested = m.devices.reduce((s, d) => s + (d.model === 'virtio-mem' ? d.requestedBytes : 0), 0);
  m.targetBytes = currentKiB * 1024;
  if (m.hasBalloon) m.balloonTargetBytes = Math.min(m.bootBytes, Math.max(0, m.targetBytes - m.dimmBytes - requested));
  m.updatedAtS = nowS;
}

/** An answer of query-balloon. Returns whether the model changed. */
export function applyBalloon(m: GuestView, actualBytes: number, nowS: number): boolean {
  if (m.balloonBytes === actualBytes) return false;
  m.balloonBytes = actualBytes;
  m.updatedAtS = nowS;
  return true;
}

export function setState(m: GuestView, state: DomainState, nowS: number): boolean {
  if (m.state === state) return false;
  m.state = state;
  m.updatedAtS = nowS;
  return true;
}

export function setMonitor(m: GuestView, monitor: MonitorState, nowS: number): boolean {
  if (m.monitor === monitor) return false;
  const wasCurrent = m.monitor === 'connected';
  m.monitor = monitor;
  if (monitor === 'connected') m.staleSinceS = null;
  else if (wasCurrent || m.staleSinceS === null) m.staleSinceS = nowS;
  m.updatedAtS = nowS;
  return true;
}

/**
 * Whether the guest holds what was last asked of it: every virtio-mem device has its request
 * plugged and the balloon is at its target. While not, its sizes move faster than QEMU's size
 * events (at most one a second) tell.
 */
export const memorySettled = (m: GuestView): boolean =>
  m.devices.every((d) => d.pluggedBytes === d.requestedBytes) && (m.balloonTargetBytes === null || m.balloonBytes === m.balloonTargetBytes);

export const pluggedBytes = (m: GuestView): number => m.devices.reduce((s, d) => s + (d.model === 'virtio-mem' ? d.pluggedBytes : 0), 0);
/** What the guest has now (memory/rules.ts `memoryTotal`). */
export const totalBytes = (m: GuestView): number =>
  memoryTotal({ boot: m.bootBytes, balloon: m.hasBalloon ? m.balloonBytes : null, dimm: m.dimmBytes, plugged: m.devices.map((d) => (d.model === 'virtio-mem' ? d.pluggedBytes : 0)) });

