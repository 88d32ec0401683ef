/**
 * The daemon's client as a driver: the same face (api.ts) over virtmemd's HTTP API on its unix
 * socket, so the CLI's answers come from the daemon's held monitors and live model when a
 * daemon runs. What the daemon does not serve, and everything when no daemon answers, goes to
 * the driver it wraps (the native driver on the same state directory). Results have the
 * driver's own types, so the CLI prints the same either way; the daemon's errors come back as
 * VirtError with the daemon's code. A wrapper, not a subclass: it forwards, it decides nothing.
 */
import { VirtError, type VirtErrorCode } from '../../domain/errors.js';
import type { DomainDef } from '../../domain/definition.js';
import type { PolicySettingsChange } from '../../domain/policy.js';
import type {
  AffectOptions, DefineResult, MemoryStats, NodeMemory, DomainInfo, DomainState, DomainSummary, HostCapabilities, HypervisorDriver, MemoryMapReport, PolicyDecisionRecord,
  PolicyDocument, SetMemoryOptions, SetMemoryResult, StartResult, StateReason, Translation, TranslateOptions,
} from '../api.js';
import type { DriverWatch, WatchOptions } from '../watch.js';
import type { GuestView } from '../view.js';
import { daemonRequest, DaemonUnreachableError, operationEvents, type OperationDoc } from './http-client.js';
import { DAEMON_ANSWER_MS, seconds } from '../bounds.js';
import { hostMemoryFromDocument } from '../domain-memory-api.js';

const KIB = 1024;

export class DaemonDriver implements HypervisorDriver {
  readonly uri: string;

  /**
   * @param socketPath the daemon's API socket
   * @param fallback the driver that does the work when no daemon answers
   */
  constructor(private readonly socketPath: string, private readonly fallback: HypervisorDriver) {
    this.uri = fallback.uri;
    if (fallback.node) this.node = fallback.node;
  }

  /** The host's memory: the wrapped driver's (the daemon does not serve it). */
  readonly node?: NodeMemory;

