/**
 * virtmemd's core: every host it serves (this machine's own guests, and the libvirt hosts it was
 * given) through its driver and that driver's watch, with the same history rings, operations,
 * events and automatic policy for every guest. It speaks only the driver API (driver/api.ts):
 * actions go through the driver (same rules, same locks as the CLI), on the connections the
 * watches hold. Knows nothing of HTTP.
 *
 * Hosts are named by a key: 'local' for virtmem's own guests (whose API paths carry no host),
 * the URI for a libvirt host.
 */
import type { MemorySplit } from '../domain/memory.js';
import { VirtError, invalidArg } from '../domain/errors.js';
import { Listeners } from '../util/listeners.js';
import { validateDomainName } from '../domain/name.js';
import { hostMemoryDocument, type HypervisorDriver, type DomainInfo, type PolicyDocument } from '../driver/api.js';
import type { DriverWatch, HostMemory, WatchChange } from '../driver/watch.js';
import { pluggedBytes, totalBytes, type GuestView } from '../driver/view.js';
import { openDriver } from '../driver/connect.js';
import { LIBVIRT_HOST_ANSWER_MS, MONITOR_ANSWER_MS } from '../driver/bounds.js';
import { guestDocument, libvirtHostDocument, summaryDocument, type LibvirtHostDocument } from './documents.js';
import { HistoryRing, type HistorySample } from './history.js';
import { OperationRegistry, operationDocument, type Operation } from './operations.js';
import { PolicyLoop, type LastPolicyDecision, type PolicyMode } from '../policy/loop.js';
import { virtmemPolicy, DEFAULT_POLICY_OPTIONS } from '../policy/virtmem-policy.js';
import { proxmoxPolicy } from '../policy/proxmox.js';
import { momPolicy } from '../policy/mom.js';
import { DEFAULT_POLICY_RECLAIM, type Policy, type PolicyEngine, type PolicyReclaim } from '../policy/types.js';

/** The key of virtmem's own host. */
export const LOCAL = 'local';

export interface HostSpec {
  uri: string;
  /** The most this host's policy-managed guests together may hold (bytes); null: no budget. */
  budgetBytes?: number | null;
}

export interface DaemonOptions {
  stateDir?: string;
  /** Per-guest bound on every question (default MONITOR_ANSWER_MS, driver/bounds.ts). */
  guestBoundMs?: number;
  /** How often guests are looked for and ticked (default 1 s). */
  tickMs?: number;
  /** History sample interval (default 2 s) and length (default 300 samples). */
  historyIntervalMs?: number;
  historyLength?: number;
  /**
   * The automatic memory policy: 'per-guest' (default) manages the guests whose settings turn
   * it on, 'all' every running guest, 'off' none. With a budget, the managed guests of a host
   * together stay within it; without, host MemAvailable stays above a reserve.
   */
  policy?: { mode: PolicyMode; guestBudgetBytes: number | null; engine?: PolicyEngine; reclaim?: PolicyReclaim };
  /** libvirt hosts served beside the local one. */
  hosts?: HostSpec[];
  /** Drivers to use instead of opening them (tests); keyed like hosts. */
  drivers?: Map<string, HypervisorDriver>;
}

function policyFor(engine: PolicyEngine, reclaim: PolicyReclaim): Policy<unknown> {
  switch (engine) {
    case 'proxmox': return proxmoxPolicy as Policy<unknown>;
    case 'mom': return momPolicy as Policy<unknown>;
    default: return virtmemPolicy({ ...DEFAULT_POLICY_OPTIONS, balloonFirst: reclaim === 'balloon-first' }) as Policy<unknown>;
  }
}

/** A change the event stream (SSE) forwards; `host` is absent for local guests. */
export type DaemonEvent =
  | { type: 'memory'; name: string; host?: string; data: Record<string, unknown> }
  | { type: 'state'; name: string; host?: string; data: Record<string, unknown> }
  | { type: 'operation'; data: Record<string, unknown> }
  | { type: 'host'; host?: string; data: Record<string, unknown> }
  | { type: 'policy'; name: string; host?: string; data: Record<string, unknown> };

export type DaemonListener = (ev: DaemonEvent) => void;

