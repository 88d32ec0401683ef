/**
 * What an automatic memory policy sees and decides. A policy is a pure function from a snapshot
 * of every guest and the host to actions (new memory targets) with the reason for each, so it
 * is unit-tested without QEMU and the daemon's loop only gathers snapshots and applies actions.
 * Sizes are KiB (the driver's unit); rates are per second.
 */

/** Per-guest policy settings (domain/policy.ts). */
export type { PolicySettings } from '../domain/policy.js';
import type { PolicySettings } from '../domain/policy.js';
import type { MemorySplit } from '../domain/memory.js';

/** What the guest itself reported (virtio-balloon statistics), and derived rates. */
export interface GuestSignals {
  /** Guest MemAvailable (free + reclaimable cache). */
  availableKiB: number;
  /**
   * Guest MemTotal, from the same sample: what the guest could see when it was taken (blocks
   * still being onlined or offlined are not in it, unlike in the host's count of its size).
   */
  totalKiB?: number;
  /** Guest free memory (MemFree). */
  unusedKiB: number;
  /** Page cache the guest could drop. */
  diskCachesKiB: number;
  /** Major page faults per second since the last snapshot (refaults: the working set does not fit). */
  majorFaultsPerS: number;
  /** Swap-in per second. */
  swapInKiBPerS: number;
  /** The guest's own memory stall (PSI "some" avg10, percent), where it reports one. */
  stallPct?: number;
  /** Age of these statistics. */
  ageS: number;
}

export interface GuestSnapshot {
  name: string;
  settings: PolicySettings;
  /** Memory the guest has now (balloon over boot RAM + DIMMs + plugged virtio-mem). */
  currentKiB: number;
  /** The guest's maximum (what setmem may go up to). */
  maxKiB: number;
  /** null when the guest has not reported statistics (no balloon driver, or none yet). */
  signals: GuestSignals | null;
  /**
   * QEMU's resident memory, read by the host at `nowS` (fresher than the guest's statistics;
   * with free page reporting it follows what the guest has touched).
   */
  rssKiB?: number;
  /**
   * When `rssKiB` was read (seconds, the snapshot's clock); absent: at `nowS`. A host polled
   * less often than the policy runs (libvirt's bulk statistics) hands the same reading to
   * several rounds: a rate over the rounds' time would read one poll's growth as a burst and the
   * next as none.
   */
  rssAtS?: number;
  /** What the guest was last asked to go to; below `currentKiB` while a shrink is under way. */
  targetKiB?: number;
  /** Balloon pages the guest's MemTotal still counts (with deflate-on-oom the guest keeps them in MemTotal). */
  inflatedInTotalKiB?: number;
  /** What the balloon holds of boot RAM now (absent: the guest has no balloon). */
  balloonHeldKiB?: number;
  /** How much more it can take (domain/memory.ts balloonKeepKiB): reclaim beyond that unplugs. Absent: nothing plugged. */
  balloonRoomKiB?: number;
  /** virtio-mem memory plugged now. */
  pluggedKiB?: number;
}

export interface HostSnapshot {
  memTotalKiB: number;
  memAvailableKiB: number;
  /** Host memory stall (PSI some avg10, percent), if known. */
  stallPct?: number;
  /**
   * The most all policy-managed guests together should hold; null: no budget, the policy keeps
   * host MemAvailable above its reserve instead.
   */
  guestBudgetKiB: number | null;
}

export interface Snapshot {
  /** Seconds since an arbitrary origin, for rate limits and cool-downs. */
  nowS: number;
  host: HostSnapshot;
  guests: GuestSnapshot[];
}

/** One resize to apply: `setmem name targetKiB`. */
export interface PolicyAction {
  name: string;
  fromKiB: number;
  targetKiB: number;
  /** Why, in one sentence a person can check against the numbers. */
  reason: string;
  /**
   * How the hypervisor splits it between balloon and virtio-mem (driver/memory/plan.ts):
   * 'balloon-first' takes memory with the balloon and gives it with plugs; 'plain' (absent) the
   * plain split, which also turns what the balloon holds into unplugged blocks at the same size.
   */
  split?: MemorySplit;
}

/** A guest the policy looked at and left alone, with why (for `policy show`). */
export interface PolicyHold {
  name: string;
  reason: string;
}

export interface Decision {
  actions: PolicyAction[];
  holds: PolicyHold[];
}

/**
 * A policy: `decide` is pure given its own state object, which it may update (cool-downs,
 * pressure memory). `periodS` is how often it wants to run.
 */
export interface Policy<State = unknown> {
  readonly name: string;
  readonly periodS: number;
  initialState(): State;
  decide(snapshot: Snapshot, state: State): Decision;
}

export const MiB = 1024;
export const GiB = 1024 * 1024;

/**
 * Which decision function the daemon's loop runs: virtmem's own (default), or the ports of
 * Proxmox's AutoBalloon and oVirt MoM's balloon rules (for comparison on the same guests, and
 * for people who want the behaviour they know).
 */
export type PolicyEngine = 'virtmem' | 'proxmox' | 'mom';
export const POLICY_ENGINES: readonly PolicyEngine[] = ['virtmem', 'proxmox', 'mom'];

/**
 * How virtmem's policy gives memory back on a guest with virtio-mem plugged: 'balloon-first'
 * (default) inflates the balloon and unplugs only a guest that is quiet or has just freed memory,
 * because Linux < 6.5 guests stall every grow behind an unplug that meets an allocation
 * (virtmem-policy.ts; OOM kills in the benchmark, docs/benchmarks.md); 'unplug' unplugs at
 * once, and gives back more on guests whose kernel does not stall.
 */
export type PolicyReclaim = 'unplug' | 'balloon-first';
export const POLICY_RECLAIMS: readonly PolicyReclaim[] = ['unplug', 'balloon-first'];
export const DEFAULT_POLICY_RECLAIM: PolicyReclaim = 'balloon-first';
