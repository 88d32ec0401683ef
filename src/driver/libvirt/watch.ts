/**
 * The libvirt driver's watch (api.ts `DriverWatch`): every running guest of a libvirt host as
 * a live view, the same view the native watch keeps. libvirt's events (lifecycle, balloon
 * change, memory-device size change) arrive on the driver's connection and move the views at
 * once; on every daemon tick, and every `pollMs` (1 s) without one, one bulk call (virConnectGetAllDomainStats: state and balloon with the
 * guest's statistics) reads them all, and a guest's domain XML is read when it appears or its
 * devices or maximum change. Every call is bounded; a host that does not answer is 'down' with
 * the reason, its guests' views 'down' too, and it is reconnected with backoff. The watch runs
 * on its own timer, so a dead host never holds up anyone's tick.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { LibvirtDriver } from './driver.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { EventId, Proc, StatsType, STRING_MAX, readDomain, readTypedParam, paramNumber, uuidBytes, uuidText, writeDomain, type DomainEvent } from '../../libvirt/protocol.js';
import { XdrReader } from '../../libvirt/xdr.js';
import type { LibvirtClient } from '../../libvirt/client.js';
import { memoryLayoutFromXml, type LibvirtMemoryLayout } from './domain-xml.js';
import { sampleHostMemory, type HostMemory } from '../memory/host-memory.js';
import { applyBalloon, applyHostMemory, reportTimeS, setMonitor, setState, type GuestStatsView, type GuestView } from '../view.js';
import type { GuestHostMemory } from '../domain-memory-api.js';
import { hostMemoryFromXml, isLocalSystem, withLocalCounts } from './host-memory.js';
import { stateOf } from '../state-codes.js';
import type { DriverWatch, HostWatchState, WatchChange, WatchOptions } from '../watch.js';
import { Listeners } from '../../util/listeners.js';

/** VIR_DOMAIN_EVENT_STOPPED. */
const EVENT_STOPPED = 5;
const KIB = 1024;
const EMPTY_HOST: HostMemory = { memTotalBytes: null, memAvailableBytes: null, swapTotalBytes: null, swapFreeBytes: null, psi: null, sampledAtS: 0 };

/** libvirt's bulk statistics fields -> the view's guest statistics (KiB, counts, seconds). */
const STAT_FIELDS: ReadonlyArray<[field: string, key: Exclude<keyof GuestStatsView, 'lastUpdateS'>, kib: boolean]> = [
  ['balloon.available', 'availableBytes', true], ['balloon.usable', 'usableBytes', true], ['balloon.unused', 'unusedBytes', true],
  ['balloon.disk_caches', 'diskCachesBytes', true], ['balloon.swap_in', 'swapInBytes', true], ['balloon.swap_out', 'swapOutBytes', true],
  ['balloon.major_fault', 'majorFaults', false], ['balloon.minor_fault', 'minorFaults', false],
];

