/**
 * The native QEMU driver: virtmem's public, hypervisor-facing API. Front ends (CLI, daemon,
 * HTTP) call only this. Every mutation runs under the domain's job lock and re-checks the
 * domain's state after each wait; every wait is bounded; sizes are KiB.
 */
import { spawn } from 'node:child_process';
import { mkdir, open, readFile, rm, unlink } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import type { QmpClient, QmpEventStream } from '../../qmp/index.js';
import type { DefaultGuest } from '../../guest/build.js';
import { QmpCommandError, queryBalloon, queryStatus, setBalloon, queryBalloonGuestStats, queryMemoryDevices, qomSet, systemPowerdown, cont } from '../../qmp/index.js';
import type { DomainDef, VirtioMemDef } from '../../domain/definition.js';
import { VirtError, invalidArg } from '../../domain/errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../../util/atomic-file.js';
import { withUmask } from '../../util/private-files.js';
import { StatePaths, defaultStateDir, type RunPaths } from './paths.js';
import { DefinitionStore } from '../../domain/store.js';
import { acquireLock, withLock } from './lock.js';
import { resolveEmulator } from './emulator.js';
import { accelRequest, chooseAccel, kvmStatus, type KvmStatus } from './accel.js';
import { BALLOON_QOM_PATH, buildQemuArgv, qemuCpuModel, virtioMemId, type Accel } from './qemu-argv.js';
import { observe, writeRunRecord, type DomainState, type Observed, type RunningRecord, type StateReason } from './run-status.js';
import { isProcessAlive, readProcStat, readRssKiB, CLOCK_TICKS_PER_S } from './host-process.js';
import { withMonitor, onHeldMonitor, monitorError } from './monitor.js';
import { validateDomainName, isUuid } from '../../domain/name.js';
import { MIN_MEMORY_KIB, validateDomainDef } from '../../domain/validate-def.js';
import { toMemoryStats, type MemoryStats } from '../memory/stats.js';
import { defLayout, withRequested, bootMemoryKiB } from '../memory/layout.js';
import { planMemory, orderSteps, layoutMaxKiB, type MemoryLayout, type MemoryPlan } from '../memory/plan.js';
import { shrinkRefusal, growthRefusal, hostMemAvailableKiB } from '../memory/guards.js';
import { sampleHostMemory } from './host-memory.js';

export interface DriverOptions {
  /** State directory; default from $VIRTMEM_STATE_DIR or the per-user location. */
  stateDir?: string;
  /** Bound on waiting for another invocation's job lock. */
  lockTimeoutMs?: number;
  /** Bound on connecting to a domain's monitor. */
  monitorTimeoutMs?: number;
  /** Built-in guest directory override. */
  guestDir?: string;
  /**
   * Monitor connections a long-lived process (the daemon) holds open; when it has one for a
   * domain, short calls run on it instead of opening a new connection each time.
   */
  heldMonitors?: HeldMonitors;
}

/** Open monitor connections by domain name (see DriverOptions.heldMonitors). */
export interface HeldMonitors {
  /** A connected client for `name`, or null to fall back to a new connection. */
  held(name: string): QmpClient | null;
}

/** Which side of a domain an operation affects; neither flag means "current" (libvirt). */
export interface AffectFlags {
  live?: boolean;
  config?: boolean;
}

export interface DomainSummary {
  id: number | null;
  name: string;
  uuid: string;
  state: DomainState;
  reason: StateReason;
  persistent: boolean;
}

export interface DomainInfo extends DomainSummary {
  /** 'hvm' for QEMU guests; other libvirt drivers say otherwise (test:///default: 'linux'). */
  osType: string;
  /** The host's security driver and the domain's label, when the driver reports them (libvirt). */
  security?: { model: string; doi: string; label: string | null; enforcing: boolean } | null;
  /** Whether a managed save image exists, when the driver knows (libvirt). */
  managedSave?: boolean;
  /** libvirt's messages about the domain (taints, deprecations), printed by virsh dominfo. */
  messages?: string[];
  vcpus: number;
  cpuTimeS: number | null;
  maxMemoryKiB: number;
  usedMemoryKiB: number;
  autostart: boolean;
  accel: Accel | null;
  /** The -cpu model QEMU got (null: QEMU's default, or not running). */
  cpuModel: string | null;
  /** Why a running domain asking for auto did not get KVM on a host with a KVM device. */
  accelNote: string | null;
  /** Where the memory is: boot RAM under the balloon, DIMMs, virtio-mem. */
  memory: MemoryBreakdown;
}

export interface BalloonProgress {
  actualKiB: number;
  targetKiB: number;
  startKiB: number;
  elapsedMs: number;
}

export interface SetMemoryOptions extends AffectFlags {
  /** Skip the guard rails (guest in-use memory, host available memory). */
  force?: boolean;
  /** libvirt's "current": live when running, else config. Without any flag: live only (virsh). */
  current?: boolean;
  /** Wait until the guest reached the target (live only). */
  wait?: boolean;
  /** Bound on the whole wait. Default 300 s; a guest that stops moving fails sooner (stallMs). */
  timeoutMs?: number;
  /** Give up when the guest makes no progress for this long. Default 10 s. */
  stallMs?: number;
  onProgress?: (p: BalloonProgress) => void;
  signal?: AbortSignal;
}

export interface SetMemoryResult {
  targetKiB: number;
  /** Balloon size when the call returned (live). */
  actualKiB: number | null;
  /** True only when waited for and reached. */
  reached: boolean;
  live: boolean;
  config: boolean;
}

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
/** How often a moving virtio-mem device's size is read between its rate-limited events. */
const VMEM_POLL_MS = 20;

export class Driver {
  readonly paths: StatePaths;
  readonly store: DefinitionStore;
  private readonly opts: DriverOptions;

  constructor(opts: DriverOptions = {}) {
    this.opts = opts;
    this.paths = new StatePaths(opts.stateDir ?? defaultStateDir());
    this.store = new DefinitionStore(this.paths);
  }

  // ---------------------------------------------------------------- lookup

  /**
   * Resolve a user reference (name, uuid or running id) to a definition.
   * @throws VirtError NO_DOMAIN
   */
  async lookup(ref: string): Promise<DomainDef> {
    if (/^[0-9]+$/.test(ref)) {
      const id = Number(ref);
      for (const def of await this.store.all()) {
        const o = await this.observe(def.name);
        if (o.state !== 'shutoff' && o.record.id === id) return def;
      }
    }
    if (isUuid(ref)) {
      const wanted = ref.toLowerCase().replace(/-/g, '');
      const def = (await this.store.all()).find((d) => d.uuid.replace(/-/g, '') === wanted);
      if (def) return def;
    }
    let name: string | null = null;
    try {
      name = validateDomainName(ref);
    } catch {
      name = null; // not a possible name: it can't exist, and must never reach a file path
    }
    const def = name ? await this.store.get(name) : null;
    if (!def) throw new VirtError('NO_DOMAIN', `failed to get domain '${ref}'`);
    return def;
  }

