/**
 * What every part of the native driver shares: the state directory, the definition store, the
 * per-domain job lock, the state of a domain as the host shows it, and monitor sessions (on a
 * connection the driver's watch holds, or a short one of their own). libvirt's
 * qemu_driver.c keeps the same things on its driver object; here they are one small class the
 * lifecycle (process.ts) and memory (memory.ts) parts take.
 */
import { unlink } from 'node:fs/promises';
import { basename } from 'node:path';
import type { QmpClient } from '../../qmp/index.js';
import type { DomainDef } from '../../domain/definition.js';
import { VirtError } from '../../domain/errors.js';
import { DefinitionStore } from '../../domain/store.js';
import { validateDomainName, isUuid } from '../../domain/name.js';
import { ensurePrivateDir } from '../../util/atomic-file.js';
import { StatePaths, defaultStateDir, type RunPaths } from './paths.js';
import { acquireLock, type HeldLock } from './lock.js';

import { observe, writeRunRecord, type Observed, type RunningRecord } from './run-status.js';
import { withMonitor, onHeldMonitor } from './monitor.js';
import type { StateReason } from '../api.js';
import type { GuestView } from '../view.js';
import { removeDomainCgroup } from './cgroup.js';

export interface NativeOptions {
  /** State directory; default from $VIRTMEM_STATE_DIR or the per-user location. */
  stateDir?: string;
  /** Bound on waiting for another invocation's job lock (default 30 s). */
  lockTimeoutMs?: number;
  /** Bound on connecting to a domain's monitor (default 10 s). */
  monitorTimeoutMs?: number;
  /** Built-in guest directory override. */
  guestDir?: string;
}

/** What a long-lived watch (native/watch.ts) offers the driver's calls while it runs. */
export interface HeldMonitors {
  /** A connected client for `name`, or null to open a short session instead. */
  held(name: string): QmpClient | null;
  /** The guest's live view, kept current from QEMU's events, or null. */
  view(name: string): GuestView | null;
  /** The host's MemAvailable as last sampled (KiB), or null. */
  hostAvailableKiB(): number | null;
  /**
   * A balloon-only change was sent (fast path): the view takes the new target at once, and the
   * run record is brought up to date a moment later, off the caller's path.
   */
  noteTarget(name: string, currentKiB: number): void;
}

export class NativeContext {
  readonly paths: StatePaths;
  readonly store: DefinitionStore;
  /** Set by the driver's watch while it runs (native/watch.ts). */
  held: HeldMonitors | null = null;
  /** This process's callers of each domain's lock, in order (lockDomain). */
  #queues = new Map<string, Promise<void>>();
  #dirReady = false;

  constructor(readonly opts: NativeOptions = {}) {
    this.paths = new StatePaths(opts.stateDir ?? defaultStateDir());
    this.store = DefinitionStore.for(this.paths);
  }

  /**
   * Resolve a user reference (name, uuid or running id) to a definition.
   * @throws VirtError NO_DOMAIN
   */
  async lookup(ref: string): Promise<DomainDef> {
    if (/^[0-9]+$/.test(ref)) {
      const id = Number(ref);
      for (const def of await this.store.all()) {
        const o = await this.observe(def.name);
        if (o.state !== 'shutoff' && o.record.id === id) return def;
      }
    }
    if (isUuid(ref)) {
      const wanted = ref.toLowerCase().replace(/-/g, '');
      const def = (await this.store.all()).find((d) => d.uuid.replace(/-/g, '') === wanted);
      if (def) return def;
    }
    let name: string | null = null;
    try {
      name = validateDomainName(ref);
    } catch {
      name = null; // not a possible name: it can't exist, and must never reach a file path
    }
    const def = name ? await this.store.get(name) : null;
    if (!def) throw new VirtError('NO_DOMAIN', `failed to get domain '${ref}'`);
    return def;
  }

  /**
   * The definition as it is now, for a read-modify-write under the domain's lock: another
   * process may have changed or removed it since the caller looked it up.
   * @throws VirtError NO_DOMAIN when it was undefined meanwhile
   */
  async current(name: string, ref: string = name): Promise<DomainDef> {
    const def = await this.store.get(name);
    if (!def) throw new VirtError('NO_DOMAIN', `failed to get domain '${ref}'`);
    return def;
  }

