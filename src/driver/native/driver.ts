/**
 * virtmem's own QEMU driver (`virtmem:///system`): the driver API (api.ts) on QEMU processes
 * it starts and talks to over QMP, no libvirt underneath. This class is the face; the parts
 * live beside it by concern: definitions and lookups here, lifecycle in process.ts, memory in
 * memory.ts, monitor sessions in monitor.ts and context.ts, the host's capabilities in
 * capabilities.ts, the live watch in watch.ts. Every mutation runs under the domain's job lock
 * and re-checks the domain after each wait; every wait is bounded; sizes are KiB.
 */
import { withAutoPlacement } from './memory-start.js';
import { readdir, rm, readFile } from 'node:fs/promises';
import { liveReason, observeSync } from './run-status.js';
import type { QmpClient } from '../../qmp/index.js';
import { QmpCommandError } from '../../qmp/index.js';
import type { DomainDef, MemtuneDef } from '../../domain/definition.js';
import { VirtError, invalidArg } from '../../domain/errors.js';
import { validateDomainName } from '../../domain/name.js';
import { validateDomainDef } from '../../domain/validate-def.js';
import { applyPolicyChange, effectivePolicy, type PolicySettingsChange } from '../../domain/policy.js';
import type {
  AffectOptions, DefineResult, DomainInfo, DomainState, DomainSummary, HostCapabilities, HypervisorDriver, PolicyDecisionRecord,
  PolicyDocument, SetMemoryOptions, SetMemoryResult, StartResult, StateReason, MemoryMapReport, Translation, TranslateOptions,
} from '../api.js';
import type { MemoryStats } from '../memory/stats.js';
import type { DriverWatch, WatchOptions } from '../watch.js';
import { viewFromDefinition, type GuestView } from '../view.js';
import { writeFileAtomic } from '../../util/atomic-file.js';
import { NativeContext, type NativeOptions } from './context.js';
import type { RunPaths } from './paths.js';
import { monitorError } from './monitor.js';
import { readProcStat, CLOCK_TICKS_PER_S } from './host-process.js';
import { queryStatus } from '../../qmp/index.js';
import * as memory from './memory.js';
import * as lifecycle from './process.js';
import * as memtuneParts from './memtune.js';
import * as tuning from './domain-tuning.js';
import * as stats from './domain-stats.js';
import type {
  DeviceFlags, DirtyRateMode, DomainStatsRecord, DomainStatsRequest, MemoryDeviceUpdate, MemoryParameter, MemoryParametersUpdate, NumaParameters,
  NumaParametersUpdate,
} from '../domain-memory-api.js';
import { NativeWatch } from './watch.js';
import { guestHostMemory } from './host-memory-facts.js';
import { NativeNodeMemory } from './node.js';
import { hostCapabilities, plannedAccel, withGuestKernel } from './capabilities.js';
import type { KvmStatus } from './accel.js';

export type { NativeOptions } from './context.js';
export type { StartOptions } from './process.js';

export class NativeDriver implements HypervisorDriver {
  readonly uri = 'virtmem:///system';
  readonly ctx: NativeContext;
  /** The host's memory, read from the kernel as libvirt reads it (node.ts). */
  readonly node = new NativeNodeMemory();
  #watch: DriverWatch | null = null;

  constructor(opts: NativeOptions = {}) {
    this.ctx = new NativeContext(opts);
  }

  /** The state directory's layout. */
  get paths(): NativeContext['paths'] {
    return this.ctx.paths;
  }

  /** @throws VirtError NO_DOMAIN */
  lookup(ref: string): Promise<DomainDef> {
    return this.ctx.lookup(ref);
  }

  // ---------------------------------------------------------------- queries

