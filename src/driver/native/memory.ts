/**
 * The native driver's memory operations: what QEMU says a guest has, setmem (one target split
 * between the balloon over boot RAM and the virtio-mem devices), setmaxmem (a virtio-mem device
 * hot-added into the space QEMU reserved at boot), the statistics period, and dommemstat. The
 * rules (flags, sizes, guard rails, the wait) are memory/rules.ts; this is the QMP side.
 *
 * Every persistent change is a read-modify-write of the definition under the domain's job lock
 * (NativeContext.current): a concurrent change is never lost, and a domain undefined meanwhile
 * stays undefined.
 */
import { queryBalloon, queryBalloonGuestStats, queryMemoryDevices, qomSet, requestBalloonGuestStats, setBalloon, type QmpClient, type QmpEventStream } from '../../qmp/index.js';
import type { DomainDef, VirtioMemDef } from '../../domain/definition.js';
import { VirtError, invalidArg } from '../../domain/errors.js';
import { MIN_MEMORY_KIB } from '../../domain/validate-def.js';
import type { AffectOptions, MemoryBreakdown, SetMemoryOptions, SetMemoryResult } from '../api.js';
import { defLayout, withRequested } from '../memory/layout.js';
import { planMemory, planChange, orderSteps, layoutMaxKiB, type MemoryLayout } from '../memory/plan.js';
import {
  balloonHeldKiB, checkAboveDimms, checkBalloonPlan, checkBelowMaximum, checkMemorySize, followMemory, growthRefusal, guestInUseKiB, guestTotalBaseline, memoryTotal, resolveAffect, resolveSetMemoryAffect, shrinkRefusal,
  MOVING_POLL_MS, VIRTIO_MEM_BLOCK_KIB, type GuestTotal, type MemorySizes,
} from '../memory/rules.js';
import { hostMemAvailableKiB } from '../memory/host-memory.js';
import { balloonOnlyChange } from '../memory/balloon-only.js';
import { toMemoryStats, type MemoryStats } from '../memory/stats.js';
import { BALLOON_QOM_PATH } from './qemu-argv.js';
import { hotAddMemoryDevice } from './hot-plug.js';
import { balloonBaseKiB } from './qemu-memory.js';
import { runRecordVersion, writeRunRecord, type RunningRecord } from './run-status.js';
import { monitorError, onHeldMonitor } from './monitor.js';
import { totalBytes } from '../view.js';
import { readRssKiB } from './host-process.js';
import type { NativeContext } from './context.js';

/** What QEMU reported about a running guest's memory. */
export interface LiveMemory {
  layout: MemoryLayout;
  /** Balloon "actual": how much of boot RAM the guest has. */
  balloonKiB: number;
  totalKiB: number;
}

/** What QEMU says about every part of a running guest's memory (one round trip). */
export async function queryLiveMemory(c: QmpClient, live: DomainDef): Promise<LiveMemory> {
  const layout = defLayout(live);
  const [bal, devices] = await Promise.all([
    live.balloon.model === 'none' ? null : queryBalloon(c),
    layout.vmem.length ? queryMemoryDevices(c) : [],
  ]);
  for (const v of layout.vmem) {
    const d = devices.find((x) => x.type === 'virtio-mem' && x.id === v.id);
    if (d && d.type === 'virtio-mem') { v.pluggedKiB = Math.floor(d.sizeBytes / 1024); v.requestedKiB = Math.floor(d.requestedSizeBytes / 1024); }
  }
  // QEMU's balloon counts DIMMs in its sizes (balloonBaseKiB); virtmem's balloon is boot RAM only.
  const balloonKiB = bal ? Math.floor(bal.actualBytes / 1024) - balloonBaseKiB(live) : layout.bootKiB;
  return { layout, balloonKiB, totalKiB: memoryTotal({ boot: layout.bootKiB, balloon: balloonKiB, dimm: layout.dimmKiB, plugged: layout.vmem.map((v) => v.pluggedKiB) }) };
}

const sizesOf = (m: LiveMemory, hasBalloon: boolean): MemorySizes => ({
  balloonKiB: hasBalloon ? m.balloonKiB : null, pluggedKiB: m.layout.vmem.map((v) => v.pluggedKiB), totalKiB: m.totalKiB,
});

