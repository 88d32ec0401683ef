/**
 * The policy loop the daemon runs: each period it turns the daemon's live model of every guest
 * and the host into a policy Snapshot, asks the (pure) policy, applies the actions through the
 * callbacks it is given (the daemon's own setmem path), and keeps the last decision per guest
 * with its reason for `policy show`, the API and the dashboard. A failed resize is recorded as
 * that guest's decision, never thrown: one guest's trouble does not stop the loop.
 */
import type { Decision, GuestSignals, GuestSnapshot, Policy, PolicySettings, Snapshot } from './types.js';
import { freshStallPct } from '../driver/view.js';
import { balloonKeepKiB, type MemorySplit } from '../domain/memory.js';

/** The fields of the daemon's guest model the loop reads (structurally: src/daemon/guest-model.ts). */
export interface PolicyGuestInput {
  name: string;
  state: string;
  monitor: string;
  maxMemoryBytes: number;
  bootBytes: number;
  hasBalloon: boolean;
  /** Deflate on guest OOM (the guest's MemTotal keeps counting ballooned pages). */
  balloonAutodeflate?: boolean;
  balloonBytes: number;
  dimmBytes: number;
  devices: ReadonlyArray<{ pluggedBytes: number }>;
  /** The guest's own memory stall (PSI), where it reports one; `atS` on the host clock. */
  pressure?: { somePct: number; atS: number } | null;
  /** QEMU's resident size, read every daemon tick. */
  rssBytes: number | null;
  /** The total last asked for (setmem): below the current size while a shrink is under way. */
  targetBytes: number;
  /** virtio-balloon statistics: available = the guest's MemTotal, usable = MemAvailable, unused = MemFree. */
  stats: { availableBytes?: number; usableBytes?: number; unusedBytes?: number; diskCachesBytes?: number; majorFaults?: number; swapInBytes?: number; lastUpdateS?: number };
}

export interface PolicyHostInput {
  memTotalBytes: number | null;
  memAvailableBytes: number | null;
  /** PSI memory "some" avg10, percent. */
  stallPct?: number | null;
  /**
   * When the host's watch last read its guests (seconds, the loop's clock): the time of their
   * `rssBytes`. Absent: read this round (the native watch reads every tick; a libvirt host is
   * polled on its own timer).
   */
  readAtS?: number | null;
}

/** What the loop last did for one guest. */
export interface LastPolicyDecision {
  at: string;
  action: 'resize' | 'hold' | 'failed';
  fromKiB?: number;
  targetKiB?: number;
  reason: string;
  /**
   * How a resize ended: 'pending' while the guest moves, 'reached', 'not reached' (the guest
   * stopped short; `reason` says where and why), 'refused' (nothing changed).
   */
  outcome?: 'pending' | 'reached' | 'not reached' | 'refused';
}

export type PolicyMode = 'off' | 'per-guest' | 'all';

export interface PolicyLoopOptions {
  policy: Policy<unknown>;
  /** 'all' manages every running guest; 'per-guest' only those whose definition turns it on. */
  mode: PolicyMode;
  /** The most all managed guests together may hold; null: keep host MemAvailable above a reserve. */
  guestBudgetKiB: number | null;
  /** A guest's settings (its driver's; the caller may cache them until `forget`). */
  settings(name: string): Promise<PolicySettings>;
  /** Drop what `settings` cached for a guest (its settings changed, or it went away). */
  forget?(name: string): void;
  /**
   * Resize one guest (the daemon's setmem: balloon and virtio-mem as the planner splits it).
   * Resolves once the change is sent; `outcome` settles when the guest got there (null) or
   * stopped short (why). Rejects when the change is refused (nothing changed).
   */
  apply(name: string, targetKiB: number, split: MemorySplit): Promise<{ outcome: Promise<string | null> }>;
  /** Persist/publish a guest's last decision. */
  record(name: string, d: LastPolicyDecision): Promise<void> | void;
}

/** Counters of a guest between rounds, for rates. */
interface Previous { majorFaults: number; swapInBytes: number; atS: number }

/** One guest of the snapshot, from the model and the previous statistics sample. Pure. */
export function guestSnapshot(g: PolicyGuestInput, settings: PolicySettings, prev: Previous | undefined, nowS: number, rssAtS: number = nowS): GuestSnapshot {
  const plugged = g.devices.reduce((s, d) => s + d.pluggedBytes, 0);
  const currentKiB = Math.floor(((g.hasBalloon ? g.balloonBytes : g.bootBytes) + g.dimmBytes + plugged) / 1024);
  const st = g.stats;
  let signals: GuestSignals | null = null;
  if (st.usableBytes !== undefined && st.lastUpdateS !== undefined) {
    const dt = prev && st.lastUpdateS > prev.atS ? st.lastUpdateS - prev.atS : 0;
    const rate = (now: number | undefined, before: number | undefined): number =>
      (dt > 0 && now !== undefined && before !== undefined ? Math.max(0, now - before) / dt : 0);
    signals = {
      availableKiB: Math.floor(st.usableBytes / 1024),
      unusedKiB: Math.floor((st.unusedBytes ?? st.usableBytes) / 1024),
      diskCachesKiB: Math.floor((st.diskCachesBytes ?? 0) / 1024),
      majorFaultsPerS: rate(st.majorFaults, prev?.majorFaults),
      swapInKiBPerS: rate(st.swapInBytes, prev?.swapInBytes) / 1024,
      ageS: Math.max(0, nowS - st.lastUpdateS),
    };
    if (st.availableBytes !== undefined) signals.totalKiB = Math.floor(st.availableBytes / 1024);
    const stall = freshStallPct(g.pressure, nowS);
    if (stall !== undefined) signals.stallPct = stall;
  }
  const snap: GuestSnapshot = { name: g.name, currentKiB, maxKiB: Math.floor(g.maxMemoryBytes / 1024), settings, signals };
  if (g.rssBytes !== null) { snap.rssKiB = Math.floor(g.rssBytes / 1024); snap.rssAtS = rssAtS; }
  snap.targetKiB = Math.floor(g.targetBytes / 1024);
  if (g.devices.length > 0) snap.pluggedKiB = Math.floor(plugged / 1024);
  if (g.hasBalloon) {
    snap.balloonHeldKiB = Math.max(0, Math.floor((g.bootBytes - g.balloonBytes) / 1024));
    // Only where reclaim beyond the balloon would unplug: a guest with nothing plugged has only the balloon.
    if (plugged > 0) snap.balloonRoomKiB = Math.max(0, Math.floor(g.balloonBytes / 1024) - balloonKeepKiB(Math.floor(g.bootBytes / 1024)));
    if (g.balloonAutodeflate) snap.inflatedInTotalKiB = snap.balloonHeldKiB;
  }
  return snap;
}