/** One bulk-statistics record. */
export interface BulkRecord {
  name: string;
  uuid: string;
  id: number | null;
  stats: Record<string, number | string | boolean>;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/**
 * A memory target this host's driver sent (KiB): the whole, the balloon's share of boot RAM and
 * each virtio-mem device's requested size, in the XML's device order.
 */
export interface SentTarget {
  uuid: string;
  targetKiB: number;
  balloonKiB: number;
  requestedKiB: number[];
}

/**
 * Whether a target sent earlier still describes a guest whose live XML is `layout`: libvirt
 * keeps each virtio-mem device's requested size in the XML, so a device someone else changed
 * since (virsh update-memory-device, setmem from another client) shows. A balloon target
 * another client set does not show anywhere. Pure.
 */
export function sentTargetHolds(sent: SentTarget, uuid: string, layout: LibvirtMemoryLayout): boolean {
  return sent.uuid === uuid && sent.requestedKiB.length === layout.virtioMem.length && layout.virtioMem.every((v, i) => v.requestedKiB === sent.requestedKiB[i]);
}

/**
 * A fresh view of a libvirt guest from its live XML, and the target virtmem last sent it if that
 * still holds. libvirt's live XML has no balloon target: its current memory is the size the
 * guest has (the balloon as QEMU last reported it, plus plugged virtio-mem), so without a sent
 * target the guest is taken to be heading where it is. Pure.
 */
export function viewFromLibvirt(rec: BulkRecord, layout: LibvirtMemoryLayout, nowS: number, sent: SentTarget | null = null): GuestView {
  const requested = layout.virtioMem.reduce((s, v) => s + v.requestedKiB, 0);
  const sizeBalloonKiB = Math.min(layout.bootKiB, Math.max(0, layout.currentMemoryKiB - layout.dimmKiB - requested));
  const target = sent && sentTargetHolds(sent, rec.uuid, layout) ? sent : null;
  const balloonTargetKiB = target ? target.balloonKiB : sizeBalloonKiB;
  return {
    name: rec.name, uuid: rec.uuid, id: rec.id, state: 'running', monitor: 'connected', staleSinceS: null, qemuPid: null,
    maxMemoryBytes: layout.memoryKiB * KIB, targetBytes: (target ? target.targetKiB : layout.currentMemoryKiB) * KIB, bootBytes: layout.bootKiB * KIB,
    hasBalloon: layout.balloonModel !== 'none', balloonAutodeflate: layout.balloonAutodeflate,
    // Until libvirt reports the balloon (drivers without bulk balloon statistics never do), the
    // guest is taken to be at the size its XML gives.
    balloonBytes: (layout.balloonModel !== 'none' ? sizeBalloonKiB : layout.bootKiB) * KIB,
    balloonTargetBytes: layout.balloonModel !== 'none' ? balloonTargetKiB * KIB : null,
    dimmBytes: layout.dimmKiB * KIB,
    devices: layout.virtioMem.map((v, i) => ({ id: v.alias ?? `vmem${i}`, model: 'virtio-mem', sizeBytes: v.sizeKiB * KIB, requestedBytes: v.requestedKiB * KIB, pluggedBytes: v.currentKiB * KIB })),
    statsPeriodS: layout.statsPeriodS, stats: {}, pressure: null, rssBytes: null, cpuTimeS: null, updatedAtS: nowS,
    counters: { balloonChanges: 0, deviceSizeChanges: 0, monitorTimeouts: 0, reconnects: 0 },
  };
}

/** A bulk record's balloon statistics, its time as libvirt says it (whole seconds). Pure. */
function bulkStats(rec: BulkRecord): GuestStatsView {
  const stats: GuestStatsView = {};
  for (const [field, key, kib] of STAT_FIELDS) {
    const x = num(rec.stats[field]);
    if (x !== null) stats[key] = kib ? x * KIB : x;
  }
  const at = num(rec.stats['balloon.last-update']);
  if (at !== null && at > 0) stats.lastUpdateS = at;
  return stats;
}

/**
 * libvirt's balloon size (QEMU's "actual", KiB: the guest's whole memory, balloon plus plugged
 * virtio-mem and DIMMs since libvirt 8) into a view, whose balloon is boot RAM only. Pure.
 */
function applyActual(v: GuestView, actualKiB: number, nowS: number): boolean {
  if (!v.hasBalloon) return false;
  const plugged = v.devices.reduce((s, d) => s + d.pluggedBytes, 0);
  return applyBalloon(v, Math.max(0, actualKiB * KIB - plugged - v.dimmBytes), nowS);
}

/**
 * A bulk-statistics record into a view: state, balloon, guest statistics, QEMU's RSS. libvirt's
 * balloon.current is the guest's whole memory (balloon plus plugged virtio-mem and DIMMs since
 * libvirt 8); the view's balloon is boot RAM only. `takenAtS`: when the guest's statistics
 * report was seen arriving (view.ts reportTimeS). `keepBalloon`: the view's balloon is newer
 * than libvirt's (read from QEMU a moment ago). Returns whether the view changed. Pure.
 */
export function applyBulk(v: GuestView, rec: BulkRecord, nowS: number, takenAtS?: number, keepBalloon = false): boolean {
  let changed = false;
  const st = stateOf(num(rec.stats['state.state']) ?? 0);
  changed = setState(v, st, nowS) || changed;
  if (v.id !== rec.id) { v.id = rec.id; changed = true; }
  const cur = num(rec.stats['balloon.current']);
  if (cur !== null && !keepBalloon) changed = applyActual(v, cur, nowS) || changed;
  const stats = bulkStats(rec);
  if (stats.lastUpdateS !== undefined) stats.lastUpdateS = reportTimeS(stats.lastUpdateS, takenAtS, v.stats.lastUpdateS);
  if (JSON.stringify(stats) !== JSON.stringify(v.stats)) { v.stats = stats; changed = true; }
  const rss = num(rec.stats['balloon.rss']);
  if (rss !== null) v.rssBytes = rss * KIB;
  const cpuNs = num(rec.stats['cpu.time']);
  if (cpuNs !== null) v.cpuTimeS = cpuNs / 1e9;
  if (changed) v.updatedAtS = nowS;
  return changed;
}

/** How long the daemon's tick waits for the poll it starts (a local bulk call takes milliseconds). */
const TICK_POLL_MS = 250;
/**
 * A tick that asks guests for a new statistics report (the policy's) gives them this long to
 * answer before it polls, and waits at most TICK_FRESH_MS in all.
 */
const FRESH_STATS_WAIT_MS = 100;
const TICK_FRESH_MS = 500;
/** ... polling again this often for the guests whose report has not come yet. */
const FRESH_STATS_POLL_MS = 50;
/**
 * After the driver read a guest's balloon from QEMU (takeBalloonActual), libvirt's own balloon
 * size in its bulk statistics is older for this long: it is QEMU's last size event, and QEMU
 * sends one at most once a second.
 */
const FRESH_BALLOON_HOLD_MS = 1_500;

export class LibvirtWatch implements DriverWatch {
  #state: HostWatchState = 'down';
  #reason: string | null = 'not connected yet';
  #lastUpdateS: number | null = null;
  #views = new Map<string, GuestView>();
  /** The target this driver last sent each guest (by name), while the live XML agrees with it. */
  #sent = new Map<string, SentTarget>();
  /** Guests whose XML must be read again (new, lifecycle event, device or maximum changed). */
  #dirty = new Set<string>();
  /** Each guest's last statistics report as polled, and the report a guest had when it was asked for a new one. */
  #report = new Map<string, string>();
  #asked = new Map<string, string | undefined>();
  /** When the driver last read each guest's balloon from QEMU (takeBalloonActual). */
  #balloonReadAtMs = new Map<string, number>();
  #listeners = new Listeners<WatchChange>();
  #host: HostMemory = EMPTY_HOST;
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;
  #failures = 0;
  #abort = new AbortController();
  #client: LibvirtClient | null = null;
  #unsubscribe: Array<() => void> = [];
  #polling: Promise<void> | null = null;
  readonly #o: Required<WatchOptions>;
  /** This machine's system libvirtd: its guests' processes and cgroups can be read here. */
  readonly #local: boolean;

