/**
 * The native driver's watch (api.ts `DriverWatch`): one GuestWatcher per running guest of the
 * state directory, each holding the guest's watch monitor (qmp-watch.sock, reserved for a
 * long-lived watcher so short calls on qmp.sock are never blocked) and following QEMU's events;
 * the host's memory sampled every tick. While it runs, the driver's short calls go on the held
 * monitors (one round trip on an open connection instead of a new session).
 */
import { withAutoPlacement } from './memory-start.js';
import { readdir, stat } from 'node:fs/promises';
import { validateDomainName } from '../../domain/name.js';
import { sampleHostMemory, type HostMemory } from '../memory/host-memory.js';
import type { DomainDef } from '../../domain/definition.js';
import type { GuestView } from '../view.js';
import type { DriverWatch, HostWatchState, WatchChange, WatchOptions } from '../watch.js';
import type { QmpClient } from '../../qmp/index.js';
import type { NativeContext } from './context.js';
import { MONITOR_ANSWER_MS } from '../bounds.js';
import { GuestWatcher, type WatchChange as GuestChange } from './guest-watcher.js';
import { observe, readRunRecord, runRecordVersion, writeRunRecord } from './run-status.js';
import { Listeners } from '../../util/listeners.js';
import { guestHostMemory } from './host-memory-facts.js';

/** How long after a fast-path change its run record is written (coalescing a burst of changes). */
const TARGET_WRITE_DELAY_MS = 250;

const EMPTY_HOST: HostMemory = { memTotalBytes: null, memAvailableBytes: null, swapTotalBytes: null, swapFreeBytes: null, psi: null, sampledAtS: 0 };

export class NativeWatch implements DriverWatch {
  readonly state: HostWatchState = 'up';
  readonly reason = null;
  #watchers = new Map<string, GuestWatcher>();
  #listeners = new Listeners<WatchChange>();
  #host: HostMemory = EMPTY_HOST;
  #stopped = false;
  #lastUpdateS: number | null = null;
  /** Each watched guest's definition file as last seen (mtime): a change means new policy settings. */
  #defSeen = new Map<string, number>();
  readonly #boundMs: number;

  constructor(private readonly ctx: NativeContext, opts: WatchOptions = {}) {
    this.#boundMs = opts.boundMs ?? MONITOR_ANSWER_MS;
  }

  get lastUpdateS(): number | null {
    return this.#lastUpdateS;
  }

