/**
 * The CLI's way through virtmemd: a Driver whose dominfo, list, plain live setmem and
 * dommemstat go to the daemon's API when its socket answers (held monitors, live model), and
 * to the driver itself when it does not. Results have the driver's own types, so the CLI's
 * output is the same either way; the daemon's errors come back as the driver's VirtError.
 */
import { Driver, type DomainInfo, type DomainSummary, type SetMemoryOptions, type SetMemoryResult, type DriverOptions } from '../native/driver.js';
import { VirtError, type VirtErrorCode } from '../../domain/errors.js';
import type { MemoryStats } from '../memory/stats.js';
import { daemonRequest, DaemonUnreachableError } from './http-client.js';

const KIB = 1024;

export class DaemonBackedDriver extends Driver {
  readonly #socketPath: string;

  constructor(opts: DriverOptions = {}) {
    super(opts);
    this.#socketPath = this.paths.daemonSocket;
  }

  /** The daemon's answer, or null when no daemon answers (then the driver does the work). */
  async #ask(method: string, path: string, body?: unknown): Promise<unknown | null> {
    let r;
    try {
      r = await daemonRequest({ socketPath: this.#socketPath }, method, `/api/v1${path}`, { ...(body === undefined ? {} : { body }), timeoutMs: 60_000 });
    } catch (err) {
      if (err instanceof DaemonUnreachableError) return null;
      throw err;
    }
    if (r.status >= 400) {
      const e = (r.body as { error?: { code?: string; message?: string } }).error;
      throw new VirtError((e?.code ?? 'INTERNAL') as VirtErrorCode, e?.message ?? `virtmemd answered ${r.status}`);
    }
    return r.body;
  }

  override async list(): Promise<DomainSummary[]> {
    const doc = await this.#ask('GET', '/domains') as { domains: Array<DomainSummary & { monitor: string; stale: boolean }> } | null;
    if (!doc) return super.list();
    return doc.domains.map((d) => ({ id: d.id, name: d.name, uuid: d.uuid, state: d.state, reason: d.reason, persistent: d.persistent }));
  }

  override async info(ref: string, signal?: AbortSignal): Promise<DomainInfo> {
    const doc = await this.#ask('GET', `/domains/${encodeURIComponent(ref)}/info`) as Record<string, any> | null;
    if (!doc) return super.info(ref, signal);
    const m = doc.memory;
    // The driver's field order, so --json prints the same text either way.
    return {
      name: doc.name, uuid: doc.uuid, persistent: doc.persistent, autostart: doc.autostart, osType: doc.osType,
      id: doc.id, state: doc.state, reason: doc.reason, vcpus: doc.vcpus, cpuTimeS: doc.cpuTimeS,
      maxMemoryKiB: doc.maxMemoryBytes / KIB, usedMemoryKiB: doc.usedMemoryBytes / KIB,
      accel: doc.accel, cpuModel: doc.cpuModel, accelNote: doc.accelNote,
      memory: { bootKiB: m.bootBytes / KIB, balloonKiB: m.balloonBytes / KIB, dimmKiB: m.dimmBytes / KIB, pluggedKiB: m.pluggedBytes / KIB, hotplugSizeKiB: m.hotplugSizeBytes / KIB },
    } as DomainInfo;
  }

  override async setMemory(ref: string, kib: number, opts: SetMemoryOptions = {}): Promise<SetMemoryResult> {
    // Only the plain live change goes through the daemon; waiting, config and current stay here.
    if (opts.config || opts.current || opts.wait || opts.onProgress) return super.setMemory(ref, kib, opts);
    const doc = await this.#ask('PUT', `/domains/${encodeURIComponent(ref)}/memory`, { targetBytes: kib * KIB, ...(opts.force ? { force: true } : {}) }) as { operation: { actualBytes: number | null } } | null;
    if (!doc) return super.setMemory(ref, kib, opts);
    const a = doc.operation.actualBytes;
    return { targetKiB: kib, actualKiB: a === null ? null : a / KIB, reached: false, live: true, config: false };
  }

  override async memoryStats(ref: string, opts: { signal?: AbortSignal } = {}): Promise<MemoryStats> {
    const doc = await this.#ask('GET', `/domains/${encodeURIComponent(ref)}/memory-stats`) as { periodS: number; stats: Array<{ name: string; value: number; unit: string }> } | null;
    if (!doc) return super.memoryStats(ref, opts);
    return { stats: doc.stats.map((s) => ({ name: s.name, value: s.unit === 'bytes' ? s.value / KIB : s.value })), periodS: doc.periodS };
  }
}