/** Where a guest's memory is, from what QEMU said. */
export function breakdown(m: LiveMemory): MemoryBreakdown {
  return {
    bootKiB: m.layout.bootKiB, balloonKiB: m.balloonKiB, dimmKiB: m.layout.dimmKiB,
    pluggedKiB: m.layout.vmem.reduce((s, d) => s + d.pluggedKiB, 0), hotplugSizeKiB: layoutMaxKiB(m.layout) - m.layout.bootKiB - m.layout.dimmKiB,
  };
}

/** The split a shut-off domain's current memory will get at boot. */
export function planned(def: DomainDef): LiveMemory {
  const layout = defLayout(def);
  const plan = planMemory(layout, def.memory.currentKiB);
  plan.requestedKiB.forEach((r, i) => { layout.vmem[i]!.pluggedKiB = r; });
  return { layout, balloonKiB: plan.balloonKiB, totalKiB: def.memory.currentKiB };
}

/** A definition whose current memory is `kib`, its virtio-mem requests as the plan splits it. */
function withCurrent(def: DomainDef, kib: number): DomainDef {
  const plan = planMemory(defLayout(def), kib);
  return withRequested({ ...def, memory: { ...def.memory, currentKiB: kib } }, plan.requestedKiB);
}

/**
 * setmem: one memory target, the right mechanism underneath. Live, the total is split between
 * the balloon over boot RAM and the virtio-mem devices (memory/plan.ts); growing deflates
 * before it plugs, shrinking unplugs before it inflates. Config changes the memory at next boot.
 * @throws VirtError INVALID_ARG (above maximum, below floor, a guard rail), OPERATION_INVALID
 *   (not running, no balloon), NOT_REACHED (waited and the guest stopped short), NO_DOMAIN
 */
export async function setMemory(ctx: NativeContext, ref: string, kib: number, opts: SetMemoryOptions = {}): Promise<SetMemoryResult> {
  const fast = await fastBalloonChange(ctx, ref, kib, opts);
  if (fast) return fast;
  const { name } = await ctx.lookup(ref);
  checkMemorySize(kib, MIN_MEMORY_KIB);
  const lock = await ctx.lockDomain(name, opts.signal);
  try {
    const def = await ctx.current(name, ref);
    const o = await ctx.observe(name);
    const running = o.state !== 'shutoff';
    // virsh setmem without flags uses the legacy API, which means "live" (and fails on a
    // shut-off domain); --current means live when running, else config.
    const target = resolveSetMemoryAffect(opts, running);
    const result: SetMemoryResult = { targetKiB: kib, actualKiB: null, reached: false, live: target.live, config: target.config };
    if (target.config) checkBelowMaximum(kib, def.memory.maxKiB);
    if (!target.live || o.state === 'shutoff') {
      if (target.config) await ctx.store.save(withCurrent(def, kib));
      return result;
    }
    const rec = o.record;
    const live = rec.live;
    checkBelowMaximum(kib, live.memory.maxKiB);
    const hasBalloon = live.balloon.model === 'virtio';
    const change = await ctx.monitor(name, async (c) => {
      const now = await queryLiveMemory(c, live);
      checkAboveDimms(kib, now.layout.dimmKiB);
      const plan = planChange(now.layout, hasBalloon ? now.balloonKiB : null, kib, opts.split);
      checkBalloonPlan(hasBalloon, plan.balloonKiB, now.layout.bootKiB);
      if (!opts.force) await checkGuards(c, live, now, kib);
      // What the guest counts before memory is plugged into it, to see it onlined after: a
      // report from now, not its last one (rules.ts). Taken on this session, which it holds for at
      // most GUEST_BASELINE_MS more (under the job lock, which the change holds anyway).
      const before = opts.wait && opts.onliningCheck !== false && plan.requestedKiB.some((r, i) => r > now.layout.vmem[i]!.pluggedKiB)
        ? await guestTotalBaseline({ name, signal: opts.signal, guestTotal: () => guestTotal(c, live), refreshGuestTotal: () => requestGuestStats(c, live.balloon.statsPeriodS) })
        : null;
      for (const step of orderSteps(now.layout, hasBalloon ? now.balloonKiB : null, plan)) {
        if (step.kind === 'balloon') await setBalloon(c, (step.targetKiB + balloonBaseKiB(live)) * 1024);
        else await qomSet(c, `/machine/peripheral/${step.id}`, 'requested-size', step.requestedKiB * 1024);
      }
      // Without a wait the answer says where the guest is right after the change.
      const after = opts.wait ? null : await queryLiveMemory(c, live);
      return { now, plan, after, before };
    }, opts.signal);
    rec.live = withRequested({ ...live, memory: { ...live.memory, currentKiB: kib } }, change.plan.requestedKiB);
    await writeRunRecord(ctx.paths.run(name), rec);
    if (target.config) await ctx.store.save(withCurrent(def, kib));
    // The wait happens outside the job lock: other calls (dominfo, a new setmem) stay possible.
    await lock.release();
    if (!opts.wait) return { ...result, actualKiB: change.after?.totalKiB ?? null };
    const reached = await followLive(ctx, name, rec.live, change.now, change.plan, opts, change.before);
    result.actualKiB = reached.totalKiB;
    result.reached = reached.totalKiB === kib;
    return result;
  } finally {
    await lock.release();
  }
}

