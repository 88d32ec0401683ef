/**
 * The libvirt driver: virtmem's neutral driver API on an existing libvirt host, local or
 * remote, spoken over libvirt's own RPC protocol (src/libvirt). libvirt runs the guests; this
 * adds what virtmem adds on its own guests: `setmem --wait` following libvirt's balloon and
 * virtio-mem events with progress and bounds, one memory target split between balloon and
 * virtio-mem (update-device), guard rails, and dominfo that counts virtio-mem.
 */
import { LibvirtClient, type ClientOptions } from '../../libvirt/client.js';
import { LibvirtError } from '../../libvirt/errors.js';
import {
  AffectFlag, DOMAIN_MESSAGES_MAX, EventId, ListFlag, MEMORY_STATS_MAX, MEMORY_STAT_NAMES, Proc, QEMU_PROGRAM, QEMU_VERSION, QemuProc,
  STRING_MAX, StatsType, readCharArray, XmlFlag, paramNumber, readDomain, readDomainInfo, readTypedParam, uuidBytes, uuidText, writeDomain,
  type DomainEvent, type WireDomain,
} from '../../libvirt/protocol.js';
import { memoryLayoutFromXml, sizeKiB, virtioMemUpdateXml, type LibvirtMemoryLayout } from './domain-xml.js';
import { XdrReader, type XdrWriter } from '../../libvirt/xdr.js';
import { parseLibvirtUri, type LibvirtUri } from '../../libvirt/uri.js';
import { planChange, orderSteps, layoutMaxKiB, type MemoryLayout } from '../memory/plan.js';
import {
  balloonHeldKiB, checkBalloonPlan, checkAboveDimms, checkBelowMaximum, checkMemorySize, followMemory, growthRefusal, guestInUseKiB, guestTotalBaseline, resolveSetMemoryAffect, shrinkRefusal,
  MOVING_POLL_MS, VIRTIO_MEM_BLOCK_KIB, type GuestTotal, type MemorySizes,
} from '../memory/rules.js';
import { hostMemAvailableKiB } from '../memory/host-memory.js';
import { VirtError, invalidArg } from '../../domain/errors.js';
import type { PolicyDef } from '../../domain/definition.js';
import { applyPolicyChange, policySettings, type PolicySettingsChange } from '../../domain/policy.js';
import { validatePolicyDef } from '../../domain/validate-def.js';
import { POLICY_XML_NS, formatPolicyMetadata, parsePolicyMetadata } from '../../domain/xml.js';
import type {
  AffectFlags, AffectOptions, DefineResult, DomainInfo, DomainState, DomainSummary, HypervisorDriver, PolicyDocument, SetMemoryOptions, SetMemoryResult,
  StartResult, StateReason,
} from '../api.js';
import type { MemoryStats } from '../memory/stats.js';
import type { DriverWatch, WatchOptions } from '../watch.js';
import { parseXmlTree, childrenNamed } from '../../domain/xml-tree.js';
import { LibvirtWatch, readBulkStats, viewFromLibvirt, type BulkRecord } from './watch.js';
import { totalBytes, type GuestView } from '../view.js';
import { balloonOnlyChange } from '../memory/balloon-only.js';
import type { HostMemory } from '../memory/host-memory.js';
import { LibvirtNodeMemory } from './node.js';
import { ALL_CELLS } from '../node-api.js';
import { reasonOf, stateOf } from '../state-codes.js';
import { LibvirtDomainMemory } from './domain-memory.js';
import { hostMemoryFromXml, isLocalSystem, withLocalCounts } from './host-memory.js';
import type {
  DeviceFlags, DirtyRateMode, DomainStatsRecord, DomainStatsRequest, MemoryDeviceUpdate, MemoryParameter, MemoryParametersUpdate, NumaParameters,
  NumaParametersUpdate,
} from '../domain-memory-api.js';

/** virDomainMetadataType VIR_DOMAIN_METADATA_ELEMENT: an element in a namespace of its own. */
const METADATA_ELEMENT = 2;
/** virErrorNumber VIR_ERR_NO_DOMAIN_METADATA. */
const NO_DOMAIN_METADATA = 80;

/** VIR_DOMAIN_EVENT_STOPPED: the lifecycle event a finished shutdown sends. */
const EVENT_STOPPED = 5;

const affectBits = (f: AffectFlags): number => (f.live ? AffectFlag.LIVE : 0) | (f.config ? AffectFlag.CONFIG : 0);

export interface LibvirtDriverOptions extends ClientOptions {
  /** Bound on connecting (default 30 s). */
  connectTimeoutMs?: number;
}

/**
 * A followed balloon change on a watched guest is first read this long after it was sent (then
 * every MOVING_POLL_MS): a balloon takes tens of milliseconds to move anyway, and a read right
 * away would take the domain's job in libvirtd just when a client sending changes one after the
 * other sends its next (in the API bench, reads at once made back-to-back setmem calls 4x slower).
 */
const FIRST_BALLOON_READ_MS = 50;

export class LibvirtDriver implements HypervisorDriver {
  /** The URI as given. */
  readonly uri: string;
  /** The URI as understood. */
  readonly target: LibvirtUri;
  private client: Promise<LibvirtClient> | null = null;
  #watch: LibvirtWatch | null = null;
  /** The host's memory: src/driver/libvirt/node.ts, on this driver's connection. */
  readonly node = new LibvirtNodeMemory(this);
  /** A domain's memory beyond its size: src/driver/libvirt/domain-memory.ts, on this driver's connection. */
  private readonly domainMemory = new LibvirtDomainMemory(this);

  constructor(uri: string, private readonly opts: LibvirtDriverOptions = {}) {
    this.uri = uri;
    this.target = parseLibvirtUri(uri);
  }