  private async observe(name: string): Promise<Observed> {
    return observe(this.paths.run(name));
  }

  /** Persist the stopped state of a domain whose QEMU went away, and clean its sockets. */
  private async reconcile(name: string, o: Observed): Promise<void> {
    if (o.state === 'shutoff' && o.exited) {
      await this.markStopped(this.paths.run(name), o.reason);
    }
  }

  private async markStopped(run: RunPaths, reason: StateReason): Promise<void> {
    await writeRunRecord(run, { version: 1, phase: 'shutoff', reason, stoppedAt: new Date().toISOString() });
    await Promise.all([run.qmp, run.qmpWatch, run.console, run.agent, run.pidfile].map((p) => unlink(p).catch(() => {})));
  }

  private lockOpts(signal?: AbortSignal): { timeoutMs: number; signal?: AbortSignal } {
    return { timeoutMs: this.opts.lockTimeoutMs ?? 30_000, ...(signal ? { signal } : {}) };
  }

  private async withDomainLock<T>(name: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await ensurePrivateDir(this.paths.locksDir);
    return withLock(this.paths.lock(name), fn, this.lockOpts(signal));
  }

  /** The running record of a domain. @throws VirtError OPERATION_INVALID when not running. */
  private async requireRunning(name: string): Promise<RunningRecord> {
    const o = await this.observe(name);
    if (o.state === 'shutoff') {
      await this.reconcile(name, o);
      throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: domain is not running');
    }
    return o.record;
  }

  private monitor<T>(name: string, fn: (c: QmpClient) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const held = this.opts.heldMonitors?.held(name);
    if (held) return onHeldMonitor(name, held, fn);
    return withMonitor(name, this.paths.run(name).qmp, fn, {
      connectTimeoutMs: this.opts.monitorTimeoutMs ?? 10_000,
      ...(signal ? { signal } : {}),
    });
  }

  /**
   * The runtime facts of a running domain, for inspection tools (address translation, memory
   * map) that read the QEMU process directly.
   * @throws VirtError NO_DOMAIN, OPERATION_INVALID (not running)
   */
  async runtime(ref: string): Promise<{ name: string; pid: number; paths: RunPaths; live: DomainDef }> {
    const def = await this.lookup(ref);
    const rec = await this.requireRunning(def.name);
    return { name: def.name, pid: rec.pid, paths: this.paths.run(def.name), live: rec.live };
  }

  /**
   * Run `fn` with a short-lived session on a running domain's monitor. QMP failures come out as
   * VirtError.
   * @throws VirtError NO_DOMAIN, OPERATION_INVALID (not running), MONITOR_FAILED, TIMEOUT
   */
  async withMonitor<T>(ref: string, fn: (client: QmpClient) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const def = await this.lookup(ref);
    await this.requireRunning(def.name);
    return this.monitor(def.name, fn, signal);
  }

  // ---------------------------------------------------------------- queries

  /** All defined domains with their state, running ones first (by id), then by name. */
  async list(): Promise<DomainSummary[]> {
    const defs = await this.store.all();
    const rows = await Promise.all(defs.map(async (def): Promise<DomainSummary> => {
      const o = await this.observe(def.name);
      return {
        id: o.state === 'shutoff' ? null : o.record.id,
        name: def.name,
        uuid: def.uuid,
        state: o.state,
        reason: o.reason,
        persistent: true,
      };
    }));
    return rows.sort((a, b) => (a.id ?? Infinity) - (b.id ?? Infinity) || a.name.localeCompare(b.name));
  }

  /** State and reason of one domain. */
  async state(ref: string): Promise<{ state: DomainState; reason: StateReason }> {
    const def = await this.lookup(ref);
    const o = await this.observe(def.name);
    return { state: o.state, reason: o.reason };
  }

  /**
   * dominfo: for a running domain the balloon is asked live (Used memory is what the guest
   * really has, not the last target).
   */
  async info(ref: string, signal?: AbortSignal): Promise<DomainInfo> {
    const def = await this.lookup(ref);
    const o = await this.observe(def.name);
    const base = { name: def.name, uuid: def.uuid, persistent: true, autostart: false, osType: 'hvm' as const };
    if (o.state === 'shutoff') {
      return {
        ...base, id: null, state: 'shutoff', reason: o.reason, vcpus: def.vcpus, cpuTimeS: null,
        maxMemoryKiB: def.memory.maxKiB, usedMemoryKiB: def.memory.currentKiB, accel: null, cpuModel: null, accelNote: null,
        memory: breakdown(planned(def)),
      };
    }
    const live = o.record.live;
    // One monitor session for both questions: a monitor serves one client at a time.
    const [stat, { used, paused }] = await Promise.all([
      readProcStat(o.record.pid),
      this.monitor(def.name, async (c) => {
        const [status, mem] = await Promise.all([queryStatus(c), this.queryLiveMemory(c, live)]);
        return { paused: !status.running, used: mem };
      }, signal),
    ]);
    return {
      ...base, id: o.record.id, state: paused ? 'paused' : 'running', reason: paused ? 'user' : 'booted',
      vcpus: live.vcpus, cpuTimeS: stat ? stat.cpuTicks / CLOCK_TICKS_PER_S : null,
      maxMemoryKiB: live.memory.maxKiB, usedMemoryKiB: used.totalKiB, accel: o.record.accel,
      cpuModel: o.record.cpuModel ?? null, accelNote: o.record.accelNote ?? null,
      memory: breakdown(used),
    };
  }

  /** Current memory of a running domain: balloon over boot RAM plus memory devices. */
  private async liveMemoryKiB(name: string, live: DomainDef, signal?: AbortSignal): Promise<number> {
    return (await this.monitor(name, (c) => this.queryLiveMemory(c, live), signal)).totalKiB;
  }

