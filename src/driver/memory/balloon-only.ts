/**
 * The common change, planned from a guest's live view (the watch's, kept current by the
 * hypervisor's events) instead of asking the hypervisor first: a live balloon target where the
 * plan cannot touch virtio-mem (nothing plugged or requested, the target within boot RAM) and no
 * DIMMs change what the balloon's sizes mean. Both drivers' fast paths take it from here; every
 * other change takes their full path.
 */
import { invalidArg } from '../../domain/errors.js';
import type { MemorySplit } from '../../domain/memory.js';
import { totalBytes, type GuestView } from '../view.js';
import { balloonHeldKiB, checkAboveDimms, checkBelowMaximum, checkMemorySize, growthRefusal, guestInUseKiB, shrinkRefusal } from './rules.js';

/**
 * Whether `kib` is a balloon-only change of the guest `v`, checked as the full path checks it:
 * null when it is not one (the full path decides), else where the guest is now.
 * @throws VirtError INVALID_ARG for a size below `floorKiB` or above the maximum, and for a
 *   guard rail (unless `force`): the guest's use on the way down, the host's free memory on the way up
 */
export function balloonOnlyChange(v: GuestView, kib: number, o: { floorKiB: number | null; force: boolean; hostAvailableKiB: number | null; split?: MemorySplit | undefined }): { startKiB: number } | null {
  if (v.monitor !== 'connected' || v.state === 'shutoff' || !v.hasBalloon) return null;
  if (v.devices.some((d) => d.model === 'virtio-mem' && (d.requestedBytes !== 0 || d.pluggedBytes !== 0))) return null;
  // Another split may plug where the plain one deflates (plan.ts planSplit): the full path plans it.
  if ((o.split ?? 'plain') !== 'plain' && v.devices.some((d) => d.model === 'virtio-mem')) return null;
  const bootKiB = Math.floor(v.bootBytes / 1024);
  const dimmKiB = Math.floor(v.dimmBytes / 1024);
  if (dimmKiB > 0 || kib > bootKiB) return null;
  checkMemorySize(kib, o.floorKiB);
  checkBelowMaximum(kib, Math.floor(v.maxMemoryBytes / 1024));
  checkAboveDimms(kib, dimmKiB);
  const startKiB = Math.floor(totalBytes(v) / 1024);
  if (!o.force) {
    const st = v.stats;
    const why = kib < startKiB
      ? shrinkRefusal(kib, guestInUseKiB({ totalKiB: st.availableBytes === undefined ? undefined : st.availableBytes / 1024, availableKiB: st.usableBytes === undefined ? undefined : st.usableBytes / 1024, lastUpdateS: st.lastUpdateS }, balloonHeldKiB(v.balloonAutodeflate, Math.floor(v.bootBytes / 1024), Math.floor(v.balloonBytes / 1024))))
      : kib > startKiB ? growthRefusal(kib - startKiB, o.hostAvailableKiB) : null;
    if (why) throw invalidArg(why);
  }
  return { startKiB };
}
