/**
 * A driver's watch on its host (api.ts `HypervisorDriver.watch`): the live view of every
 * running guest, kept current from the hypervisor's events (QEMU's on the monitors the native
 * watch holds; libvirt's balloon, memory-device-size and lifecycle events plus its bulk
 * statistics on a libvirt host), the host's own memory, and one stream of changes. The daemon
 * builds everything it serves on this; it never talks to QEMU or libvirt itself.
 *
 * Every question a watch asks is bounded (`boundMs`); a guest or host that does not answer is
 * marked stale or down with the reason and holds up nothing else.
 */
import type { GuestView } from './view.js';

export type { HostMemory, PressureLine } from './memory/host-memory.js';
import type { HostMemory } from './memory/host-memory.js';

export interface WatchOptions {
  /** Bound on every question to a guest or the host, and on connecting (default 3 s). */
  boundMs?: number;
  /** How often a host without events for everything is polled (libvirt's bulk statistics; default 1 s). */
  pollMs?: number;
  /** Longest wait between reconnection attempts to a host that went away (default 30 s). */
  maxBackoffMs?: number;
}

/** Whether the watch reaches its host. */
export type HostWatchState = 'up' | 'down';

/** What changed. */
export type WatchChange =
  /** A guest's memory numbers changed (its view holds them). */
  | { kind: 'memory'; name: string }
  /** A guest appeared, or its state or the watch's line to it changed. */
  | { kind: 'state'; name: string }
  /** A guest's policy settings changed (its definition, or its libvirt metadata). */
  | { kind: 'settings'; name: string }
  /** A guest stopped running (or was undefined): its view is gone from `guests()`. */
  | { kind: 'gone'; name: string; view: GuestView }
  /** The host went up or down. */
  | { kind: 'host' };

export interface DriverWatch {
  /** Whether the host answers, and why not when it does not. */
  readonly state: HostWatchState;
  readonly reason: string | null;
  /** When the guests were last read in full (seconds since the epoch), null before the first read. */
  readonly lastUpdateS: number | null;
  /** Finds the running guests and starts following them; resolves after the first look (bounded). */
  start(): Promise<void>;
  /** Stops following (the guests keep running). Resolves when every connection is closed. */
  stop(): Promise<void>;
  /**
   * Periodic work, about once a second: new guests, each guest's bounded questions (statistics
   * when their period came round, a stale guest asked again), the host's memory. Never waits
   * on a hung guest; never throws. `freshStats`: guests the caller acts on next (the policy's):
   * where the driver can, they are asked for a new statistics report now, and the tick waits
   * a short bound for it, so the caller reads the guest as it is, not as it was up to a period
   * ago.
   */
  tick(opts?: { freshStats?: ReadonlySet<string> }): Promise<void>;
  /** Running (and paused) guests, by id then name. */
  guests(): GuestView[];
  guest(name: string): GuestView | null;
  /** The host's memory as last sampled. */
  host(): HostMemory;
  /** Asks again now for one guest (after a change someone made), bounded. */
  refresh(name: string): Promise<void>;
  onChange(listener: (c: WatchChange) => void): () => void;
}
