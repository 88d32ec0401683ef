/**
 * How QEMU's answers and events change a guest's live view (driver/view.ts): the native
 * watch's half of the view. Pure.
 */
import type { BalloonGuestStats, MemoryDeviceInfo } from '../../qmp/index.js';
import { applyBalloon, reportTimeS, setState, type GuestStatsView, type GuestView } from '../view.js';

/** An answer of query-memory-devices. Returns whether the model changed. */
export function applyDevices(m: GuestView, devices: readonly MemoryDeviceInfo[], nowS: number): boolean {
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
const STAT_KEYS: ReadonlyArray<[qemu: string, key: Exclude<keyof GuestStatsView, 'lastUpdateS'>]> = [
  ['stat-total-memory', 'availableBytes'],
  ['stat-available-memory', 'usableBytes'],
  ['stat-free-memory', 'unusedBytes'],
  ['stat-disk-caches', 'diskCachesBytes'],
  ['stat-swap-in', 'swapInBytes'],
  ['stat-swap-out', 'swapOutBytes'],
  ['stat-major-faults', 'majorFaults'],
  ['stat-minor-faults', 'minorFaults'],
];

/**
 * An answer of qom-get guest-stats. Statistics reported as -1 stay absent. `takenAtS`: when the
 * report was taken, where the caller knows it closer than QEMU's whole second (a report it asked
 * for and saw arrive); kept only within that second. Returns whether the model changed.
 */
export function applyGuestStats(m: GuestView, raw: BalloonGuestStats, nowS: number, takenAtS?: number): boolean {
  const next: GuestStatsView = {};
  for (const [q, k] of STAT_KEYS) {
    const v = raw.stats[q];
    if (typeof v === 'number' && v >= 0) next[k] = v;
  }
  if (raw.lastUpdate > 0) next.lastUpdateS = reportTimeS(raw.lastUpdate, takenAtS, m.stats.lastUpdateS);
  const changed = JSON.stringify(next) !== JSON.stringify(m.stats);
  m.stats = next;
  if (changed) m.updatedAtS = nowS;
  return changed;
}

/** Counts a size event in the view's counters. Returns whether `event` is one (QEMU sends each at most once a second per device). */
export function countSizeEvent(m: GuestView, event: string): boolean {
  if (event === 'BALLOON_CHANGE') m.counters.balloonChanges++;
  else if (event === 'MEMORY_DEVICE_SIZE_CHANGE') m.counters.deviceSizeChanges++;
  else return false;
  return true;
}

/**
 * The size a BALLOON_CHANGE or MEMORY_DEVICE_SIZE_CHANGE carries. `balloonBaseBytes`: what
 * QEMU's balloon sizes count beyond boot RAM (the DIMMs, qemu-memory.ts balloonBaseKiB).
 * Returns whether the model changed.
 */
export function applySizeEvent(m: GuestView, event: string, data: Record<string, unknown>, nowS: number, balloonBaseBytes = 0): boolean {
  if (event === 'BALLOON_CHANGE') return typeof data.actual === 'number' ? applyBalloon(m, data.actual - balloonBaseBytes, nowS) : false;
  if (event !== 'MEMORY_DEVICE_SIZE_CHANGE') return false;
  const d = m.devices.find((x) => x.id === data.id);
  if (!d || typeof data.size !== 'number' || d.pluggedBytes === data.size) return false;
  d.pluggedBytes = data.size;
  m.updatedAtS = nowS;
  return true;
}

/** A QMP event: counted, and its size or state taken. Returns whether the model changed. */
export function applyEvent(m: GuestView, event: string, data: Record<string, unknown>, nowS: number, balloonBaseBytes = 0): boolean {
  if (countSizeEvent(m, event)) return applySizeEvent(m, event, data, nowS, balloonBaseBytes);
  switch (event) {
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
