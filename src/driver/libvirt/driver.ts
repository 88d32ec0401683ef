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
import { memoryLayoutFromXml, virtioMemUpdateXml, type LibvirtMemoryLayout } from './domain-xml.js';
import { XdrReader } from '../../libvirt/xdr.js';
import { parseLibvirtUri, type LibvirtUri } from '../../libvirt/uri.js';
import { planMemory, orderSteps, type MemoryLayout } from '../memory/plan.js';
import { growthRefusal, hostMemAvailableKiB } from '../memory/guards.js';
import { VirtError, invalidArg } from '../../domain/errors.js';
import type { AffectFlags, DomainInfo, DomainSummary, SetMemoryOptions, SetMemoryResult } from '../native/driver.js';
import type { DefineResult, HypervisorDriver, StartResult } from '../api.js';
import type { MemoryStats } from '../memory/stats.js';
import type { DomainState, StateReason } from '../native/run-status.js';
import { parseXmlTree, childrenNamed } from '../../domain/xml-tree.js';
import { LibvirtNodeMemory } from './node.js';

/** virDomainState -> virsh's words. virtmem's native states are a subset of these. */
const STATE_TEXT = ['no state', 'running', 'idle', 'paused', 'in shutdown', 'shutoff', 'crashed', 'pmsuspended'];
/** virsh's words for state reasons, per state. */
const REASONS: Record<number, string[]> = {
  1: ['unknown', 'booted', 'migrated', 'restored', 'from snapshot', 'unpaused', 'migration canceled', 'save canceled', 'event wakeup', 'crashed', 'post-copy'],
  2: ['unknown'],
  3: ['unknown', 'user', 'migrating', 'saving', 'dumping', 'I/O error', 'watchdog', 'from snapshot', 'shutting down', 'creating snapshot', 'api error', 'starting up', 'post-copy', 'post-copy failed'],
  4: ['unknown', 'user'],
  5: ['unknown', 'shutdown', 'destroyed', 'crashed', 'migrated', 'saved', 'failed', 'from snapshot', 'daemon'],
  6: ['unknown', 'panicked'],
  7: ['unknown'],
};
/** VIR_DOMAIN_EVENT_STOPPED: the lifecycle event a finished shutdown sends. */
const EVENT_STOPPED = 5;

/**
 * libvirt's state as the neutral type. libvirt has states virtmem's own driver never reports
 * ('in shutdown', 'crashed', ...); they pass through with virsh's wording.
 */
function stateOf(n: number): DomainState {
  return (STATE_TEXT[n] ?? 'no state') as DomainState;
}
function reasonOf(state: number, reason: number): StateReason {
  return (REASONS[state]?.[reason] ?? 'unknown') as StateReason;
}

const affectBits = (f: AffectFlags): number => (f.live ? AffectFlag.LIVE : 0) | (f.config ? AffectFlag.CONFIG : 0);

export interface LibvirtDriverOptions extends ClientOptions {
  /** Bound on connecting (default 30 s). */
  connectTimeoutMs?: number;
}

export class LibvirtDriver implements HypervisorDriver {
  readonly uri: LibvirtUri;
  private client: Promise<LibvirtClient> | null = null;
  /** The host's memory: src/driver/libvirt/node.ts, on this driver's connection. */
  readonly node = new LibvirtNodeMemory(this);

  constructor(uri: string, private readonly opts: LibvirtDriverOptions = {}) {
    this.uri = parseLibvirtUri(uri);
  }

  /** The connection, opened on first use and reopened after it died. */
  connection(signal?: AbortSignal): Promise<LibvirtClient> {
    if (this.client) {
      const c = this.client;
      return c.then((cl) => (cl.connectionState === 'open' ? cl : ((this.client = null), this.connection(signal))));
    }
    const p = LibvirtClient.connect(this.uri, { ...this.opts, timeoutMs: this.opts.connectTimeoutMs ?? 30_000, ...(signal ? { signal } : {}) });
    this.client = p;
    p.catch(() => { if (this.client === p) this.client = null; });
    return p;
  }