  /** What QEMU says about every part of a running guest's memory. */
  private async queryLiveMemory(c: QmpClient, live: DomainDef): Promise<LiveMemory> {
    const layout = defLayout(live);
    const [bal, devices] = await Promise.all([
      live.balloon.model === 'none' ? null : queryBalloon(c),
      layout.vmem.length ? queryMemoryDevices(c) : [],
    ]);
    for (const v of layout.vmem) {
      const d = devices.find((x) => x.type === 'virtio-mem' && x.id === v.id);
      if (d && d.type === 'virtio-mem') v.pluggedKiB = Math.floor(d.sizeBytes / 1024);
    }
    // QEMU's balloon acts on boot RAM only: "actual" never includes memory devices.
    const balloonKiB = bal ? Math.floor(bal.actualBytes / 1024) : layout.bootKiB;
    return { layout, balloonKiB, totalKiB: balloonKiB + layout.dimmKiB + pluggedKiB(layout) };
  }

  // ---------------------------------------------------------------- definitions

  /**
   * Define (or redefine, same name and uuid) a domain.
   * @throws VirtError INVALID_ARG / DOMAIN_EXISTS / CONFIG_UNSUPPORTED
   */
  async define(input: DomainDef): Promise<{ def: DomainDef; redefined: boolean }> {
    const name = validateDomainName(input.name);
    this.paths.run(name); // validates that its socket paths fit
    return this.withDomainLock('.defs', async () => {
      const all = await this.store.all();
      const sameUuid = all.find((d) => d.uuid === input.uuid);
      if (sameUuid && sameUuid.name !== name) {
        throw new VirtError('DOMAIN_EXISTS', `operation failed: domain '${sameUuid.name}' is already defined with uuid ${input.uuid}`);
      }
      const existing = all.find((d) => d.name === name);
      if (existing && existing.uuid !== input.uuid) {
        throw new VirtError('DOMAIN_EXISTS', `operation failed: domain '${name}' already exists with uuid ${existing.uuid}`);
      }
      return this.withDomainLock(name, async () => {
        await this.store.save(input);
        return { def: input, redefined: existing !== undefined };
      });
    });
  }

  /** Define from libvirt domain XML; warnings name what was ignored. */
  async defineXml(xml: string): Promise<{ def: DomainDef; redefined: boolean; warnings: string[] }> {
    const { parseDomainXml } = await import('../../domain/xml.js'); // loaded on demand: keeps CLI start-up lean
    const { def, warnings } = parseDomainXml(xml);
    const r = await this.define(def);
    return { ...r, warnings };
  }

  /**
   * Remove a domain's definition. A running domain is refused: virtmem has no transient
   * domains, so undefining would orphan the QEMU process.
   * @throws VirtError NO_DOMAIN, OPERATION_INVALID
   */
  async undefine(ref: string): Promise<DomainDef> {
    const def = await this.lookup(ref);
    return this.withDomainLock(def.name, async () => {
      if (!(await this.store.get(def.name))) throw new VirtError('NO_DOMAIN', `failed to get domain '${ref}'`);
      const o = await this.observe(def.name);
      if (o.state !== 'shutoff') {
        throw new VirtError('OPERATION_INVALID', `Requested operation is not valid: cannot undefine running domain '${def.name}'; shut it down or destroy it first`);
      }
      await this.store.remove(def.name);
      await rm(this.paths.run(def.name).dir, { recursive: true, force: true });
      return def;
    });
  }

  /** Libvirt XML of a domain: the live definition when running unless `inactive`. */
  async dumpXml(ref: string, opts: { inactive?: boolean; signal?: AbortSignal } = {}): Promise<string> {
    const def = await this.lookup(ref);
    const o = await this.observe(def.name);
    const { formatDomainXml } = await import('../../domain/xml.js');
    // The accelerator it runs with, or the one it asks for; 'auto' shows what auto picks here.
    const accel = !opts.inactive && o.state !== 'shutoff' ? o.record.accel : await this.plannedAccel(def);
    const xmlType = accel === 'kvm' ? 'kvm' : 'qemu';
    const withKernel = await this.withGuestKernel(opts.inactive || o.state === 'shutoff' ? def : o.record.live);
    if (opts.inactive || o.state === 'shutoff') return formatDomainXml(withKernel, { accel: xmlType });
    const actualKiB = await this.liveMemoryKiB(def.name, o.record.live, opts.signal);
    return formatDomainXml(withKernel, { accel: xmlType, running: { id: o.record.id, actualKiB } });
  }

  /**
   * What this host offers guests: the QEMU binary, whether KVM runs guests (the cached probe, or a
   * new one with `refresh`), what 'auto' picks, CPU model defaults, host memory, the built-in guest.
   * Never throws for a missing QEMU or guest: they are reported.
   */
  async capabilities(opts: { refresh?: boolean; signal?: AbortSignal } = {}): Promise<HostCapabilities> {
    const guest = await this.defaultGuest();
    let emulator: HostCapabilities['emulator'];
    let kvm: KvmStatus | null = null;
    try {
      const path = await resolveEmulator(undefined);
      const version = await qemuVersion(path);
      emulator = { path, version };
      kvm = await this.kvm({ emulator: path, ...(opts.refresh ? { refresh: true } : {}), signal: opts.signal });
    } catch (err) {
      emulator = { path: null, version: null, error: (err as Error).message };
    }
    let envAccel: string | null = process.env.VIRTMEM_ACCEL ?? null;
    let autoPicks: Accel = kvm?.usable ? 'kvm' : 'tcg';
    try {
      const r = accelRequest(undefined);
      if (r !== 'auto') autoPicks = r;
    } catch (err) {
      envAccel = `${envAccel} (invalid: ${(err as Error).message})`;
    }
    const host = await sampleHostMemory();
    const kib = (bytes: number | null): number | null => (bytes === null ? null : bytes / 1024);
    const some = host.psi?.some;
    const psi = some ? `some avg10=${some.avg10.toFixed(2)} avg60=${some.avg60.toFixed(2)} avg300=${some.avg300.toFixed(2)} total=${some.totalUs}` : '';
    return {
      emulator,
      kvm,
      accel: { autoPicks, envOverride: envAccel },
      cpu: { defaultUnderKvm: 'host-passthrough (-cpu host)', defaultUnderTcg: "QEMU's default model (qemu64)", modes: ['host-passthrough', 'host-model', 'maximum', 'custom'] },
      hostMemory: { totalKiB: kib(host.memTotalBytes), availableKiB: kib(host.memAvailableBytes), pressure: psi || null },
      defaultGuest: guest ? { kernel: guest.kernelPath, kernelVersion: guest.kernelVersion, initrd: guest.initrdPath } : null,
    };
  }

  /** The accelerator a shut-off domain would get now (auto asks the cached KVM probe). */
  private async plannedAccel(def: DomainDef): Promise<Accel> {
    const request = accelRequest(def.accel);
    if (request !== 'auto') return request;
    return (await this.kvm()).usable ? 'kvm' : 'tcg';
  }

