/**
 * virtmemd's core: one watcher per running guest, the host sampler, history rings, the
 * operations registry, and the actions the HTTP API offers. Actions go through the driver API
 * (same rules, same locks as the CLI), on the monitor connections the watchers hold. Knows
 * nothing of HTTP.
 */
import { readdir } from 'node:fs/promises';
import { Driver, type DriverOptions } from '../driver/native/driver.js';
import { VirtError, invalidArg } from '../domain/errors.js';
import { validateDomainName } from '../domain/name.js';
import { observe, readRunRecord } from '../driver/native/run-status.js';
import type { QmpClient } from '../qmp/index.js';
import { GuestWatcher, type WatchChange } from './guest-watcher.js';
import { guestDocument, summaryDocument, totalBytes, pluggedBytes, type GuestModel } from './guest-model.js';
import { sampleHostMemory, type HostMemory } from '../driver/native/host-memory.js';
import { HistoryRing, type HistorySample } from './history.js';
import { OperationRegistry, operationDocument, type Operation } from './operations.js';
import { PolicyLoop, type PolicyMode } from '../policy/loop.js';
import { virtmemPolicy } from '../policy/virtmem-policy.js';
import { proxmoxPolicy } from '../policy/proxmox.js';
import { momPolicy } from '../policy/mom.js';
import type { Policy, PolicyEngine } from '../policy/types.js';
import { effectivePolicy } from '../policy/settings.js';
import { writeFileAtomic } from '../util/atomic-file.js';

export interface DaemonOptions {
  stateDir?: string;
  /** Per-guest bound on every monitor question (default 3 s). */
  guestBoundMs?: number;
  /** How often guests are looked for and ticked (default 1 s). */
  tickMs?: number;
  /** History sample interval (default 2 s) and length (default 300 samples). */
  historyIntervalMs?: number;
  historyLength?: number;
  /**
   * The automatic memory policy: 'per-guest' (default) manages the guests whose definition turns
   * it on, 'all' every running guest, 'off' none. With a budget, the managed guests together stay
   * within it; without, host MemAvailable stays above a reserve.
   */
  policy?: { mode: PolicyMode; guestBudgetBytes: number | null; engine?: PolicyEngine };
}

function policyFor(engine: PolicyEngine): Policy<unknown> {
  switch (engine) {
    case 'proxmox': return proxmoxPolicy as Policy<unknown>;
    case 'mom': return momPolicy as Policy<unknown>;
    default: return virtmemPolicy() as Policy<unknown>;
  }
}

/** A change the event stream (SSE) forwards. */
export type DaemonEvent =
  | { type: 'memory'; name: string; data: Record<string, unknown> }
  | { type: 'state'; name: string; data: Record<string, unknown> }
  | { type: 'operation'; data: Record<string, unknown> }
  | { type: 'host'; data: Record<string, unknown> }
  | { type: 'policy'; name: string; data: Record<string, unknown> };

export type DaemonListener = (ev: DaemonEvent) => void;

export interface SetMemoryAnswer {
  done: boolean;
  operation: Operation;
}

export class Daemon {
  readonly driver: Driver;
  readonly ops = new OperationRegistry();
  readonly startedAtS = Date.now() / 1000;
  #watchers = new Map<string, GuestWatcher>();
  #history = new Map<string, HistoryRing>();
  #listeners = new Set<DaemonListener>();
  #host: HostMemory = { memTotalBytes: null, memAvailableBytes: null, swapTotalBytes: null, swapFreeBytes: null, psi: null, sampledAtS: 0 };
  #timer: NodeJS.Timeout | null = null;
  /** The round in progress, if any: stop() waits for it, so no watcher is attached after stop. */
  #tickRun: Promise<void> | null = null;
  #stopped = false;
  #lastHistoryMs = 0;
  #lastHostEventMs = 0;
  #pendingMemory = new Map<string, NodeJS.Timeout>();
  readonly counters = { sseClients: 0, httpRequests: 0, operationsStarted: 0 };
  /** libvirt hosts watched side by side (`--hosts FILE`), or null. */
  remoteHosts: import('./remote-hosts.js').RemoteHosts | null = null;
  readonly opts: Required<Omit<DaemonOptions, 'policy'>>;
  /** null when the policy is off. */
  readonly policy: PolicyLoop | null;