  /** All defined domains with their state, running ones first (by id), then by name. */
  async list(): Promise<DomainSummary[]> {
    const defs = await this.ctx.store.summaries();
    const running = new Set(await readdir(this.ctx.paths.runDir).catch(() => [] as string[]));
    const rows = defs.map((def): DomainSummary => {
      // A guest a watch follows (a daemon runs): its view, kept by QEMU's events and the held
      // monitor (which closes when QEMU goes), says what its run record and /proc would.
      const v = this.ctx.held?.view(def.name);
      if (v && v.monitor === 'connected' && v.id !== null && (v.state === 'running' || v.state === 'paused')) {
        return { id: v.id, name: def.name, uuid: def.uuid, state: v.state, reason: liveReason(v.state), persistent: true };
      }
      // A domain that never ran has no run directory: shut off, nothing to read.
      const o = running.has(def.name) ? observeSync(this.ctx.paths.run(def.name)) : { state: 'shutoff' as const, reason: 'unknown' as const, record: null };
      return { id: o.state === 'shutoff' ? null : o.record.id, name: def.name, uuid: def.uuid, state: o.state, reason: o.reason, persistent: true };
    });
    return rows.sort((a, b) => (a.id ?? Infinity) - (b.id ?? Infinity) || a.name.localeCompare(b.name));
  }

  /** Definitions the store cannot read (a symbolic link, not a regular file, corrupt), each with why. */
  async unreadableDefinitions(): Promise<Array<{ name: string; reason: string }>> {
    return (await this.ctx.store.scan()).unreadable.map((u) => ({ name: u.name, reason: u.error.message }));
  }

  async state(ref: string): Promise<{ state: DomainState; reason: StateReason }> {
    const def = await this.ctx.lookup(ref);
    const o = await this.ctx.observe(def.name);
    return { state: o.state, reason: o.reason };
  }

  /** dominfo: for a running domain the balloon is asked live (Used memory is what the guest has, not the last target). */
  async info(ref: string, signal?: AbortSignal): Promise<DomainInfo> {
    const def = await this.ctx.lookup(ref);
    const o = await this.ctx.observe(def.name);
    const base = { name: def.name, uuid: def.uuid, persistent: true, autostart: false, osType: 'hvm' as const };
    if (o.state === 'shutoff') {
      return {
        ...base, id: null, state: 'shutoff', reason: o.reason, vcpus: def.vcpus, cpuTimeS: null,
        maxMemoryKiB: def.memory.maxKiB, usedMemoryKiB: def.memory.currentKiB, accel: null, cpuModel: null, accelNote: null,
        memory: memory.breakdown(memory.planned(def)),
        hostMemory: await guestHostMemory(this.ctx.paths.root, def.name, def, null),
      };
    }
    const live = o.record.live;
    // One monitor session for both questions: a monitor serves one client at a time.
    const [stat, { used, paused }, hostMemory] = await Promise.all([
      readProcStat(o.record.pid),
      this.ctx.monitor(def.name, async (c) => {
        const [status, mem] = await Promise.all([queryStatus(c), memory.queryLiveMemory(c, live)]);
        return { paused: !status.running, used: mem };
      }, signal),
      guestHostMemory(this.ctx.paths.root, def.name, withAutoPlacement(live, o.record.autoNodes), o.record.pid),
    ]);
    return {
      ...base, id: o.record.id, state: paused ? 'paused' : 'running', reason: paused ? 'user' : 'booted',
      vcpus: live.vcpus, cpuTimeS: stat ? stat.cpuTicks / CLOCK_TICKS_PER_S : null,
      maxMemoryKiB: live.memory.maxKiB, usedMemoryKiB: used.totalKiB, accel: o.record.accel,
      cpuModel: o.record.cpuModel ?? null, accelNote: o.record.accelNote ?? null,
      memory: memory.breakdown(used),
      hostMemory,
    };
  }

  /**
   * The runtime facts of a running domain, for inspection tools that read the QEMU process.
   * @throws VirtError NO_DOMAIN, OPERATION_INVALID (not running)
   */
  async runtime(ref: string): Promise<{ name: string; pid: number; paths: RunPaths; live: DomainDef }> {
    const def = await this.ctx.lookup(ref);
    const rec = await this.ctx.requireRunning(def.name);
    return { name: def.name, pid: rec.pid, paths: this.ctx.paths.run(def.name), live: rec.live };
  }

  /**
   * Run `fn` with a monitor session on a running domain. QMP failures come out as VirtError.
   * @throws VirtError NO_DOMAIN, OPERATION_INVALID (not running), MONITOR_FAILED, TIMEOUT
   */
  async withMonitor<T>(ref: string, fn: (client: QmpClient) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const def = await this.ctx.lookup(ref);
    await this.ctx.requireRunning(def.name);
    return this.ctx.monitor(def.name, fn, signal);
  }