  /**
   * The daemon's answer, or null when no daemon is there (then the fallback does the work). A
   * daemon that is there but does not answer within DAEMON_ANSWER_MS is an error: doing the work
   * here too could do a change twice, and would only wait on the same guest again.
   * @throws VirtError TIMEOUT when the daemon does not answer in time; the daemon's own errors
   */
  async #ask(method: string, path: string, body?: unknown): Promise<unknown | null> {
    let r;
    try {
      r = await daemonRequest({ socketPath: this.socketPath }, method, `/api/v1${path}`, { ...(body === undefined ? {} : { body }), timeoutMs: DAEMON_ANSWER_MS });
    } catch (err) {
      if (err instanceof DaemonUnreachableError && err.timedOut) {
        throw new VirtError('TIMEOUT', `Timed out during operation: virtmemd (${this.socketPath}) did not answer within ${seconds(DAEMON_ANSWER_MS)}; VIRTMEM_DAEMON=0 runs the command without it`, { cause: err });
      }
      if (err instanceof DaemonUnreachableError) return null;
      throw err;
    }
    if (r.status >= 400) {
      const e = (r.body as { error?: { code?: string; message?: string } }).error;
      throw new VirtError((e?.code ?? 'INTERNAL') as VirtErrorCode, e?.message ?? `virtmemd answered ${r.status}`);
    }
    return r.body;
  }

  async list(): Promise<DomainSummary[]> {
    const doc = await this.#ask('GET', '/domains') as { domains: Array<DomainSummary & { monitor: string; stale: boolean }> } | null;
    if (!doc) return this.fallback.list();
    return doc.domains.map((d) => ({ id: d.id, name: d.name, uuid: d.uuid, state: d.state, reason: d.reason, persistent: d.persistent }));
  }

  async info(ref: string, signal?: AbortSignal): Promise<DomainInfo> {
    const doc = await this.#ask('GET', `/domains/${encodeURIComponent(ref)}/info`) as Record<string, any> | null;
    if (!doc) return this.fallback.info(ref, signal);
    const m = doc.memory;
    // The driver's field order, so --json prints the same text either way.
    return {
      name: doc.name, uuid: doc.uuid, persistent: doc.persistent, autostart: doc.autostart, osType: doc.osType,
      id: doc.id, state: doc.state, reason: doc.reason, vcpus: doc.vcpus, cpuTimeS: doc.cpuTimeS,
      maxMemoryKiB: doc.maxMemoryBytes / KIB, usedMemoryKiB: doc.usedMemoryBytes / KIB,
      accel: doc.accel, cpuModel: doc.cpuModel, accelNote: doc.accelNote,
      memory: { bootKiB: m.bootBytes / KIB, balloonKiB: m.balloonBytes / KIB, dimmKiB: m.dimmBytes / KIB, pluggedKiB: m.pluggedBytes / KIB, hotplugSizeKiB: m.hotplugSizeBytes / KIB },
      ...(doc.hostMemory ? { hostMemory: hostMemoryFromDocument(doc.hostMemory) } : {}),
    } as DomainInfo;
  }

  /**
   * setmem through the daemon: the live change, with --config too, and the wait (followed on
   * the daemon's event stream, with its progress). A change of the next boot alone
   * (--config, or --current on a shut-off guest) is a definition write: the wrapped driver does it.
   */
  async setMemory(ref: string, kib: number, opts: SetMemoryOptions = {}): Promise<SetMemoryResult> {
    if (opts.current || (opts.config && !opts.live)) return this.fallback.setMemory(ref, kib, opts);
    const body = {
      targetBytes: kib * KIB, ...(opts.force ? { force: true } : {}), ...(opts.config ? { config: true } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: Math.max(1, Math.min(86_400_000, opts.timeoutMs)) } : {}),
    };
    const path = `/domains/${encodeURIComponent(ref)}/memory`;
    const result = (actualBytes: number | null, reached: boolean): SetMemoryResult => ({
      targetKiB: kib, actualKiB: actualBytes === null ? null : actualBytes / KIB, reached, live: true, config: !!opts.config,
    });
    if (!opts.wait) {
      const doc = await this.#ask('PUT', path, body) as { operation: OperationDoc } | null;
      if (!doc) return this.fallback.setMemory(ref, kib, opts);
      return result(doc.operation.actualBytes, false);
    }
    // Subscribed before the change, so none of its events is missed.
    const events = operationEvents({ socketPath: this.socketPath });
    try {
      try {
        await events.ready;
      } catch (err) {
        if (err instanceof DaemonUnreachableError) return this.fallback.setMemory(ref, kib, opts);
        throw err;
      }
      const doc = await this.#ask('PUT', path, body) as { operation: OperationDoc } | null;
      if (!doc) return this.fallback.setMemory(ref, kib, opts);
      const startedAt = Date.now() - doc.operation.elapsedMs;
      const progress = (op: OperationDoc): void => {
        if (op.actualBytes === null) return;
        opts.onProgress?.({ actualKiB: op.actualBytes / KIB, targetKiB: kib, startKiB: (op.startBytes ?? op.actualBytes) / KIB, elapsedMs: Date.now() - startedAt });
      };
      progress(doc.operation);
      const bound = (opts.timeoutMs ?? 300_000) + 30_000;
      const end = doc.operation.state !== 'running' ? doc.operation
        : await events.until(doc.operation.id, (op) => op.state !== 'running', progress, bound);
      progress(end);
      if (end.state === 'failed') throw new VirtError((end.code ?? 'OPERATION_FAILED') as VirtErrorCode, end.message ?? 'the memory change failed');
      return result(end.actualBytes, end.actualBytes === kib * KIB);
    } finally {
      events.close();
    }
  }

  async memoryStats(ref: string, opts: { signal?: AbortSignal } = {}): Promise<MemoryStats> {
    const doc = await this.#ask('GET', `/domains/${encodeURIComponent(ref)}/memory-stats`) as { periodS: number; stats: Array<{ name: string; value: number; unit: string }> } | null;
    if (!doc) return this.fallback.memoryStats(ref, opts);
    return { stats: doc.stats.map((s) => ({ name: s.name, value: s.unit === 'bytes' ? s.value / KIB : s.value })), periodS: doc.periodS };
  }

  /** The settings, with the last decision of the daemon's policy when a daemon runs. */
  async policy(ref: string, signal?: AbortSignal): Promise<PolicyDocument> {
    const mine = await this.fallback.policy(ref, signal);
    const doc = await this.#ask('GET', `/domains/${encodeURIComponent(mine.name)}/policy`) as { last: (Omit<PolicyDecisionRecord, 'fromKiB' | 'targetKiB'> & { fromBytes?: number; targetBytes?: number }) | null } | null;
    if (!doc) return mine;
    const l = doc.last;
    return {
      ...mine,
      last: l && {
        at: l.at, action: l.action, reason: l.reason,
        ...(l.fromBytes !== undefined ? { fromKiB: l.fromBytes / KIB } : {}), ...(l.targetBytes !== undefined ? { targetKiB: l.targetBytes / KIB } : {}),
      },
    };
  }

  // What the daemon does not serve goes to the wrapped driver as it is.

  state(ref: string): Promise<{ state: DomainState; reason: StateReason }> { return this.fallback.state(ref); }
  start(ref: string, opts?: { paused?: boolean; signal?: AbortSignal }): Promise<StartResult> { return this.fallback.start(ref, opts); }
  shutdown(ref: string, opts?: { timeoutMs?: number | null; signal?: AbortSignal }): Promise<{ stopped: boolean }> { return this.fallback.shutdown(ref, opts); }
  destroy(ref: string, signal?: AbortSignal): Promise<void> { return this.fallback.destroy(ref, signal); }
  defineXml(xml: string): Promise<DefineResult> { return this.fallback.defineXml(xml); }
  undefine(ref: string): Promise<{ name: string }> { return this.fallback.undefine(ref); }
  dumpXml(ref: string, opts?: { inactive?: boolean; signal?: AbortSignal }): Promise<string> { return this.fallback.dumpXml(ref, opts); }
  setMaxMemory(ref: string, kib: number, flags?: AffectOptions): Promise<{ live: boolean; config: boolean }> { return this.fallback.setMaxMemory(ref, kib, flags); }
  setStatsPeriod(ref: string, periodS: number, flags?: AffectOptions): Promise<{ live: boolean; config: boolean }> { return this.fallback.setStatsPeriod(ref, periodS, flags); }
  monitorCommand(ref: string, command: string, opts?: { hmp?: boolean; signal?: AbortSignal }): Promise<string | Record<string, unknown>> { return this.fallback.monitorCommand(ref, command, opts); }
  setPolicy(ref: string, change: PolicySettingsChange, signal?: AbortSignal): Promise<PolicyDocument> { return this.fallback.setPolicy(ref, change, signal); }
  watch(opts?: WatchOptions): DriverWatch { return this.fallback.watch(opts); }
  inactiveView(ref: string, signal?: AbortSignal): Promise<GuestView> { return this.fallback.inactiveView(ref, signal); }
  close(): Promise<void> { return this.fallback.close(); }

  define(def: DomainDef): Promise<{ def: DomainDef; redefined: boolean }> {
    if (!this.fallback.define) throw new VirtError('NO_SUPPORT', 'this function is not supported by the connection driver: define');
    return this.fallback.define(def);
  }

  capabilities(opts?: { refresh?: boolean; signal?: AbortSignal }): Promise<HostCapabilities> {
    if (!this.fallback.capabilities) throw new VirtError('NO_SUPPORT', 'this function is not supported by the connection driver: capabilities');
    return this.fallback.capabilities(opts);
  }

  translate(ref: string, gva: bigint, opts?: TranslateOptions & { signal?: AbortSignal }): Promise<Translation> {
    if (!this.fallback.translate) throw new VirtError('NO_SUPPORT', 'this function is not supported by the connection driver: translate');
    return this.fallback.translate(ref, gva, opts);
  }

  unreadableDefinitions(): Promise<Array<{ name: string; reason: string }>> {
    return this.fallback.unreadableDefinitions?.() ?? Promise.resolve([]);
  }

  guestChannels(ref: string): Promise<{ agentSocket: string; consoleLog: string }> {
    if (!this.fallback.guestChannels) throw new VirtError('NO_SUPPORT', 'this function is not supported by the connection driver: guestChannels');
    return this.fallback.guestChannels(ref);
  }

  memoryMap(ref: string, opts?: { signal?: AbortSignal }): Promise<MemoryMapReport> {
    if (!this.fallback.memoryMap) throw new VirtError('NO_SUPPORT', 'this function is not supported by the connection driver: memoryMap');
    return this.fallback.memoryMap(ref, opts);
  }
}