export interface SetMemoryAnswer {
  done: boolean;
  operation: Operation;
}

/** One served host. */
export interface Host {
  key: string;
  uri: string;
  driver: HypervisorDriver;
  watch: DriverWatch;
  policy: PolicyLoop | null;
  budgetBytes: number | null;
}

/** A guest's view with the host it lives on. */
export interface HostedView {
  host: string;
  view: GuestView;
}

export class Daemon {
  readonly ops = new OperationRegistry();
  readonly startedAtS = Date.now() / 1000;
  readonly hosts: Host[] = [];
  #history = new Map<string, HistoryRing>();
  #listeners = new Listeners<DaemonEvent>();
  #timer: NodeJS.Timeout | null = null;
  /** The round in progress, if any: stop() waits for it, so nothing is attached after stop. */
  #tickRun: Promise<void> | null = null;
  #stopped = false;
  #lastHistoryMs = 0;
  #lastHostEventMs = 0;
  #pendingMemory = new Map<string, NodeJS.Timeout>();
  #unsubscribe: Array<() => void> = [];
  /** Each running guest's dominfo as its driver last answered it: the parts a view does not hold (see info()). */
  #infoSeen = new Map<string, DomainInfo>();
  readonly counters = { sseClients: 0, httpRequests: 0, operationsStarted: 0 };
  readonly opts: Required<Omit<DaemonOptions, 'policy' | 'hosts' | 'drivers' | 'stateDir'>> & { stateDir: string | undefined };
  readonly policyMode: PolicyMode;
  readonly policyEngine: PolicyEngine | null;
  readonly policyReclaim: PolicyReclaim;

  constructor(opts: DaemonOptions = {}) {
    this.opts = {
      stateDir: opts.stateDir, guestBoundMs: opts.guestBoundMs ?? MONITOR_ANSWER_MS, tickMs: opts.tickMs ?? 1_000,
      historyIntervalMs: opts.historyIntervalMs ?? 2_000, historyLength: opts.historyLength ?? 300,
    };
    const p = opts.policy ?? { mode: 'per-guest', guestBudgetBytes: null };
    this.policyMode = p.mode;
    this.policyEngine = p.mode === 'off' ? null : p.engine ?? 'virtmem';
    this.policyReclaim = p.reclaim ?? DEFAULT_POLICY_RECLAIM;
    const specs: HostSpec[] = [{ uri: LOCAL, budgetBytes: p.guestBudgetBytes }, ...(opts.hosts ?? [])];
    for (const spec of specs) {
      const key = spec.uri;
      const driver = opts.drivers?.get(key)
        ?? openDriver(key === LOCAL ? { stateDir: opts.stateDir } : { uri: key, libvirt: { connectTimeoutMs: LIBVIRT_HOST_ANSWER_MS, callTimeoutMs: LIBVIRT_HOST_ANSWER_MS, keepaliveIntervalMs: 2_000, keepaliveCount: 3 } });
      // A libvirt host is polled twice a second while a policy runs on it, every second otherwise:
      // its guests' QEMU RSS is read only then, and the policy, whose rounds are a second apart,
      // must see a guest's allocation burst within about a second of its start (the native
      // watch reads RSS right before each round).
      const watch = driver.watch({ boundMs: key === LOCAL ? this.opts.guestBoundMs : LIBVIRT_HOST_ANSWER_MS, ...(p.mode !== 'off' && key !== LOCAL ? { pollMs: 500 } : {}) });
      const budgetBytes = spec.budgetBytes ?? null;
      const host: Host = { key, uri: key === LOCAL ? driver.uri : key, driver, watch, policy: null, budgetBytes };
      host.policy = p.mode === 'off' ? null : this.#policyLoop(host, p.mode, p.engine ?? 'virtmem');
      this.hosts.push(host);
    }
    this.ops.onChange((op) => this.#emit({ type: 'operation', data: operationDocument(op) }));
  }

  /** The local host (virtmem's own guests). */
  get local(): Host {
    return this.hosts[0]!;
  }

  /** A served host by key. @throws VirtError NO_SUPPORT naming the host when it is not served */
  host(key: string = LOCAL): Host {
    const h = this.hosts.find((x) => x.key === key);
    if (!h) throw new VirtError('NO_DOMAIN', `no host '${key}' is served by this daemon (see GET /api/v1/hosts)`);
    return h;
  }

  #policyLoop(host: Host, mode: PolicyMode, engine: PolicyEngine): PolicyLoop {
    const settings = new Map<string, PolicyDocument['settings']>();
    return new PolicyLoop({
      policy: policyFor(engine, this.policyReclaim),
      mode,
      guestBudgetKiB: host.budgetBytes === null ? null : Math.floor(host.budgetBytes / 1024),
      // Read when a guest appears or its settings change (setPolicy through the daemon), not every round.
      settings: async (name) => {
        let s = settings.get(name);
        if (!s) { s = (await host.driver.policy(name)).settings; settings.set(name, s); }
        return s;
      },
      forget: (name) => { settings.delete(name); },
      apply: (name, targetKiB, split) => this.#policyApply(host, name, targetKiB, split),
      record: async (name, d) => {
        // The data names the host too: an SSE client sees only the data (the dashboard keys cards by host and name).
        const hostField = host.key === LOCAL ? {} : { host: host.key };
        this.#emit({ type: 'policy', name, ...hostField, data: { name, ...hostField, ...d } });
        await host.driver.recordPolicyDecision?.(name, d);
      },
    });
  }

