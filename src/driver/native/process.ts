/**
 * The native driver's lifecycle: QEMU processes started detached (they outlive the caller),
 * paused until the balloon target and statistics are set; graceful shutdown through the ACPI
 * power button, waiting on the monitor closing; destroy with SIGTERM then SIGKILL. Every wait
 * is bounded and every step re-checks the domain under its job lock.
 */
import { spawn } from 'node:child_process';
import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { setBalloon, qomSet, systemPowerdown, cont } from '../../qmp/index.js';
import type { DefaultGuest } from '../../guest/build.js';
import type { DomainDef } from '../../domain/definition.js';
import { VirtError } from '../../domain/errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../../util/atomic-file.js';
import { withUmask } from '../../util/private-files.js';
import { bootMemoryKiB, defLayout, withRequested } from '../memory/layout.js';
import { planMemory } from '../memory/plan.js';
import type { RunPaths } from './paths.js';
import { resolveEmulator } from './emulator.js';
import { accelRequest, chooseAccel, kvmStatus, type KvmStatus } from './accel.js';
import { BALLOON_QOM_PATH, buildQemuArgv, qemuCpuModel } from './qemu-argv.js';
import { writeRunRecord, type RunningRecord } from './run-status.js';
import { removeDomainCgroup, setupDomainCgroup, spawnIntoCgroups, type CgroupWants } from './cgroup.js';
import { autoPlacementNodes, prepareHostMemory, withAutoPlacement } from './memory-start.js';
import { allBackends, balloonBaseKiB, type MemoryLayoutPlan } from './qemu-memory.js';
import { isProcessAlive, readProcStat } from './host-process.js';
import type { NativeContext } from './context.js';

export interface StartOptions {
  signal?: AbortSignal;
  /** Start with vCPUs paused. */
  paused?: boolean;
}

/** Bound on QEMU creating its monitor socket after spawn. */
const START_TIMEOUT_MS = 20_000;
/** After SIGTERM, how long QEMU gets before SIGKILL (libvirt uses 10 s). */
const TERM_GRACE_MS = 5_000;
/** While waiting for a graceful shutdown, press the power button again this often. */
const POWERDOWN_REPEAT_MS = 2_000;
/** While waiting for a graceful shutdown, look whether QEMU has exited this often. */
const EXIT_POLL_MS = 50;

/**
 * Start a domain: QEMU runs detached (it outlives the caller), paused until the balloon
 * target and statistics are set, then resumed.
 * @throws VirtError OPERATION_INVALID (already running), NO_SUPPORT (no QEMU / no guest),
 *   OPERATION_FAILED (QEMU refused to start: its log is quoted)
 */
