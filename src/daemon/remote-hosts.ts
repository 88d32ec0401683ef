/**
 * Several libvirt hosts watched side by side (`virtmem daemon --hosts FILE`): one watcher per
 * URI, each holding one LibvirtDriver connection, polling every domain's state and memory in
 * one bulk call (virConnectGetAllDomainStats) every 2 s. A host that does not answer is marked
 * down with the reason and reconnected with backoff; every call is bounded, and the watchers
 * run on their own timers, so a dead host never holds up the daemon's tick or the API.
 */
import { LibvirtDriver } from '../driver/libvirt/driver.js';
import { invalidArg } from '../domain/errors.js';
import { StatsType } from '../libvirt/protocol.js';
import { parseLibvirtUri, isNativeUri } from '../libvirt/uri.js';

const STATE_TEXT = ['no state', 'running', 'idle', 'paused', 'in shutdown', 'shutoff', 'crashed', 'pmsuspended'];

/** One domain of a remote host, sizes in bytes. */
export interface RemoteDomain {
  name: string;
  uuid: string;
  id: number | null;
  state: string;
  currentMemoryBytes: number | null;
  maxMemoryBytes: number | null;
  /** Balloon actual, for running (or paused) domains only. */
  balloonActualBytes: number | null;
  /** Guest statistics libvirt reported (absent when it reported none). */
  stats: Partial<Record<'availableBytes' | 'usableBytes' | 'unusedBytes' | 'diskCachesBytes' | 'rssBytes', number>>;
}

export interface HostDocument {
  uri: string;
  state: 'up' | 'down';
  /** Why the host is down (null when up). */
  reason: string | null;
  /** When the domains were last read (seconds since the epoch), null before the first read. */
  lastUpdateS: number | null;
  domains: RemoteDomain[];
}

/**
 * The URIs of a hosts file: one per line, `#` starts a comment, blank lines skipped. Pure.
 * @throws VirtError INVALID_ARG naming the file, line number and what is wrong.
 */
export function parseHostsFile(text: string, file: string): string[] {
  const uris: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) return;
    const where = `${file} line ${i + 1}`;
    if (isNativeUri(line)) throw invalidArg(`${where}: '${line}' is virtmem's own driver; the hosts file lists libvirt URIs`);
    try {
      parseLibvirtUri(line);
    } catch (err) {
      throw invalidArg(`${where}: ${(err as Error).message}`);
    }
    if (uris.includes(line)) throw invalidArg(`${where}: '${line}' is listed twice`);
    uris.push(line);
  });
  if (!uris.length) throw invalidArg(`${file} lists no libvirt URI`);
  return uris;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const kibToBytes = (v: unknown): number | null => { const n = num(v); return n === null ? null : Math.round(n) * 1024; };

/** A bulk-stats record to the domain model. Pure. */
export function remoteDomain(r: { name: string; uuid: string; id: number | null; stats: Record<string, number | string | boolean> }): RemoteDomain {
  const state = STATE_TEXT[num(r.stats['state.state']) ?? 0] ?? 'no state';
  const live = state === 'running' || state === 'paused';
  const stats: RemoteDomain['stats'] = {};
  for (const [field, key] of [['balloon.available', 'availableBytes'], ['balloon.usable', 'usableBytes'], ['balloon.unused', 'unusedBytes'],
    ['balloon.disk_caches', 'diskCachesBytes'], ['balloon.rss', 'rssBytes']] as const) {
    const b = kibToBytes(r.stats[field]);
    if (b !== null) stats[key] = b;
  }
  const current = kibToBytes(r.stats['balloon.current']);
  return {
    name: r.name, uuid: r.uuid, id: r.id, state,
    currentMemoryBytes: current, maxMemoryBytes: kibToBytes(r.stats['balloon.maximum']),
    balloonActualBytes: live ? current : null, stats,
  };
}