  /** The connection, opened on first use and reopened after it died. */
  connection(signal?: AbortSignal): Promise<LibvirtClient> {
    if (this.client) {
      const c = this.client;
      return c.then((cl) => (cl.connectionState === 'open' ? cl : ((this.client = null), this.connection(signal))));
    }
    const p = LibvirtClient.connect(this.target, { ...this.opts, timeoutMs: this.opts.connectTimeoutMs ?? 30_000, ...(signal ? { signal } : {}) });
    this.client = p;
    p.catch(() => { if (this.client === p) this.client = null; });
    return p;
  }

  async close(): Promise<void> {
    await this.#watch?.stop();
    const p = this.client;
    this.client = null;
    if (p) await p.then((c) => c.close(), () => undefined);
  }

  /** Find a domain as virsh does: by id, then uuid, then name. */
  async lookup(ref: string, signal?: AbortSignal): Promise<WireDomain> {
    const c = await this.connection(signal);
    const attempt = async (proc: number, write: Parameters<LibvirtClient['call']>[1]): Promise<WireDomain | null> => {
      try {
        return readDomain(new XdrReader(await c.call(proc, write, { signal })));
      } catch (e) {
        if (e instanceof LibvirtError && e.code === 'NO_DOMAIN') return null;
        throw e;
      }
    };
    let d: WireDomain | null = null;
    if (/^[0-9]+$/.test(ref) && Number(ref) <= 0x7fff_ffff) d = await attempt(Proc.DOMAIN_LOOKUP_BY_ID, (w) => w.int(Number(ref)));
    const uuid = uuidBytes(ref);
    if (!d && uuid) d = await attempt(Proc.DOMAIN_LOOKUP_BY_UUID, (w) => w.fixedOpaque(uuid, 16));
    if (!d) d = await attempt(Proc.DOMAIN_LOOKUP_BY_NAME, (w) => w.string(ref, STRING_MAX));
    if (!d) throw new VirtError('NO_DOMAIN', `failed to get domain '${ref}'`);
    return d;
  }

  /**
   * Asks a running guest for a statistics report now: the period to 0 and back makes QEMU ask
   * the guest at once (qmp/commands.ts requestBalloonGuestStats, through libvirt). No-op for
   * `periodS` <= 0.
   */
  async requestGuestStats(ref: string | WireDomain, periodS: number, signal?: AbortSignal): Promise<void> {
    if (periodS <= 0) return;
    for (const p of [0, periodS]) await this.domCall(ref, Proc.DOMAIN_SET_MEMORY_STATS_PERIOD, (w) => w.int(p).uint(AffectFlag.LIVE), signal);
  }

  /** The statistics period a guest's live XML has now (someone may have changed it since its view was read; 0: off). */
  async liveStatsPeriodS(ref: string | WireDomain, signal?: AbortSignal): Promise<number> {
    const xml = await this.domCall(ref, Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(0), signal);
    return memoryLayoutFromXml(xml.string(STRING_MAX)).statsPeriodS;
  }

  private async domCall(ref: string | WireDomain, proc: number, extra: Parameters<LibvirtClient['call']>[1], signal?: AbortSignal, timeoutMs?: number): Promise<XdrReader> {
    const c = await this.connection(signal);
    const d = typeof ref === 'string' ? await this.lookup(ref, signal) : ref;
    const payload = await c.call(proc, (w) => { writeDomain(w, d); extra?.(w); }, { signal, ...(timeoutMs ? { timeoutMs } : {}) });
    return new XdrReader(payload);
  }

  async list(): Promise<DomainSummary[]> {
    const c = await this.connection();
    // Two calls whatever the number of guests: states of all, and which are persistent.
    const [stats, persistent] = await Promise.all([
      c.call(Proc.CONNECT_GET_ALL_DOMAIN_STATS, (w) => w.array([], () => undefined).uint(StatsType.STATE).uint(0)),
      c.call(Proc.CONNECT_LIST_ALL_DOMAINS, (w) => w.int(1).uint(4 /* VIR_CONNECT_LIST_DOMAINS_PERSISTENT */)),
    ]);
    const pr = new XdrReader(persistent);
    const persistentUuids = new Set(pr.array(readDomain).map((d) => d.uuid.toString('hex')));
    const r = new XdrReader(stats);
    const records = r.array((x) => ({ dom: readDomain(x), params: x.array(readTypedParam) }));
    const rows = records.map(({ dom, params }) => {
      const get = (f: string): number => paramNumber(params.find((p) => p.field === f)?.value) ?? 0;
      const st = get('state.state');
      return {
        id: dom.id >= 0 ? dom.id : null, name: dom.name, uuid: uuidText(dom.uuid), state: stateOf(st),
        reason: reasonOf(st, get('state.reason')), persistent: persistentUuids.has(dom.uuid.toString('hex')),
      };
    });
    // virsh's order: running domains by id, then inactive ones by name.
    // virsh compares names with strcasecmp (ASCII case folding only).
    const fold = (n: string): string => n.replace(/[A-Z]+/g, (c) => c.toLowerCase());
    const byName = (a: string, b: string): number => { const x = fold(a), y = fold(b); return x < y ? -1 : x > y ? 1 : 0; };
    return rows.sort((a, b) => (a.id === null ? (b.id === null ? byName(a.name, b.name) : 1) : b.id === null ? -1 : a.id - b.id));
  }

  /**
   * Statistics of every domain in one call (virConnectGetAllDomainStats): `groups` is a mask of
   * StatsType (default state + balloon: what a watch polls). Values keep libvirt's field names
   * ("balloon.current", KiB as libvirt reports them).
   */
  async allDomainStats(groups: number = StatsType.STATE | StatsType.BALLOON, signal?: AbortSignal): Promise<BulkRecord[]> {
    const c = await this.connection(signal);
    return readBulkStats(await c.call(Proc.CONNECT_GET_ALL_DOMAIN_STATS, (w) => w.array([], () => undefined).uint(groups).uint(0), { signal }));
  }

