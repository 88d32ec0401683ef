/**
 * The memory rules every driver obeys, in one place: which side a change affects (libvirt's
 * live/config/current), the sizes a target may have, what "the guest's memory now" is, the
 * guard rails' verdicts, and the wait that follows a change until the guest is there. The
 * native driver and the libvirt driver both call these; their own code only talks to QEMU or
 * libvirt. Pure but for `followMemory` and `guestTotalBaseline`, which wait on what their caller
 * gives them.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { VirtError, invalidArg } from '../../domain/errors.js';
import type { AffectFlags } from '../api.js';
import type { MemoryLayout, MemoryPlan } from './plan.js';

export { VIRTIO_MEM_BLOCK_KIB } from '../../domain/memory.js';

/** Bound on a whole `setmem --wait` unless the caller gives one. */
export const WAIT_TIMEOUT_MS = 300_000;
/** A followed change fails when nothing moves for this long (guest out of memory to give, driver missing). */
export const WAIT_STALL_MS = 10_000;
/**
 * While a caller waits for a change on a connection held open, the sizes are read this often:
 * QEMU sends each size event at most once a second (BALLOON_CHANGE, MEMORY_DEVICE_SIZE_CHANGE),
 * so a wait driven by events ended up to a second after the guest got there (a 64 MiB balloon
 * change waited ~1,006 ms every time, where libvirt's API path polling its statistics took
 * 33-127 ms).
 */
export const MOVING_POLL_MS = 20;
/**
 * ... and once nothing moved for QUIET_AFTER_MS, no more often than every QUIET_POLL_MS: a guest
 * slow to give memory back is not asked fifty times a second until the stall bound.
 */
const QUIET_AFTER_MS = 1_000;
const QUIET_POLL_MS = 200;

/**
 * The memory a guest has: boot RAM as the balloon leaves it (all of it without a balloon),
 * DIMMs, and plugged virtio-mem. Any unit, the same for every part.
 */
export function memoryTotal(p: { boot: number; balloon: number | null; dimm: number; plugged: readonly number[] }): number {
  return (p.balloon ?? p.boot) + p.dimm + p.plugged.reduce((s, x) => s + x, 0);
}

/**
 * libvirt's live/config/current, resolved against the domain's state. `none` says what no flag
 * means: 'current' (live when running, else config: libvirt's default) or 'live' (virsh setmem's
 * legacy API).
 * @throws VirtError OPERATION_INVALID when the live side is asked of a domain that is not running
 */
export function resolveAffect(f: AffectFlags & { current?: boolean }, running: boolean, none: 'current' | 'live' = 'current'): { live: boolean; config: boolean } {
  const given = !!(f.live || f.config);
  const flags = f.current || (!given && none === 'current') ? { live: running, config: !running } : given ? { live: !!f.live, config: !!f.config } : { live: true, config: false };
  if (flags.live && !running) throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: domain is not running');
  return flags;
}

/**
 * setmem's flags: no flag means live (virsh's legacy API), and `wait` needs the live side.
 * @throws VirtError OPERATION_INVALID (live on a domain that is not running), INVALID_ARG (wait without live)
 */
export function resolveSetMemoryAffect(o: AffectFlags & { current?: boolean; wait?: boolean }, running: boolean): { live: boolean; config: boolean } {
  const flags = resolveAffect(o, running, 'live');
  if (o.wait && !flags.live) throw invalidArg('--wait needs a live change: the domain is not running or --config was given alone');
  return flags;
}

/**
 * A memory size a caller asks for (setmem, setmaxmem): never zero (libvirt's client library
 * refuses that before sending anything, in these words), and, where the driver has one, not
 * below its floor.
 * @throws VirtError INVALID_ARG
 */
export function checkMemorySize(kib: number, floorKiB: number | null): void {
  if (!Number.isSafeInteger(kib) || kib <= 0) throw invalidArg('memory in virDomainSetMemoryFlags must not be zero');
  if (floorKiB !== null && kib < floorKiB) {
    throw invalidArg(`invalid argument: memory size ${kib} KiB is below the minimum of ${floorKiB} KiB a guest needs`);
  }
}

/** @throws VirtError INVALID_ARG when `kib` is above the guest's maximum. */
export function checkBelowMaximum(kib: number, maxKiB: number): void {
  if (kib > maxKiB) throw invalidArg(`invalid argument: cannot set memory higher than max memory (${kib} KiB > ${maxKiB} KiB)`);
}

/** @throws VirtError INVALID_ARG when `kib` would leave nothing above the DIMMs (which cannot be taken away). */
export function checkAboveDimms(kib: number, dimmKiB: number): void {
  if (kib <= dimmKiB) throw invalidArg(`invalid argument: ${kib} KiB is not more than the ${dimmKiB} KiB of DIMMs, which cannot be taken away`);
}