export async function start(ctx: NativeContext, ref: string, opts: StartOptions = {}): Promise<RunningRecord> {
  const { name } = await ctx.lookup(ref);
  return ctx.withDomainLock(name, async () => {
    // As it is now: a change made while this call waited for the lock boots too.
    const def = await ctx.current(name, ref);
    const o = await ctx.observe(def.name);
    if (o.state !== 'shutoff') throw new VirtError('DOMAIN_ACTIVE', 'Domain is already active');
    const emulator = await resolveEmulator(def.emulator, process.env, def.os.arch);
    const boot = await bootFiles(ctx, def);
    const request = accelRequest(def.accel);
    const { accel, note } = request === 'tcg'
      ? { accel: 'tcg' as const, note: null }
      : chooseAccel(request, await kvm(ctx, { emulator, signal: opts.signal }), def.name);
    const cpuModel = qemuCpuModel(def.cpu, accel); // refuses host-passthrough under TCG before anything starts
    const run = ctx.paths.run(def.name);
    await ensurePrivateDir(ctx.paths.runDir);
    await mkdir(run.dir, { recursive: true, mode: 0o700 });
    await Promise.all([run.qmp, run.qmpWatch, run.console, run.agent, run.pidfile, run.status].map((p) => unlink(p).catch(() => {})));
    // The current memory is split between balloon and virtio-mem as setmem would split it.
    const plan = planMemory(defLayout(def), def.memory.currentKiB);
    const live = withRequested(structuredClone(def), plan.requestedKiB);
    // placement='auto': the host nodes it gets now (the definition keeps 'auto'; the record the nodes).
    const autoNodes = await autoPlacementNodes(live);
    const placed = withAutoPlacement(live, autoNodes);
    // The host's part of the memory (host nodes, huge page pools and mounts, cgroup) is checked
    // and prepared before anything starts.
    const memory = await prepareHostMemory(ctx, placed, run);
    const argv = buildQemuArgv({ def: placed, paths: run, accel, ...boot, memory });
    argv.push('-S');
    const cgroupProcs = await setupDomainCgroup(ctx.paths.root, def.name, cgroupWants(placed, memory.plan)).catch(async (err: unknown) => {
      await removeDomainCgroup(ctx.paths.root, def.name);
      throw err;
    });
    const id = await nextId(ctx);
    const pid = await spawnQemu(def.name, spawnIntoCgroups(cgroupProcs, emulator, argv), run, opts.signal).catch(async (err: unknown) => {
      await removeDomainCgroup(ctx.paths.root, def.name);
      throw err;
    });
    const stat = await readProcStat(pid);
    const record: RunningRecord = {
      version: 1, phase: 'running', pid, startTicks: stat?.startTicks ?? 0, id, accel,
      ...(cpuModel ? { cpuModel } : {}), ...(note ? { accelNote: note } : {}),
      startedAt: new Date().toISOString(), live,
      ...(opts.paused ? { paused: true } : {}),
      ...(autoNodes ? { autoNodes } : {}),
    };
    try {
      await ctx.monitor(def.name, async (c) => {
        if (def.balloon.model === 'virtio') {
          if (plan.balloonKiB < bootMemoryKiB(def)) {
            await setBalloon(c, (plan.balloonKiB + balloonBaseKiB(def)) * 1024);
          }
          if (def.balloon.statsPeriodS > 0) {
            await qomSet(c, BALLOON_QOM_PATH, 'guest-stats-polling-interval', def.balloon.statsPeriodS);
          }
        }
        if (!opts.paused) await cont(c);
      }, opts.signal);
      await writeRunRecord(run, record);
    } catch (err) {
      await killPid(pid);
      await ctx.markStopped(run, 'failed');
      throw err;
    }
    return record;
  }, opts.signal);
}

async function bootFiles(ctx: NativeContext, def: DomainDef): Promise<{ kernel: string; initrd?: string; cmdline?: string }> {
  if (def.os.kernel) {
    return { kernel: def.os.kernel, ...(def.os.initrd ? { initrd: def.os.initrd } : {}), ...(def.os.cmdline ? { cmdline: def.os.cmdline } : {}) };
  }
  if (def.os.arch === 'i686') {
    throw new VirtError('CONFIG_UNSUPPORTED', "unsupported configuration: the built-in guest is an x86_64 kernel, which an i686 guest cannot run; give the domain an i686 kernel (<os><kernel>) or make it x86_64");
  }
  const guest = await defaultGuest(ctx);
  if (!guest) {
    throw new VirtError('NO_SUPPORT', 'the built-in default guest is not built yet: run `virtmem guest-build` (or `npm run setup`) first, or give the domain a kernel');
  }
  // Refused here rather than booted: a disk the guest has no driver for is silently absent.
  const { defaultGuestDiskProblem } = await import('../../guest/kernel-modules.js');
  const problem = defaultGuestDiskProblem(guest.modules, def.disks);
  if (problem?.reason === 'bus') {
    if (def.disks.find((d) => d.target === problem.target)?.device === 'cdrom') {
      throw new VirtError('CONFIG_UNSUPPORTED', `cdrom ${problem.target}: the built-in guest drives virtio disks only and would not see it; remove the cdrom or give the domain a kernel`);
    }
    throw new VirtError('CONFIG_UNSUPPORTED', `disk ${problem.target}: the built-in guest drives virtio disks only; use bus 'virtio' (target vda, vdb, ...) or give the domain a kernel`);
  }
  if (problem?.reason === 'module') {
    throw new VirtError('NO_SUPPORT', `disk ${problem.target}: the built-in guest in ${guest.dir} was built without virtio_blk and would not see it; run \`virtmem guest-build\` to rebuild it`);
  }
  return { kernel: guest.kernelPath, initrd: guest.initrdPath, cmdline: def.os.cmdline ?? guest.cmdline };
}