  /**
   * The policy's resize, as an operation like any other: it answers when the change is sent,
   * and the policy learns how it ended (reached, not reached, refused) through `outcome`.
   */
  async #policyApply(host: Host, name: string, targetKiB: number, split: MemorySplit): Promise<{ outcome: Promise<string | null> }> {
    const a = await this.setMemory(name, targetKiB * 1024, { force: false, waitMs: 0, split, answerWhenSent: true }, host.key);
    const op = a.operation;
    const outcome = new Promise<string | null>((resolve) => {
      const check = (): boolean => {
        if (op.state === 'running') return false;
        resolve(op.state === 'succeeded' ? null : op.message ?? 'the resize failed');
        return true;
      };
      if (check()) return;
      const off = this.ops.onChange((o) => { if (o === op && check()) off(); });
    });
    return { outcome };
  }

  /** A guest's policy settings (defaults filled in) and what the policy last did, for the API (bytes). */
  async policyDocument(name: string, hostKey: string = LOCAL): Promise<Record<string, unknown>> {
    const host = this.host(hostKey);
    const doc = await host.driver.policy(name);
    const last = host.policy?.last.get(doc.name) ?? null;
    const s = doc.settings;
    return {
      name: doc.name, mode: this.policyMode, ...(this.policyEngine ? { engine: this.policyEngine } : {}),
      ...(host.key === LOCAL ? {} : { host: host.key }),
      settings: { enabled: this.policyMode === 'all' || s.enabled, floorBytes: s.floorKiB * 1024, ceilingBytes: s.ceilingKiB * 1024, shares: s.shares },
      last: last && {
        at: last.at, action: last.action, reason: last.reason,
        ...(last.fromKiB !== undefined ? { fromBytes: last.fromKiB * 1024 } : {}),
        ...(last.targetKiB !== undefined ? { targetBytes: last.targetKiB * 1024 } : {}),
      },
    };
  }

  /**
   * Change a guest's policy settings through its driver; the policy takes them from the next round.
   * @throws VirtError as HypervisorDriver.setPolicy
   */
  async setPolicy(name: string, change: Parameters<HypervisorDriver['setPolicy']>[1], hostKey: string = LOCAL, signal?: AbortSignal): Promise<Record<string, unknown>> {
    const host = this.host(hostKey);
    const doc = await host.driver.setPolicy(name, change, signal);
    host.policy?.settingsChanged(doc.name);
    return this.policyDocument(doc.name, hostKey);
  }

  // ------------------------------------------------------------------ life

  /** Finds running guests on every host, follows them, starts the periodic work. */
  async start(): Promise<void> {
    for (const h of this.hosts) this.#unsubscribe.push(h.watch.onChange((c) => this.#onWatch(h, c)));
    // A libvirt host that is down does not hold up the start: its watch keeps trying.
    await Promise.all(this.hosts.map((h) => h.watch.start().catch(() => {})));
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
    for (const f of this.#unsubscribe.splice(0)) f();
    await Promise.all(this.hosts.map(async (h) => { await h.watch.stop(); await h.driver.close(); }));
  }

  onEvent(l: DaemonListener): () => void {
    return this.#listeners.add(l);
  }

  #emit(ev: DaemonEvent): void {
    this.#listeners.emit(ev);
  }

  #onWatch(h: Host, c: WatchChange): void {
    const hostField = h.key === LOCAL ? {} : { host: h.key };
    // The documents say their host too (an SSE client sees only the data).
    if (c.kind === 'host') {
      this.#emit({ type: 'host', ...hostField, data: h.key === LOCAL ? this.hostDocument() : { ...this.libvirtHostDocument(h) } });
      if (h.watch.state === 'down') {
        for (const op of this.ops.running()) {
          if (op.host === h.key) { this.ops.fail(op, `host '${h.key}' went away: ${h.watch.reason ?? 'no answer'}`); op.abort.abort(); }
        }
      }
      return;
    }
    if (c.kind === 'settings') {
      h.policy?.settingsChanged(c.name);
      this.#infoSeen.delete(guestKey(h.key, c.name));
      return;
    }
    if (c.kind === 'gone' || c.kind === 'state') this.#infoSeen.delete(guestKey(h.key, c.name));
    if (c.kind === 'gone') {
      for (const op of this.ops.running()) {
        if (op.domain === c.name && op.host === h.key) { this.ops.fail(op, `domain '${c.name}' stopped running`); op.abort.abort(); }
      }
      h.policy?.forgetGuest(c.name);
      this.#emit({ type: 'state', name: c.name, ...hostField, data: { ...summaryDocument(c.view), ...hostField } });
      return;
    }
    const v = h.watch.guest(c.name);
    if (!v) return;
    const key = guestKey(h.key, c.name);
    if (!this.#history.has(key)) this.#history.set(key, new HistoryRing(this.opts.historyLength));
    if (c.kind === 'state') {
      this.#emit({ type: 'state', name: c.name, ...hostField, data: { ...summaryDocument(v), ...hostField } });
      return;
    }
    // Memory changes come in bursts while a balloon moves: one event per guest per 100 ms.
    if (this.#pendingMemory.has(key)) return;
    this.#pendingMemory.set(key, setTimeout(() => {
      this.#pendingMemory.delete(key);
      const now = h.watch.guest(c.name);
      if (now) this.#emit({ type: 'memory', name: c.name, ...hostField, data: { ...guestDocument(now, Date.now() / 1000), ...hostField } });
    }, 100));
  }

  /** One round: each host's bounded tick, history, stuck operations, each host's policy. */
  async #tick(): Promise<void> {
    const nowMs = Date.now();
    // The policy's guests are read as they are now: it decides on them right after.
    await Promise.all(this.hosts.map((h) => h.watch.tick(h.policy ? { freshStats: h.policy.managed } : {})));
    if (nowMs - this.#lastHostEventMs >= 5_000) {
      this.#lastHostEventMs = nowMs;
      this.#emit({ type: 'host', data: this.hostDocument() });
    }
    if (nowMs - this.#lastHistoryMs >= this.opts.historyIntervalMs) {
      this.#lastHistoryMs = nowMs;
      for (const h of this.hosts) {
        for (const v of h.watch.guests()) {
          const key = guestKey(h.key, v.name);
          let ring = this.#history.get(key);
          if (!ring) { ring = new HistoryRing(this.opts.historyLength); this.#history.set(key, ring); }
          ring.push(historySample(v, nowMs / 1000));
        }
      }
    }
    this.ops.checkStuck((op) => this.#stuckReason(op));
    if (this.#stopped) return; // no resize decided after stop() began
    await Promise.all(this.hosts.map(async (h) => {
      if (!h.policy || h.watch.state !== 'up') return;
      const m = h.watch.host();
      await h.policy.tick(h.watch.guests(), { memTotalBytes: m.memTotalBytes, memAvailableBytes: m.memAvailableBytes, stallPct: m.psi?.some.avg10 ?? null, readAtS: h.watch.lastUpdateS }, nowMs / 1000);
    }));
  }

  #stuckReason(op: Operation): string {
    const h = this.hosts.find((x) => x.key === op.host);
    const m = h?.watch.guest(op.domain);
    if (!h || !m) return `domain '${op.domain}' is not watched`;
    if (m.monitor !== 'connected') return `the ${h.key === LOCAL ? 'monitor' : 'connection to the host'} of '${op.domain}' is ${m.monitor}: no news from the hypervisor`;
    const parts: string[] = [];
    if (m.balloonTargetBytes !== null && m.balloonBytes !== m.balloonTargetBytes) {
      parts.push(`the balloon is at ${m.balloonBytes} bytes of boot memory, heading for ${m.balloonTargetBytes} (is the guest's balloon driver loaded, or has it nothing left to free?)`);
    }
    for (const d of m.devices) {
      if (d.model === 'virtio-mem' && d.pluggedBytes !== d.requestedBytes) {
        parts.push(`virtio-mem ${d.id} has ${d.pluggedBytes} bytes plugged of ${d.requestedBytes} requested (is the guest's virtio_mem driver loaded, or is the memory in use?)`);
      }
    }
    return `nothing moved for ${Math.round((Date.now() / 1000 - op.movedAtS))} s: ${parts.join('; ') || 'waiting for the hypervisor to report the last change'}`;
  }

  // ------------------------------------------------------------------ reads (live views only)

  /** A running guest's view, or null. */
  model(name: string, hostKey: string = LOCAL): GuestView | null {
    return this.hosts.find((h) => h.key === hostKey)?.watch.guest(name) ?? null;
  }

  /** The local host's running guests (the native API's /stats and /metrics without a host label). */
  models(): GuestView[] {
    return this.local.watch.guests();
  }

  /** Every running guest's document, every host's (a guest of a libvirt host names its host). */
  allGuestDocuments(nowS: number): Record<string, unknown>[] {
    return this.allModels().map(({ host, view }) => ({ ...guestDocument(view, nowS), ...(host === LOCAL ? {} : { host }) }));
  }

  /** Every running guest of every host. */
  allModels(): HostedView[] {
    return this.hosts.flatMap((h) => h.watch.guests().map((view) => ({ host: h.key, view })));
  }

  /** The local host's memory. */
  get hostMemory(): HostMemory {
    return this.local.watch.host();
  }

  hostDocument(): Record<string, unknown> {
    const h = this.local.watch.host();
    return {
      memTotalBytes: h.memTotalBytes, memAvailableBytes: h.memAvailableBytes,
      ...(h.swapTotalBytes !== null ? { swapTotalBytes: h.swapTotalBytes } : {}),
      ...(h.swapFreeBytes !== null ? { swapFreeBytes: h.swapFreeBytes } : {}),
      psi: h.psi, sampledAtS: h.sampledAtS, guests: this.local.watch.guests().length,
    };
  }

  /** The libvirt hosts (GET /api/v1/hosts), in the order they were given. */
  libvirtHosts(): Host[] {
    return this.hosts.slice(1);
  }

  /** One libvirt host's document: up or down with the reason, its running guests. */
  libvirtHostDocument(h: Host): LibvirtHostDocument {
    return libvirtHostDocument(h);
  }

  /** Every defined domain of a host (its driver's list) with the watch's line to the running ones. */
  async list(hostKey: string = LOCAL): Promise<Record<string, unknown>[]> {
    const h = this.host(hostKey);
    return (await h.driver.list()).map((d) => {
      const m = h.watch.guest(d.name);
      const monitor = m && d.state !== 'shutoff' ? m.monitor : d.state === 'shutoff' ? 'down' : 'connecting';
      return { ...summaryDocument({ name: d.name, uuid: d.uuid, id: d.id, state: d.state, monitor }), reason: d.reason, persistent: d.persistent };
    });
  }

  /**
   * dominfo, sizes in bytes: from the live view for a watched guest, else as the driver answers it.
   * `call.signal` is read only when the driver is asked (a request's signal is made on demand).
   * @throws VirtError as HypervisorDriver.info
   */
  async info(ref: string, hostKey: string = LOCAL, call: { readonly signal?: AbortSignal } = {}): Promise<Record<string, unknown>> {
    const h = this.host(hostKey);
    const key = guestKey(h.key, ref);
    const v = h.watch.guest(ref);
    const seen = this.#infoSeen.get(key);
    // A watched guest's numbers are in its view, kept current by the hypervisor's size events
    // and, while memory moves on the native host, by a read every 200 ms (QEMU sends at most
    // one size event a second; libvirt's own dom.info() answers from its last event, so up to
    // a second old then). What a view does not hold (vCPUs, accelerator, security label, ...)
    // changes only with the guest's state, and is taken from the driver's last full answer.
    const i = v && seen && v.monitor === 'connected' ? infoFromView(seen, v) : await h.driver.info(ref, call.signal);
    if (v && !seen) this.#infoSeen.set(key, i);
    const { maxMemoryKiB, usedMemoryKiB, memory, hostMemory, ...rest } = i;
    return {
      ...rest, maxMemoryBytes: maxMemoryKiB * 1024, usedMemoryBytes: usedMemoryKiB * 1024,
      memory: { bootBytes: memory.bootKiB * 1024, balloonBytes: memory.balloonKiB * 1024, dimmBytes: memory.dimmKiB * 1024, pluggedBytes: memory.pluggedKiB * 1024, hotplugSizeBytes: memory.hotplugSizeKiB * 1024 },
      ...(hostMemory ? { hostMemory: hostMemoryDocument(hostMemory) } : {}),
    };
  }

  /**
   * dommemstat as the driver answers it, libvirt's names and order; sizes in bytes.
   * @throws VirtError as HypervisorDriver.memoryStats
   */
  async memoryStats(ref: string, hostKey: string = LOCAL, signal?: AbortSignal): Promise<Record<string, unknown>> {
    const ms = await this.host(hostKey).driver.memoryStats(ref, signal ? { signal } : {});
    const COUNTS = new Set(['major_fault', 'minor_fault', 'hugetlb_pgalloc', 'hugetlb_pgfail']);
    return {
      periodS: ms.periodS,
      stats: ms.stats.map((s) => (s.name === 'last_update' ? { name: s.name, value: s.value, unit: 'seconds' }
        : COUNTS.has(s.name) ? { name: s.name, value: s.value, unit: 'count' } : { name: s.name, value: s.value * 1024, unit: 'bytes' })),
    };
  }

  /**
   * One guest's document: the live view when running, the definition's plan otherwise (local).
   * @throws VirtError INVALID_ARG (bad name), NO_DOMAIN
   */
  async guest(name: string, hostKey: string = LOCAL): Promise<Record<string, unknown>> {
    const h = this.host(hostKey);
    const m = h.watch.guest(validateDomainName(name));
    const hostField = h.key === LOCAL ? {} : { host: h.key };
    if (m) return { ...guestDocument(m, Date.now() / 1000), ...hostField };
    const off = await h.driver.inactiveView(name);
    return { ...guestDocument(off, Date.now() / 1000), stale: false, ...hostField };
  }

  /** @throws VirtError INVALID_ARG, NO_DOMAIN */
  async history(name: string, sinceS: number, hostKey: string = LOCAL): Promise<{ domain: string; intervalS: number; samples: HistorySample[] }> {
    const h = this.host(hostKey);
    if (!h.watch.guest(validateDomainName(name))) await h.driver.state(name); // NO_DOMAIN for a guest that does not exist
    return { domain: name, intervalS: this.opts.historyIntervalMs / 1000, samples: this.#history.get(guestKey(h.key, name))?.samples(sinceS) ?? [] };
  }

  // ------------------------------------------------------------------ actions

  /**
   * Sets a running guest's memory target. Answers when the guest is there (done) or after
   * `waitMs` with the running operation to follow. `signal` bounds getting the change sent (the
   * job lock, the monitor): once it is, the operation runs on its own.
   * @throws VirtError as HypervisorDriver.setMemory for what is refused before anything changes;
   *   TIMEOUT when `signal`'s bound ends the wait for the lock or the monitor
   */
  async setMemory(name: string, targetBytes: number, opts: { force: boolean; waitMs: number; config?: boolean; timeoutMs?: number; split?: MemorySplit; answerWhenSent?: boolean; signal?: AbortSignal }, hostKey: string = LOCAL): Promise<SetMemoryAnswer> {
    validateDomainName(name);
    if (targetBytes % 1024 !== 0) throw invalidArg(`targetBytes ${targetBytes} is not a multiple of 1024`);
    const h = this.host(hostKey);
    if (!h.watch.guest(name)) {
      const st = await h.driver.state(name);
      if (st.state === 'shutoff') throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: domain is not running');
    }
    // The driver reports progress first right after it sent the change (under the domain's job
    // lock, so concurrent changes are ordered). Only then is there an operation, superseding an
    // older one for the guest; a failure before that is a refusal (guard rail, above maximum
    // ...): nothing changed, and the caller gets it as an error.
    const abort = new AbortController();
    // The caller's bound applies until the change is sent, not to the operation after it.
    const onCallerStop = (): void => { if (!op) abort.abort(opts.signal?.reason); };
    if (opts.signal?.aborted) onCallerStop();
    else opts.signal?.addEventListener('abort', onCallerStop, { once: true });
    let op: Operation | null = null;
    let atTarget = false;
    let refusal: unknown = null;
    let accepted!: () => void;
    const acceptedP = new Promise<void>((r) => { accepted = r; });
    let settled!: () => void;
    const settledP = new Promise<void>((r) => { settled = r; });
    const run = h.driver.setMemory(name, targetBytes / 1024, {
      live: true, config: opts.config ?? false, wait: true, force: opts.force, signal: abort.signal, ...(opts.split ? { split: opts.split } : {}),
      // A client that waits for the answer gets the guest's own word that it has the memory;
      // a change answered at once (202, the policy's) is sent without waiting for a report first.
      onliningCheck: opts.waitMs > 0,
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      onProgress: (p) => {
        if (!op) {
          atTarget = p.actualKiB === p.targetKiB;
          op = this.ops.start(name, targetBytes, p.startKiB * 1024, Date.now() / 1000, abort, h.key);
          this.counters.operationsStarted++;
          accepted();
        }
        this.ops.progress(op, p.actualKiB * 1024);
      },
    }).then(async (r) => {
      settled();
      // The view first, so whoever sees the success also sees the guest there; a view that
      // shows it already, its target and its size, is not read again (on a libvirt host a
      // refresh is an XML read and a bulk statistics call: 5-10 ms on every change answered at once).
      const v = h.watch.guest(name);
      const shows = v !== null && r.actualKiB !== null && v.targetBytes === r.targetKiB * 1024 && Math.floor(totalBytes(v) / 1024) === r.actualKiB;
      if (!shows) await h.watch.refresh(name).catch(() => {});
      if (op) this.ops.succeed(op, r.actualKiB === null ? null : r.actualKiB * 1024);
    }, async (err: unknown) => {
      settled();
      // A refusal changed nothing: it is answered at once, without asking the guest again (a
      // guest whose monitor did not answer would hold the answer up by another bound).
      if (!op) { refusal = err; return; }
      // A change superseded by a newer one leaves the view to that one (no questions in its way).
      if (!abort.signal.aborted) await h.watch.refresh(name).catch(() => {});
      this.ops.fail(op, err instanceof Error ? err.message : String(err), Date.now() / 1000, (err as { code?: unknown }).code === undefined ? 'OPERATION_FAILED' : String((err as { code: unknown }).code));
    }).finally(() => {
      accepted();
    });
    await acceptedP;
    opts.signal?.removeEventListener('abort', onCallerStop);
    if (!op) throw refusal ?? new VirtError('INTERNAL', 'internal error: the memory change ended without a result');
    const started: Operation = op;
    // Answer when the driver ended (the view refresh after it is bounded), or after waitMs;
    // a guest already at the target ends within moments, so that is waited for too.
    // (Not for a caller that follows the operation anyway: the policy, whose round would wait.)
    const graceMs = opts.waitMs > 0 ? opts.waitMs : atTarget && !opts.answerWhenSent ? 5_000 : 0;
    // That short wait the client did not ask for ends with the caller's bound too.
    const cut = opts.waitMs > 0 ? undefined : opts.signal;
    const ended = await Promise.race([
      settledP.then(() => true),
      new Promise<boolean>((r) => {
        if (graceMs > 0) setTimeout(() => r(false), graceMs).unref(); else setImmediate(() => r(false));
        if (cut?.aborted) r(false); else cut?.addEventListener('abort', () => r(false), { once: true });
      }),
    ]);
    if (ended) await run;
    return { done: started.state === 'succeeded', operation: started };
  }

  /** @throws VirtError as HypervisorDriver.setMaxMemory */
  async setMaxMemory(name: string, maxBytes: number, flags: { live?: boolean; config?: boolean }, hostKey: string = LOCAL, signal?: AbortSignal): Promise<{ maxBytes: number; live: boolean; config: boolean }> {
    validateDomainName(name);
    if (maxBytes % 1024 !== 0) throw invalidArg(`maxBytes ${maxBytes} is not a multiple of 1024`);
    const h = this.host(hostKey);
    const r = await h.driver.setMaxMemory(name, maxBytes / 1024, { ...flags, ...(signal ? { signal } : {}) });
    await h.watch.refresh(name);
    return { maxBytes, ...r };
  }

  /** @throws VirtError as HypervisorDriver.setStatsPeriod */
  async setStatsPeriod(name: string, periodS: number, flags: { live?: boolean; config?: boolean }, hostKey: string = LOCAL, signal?: AbortSignal): Promise<{ periodS: number; live: boolean; config: boolean }> {
    validateDomainName(name);
    const h = this.host(hostKey);
    const r = await h.driver.setStatsPeriod(name, periodS, { ...flags, ...(signal ? { signal } : {}) });
    await h.watch.refresh(name);
    return { periodS, ...r };
  }

  operationDocument(op: Operation): Record<string, unknown> {
    return operationDocument(op);
  }

  /** The last decision the policy made for a guest (the CLI's `policy show` through the daemon). */
  lastDecision(name: string, hostKey: string = LOCAL): LastPolicyDecision | null {
    return this.host(hostKey).policy?.last.get(name) ?? null;
  }
}

const guestKey = (host: string, name: string): string => `${host}\u0000${name}`;

/** dominfo of a running guest: its driver's last answer with the view's current numbers. Pure. */
export function infoFromView(seen: DomainInfo, v: GuestView): DomainInfo {
  const KIB = 1024;
  const paused = v.state === 'paused';
  return {
    ...seen,
    id: v.id, state: v.state, reason: paused ? (seen.state === 'paused' ? seen.reason : 'user') : (seen.state === 'running' ? seen.reason : 'booted'),
    cpuTimeS: v.cpuTimeS ?? seen.cpuTimeS,
    maxMemoryKiB: Math.floor(v.maxMemoryBytes / KIB), usedMemoryKiB: Math.floor(totalBytes(v) / KIB),
    memory: {
      bootKiB: Math.floor(v.bootBytes / KIB), balloonKiB: Math.floor((v.hasBalloon ? v.balloonBytes : v.bootBytes) / KIB), dimmKiB: Math.floor(v.dimmBytes / KIB),
      pluggedKiB: Math.floor(pluggedBytes(v) / KIB),
      hotplugSizeKiB: Math.floor(v.devices.reduce((s, d) => s + (d.model === 'virtio-mem' ? d.sizeBytes : 0), 0) / KIB),
    },
    // The host's counts (KSM, cgroup usage) as the watch last read them.
    ...(v.hostMemory ? { hostMemory: v.hostMemory } : {}),
  };
}

function historySample(m: GuestView, tS: number): HistorySample {
  const s: HistorySample = { tS, totalBytes: totalBytes(m), balloonBytes: m.balloonBytes, pluggedBytes: pluggedBytes(m) };
  if (m.stats.usableBytes !== undefined) s.usableBytes = m.stats.usableBytes;
  if (m.stats.availableBytes !== undefined) s.availableBytes = m.stats.availableBytes;
  if (m.rssBytes !== null) s.rssBytes = m.rssBytes;
  return s;
}