/** @throws VirtError OPERATION_INVALID when a plan needs the balloon (less than boot RAM) and the guest has none. */
export function checkBalloonPlan(hasBalloon: boolean, planBalloonKiB: number, bootKiB: number): void {
  if (!hasBalloon && planBalloonKiB !== bootKiB) {
    throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: Unable to change memory of active domain without the balloon device and guest OS balloon driver');
  }
}

/**
 * What the guest uses by its own account: MemTotal - MemAvailable from its balloon statistics
 * (libvirt calls them "available" and "usable"), less what the balloon holds when that is
 * counted in: with deflate-on-OOM Linux leaves MemTotal as it is when the balloon inflates
 * (only without it does the driver take the pages out of MemTotal), so the balloon's pages show
 * as used. `balloonHeldKiB` is what the balloon holds of boot RAM when the guest has
 * deflate-on-OOM, else 0 (balloonHeldKiB below). null without a report (statistics off, driver
 * not loaded): then there is nothing to go by.
 */
export function guestInUseKiB(s: { totalKiB?: number | undefined; availableKiB?: number | undefined; lastUpdateS?: number | undefined } | null, balloonHeldKiB = 0): number | null {
  if (!s || !s.lastUpdateS || s.totalKiB === undefined || s.availableKiB === undefined || s.totalKiB < 0 || s.availableKiB < 0) return null;
  return Math.max(0, Math.ceil(s.totalKiB - s.availableKiB - balloonHeldKiB));
}

/** What the balloon holds of boot RAM and the guest counts as used (deflate-on-OOM), for guestInUseKiB. Pure. */
export function balloonHeldKiB(autodeflate: boolean, bootKiB: number, balloonActualKiB: number | null): number {
  return autodeflate && balloonActualKiB !== null ? Math.max(0, bootKiB - balloonActualKiB) : 0;
}

/** Why shrinking to `targetKiB` would hurt a guest using `inUseKiB`, or null. */
export function shrinkRefusal(targetKiB: number, inUseKiB: number | null): string | null {
  if (inUseKiB === null || targetKiB >= inUseKiB) return null;
  return `refusing to shrink to ${targetKiB} KiB: the guest is using ${inUseKiB} KiB (MemTotal - MemAvailable from its statistics); use --force to shrink anyway`;
}

/** Why growing by `growKiB` is more than the host can back, or null. */
export function growthRefusal(growKiB: number, hostAvailableKiB: number | null): string | null {
  if (hostAvailableKiB === null || growKiB <= hostAvailableKiB) return null;
  return `refusing to grow by ${growKiB} KiB: the host has only ${hostAvailableKiB} KiB available (MemAvailable); use --force to grow anyway`;
}

/** A guest's memory parts as the wait reads them (KiB). */
export interface MemorySizes {
  /** Balloon actual (boot RAM the guest has); null without a balloon. */
  balloonKiB: number | null;
  /** Plugged size per virtio-mem device, in the plan's order. */
  pluggedKiB: number[];
  totalKiB: number;
}

export interface FollowSpec {
  /** The domain, for messages. */
  name: string;
  plan: MemoryPlan;
  /** Device ids for messages, in the plan's order. */
  layout: MemoryLayout;
  start: MemorySizes;
  /** The sizes now (one round trip to the hypervisor). */
  read(): Promise<MemorySizes>;
  /**
   * Resolves when something may have changed (an event arrived) or after `ms`, whichever is
   * first; rejects when the connection to the guest is lost.
   */
  changed(ms: number): Promise<void>;
  /** How long to wait for news before reading again (events may be rate-limited). */
  pollMs(now: MemorySizes): number;
  timeoutMs?: number | undefined;
  stallMs?: number | undefined;
  onProgress?: ((p: { actualKiB: number; targetKiB: number; startKiB: number; elapsedMs: number }) => void) | undefined;
  signal?: AbortSignal | undefined;
  /**
   * The guest's own total (MemTotal from its balloon statistics) and when it was reported, or
   * null when it reports none. With it, memory plugged into the guest counts as reached only
   * once the guest's MemTotal shows it: QEMU's plugged size says the device offered the blocks,
   * not that the guest onlined them.
   */
  guestTotal?: (() => Promise<GuestTotal | null>) | undefined;
  /**
   * The guest's total before the change, for the comparison: from guestTotalBaseline, never
   * the guest's last report as it stands (that may predate the previous change). null skips it.
   */
  guestTotalBefore?: GuestTotal | null | undefined;
  /** Asks the guest for a statistics report now instead of at its next period. */
  refreshGuestTotal?: (() => Promise<void>) | undefined;
}