/**
 * Whether KVM runs guests here (cached probe, see accel.ts), for `emulator` (default: the one
 * guests get without <emulator>). The probe boots the built-in guest's kernel.
 */
export async function kvm(ctx: NativeContext, opts: { emulator?: string; refresh?: boolean; signal?: AbortSignal | undefined } = {}): Promise<KvmStatus> {
  const emulator = opts.emulator ?? await resolveEmulator(undefined);
  const guest = await defaultGuest(ctx);
  return kvmStatus({ emulator, kernel: guest?.kernelPath ?? null, ...(opts.refresh ? { refresh: true } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
}

export async function defaultGuest(ctx: NativeContext): Promise<DefaultGuest | null> {
  const { findDefaultGuest } = await import('../../guest/build.js'); // on demand, see defineXml
  return findDefaultGuest(ctx.opts.guestDir);
}

async function nextId(ctx: NativeContext): Promise<number> {
  return ctx.withDomainLock('.id', async () => {
    const last = Number((await readFile(ctx.paths.idCounter, 'utf8').catch(() => '0')).trim()) || 0;
    await writeFileAtomic(ctx.paths.idCounter, `${last + 1}\n`);
    return last + 1;
  });
}

/**
 * Spawn QEMU detached with its stderr in qemu.log and wait until its monitor socket accepts,
 * or it exits (then its log is the error).
 */
async function spawnQemu(name: string, command: { file: string; args: string[] }, run: RunPaths, signal?: AbortSignal): Promise<number> {
  const log = await open(run.qemuLog, 'w', 0o600);
  let exited: { code: number | null; sig: string | null } | null = null;
  let child;
  try {
    // QEMU makes its monitor and serial sockets, pidfile and console log with the umask it
    // inherits (bind() alone gives 0755): spawn it under 077 so they are all owner-only.
    child = withUmask(0o077, () => spawn(command.file, command.args, { detached: true, stdio: ['ignore', log.fd, log.fd] }));
  } finally {
    await log.close();
  }
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  child.once('exit', (code, sig) => { exited = { code, sig }; });
  child.unref();
  const pid = child.pid;
  if (pid === undefined) {
    const err = await spawnError;
    throw new VirtError('NO_SUPPORT', `Cannot execute QEMU binary ${command.file}: ${err.message}`, { cause: err });
  }
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (exited) {
      const text = (await readFile(run.qemuLog, 'utf8').catch(() => '')).trim();
      throw new VirtError('OPERATION_FAILED', `internal error: process exited while connecting to monitor: ${text || `QEMU exited with ${JSON.stringify(exited)}`}`);
    }
    // QEMU binds the socket before it listens: the file alone is not enough, it must accept.
    if (await acceptsConnections(run.qmp)) return pid;
    if (signal?.aborted || Date.now() > deadline) {
      await killPid(pid);
      if (signal?.aborted) throw new VirtError('ABORTED', `start of domain '${name}' aborted`);
      throw new VirtError('TIMEOUT', `Timed out during operation: QEMU did not open its monitor within ${START_TIMEOUT_MS / 1000} s (see ${run.qemuLog})`);
    }
    await delay(10);
  }
}

/** SIGTERM, then SIGKILL after a grace period; resolves once the process is gone. */
async function killPid(pid: number, startTicks?: number): Promise<void> {
  const send = (sig: NodeJS.Signals): void => { try { process.kill(pid, sig); } catch { /* gone */ } };
  send('SIGTERM');
  const termDeadline = Date.now() + TERM_GRACE_MS;
  let killed = false;
  const hardDeadline = termDeadline + 5_000;
  while (await isProcessAlive(pid, startTicks)) {
    if (!killed && Date.now() > termDeadline) { send('SIGKILL'); killed = true; }
    if (Date.now() > hardDeadline) throw new VirtError('OPERATION_FAILED', `operation failed: QEMU process ${pid} did not exit after SIGKILL`);
    await delay(10);
  }
}

/**
 * Graceful shutdown via the ACPI power button. With `timeoutMs`, waits (bounded) until QEMU
 * has exited. The button is pressed under the job lock; the wait is not: it follows QEMU's
 * process, pressing the button again every few seconds in a short monitor session, so other
 * calls (dominfo, setmem, a destroy that gives up waiting) get the lock and the monitor meanwhile.
 * @throws VirtError OPERATION_INVALID (not running), TIMEOUT (guest ignored the request), ABORTED
 */
export async function shutdown(ctx: NativeContext, ref: string, opts: { timeoutMs?: number | null; signal?: AbortSignal } = {}): Promise<{ stopped: boolean }> {
  const def = await ctx.lookup(ref);
  const run = ctx.paths.run(def.name);
  const rec = await ctx.withDomainLock(def.name, async () => {
    const r = await ctx.requireRunning(def.name);
    await writeRunRecord(run, { ...r, shutdownRequested: true });
    await ctx.monitor(def.name, (c) => systemPowerdown(c), opts.signal);
    return r;
  }, opts.signal);
  const timeoutMs = opts.timeoutMs;
  if (timeoutMs == null) return { stopped: false };
  // A press of the power button before the guest listens for it (still booting) is lost, so it
  // is pressed again every few seconds while we wait, as a person would.
  const deadline = Date.now() + timeoutMs;
  let pressedAt = Date.now();
  while (await isProcessAlive(rec.pid, rec.startTicks)) {
    if (opts.signal?.aborted) throw new VirtError('ABORTED', `waiting for domain '${def.name}' to shut down: aborted`);
    if (Date.now() > deadline) {
      throw new VirtError('TIMEOUT', `Timed out during operation: domain '${def.name}' did not shut down within ${Math.round(timeoutMs / 1000)} s; the guest may ignore the ACPI power button (use destroy to force it off)`);
    }
    if (Date.now() - pressedAt >= POWERDOWN_REPEAT_MS) {
      pressedAt = Date.now();
      await ctx.monitor(def.name, (c) => systemPowerdown(c), opts.signal).catch(() => {}); // QEMU may be exiting right now
    }
    await delay(EXIT_POLL_MS);
  }
  // Marked stopped only if nothing else did meanwhile (a destroy), and only this QEMU.
  await ctx.withDomainLock(def.name, async () => {
    const o = await ctx.observe(def.name);
    if (o.state === 'shutoff' && o.exited && o.record?.phase === 'running' && o.record.pid === rec.pid) await ctx.markStopped(run, 'shutdown');
  });
  return { stopped: true };
}

/**
 * Power off at once (SIGTERM, then SIGKILL), like pulling the plug.
 * @throws VirtError OPERATION_INVALID (not running)
 */
export async function destroy(ctx: NativeContext, ref: string, signal?: AbortSignal): Promise<void> {
  const def = await ctx.lookup(ref);
  await ctx.withDomainLock(def.name, async () => {
    const rec = await ctx.requireRunning(def.name);
    await killPid(rec.pid, rec.startTicks);
    await ctx.markStopped(ctx.paths.run(def.name), 'destroyed');
  }, signal);
}

/**
 * Whether a unix socket accepts a connection now (closed again at once). A QMP monitor takes
 * the next client after this one leaves, so the probe does not hold it.
 */
function acceptsConnections(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection(path);
    const done = (ok: boolean): void => { sock.destroy(); resolve(ok); };
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** What a domain's cgroup must enforce: its memtune, and the host nodes of restrictive placement. */
function cgroupWants(def: DomainDef, plan: MemoryLayoutPlan): CgroupWants {
  const restrictive = allBackends(plan).flatMap((b) => (b.placement?.mode === 'restrictive' ? b.placement.hostNodes : []));
  return {
    ...(def.memtune !== undefined ? { memtune: def.memtune } : {}),
    ...(restrictive.length > 0 ? { restrictiveNodes: [...new Set(restrictive)].sort((a, b) => a - b) } : {}),
  };
}