/**
 * The common change, fast: a live balloon target on a guest the watch follows (a running
 * daemon), planned from its live view instead of asking QEMU first, sent as one command on the
 * held monitor; the change is reported at once, and the run record is written after that,
 * still under the job lock. Only where the plan cannot touch virtio-mem (nothing plugged, the
 * target within boot RAM). Returns null for every other change: the full path takes it.
 * @throws VirtError as setMemory
 */
async function fastBalloonChange(ctx: NativeContext, ref: string, kib: number, opts: SetMemoryOptions): Promise<SetMemoryResult | null> {
  if (opts.config || opts.current || !ctx.held) return null;
  const v = ctx.held.view(ref);
  if (!v || !ctx.held.held(ref)) return null;
  const fast = balloonOnlyChange(v, kib, { floorKiB: MIN_MEMORY_KIB, force: opts.force ?? false, hostAvailableKiB: ctx.held.hostAvailableKiB(), split: opts.split });
  if (!fast) return null;
  const { startKiB } = fast;
  const name = v.name;
  const lock = await ctx.lockDomain(name, opts.signal);
  try {
    // Through the context, so a time-out says what the host shows of QEMU (stopped, gone).
    await ctx.monitor(name, (m) => setBalloon(m, kib * 1024), opts.signal);
    // No disk write on this path: the watch keeps the new target and writes the run record later.
    ctx.held.noteTarget(name, kib, runRecordVersion(ctx.paths.run(name)));
    opts.onProgress?.({ actualKiB: startKiB, targetKiB: kib, startKiB, elapsedMs: 0 });
  } finally {
    await lock.release();
  }
  const result: SetMemoryResult = { targetKiB: kib, actualKiB: null, reached: false, live: true, config: false };
  if (!opts.wait) return { ...result, actualKiB: startKiB };
  // The live definition as the watch holds it (no read of the run record on this path).
  const held = ctx.held?.live(name);
  if (!held) throw new VirtError('OPERATION_FAILED', `operation failed: domain '${name}' is no longer running`);
  const live = withRequested({ ...held, memory: { ...held.memory, currentKiB: kib } }, held.memoryDevices.filter((d) => d.model === 'virtio-mem').map(() => 0));
  const layout = defLayout(live);
  const start: LiveMemory = { layout, balloonKiB: Math.floor(v.balloonBytes / 1024), totalKiB: startKiB };
  const reached = await followLive(ctx, name, live, start, planMemory(layout, kib), opts);
  return { ...result, actualKiB: reached.totalKiB, reached: reached.totalKiB === kib };
}

/**
 * Follows a change on a running guest until it is there (memory/rules.ts followMemory). On the
 * watch's held monitor it wakes on QEMU's events; without one it reads the sizes in short
 * sessions, so the short-call monitor is never held for the whole wait (dominfo and friends
 * keep working meanwhile).
 */