  /**
   * The host's memory as libvirt reports it (virNodeGetMemoryStats: total, free, buffers,
   * cached); available is free + buffers + cached, as libvirt has no MemAvailable.
   */
  async nodeMemory(signal?: AbortSignal): Promise<HostMemory> {
    const stats = await this.node.memoryStats(ALL_CELLS, signal ? { signal } : {});
    const bytes = (f: string): number | null => { const v = stats.find((x) => x.field === f)?.valueKiB; return v === undefined ? null : v * 1024; };
    const parts = ['free', 'buffers', 'cached'].map(bytes);
    return {
      memTotalBytes: bytes('total'), memAvailableBytes: parts.every((p) => p !== null) ? parts.reduce((a, b) => a! + b!, 0) : bytes('free'),
      swapTotalBytes: null, swapFreeBytes: null, psi: null, sampledAtS: Date.now() / 1000,
    };
  }

  /** Closes the connection so the next call opens a fresh one (after a failure it may be half dead). */
  async dropConnection(): Promise<void> {
    const p = this.client;
    this.client = null;
    if (p) await p.then((c) => c.close(), () => undefined).catch(() => undefined);
  }

  // ---------------------------------------------------------------- memory beyond its size (domain-memory.ts)

  memoryParameters(ref: string, flags?: DeviceFlags): Promise<MemoryParameter[]> { return this.domainMemory.memoryParameters(ref, flags); }
  setMemoryParameters(ref: string, update: MemoryParametersUpdate, flags?: DeviceFlags): Promise<void> { return this.domainMemory.setMemoryParameters(ref, update, flags); }
  numaParameters(ref: string, flags?: DeviceFlags): Promise<NumaParameters> { return this.domainMemory.numaParameters(ref, flags); }
  setNumaParameters(ref: string, update: NumaParametersUpdate, flags?: DeviceFlags): Promise<void> { return this.domainMemory.setNumaParameters(ref, update, flags); }
  attachDevice(ref: string, xml: string, flags?: DeviceFlags): Promise<void> { return this.domainMemory.attachDevice(ref, xml, flags); }
  detachDevice(ref: string, xml: string, flags?: DeviceFlags): Promise<void> { return this.domainMemory.detachDevice(ref, xml, flags); }
  updateMemoryDevice(ref: string, update: MemoryDeviceUpdate, flags?: DeviceFlags): Promise<{ xml: string }> { return this.domainMemory.updateMemoryDevice(ref, update, flags); }
  domainStats(req: DomainStatsRequest): Promise<DomainStatsRecord[]> { return this.domainMemory.domainStats(req); }
  startDirtyRateCalc(ref: string, seconds: number, mode: DirtyRateMode | null, signal?: AbortSignal): Promise<void> { return this.domainMemory.startDirtyRateCalc(ref, seconds, mode, signal); }

  async state(ref: string): Promise<{ state: DomainState; reason: StateReason }> {
    const r = await this.domCall(ref, Proc.DOMAIN_GET_STATE, (w) => w.uint(0));
    const st = r.int();
    return { state: stateOf(st), reason: reasonOf(st, r.int()) };
  }

  async info(ref: string, signal?: AbortSignal): Promise<DomainInfo> {
    const c = await this.connection(signal);
    const d = await this.lookup(ref, signal);
    const call = (proc: number, extra?: Parameters<LibvirtClient['call']>[1]): Promise<XdrReader> =>
      c.call(proc, (w) => { writeDomain(w, d); extra?.(w); }, { signal }).then((b) => new XdrReader(b));
    // Pipelined: one round trip's latency for all of them.
    const [infoR, stateR, persR, autoR, xmlR, osR, msR, secModel, labelR, messages] = await Promise.all([
      call(Proc.DOMAIN_GET_INFO), call(Proc.DOMAIN_GET_STATE, (w) => w.uint(0)), call(Proc.DOMAIN_IS_PERSISTENT),
      call(Proc.DOMAIN_GET_AUTOSTART), call(Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(0)), call(Proc.DOMAIN_GET_OS_TYPE),
      call(Proc.DOMAIN_HAS_MANAGED_SAVE_IMAGE, (w) => w.uint(0)),
      c.call(Proc.NODE_GET_SECURITY_MODEL, null, { signal }).then((b) => new XdrReader(b), (e: unknown) => {
        if (e instanceof LibvirtError && e.code === 'NO_SUPPORT') return null;
        throw e;
      }),
      call(Proc.DOMAIN_GET_SECURITY_LABEL).catch(() => null),
      // virsh ignores a failure here (older daemons lack the call), and so do we.
      call(Proc.DOMAIN_GET_MESSAGES, (w) => w.uint(0)).then((r) => r.array((x) => x.string(STRING_MAX), DOMAIN_MESSAGES_MAX), () => []),
    ]);
    const model = secModel ? readCharArray(secModel, 257) : '';
    const doi = secModel ? readCharArray(secModel, 257) : '';
    const label = labelR ? readCharArray(labelR, 4097) : '';
    const enforcing = labelR ? labelR.int() === 1 : false;
    const info = readDomainInfo(infoR);
    const st = stateR.int();
    const reason = stateR.int();
    const xml = xmlR.string(STRING_MAX);
    const layout = memoryLayoutFromXml(xml);
    const running = d.id >= 0;
    const defined = await hostMemoryFromXml(xml);
    const hostMemory = defined && running && isLocalSystem(this.target) ? await withLocalCounts(d.name, defined) : defined;
    const plugged = layout.virtioMem.reduce((s, v) => s + (running ? v.currentKiB : v.requestedKiB), 0);
    const hotplugSize = layout.virtioMem.reduce((s, v) => s + v.sizeKiB, 0);
    return {
      id: running ? d.id : null, name: d.name, uuid: uuidText(d.uuid), state: stateOf(st), reason: reasonOf(st, reason),
      persistent: persR.int() !== 0, osType: osR.string(STRING_MAX), vcpus: info.nrVirtCpu,
      managedSave: msR.int() !== 0, messages,
      security: model ? { model, doi, label: label || null, enforcing } : null,
      cpuTimeS: running ? Number(info.cpuTimeNs) / 1e9 : null,
      maxMemoryKiB: info.maxMemKiB,
      // libvirt >= 8 counts plugged virtio-mem in its "memory" (older ones did not: see below).
      usedMemoryKiB: info.memoryKiB,
      autostart: autoR.int() !== 0, accel: null, cpuModel: null, accelNote: null,
      memory: { bootKiB: layout.bootKiB, balloonKiB: info.memoryKiB - plugged, dimmKiB: layout.dimmKiB, pluggedKiB: plugged, hotplugSizeKiB: hotplugSize },
      ...(hostMemory ? { hostMemory } : {}),
    };
  }

