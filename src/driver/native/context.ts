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
import { acquireLock, tryLock, type HeldLock } from './lock.js';
import { observe, writeRunRecord, type Observed, type RunningRecord } from './run-status.js';
import { withMonitor, onHeldMonitor } from './monitor.js';
import { readProcStat } from './host-process.js';
import type { StateReason } from '../api.js';
import { LOCK_WAIT_MS, MONITOR_ANSWER_MS, MONITOR_CONNECT_MS } from '../bounds.js';
import type { GuestView } from '../view.js';
import { removeDomainCgroup } from './cgroup.js';

export interface NativeOptions {
  /** State directory; default from $VIRTMEM_STATE_DIR or the per-user location. */
  stateDir?: string;
  /** Bound on waiting for another invocation's job lock (default LOCK_WAIT_MS, driver/bounds.ts). */
  lockTimeoutMs?: number;
  /** Bound on getting a domain's short-call monitor (default MONITOR_CONNECT_MS). */
  monitorTimeoutMs?: number;
  /** Bound on each answer of a domain's monitor on a short session (default MONITOR_ANSWER_MS). */
  answerTimeoutMs?: number;
  /** Built-in guest directory override. */
  guestDir?: string;
}

/** What a long-lived watch (native/watch.ts) offers the driver's calls while it runs. */
export interface HeldMonitors {
  /** A connected client for `name`, or null to open a short session instead. */
  held(name: string): QmpClient | null;
  /** The guest's live view, kept current from QEMU's events, or null. */
  view(name: string): GuestView | null;
  /** The guest's live definition as the watch last took it (run record, hot-plugs), or null. */
  live(name: string): DomainDef | null;
  /** The host's MemAvailable as last sampled (KiB), or null. */
  hostAvailableKiB(): number | null;
  /**
   * A balloon-only change was sent (fast path): the view takes the new target at once, and the
   * run record is brought up to date a moment later, off the caller's path, unless another
   * write replaced `recordVersion` (the record as it was under the lock, run-status.ts) meanwhile.
   */
  noteTarget(name: string, currentKiB: number, recordVersion: string | null): void;
}

export class NativeContext {
  readonly paths: StatePaths;
  readonly store: DefinitionStore;
  /** Set by the driver's watch while it runs (native/watch.ts). */
  held: HeldMonitors | null = null;
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
    // Read from the file, not the store's cache: the cache knows a version by inode, mtime and
    // size, and ext4 reuses a freed inode and stamps mtime with a coarse clock, so a version
    // another process wrote within the same tick could pass for the cached one.
    const def = await new DefinitionStore(this.paths).get(name);
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
    return { timeoutMs: this.opts.lockTimeoutMs ?? LOCK_WAIT_MS, ...(signal ? { signal } : {}) };
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

  /** The locks' directory exists (made once per process). */
  async #locksDir(): Promise<void> {
    if (!this.#dirReady) { await ensurePrivateDir(this.paths.locksDir); this.#dirReady = true; }
  }

  /**
   * Take the domain's job lock; the caller releases it (a wait may end outside it). Callers of
   * this process and of others are served in the order they came (lock.ts), within one bound.
   * @throws VirtError TIMEOUT, ABORTED (lock.ts)
   */
  async lockDomain(name: string, signal?: AbortSignal): Promise<HeldLock> {
    await this.#locksDir();
    return acquireLock(this.paths.lock(name), this.#lockOpts(signal));
  }

  /** The domain's job lock if it is free now, else null (never waits: lock.ts tryLock). */
  async tryLockDomain(name: string): Promise<HeldLock | null> {
    await this.#locksDir();
    return tryLock(this.paths.lock(name));
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
   * else a short session of its own. Short sessions of every virtmem process take the guest's
   * monitor in turn, first come first served (a fair lock beside the job lock): QEMU's own
   * queue of waiting connections holds two and refuses the rest, and a monitor serves one
   * client at a time. Getting the monitor is bounded by MONITOR_CONNECT_MS, each answer by
   * MONITOR_ANSWER_MS; a time-out says when QEMU's process is stopped. QMP failures come out as
   * VirtError (monitor.ts).
   * @throws VirtError TIMEOUT naming the monitor and the bound, and what monitorError gives
   */
  async monitor<T>(name: string, fn: (c: QmpClient) => Promise<T>, signal?: AbortSignal): Promise<T> {
    try {
      const held = this.held?.held(name);
      if (held) return await onHeldMonitor(name, held, fn);
      const connectMs = this.opts.monitorTimeoutMs ?? MONITOR_CONNECT_MS;
      const deadline = Date.now() + connectMs;
      await this.#locksDir();
      const turn = await acquireLock(this.paths.monitorLock(name), {
        timeoutMs: connectMs, what: `the monitor of domain '${name}'`, ...(signal ? { signal } : {}),
      });
      try {
        return await withMonitor(name, this.paths.run(name).qmp, fn, {
          connectTimeoutMs: Math.max(1, deadline - Date.now()), connectBoundMs: connectMs,
          answerTimeoutMs: this.opts.answerTimeoutMs ?? MONITOR_ANSWER_MS,
          ...(signal ? { signal } : {}),
        });
      } finally {
        await turn.release();
      }
    } catch (err) {
      throw await this.#withProcessState(name, err);
    }
  }

  /** A monitor time-out, with what the host says of QEMU's process when it is stopped or gone. */
  async #withProcessState(name: string, err: unknown): Promise<unknown> {
    if (!(err instanceof VirtError) || err.code !== 'TIMEOUT') return err;
    const rec = (await this.observe(name)).record;
    if (!rec || rec.phase !== 'running') return err;
    const st = await readProcStat(rec.pid);
    const why = !st || st.state === 'Z' || st.state === 'X' ? `QEMU (pid ${rec.pid}) has exited`
      : st.state === 'T' ? `QEMU (pid ${rec.pid}) is stopped (SIGSTOP; SIGCONT resumes it)`
        : st.state === 't' ? `QEMU (pid ${rec.pid}) is stopped by a debugger`
          : null;
    return why ? new VirtError('TIMEOUT', `${err.message}; ${why}`, { cause: err.cause ?? err }) : err;
  }
}