async function followLive(ctx: NativeContext, name: string, live: DomainDef, start: LiveMemory, plan: ReturnType<typeof planMemory>, opts: SetMemoryOptions, totalBefore: GuestTotal | null = null): Promise<MemorySizes> {
  const hasBalloon = live.balloon.model === 'virtio';
  const held = ctx.held?.held(name) ?? null;
  const events: QmpEventStream | null = held ? held.events({ names: ['BALLOON_CHANGE', 'MEMORY_DEVICE_SIZE_CHANGE'] }) : null;
  try {
    return await followMemory({
      name, plan, layout: start.layout, start: sizesOf(start, hasBalloon),
      read: async () => sizesOf(await ctx.monitor(name, (c) => queryLiveMemory(c, live), opts.signal).catch((err: unknown) => {
        // The guest's monitor is gone in the middle of the wait: QEMU went away.
        if (err instanceof VirtError && err.code === 'OPERATION_INVALID') {
          throw new VirtError('OPERATION_FAILED', `operation failed: domain '${name}' is no longer running: QEMU went away while the change was followed`, { cause: err });
        }
        throw err;
      }), hasBalloon),
      changed: async (ms) => {
        if (!events) return new Promise((resolve) => { const t = setTimeout(resolve, ms); opts.signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true }); });
        await events.nextEvent({ timeoutMs: ms, ...(opts.signal ? { signal: opts.signal } : {}) }).catch((err: unknown) => {
          const code = (err as { code?: string }).code;
          if (code === 'QMP_TIMEOUT') return;
          if (code === 'QMP_ABORTED') throw new VirtError('ABORTED', `waiting for domain '${name}' to reach ${plan.targetKiB} KiB: aborted`, { cause: err });
          throw monitorError(name, err);
        });
      },
      // On the held monitor the sizes are read every MOVING_POLL_MS (QEMU's events are
      // rate-limited); without it, a moving virtio-mem device too, and the balloon every 100 ms
      // in short sessions (each one a connection of its own).
      pollMs: (now) => (events || plan.requestedKiB.some((r, i) => now.pluggedKiB[i] !== r) ? MOVING_POLL_MS : 100),
      timeoutMs: opts.timeoutMs, stallMs: opts.stallMs, onProgress: opts.onProgress, signal: opts.signal,
      guestTotalBefore: totalBefore,
      guestTotal: () => ctx.monitor(name, (c) => guestTotal(c, live), opts.signal),
      refreshGuestTotal: () => ctx.monitor(name, (c) => requestGuestStats(c, live.balloon.statsPeriodS), opts.signal),
    });
  } finally {
    events?.close();
  }
}

/**
 * Has the balloon ask the guest for its statistics now: QEMU starts a new polling timer, which
 * fires at once, when the period goes from 0 to a value (setting the same value does nothing).
 */
const requestGuestStats = (c: QmpClient, periodS: number): Promise<void> => requestBalloonGuestStats(c, BALLOON_QOM_PATH, periodS);

/** The guest's own MemTotal from its balloon statistics, or null without a report. */
async function guestTotal(c: QmpClient, live: DomainDef): Promise<GuestTotal | null> {
  if (live.balloon.model === 'none' || live.balloon.statsPeriodS <= 0) return null;
  const s = await queryBalloonGuestStats(c, BALLOON_QOM_PATH).catch(() => null);
  const total = s?.stats['stat-total-memory'];
  if (!s || !s.lastUpdate || total === undefined || total < 0) return null;
  return { totalKiB: Math.floor(total / 1024), atS: s.lastUpdate };
}