  async start(ref: string, opts: { paused?: boolean; signal?: AbortSignal } = {}): Promise<StartResult> {
    const d = await this.lookup(ref, opts.signal);
    // virsh checks this itself before asking libvirt, and says it in these words.
    if (d.id >= 0) throw new VirtError('DOMAIN_ACTIVE', 'Domain is already active');
    if (opts.paused) {
      const r = await this.domCall(d, Proc.DOMAIN_CREATE_WITH_FLAGS, (w) => w.uint(1 /* START_PAUSED */), opts.signal, 120_000);
      const nd = readDomain(r);
      return { live: { name: nd.name }, id: nd.id, pid: null, accel: null };
    }
    await this.domCall(d, Proc.DOMAIN_CREATE, null, opts.signal, 120_000);
    const nd = await this.lookup(uuidText(d.uuid), opts.signal);
    return { live: { name: nd.name }, id: nd.id >= 0 ? nd.id : null, pid: null, accel: null };
  }

  async shutdown(ref: string, opts: { timeoutMs?: number | null; signal?: AbortSignal } = {}): Promise<{ stopped: boolean }> {
    const c = await this.connection(opts.signal);
    const d = await this.lookup(ref, opts.signal);
    if (opts.timeoutMs === null || opts.timeoutMs === undefined) {
      await this.domCall(d, Proc.DOMAIN_SHUTDOWN, null, opts.signal);
      return { stopped: false };
    }
    const key = d.uuid.toString('hex');
    const stopped = this.waitEvent(c, EventId.LIFECYCLE, (e) => e.kind === 'lifecycle' && e.dom.uuid.toString('hex') === key && e.event === EVENT_STOPPED, opts.timeoutMs, opts.signal, `domain '${d.name}' did not shut down`);
    try {
      await stopped.ready;
      await this.domCall(d, Proc.DOMAIN_SHUTDOWN, null, opts.signal);
      await stopped.done;
      return { stopped: true };
    } finally {
      stopped.cancel();
    }
  }

  /**
   * Subscribe to an event before the action that causes it; `done` settles on the first
   * matching event, on timeout (TIMEOUT), abort, or the connection dying.
   */
  private waitEvent(c: LibvirtClient, eventId: number, match: (e: DomainEvent) => boolean, timeoutMs: number, signal: AbortSignal | undefined, what: string): { ready: Promise<void>; done: Promise<void>; cancel(): void } {
    let callbackId: number | null = null;
    let cancelled = false;
    const cleanups: Array<() => void> = [];
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new VirtError('TIMEOUT', `${what} within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
      cleanups.push(() => clearTimeout(timer));
      cleanups.push(c.onEvent((e) => { if (match(e)) resolve(); }));
      cleanups.push(c.onClose((err) => reject(err)));
      const onAbort = (): void => reject(new VirtError('ABORTED', `${what}: aborted`));
      signal?.addEventListener('abort', onAbort, { once: true });
      cleanups.push(() => signal?.removeEventListener('abort', onAbort));
    });
    done.catch(() => undefined);
    const ready = c.registerEvent(eventId, { signal }).then((id) => {
      callbackId = id;
      if (cancelled) void c.deregisterEvent(id).catch(() => undefined);
    });
    return {
      ready, done,
      cancel: () => {
        cancelled = true;
        for (const f of cleanups) f();
        if (callbackId !== null) void c.deregisterEvent(callbackId).catch(() => undefined);
      },
    };
  }

  async destroy(ref: string, signal?: AbortSignal): Promise<void> {
    await this.domCall(ref, Proc.DOMAIN_DESTROY, null, signal);
  }

  async defineXml(xml: string): Promise<DefineResult> {
    const c = await this.connection();
    let name: string | null = null;
    try {
      name = childrenNamed(parseXmlTree(xml), 'name')[0]?.text.trim() ?? null;
    } catch { /* libvirt reports malformed XML in its own words */ }
    let redefined = false;
    if (name) redefined = await this.lookup(name).then(() => true, () => false);
    const d = readDomain(new XdrReader(await c.call(Proc.DOMAIN_DEFINE_XML, (w) => w.string(xml, STRING_MAX))));
    return { def: { name: d.name, uuid: uuidText(d.uuid) }, redefined, warnings: [] };
  }

  async undefine(ref: string): Promise<{ name: string }> {
    const d = await this.lookup(ref);
    await this.domCall(d, Proc.DOMAIN_UNDEFINE_FLAGS, (w) => w.uint(0));
    return { name: d.name };
  }

  async dumpXml(ref: string, opts: { inactive?: boolean; signal?: AbortSignal } = {}): Promise<string> {
    const r = await this.domCall(ref, Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(opts.inactive ? XmlFlag.INACTIVE : 0), opts.signal);
    return r.string(STRING_MAX);
  }

  async setMaxMemory(ref: string, kib: number, flags: AffectOptions = {}): Promise<{ live: boolean; config: boolean }> {
    checkMemorySize(kib, null);
    await this.domCall(ref, Proc.DOMAIN_SET_MEMORY_FLAGS, (w) => w.uhyper(kib).uint(AffectFlag.MEM_MAXIMUM | affectBits(flags)), flags.signal);
    return { live: !!flags.live, config: !!flags.config };
  }

  async setStatsPeriod(ref: string, periodS: number, flags: AffectOptions = {}): Promise<{ live: boolean; config: boolean }> {
    if (!Number.isInteger(periodS) || periodS < 0 || periodS > 0x7fff_ffff) throw invalidArg(`invalid statistics period ${periodS}`);
    await this.domCall(ref, Proc.DOMAIN_SET_MEMORY_STATS_PERIOD, (w) => w.int(periodS).uint(affectBits(flags)), flags.signal);
    return { live: !!flags.live, config: !!flags.config };
  }

  async memoryStats(ref: string, opts: { signal?: AbortSignal } = {}): Promise<MemoryStats> {
    const d = await this.lookup(ref, opts.signal);
    const [stats, xml] = await Promise.all([
      this.statList(d, opts.signal),
      this.domCall(d, Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(0), opts.signal),
    ]);
    return { stats, periodS: memoryLayoutFromXml(xml.string(STRING_MAX)).statsPeriodS };
  }

  async monitorCommand(ref: string, command: string, opts: { hmp?: boolean; signal?: AbortSignal } = {}): Promise<string | Record<string, unknown>> {
    const c = await this.connection(opts.signal);
    const d = await this.lookup(ref, opts.signal);
    const out = await c.callProgram(QEMU_PROGRAM, QEMU_VERSION, QemuProc.MONITOR_COMMAND, (w) => {
      writeDomain(w, d);
      w.string(command, STRING_MAX).uint(opts.hmp ? 1 : 0);
    }, { signal: opts.signal });
    const text = new XdrReader(out).string(STRING_MAX);
    if (opts.hmp) return text;
    try {
      return JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new VirtError('MONITOR_FAILED', `QEMU's reply through libvirt is not JSON: ${text.slice(0, 200)}`);
    }
  }