  constructor(private readonly driver: LibvirtDriver, opts: WatchOptions = {}) {
    this.#o = { boundMs: opts.boundMs ?? 5_000, pollMs: opts.pollMs ?? 1_000, maxBackoffMs: opts.maxBackoffMs ?? 30_000 };
    this.#local = isLocalSystem(driver.target);
  }

  get state(): HostWatchState { return this.#state; }
  get reason(): string | null { return this.#reason; }
  get lastUpdateS(): number | null { return this.#lastUpdateS; }

  async start(): Promise<void> {
    await this.#poll();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#abort.abort();
    this.#detach();
    await this.#polling?.catch(() => {});
  }

  /**
   * The daemon's tick reads the host now (one bulk call), so the policy round after it sees
   * numbers as fresh as a native guest's, whose QEMU RSS is read on the tick: on the timer alone
   * they were up to a poll period old, and a libvirt guest's rise was seen a round later than a
   * native one's (an OOM kill at the start of the alloc ramp, 2026-12-05). Waits at most
   * TICK_POLL_MS, and not at all for a host that is down: a slow host holds up no one's tick,
   * and its own timer keeps polling it. The guests in `freshStats` (the policy's) are first
   * asked for a new statistics report at the period their live XML has (the driver's
   * requestGuestStats; a period of 0 is left alone) and given
   * FRESH_STATS_WAIT_MS to send it; such a tick waits at most TICK_FRESH_MS.
   */
  async tick(opts: { freshStats?: ReadonlySet<string> } = {}): Promise<void> {
    if (this.#stopped || this.#state !== 'up' || this.#failures > 0) return;
    const startMs = Date.now();
    const ask = [...(opts.freshStats ?? [])].map((n) => this.#views.get(n))
      .filter((v): v is GuestView => v !== undefined && v.state === 'running' && v.hasBalloon);
    const work = async (): Promise<void> => {
      if (ask.length > 0) {
        const signal = this.#abort.signal;
        await Promise.all(ask.map(async (v) => {
          const uuid = uuidBytes(v.uuid);
          if (!uuid) return;
          const d = { name: v.name, uuid, id: v.id ?? -1 };
          // The period the guest has now, not the view's: one set to 0 since (reports off) stays off.
          const periodS = await this.driver.liveStatsPeriodS(d, signal).catch(() => null);
          if (periodS === null) return;
          if (v.statsPeriodS !== periodS) { v.statsPeriodS = periodS; v.updatedAtS = Date.now() / 1000; }
          if (periodS <= 0) return;
          this.#asked.set(v.name, this.#report.get(v.name));
          await this.driver.requestGuestStats(d, periodS, signal).catch(() => {});
        }));
        await delay(FRESH_STATS_WAIT_MS, undefined, { signal }).catch(() => {});
        // A poll that began before the reports came would not show them.
        await this.#polling?.catch(() => {});
        await this.#poll();
        // A busy guest (one booting under TCG) may answer later: polled again until every guest
        // asked sent its report, within the tick's bound.
        while (ask.some((v) => this.#asked.has(v.name)) && Date.now() - startMs < TICK_FRESH_MS - FRESH_STATS_POLL_MS && !signal.aborted && !this.#stopped) {
          await delay(FRESH_STATS_POLL_MS, undefined, { signal }).catch(() => {});
          await this.#polling?.catch(() => {});
          await this.#poll();
        }
        return;
      }
      await this.#poll();
    };
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([work(), new Promise<void>((r) => { timer = setTimeout(r, ask.length > 0 ? TICK_FRESH_MS : TICK_POLL_MS); })]);
    clearTimeout(timer);
  }

  guests(): GuestView[] {
    return [...this.#views.values()].sort((a, b) => (a.id ?? Infinity) - (b.id ?? Infinity) || a.name.localeCompare(b.name));
  }

  guest(name: string): GuestView | null {
    return this.#views.get(name) ?? null;
  }

  host(): HostMemory {
    return this.#host;
  }

  async refresh(name: string): Promise<void> {
    if (!this.#views.has(name)) return;
    this.#dirty.add(name);
    await this.#poll();
  }

  /**
   * A target the driver just sent a running guest (setmem). libvirt's XML will never show the
   * balloon's part of it, and no event says a target was set: without this the view's target is
   * the size the guest had when its XML was last read, and a shrink under way looks like a guest
   * heading up (the policy then neither holds a resize already under way nor stops a shrink when
   * the guest starts to use memory again, as it does on native guests).
   */
  takeTarget(name: string, sent: SentTarget): void {
    this.#sent.set(name, sent);
    const v = this.#views.get(name);
    if (!v || v.uuid !== sent.uuid) return;
    v.targetBytes = sent.targetKiB * KIB;
    if (v.hasBalloon) v.balloonTargetBytes = sent.balloonKiB * KIB;
    sent.requestedKiB.forEach((r, i) => { const d = v.devices[i]; if (d) d.requestedBytes = r * KIB; });
    v.updatedAtS = Date.now() / 1000;
    this.#emit({ kind: 'memory', name });
  }

  /**
   * QEMU's balloon as the driver just read it (balloonActualKiB), fresher than libvirt's events
   * while it moves: a change the driver follows moves the view too.
   */
  takeBalloonActual(name: string, uuid: string, actualKiB: number): void {
    const v = this.#views.get(name);
    if (!v || v.uuid !== uuid) return;
    this.#balloonReadAtMs.set(name, Date.now());
    if (applyActual(v, actualKiB, Date.now() / 1000)) this.#emit({ kind: 'memory', name });
  }

  onChange(listener: (c: WatchChange) => void): () => void {
    return this.#listeners.add(listener);
  }

  #emit(c: WatchChange): void {
    this.#listeners.emit(c);
  }

  /** One poll (or the one under way); schedules the next. Never throws. */
  #poll(): Promise<void> {
    this.#polling ??= this.#pollOnce().finally(() => { this.#polling = null; this.#schedule(); });
    return this.#polling;
  }

  #schedule(): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    const wait = this.#failures === 0 ? this.#o.pollMs
      : Math.min(this.#o.maxBackoffMs, this.#o.pollMs * 2 ** Math.min(this.#failures - 1, 10));
    this.#timer = setTimeout(() => { void this.#poll(); }, wait);
    this.#timer.unref();
  }

  async #pollOnce(): Promise<void> {
    if (this.#stopped) return;
    const signal = this.#abort.signal;
    try {
      const c = await this.driver.connection(signal);
      if (c !== this.#client) await this.#attach(c);
      const records = await this.driver.allDomainStats(StatsType.STATE | StatsType.BALLOON | StatsType.CPU_TOTAL, signal);
      const nowS = Date.now() / 1000;
      const seen = new Set<string>();
      for (const rec of records) {
        const st = stateOf(num(rec.stats['state.state']) ?? 0);
        if (st === 'shutoff' || st === 'crashed' || st === 'no state') continue;
        seen.add(rec.name);
        let v = this.#views.get(rec.name);
        const max = num(rec.stats['balloon.maximum']);
        if (v && max !== null && max * KIB !== v.maxMemoryBytes) this.#dirty.add(rec.name);
        if (!v || this.#dirty.has(rec.name)) {
          const read = await this.#layout(c, rec, signal);
          if (!read) continue; // gone meanwhile
          const sent = this.#sent.get(rec.name) ?? null;
          if (sent && !sentTargetHolds(sent, rec.uuid, read.layout)) this.#sent.delete(rec.name);
          const fresh = viewFromLibvirt(rec, read.layout, nowS, sent);
          if (read.hostMemory) fresh.hostMemory = read.hostMemory;
          const keepBalloon = v !== undefined && this.#balloonReadRecently(rec.name);
          if (v) {
            Object.assign(v, { ...fresh, stats: v.stats, rssBytes: v.rssBytes, cpuTimeS: v.cpuTimeS, counters: v.counters, monitor: v.monitor, staleSinceS: v.staleSinceS, ...(keepBalloon ? { balloonBytes: v.balloonBytes } : {}) });
          } else {
            v = fresh;
            this.#views.set(rec.name, v);
          }
          this.#dirty.delete(rec.name);
          applyBulk(v, rec, nowS, this.#takenAt(rec, nowS), keepBalloon);
          this.#emit({ kind: 'state', name: rec.name });
        } else if (applyBulk(v, rec, nowS, this.#takenAt(rec, nowS), this.#balloonReadRecently(rec.name))) {
          this.#emit({ kind: 'memory', name: rec.name });
        }
        if (setMonitor(v, 'connected', nowS)) this.#emit({ kind: 'state', name: rec.name });
        // This machine's own libvirtd: what the host counts for the guest (KSM, cgroup usage).
        if (v.hostMemory && this.#local && applyHostMemory(v, await withLocalCounts(rec.name, v.hostMemory), nowS)) this.#emit({ kind: 'memory', name: rec.name });
      }
      for (const [name, v] of this.#views) {
        if (!seen.has(name)) this.#gone(name, v, nowS);
      }
      this.#host = this.driver.target.transport === 'unix' ? await sampleHostMemory() : await this.driver.nodeMemory(signal);
      this.#lastUpdateS = nowS;
      this.#failures = 0;
      this.#setHost('up', null);
    } catch (err) {
      if (this.#stopped) return;
      this.#failures++;
      this.#detach();
      // A fresh connection next time: the old one may be half dead.
      await this.driver.dropConnection();
      this.#setHost('down', (err as Error).message || String(err));
    }
  }

  /** The live XML's memory facts of one guest (and what it fixes of its memory on the host); null when it went away meanwhile. */
  async #layout(c: LibvirtClient, rec: BulkRecord, signal: AbortSignal): Promise<{ layout: LibvirtMemoryLayout; hostMemory: GuestHostMemory | null } | null> {
    try {
      const d = await this.driver.lookup(rec.uuid, signal);
      const xml = new XdrReader(await c.call(Proc.DOMAIN_GET_XML_DESC, (w) => { writeDomain(w, d); w.uint(0); }, { signal, timeoutMs: this.#o.boundMs })).string(STRING_MAX);
      return { layout: memoryLayoutFromXml(xml), hostMemory: await hostMemoryFromXml(xml) };
    } catch (err) {
      if (err instanceof LibvirtError && err.code === 'NO_DOMAIN') return null;
      if ((err as { code?: string }).code === 'NO_DOMAIN') return null;
      throw err;
    }
  }

  #balloonReadRecently(name: string): boolean {
    const at = this.#balloonReadAtMs.get(name);
    return at !== undefined && Date.now() - at < FRESH_BALLOON_HOLD_MS;
  }

  /** `nowS` for a guest asked for a report whose report changed since: it arrived since the ask. */
  #takenAt(rec: BulkRecord, nowS: number): number | undefined {
    const key = JSON.stringify(bulkStats(rec));
    const asked = this.#asked.has(rec.name) && this.#asked.get(rec.name) !== key;
    this.#report.set(rec.name, key);
    if (!asked) return undefined;
    this.#asked.delete(rec.name);
    return nowS;
  }

  #gone(name: string, v: GuestView, nowS: number): void {
    this.#views.delete(name);
    this.#report.delete(name);
    this.#asked.delete(name);
    this.#balloonReadAtMs.delete(name);
    this.#sent.delete(name);
    this.#dirty.delete(name);
    setState(v, 'shutoff', nowS);
    setMonitor(v, 'down', nowS);
    this.#emit({ kind: 'gone', name, view: v });
  }

  #setHost(state: HostWatchState, reason: string | null): void {
    const changed = this.#state !== state || this.#reason !== reason;
    this.#state = state;
    this.#reason = reason;
    if (state === 'down') {
      const nowS = Date.now() / 1000;
      for (const [name, v] of this.#views) if (setMonitor(v, 'down', nowS)) this.#emit({ kind: 'state', name });
    }
    if (changed) this.#emit({ kind: 'host' });
  }

  /** Subscribe to the events that move views, on a new connection. */
  async #attach(c: LibvirtClient): Promise<void> {
    this.#detach();
    this.#client = c;
    const ids = await Promise.all([EventId.LIFECYCLE, EventId.BALLOON_CHANGE, EventId.MEMORY_DEVICE_SIZE_CHANGE, EventId.METADATA_CHANGE]
      .map((id) => c.registerEvent(id, { signal: this.#abort.signal, timeoutMs: this.#o.boundMs })));
    this.#unsubscribe.push(c.onEvent((e) => this.#onEvent(e)));
    this.#unsubscribe.push(() => { for (const id of ids) void c.deregisterEvent(id).catch(() => undefined); });
    this.#unsubscribe.push(c.onClose((err) => {
      if (this.#stopped) return;
      this.#detach();
      this.#failures++;
      this.#setHost('down', err.message);
      this.#schedule();
    }));
  }

  #detach(): void {
    for (const f of this.#unsubscribe.splice(0)) f();
    this.#client = null;
  }

  #onEvent(e: DomainEvent): void {
    const name = e.dom.name;
    const v = this.#views.get(name);
    const nowS = Date.now() / 1000;
    switch (e.kind) {
      case 'lifecycle':
        if (e.event === EVENT_STOPPED && v) this.#gone(name, v, nowS);
        else { this.#dirty.add(name); void this.#poll(); }
        return;
      case 'balloon-change': {
        if (!v) return;
        v.counters.balloonChanges++;
        if (applyActual(v, e.actualKiB, nowS)) this.#emit({ kind: 'memory', name });
        return;
      }
      case 'metadata-change':
        // virtmem's policy settings live in the metadata: the policy reads them again.
        this.#emit({ kind: 'settings', name });
        return;
      case 'memory-device-size-change': {
        if (!v) return;
        v.counters.deviceSizeChanges++;
        const d = v.devices.find((x) => x.id === e.alias);
        if (!d || d.pluggedBytes === e.sizeKiB * KIB) return;
        d.pluggedBytes = e.sizeKiB * KIB;
        v.updatedAtS = nowS;
        this.#emit({ kind: 'memory', name });
      }
    }
  }
}

/** A bulk-statistics answer to records. */
export function readBulkStats(payload: Buffer): BulkRecord[] {
  const r = new XdrReader(payload);
  return r.array((x) => ({ dom: readDomain(x), params: x.array(readTypedParam) })).map(({ dom, params }) => ({
    name: dom.name, uuid: uuidText(dom.uuid), id: dom.id >= 0 ? dom.id : null,
    stats: Object.fromEntries(params.map((p) => [p.field, p.value.type === 'string' || p.value.type === 'boolean' ? p.value.value : paramNumber(p.value)!])),
  }));
}