  async close(): Promise<void> {
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
   * StatsType (default state + balloon: what a daemon watching a host polls). Values keep
   * libvirt's field names ("balloon.current", KiB as libvirt reports them).
   */
  async allDomainStats(groups: number = StatsType.STATE | StatsType.BALLOON, signal?: AbortSignal): Promise<Array<{ name: string; uuid: string; id: number | null; stats: Record<string, number | string | boolean> }>> {
    const c = await this.connection(signal);
    const r = new XdrReader(await c.call(Proc.CONNECT_GET_ALL_DOMAIN_STATS, (w) => w.array([], () => undefined).uint(groups).uint(0), { signal }));
    return r.array((x) => ({ dom: readDomain(x), params: x.array(readTypedParam) })).map(({ dom, params }) => ({
      name: dom.name, uuid: uuidText(dom.uuid), id: dom.id >= 0 ? dom.id : null,
      stats: Object.fromEntries(params.map((p) => [p.field, p.value.type === 'string' || p.value.type === 'boolean' ? p.value.value : paramNumber(p.value)!])),
    }));
  }

  /**
   * A domain's memory tunables (virsh memtune): hard_limit, soft_limit, swap_hard_limit in KiB;
   * libvirt's "unlimited" (VIR_DOMAIN_MEMORY_PARAM_UNLIMITED) comes back as null.
   */
  async memoryParameters(ref: string, flags: AffectFlags & { signal?: AbortSignal } = {}): Promise<Record<string, number | null>> {
    const d = await this.lookup(ref, flags.signal);
    // libvirt's two-step: ask how many, then ask for them.
    const count = (await this.domCall(d, Proc.DOMAIN_GET_MEMORY_PARAMETERS, (w) => w.int(0).uint(affectBits(flags)), flags.signal));
    count.array(readTypedParam, 16);
    const n = count.int();
    const r = await this.domCall(d, Proc.DOMAIN_GET_MEMORY_PARAMETERS, (w) => w.int(n).uint(affectBits(flags)), flags.signal);
    const params = r.array(readTypedParam, 16);
    const UNLIMITED = 9007199254740991;
    return Object.fromEntries(params.map((p) => { const v = paramNumber(p.value); return [p.field, v === null || v >= UNLIMITED ? null : v]; }));
  }

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
    const layout = memoryLayoutFromXml(xmlR.string(STRING_MAX));
    const running = d.id >= 0;
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

  async setMaxMemory(ref: string, kib: number, flags: AffectFlags & { signal?: AbortSignal } = {}): Promise<{ live: boolean; config: boolean }> {
    if (kib <= 0) throw invalidArg('memory in virDomainSetMemoryFlags must not be zero');
    await this.domCall(ref, Proc.DOMAIN_SET_MEMORY_FLAGS, (w) => w.uhyper(kib).uint(AffectFlag.MEM_MAXIMUM | affectBits(flags)), flags.signal);
    return { live: !!flags.live, config: !!flags.config };
  }

  async setStatsPeriod(ref: string, periodS: number, flags: AffectFlags & { signal?: AbortSignal } = {}): Promise<{ live: boolean; config: boolean }> {
    if (!Number.isInteger(periodS) || periodS < 0 || periodS > 0x7fff_ffff) throw invalidArg(`invalid statistics period ${periodS}`);
    await this.domCall(ref, Proc.DOMAIN_SET_MEMORY_STATS_PERIOD, (w) => w.int(periodS).uint(affectBits(flags)), flags.signal);
    return { live: !!flags.live, config: !!flags.config };
  }

  async memoryStats(ref: string, opts: { signal?: AbortSignal } = {}): Promise<MemoryStats> {
    const d = await this.lookup(ref, opts.signal);
    const [r, xml] = await Promise.all([
      this.domCall(d, Proc.DOMAIN_MEMORY_STATS, (w) => w.uint(MEMORY_STATS_MAX).uint(0), opts.signal),
      this.domCall(d, Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(0), opts.signal),
    ]);
    const stats = r.array((x) => ({ tag: x.int(), val: x.uhyper() }), 1024)
      .map((s) => ({ name: MEMORY_STAT_NAMES[s.tag] ?? `tag${s.tag}`, value: s.val }));
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
   * are rate-limited) until the guest has the target, bounded by timeoutMs and stallMs.
   */
  async setMemory(ref: string, kib: number, opts: SetMemoryOptions = {}): Promise<SetMemoryResult> {
    const signal = opts.signal;
    const c = await this.connection(signal);
    const d = await this.lookup(ref, signal);
    const running = d.id >= 0;
    let flags: AffectFlags;
    if (opts.current) flags = running ? { live: true } : { config: true };
    else if (!opts.live && !opts.config) flags = { live: true };
    else flags = { live: !!opts.live, config: !!opts.config };
    // libvirt's client library refuses 0 before sending anything; so do we, in its words.
    if (kib <= 0) throw invalidArg('memory in virDomainSetMemoryFlags must not be zero');
    if (opts.wait && !flags.live) throw invalidArg('--wait needs a live change: the domain is not running or --config was given alone');
    if (flags.live && !running) throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: domain is not running');

    const xml = running ? (await this.domCall(d, Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(0), signal)).string(STRING_MAX) : null;
    const layout = xml ? memoryLayoutFromXml(xml) : null;
    const infoNow = running ? readDomainInfo(await this.domCall(d, Proc.DOMAIN_GET_INFO, null, signal)) : null;
    if (flags.live && infoNow && !opts.force && kib < infoNow.memoryKiB) {
      const inUse = await this.guestInUseKiB(d, signal);
      if (inUse !== null && kib < inUse) {
        throw invalidArg(`refusing to shrink to ${kib} KiB: the guest is using ${inUse} KiB (MemTotal - MemAvailable from its statistics); use --force to shrink anyway`);
      }
    }

    if (!flags.live || !layout || layout.virtioMem.length === 0) {
      // Balloon only (or config only): libvirt's own semantics and checks.
      if (flags.live && infoNow && !opts.force && kib > infoNow.memoryKiB) {
        const refusal = growthRefusal(kib - infoNow.memoryKiB, this.uri.transport === 'unix' ? await hostMemAvailableKiB() : null);
        if (refusal) throw invalidArg(refusal);
      }
      return this.runAndWait(c, d, opts, flags, kib, async () => {
        await this.domCall(d, Proc.DOMAIN_SET_MEMORY_FLAGS, (w) => w.uhyper(kib).uint(affectBits(flags)), signal);
      }, null, layout);
    }

    // virtio-mem: plan the split, order the steps, run them through libvirt.
    const ml: MemoryLayout = {
      bootKiB: layout.bootKiB, dimmKiB: layout.dimmKiB,
      vmem: layout.virtioMem.map((v, i) => ({ id: v.alias ?? `vmem${i}`, sizeKiB: v.sizeKiB, blockKiB: v.blockKiB || 2048, pluggedKiB: v.requestedKiB })),
    };
    const total = layout.bootKiB + layout.dimmKiB + layout.virtioMem.reduce((s, v) => s + v.sizeKiB, 0);
    if (kib > total) throw invalidArg(`invalid argument: cannot set memory higher than max memory (${kib} KiB > ${total} KiB)`);
    if (kib <= layout.dimmKiB) throw invalidArg(`invalid argument: ${kib} KiB is not above the guest's DIMM memory`);
    const plan = planMemory(ml, kib);
    const nowTotal = infoNow?.memoryKiB ?? 0;
    if (!opts.force && kib > nowTotal) {
      const refusal = growthRefusal(kib - nowTotal, this.uri.transport === 'unix' ? await hostMemAvailableKiB() : null);
      if (refusal) throw invalidArg(refusal);
    }
    const steps = orderSteps(ml, layout.currentMemoryKiB - layout.virtioMem.reduce((s, v) => s + v.requestedKiB, 0) - layout.dimmKiB, plan);
    return this.runAndWait(c, d, opts, flags, kib, async () => {
      for (const s of steps) {
        if (s.kind === 'balloon') {
          await this.domCall(d, Proc.DOMAIN_SET_MEMORY_FLAGS, (w) => w.uhyper(s.targetKiB).uint(AffectFlag.LIVE), signal);
        } else {
          const dev = layout.virtioMem[s.index]!;
          await this.domCall(d, Proc.DOMAIN_UPDATE_DEVICE_FLAGS, (w) => w.string(virtioMemUpdateXml(dev, s.requestedKiB), STRING_MAX).uint(AffectFlag.LIVE), signal);
        }
      }
      if (flags.config) {
        await this.domCall(d, Proc.DOMAIN_SET_MEMORY_FLAGS, (w) => w.uhyper(kib).uint(AffectFlag.CONFIG), signal);
      }
    }, plan.requestedKiB, layout);
  }

  /**
   * What the guest uses (its MemTotal - MemAvailable: libvirt's "available" - "usable"), or
   * null when it has not reported statistics (period off, no balloon driver): no refusal then.
   */
  private async guestInUseKiB(d: WireDomain, signal: AbortSignal | undefined): Promise<number | null> {
    const r = await this.domCall(d, Proc.DOMAIN_MEMORY_STATS, (w) => w.uint(MEMORY_STATS_MAX).uint(0), signal);
    const stats = new Map(r.array((x) => [MEMORY_STAT_NAMES[x.int()] ?? '', x.uhyper()] as const, 1024));
    const total = stats.get('available');
    const usable = stats.get('usable');
    if (!stats.get('last_update') || total === undefined || usable === undefined) return null;
    return total - usable;
  }

  private async runAndWait(
    c: LibvirtClient, d: WireDomain, opts: SetMemoryOptions, flags: AffectFlags, targetKiB: number, act: () => Promise<void>,
    plannedKiB: number[] | null, layout: LibvirtMemoryLayout | null,
  ): Promise<SetMemoryResult> {
    const result = (actualKiB: number | null, ok: boolean): SetMemoryResult => ({ targetKiB, actualKiB, reached: ok, live: !!flags.live, config: !!flags.config });
    if (!opts.wait) {
      await act();
      return result(null, false);
    }
    const key = d.uuid.toString('hex');
    const startedAt = Date.now();
    const timeoutMs = opts.timeoutMs ?? 300_000;
    const stallMs = opts.stallMs ?? 10_000;
    let wake: (() => void) | null = null;
    const poke = (): void => { const w = wake; wake = null; w?.(); };
    // Events only wake the loop; the sizes are always read back from libvirt, whose "memory"
    // (virDomainGetInfo) is the balloon plus plugged virtio-mem since libvirt 8.
    const off = c.onEvent((e) => {
      if (e.dom.uuid.toString('hex') === key && (e.kind === 'balloon-change' || e.kind === 'memory-device-size-change')) poke();
    });
    let dead: LibvirtError | null = null;
    const offClose = c.onClose((err) => { dead = err; poke(); });
    const ids: number[] = [];
    try {
      ids.push(await c.registerEvent(EventId.BALLOON_CHANGE, { signal: opts.signal }));
      if (layout?.virtioMem.length) ids.push(await c.registerEvent(EventId.MEMORY_DEVICE_SIZE_CHANGE, { signal: opts.signal }));
      let now = await this.liveSizes(d, layout, opts.signal);
      const startKiB = now.totalKiB;
      let lastMoveAt = Date.now();
      await act();
      for (;;) {
        if (dead) throw dead;
        if (opts.signal?.aborted) throw new VirtError('ABORTED', 'setmem --wait aborted');
        const next = await this.liveSizes(d, layout, opts.signal);
        if (next.totalKiB !== now.totalKiB || next.pluggedKiB.some((p, i) => p !== now.pluggedKiB[i])) lastMoveAt = Date.now();
        now = next;
        opts.onProgress?.({ actualKiB: now.totalKiB, targetKiB, startKiB, elapsedMs: Date.now() - startedAt });
        const devicesDone = plannedKiB === null || now.pluggedKiB.every((p, i) => p === plannedKiB[i]);
        if (now.totalKiB === targetKiB && devicesDone) return result(now.totalKiB, true);
        if (Date.now() - startedAt > timeoutMs) throw new VirtError('TIMEOUT', `domain '${d.name}' did not reach ${targetKiB} KiB within ${Math.round(timeoutMs / 1000)} s (now ${now.totalKiB} KiB)`);
        if (Date.now() - lastMoveAt > stallMs) throw new VirtError('NOT_REACHED', `domain '${d.name}' stopped at ${now.totalKiB} KiB of ${targetKiB} KiB (no progress for ${Math.round(stallMs / 1000)} s); the guest may be unable to give up more memory`);
        // QEMU rate-limits its balloon events: a slow poll backs them up.
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => { wake = null; resolve(); }, 1_000);
          wake = () => { clearTimeout(t); resolve(); };
        });
      }
    } finally {
      off();
      offClose();
      for (const id of ids) void c.deregisterEvent(id).catch(() => undefined);
    }
  }

  /** libvirt's live total and each virtio-mem device's plugged size (one round trip). */
  private async liveSizes(d: WireDomain, layout: LibvirtMemoryLayout | null, signal: AbortSignal | undefined): Promise<{ totalKiB: number; pluggedKiB: number[] }> {
    const [infoR, xmlR] = await Promise.all([
      this.domCall(d, Proc.DOMAIN_GET_INFO, null, signal),
      layout?.virtioMem.length ? this.domCall(d, Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(0), signal) : Promise.resolve(null),
    ]);
    const info = readDomainInfo(infoR);
    const plugged = xmlR ? memoryLayoutFromXml(xmlR.string(STRING_MAX)).virtioMem.map((v) => v.currentKiB) : [];
    return { totalKiB: info.memoryKiB, pluggedKiB: plugged };
  }
}

export { ListFlag };