  /**
   * Set the guest's memory. With virtio-mem devices one target is split between the balloon
   * and the devices (virtmem's plan); without, it is libvirt's balloon target. `wait` follows
   * libvirt's BALLOON_CHANGE and MEMORY_DEVICE_SIZE_CHANGE events (plus a slow poll, as events
   * are rate-limited) until the guest has the target (memory/rules.ts followMemory).
   */
  async setMemory(ref: string, kib: number, opts: SetMemoryOptions = {}): Promise<SetMemoryResult> {
    const signal = opts.signal;
    // libvirt's client library refuses 0 before sending anything; so do we, in its words.
    checkMemorySize(kib, null);
    const fast = await this.#fastBalloonChange(ref, kib, opts);
    if (fast) return fast;
    const c = await this.connection(signal);
    const d = await this.lookup(ref, signal);
    const running = d.id >= 0;
    const flags = resolveSetMemoryAffect(opts, running);
    const result = (actualKiB: number | null, reached: boolean): SetMemoryResult => ({ targetKiB: kib, actualKiB, reached, live: flags.live, config: flags.config });
    if (!flags.live) {
      await this.domCall(d, Proc.DOMAIN_SET_MEMORY_FLAGS, (w) => w.uhyper(kib).uint(affectBits(flags)), signal);
      return result(null, false);
    }
    const [xml, infoNow] = await Promise.all([
      this.domCall(d, Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(0), signal).then((r) => r.string(STRING_MAX)),
      this.domCall(d, Proc.DOMAIN_GET_INFO, null, signal).then(readDomainInfo),
    ]);
    const layout = memoryLayoutFromXml(xml);
    const ml = libvirtLayout(layout);
    const vmem = layout.virtioMem.length > 0;
    if (vmem) {
      checkBelowMaximum(kib, layoutMaxKiB(ml));
      checkAboveDimms(kib, ml.dimmKiB);
    }
    // Where the balloon is: libvirt's memory is the balloon plus plugged virtio-mem and DIMMs.
    const balloonNowKiB = infoNow.memoryKiB - ml.dimmKiB - layout.virtioMem.reduce((t, v) => t + v.currentKiB, 0);
    if (!opts.force) {
      if (kib < infoNow.memoryKiB) {
        const held = balloonHeldKiB(layout.balloonModel !== 'none' && layout.balloonAutodeflate, ml.bootKiB, balloonNowKiB);
        const why = shrinkRefusal(kib, guestInUseKiB(await this.guestStats(d, signal), held));
        if (why) throw invalidArg(why);
      } else if (kib > infoNow.memoryKiB) {
        const why = growthRefusal(kib - infoNow.memoryKiB, this.target.transport === 'unix' ? await hostMemAvailableKiB() : null);
        if (why) throw invalidArg(why);
      }
    }
    // Without virtio-mem the target is libvirt's balloon target (its own checks, its words).
    const hasBalloon = layout.balloonModel !== 'none';
    const plan = vmem ? planChange(ml, hasBalloon ? balloonNowKiB : null, kib, opts.split) : { targetKiB: kib, balloonKiB: kib - ml.dimmKiB, requestedKiB: [] };
    if (vmem) checkBalloonPlan(hasBalloon, plan.balloonKiB, ml.bootKiB);
    // The watch learns the target here: libvirt keeps no balloon target it could read back.
    const sent = (): void => this.#watch?.takeTarget(d.name, { uuid: uuidText(d.uuid), targetKiB: kib, balloonKiB: plan.balloonKiB, requestedKiB: plan.requestedKiB });
    const act = async (): Promise<void> => {
      if (!vmem) {
        await this.domCall(d, Proc.DOMAIN_SET_MEMORY_FLAGS, (w) => w.uhyper(kib).uint(affectBits(flags)), signal);
        sent();
        return;
      }
      for (const st of orderSteps(ml, hasBalloon ? balloonNowKiB : null, plan)) {
        if (st.kind === 'balloon') {
          await this.domCall(d, Proc.DOMAIN_SET_MEMORY_FLAGS, (w) => w.uhyper(st.targetKiB).uint(AffectFlag.LIVE), signal);
        } else {
          const dev = layout.virtioMem[st.index]!;
          await this.domCall(d, Proc.DOMAIN_UPDATE_DEVICE_FLAGS, (w) => w.string(virtioMemUpdateXml(dev, st.requestedKiB), STRING_MAX).uint(AffectFlag.LIVE), signal);
        }
      }
      sent();
      if (flags.config) await this.domCall(d, Proc.DOMAIN_SET_MEMORY_FLAGS, (w) => w.uhyper(kib).uint(AffectFlag.CONFIG), signal);
    };
    if (!opts.wait) {
      await act();
      return result(null, false);
    }
    const key = d.uuid.toString('hex');
    let wake: (() => void) | null = null;
    let dead: LibvirtError | null = null;
    const poke = (): void => { const w = wake; wake = null; w?.(); };
    // Events only wake the wait; the sizes are always read back from libvirt, whose "memory"
    // (virDomainGetInfo) is the balloon plus plugged virtio-mem since libvirt 8.
    const off = c.onEvent((e) => {
      if (e.dom.uuid.toString('hex') === key && (e.kind === 'balloon-change' || e.kind === 'memory-device-size-change')) poke();
    });
    const offClose = c.onClose((err) => { dead = err; poke(); });
    const ids: number[] = [];
    try {
      ids.push(await c.registerEvent(EventId.BALLOON_CHANGE, { signal }));
      if (vmem) ids.push(await c.registerEvent(EventId.MEMORY_DEVICE_SIZE_CHANGE, { signal }));
      // libvirt's own sizes (its info, its XML), which its events move: the wait ends when
      // libvirt reports the guest there, so `virsh dominfo` right after agrees. (A daemon's
      // watched guest is followed on the fast path instead, QEMU's balloon read fresh.)
      const read = async (): Promise<MemorySizes> => {
        if (dead) throw dead;
        return this.liveSizes(d, ml, vmem, signal);
      };
      const start = await read();
      // What the guest itself counts (its MemTotal), and when it said so. Without a statistics
      // period no report is new (the native driver's guestTotal says the same).
      const total = async (): Promise<GuestTotal | null> => {
        if (layout.statsPeriodS <= 0) return null;
        const g = await this.guestStats(d, signal);
        return g?.totalKiB === undefined || !g.lastUpdateS ? null : { totalKiB: g.totalKiB, atS: g.lastUpdateS };
      };
      const refresh = (): Promise<void> => this.requestGuestStats(d, layout.statsPeriodS, signal);
      // libvirt learns a device's plugged size from QEMU's MEMORY_DEVICE_SIZE_CHANGE events,
      // which QEMU sends at most once a second per device: while an earlier change is still under
      // way, the XML's current size lags what the guest has, and the guest's MemTotal read now
      // may already count memory the XML does not (a grow sent a second after another was then
      // judged "not onlined" after the stall bound). Onlining is judged only from a start at
      // which libvirt's sizes had settled on what was requested, against a report from now, not
      // the guest's last one (rules.ts guestTotalBaseline).
      const settled = layout.virtioMem.every((v, i) => start.pluggedKiB[i] === v.requestedKiB);
      const before = vmem && settled && opts.onliningCheck !== false && plan.requestedKiB.some((r, i) => r > (start.pluggedKiB[i] ?? 0))
        ? await guestTotalBaseline({ name: d.name, signal, guestTotal: total, refreshGuestTotal: refresh })
        : null;
      await act();
      const reached = await followMemory({
        name: d.name, plan, layout: ml, start, read, guestTotal: total, guestTotalBefore: before, refreshGuestTotal: refresh,
        changed: (ms) => new Promise<void>((resolve) => {
          const t = setTimeout(() => { wake = null; resolve(); }, ms);
          wake = () => { clearTimeout(t); resolve(); };
          if (dead) wake();
        }),
        // QEMU rate-limits its balloon events: a slow poll backs them up.
        pollMs: () => 1_000,
        timeoutMs: opts.timeoutMs, stallMs: opts.stallMs, onProgress: opts.onProgress, signal,
      });
      return result(reached.totalKiB, reached.totalKiB === kib);
    } finally {
      off();
      offClose();
      for (const id of ids) void c.deregisterEvent(id).catch(() => undefined);
    }
  }