  /** Fill in the built-in guest's kernel for display, so dumpxml output boots under libvirt. */
  private async withGuestKernel(def: DomainDef): Promise<DomainDef> {
    if (def.os.kernel) return def;
    const guest = await this.defaultGuest();
    if (!guest) return def;
    return { ...def, os: { ...def.os, kernel: guest.kernelPath, initrd: guest.initrdPath, cmdline: def.os.cmdline ?? guest.cmdline } };
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Start a domain: QEMU runs detached (it outlives the caller), paused until the balloon
   * target and statistics are set, then resumed.
   * @throws VirtError OPERATION_INVALID (already running), NO_SUPPORT (no QEMU / no guest),
   *   OPERATION_FAILED (QEMU refused to start: its log is quoted)
   */
  async start(ref: string, opts: StartOptions = {}): Promise<RunningRecord> {
    const def = await this.lookup(ref);
    return this.withDomainLock(def.name, async () => {
      const o = await this.observe(def.name);
      if (o.state !== 'shutoff') throw new VirtError('DOMAIN_ACTIVE', 'Domain is already active');
      const emulator = await resolveEmulator(def.emulator);
      const boot = await this.bootFiles(def);
      const request = accelRequest(def.accel);
      const { accel, note } = request === 'tcg'
        ? { accel: 'tcg' as const, note: null }
        : chooseAccel(request, await this.kvm({ emulator, signal: opts.signal }), def.name);
      const cpuModel = qemuCpuModel(def.cpu, accel); // refuses host-passthrough under TCG before anything starts
      const run = this.paths.run(def.name);
      await ensurePrivateDir(this.paths.runDir);
      await mkdir(run.dir, { recursive: true, mode: 0o700 });
      await Promise.all([run.qmp, run.qmpWatch, run.console, run.agent, run.pidfile, run.status].map((p) => unlink(p).catch(() => {})));
      // The current memory is split between balloon and virtio-mem as setmem would split it.
      const plan = planMemory(defLayout(def), def.memory.currentKiB);
      const live = withRequested(structuredClone(def), plan.requestedKiB);
      const argv = buildQemuArgv({ def: live, paths: run, accel, ...boot });
      argv.push('-S');
      const id = await this.nextId();
      const pid = await this.spawnQemu(def.name, emulator, argv, run, opts.signal);
      const stat = await readProcStat(pid);
      const record: RunningRecord = {
        version: 1, phase: 'running', pid, startTicks: stat?.startTicks ?? 0, id, accel,
        ...(cpuModel ? { cpuModel } : {}), ...(note ? { accelNote: note } : {}),
        startedAt: new Date().toISOString(), live,
        ...(opts.paused ? { paused: true } : {}),
      };
      try {
        await this.monitor(def.name, async (c) => {
          if (def.balloon.model === 'virtio') {
            if (plan.balloonKiB < bootMemoryKiB(def)) {
              await setBalloon(c, plan.balloonKiB * 1024);
            }
            if (def.balloon.statsPeriodS > 0) {
              await qomSet(c, BALLOON_QOM_PATH, 'guest-stats-polling-interval', def.balloon.statsPeriodS);
            }
          }
          if (!opts.paused) await cont(c);
        }, opts.signal);
        await writeRunRecord(run, record);
      } catch (err) {
        await this.killPid(pid);
        await this.markStopped(run, 'failed');
        throw err;
      }
      return record;
    }, opts.signal);
  }

  private async bootFiles(def: DomainDef): Promise<{ kernel: string; initrd?: string; cmdline?: string }> {
    if (def.os.kernel) {
      return { kernel: def.os.kernel, ...(def.os.initrd ? { initrd: def.os.initrd } : {}), ...(def.os.cmdline ? { cmdline: def.os.cmdline } : {}) };
    }
    const guest = await this.defaultGuest();
    if (!guest) {
      throw new VirtError('NO_SUPPORT', 'the built-in default guest is not built yet: run `virtmem guest-build` (or `npm run setup`) first, or give the domain a kernel');
    }
    // Refused here rather than booted: a disk the guest has no driver for is silently absent.
    const { defaultGuestDiskProblem } = await import('../../guest/kernel-modules.js');
    const problem = defaultGuestDiskProblem(guest.modules, def.disks);
    if (problem?.reason === 'bus') {
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
  async kvm(opts: { emulator?: string; refresh?: boolean; signal?: AbortSignal | undefined } = {}): Promise<KvmStatus> {
    const emulator = opts.emulator ?? await resolveEmulator(undefined);
    const guest = await this.defaultGuest();
    return kvmStatus({ emulator, kernel: guest?.kernelPath ?? null, ...(opts.refresh ? { refresh: true } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
  }

  private async defaultGuest(): Promise<DefaultGuest | null> {
    const { findDefaultGuest } = await import('../../guest/build.js'); // on demand, see defineXml
    return findDefaultGuest(this.opts.guestDir);
  }

  private async nextId(): Promise<number> {
    await ensurePrivateDir(this.paths.locksDir);
    return withLock(this.paths.lock('.id'), async () => {
      const last = Number((await readFile(this.paths.idCounter, 'utf8').catch(() => '0')).trim()) || 0;
      await writeFileAtomic(this.paths.idCounter, `${last + 1}\n`);
      return last + 1;
    }, this.lockOpts());
  }

  /**
   * Spawn QEMU detached with its stderr in qemu.log and wait until its monitor socket accepts,
   * or it exits (then its log is the error).
   */
  private async spawnQemu(name: string, emulator: string, argv: string[], run: RunPaths, signal?: AbortSignal): Promise<number> {
    const log = await open(run.qemuLog, 'w', 0o600);
    let exited: { code: number | null; sig: string | null } | null = null;
    let child;
    try {
      // QEMU makes its monitor and serial sockets, pidfile and console log with the umask it
      // inherits (bind() alone gives 0755): spawn it under 077 so they are all owner-only.
      child = withUmask(0o077, () => spawn(emulator, argv, { detached: true, stdio: ['ignore', log.fd, log.fd] }));
    } finally {
      await log.close();
    }
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
    child.once('exit', (code, sig) => { exited = { code, sig }; });
    child.unref();
    const pid = child.pid;
    if (pid === undefined) {
      const err = await spawnError;
      throw new VirtError('NO_SUPPORT', `Cannot execute QEMU binary ${emulator}: ${err.message}`, { cause: err });
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
        await this.killPid(pid);
        if (signal?.aborted) throw new VirtError('ABORTED', `start of domain '${name}' aborted`);
        throw new VirtError('TIMEOUT', `Timed out during operation: QEMU did not open its monitor within ${START_TIMEOUT_MS / 1000} s (see ${run.qemuLog})`);
      }
      await delay(10);
    }
  }

  /** SIGTERM, then SIGKILL after a grace period; resolves once the process is gone. */
  private async killPid(pid: number, startTicks?: number): Promise<void> {
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
   * has exited; the wait follows the monitor connection closing, not a sleep loop.
   * @throws VirtError OPERATION_INVALID (not running), TIMEOUT (guest ignored the request)
   */
  async shutdown(ref: string, opts: { timeoutMs?: number | null; signal?: AbortSignal } = {}): Promise<{ stopped: boolean }> {
    const def = await this.lookup(ref);
    return this.withDomainLock(def.name, async () => {
      const rec = await this.requireRunning(def.name);
      const run = this.paths.run(def.name);
      await writeRunRecord(run, { ...rec, shutdownRequested: true });
      const timeoutMs = opts.timeoutMs;
      await this.monitor(def.name, async (c) => {
        await systemPowerdown(c);
        if (timeoutMs == null) return;
        // QEMU closes the monitor when it exits: that is the event we wait for. A press of the
        // power button before the guest listens for it (still booting) is lost, so it is
        // pressed again every few seconds while we wait, as a person would.
        const deadline = Date.now() + timeoutMs;
        let outcome: 'closed' | 'timeout' | 'aborted' = 'timeout';
        while (Date.now() < deadline) {
          const ac = new AbortController();
          const onAbort = (): void => ac.abort();
          opts.signal?.addEventListener('abort', onAbort, { once: true });
          const tick = delay(Math.min(POWERDOWN_REPEAT_MS, deadline - Date.now()), 'tick' as const, { signal: ac.signal })
            .catch(() => (opts.signal?.aborted ? 'aborted' as const : 'tick' as const));
          outcome = await Promise.race([c.closed.then(() => 'closed' as const), tick]).then((r) => (r === 'tick' ? 'timeout' : r));
          ac.abort();
          opts.signal?.removeEventListener('abort', onAbort);
          if (outcome !== 'timeout') break;
          await systemPowerdown(c).catch(() => {}); // QEMU may be exiting right now
        }
        if (outcome !== 'closed') {
          throw new VirtError(outcome === 'aborted' ? 'ABORTED' : 'TIMEOUT',
            `Timed out during operation: domain '${def.name}' did not shut down within ${Math.round(timeoutMs / 1000)} s; the guest may ignore the ACPI power button (use destroy to force it off)`);
        }
      }, opts.signal);
      if (timeoutMs == null) return { stopped: false };
      // The socket closes a moment before the process is gone.
      const deadline = Date.now() + 5_000;
      while (await isProcessAlive(rec.pid, rec.startTicks)) {
        if (Date.now() > deadline) throw new VirtError('TIMEOUT', `Timed out during operation: QEMU of '${def.name}' closed its monitor but did not exit`);
        await delay(10);
      }
      await this.markStopped(run, 'shutdown');
      return { stopped: true };
    }, opts.signal);
  }

  /**
   * Power off at once (SIGTERM, then SIGKILL), like pulling the plug.
   * @throws VirtError OPERATION_INVALID (not running)
   */
  async destroy(ref: string, signal?: AbortSignal): Promise<void> {
    const def = await this.lookup(ref);
    await this.withDomainLock(def.name, async () => {
      const rec = await this.requireRunning(def.name);
      await this.killPid(rec.pid, rec.startTicks);
      await this.markStopped(this.paths.run(def.name), 'destroyed');
    }, signal);
  }

  // ---------------------------------------------------------------- memory

  /** Resolve libvirt's live/config/current flags against the domain's state. */
  private affect(flags: AffectFlags, running: boolean): { live: boolean; config: boolean } {
    if (!flags.live && !flags.config) return { live: running, config: !running };
    if (flags.live && !running) throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: domain is not running');
    return { live: !!flags.live, config: !!flags.config };
  }

  private checkMemoryFloor(kib: number): void {
    if (kib === 0) throw invalidArg('memory in virDomainSetMemoryFlags must not be zero');
    if (kib < MIN_MEMORY_KIB) {
      throw invalidArg(`invalid argument: memory size ${kib} KiB is below the minimum of ${MIN_MEMORY_KIB} KiB a guest needs`);
    }
  }

  /**
   * setmem: one memory target, the right mechanism underneath. Live, the total is split between
   * the balloon over boot RAM and the virtio-mem devices (see memory-plan.ts); growing deflates
   * before it plugs, shrinking unplugs before it inflates. Config changes the memory at next boot.
   * @throws VirtError INVALID_ARG (above maximum, below floor, a guard rail), OPERATION_INVALID
   *   (not running, no balloon), NOT_REACHED (waited and the guest stopped short), TIMEOUT
   */
  async setMemory(ref: string, kib: number, opts: SetMemoryOptions = {}): Promise<SetMemoryResult> {
    const def = await this.lookup(ref);
    this.checkMemoryFloor(kib);
    await ensurePrivateDir(this.paths.locksDir);
    const lock = await acquireLock(this.paths.lock(def.name), this.lockOpts(opts.signal));
    try {
      const o = await this.observe(def.name);
      const running = o.state !== 'shutoff';
      // virsh setmem without flags uses the legacy API, which means "live" (and fails on a
      // shut-off domain); --current means live when running, else config.
      const target = opts.live || opts.config || opts.current ? this.affect(opts, running) : this.affect({ live: true }, running);
      const result: SetMemoryResult = { targetKiB: kib, actualKiB: null, reached: false, live: target.live, config: target.config };
      if (target.config && kib > def.memory.maxKiB) throw invalidArg('invalid argument: cannot set memory higher than max memory');
      const saveConfig = async (): Promise<void> => {
        const plan = planMemory(defLayout(def), kib);
        await this.store.save(withRequested({ ...def, memory: { ...def.memory, currentKiB: kib } }, plan.requestedKiB));
      };
      if (!target.live || o.state === 'shutoff') {
        if (target.config) await saveConfig();
        return result;
      }
      const rec = o.record;
      const live = rec.live;
      if (kib > live.memory.maxKiB) throw invalidArg('invalid argument: cannot set memory higher than max memory');
      // One monitor session from the change to the end of the wait: events are subscribed to
      // before the commands that cause them, so none is missed.
      return await this.monitor(def.name, async (c) => {
        const events = opts.wait ? c.events({ names: ['BALLOON_CHANGE', 'MEMORY_DEVICE_SIZE_CHANGE'] }) : null;
        try {
          const now = await this.queryLiveMemory(c, live);
          if (kib <= now.layout.dimmKiB) throw invalidArg(`invalid argument: ${kib} KiB is not more than the ${now.layout.dimmKiB} KiB of DIMMs, which cannot be taken away`);
          const plan = planMemory(now.layout, kib);
          if (live.balloon.model === 'none' && plan.balloonKiB !== now.layout.bootKiB) {
            throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: Unable to change memory of active domain without the balloon device and guest OS balloon driver');
          }
          if (!opts.force) await this.checkGuards(c, live, now.totalKiB, kib);
          for (const step of orderSteps(now.layout, now.balloonKiB, plan)) {
            if (step.kind === 'balloon') await setBalloon(c, step.targetKiB * 1024);
            else await qomSet(c, `/machine/peripheral/${step.id}`, 'requested-size', step.requestedKiB * 1024);
          }
          rec.live = withRequested({ ...live, memory: { ...live.memory, currentKiB: kib } }, plan.requestedKiB);
          await writeRunRecord(this.paths.run(def.name), rec);
          if (target.config) await saveConfig();
          // Waiting happens outside the job lock: other calls (dominfo, a new setmem) stay possible.
          await lock.release();
          result.actualKiB = events
            ? await this.followMemory(def.name, c, events, rec.live, now, plan, opts)
            : (await this.queryLiveMemory(c, rec.live)).totalKiB;
          result.reached = result.actualKiB === kib;
          return result;
        } finally {
          events?.close();
        }
      }, opts.signal);
    } finally {
      await lock.release();
    }
  }

  /** Guard rails (skipped with --force): the guest's use on the way down, the host's on the way up. */
  private async checkGuards(c: QmpClient, live: DomainDef, currentKiB: number, targetKiB: number): Promise<void> {
    let why: string | null = null;
    if (targetKiB < currentKiB && live.balloon.model === 'virtio') {
      why = shrinkRefusal(targetKiB, await queryBalloonGuestStats(c, BALLOON_QOM_PATH).catch(() => null));
    } else if (targetKiB > currentKiB) {
      why = growthRefusal(targetKiB - currentKiB, await hostMemAvailableKiB());
    }
    if (why) throw invalidArg(why);
  }

  /**
   * Follow BALLOON_CHANGE and MEMORY_DEVICE_SIZE_CHANGE events until every part of the plan is
   * reached. Gives up (NOT_REACHED, naming the part that stopped) when nothing moves for
   * `stallMs`, or at `timeoutMs`.
   */
  private async followMemory(name: string, c: QmpClient, events: QmpEventStream, live: DomainDef, start: LiveMemory, plan: MemoryPlan, opts: SetMemoryOptions): Promise<number> {
    const timeoutMs = opts.timeoutMs ?? 300_000;
    const stallMs = opts.stallMs ?? 10_000;
    const t0 = Date.now();
    const layout = structuredClone(start.layout);
    let balloonKiB = start.balloonKiB;
    const hasBalloon = live.balloon.model === 'virtio';
    const total = (): number => balloonKiB + layout.dimmKiB + pluggedKiB(layout);
    const done = (): boolean => (!hasBalloon || balloonKiB === plan.balloonKiB)
      && layout.vmem.every((d, i) => d.pluggedKiB === plan.requestedKiB[i]);
    let lastMove = t0;
    const report = (): void => opts.onProgress?.({ actualKiB: total(), targetKiB: plan.targetKiB, startKiB: start.totalKiB, elapsedMs: Date.now() - t0 });
    report();
    let requeried = false;
    while (!done()) {
      const now = Date.now();
      const left = Math.min(t0 + timeoutMs - now, lastMove + stallMs - now);
      if (left <= 0) {
        // QEMU rate-limits MEMORY_DEVICE_SIZE_CHANGE: ask once more before concluding.
        if (!requeried) {
          requeried = true;
          const q = await this.queryLiveMemory(c, live);
          balloonKiB = q.balloonKiB;
          q.layout.vmem.forEach((d, i) => { layout.vmem[i]!.pluggedKiB = d.pluggedKiB; });
          continue;
        }
        throw new VirtError('NOT_REACHED', notReachedMessage(name, plan, layout, balloonKiB, total(), hasBalloon,
          now - t0 >= timeoutMs ? `the wait timed out after ${Math.round(timeoutMs / 1000)} s` : `nothing moved for ${Math.round(stallMs / 1000)} s`));
      }
      // QEMU rate-limits MEMORY_DEVICE_SIZE_CHANGE to one per second per device, so while a
      // virtio-mem device is still moving, the size is also read between events; the balloon's
      // events are not rate-limited and drive the wait alone.
      const vmemMoving = layout.vmem.some((d, i) => d.pluggedKiB !== plan.requestedKiB[i]);
      const before = total();
      let ev;
      try {
        ev = await events.nextEvent({ timeoutMs: vmemMoving ? Math.min(left, VMEM_POLL_MS) : left, ...(opts.signal ? { signal: opts.signal } : {}) });
      } catch (err) {
        if ((err as { code?: string }).code !== 'QMP_TIMEOUT') throw err;
        if (vmemMoving) {
          const devices = await queryMemoryDevices(c);
          for (const d of layout.vmem) {
            const q = devices.find((x) => x.type === 'virtio-mem' && x.id === d.id);
            if (q && q.type === 'virtio-mem') d.pluggedKiB = Math.floor(q.sizeBytes / 1024);
          }
          if (total() !== before) { lastMove = Date.now(); requeried = false; report(); }
        }
        continue;
      }
      const data = ev.data as { actual?: unknown; size?: unknown; id?: unknown };
      if (ev.event === 'BALLOON_CHANGE' && typeof data.actual === 'number') balloonKiB = Math.floor(data.actual / 1024);
      if (ev.event === 'MEMORY_DEVICE_SIZE_CHANGE' && typeof data.size === 'number') {
        const d = layout.vmem.find((v) => v.id === data.id);
        if (d) d.pluggedKiB = Math.floor(data.size / 1024);
      }
      if (total() !== before) { lastMove = Date.now(); requeried = false; }
      report();
    }
    return total();
  }

  /**
   * setmaxmem. Shut off: the maximum at next boot. Running: only a guest defined with a
   * hot-plug ceiling can grow its maximum, by hot-adding a virtio-mem device into the address
   * space QEMU reserved at boot; everything else is refused with the reason.
   * @throws VirtError INVALID_ARG (below floor / current memory, misaligned), OPERATION_INVALID
   */
  async setMaxMemory(ref: string, kib: number, flags: AffectFlags & { signal?: AbortSignal } = {}): Promise<{ live: boolean; config: boolean }> {
    const def = await this.lookup(ref);
    this.checkMemoryFloor(kib);
    return this.withDomainLock(def.name, async () => {
      const o = await this.observe(def.name);
      const running = o.state !== 'shutoff';
      const target = this.affect(flags, running);
      if (target.live && o.state !== 'shutoff') await this.growMaxLive(def.name, o.record, kib, flags.signal);
      if (target.config) await this.store.save(withMaxMemory(def, kib));
      return target;
    }, flags.signal);
  }

  /** Raise a running guest's maximum by hot-adding a virtio-mem device. Caller holds the lock. */
  private async growMaxLive(name: string, rec: RunningRecord, kib: number, signal?: AbortSignal): Promise<void> {
    const live = rec.live;
    const hotplug = live.memory.hotplug;
    const refuse = (why: string): never => { throw new VirtError('OPERATION_INVALID', `Requested operation is not valid: cannot resize the maximum memory on an active domain: ${why}`); };
    if (!hotplug) refuse(`'${name}' was started without a hot-plug ceiling (define one with <maxMemory> or \`virtmem new --max-memory\`)`);
    if (kib < live.memory.maxKiB) refuse(`lowering it needs a restart (virtio-mem regions cannot shrink while the guest runs; use setmem to give memory back)`);
    if (kib === live.memory.maxKiB) return;
    const addKiB = kib - live.memory.maxKiB;
    const blockKiB = 2048;
    if (addKiB % blockKiB) throw invalidArg(`invalid argument: the maximum can grow live only in steps of ${blockKiB} KiB (virtio-mem block size); ${kib} KiB is ${addKiB} KiB above the current ${live.memory.maxKiB} KiB`);
    if (kib > hotplug!.ceilingKiB) refuse(`QEMU reserved hot-plug space up to ${hotplug!.ceilingKiB} KiB at boot (<maxMemory>); raise that with setmaxmem --config ... and a restart`);
    if (live.memoryDevices.length >= hotplug!.slots) refuse(`all ${hotplug!.slots} memory slots are in use`);
    const index = live.memoryDevices.filter((d) => d.model === 'virtio-mem').length;
    const id = virtioMemId(index);
    await this.monitor(name, async (c) => {
      await c.execute('object-add', { 'qom-type': 'memory-backend-ram', id: `mem-${id}`, size: addKiB * 1024 });
      try {
        await c.execute('device_add', { driver: 'virtio-mem-pci', id, memdev: `mem-${id}`, 'requested-size': 0, 'block-size': blockKiB * 1024 });
      } catch (err) {
        await c.execute('object-del', { id: `mem-${id}` }).catch(() => {});
        throw err;
      }
    }, signal);
    rec.live = { ...live, memory: { ...live.memory, maxKiB: kib }, memoryDevices: [...live.memoryDevices, { model: 'virtio-mem', sizeKiB: addKiB, blockKiB, requestedKiB: 0 }] };
    await writeRunRecord(this.paths.run(name), rec);
  }

  /**
   * dommemstat: balloon and guest statistics, QEMU's resident size on the host.
   * @throws VirtError OPERATION_INVALID (not running)
   */
  async memoryStats(ref: string, opts: { signal?: AbortSignal } = {}): Promise<MemoryStats> {
    const def = await this.lookup(ref);
    const rec = await this.requireRunning(def.name);
    const live = rec.live;
    const raw = live.balloon.model === 'none' ? null : await this.monitor(def.name, async (c) => ({
      actualBytes: (await queryBalloon(c)).actualBytes,
      stats: await queryBalloonGuestStats(c, BALLOON_QOM_PATH),
    }), opts.signal);
    const rss = await readRssKiB(rec.pid);
    return toMemoryStats({ live, balloonBytes: raw?.actualBytes ?? null, guestStats: raw?.stats ?? null, rssKiB: rss });
  }

  /**
   * dommemstat --period: how often the guest reports statistics (0 turns it off), live and/or
   * in the definition.
   * @throws VirtError INVALID_ARG, OPERATION_INVALID (not running with --live; no balloon)
   */
  async setStatsPeriod(ref: string, periodS: number, flags: AffectFlags & { signal?: AbortSignal } = {}): Promise<{ live: boolean; config: boolean }> {
    if (!Number.isInteger(periodS) || periodS < 0 || periodS > 2 ** 31 - 1) throw invalidArg(`Invalid collection period value '${periodS}'`);
    const def = await this.lookup(ref);
    return this.withDomainLock(def.name, async () => {
      const o = await this.observe(def.name);
      const target = this.affect(flags, o.state !== 'shutoff');
      if (target.live && o.state !== 'shutoff') {
        const rec = o.record;
        if (rec.live.balloon.model === 'none') {
          throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: no memory balloon device configured, can not set the collection period');
        }
        await this.monitor(def.name, (c) => qomSet(c, BALLOON_QOM_PATH, 'guest-stats-polling-interval', periodS), flags.signal);
        rec.live.balloon.statsPeriodS = periodS;
        await writeRunRecord(this.paths.run(def.name), rec);
      }
      if (target.config) {
        if (def.balloon.model === 'none') {
          throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: no memory balloon device configured, can not set the collection period');
        }
        await this.store.save({ ...def, balloon: { ...def.balloon, statsPeriodS: periodS } });
      }
      return target;
    }, flags.signal);
  }

  // ---------------------------------------------------------------- policy settings

  /**
   * Change a domain's automatic memory policy settings (persistent; the daemon's policy loop
   * reads them). Fields not given keep their value; `null` resets one to its default.
   * @throws VirtError NO_DOMAIN, INVALID_ARG (naming the setting; nothing is written)
   */
  async setPolicy(ref: string, change: { enabled?: boolean; floorKiB?: number | null; ceilingKiB?: number | null; shares?: number | null }, signal?: AbortSignal): Promise<DomainDef> {
    const def = await this.lookup(ref);
    return this.withDomainLock(def.name, async () => {
      const current = (await this.store.get(def.name)) ?? def;
      const next: Record<string, unknown> = { ...(current.policy ?? { enabled: false }) };
      for (const [k, v] of Object.entries(change)) {
        if (v === null) delete next[k];
        else if (v !== undefined) next[k] = v;
      }
      const updated = validateDomainDef({ ...current, policy: next }); // throws before anything is written
      await this.store.save(updated);
      return updated;
    }, signal);
  }

  // ---------------------------------------------------------------- monitor passthrough

  /**
   * qemu-monitor-command: HMP text, or a QMP command given as JSON text. Returns what QEMU
   * said: the HMP output, or the QMP reply object ({return} or {error}).
   * @throws VirtError INVALID_ARG (not JSON / no "execute"), OPERATION_INVALID (not running)
   */
  async monitorCommand(ref: string, command: string, opts: { hmp?: boolean; signal?: AbortSignal } = {}): Promise<string | Record<string, unknown>> {
    const def = await this.lookup(ref);
    await this.requireRunning(def.name);
    if (opts.hmp) return this.monitor(def.name, (c) => c.hmp(command), opts.signal);
    let msg: unknown;
    try {
      msg = JSON.parse(command);
    } catch (err) {
      throw invalidArg(`invalid argument: QMP command is not valid JSON (${(err as Error).message}); use --hmp for human monitor commands`, err);
    }
    const m = msg as { execute?: unknown; arguments?: unknown };
    if (typeof msg !== 'object' || msg === null || typeof m.execute !== 'string') {
      throw invalidArg('invalid argument: QMP command must be a JSON object with an "execute" member');
    }
    if (m.arguments !== undefined && (typeof m.arguments !== 'object' || m.arguments === null || Array.isArray(m.arguments))) {
      throw invalidArg('invalid argument: "arguments" of a QMP command must be a JSON object');
    }
    const execute = m.execute;
    const args = m.arguments as Record<string, unknown> | undefined;
    return this.monitor(def.name, async (c) => {
      try {
        return { return: await c.execute(execute, args, opts.signal ? { signal: opts.signal } : {}) };
      } catch (err) {
        if (err instanceof QmpCommandError) return { error: { class: err.errorClass, desc: err.desc } };
        throw monitorError(def.name, err);
      }
    }, opts.signal);
  }
}

/** `virtmem capabilities`: what the host offers guests. */
export interface HostCapabilities {
  emulator: { path: string; version: string | null } | { path: null; version: null; error: string };
  /** null when there is no QEMU to probe with. */
  kvm: KvmStatus | null;
  accel: { autoPicks: Accel; envOverride: string | null };
  cpu: { defaultUnderKvm: string; defaultUnderTcg: string; modes: string[] };
  hostMemory: { totalKiB: number | null; availableKiB: number | null; pressure: string | null };
  defaultGuest: { kernel: string; kernelVersion: string; initrd: string } | null;
}

/** First line of `qemu-system-x86_64 --version`, bounded; null when it does not answer. */
function qemuVersion(path: string): Promise<string | null> {
  return new Promise((resolve) => {
    let out = '';
    const child = spawn(path, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const timer = setTimeout(() => { child.kill('SIGKILL'); }, 5_000);
    child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
    child.once('error', () => { clearTimeout(timer); resolve(null); });
    child.once('close', () => { clearTimeout(timer); resolve(out.split('\n')[0]?.trim() || null); });
  });
}

/** What QEMU reported about a running guest's memory. */
interface LiveMemory {
  layout: MemoryLayout;
  /** Balloon "actual": how much of boot RAM the guest has. */
  balloonKiB: number;
  totalKiB: number;
}

/** Where a guest's memory is, for dominfo and --json. */
export interface MemoryBreakdown {
  bootKiB: number;
  balloonKiB: number;
  dimmKiB: number;
  /** virtio-mem memory plugged now. */
  pluggedKiB: number;
  /** The most virtio-mem could plug (sum of device sizes). */
  hotplugSizeKiB: number;
}

const pluggedKiB = (l: MemoryLayout): number => l.vmem.reduce((s, d) => s + d.pluggedKiB, 0);

function breakdown(m: LiveMemory): MemoryBreakdown {
  return {
    bootKiB: m.layout.bootKiB, balloonKiB: m.balloonKiB, dimmKiB: m.layout.dimmKiB,
    pluggedKiB: pluggedKiB(m.layout), hotplugSizeKiB: layoutMaxKiB(m.layout) - m.layout.bootKiB - m.layout.dimmKiB,
  };
}

/** The split a shut-off domain's current memory will get at boot. */
function planned(def: DomainDef): LiveMemory {
  const layout = defLayout(def);
  const plan = planMemory(layout, def.memory.currentKiB);
  plan.requestedKiB.forEach((r, i) => { layout.vmem[i]!.pluggedKiB = r; });
  return { layout, balloonKiB: plan.balloonKiB, totalKiB: def.memory.currentKiB };
}

/**
 * A definition with a new maximum. With virtio-mem, the last device's region takes the change
 * (boot RAM stays); without, boot RAM does.
 * @throws VirtError INVALID_ARG when the result would be inconsistent.
 */
function withMaxMemory(def: DomainDef, kib: number): DomainDef {
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

function notReachedMessage(name: string, plan: MemoryPlan, layout: MemoryLayout, balloonKiB: number, totalKiB: number, hasBalloon: boolean, when: string): string {
  const parts: string[] = [];
  layout.vmem.forEach((d, i) => {
    const want = plan.requestedKiB[i]!;
    if (d.pluggedKiB !== want) {
      parts.push(d.pluggedKiB > want
        ? `virtio-mem ${d.id} still has ${d.pluggedKiB} KiB plugged of the ${want} KiB asked for (the guest could not offline more memory: it is in use or not movable)`
        : `virtio-mem ${d.id} has ${d.pluggedKiB} KiB plugged of the ${want} KiB asked for (is the guest's virtio_mem driver loaded?)`);
    }
  });
  if (hasBalloon && balloonKiB !== plan.balloonKiB) {
    parts.push(balloonKiB > plan.balloonKiB
      ? `the balloon stopped at ${balloonKiB} KiB of boot memory, target ${plan.balloonKiB} KiB (is the guest's balloon driver loaded, or has it nothing left to free?)`
      : `the balloon holds ${balloonKiB} KiB of boot memory, target ${plan.balloonKiB} KiB (is the guest's balloon driver loaded?)`);
  }
  return `memory target ${plan.targetKiB} KiB not reached: domain '${name}' stopped at ${totalKiB} KiB; ${when}: ${parts.join('; ')}`;
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

// The native driver is one implementation of the neutral API; this fails to compile if its
// public methods drift from it.
import type { HypervisorDriver } from '../api.js';
const _nativeIsHypervisorDriver = (d: Driver): HypervisorDriver => d;
void _nativeIsHypervisorDriver;