  // ---------------------------------------------------------------- definitions

  /**
   * Define (or redefine, same name and uuid) a domain.
   * @throws VirtError INVALID_ARG / DOMAIN_EXISTS / CONFIG_UNSUPPORTED
   */
  async define(input: DomainDef): Promise<{ def: DomainDef; redefined: boolean }> {
    const name = validateDomainName(input.name);
    this.ctx.paths.run(name); // validates that its socket paths fit
    return this.ctx.withDomainLock('.defs', async () => {
      const all = await this.ctx.store.all();
      const sameUuid = all.find((d) => d.uuid === input.uuid);
      if (sameUuid && sameUuid.name !== name) {
        throw new VirtError('DOMAIN_EXISTS', `operation failed: domain '${sameUuid.name}' is already defined with uuid ${input.uuid}`);
      }
      const existing = all.find((d) => d.name === name);
      if (existing && existing.uuid !== input.uuid) {
        throw new VirtError('DOMAIN_EXISTS', `operation failed: domain '${name}' already exists with uuid ${existing.uuid}`);
      }
      return this.ctx.withDomainLock(name, async () => {
        // As it is now: an undefine (which takes only the domain's lock) may have removed it. An
        // unusable stored file (a link, a torn copy) is replaced, never read: the new definition
        // takes its place by rename.
        const redefined = await this.ctx.store.exists(name);
        await this.ctx.store.save(input);
        return { def: input, redefined };
      });
    });
  }

  /** Define from libvirt domain XML; warnings name what was ignored. */
  async defineXml(xml: string): Promise<DefineResult & { def: DomainDef }> {
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
    const { name } = await this.ctx.lookup(ref);
    return this.ctx.withDomainLock(name, async () => {
      const def = await this.ctx.current(name, ref);
      const o = await this.ctx.observe(name);
      if (o.state !== 'shutoff') {
        throw new VirtError('OPERATION_INVALID', `Requested operation is not valid: cannot undefine running domain '${name}'; shut it down or destroy it first`);
      }
      await this.ctx.store.remove(name);
      await rm(this.ctx.paths.run(name).dir, { recursive: true, force: true });
      return def;
    });
  }

  /** Libvirt XML of a domain: the live definition when running unless `inactive`. */
  async dumpXml(ref: string, opts: { inactive?: boolean; signal?: AbortSignal } = {}): Promise<string> {
    const def = await this.ctx.lookup(ref);
    const o = await this.ctx.observe(def.name);
    const { formatDomainXml } = await import('../../domain/xml.js');
    // The accelerator it runs with, or the one it asks for; 'auto' shows what auto picks here.
    const accel = !opts.inactive && o.state !== 'shutoff' ? o.record.accel : await plannedAccel(this.ctx, def);
    const xmlType = accel === 'kvm' ? 'kvm' : 'qemu';
    const shown = opts.inactive || o.state === 'shutoff' ? def : o.record.live;
    const withKernel = await withGuestKernel(this.ctx, shown);
    if (opts.inactive || o.state === 'shutoff') return formatDomainXml(withKernel, { accel: xmlType });
    const now = await this.ctx.monitor(def.name, (c) => memory.queryLiveMemory(c, o.record.live), opts.signal);
    return formatDomainXml(withKernel, { accel: xmlType, running: { id: o.record.id, actualKiB: now.totalKiB } });
  }

  /** What this host offers guests (never throws for a missing QEMU or guest: they are reported). */
  capabilities(opts: { refresh?: boolean; signal?: AbortSignal } = {}): Promise<HostCapabilities> {
    return hostCapabilities(this.ctx, opts);
  }

  /** Whether KVM runs guests here (the cached probe, accel.ts). */
  kvm(opts: { emulator?: string; refresh?: boolean; signal?: AbortSignal | undefined } = {}): Promise<KvmStatus> {
    return lifecycle.kvm(this.ctx, opts);
  }

  // ---------------------------------------------------------------- lifecycle