/** Guard rails (skipped with --force): the guest's use on the way down, the host's on the way up. */
async function checkGuards(c: QmpClient, live: DomainDef, now: LiveMemory, targetKiB: number): Promise<void> {
  let why: string | null = null;
  const currentKiB = now.totalKiB;
  if (targetKiB < currentKiB && live.balloon.model === 'virtio') {
    const s = await queryBalloonGuestStats(c, BALLOON_QOM_PATH).catch(() => null);
    const kib = (k: string): number | undefined => { const v = s?.stats[k]; return v === undefined ? undefined : v / 1024; };
    const held = balloonHeldKiB(live.balloon.autodeflate, now.layout.bootKiB, now.balloonKiB);
    why = shrinkRefusal(targetKiB, guestInUseKiB(s && { totalKiB: kib('stat-total-memory'), availableKiB: kib('stat-available-memory'), lastUpdateS: s.lastUpdate }, held));
  } else if (targetKiB > currentKiB) {
    why = growthRefusal(targetKiB - currentKiB, await hostMemAvailableKiB());
  }
  if (why) throw invalidArg(why);
}

/**
 * setmaxmem. Shut off: the maximum at next boot. Running: only a guest defined with a
 * hot-plug ceiling can grow its maximum, by hot-adding a virtio-mem device into the address
 * space QEMU reserved at boot; everything else is refused with the reason.
 * @throws VirtError INVALID_ARG (below floor / current memory, misaligned), OPERATION_INVALID, NO_DOMAIN
 */
export async function setMaxMemory(ctx: NativeContext, ref: string, kib: number, flags: AffectOptions = {}): Promise<{ live: boolean; config: boolean }> {
  const { name } = await ctx.lookup(ref);
  checkMemorySize(kib, MIN_MEMORY_KIB);
  return ctx.withDomainLock(name, async () => {
    const def = await ctx.current(name, ref);
    const o = await ctx.observe(name);
    const target = resolveAffect(flags, o.state !== 'shutoff');
    // Both sides are checked before either is changed: a refusal changes nothing.
    const configured = target.config ? withMaxMemory(def, kib) : null;
    if (target.live && o.state !== 'shutoff') await growMaxLive(ctx, name, o.record, kib, flags.signal);
    if (configured) await ctx.store.save(configured);
    return target;
  }, flags.signal);
}

/** Raise a running guest's maximum by hot-adding a virtio-mem device. Caller holds the lock. */
async function growMaxLive(ctx: NativeContext, name: string, rec: RunningRecord, kib: number, signal?: AbortSignal): Promise<void> {
  const live = rec.live;
  const hotplug = live.memory.hotplug;
  const refuse = (why: string): never => { throw new VirtError('OPERATION_INVALID', `Requested operation is not valid: cannot resize the maximum memory on an active domain: ${why}`); };
  if (!hotplug) return refuse(`'${name}' was started without a hot-plug ceiling (define one with <maxMemory> or \`virtmem new --max-memory\`)`);
  if (kib < live.memory.maxKiB) refuse('lowering it needs a restart (virtio-mem regions cannot shrink while the guest runs; use setmem to give memory back)');
  if (kib === live.memory.maxKiB) return;
  const addKiB = kib - live.memory.maxKiB;
  const blockKiB = VIRTIO_MEM_BLOCK_KIB;
  if (addKiB % blockKiB) throw invalidArg(`invalid argument: the maximum can grow live only in steps of ${blockKiB} KiB (virtio-mem block size); ${kib} KiB is ${addKiB} KiB above the current ${live.memory.maxKiB} KiB`);
  if (kib > hotplug.ceilingKiB) refuse(`QEMU reserved hot-plug space up to ${hotplug.ceilingKiB} KiB at boot (<maxMemory>); raise that with setmaxmem --config ... and a restart`);
  if (live.memoryDevices.length >= hotplug.slots) refuse(`all ${hotplug.slots} memory slots are in use`);
  const grown: DomainDef = { ...live, memory: { ...live.memory, maxKiB: kib }, memoryDevices: [...live.memoryDevices, { model: 'virtio-mem', sizeKiB: addKiB, blockKiB, requestedKiB: 0 }] };
  // The new device's backend follows the guest's memory backing, as the boot devices' do.
  await hotAddMemoryDevice(ctx, name, grown, rec.autoNodes, signal);
  rec.live = grown;
  await writeRunRecord(ctx.paths.run(name), rec);
}

/**
 * A definition with a new maximum. With virtio-mem, the last device's region takes the change
 * (boot RAM stays); without, boot RAM does.
 * @throws VirtError INVALID_ARG when the result would be inconsistent.
 */