/** What the guest itself counts (its MemTotal), and when it said so (seconds since the epoch). */
export interface GuestTotal {
  totalKiB: number;
  atS: number;
}

/**
 * Bound on getting a baseline (guestTotalBaseline): a report the balloon asks for comes within
 * milliseconds; one stamped in the same second as the report before it cannot be told from it
 * and is asked for again once the clock enters the next second, so about a second and the
 * report's own way.
 */
export const GUEST_BASELINE_MS = 1_500;
/** While waiting for a baseline, the guest's statistics are read this often. */
const GUEST_BASELINE_POLL_MS = 20;

/**
 * The guest's total before memory is plugged into it, for followMemory's check that the guest
 * onlined it (FollowSpec.guestTotalBefore): a statistics report that arrived after this call
 * began, which is after the previous change settled (the caller holds the domain's job lock).
 * The guest's last report will not do: it comes once a period (5 s by default) and may predate
 * a shrink that just ended, so "before" would count memory the guest no longer has and a grow
 * it did online would look as if it had not. Asks for a report at once, and again in each new
 * second: statistics are stamped in whole seconds, so only a stamp later than the last one
 * read here tells a new report from it.
 *
 * Returns null when the guest reports nothing, or no new report comes within `boundMs` (a
 * guest too busy to answer): then there is no baseline to trust, followMemory skips the
 * check, and QEMU's plugged sizes stand rather than a NOT_REACHED from a stale comparison.
 * @throws VirtError ABORTED on the signal, and what `guestTotal` throws
 */
export async function guestTotalBaseline(src: Pick<FollowSpec, 'name' | 'guestTotal' | 'refreshGuestTotal' | 'signal'>, boundMs: number = GUEST_BASELINE_MS): Promise<GuestTotal | null> {
  if (!src.guestTotal) return null;
  const end = Date.now() + boundMs;
  const last = await src.guestTotal();
  if (last === null || !src.refreshGuestTotal) return null;
  let askedInS = -1;
  for (;;) {
    if (src.signal?.aborted) throw new VirtError('ABORTED', `asking domain '${src.name}' for its memory statistics: aborted`);
    const nowS = Math.floor(Date.now() / 1000);
    if (nowS > askedInS) {
      askedInS = nowS;
      // A failed request leaves the periodic report, which may still come within the bound.
      await src.refreshGuestTotal().catch(() => undefined);
    }
    const g = await src.guestTotal();
    if (g === null) return null;
    if (g.atS > last.atS) return g;
    if (Date.now() >= end) return null;
    await delay(Math.max(1, Math.min(GUEST_BASELINE_POLL_MS, end - Date.now())));
  }
}

/** Whether `now` is where the plan wants it. */
export function planReached(plan: MemoryPlan, now: MemorySizes): boolean {
  return (now.balloonKiB === null || now.balloonKiB === plan.balloonKiB)
    && plan.requestedKiB.every((r, i) => now.pluggedKiB[i] === r);
}

/**
 * Follows a change until the guest has the plan's sizes. The one wait of every driver: it
 * fails NOT_REACHED (naming the part that stopped and why it may have) when nothing moves for
 * `stallMs` or the whole wait passes `timeoutMs`, ABORTED on the signal, and with the caller's
 * error when the guest goes away.
 * @throws VirtError NOT_REACHED, ABORTED, or what `read`/`changed` throw
 */
export async function followMemory(spec: FollowSpec): Promise<MemorySizes> {
  const timeoutMs = spec.timeoutMs ?? WAIT_TIMEOUT_MS;
  const stallMs = spec.stallMs ?? WAIT_STALL_MS;
  const t0 = Date.now();
  let now = spec.start;
  let lastMove = t0;
  const report = (): void => spec.onProgress?.({ actualKiB: now.totalKiB, targetKiB: spec.plan.targetKiB, startKiB: spec.start.totalKiB, elapsedMs: Date.now() - t0 });
  report();
  while (!planReached(spec.plan, now)) {
    if (spec.signal?.aborted) throw new VirtError('ABORTED', `waiting for domain '${spec.name}' to reach ${spec.plan.targetKiB} KiB: aborted`);
    const left = Math.min(t0 + timeoutMs - Date.now(), lastMove + stallMs - Date.now());
    if (left <= 0) {
      const why = Date.now() - t0 >= timeoutMs ? `the wait timed out after ${Math.round(timeoutMs / 1000)} s` : `nothing moved for ${Math.round(stallMs / 1000)} s`;
      throw new VirtError('NOT_REACHED', notReachedMessage(spec, now, why));
    }
    const pollMs = Date.now() - lastMove >= QUIET_AFTER_MS ? Math.max(QUIET_POLL_MS, spec.pollMs(now)) : spec.pollMs(now);
    await spec.changed(Math.max(1, Math.min(left, pollMs)));
    const next = await spec.read();
    if (next.totalKiB !== now.totalKiB || next.balloonKiB !== now.balloonKiB || next.pluggedKiB.some((p, i) => p !== now.pluggedKiB[i])) {
      lastMove = Date.now();
      now = next;
      report();
    }
  }
  await confirmOnlined(spec, now, t0, timeoutMs, stallMs);
  return now;
}