  async start(ref: string, opts: { paused?: boolean; signal?: AbortSignal } = {}): Promise<StartResult> {
    const rec = await lifecycle.start(this.ctx, ref, opts);
    return { live: { name: rec.live.name }, id: rec.id, pid: rec.pid, accel: rec.accel, cpuModel: rec.cpuModel ?? null, accelNote: rec.accelNote ?? null };
  }

  shutdown(ref: string, opts: { timeoutMs?: number | null; signal?: AbortSignal } = {}): Promise<{ stopped: boolean }> {
    return lifecycle.shutdown(this.ctx, ref, opts);
  }

  destroy(ref: string, signal?: AbortSignal): Promise<void> {
    return lifecycle.destroy(this.ctx, ref, signal);
  }

  // ---------------------------------------------------------------- memory

  setMemory(ref: string, kib: number, opts: SetMemoryOptions = {}): Promise<SetMemoryResult> {
    return memory.setMemory(this.ctx, ref, kib, opts);
  }

  setMaxMemory(ref: string, kib: number, flags: AffectOptions = {}): Promise<{ live: boolean; config: boolean }> {
    return memory.setMaxMemory(this.ctx, ref, kib, flags);
  }

  memoryStats(ref: string, opts: { signal?: AbortSignal } = {}): Promise<MemoryStats> {
    return memory.memoryStats(this.ctx, ref, opts);
  }

  setStatsPeriod(ref: string, periodS: number, flags: AffectOptions = {}): Promise<{ live: boolean; config: boolean }> {
    return memory.setStatsPeriod(this.ctx, ref, periodS, flags);
  }

  // ---------------------------------------------------------------- memory cgroup limits

  /** <memtune>: the running QEMU's cgroup limits (live) or the definition's (memtune.ts). */
  memtune(ref: string, opts: { live?: boolean } = {}): Promise<MemtuneDef> {
    return memtuneParts.memtune(this.ctx, ref, opts);
  }

  /** Changes <memtune> limits live and/or in the definition; null removes a limit. */
  setMemtune(ref: string, change: memtuneParts.MemtuneChange, flags: AffectOptions = {}): Promise<{ live: boolean; config: boolean }> {
    return memtuneParts.setMemtune(this.ctx, ref, change, flags);
  }

  // ---------------------------------------------------------------- memory beyond its size (virsh memtune, numatune, devices, domstats)

  memoryParameters(ref: string, flags?: DeviceFlags): Promise<MemoryParameter[]> { return tuning.memoryParameters(this.ctx, ref, flags); }
  setMemoryParameters(ref: string, update: MemoryParametersUpdate, flags?: DeviceFlags): Promise<void> { return tuning.setMemoryParameters(this.ctx, ref, update, flags); }
  numaParameters(ref: string, flags?: DeviceFlags): Promise<NumaParameters> { return tuning.numaParameters(this.ctx, ref, flags); }
  setNumaParameters(ref: string, update: NumaParametersUpdate, flags?: DeviceFlags): Promise<void> { return tuning.setNumaParameters(this.ctx, ref, update, flags); }
  domainStats(req: DomainStatsRequest): Promise<DomainStatsRecord[]> { return stats.domainStats(this.ctx, req); }
  startDirtyRateCalc(ref: string, seconds: number, mode: DirtyRateMode | null, signal?: AbortSignal): Promise<void> { return stats.startDirtyRateCalc(this.ctx, ref, seconds, mode, signal); }

  // Device XML needs the XML parser: loaded on demand (keeps CLI start-up lean).
  async attachDevice(ref: string, xml: string, flags?: DeviceFlags): Promise<void> { return (await import('./memory-devices.js')).attachDevice(this.ctx, ref, xml, flags); }
  async detachDevice(ref: string, xml: string, flags?: DeviceFlags): Promise<void> { return (await import('./memory-devices.js')).detachDevice(this.ctx, ref, xml, flags); }
  async updateMemoryDevice(ref: string, update: MemoryDeviceUpdate, flags?: DeviceFlags): Promise<{ xml: string }> {
    return (await import('./memory-devices.js')).updateMemoryDevice(this.ctx, ref, update, flags);
  }

  // ---------------------------------------------------------------- policy settings