export function withMaxMemory(def: DomainDef, kib: number): DomainDef {
  if (kib < def.memory.currentKiB) {
    throw invalidArg(`invalid argument: new maximum memory ${kib} KiB is below the current memory ${def.memory.currentKiB} KiB; lower it first with setmem --config`);
  }
  if (def.memory.hotplug && kib > def.memory.hotplug.ceilingKiB) {
    throw invalidArg(`invalid argument: new maximum memory ${kib} KiB is above the hot-plug ceiling ${def.memory.hotplug.ceilingKiB} KiB (<maxMemory>)`);
  }
  const delta = kib - def.memory.maxKiB;
  const last = def.memoryDevices.map((d) => d.model).lastIndexOf('virtio-mem');
  if (last < 0) return { ...def, memory: { ...def.memory, maxKiB: kib } };
  const dev = def.memoryDevices[last] as VirtioMemDef;
  const sizeKiB = dev.sizeKiB + delta;
  if (sizeKiB % dev.blockKiB || sizeKiB < dev.requestedKiB) {
    throw invalidArg(`invalid argument: with virtio-mem the maximum changes the device region, which must stay a multiple of ${dev.blockKiB} KiB and at least its plugged ${dev.requestedKiB} KiB`);
  }
  const memoryDevices = def.memoryDevices.map((d, i) => (i === last ? { ...dev, sizeKiB } : d));
  return { ...def, memory: { ...def.memory, maxKiB: kib }, memoryDevices };
}

/**
 * dommemstat: balloon and guest statistics, QEMU's resident size on the host.
 * @throws VirtError OPERATION_INVALID (not running)
 */
export async function memoryStats(ctx: NativeContext, ref: string, opts: { signal?: AbortSignal } = {}): Promise<MemoryStats> {
  const { name } = await ctx.lookup(ref);
  const rec = await ctx.requireRunning(name);
  const live = rec.live;
  const raw = live.balloon.model === 'none' ? null : await ctx.monitor(name, async (c) => ({
    actualBytes: (await queryBalloon(c)).actualBytes,
    stats: await queryBalloonGuestStats(c, BALLOON_QOM_PATH),
  }), opts.signal);
  const rss = await readRssKiB(rec.pid);
  return toMemoryStats({ live, balloonBytes: raw?.actualBytes ?? null, guestStats: raw?.stats ?? null, rssKiB: rss });
}

const NO_BALLOON_PERIOD = 'Requested operation is not valid: no memory balloon device configured, can not set the collection period';

/**
 * dommemstat --period: how often the guest reports statistics (0 turns it off), live and/or
 * in the definition.
 * @throws VirtError INVALID_ARG, OPERATION_INVALID (not running with --live; no balloon), NO_DOMAIN
 */
export async function setStatsPeriod(ctx: NativeContext, ref: string, periodS: number, flags: AffectOptions = {}): Promise<{ live: boolean; config: boolean }> {
  if (!Number.isInteger(periodS) || periodS < 0 || periodS > 2 ** 31 - 1) throw invalidArg(`Invalid collection period value '${periodS}'`);
  const { name } = await ctx.lookup(ref);
  return ctx.withDomainLock(name, async () => {
    const def = await ctx.current(name, ref);
    const o = await ctx.observe(name);
    const target = resolveAffect(flags, o.state !== 'shutoff');
    if (target.config && def.balloon.model === 'none') throw new VirtError('OPERATION_INVALID', NO_BALLOON_PERIOD);
    if (target.live && o.state !== 'shutoff') {
      const rec = o.record;
      if (rec.live.balloon.model === 'none') throw new VirtError('OPERATION_INVALID', NO_BALLOON_PERIOD);
      await ctx.monitor(name, (c) => qomSet(c, BALLOON_QOM_PATH, 'guest-stats-polling-interval', periodS), flags.signal);
      rec.live.balloon.statsPeriodS = periodS;
      await writeRunRecord(ctx.paths.run(name), rec);
    }
    if (target.config) await ctx.store.save({ ...def, balloon: { ...def.balloon, statsPeriodS: periodS } });
    return target;
  }, flags.signal);
}