/**
 * After a grow through virtio-mem: waits (bounded by the stall bound) for a statistics report
 * of the guest taken after the plug, and checks that its MemTotal grew by what was plugged
 * (less a block, or 1/32 of it where the kernel keeps new memory's page structures in that
 * memory itself). A guest
 * that did not online the memory fails NOT_REACHED saying so. Without statistics there is
 * nothing to check and QEMU's numbers stand.
 * @throws VirtError NOT_REACHED, ABORTED
 */
async function confirmOnlined(spec: FollowSpec, now: MemorySizes, t0: number, timeoutMs: number, stallMs: number): Promise<void> {
  const before = spec.guestTotalBefore;
  const grownKiB = now.pluggedKiB.reduce((s, p) => s + p, 0) - spec.start.pluggedKiB.reduce((s, p) => s + p, 0);
  if (!spec.guestTotal || !before || grownKiB <= 0) return;
  const pluggedAtS = Date.now() / 1000;
  const blockKiB = Math.max(0, ...spec.layout.vmem.map((d) => d.blockKiB));
  const end = Math.min(t0 + timeoutMs, Date.now() + stallMs);
  let last: GuestTotal | null = null;
  // A report now, not at the guest's next period (up to a period later).
  await spec.refreshGuestTotal?.().catch(() => undefined);
  for (;;) {
    if (spec.signal?.aborted) throw new VirtError('ABORTED', `waiting for domain '${spec.name}' to reach ${spec.plan.targetKiB} KiB: aborted`);
    const g = await spec.guestTotal();
    if (g === null) return; // the guest stopped reporting: QEMU's numbers stand
    last = g;
    // A report from after the plug (statistics are stamped in whole seconds).
    if (g.atS >= Math.floor(pluggedAtS)) {
      if (g.totalKiB - before.totalKiB >= grownKiB - blockKiB) return;
    }
    if (Date.now() >= end) break;
    await spec.changed(Math.max(1, Math.min(50, end - Date.now())));
  }
  throw new VirtError('NOT_REACHED', `memory target ${spec.plan.targetKiB} KiB not reached: domain '${spec.name}' has ${grownKiB} KiB more plugged through virtio-mem, but the guest's own MemTotal went from ${before.totalKiB} KiB to ${last?.totalKiB ?? before.totalKiB} KiB: it has not onlined the new memory (is hot-plugged memory onlined in the guest: memhp_default_state=online_movable or a udev rule?)`);
}

/** What stopped short, part by part. */
function notReachedMessage(spec: FollowSpec, now: MemorySizes, why: string): string {
  const parts: string[] = [];
  spec.layout.vmem.forEach((d, i) => {
    const want = spec.plan.requestedKiB[i]!;
    const have = now.pluggedKiB[i] ?? 0;
    if (have !== want) {
      parts.push(have > want
        ? `virtio-mem ${d.id} still has ${have} KiB plugged of the ${want} KiB asked for (the guest could not offline more memory: it is in use or not movable)`
        : `virtio-mem ${d.id} has ${have} KiB plugged of the ${want} KiB asked for (is the guest's virtio_mem driver loaded?)`);
    }
  });
  if (now.balloonKiB !== null && now.balloonKiB !== spec.plan.balloonKiB) {
    parts.push(now.balloonKiB > spec.plan.balloonKiB
      ? `the balloon stopped at ${now.balloonKiB} KiB of boot memory, target ${spec.plan.balloonKiB} KiB (is the guest's balloon driver loaded, or has it nothing left to free?)`
      : `the balloon holds ${now.balloonKiB} KiB of boot memory, target ${spec.plan.balloonKiB} KiB (is the guest's balloon driver loaded?)`);
  }
  return `memory target ${spec.plan.targetKiB} KiB not reached: domain '${spec.name}' stopped at ${now.totalKiB} KiB; ${why}: ${parts.join('; ') || 'the parts are there but the total differs'}`;
}