  /** A guest's policy settings, and the last decision the daemon recorded for it. */
  async policy(ref: string): Promise<PolicyDocument> {
    const def = await this.ctx.lookup(ref);
    const last = await readFile(this.ctx.paths.run(def.name).policyLast, 'utf8')
      .then((t) => JSON.parse(t) as PolicyDecisionRecord, () => null);
    return { name: def.name, settings: effectivePolicy(def), configured: def.policy ?? null, last };
  }

  /**
   * Change a guest's policy settings (persistent; the daemon's policy loop follows them).
   * @throws VirtError NO_DOMAIN, INVALID_ARG (naming the setting; nothing is written)
   */
  async setPolicy(ref: string, change: PolicySettingsChange, signal?: AbortSignal): Promise<PolicyDocument> {
    const { name } = await this.ctx.lookup(ref);
    return this.ctx.withDomainLock(name, async () => {
      const current = await this.ctx.current(name, ref);
      const updated = validateDomainDef({ ...current, policy: applyPolicyChange(current.policy, change) }); // throws before anything is written
      await this.ctx.store.save(updated);
      return { name, settings: effectivePolicy(updated), configured: updated.policy ?? null };
    }, signal);
  }

  /** Writes the policy's last decision beside the guest's run record (read by `policy`). */
  async recordPolicyDecision(ref: string, d: PolicyDecisionRecord): Promise<void> {
    const def = await this.ctx.lookup(ref);
    await writeFileAtomic(this.ctx.paths.run(def.name).policyLast, JSON.stringify(d) + '\n', 0o600, { durable: false });
  }

  /** The built-in guest's agent socket and console log of a domain. */
  async guestChannels(ref: string): Promise<{ agentSocket: string; consoleLog: string }> {
    const def = await this.ctx.lookup(ref);
    const run = this.ctx.paths.run(def.name);
    return { agentSocket: run.agent, consoleLog: run.consoleLog };
  }

  /** What a shut-off guest will boot with, as a view. */
  async inactiveView(ref: string): Promise<GuestView> {
    const def = await this.ctx.lookup(ref);
    const v = viewFromDefinition(def, { id: null, state: 'shutoff', pid: null }, Date.now() / 1000);
    v.monitor = 'down';
    return v;
  }

  // ---------------------------------------------------------------- inspection

  async translate(ref: string, gva: bigint, opts: TranslateOptions & { signal?: AbortSignal } = {}): Promise<Translation> {
    const { translate } = await import('../../inspect/inspector.js');
    return translate(this, ref, gva, opts);
  }

  async memoryMap(ref: string, opts: { signal?: AbortSignal } = {}): Promise<MemoryMapReport> {
    const { memoryMap } = await import('../../inspect/inspector.js');
    return memoryMap(this, ref, opts);
  }

  // ---------------------------------------------------------------- monitor passthrough

  /**
   * qemu-monitor-command: HMP text, or a QMP command given as JSON text. Returns what QEMU
   * said: the HMP output, or the QMP reply object ({return} or {error}).
   * @throws VirtError INVALID_ARG (not JSON / no "execute"), OPERATION_INVALID (not running)
   */
  async monitorCommand(ref: string, command: string, opts: { hmp?: boolean; signal?: AbortSignal } = {}): Promise<string | Record<string, unknown>> {
    const def = await this.ctx.lookup(ref);
    await this.ctx.requireRunning(def.name);
    if (opts.hmp) return this.ctx.monitor(def.name, (c) => c.hmp(command), opts.signal);
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
    return this.ctx.monitor(def.name, async (c) => {
      try {
        return { return: await c.execute(execute, args, opts.signal ? { signal: opts.signal } : {}) };
      } catch (err) {
        if (err instanceof QmpCommandError) return { error: { class: err.errorClass, desc: err.desc } };
        throw monitorError(def.name, err);
      }
    }, opts.signal);
  }

  // ---------------------------------------------------------------- watch

  /** The live watch of this host's guests (one per driver); short calls then run on its monitors. */
  watch(opts: WatchOptions = {}): DriverWatch {
    this.#watch ??= new NativeWatch(this.ctx, opts);
    return this.#watch;
  }

  async close(): Promise<void> {
    await this.#watch?.stop();
  }
}