export class PolicyLoop {
  readonly opts: PolicyLoopOptions;
  readonly last = new Map<string, LastPolicyDecision>();
  #state: unknown;
  #prev = new Map<string, Previous>();
  #nextS = 0;
  #running = false;
  #managed = new Set<string>();

  constructor(opts: PolicyLoopOptions) {
    this.opts = opts;
    this.#state = opts.policy.initialState();
  }

  /** The guests the last round managed (settings on, or mode 'all'). */
  get managed(): ReadonlySet<string> {
    return this.#managed;
  }

  /**
   * Run a round if one is due (the daemon calls this from its tick). Guests that are not running
   * or whose monitor is stale are left out. Never throws.
   */
  async tick(guests: readonly PolicyGuestInput[], host: PolicyHostInput, nowS: number): Promise<Decision | null> {
    if (this.opts.mode === 'off' || this.#running || nowS < this.#nextS) return null;
    this.#running = true;
    // A little early is fine: the daemon's ticks jitter, and a round due at 1001.0 must not wait
    // for the tick after the one at 1000.998.
    this.#nextS = nowS + this.opts.policy.periodS * 0.9;
    try {
      const snapshots: GuestSnapshot[] = [];
      const managed = new Set<string>();
      for (const g of guests) {
        if (g.state !== 'running' || g.monitor !== 'connected') continue;
        let settings: PolicySettings;
        try {
          settings = await this.opts.settings(g.name);
        } catch {
          continue; // undefined meanwhile
        }
        if (this.opts.mode === 'all') settings = { ...settings, enabled: true };
        if (settings.enabled) managed.add(g.name);
        snapshots.push(guestSnapshot(g, settings, this.#prev.get(g.name), nowS, host.readAtS ?? nowS));
        const st = g.stats;
        if (st.lastUpdateS !== undefined && st.lastUpdateS !== this.#prev.get(g.name)?.atS) {
          this.#prev.set(g.name, { majorFaults: st.majorFaults ?? 0, swapInBytes: st.swapInBytes ?? 0, atS: st.lastUpdateS });
        }
      }
      this.#managed = managed;
      const snapshot: Snapshot = {
        nowS,
        host: {
          memTotalKiB: Math.floor((host.memTotalBytes ?? 0) / 1024),
          memAvailableKiB: Math.floor((host.memAvailableBytes ?? 0) / 1024),
          ...(host.stallPct != null ? { stallPct: host.stallPct } : {}),
          guestBudgetKiB: this.opts.guestBudgetKiB,
        },
        guests: snapshots,
      };
      const decision = this.opts.policy.decide(snapshot, this.#state);
      const at = new Date(nowS * 1000).toISOString();
      await Promise.all(decision.actions.map(async (a) => {
        const d: LastPolicyDecision = { at, action: 'resize', fromKiB: a.fromKiB, targetKiB: a.targetKiB, reason: a.reason, outcome: 'pending' };
        let sent: { outcome: Promise<string | null> };
        try {
          sent = await this.opts.apply(a.name, a.targetKiB, a.split ?? 'plain');
        } catch (err) {
          await this.#record(a.name, { ...d, action: 'failed', outcome: 'refused', reason: `${a.reason}; the resize was refused: ${(err as Error).message}` });
          return;
        }
        await this.#record(a.name, d);
        // How it ends is recorded when it ends (the loop does not wait for it), unless a newer
        // decision for the guest came first.
        void sent.outcome.then(async (why) => {
          if (this.last.get(a.name) !== d) return;
          await this.#record(a.name, why === null
            ? { ...d, outcome: 'reached' }
            : { ...d, action: 'failed', outcome: 'not reached', reason: `${a.reason}; the guest did not get there: ${why}` });
        });
      }));
      for (const h of decision.holds) {
        const prev = this.last.get(h.name);
        // A hold only replaces an older hold with another reason: the last resize stays visible.
        if (!prev || (prev.action === 'hold' && prev.reason !== h.reason)) await this.#record(h.name, { at, action: 'hold', reason: h.reason });
      }
      return decision;
    } finally {
      this.#running = false;
    }
  }

  /** A guest's settings changed: the next round reads them again. */
  settingsChanged(name: string): void {
    this.opts.forget?.(name);
  }

  /** A guest stopped running: its rates start over and its settings are read again if it comes back. */
  forgetGuest(name: string): void {
    this.#prev.delete(name);
    this.opts.forget?.(name);
  }

  async #record(name: string, d: LastPolicyDecision): Promise<void> {
    this.last.set(name, d);
    try {
      await this.opts.record(name, d);
    } catch {
      /* publishing is best effort; the decision itself stands */
    }
  }
}
