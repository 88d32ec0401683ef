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
import { withLock, acquireLock, type HeldLock } from './lock.js';
import { observe, writeRunRecord, type Observed, type RunningRecord } from './run-status.js';
import { withMonitor, onHeldMonitor } from './monitor.js';
import type { StateReason } from '../api.js';
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

/** Monitor connections a long-lived watch holds open, by domain name. */
export interface HeldMonitors {
  /** A connected client for `name`, or null to open a short session instead. */
  held(name: string): QmpClient | null;
}

export class NativeContext {
  readonly paths: StatePaths;
  readonly store: DefinitionStore;
  /** Set by the driver's watch while it runs (native/watch.ts). */
  held: HeldMonitors | null = null;

  constructor(readonly opts: NativeOptions = {}) {
    this.paths = new StatePaths(opts.stateDir ?? defaultStateDir());
    this.store = new DefinitionStore(this.paths);
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
    await ensurePrivateDir(this.paths.locksDir);
    return withLock(this.paths.lock(name), fn, this.#lockOpts(signal));
  }

  /** Take the domain's job lock; the caller releases it (a wait may end outside it). */
  async lockDomain(name: string, signal?: AbortSignal): Promise<HeldLock> {
    await ensurePrivateDir(this.paths.locksDir);
    return acquireLock(this.paths.lock(name), this.#lockOpts(signal));
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