  observe(name: string): Promise<Observed> {
    return observe(this.paths.run(name));
  }

  /** Persist the stopped state of a domain whose QEMU went away, and clean its sockets. */
  async reconcile(name: string, o: Observed): Promise<void> {
    if (o.state === 'shutoff' && o.exited) await this.markStopped(this.paths.run(name), o.reason);
  }

  async markStopped(run: RunPaths, reason: StateReason): Promise<void> {
    await writeRunRecord(run, { version: 1, phase: 'shutoff', reason, stoppedAt: new Date().toISOString() });
    await Promise.all([run.qmp, run.qmpWatch, run.console, run.agent, run.pidfile].map((p) => unlink(p).catch(() => {})));
    // The domain's cgroup (memtune, restrictive placement) goes with its QEMU.
    await removeDomainCgroup(this.paths.root, basename(run.dir));
  }

  #lockOpts(signal?: AbortSignal): { timeoutMs: number; signal?: AbortSignal } {
    return { timeoutMs: this.opts.lockTimeoutMs ?? 30_000, ...(signal ? { signal } : {}) };
  }

  /** Run `fn` under the domain's job lock (bounded wait). @throws VirtError TIMEOUT, ABORTED */
  async withDomainLock<T>(name: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const lock = await this.lockDomain(name, signal);
    try {
      return await fn();
    } finally {
      await lock.release();
    }
  }

  /**
   * Take the domain's job lock; the caller releases it (a wait may end outside it). Callers in
   * this process queue in order and the next one takes the lock the moment it is released (a
   * daemon serving many requests for one guest); other processes meet at the lock file.
   */
  async lockDomain(name: string, signal?: AbortSignal): Promise<HeldLock> {
    const before = this.#queues.get(name) ?? Promise.resolve();
    let done!: () => void;
    const mine = new Promise<void>((r) => { done = r; });
    const tail = before.then(() => mine);
    this.#queues.set(name, tail);
    let file: HeldLock | null = null;
    try {
      await waitTurn(before, this.opts.lockTimeoutMs ?? 30_000, signal);
      if (!this.#dirReady) { await ensurePrivateDir(this.paths.locksDir); this.#dirReady = true; }
      file = await acquireLock(this.paths.lock(name), this.#lockOpts(signal));
    } catch (err) {
      done();
      if (this.#queues.get(name) === tail) this.#queues.delete(name);
      throw err;
    }
    const held = file;
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        try {
          await held.release();
        } finally {
          done();
          if (this.#queues.get(name) === tail) this.#queues.delete(name);
        }
      },
    };
  }

  /** The running record of a domain. @throws VirtError OPERATION_INVALID when not running. */
  async requireRunning(name: string): Promise<RunningRecord> {
    const o = await this.observe(name);
    if (o.state === 'shutoff') {
      await this.reconcile(name, o);
      throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: domain is not running');
    }
    return o.record;
  }

  /**
   * A monitor session on a running domain: the watch's held connection when there is one,
   * else a short session of its own. QMP failures come out as VirtError (monitor.ts).
   */
  monitor<T>(name: string, fn: (c: QmpClient) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const held = this.held?.held(name);
    if (held) return onHeldMonitor(name, held, fn);
    return withMonitor(name, this.paths.run(name).qmp, fn, {
      connectTimeoutMs: this.opts.monitorTimeoutMs ?? 10_000,
      ...(signal ? { signal } : {}),
    });
  }
}

/** Waits for the caller before in this process, bounded like the lock itself. */
function waitTurn(before: Promise<void>, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new VirtError('TIMEOUT', 'Timed out during operation: cannot acquire state change lock (held by this process)')), timeoutMs);
    const onAbort = (): void => { clearTimeout(timer); reject(new VirtError('ABORTED', 'operation aborted while waiting for the domain lock')); };
    signal?.addEventListener('abort', onAbort, { once: true });
    void before.then(() => { clearTimeout(timer); signal?.removeEventListener('abort', onAbort); resolve(); });
  });
}