export interface HostWatcherOptions {
  /** Poll interval (default 2 s). */
  intervalMs?: number;
  /** Bound on connecting and on each call (default 5 s). */
  boundMs?: number;
  /** Longest wait between reconnect attempts (default 30 s). */
  maxBackoffMs?: number;
}

/** Watches one libvirt host. */
export class HostWatcher {
  readonly doc: HostDocument;
  #driver: LibvirtDriver | null = null;
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;
  #failures = 0;
  #abort = new AbortController();
  readonly #o: Required<HostWatcherOptions>;

  constructor(readonly uri: string, opts: HostWatcherOptions = {}) {
    this.#o = { intervalMs: opts.intervalMs ?? 2_000, boundMs: opts.boundMs ?? 5_000, maxBackoffMs: opts.maxBackoffMs ?? 30_000 };
    this.doc = { uri, state: 'down', reason: 'not connected yet', lastUpdateS: null, domains: [] };
  }

  start(): void {
    void this.#poll();
  }

  /** One poll, bounded; schedules the next. Never throws. */
  async #poll(): Promise<void> {
    this.#timer = null;
    if (this.#stopped) return;
    try {
      if (!this.#driver) {
        this.#driver = new LibvirtDriver(this.uri, {
          connectTimeoutMs: this.#o.boundMs, callTimeoutMs: this.#o.boundMs,
          keepaliveIntervalMs: this.#o.intervalMs, keepaliveCount: 3,
        });
      }
      const records = await this.#driver.allDomainStats(StatsType.STATE | StatsType.BALLOON, this.#abort.signal);
      const domains = records.map(remoteDomain);
      // Drivers whose bulk statistics have no balloon group (the test driver): dominfo instead.
      const driver = this.#driver;
      await Promise.all(domains.filter((x) => x.currentMemoryBytes === null).map(async (x) => {
        try {
          const i = await driver.info(x.uuid, this.#abort.signal);
          x.currentMemoryBytes = i.usedMemoryKiB * 1024;
          x.maxMemoryBytes = i.maxMemoryKiB * 1024;
          if (x.state === 'running' || x.state === 'paused') x.balloonActualBytes = x.currentMemoryBytes;
        } catch { /* gone meanwhile, or the driver has no dominfo: its memory stays unknown */ }
      }));
      this.doc.domains = domains.sort((a, b) => a.name.localeCompare(b.name));
      this.doc.state = 'up';
      this.doc.reason = null;
      this.doc.lastUpdateS = Date.now() / 1000;
      this.#failures = 0;
    } catch (err) {
      if (this.#stopped) return;
      this.doc.state = 'down';
      this.doc.reason = (err as Error).message || String(err);
      this.#failures++;
      // A fresh connection next time: the old one may be half dead.
      const d = this.#driver;
      this.#driver = null;
      void d?.close().catch(() => {});
    }
    if (this.#stopped) return;
    const wait = this.#failures === 0 ? this.#o.intervalMs
      : Math.min(this.#o.maxBackoffMs, this.#o.intervalMs * 2 ** Math.min(this.#failures - 1, 10));
    this.#timer = setTimeout(() => { void this.#poll(); }, wait);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#abort.abort();
    const d = this.#driver;
    this.#driver = null;
    await d?.close().catch(() => {});
  }
}

/** All watched hosts. */
export class RemoteHosts {
  readonly watchers: HostWatcher[];

  constructor(uris: readonly string[], opts: HostWatcherOptions = {}) {
    this.watchers = uris.map((u) => new HostWatcher(u, opts));
  }

  start(): void {
    for (const w of this.watchers) w.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.watchers.map((w) => w.stop()));
  }

  /** Snapshot of every host, in the file's order. */
  documents(): HostDocument[] {
    return this.watchers.map((w) => ({ ...w.doc, domains: w.doc.domains.map((d) => ({ ...d, stats: { ...d.stats } })) }));
  }
}