  async start(): Promise<void> {
    this.ctx.held = {
      held: (name: string): QmpClient | null => this.#watchers.get(name)?.held() ?? null,
      view: (name: string): GuestView | null => this.#watchers.get(name)?.model ?? null,
      live: (name: string): DomainDef | null => this.#watchers.get(name)?.live ?? null,
      hostAvailableKiB: (): number | null => (this.#host.memAvailableBytes === null ? null : Math.floor(this.#host.memAvailableBytes / 1024)),
      noteTarget: (name: string, currentKiB: number, version: string | null): void => this.#noteTarget(name, currentKiB, version),
    };
    this.#host = await sampleHostMemory();
    await this.#discover();
  }

  async stop(): Promise<void> {
    await this.#flushTargets();
    this.#stopped = true;
    if (this.ctx.held) this.ctx.held = null;
    await Promise.all([...this.#watchers.values()].map((w) => w.stop()));
    this.#watchers.clear();
  }

  async tick(opts: { freshStats?: ReadonlySet<string> } = {}): Promise<void> {
    if (this.#stopped) return;
    this.#host = await sampleHostMemory();
    await this.#discover();
    // Each guest's tick is bounded by its own monitor bound; one hung guest holds up no other.
    await Promise.all([...this.#watchers.values()].map((w) => w.tick(opts.freshStats?.has(w.name) ?? false)));
    await this.#checkDefinitions();
    this.#lastUpdateS = Date.now() / 1000;
  }

  guests(): GuestView[] {
    return [...this.#watchers.values()].map((w) => w.model).sort((a, b) => (a.id ?? Infinity) - (b.id ?? Infinity) || a.name.localeCompare(b.name));
  }

  guest(name: string): GuestView | null {
    return this.#watchers.get(name)?.model ?? null;
  }

  host(): HostMemory {
    return this.#host;
  }

  /** Re-reads what a change left behind: the run record's targets and QEMU's numbers. */
  async refresh(name: string): Promise<void> {
    const w = this.#watchers.get(name);
    if (!w) return;
    // A fast-path target still waiting for its write goes to the record first: it is newer.
    if (this.#pendingTargets.has(name)) await this.#flushTargets();
    const rec = await readRunRecord(this.ctx.paths.run(name));
    if (rec && rec.phase === 'running') w.takeDefinition(rec);
    await w.refresh();
  }

  onChange(listener: (c: WatchChange) => void): () => void {
    return this.#listeners.add(listener);
  }

  #emit(c: WatchChange): void {
    this.#listeners.emit(c);
  }

  /** Targets sent on the fast path, not yet in the run record: the value, and the record's version then. */
  #pendingTargets = new Map<string, { kib: number; version: string | null }>();
  #targetTimer: NodeJS.Timeout | null = null;

  #noteTarget(name: string, currentKiB: number, version: string | null): void {
    const w = this.#watchers.get(name);
    if (w) w.takeTarget(currentKiB);
    // A later change of the same guest replaces the value, with the record as it saw it.
    this.#pendingTargets.set(name, { kib: currentKiB, version });
    this.#targetTimer ??= setTimeout(() => { this.#targetTimer = null; void this.#flushTargets(); }, TARGET_WRITE_DELAY_MS);
  }

  /**
   * Brings the run records up to date with the targets sent on the fast path, under each
   * domain's job lock; a record another process wrote after the note keeps its newer target.
   */
  async #flushTargets(): Promise<void> {
    if (this.#targetTimer) { clearTimeout(this.#targetTimer); this.#targetTimer = null; }
    const pending = [...this.#pendingTargets];
    this.#pendingTargets.clear();
    await Promise.all(pending.map(async ([name, t]) => {
      try {
        await this.ctx.withDomainLock(name, async () => {
          const run = this.ctx.paths.run(name);
          // Written by another change since the note (this process's full path, or another
          // process): that one is newer, its target stays.
          if (runRecordVersion(run) !== t.version) return;
          const rec = await readRunRecord(run);
          if (!rec || rec.phase !== 'running') return;
          rec.live = { ...rec.live, memory: { ...rec.live.memory, currentKiB: t.kib } };
          await writeRunRecord(run, rec);
        });
      } catch { /* the record keeps its older target; the next change writes it */ }
    }));
  }

  /** One stat per guest: a definition written since the last look (policy set) is a settings change. */
  async #checkDefinitions(): Promise<void> {
    await Promise.all([...this.#watchers.keys()].map(async (name) => {
      const m = (await stat(this.ctx.paths.definition(name)).catch(() => null))?.mtimeMs ?? 0;
      const seen = this.#defSeen.get(name);
      this.#defSeen.set(name, m);
      if (seen !== undefined && seen !== m) this.#emit({ kind: 'settings', name });
    }));
  }

  /** Attach to every running guest not yet watched. */
  async #discover(): Promise<void> {
    const names = await readdir(this.ctx.paths.runDir).catch(() => [] as string[]);
    await Promise.all(names.map(async (name) => {
      if (this.#watchers.has(name)) return;
      let paths;
      try { paths = this.ctx.paths.run(validateDomainName(name)); } catch { return; }
      const o = await observe(paths);
      if (o.state === 'shutoff' || this.#watchers.has(name) || this.#stopped) return;
      const w = new GuestWatcher(paths, o.record, (w2, what) => this.#onGuest(w2, what), {
        boundMs: this.#boundMs, reconnectMs: 1_000,
        readHostMemory: (live, pid) => guestHostMemory(this.ctx.paths.root, name, withAutoPlacement(live, o.record.autoNodes), pid),
        tryJobLock: () => this.ctx.tryLockDomain(name),
      });
      this.#watchers.set(name, w);
      w.start();
      this.#emit({ kind: 'state', name });
    }));
  }

  #onGuest(w: GuestWatcher, what: GuestChange): void {
    if (what === 'gone') {
      if (this.#watchers.get(w.name) === w) this.#watchers.delete(w.name);
      this.#defSeen.delete(w.name);
      void w.stop();
      this.#emit({ kind: 'gone', name: w.name, view: w.model });
      return;
    }
    this.#emit({ kind: what, name: w.name });
  }
}