  constructor(opts: DaemonOptions = {}) {
    const driverOpts: DriverOptions = { heldMonitors: { held: (name: string): QmpClient | null => this.#watchers.get(name)?.held() ?? null } };
    if (opts.stateDir) driverOpts.stateDir = opts.stateDir;
    this.driver = new Driver(driverOpts);
    this.opts = {
      stateDir: this.driver.paths.root, guestBoundMs: opts.guestBoundMs ?? 3_000, tickMs: opts.tickMs ?? 1_000,
      historyIntervalMs: opts.historyIntervalMs ?? 2_000, historyLength: opts.historyLength ?? 300,
    };
    this.ops.onChange((op) => this.#emit({ type: 'operation', data: operationDocument(op) }));
    const p = opts.policy ?? { mode: 'per-guest', guestBudgetBytes: null };
    this.policy = p.mode === 'off' ? null : new PolicyLoop({
      policy: policyFor(p.engine ?? 'virtmem'),
      mode: p.mode,
      guestBudgetKiB: p.guestBudgetBytes === null ? null : Math.floor(p.guestBudgetBytes / 1024),
      settings: async (name) => effectivePolicy(await this.driver.lookup(name)),
      apply: async (name, targetKiB) => {
        const a = await this.setMemory(name, targetKiB * 1024, { force: false, waitMs: 0 });
        if (a.operation.state === 'failed') throw new Error(a.operation.message ?? 'the resize failed');
      },
      record: async (name, d) => {
        this.#emit({ type: 'policy', name, data: { name, ...d } });
        await writeFileAtomic(this.driver.paths.run(name).policyLast, JSON.stringify(d) + '\n');
      },
    });
  }

  /**
   * A guest's policy settings (defaults filled in) and what the policy last did, for the API
   * (sizes in bytes, as everywhere in the API).
   */
  async policyDocument(name: string): Promise<Record<string, unknown>> {
    const def = await this.driver.lookup(name);
    const s = effectivePolicy(def);
    const mode: PolicyMode = this.policy?.opts.mode ?? 'off';
    const last = this.policy?.last.get(def.name) ?? null;
    return {
      name: def.name, mode, ...(this.policy ? { engine: this.policy.opts.policy.name } : {}),
      settings: { enabled: mode === 'all' || s.enabled, floorBytes: s.floorKiB * 1024, ceilingBytes: s.ceilingKiB * 1024, shares: s.shares },
      last: last && {
        at: last.at, action: last.action, reason: last.reason,
        ...(last.fromKiB !== undefined ? { fromBytes: last.fromKiB * 1024 } : {}),
        ...(last.targetKiB !== undefined ? { targetBytes: last.targetKiB * 1024 } : {}),
      },
    };
  }

  // ------------------------------------------------------------------ life

  /** Finds running guests, attaches to them, starts the periodic work. */
  async start(): Promise<void> {
    this.#host = await sampleHostMemory();
    await this.#discover();
    this.#timer = setInterval(() => {
      // The previous round is still going: never pile up.
      if (this.#tickRun || this.#stopped) return;
      this.#tickRun = this.#tick().finally(() => { this.#tickRun = null; });
    }, this.opts.tickMs);
    this.#timer.unref();
  }

  /** Detaches from every guest (they keep running) and ends running operations' waits. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#tickRun?.catch(() => {});
    for (const op of this.ops.running()) { this.ops.fail(op, 'the daemon stopped while waiting'); op.abort.abort(); }
    for (const t of this.#pendingMemory.values()) clearTimeout(t);
    await Promise.all([...this.#watchers.values()].map((w) => w.stop()));
    this.#watchers.clear();
  }

  onEvent(l: DaemonListener): () => void {
    this.#listeners.add(l);
    return () => { this.#listeners.delete(l); };
  }

  #emit(ev: DaemonEvent): void {
    for (const l of this.#listeners) {
      try { l(ev); } catch { /* a listener's failure is its own */ }
    }
  }

  /** Attach to every running guest not yet watched; forget the ones that went away. */
  async #discover(): Promise<void> {
    const names = await readdir(this.driver.paths.runDir).catch(() => [] as string[]);
    await Promise.all(names.map(async (name) => {
      if (this.#watchers.has(name)) return;
      let paths;
      try { paths = this.driver.paths.run(validateDomainName(name)); } catch { return; }
      const o = await observe(paths);
      if (o.state === 'shutoff' || this.#watchers.has(name) || this.#stopped) return;
      const w = new GuestWatcher(paths, o.record, (w2, what) => this.#onWatch(w2, what), { boundMs: this.opts.guestBoundMs, reconnectMs: 1_000 });
      this.#watchers.set(name, w);
      if (!this.#history.has(name)) this.#history.set(name, new HistoryRing(this.opts.historyLength));
      w.start();
      this.#emit({ type: 'state', name, data: summaryDocument(w.model) });
    }));
  }

  #onWatch(w: GuestWatcher, what: WatchChange): void {
    if (what === 'gone') {
      if (this.#watchers.get(w.name) === w) this.#watchers.delete(w.name);
      for (const op of this.ops.running()) {
        if (op.domain === w.name) { this.ops.fail(op, `domain '${w.name}' stopped running`); op.abort.abort(); }
      }
      void w.stop();
      this.#emit({ type: 'state', name: w.name, data: summaryDocument(w.model) });
      return;
    }
    if (what === 'state') {
      this.#emit({ type: 'state', name: w.name, data: summaryDocument(w.model) });
      return;
    }
    // Memory changes come in bursts while a balloon moves: one event per guest per 100 ms.
    if (this.#pendingMemory.has(w.name)) return;
    this.#pendingMemory.set(w.name, setTimeout(() => {
      this.#pendingMemory.delete(w.name);
      this.#emit({ type: 'memory', name: w.name, data: guestDocument(w.model, Date.now() / 1000) });
    }, 100));
  }

  /** One round: host sample, new guests, each guest's bounded tick, history, the policy. */
  async #tick(): Promise<void> {
    const nowMs = Date.now();
    this.#host = await sampleHostMemory();
    if (nowMs - this.#lastHostEventMs >= 5_000) {
      this.#lastHostEventMs = nowMs;
      this.#emit({ type: 'host', data: this.hostDocument() });
    }
    await this.#discover();
    // Each guest's tick is bounded by its own monitor bound; one hung guest holds up no other.
    await Promise.all([...this.#watchers.values()].map((w) => w.tick()));
    if (nowMs - this.#lastHistoryMs >= this.opts.historyIntervalMs) {
      this.#lastHistoryMs = nowMs;
      for (const w of this.#watchers.values()) this.#history.get(w.name)?.push(historySample(w.model, nowMs / 1000));
    }
    this.ops.checkStuck((op) => this.#stuckReason(op));
    if (this.#stopped) return; // no resize decided after stop() began
    const host = this.#host;
    await this.policy?.tick(this.models(), { memTotalBytes: host.memTotalBytes, memAvailableBytes: host.memAvailableBytes, stallPct: host.psi?.some.avg10 ?? null }, nowMs / 1000);
  }

  #stuckReason(op: Operation): string {
    const m = this.#watchers.get(op.domain)?.model;
    if (!m) return `domain '${op.domain}' is not watched`;
    if (m.monitor !== 'connected') return `the monitor of '${op.domain}' is ${m.monitor}: no news from QEMU`;
    const parts: string[] = [];
    if (m.balloonTargetBytes !== null && m.balloonBytes !== m.balloonTargetBytes) {
      parts.push(`the balloon is at ${m.balloonBytes} bytes of boot memory, heading for ${m.balloonTargetBytes} (is the guest's balloon driver loaded, or has it nothing left to free?)`);
    }
    for (const d of m.devices) {
      if (d.model === 'virtio-mem' && d.pluggedBytes !== d.requestedBytes) {
        parts.push(`virtio-mem ${d.id} has ${d.pluggedBytes} bytes plugged of ${d.requestedBytes} requested (is the guest's virtio_mem driver loaded, or is the memory in use?)`);
      }
    }
    return `nothing moved for ${Math.round((Date.now() / 1000 - op.movedAtS))} s: ${parts.join('; ') || 'waiting for QEMU to report the last change'}`;
  }

  // ------------------------------------------------------------------ reads (live model only)

  /** The watched model of a running guest, or null. */
  model(name: string): GuestModel | null {
    return this.#watchers.get(name)?.model ?? null;
  }

  models(): GuestModel[] {
    return [...this.#watchers.values()].map((w) => w.model).sort((a, b) => (a.id ?? Infinity) - (b.id ?? Infinity) || a.name.localeCompare(b.name));
  }

  get host(): HostMemory {
    return this.#host;
  }

  hostDocument(): Record<string, unknown> {
    const h = this.#host;
    return {
      memTotalBytes: h.memTotalBytes, memAvailableBytes: h.memAvailableBytes,
      ...(h.swapTotalBytes !== null ? { swapTotalBytes: h.swapTotalBytes } : {}),
      ...(h.swapFreeBytes !== null ? { swapFreeBytes: h.swapFreeBytes } : {}),
      psi: h.psi, sampledAtS: h.sampledAtS, guests: this.#watchers.size,
    };
  }

  /** Every defined domain (the driver's list) with the monitor state of the running ones. */
  async list(): Promise<Record<string, unknown>[]> {
    return (await this.driver.list()).map((d) => {
      const m = this.model(d.name);
      const monitor = m && d.state !== 'shutoff' ? m.monitor : d.state === 'shutoff' ? 'down' : 'connecting';
      return { ...summaryDocument({ name: d.name, uuid: d.uuid, id: d.id, state: d.state, monitor }), reason: d.reason, persistent: d.persistent };
    });
  }

  /**
   * dominfo as the driver answers it (on the held monitor: one round trip on an open
   * connection), sizes in bytes.
   * @throws VirtError as Driver.info
   */
  async info(ref: string): Promise<Record<string, unknown>> {
    const i = await this.driver.info(ref);
    const { maxMemoryKiB, usedMemoryKiB, memory, ...rest } = i;
    return {
      ...rest, maxMemoryBytes: maxMemoryKiB * 1024, usedMemoryBytes: usedMemoryKiB * 1024,
      memory: { bootBytes: memory.bootKiB * 1024, balloonBytes: memory.balloonKiB * 1024, dimmBytes: memory.dimmKiB * 1024, pluggedBytes: memory.pluggedKiB * 1024, hotplugSizeBytes: memory.hotplugSizeKiB * 1024 },
    };
  }

  /**
   * dommemstat as the driver answers it, libvirt's names and order; sizes in bytes.
   * @throws VirtError as Driver.memoryStats
   */
  async memoryStats(ref: string): Promise<Record<string, unknown>> {
    const ms = await this.driver.memoryStats(ref);
    const COUNTS = new Set(['major_fault', 'minor_fault', 'hugetlb_pgalloc', 'hugetlb_pgfail']);
    return {
      periodS: ms.periodS,
      stats: ms.stats.map((s) => (s.name === 'last_update' ? { name: s.name, value: s.value, unit: 'seconds' }
        : COUNTS.has(s.name) ? { name: s.name, value: s.value, unit: 'count' } : { name: s.name, value: s.value * 1024, unit: 'bytes' })),
    };
  }

  /**
   * One guest's document: the live model when running, the definition's plan otherwise.
   * @throws VirtError INVALID_ARG (bad name), NO_DOMAIN
   */
  async guest(name: string): Promise<Record<string, unknown>> {
    const m = this.model(validateDomainName(name));
    if (m) return guestDocument(m, Date.now() / 1000);
    const def = await this.driver.lookup(name);
    const { modelFromDefinition } = await import('./guest-model.js');
    const off = modelFromDefinition(def, { id: null, state: 'shutoff', pid: null }, Date.now() / 1000);
    off.monitor = 'down';
    return { ...guestDocument(off, Date.now() / 1000), stale: false };
  }

  /** @throws VirtError INVALID_ARG, NO_DOMAIN */
  async history(name: string, sinceS: number): Promise<{ domain: string; intervalS: number; samples: HistorySample[] }> {
    const def = await this.driver.lookup(validateDomainName(name));
    return { domain: def.name, intervalS: this.opts.historyIntervalMs / 1000, samples: this.#history.get(def.name)?.samples(sinceS) ?? [] };
  }

  // ------------------------------------------------------------------ actions

  /**
   * Sets a running guest's memory target. Answers when the guest is there (done) or after
   * `waitMs` with the running operation to follow.
   * @throws VirtError as Driver.setMemory for what is refused before anything changes.
   */
  async setMemory(name: string, targetBytes: number, opts: { force: boolean; waitMs: number }): Promise<SetMemoryAnswer> {
    validateDomainName(name);
    if (targetBytes % 1024 !== 0) throw invalidArg(`targetBytes ${targetBytes} is not a multiple of 1024`);
    // A watched guest is known by its name; anything else (uuid, id, shut off) is looked up.
    const m = this.model(name);
    const def = m ? { name } : await this.driver.lookup(name);
    if (!m) {
      const st = await this.driver.state(def.name);
      if (st.state === 'shutoff') throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: domain is not running');
    }
    // The driver reports progress first right after it sent the change to QEMU (under the
    // domain's job lock, so concurrent changes are ordered). Only then is there an operation,
    // superseding an older one for the guest; a failure before that is a refusal (guard rail,
    // above maximum ...): nothing changed, and the caller gets it as an error.
    const abort = new AbortController();
    let op: Operation | null = null;
    let atTarget = false;
    let refusal: unknown = null;
    let accepted!: () => void;
    const acceptedP = new Promise<void>((r) => { accepted = r; });
    let settled!: () => void;
    const settledP = new Promise<void>((r) => { settled = r; });
    const run = this.driver.setMemory(def.name, targetBytes / 1024, {
      live: true, wait: true, force: opts.force, signal: abort.signal, stallMs: 30_000,
      onProgress: (p) => {
        if (!op) {
          atTarget = p.actualKiB === p.targetKiB;
          op = this.ops.start(def.name, targetBytes, p.startKiB * 1024, Date.now() / 1000, abort);
          this.counters.operationsStarted++;
          accepted();
        }
        this.ops.progress(op, p.actualKiB * 1024);
      },
    }).then(async (r) => {
      settled();
      // The model first, so whoever sees the success also sees the guest there.
      await this.#refreshAfterChange(def.name).catch(() => {});
      if (op) this.ops.succeed(op, r.actualKiB === null ? null : r.actualKiB * 1024);
    }, async (err: unknown) => {
      settled();
      await this.#refreshAfterChange(def.name).catch(() => {});
      if (op) this.ops.fail(op, err instanceof Error ? err.message : String(err));
      else refusal = err;
    }).finally(() => {
      accepted();
    });
    await acceptedP;
    if (!op) throw refusal ?? new VirtError('INTERNAL', 'internal error: the memory change ended without a result');
    const started: Operation = op;
    // Answer when the driver ended (the model refresh after it is bounded), or after waitMs;
    // a guest already at the target ends within moments, so that is waited for too.
    const graceMs = opts.waitMs > 0 ? opts.waitMs : atTarget ? 5_000 : 0;
    const ended = await Promise.race([
      settledP.then(() => true),
      new Promise<boolean>((r) => { if (graceMs > 0) setTimeout(() => r(false), graceMs).unref(); else setImmediate(() => r(false)); }),
    ]);
    if (ended) await run;
    return { done: started.state === 'succeeded', operation: started };
  }

  /** Re-reads what a change left behind: the run record's targets and QEMU's numbers. */
  async #refreshAfterChange(name: string): Promise<void> {
    const w = this.#watchers.get(name);
    if (!w) return;
    const rec = await readRunRecord(this.driver.paths.run(name));
    if (rec && rec.phase === 'running') w.takeDefinition(rec);
    await w.refresh();
  }

  /** @throws VirtError as Driver.setMaxMemory */
  async setMaxMemory(name: string, maxBytes: number, flags: { live?: boolean; config?: boolean }): Promise<{ maxBytes: number; live: boolean; config: boolean }> {
    validateDomainName(name);
    if (maxBytes % 1024 !== 0) throw invalidArg(`maxBytes ${maxBytes} is not a multiple of 1024`);
    const r = await this.driver.setMaxMemory(name, maxBytes / 1024, flags);
    await this.#refreshAfterChange(name);
    await this.#watchers.get(name)?.refresh();
    return { maxBytes, ...r };
  }

  /** @throws VirtError as Driver.setStatsPeriod */
  async setStatsPeriod(name: string, periodS: number, flags: { live?: boolean; config?: boolean }): Promise<{ periodS: number; live: boolean; config: boolean }> {
    validateDomainName(name);
    const r = await this.driver.setStatsPeriod(name, periodS, flags);
    await this.#refreshAfterChange(name);
    return { periodS, ...r };
  }

  operationDocument(op: Operation): Record<string, unknown> {
    return operationDocument(op);
  }
}

function historySample(m: GuestModel, tS: number): HistorySample {
  const s: HistorySample = { tS, totalBytes: totalBytes(m), balloonBytes: m.balloonBytes, pluggedBytes: pluggedBytes(m) };
  if (m.stats.usableBytes !== undefined) s.usableBytes = m.stats.usableBytes;
  if (m.stats.availableBytes !== undefined) s.availableBytes = m.stats.availableBytes;
  if (m.rssBytes !== null) s.rssBytes = m.rssBytes;
  return s;
}