  /**
   * The common change, fast (a daemon's watch runs): a live balloon target on a guest the watch
   * follows, planned from its view (memory/balloon-only.ts) and sent as one call, without a
   * lookup, an XML read or a statistics query first; the progress is reported at once, and the
   * wait follows the view, which libvirt's balloon events and the watch's bulk statistics move.
   * Returns null for every other change: the full path takes it.
   * @throws VirtError as setMemory
   */
  async #fastBalloonChange(ref: string, kib: number, opts: SetMemoryOptions): Promise<SetMemoryResult | null> {
    const w = this.#watch;
    if (!w || opts.config || opts.current) return null;
    const v = w.guest(ref);
    if (!v || v.id === null || w.state !== 'up') return null;
    const avail = w.host().memAvailableBytes;
    const fast = balloonOnlyChange(v, kib, { floorKiB: null, force: opts.force ?? false, split: opts.split, hostAvailableKiB: this.target.transport === 'unix' && avail !== null ? Math.floor(avail / 1024) : null });
    if (!fast) return null;
    const name = v.name;
    const uuid = uuidBytes(v.uuid);
    if (!uuid) return null;
    const d: WireDomain = { name, uuid, id: v.id };
    await this.domCall(d, Proc.DOMAIN_SET_MEMORY_FLAGS, (x) => x.uhyper(kib).uint(AffectFlag.LIVE), opts.signal);
    const vmem = v.devices.filter((x) => x.model === 'virtio-mem');
    // The watch learns the target here, as on the full path: libvirt keeps no balloon target.
    w.takeTarget(name, { uuid: v.uuid, targetKiB: kib, balloonKiB: kib, requestedKiB: vmem.map(() => 0) });
    const { startKiB } = fast;
    opts.onProgress?.({ actualKiB: startKiB, targetKiB: kib, startKiB, elapsedMs: 0 });
    const result: SetMemoryResult = { targetKiB: kib, actualKiB: startKiB, reached: false, live: true, config: false };
    if (!opts.wait) return result;
    const layout: MemoryLayout = { bootKiB: Math.floor(v.bootBytes / 1024), dimmKiB: 0, vmem: vmem.map((x) => ({ id: x.id, sizeKiB: x.sizeBytes / 1024, blockKiB: 0, pluggedKiB: 0 })) };
    const fromView = (): MemorySizes => {
      const now = w.guest(name);
      if (!now || now.monitor !== 'connected') throw new VirtError('OPERATION_FAILED', `operation failed: domain '${name}' is no longer followed: ${now ? `its host is ${w.state}${w.reason ? ` (${w.reason})` : ''}` : 'it stopped'}`);
      return { balloonKiB: Math.floor(now.balloonBytes / 1024), pluggedKiB: now.devices.filter((x) => x.model === 'virtio-mem').map((x) => Math.floor(x.pluggedBytes / 1024)), totalKiB: Math.floor(totalBytes(now) / 1024) };
    };
    // QEMU's balloon now, into the view too (the dashboard, the policy and the API follow it);
    // unanswered, the view as libvirt's events left it. A read takes the domain's job in
    // libvirtd, which a next change would wait for: the first comes FIRST_BALLOON_READ_MS after
    // the change (a burst of changes, each superseding the one before, reads nothing), then
    // every MOVING_POLL_MS.
    let polls = 0;
    const read = async (): Promise<MemorySizes> => {
      fromView();
      const actualKiB = await this.balloonActualKiB(d, opts.signal).catch(() => null);
      if (actualKiB !== null) w.takeBalloonActual(name, v.uuid, actualKiB);
      return fromView();
    };
    const reached = await followMemory({
      name, layout, plan: { targetKiB: kib, balloonKiB: kib, requestedKiB: vmem.map(() => 0) }, start: fromView(), read,
      changed: (ms) => new Promise<void>((resolve) => {
        const done = (): void => { clearTimeout(t); off(); resolve(); };
        const t = setTimeout(done, ms);
        const off = w.onChange((c) => { if (c.kind === 'host' || ('name' in c && c.name === name)) done(); });
      }),
      // Balloon events are rate-limited by QEMU: the balloon is read as it moves.
      pollMs: () => (polls++ === 0 ? FIRST_BALLOON_READ_MS : MOVING_POLL_MS),
      timeoutMs: opts.timeoutMs, stallMs: opts.stallMs, onProgress: opts.onProgress, signal: opts.signal,
    });
    return { ...result, actualKiB: reached.totalKiB, reached: reached.totalKiB === kib };
  }

  /**
   * QEMU's balloon size now, KiB (what QEMU calls "actual": boot RAM, DIMMs and plugged
   * virtio-mem less what the balloon holds), or null without a balloon. libvirt's memory
   * statistics ask QEMU on each call; its info and events carry QEMU's last size event, which
   * QEMU sends at most once a second.
   */
  async balloonActualKiB(d: WireDomain, signal?: AbortSignal): Promise<number | null> {
    return (await this.statList(d, signal)).find((s) => s.name === 'actual')?.value ?? null;
  }

  /** virDomainMemoryStats: libvirt's statistics in its order, by name (an unknown tag as tagN). */
  private async statList(d: WireDomain, signal: AbortSignal | undefined): Promise<Array<{ name: string; value: number }>> {
    const r = await this.domCall(d, Proc.DOMAIN_MEMORY_STATS, (w) => w.uint(MEMORY_STATS_MAX).uint(0), signal);
    return r.array((x) => ({ tag: x.int(), val: x.uhyper() }), 1024).map((s) => ({ name: MEMORY_STAT_NAMES[s.tag] ?? `tag${s.tag}`, value: s.val }));
  }

  /** The guest's own statistics as libvirt reports them (KiB), or null before any report. */
  private async guestStats(d: WireDomain, signal: AbortSignal | undefined): Promise<{ totalKiB?: number; availableKiB?: number; lastUpdateS?: number } | null> {
    const stats = new Map((await this.statList(d, signal)).map((s) => [s.name, s.value] as const));
    const out: { totalKiB?: number; availableKiB?: number; lastUpdateS?: number } = {};
    const total = stats.get('available');
    const avail = stats.get('usable');
    const at = stats.get('last_update');
    if (total !== undefined) out.totalKiB = total;
    if (avail !== undefined) out.availableKiB = avail;
    if (at !== undefined) out.lastUpdateS = at;
    return out;
  }

  /** libvirt's live sizes: the balloon (its "memory" minus plugged virtio-mem) and each device (one round trip). */
  private async liveSizes(d: WireDomain, ml: MemoryLayout, vmem: boolean, signal: AbortSignal | undefined): Promise<MemorySizes> {
    const [infoR, xmlR] = await Promise.all([
      this.domCall(d, Proc.DOMAIN_GET_INFO, null, signal),
      vmem ? this.domCall(d, Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(0), signal) : Promise.resolve(null),
    ]);
    const info = readDomainInfo(infoR);
    const plugged = xmlR ? memoryLayoutFromXml(xmlR.string(STRING_MAX)).virtioMem.map((v) => v.currentKiB) : [];
    const balloon = info.memoryKiB - ml.dimmKiB - plugged.reduce((a, b) => a + b, 0);
    return { balloonKiB: balloon, pluggedKiB: plugged, totalKiB: info.memoryKiB };
  }

  // ---------------------------------------------------------------- policy settings

  /**
   * A guest's policy settings, from its domain XML's <metadata> in virtmem's namespace (libvirt
   * keeps foreign metadata as it is, on running and persistent definitions alike).
   */
  async policy(ref: string, signal?: AbortSignal): Promise<PolicyDocument> {
    const d = await this.lookup(ref, signal);
    const { configured, mostKiB } = await this.storedPolicy(d, signal);
    return { name: d.name, settings: policySettings(configured, mostKiB), configured };
  }

  /** Change a guest's policy settings in its metadata (persistent, and live when it runs). */
  async setPolicy(ref: string, change: PolicySettingsChange, signal?: AbortSignal): Promise<PolicyDocument> {
    const d = await this.lookup(ref, signal);
    const { configured, mostKiB } = await this.storedPolicy(d, signal);
    const next = applyPolicyChange(configured, change);
    checkPolicy(next, mostKiB);
    const persistent = (await this.domCall(d, Proc.DOMAIN_IS_PERSISTENT, null, signal)).int() !== 0;
    const flags = (persistent ? AffectFlag.CONFIG : 0) | (d.id >= 0 ? AffectFlag.LIVE : 0);
    await this.domCall(d, Proc.DOMAIN_SET_METADATA, (w) => {
      w.int(METADATA_ELEMENT);
      writeOptionalString(w, formatPolicyMetadata(next));
      writeOptionalString(w, 'virtmem');
      writeOptionalString(w, POLICY_XML_NS);
      w.uint(flags);
    }, signal);
    return { name: d.name, settings: policySettings(next, mostKiB), configured: next };
  }

  /** The stored policy (null: none) and the most the guest can have (its hot-plug ceiling, else its maximum). */
  private async storedPolicy(d: WireDomain, signal: AbortSignal | undefined): Promise<{ configured: PolicyDef | null; mostKiB: number }> {
    const [meta, xml] = await Promise.all([
      this.domCall(d, Proc.DOMAIN_GET_METADATA, (w) => { w.int(METADATA_ELEMENT); writeOptionalString(w, POLICY_XML_NS); w.uint(0); }, signal)
        .then((r) => r.string(STRING_MAX), (e: unknown) => {
          // VIR_ERR_NO_DOMAIN_METADATA: nothing stored yet.
          if (e instanceof LibvirtError && e.libvirtCode === NO_DOMAIN_METADATA) return null;
          throw e;
        }),
      this.domCall(d, Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(XmlFlag.INACTIVE), signal).then((r) => r.string(STRING_MAX)),
    ]);
    const root = parseXmlTree(xml);
    const most = childrenNamed(root, 'maxMemory')[0] ?? childrenNamed(root, 'memory')[0];
    return { configured: meta === null ? null : parsePolicyMetadata(meta), mostKiB: sizeKiB(most, 'memory') };
  }

  /** What a shut-off guest will boot with, from its inactive XML. */
  async inactiveView(ref: string, signal?: AbortSignal): Promise<GuestView> {
    const d = await this.lookup(ref, signal);
    const xml = (await this.domCall(d, Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(XmlFlag.INACTIVE), signal)).string(STRING_MAX);
    const v = viewFromLibvirt({ name: d.name, uuid: uuidText(d.uuid), id: null, stats: {} }, memoryLayoutFromXml(xml), Date.now() / 1000);
    v.state = 'shutoff';
    v.monitor = 'down';
    return v;
  }

  // ---------------------------------------------------------------- watch

  /** The live watch of this host's guests: libvirt's events plus its bulk statistics (watch.ts). */
  watch(opts: WatchOptions = {}): DriverWatch {
    this.#watch ??= new LibvirtWatch(this, opts);
    return this.#watch;
  }
}

/** virtmem's memory layout of a libvirt guest (for the planner), device ids from libvirt's aliases. */
export function libvirtLayout(layout: LibvirtMemoryLayout): MemoryLayout {
  return {
    bootKiB: layout.bootKiB, dimmKiB: layout.dimmKiB,
    vmem: layout.virtioMem.map((v, i) => ({ id: v.alias ?? `vmem${i}`, sizeKiB: v.sizeKiB, blockKiB: v.blockKiB || VIRTIO_MEM_BLOCK_KIB, pluggedKiB: v.requestedKiB })),
  };
}

/** XDR remote_string: an optional string. */
function writeOptionalString(w: XdrWriter, s: string | null): void {
  if (s === null) { w.uint(0); return; }
  w.uint(1).string(s, STRING_MAX);
}

/** The same checks a native definition's policy gets (domain/validate-def.ts), on a libvirt guest. */
function checkPolicy(p: PolicyDef, mostKiB: number): void {
  try {
    validatePolicyDef(p, mostKiB);
  } catch (err) {
    throw invalidArg((err as Error).message, err);
  }
}

export { ListFlag };
