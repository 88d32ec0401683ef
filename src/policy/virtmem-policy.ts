/**
 * virtmem's memory policy: pressure-driven, like Meta's senpai rather than like Proxmox or MoM.
 * Each guest is kept at what it uses plus a headroom, read from its own statistics every second:
 *
 * - **Grow fast on pressure.** A guest whose available memory falls under half its headroom, or
 *   that refaults (major faults), swaps in or reports memory stall, gets its use plus three
 *   headrooms at once (at least +256 MiB), and is not reclaimed from for a cool-down.
 * - **Grow ahead of a rising guest.** The guest's statistics are up to a period old; QEMU's
 *   resident size, read by the host every round, is not. A guest whose use rises (statistics) or
 *   whose host-backed memory rises (RSS) faster than `risingKiBPerS`, and that would run out
 *   within `horizonS` at that rate, is grown to its use + headroom + `growAheadS` of that rate
 *   before it runs out, not after. Between statistics samples, RSS growth since the last sample
 *   counts as use ("nowcast"), so a burst is seen one round after it starts, not two.
 * - **Page cache is not demand.** A guest that reads files fills its page cache: QEMU's resident
 *   size rises as fast as for an allocation, but the guest's MemAvailable (which counts clean
 *   cache) does not fall. Host-backed growth counts as use only in the share the guest's own
 *   last samples gave to use rather than to its disk caches; a rise that later samples show went
 *   into cache holds no cool-down; bursts are measured in sampled use; and memory stall or major
 *   faults in a guest with more than two headrooms available are the guest turning over its own
 *   cache (more memory would only be filled with more cache), not pressure.
 * - **Remember bursts.** After a guest's use rose by a burst, reclaim leaves room for
 *   `burstReserveFraction` of that burst for `burstMemoryS`: a guest that just allocated a lot
 *   in a hurry is likely to do so again, and growth cannot outrun an allocation that lands at once.
 * - **Distrust statistics during a shrink.** While a guest is being shrunk, its own numbers lag
 *   the memory it is giving up (offlined blocks and balloon pages leave MemAvailable before they
 *   leave the guest's size), which reads as use rising. Then only host-backed growth (RSS)
 *   counts as a rise, and pressure stops the shrink where it is instead of growing.
 * - **Reclaim steadily.** A guest with more than two headrooms available (idle memory and page
 *   cache: the guest's MemAvailable counts reclaimable cache) gives back down to its use plus
 *   1.5 headrooms, at most `reclaimStepKiB` per round, so a guest that starts to need memory
 *   again shows pressure long before it runs out. What a guest has just freed (below) goes in
 *   one step: free pages, nothing to move.
 * - **Give back into the balloon; unplug only a quiet guest** (option `balloonFirst`, on by
 *   default; the daemon's `--policy-reclaim unplug` turns it off). A shrink inflates the
 *   balloon (driver/memory/plan.ts planSplit 'balloon-first'); a grow deflates it and plugs the
 *   rest at once (setmem's split). On Linux 6.1 guests an unplug that meets an allocation
 *   holds the guest's shared workqueue for seconds, and every plug sent meanwhile waits behind
 *   it (OOM kills at 60 s timelines, docs/benchmarks.md); the balloon, its own driver, does not:
 *   a grow gets the balloon's pages through a stalled unplug. So reclaim takes only what the
 *   balloon can hold until the guest has had no pressure or rise for `settleQuietS` (since the
 *   policy first saw it), or its own numbers showed it free a growth step or more since its last
 *   pressure or rise (a burst that is over: the freed pages unplug with nothing to move, so the
 *   unplug is done before the guest needs memory again); a quiet guest whose size held that
 *   long gets what its balloon holds back as unplugged blocks, freeing the balloon for the next
 *   reclaim: two changes (split 'balloon-back': a grow that deflates, then a shrink as large
 *   that unplugs), so the guest never has less than its size meanwhile, within the budget's
 *   room. The budget's cuts are not held back: another guest needs that memory.
 * - **Fit the budget.** When the targets together exceed the host's budget (or would push host
 *   MemAvailable under its reserve), idle guests are cut to their safe minimum first, then growth
 *   is shared by shares. Burst reserves and cool-downs give way to the budget (idle guests are
 *   cut to their safe minimum at once, which holds no reserve): memory moves from a guest that
 *   only caches to one that needs it as fast as the one gives it back.
 * - **A burst that is freed is over.** The cool-down after a rise or pressure keeps memory a
 *   guest just needed; once the guest has freed at least half of what its last burst took, the
 *   cool-down ends (the burst reserve still keeps room for a repeat).
 * - **Guard rails.** Never below the floor, never above the ceiling or the guest's maximum, never
 *   below use + half a headroom (no OOM by the policy's hand); no statistics or stale ones: hold.
 *
 * Pure: snapshot + state in, actions with reasons out.
 */
import type { Decision, GuestSnapshot, Policy, PolicyAction, Snapshot } from './types.js';
import { MiB } from './types.js';

export interface VirtmemPolicyOptions {
  periodS: number;
  /** Headroom = max(minHeadroomKiB, headroomFraction * use). */
  minHeadroomKiB: number;
  headroomFraction: number;
  /** Most a guest gives back per round. */
  reclaimStepKiB: number;
  /** Least a pressured guest grows by. */
  minGrowKiB: number;
  /** After pressure, no reclaim from that guest for this long. */
  coolDownS: number;
  /** Statistics older than this are not acted on. */
  maxStatsAgeS: number;
  /** Changes smaller than this are not worth a command. */
  minChangeKiB: number;
  majorFaultsPerSPressure: number;
  stallPctPressure: number;
  /** Without a budget: keep this much host MemAvailable (fraction of MemTotal, at least 256 MiB). */
  hostReserveFraction: number;
  /** Use (or host-backed memory) rising faster than this is an allocation burst. */
  risingKiBPerS: number;
  /** How long growth takes to reach the guest (decide, plug, online): a rising guest that would run out sooner is grown now. */
  horizonS: number;
  /** A rising guest is grown to use + headroom + this many seconds of its rise. */
  growAheadS: number;
  /** Share of the last burst reclaim leaves in place after it ... */
  burstReserveFraction: number;
  /** ... for this long (then all of it goes at once: a reserve that fades bit by bit would cost a resize every few seconds). */
  burstMemoryS: number;
  /**
   * Give back into the balloon first and unplug only a quiet guest (below); false: every resize
   * takes the plain split (a shrink unplugs at once), reclaim is not held for the balloon.
   */
  balloonFirst: boolean;
  /**
   * With balloonFirst: a guest with neither pressure nor a rise for this long (since the policy first saw it) is
   * quiet: reclaim may unplug what the balloon cannot take, and once its size also held this
   * long, what its balloon holds comes back as unplugged blocks, which frees the balloon for
   * the next reclaim. Before that, reclaim takes only what the balloon can.
   */
  settleQuietS: number;
  /** ... when the balloon holds at least this much. */
  settleMinKiB: number;
}

export const DEFAULT_POLICY_OPTIONS: VirtmemPolicyOptions = {
  periodS: 1,
  minHeadroomKiB: 96 * MiB,
  headroomFraction: 0.125,
  reclaimStepKiB: 256 * MiB,
  minGrowKiB: 256 * MiB,
  coolDownS: 10,
  maxStatsAgeS: 10,
  minChangeKiB: 8 * MiB,
  majorFaultsPerSPressure: 100,
  stallPctPressure: 1,
  hostReserveFraction: 0.05,
  risingKiBPerS: 16 * MiB,
  horizonS: 3,
  growAheadS: 5,
  burstReserveFraction: 0.5,
  burstMemoryS: 20,
  balloonFirst: true,
  settleQuietS: 20,
  settleMinKiB: 64 * MiB,
};

/** Per-guest memory between rounds. */
export interface VirtmemPolicyState {
  lastPressureS: Map<string, number>;
  /** Rounds in a row with pressure: each one doubles the growth step (a guest that keeps
   * running out needs more than its statistics can show: stalled allocations are not "used"). */
  pressureStreak: Map<string, number>;
  /** What the policy remembers of each guest's use between rounds (rates, bursts). */
  track: Map<string, GuestTrack>;
}

/** One guest's memory between rounds. */
export interface GuestTrack {
  /** When the statistics sample last seen was taken (nowS - ageS), its use, and RSS then. */
  statsAtS: number;
  useKiB: number;
  /** Use in the sample before that one (where a rise the last sample shows began). */
  prevUseKiB: number;
  rssAtStatsKiB: number | null;
  /** Use growth between the last two samples (KiB/s; negative when falling). */
  useRateKiBPerS: number;
  /** The guest's disk caches in the last sample (null: not reported). */
  cacheKiB: number | null;
  /**
   * Of the memory the guest's last samples showed it taking, the share that went to use rather
   * than to its disk caches (1: all use), and when that was learnt. Host-backed growth is
   * counted as use in this share; without a recent split it all counts (the cautious reading).
   */
  anonShare: number;
  anonShareAtS: number;
  /** RSS at the previous reading, when it was read, and the rate between the last two readings. */
  rssKiB: number | null;
  rssAtS: number;
  rssRateKiBPerS: number;
  /** The guest's size beyond its MemTotal (kernel, firmware, reserved): current - visible
   * MemTotal, learnt from samples taken while the size held still. */
  reservedKiB: number | null;
  /** The size last seen, and since when (rounds' time): a sample from before that is of another size. */
  sizeKiB: number;
  sizeSinceS: number;
  /** When the size last went down: statistics from before that still show the memory being given up. */
  shrunkAtS: number;
  /** The burst in progress: sampled use when it began and the highest since (null: not rising). */
  burstStartKiB: number | null;
  burstPeakKiB: number;
  /** The last finished burst: how much use rose, from what, and when it ended. */
  burstKiB: number;
  burstFromKiB: number;
  burstEndS: number;
  /**
   * The last rise the policy grew for: when it began and ended (the last rising round), and the
   * sample's use and disk caches when it began, to tell later whether it was use or cache.
   */
  riseSinceS: number;
  riseAtS: number;
  riseUseKiB: number;
  riseCacheKiB: number | null;
  /** The last target the policy sent (the guest may still be on its way there), and when. */
  askedKiB: number | null;
  askedAtS: number;
  /** The balloon's memory being handed back: deflated from `fromKiB` by `kib` at `atS`, to be unplugged next. */
  handBack: { fromKiB: number; kib: number; atS: number } | null;
  /** When the unplug of such a hand-back was sent. */
  handedBackAtS: number;
  /** When the policy first saw the guest (a guest just started may be about to allocate). */
  seenAtS: number;
  /**
   * The highest use trusted samples showed since the guest's last pressure or rise; when one
   * showed use a growth step or more under it (the guest freed memory), and how much it freed.
   */
  peakUseKiB: number;
  freedAtS: number;
  freedKiB: number;
  /** The balloon pages MemTotal counts (deflate-on-OOM) last seen, and when that last changed. */
  inflatedKiB: number;
  balloonMovedAtS: number;
}

/** A target the policy sent counts as one the guest may be heading to for this long, whatever the hypervisor's view says. */
const ASKED_FRESH_S = 5;

/** A sample is new when it was taken this much after the last one (statistics arrive per period, ≥ 1 s). */
const NEW_SAMPLE_S = 0.25;

/** What one round reads of a guest, beyond its snapshot. */
interface Observed {
  /** What it uses now: its last sample's use plus host-backed growth since that went to use. */
  useKiB: number;
  /** The cautious reading, for shrinking (a growth that has not shown in the statistics yet is used). */
  safeUseKiB: number;
  /** How fast its use rises (KiB/s): host-backed (RSS) growth in the use share, or sampled use. */
  riseKiBPerS: number;
  /** The host-backed part alone: RSS growth in the use share (KiB/s). */
  hostRiseKiBPerS: number;
  /** How much of `useKiB` is host-backed growth since the last sample. */
  sinceSampleUseKiB: number;
  /** Room kept for a burst like the last one. */
  reserveKiB: number;
  /** The statistics lag a shrink: their use is no growth signal. */
  shrinking: boolean;
  /** The share of host-backed growth counted as use (1: all; below: the rest went to page cache). */
  anonShare: number;
  track: GuestTrack;
}

/**
 * Update a guest's track with this round's snapshot and return what the guest uses now, how fast
 * use rises, and the burst reserve.
 */
function observe(g: GuestSnapshot, nowS: number, state: VirtmemPolicyState, o: VirtmemPolicyOptions, shrinkAsked: boolean): Observed {
  const sig = g.signals!;
  const statsAtS = nowS - sig.ageS;
  const rss = g.rssKiB ?? null;
  const rssAtS = g.rssAtS ?? nowS;
  let t = state.track.get(g.name);
  // The size the guest had when the sample was taken: its MemTotal then (less balloon pages it
  // still counts) plus what lies beyond MemTotal. The host's count of its size runs ahead of
  // the guest while blocks are being onlined or offlined; MemTotal and MemAvailable agree.
  // The part beyond MemTotal is learnt from a sample taken a second or more after the size last
  // changed (QEMU stamps samples in whole seconds): then both describe the same guest.
  const visibleKiB = sig.totalKiB === undefined ? null : Math.max(0, sig.totalKiB - (g.inflatedInTotalKiB ?? 0));
  if (t && g.currentKiB !== t.sizeKiB) {
    if (g.currentKiB < t.sizeKiB) t.shrunkAtS = nowS;
    t.sizeKiB = g.currentKiB;
    t.sizeSinceS = nowS;
  }
  // A shrink is "under way" for the statistics until a sample taken after it ended (whole seconds).
  const shrinking = shrinkAsked || (t !== undefined && statsAtS < t.shrunkAtS + 1);
  // The balloon pages MemTotal counts are read now, the sample was taken before: a sample from
  // before the balloon last moved misstates use by what it moved (a deflate reads as a rise).
  const inflatedKiB = g.inflatedInTotalKiB ?? 0;
  if (t && Math.abs(inflatedKiB - t.inflatedKiB) >= o.minChangeKiB) { t.inflatedKiB = inflatedKiB; t.balloonMovedAtS = nowS; }
  const balloonLag = t !== undefined && statsAtS < t.balloonMovedAtS + 1;
  const settled = !t || statsAtS >= t.sizeSinceS + 1;
  let reservedKiB = t?.reservedKiB ?? null;
  if (visibleKiB !== null && settled) reservedKiB = Math.max(0, g.currentKiB - visibleKiB);
  const sizeAtSample = visibleKiB === null || reservedKiB === null ? g.currentKiB : visibleKiB + reservedKiB;
  const sampleUse = Math.max(0, sizeAtSample - sig.availableKiB);
  const cache = sig.diskCachesKiB;
  if (!t) {
    t = {
      statsAtS, useKiB: sampleUse, prevUseKiB: sampleUse, rssAtStatsKiB: rss, useRateKiBPerS: 0, cacheKiB: cache, anonShare: 1, anonShareAtS: -Infinity,
      rssKiB: rss, rssAtS, rssRateKiBPerS: 0, reservedKiB, sizeKiB: g.currentKiB, sizeSinceS: -Infinity, shrunkAtS: -Infinity,
      burstStartKiB: null, burstPeakKiB: 0, burstKiB: 0, burstFromKiB: 0, burstEndS: -Infinity,
      riseSinceS: -Infinity, riseAtS: -Infinity, riseUseKiB: 0, riseCacheKiB: null, askedKiB: null, askedAtS: -Infinity, handBack: null, handedBackAtS: -Infinity, seenAtS: nowS,
      peakUseKiB: sampleUse, freedAtS: -Infinity, freedKiB: 0, inflatedKiB: g.inflatedInTotalKiB ?? 0, balloonMovedAtS: -Infinity,
    };
    state.track.set(g.name, t);
  } else if (statsAtS > t.statsAtS + NEW_SAMPLE_S) {
    const dt = statsAtS - t.statsAtS;
    const usedKiB = sampleUse - t.useKiB;
    const cachedKiB = t.cacheKiB === null ? 0 : cache - t.cacheKiB;
    t.useRateKiBPerS = usedKiB / dt;
    // Where the memory the guest took between the two samples went: to use, or to its disk
    // caches (page cache of files it read, which MemAvailable counts as available). Only an
    // interval in which the guest took a burst's worth teaches a split. (Samples that lag a
    // shrink overstate use: the split they teach errs toward use, the cautious side.)
    const took = Math.max(0, usedKiB) + Math.max(0, cachedKiB);
    if (took >= o.risingKiBPerS * dt) {
      t.anonShare = Math.max(0, usedKiB) / took;
      t.anonShareAtS = nowS;
    }
    // A guest whose own numbers show its use a growth step or more under the highest they showed
    // since its last pressure or rise freed memory (a process ended, a burst is over). Read only
    // from samples that describe the guest's size: one that lags a shrink or a balloon move
    // misstates use (a free the budget's cut hides in such a sample shows in the next one).
    if (!shrinking && !balloonLag) {
      if (sampleUse <= t.peakUseKiB - o.minGrowKiB) { t.freedAtS = nowS; t.freedKiB = t.peakUseKiB - sampleUse; t.peakUseKiB = sampleUse; }
      t.peakUseKiB = Math.max(t.peakUseKiB, sampleUse);
    }
    t.statsAtS = statsAtS;
    t.prevUseKiB = t.useKiB;
    t.useKiB = sampleUse;
    t.cacheKiB = cache;
    t.rssAtStatsKiB = rss;
  }
  t.reservedKiB = reservedKiB;
  // The split is trusted for a cool-down's length (a guest that read files a while ago may
  // allocate now); without one, host-backed growth is all counted as use.
  const anonShare = nowS - t.anonShareAtS <= o.coolDownS ? t.anonShare : 1;
  // While the guest unplugs what the policy handed back from its balloon, it moves pages out of
  // the blocks going away into others: QEMU's RSS rises by what it moves before the blocks are
  // discarded. That is not use (read as a rise, it grew the guest again after every hand-back:
  // a 300 s run sent 117 resizes instead of 73).
  const hostShare = nowS - t.handedBackAtS < ASKED_FRESH_S ? 0 : anonShare;
  // Host-backed growth since the sample is memory the guest has touched since: the use share of
  // it counts as use.
  const sinceSample = rss !== null && t.rssAtStatsKiB !== null ? Math.max(0, rss - t.rssAtStatsKiB) * hostShare : 0;
  // Never less than this snapshot's own sample says (samples out of order are read cautiously).
  const useKiB = Math.min(g.currentKiB, Math.max(sampleUse, t.useKiB + sinceSample));
  // The host-side rate between two readings; a reading this round already had is not a new one.
  if (rss !== null && t.rssKiB !== null && rssAtS > t.rssAtS) t.rssRateKiBPerS = Math.max(0, rss - t.rssKiB) / (rssAtS - t.rssAtS);
  if (rss === null) t.rssRateKiBPerS = 0;
  if (rssAtS > t.rssAtS || t.rssKiB === null) { t.rssKiB = rss; t.rssAtS = rssAtS; }
  // A shrink in flight makes the statistics read as rising use, so does a sample from before the
  // balloon moved: only the host's reading counts.
  if (shrinking || balloonLag) t.useRateKiBPerS = 0;
  const hostRiseKiBPerS = t.rssRateKiBPerS * hostShare;
  const riseKiBPerS = Math.max(hostRiseKiBPerS, t.useRateKiBPerS);
  // Bursts, in sampled use (host-backed growth may turn out to be cache): from the first rising
  // round to the first round that is not.
  if (riseKiBPerS >= o.risingKiBPerS) {
    t.burstStartKiB ??= Math.min(t.useKiB, t.prevUseKiB);
    // A sample that lags a shrink reads the memory being given up as use: not part of a burst.
    if (!shrinking && !balloonLag) t.burstPeakKiB = Math.max(t.burstPeakKiB, t.useKiB);
  } else if (t.burstStartKiB !== null) {
    const rose = Math.max(t.burstPeakKiB, shrinking ? 0 : t.useKiB) - t.burstStartKiB;
    if (rose > 0) { t.burstKiB = rose; t.burstFromKiB = t.burstStartKiB; t.burstEndS = nowS; }
    t.burstStartKiB = null;
    t.burstPeakKiB = 0;
  }
  const reserveHeld = nowS - t.burstEndS < o.burstMemoryS;
  // For taking memory away, the cautious reading: the sample against the size the guest has now
  // (a growth that has not shown in the statistics yet is counted as used).
  const safeUseKiB = Math.min(g.currentKiB, Math.max(useKiB, g.currentKiB - sig.availableKiB + sinceSample));
  return { useKiB, safeUseKiB, riseKiBPerS, hostRiseKiBPerS, sinceSampleUseKiB: sinceSample, reserveKiB: reserveHeld ? Math.round(o.burstReserveFraction * t.burstKiB) : 0, shrinking, anonShare, track: t };
}

/**
 * Why a cool-down no longer holds, or null when it does.
 * - A rise the policy grew for from host-backed growth alone, that samples taken since show did
 *   not go into use: into disk caches (the guest read files: nothing to keep for it, the growth
 *   was the policy's mistake and is undone at once, `undo`), or nowhere the guest counts (pages
 *   QEMU touched for some other reason: reclaim resumes step by step).
 * - A guest that has freed at least half of what its last burst took: it is done with it (the
 *   burst reserve still keeps room for a repeat).
 */
function coolDownOver(t: GuestTrack, nowS: number, headroomKiB: number, pressureAtS: number, o: VirtmemPolicyOptions): { why: string; undo: boolean } | null {
  const reserveHeld = nowS - t.burstEndS < o.burstMemoryS;
  if (reserveHeld && t.useKiB < t.burstFromKiB + t.burstKiB / 2) return { why: `it freed most of its last burst of ${mib(t.burstKiB)}`, undo: false };
  // Judged from a sample taken a second or more after the rise was last seen (whatever the guest
  // touched by then shows in it), with no pressure since.
  if (nowS - pressureAtS >= o.coolDownS && t.statsAtS >= t.riseAtS + 1) {
    const usedKiB = t.useKiB - t.riseUseKiB;
    const cachedKiB = t.cacheKiB !== null && t.riseCacheKiB !== null ? t.cacheKiB - t.riseCacheKiB : 0;
    // Only page cache the samples saw grow is proof enough to undo the growth at once: four
    // fifths or more of what the guest took since. (Reading files also takes some memory
    // MemAvailable does not count: dentries, inodes, pages still under I/O.)
    if (cachedKiB > headroomKiB / 2 && cachedKiB >= 4 * Math.max(0, usedKiB)) return { why: `the last rise went into page cache (+${mib(cachedKiB)}), not use`, undo: true };
    if (usedKiB < headroomKiB / 2) return { why: 'the last rise (host-side) did not show in the guest\'s use', undo: false };
  }
  return null;
}

/** virtio-mem's block (2 MiB): targets are multiples of it. */
const ALIGN_KIB = 2 * MiB;
const alignDown = (k: number): number => Math.floor(k / ALIGN_KIB) * ALIGN_KIB;
const alignUp = (k: number): number => Math.ceil(k / ALIGN_KIB) * ALIGN_KIB;
const mib = (k: number): string => `${Math.round(k / MiB)} MiB`;

interface Plan {
  g: GuestSnapshot;
  /** Lowest the guest may go this round (floor, and use + half a headroom). */
  minKiB: number;
  maxKiB: number;
  targetKiB: number;
  /** Where reclaim would take the guest over the next rounds (use + 1.5 headrooms, no reserve). */
  goalKiB: number;
  /** The most the guest is heading to: the hypervisor's target, or one the policy just sent. */
  headingKiB: number;
  /** Pressure, or use rising (by its own numbers or the host's): the budget takes nothing from it. */
  pressured: boolean;
  /** Pressure during a shrink: the target is where the guest is, and must be sent to stop the shrink. */
  stopShrink: boolean;
  /** No pressure, rise or shrink for settleQuietS: what the balloon holds may become unplugged blocks. */
  quiet: boolean;
  reason: string;
}

/**
 * A guest whose statistics stopped while QEMU's resident size keeps rising: it is touching new
 * memory the policy cannot see it use. Without its numbers nothing is taken from it, but it is
 * grown by the rise (at least a growth step), as a pressured guest within the budget: holding
 * it until it reports again cost a libvirt guest (statistics stopped mid-ramp, 2026-12-05) an
 * OOM kill every two seconds for the rest of its ramp. Updates the guest's host-side reading;
 * null when its resident size does not rise fast enough or was never read.
 */
function staleButRising(g: GuestSnapshot, nowS: number, state: VirtmemPolicyState, o: VirtmemPolicyOptions): Omit<Plan, 'maxKiB'> | null {
  const t = state.track.get(g.name);
  const rss = g.rssKiB ?? null;
  const rssAtS = g.rssAtS ?? nowS;
  if (!t || rss === null) return null;
  if (t.rssKiB !== null && rssAtS > t.rssAtS) t.rssRateKiBPerS = Math.max(0, rss - t.rssKiB) / (rssAtS - t.rssAtS);
  if (rssAtS > t.rssAtS || t.rssKiB === null) { t.rssKiB = rss; t.rssAtS = rssAtS; }
  const anonShare = nowS - t.anonShareAtS <= o.coolDownS ? t.anonShare : 1;
  const riseKiBPerS = t.rssRateKiBPerS * anonShare;
  if (riseKiBPerS < o.risingKiBPerS) return null;
  const headingKiB = Math.max(g.targetKiB ?? g.currentKiB, t.askedKiB !== null && nowS - t.askedAtS <= ASKED_FRESH_S ? t.askedKiB : 0);
  const growKiB = Math.max(o.minGrowKiB, Math.round(riseKiBPerS * o.growAheadS));
  return {
    g, minKiB: g.currentKiB, targetKiB: alignUp(Math.max(g.currentKiB + growKiB, headingKiB)), goalKiB: g.currentKiB, headingKiB, pressured: true, stopShrink: false, quiet: false,
    reason: `guest statistics are ${Math.round(g.signals!.ageS)} s old, but QEMU's resident memory rises ${mib(riseKiBPerS)}/s: grow by ${mib(growKiB)}`,
  };
}

/**
 * The decision function.
 * @returns actions (new targets, each with its reason) and holds (guests left alone, and why).
 */
export function decideVirtmem(s: Snapshot, state: VirtmemPolicyState, o: VirtmemPolicyOptions = DEFAULT_POLICY_OPTIONS): Decision {
  const decision: Decision = { actions: [], holds: [] };
  const plans: Plan[] = [];
  for (const g of s.guests) {
    if (!g.settings.enabled) { decision.holds.push({ name: g.name, reason: 'policy off for this guest' }); continue; }
    const maxKiB = Math.min(g.settings.ceilingKiB, g.maxKiB);
    const sig = g.signals;
    if (!sig) { decision.holds.push({ name: g.name, reason: 'no guest statistics yet (balloon driver not loaded, or stats period 0)' }); continue; }
    if (sig.ageS > o.maxStatsAgeS) {
      const stale = staleButRising(g, s.nowS, state, o);
      if (stale) { plans.push({ ...stale, maxKiB, minKiB: Math.min(maxKiB, stale.minKiB), targetKiB: Math.min(maxKiB, stale.targetKiB) }); continue; }
      decision.holds.push({ name: g.name, reason: `guest statistics are ${Math.round(sig.ageS)} s old` });
      continue;
    }
    // Where the guest is heading: the hypervisor's target. A target the policy sent in the last
    // few seconds counts too, for a host whose view does not show a sent target yet (libvirt's
    // XML has none; the libvirt watch takes it from the driver when it is sent): a guest the
    // policy just sent up is not taken to be shrinking, and is held at the larger of the two.
    const sent = state.track.get(g.name);
    const recentAskKiB = sent?.askedKiB != null && s.nowS - sent.askedAtS <= ASKED_FRESH_S ? sent.askedKiB : null;
    const headingKiB = g.targetKiB ?? g.currentKiB;
    const shrinkAsked = headingKiB < g.currentKiB - o.minChangeKiB && (recentAskKiB === null || recentAskKiB < g.currentKiB - o.minChangeKiB);
    const { useKiB, safeUseKiB, riseKiBPerS, hostRiseKiBPerS, sinceSampleUseKiB, reserveKiB, shrinking, anonShare, track: t } = observe(g, s.nowS, state, o, shrinkAsked);
    const availableKiB = Math.max(0, g.currentKiB - useKiB);
    const headroom = Math.max(o.minHeadroomKiB, Math.round(o.headroomFraction * useKiB));
    // Lowest target: the floor and use + half a headroom; never shrink below the cautious reading
    // of use either (but do not grow for it alone: a growth that has not shown yet is not need).
    // While the statistics lag a shrink, their use is not a reason to grow either.
    const useMin = alignUp(useKiB + headroom / 2);
    const minKiB = Math.min(maxKiB, Math.max(g.settings.floorKiB, shrinking ? Math.min(g.currentKiB, useMin) : useMin, Math.min(g.currentKiB, alignUp(safeUseKiB + headroom / 2))));
    const idleKiB = Math.max(0, g.currentKiB - safeUseKiB);
    const why: string[] = [];
    // Stall and major faults with more than two headrooms available (free memory and clean page
    // cache the guest can drop itself) come from turning over its own cache, e.g. reading a file
    // larger than its memory: more memory would only be filled with more cache. They count as
    // pressure only in a guest that is short of what it could free itself.
    const roomy = availableKiB > 2 * headroom;
    const ignored: string[] = [];
    // Short of memory by the guest's own numbers (its last sample against its size now): a
    // host-side rise since that sample may be page cache, and is the rise rule's to judge.
    const sampleAvailableKiB = Math.max(0, g.currentKiB - Math.max(t.useKiB, useKiB - sinceSampleUseKiB));
    if (sampleAvailableKiB < headroom / 2) why.push(`available ${mib(sampleAvailableKiB)} < ${mib(headroom / 2)}`);
    if (sig.majorFaultsPerS > o.majorFaultsPerSPressure) (roomy ? ignored : why).push(`${Math.round(sig.majorFaultsPerS)} major faults/s`);
    if (sig.swapInKiBPerS > 0) why.push(`swapping in ${mib(sig.swapInKiBPerS)}/s`);
    if (sig.stallPct !== undefined && sig.stallPct > o.stallPctPressure) (roomy ? ignored : why).push(`memory stall ${sig.stallPct.toFixed(1)} %`);
    const pressured = why.length > 0;
    // Rising: at this rate the guest runs out of headroom before growth could reach it.
    const rising = riseKiBPerS >= o.risingKiBPerS && availableKiB - riseKiBPerS * o.horizonS < headroom;
    // Pressure read in statistics that lag a shrink, with no host-backed growth behind it.
    const lagging = shrinking && (pressured || rising) && riseKiBPerS < o.risingKiBPerS;
    // The guest touching new memory (host-backed growth in its use share), if not yet fast
    // enough to grow for: memory is not taken from such a guest, and a shrink under way is
    // stopped where the guest is. (A rise fast enough to grow for grows the guest even while it
    // shrinks: waiting a round to see whether it is only the guest moving pages out of the blocks
    // it unplugs cost an OOM kill at a spike; growth the samples then do not show as use is given
    // back. Sampled use alone creeps up while a guest reads files, by what MemAvailable does not
    // count: that holds nothing.)
    const climbing = hostRiseKiBPerS >= o.risingKiBPerS && !rising && !pressured;
    const stopShrink = lagging || (shrinkAsked && climbing);
    const pressureAtS = state.lastPressureS.get(g.name) ?? -Infinity;
    const lastEventS = Math.max(pressureAtS, t.riseAtS);
    const streak = pressured && !stopShrink && s.nowS - lastEventS <= 2 * o.periodS ? (state.pressureStreak.get(g.name) ?? 0) + 1 : 0;
    state.pressureStreak.set(g.name, streak);
    if (pressured && !stopShrink) state.lastPressureS.set(g.name, s.nowS);
    if (rising && !stopShrink) {
      // A new rise (not the continuation of one within a cool-down): remember what the guest's
      // sample said when it began, to tell later whether it went into use or into page cache.
      if (s.nowS - t.riseAtS > o.coolDownS) { t.riseSinceS = s.nowS; t.riseUseKiB = Math.min(t.useKiB, t.prevUseKiB); t.riseCacheKiB = t.cacheKiB; }
      t.riseAtS = s.nowS;
    }
    // What the guest frees is measured from the highest use since its last pressure or rise.
    if ((pressured || rising) && !stopShrink) t.peakUseKiB = t.useKiB;
    const calm = s.nowS - Math.max(lastEventS, t.seenAtS) >= o.settleQuietS;
    // A guest that freed memory since its last pressure or rise is done with what it took: an
    // unplug now finds the freed pages with nothing to move, and is over before the guest needs
    // memory again (the guest-kernel stall needs an unplug that meets an allocation).
    const freed = t.freedAtS > lastEventS && t.freedAtS >= t.seenAtS;
    let targetKiB = g.currentKiB;
    let reason = `use ${mib(useKiB)} + headroom ${mib(headroom)}: within band`;
    const aheadKiB = rising ? Math.round(riseKiBPerS * o.growAheadS) : 0;
    const cacheNote = anonShare < 1 && rising ? ` (${Math.round(anonShare * 100)} % of its host-backed growth; the rest was page cache)` : '';
    if (stopShrink) {
      // The guest's numbers say it is short while it gives memory back, but it touches no new
      // memory: stop taking, do not give.
      targetKiB = g.currentKiB;
      reason = !lagging ? `host-backed use rising ${mib(hostRiseKiBPerS)}/s while shrinking to ${mib(headingKiB)}: stop the shrink`
        : `${pressured ? `pressure (${why.join(', ')})` : `use appears to rise`} ${shrinkAsked ? `while shrinking to ${mib(headingKiB)}: stop the shrink` : 'in statistics from before the last shrink: wait for a newer sample'}`;
    } else if (pressured) {
      const stepKiB = o.minGrowKiB * 2 ** Math.min(streak, 4);
      targetKiB = alignUp(Math.max(useKiB + 3 * headroom + aheadKiB, g.currentKiB + stepKiB));
      reason = `pressure (${why.join(', ')}): grow by at least ${mib(stepKiB)}${streak ? ` (pressure ${streak + 1} rounds in a row)` : ''}`;
    } else if (rising) {
      targetKiB = alignUp(useKiB + headroom + aheadKiB);
      reason = `use rising ${mib(riseKiBPerS)}/s${cacheNote} with ${mib(availableKiB)} available: grow ahead to use ${mib(useKiB)} + headroom + ${o.growAheadS} s of the rise`;
      // The first round of a rise on a guest with little to spare: a rate from two samples a
      // round apart understates a rise that began between them (nine processes starting at once
      // showed as 44 MiB/s), and such a guest runs out before the next round sees more.
      const firstGrowKiB = alignUp(g.currentKiB + 2 * o.minGrowKiB);
      if (t.riseSinceS === s.nowS && availableKiB < 2 * headroom && targetKiB < firstGrowKiB) {
        targetKiB = firstGrowKiB;
        reason += `, at least +${mib(2 * o.minGrowKiB)} as it begins with ${mib(availableKiB)} to spare`;
      }
      // Seen by the host alone so far (QEMU's RSS; the guest's samples do not show use rising):
      // the pages may be page cache a file read fills faster than any allocation. Grow by at
      // most two growth steps a round until the guest's own numbers show it as use.
      const capKiB = g.currentKiB + 2 * o.minGrowKiB;
      if (t.useRateKiBPerS < o.risingKiBPerS && targetKiB > capKiB) {
        targetKiB = capKiB;
        reason += `, at most +${mib(2 * o.minGrowKiB)} while only the host sees it`;
      }
    } else if (availableKiB < headroom) {
      targetKiB = alignUp(useKiB + 2 * headroom);
      reason = `available ${mib(availableKiB)} below headroom ${mib(headroom)}: grow`;
    } else if (climbing) {
      reason = `use rising ${mib(hostRiseKiBPerS)}/s with ${mib(availableKiB)} available: not reclaiming`;
    } else if (idleKiB > 2 * headroom + reserveKiB) {
      const coolingS = s.nowS - lastEventS;
      const over = coolingS < o.coolDownS ? coolDownOver(t, s.nowS, headroom, pressureAtS, o) : null;
      if (coolingS < o.coolDownS && over === null) {
        reason = `idle memory ${mib(idleKiB - headroom)}, but ${pressureAtS >= t.riseAtS ? 'pressure' : 'a rise'} ${Math.round(coolingS)} s ago: cooling down`;
      } else {
        const want = safeUseKiB + 1.5 * headroom + reserveKiB;
        // What a guest freed is free pages: taking it moves nothing, so it goes in one step.
        const stepKiB = freed ? Math.max(o.reclaimStepKiB, t.freedKiB) : o.reclaimStepKiB;
        targetKiB = alignDown(over?.undo ? want : Math.max(want, g.currentKiB - stepKiB));
        reason = `${mib(idleKiB)} available (idle or cache) > 2 x headroom: reclaim toward use ${mib(safeUseKiB)} + 1.5 x headroom`
          + (reserveKiB > 0 ? ` + ${mib(reserveKiB)} kept for a burst like the last one` : '')
          + (over !== null ? ` (no cool-down${over.undo ? ', at once' : ''}: ${over.why})` : '');
        // Reclaim goes into the balloon: an unplug is left for a quiet guest, or one that freed memory.
        const room = o.balloonFirst ? g.balloonRoomKiB : undefined;
        if (room !== undefined && targetKiB < g.currentKiB - room && !calm) {
          if (freed) {
            reason += `; it freed ${mib(t.freedKiB)} ${Math.round(s.nowS - t.freedAtS)} s ago: what the balloon cannot hold is unplugged`;
          } else {
            targetKiB = alignDown(g.currentKiB - room);
            reason += room < o.minChangeKiB ? ': the balloon is full, the rest waits until the guest is quiet' : `, ${mib(room)} into the balloon (the rest waits until the guest is quiet)`;
          }
        }
      }
    }
    // Growth never lowers a target the guest is still heading up to. The host's count of a
    // guest's size can lag a grow under way (a libvirt host learns sizes from QEMU's balloon and
    // virtio-mem events, which QEMU sends at most once a second): a growth step computed from
    // that size can fall below the target already sent, and sending it would unplug memory the
    // guest is plugging, and needs (on libvirt guests this reversed plugs under way, and a guest
    // busy offlining the memory again stopped reporting statistics while it ran out).
    const upKiB = Math.min(maxKiB, alignUp(Math.max(headingKiB, recentAskKiB ?? 0)));
    if (targetKiB > g.currentKiB && !stopShrink && upKiB > targetKiB) {
      targetKiB = upKiB;
      reason += ` (keeps the larger target ${mib(upKiB)} it is heading to)`;
    }
    if (ignored.length > 0 && !pressured) reason += `; not pressure: ${ignored.join(', ')} with ${mib(availableKiB)} available (turning over its own cache)`;
    targetKiB = Math.min(maxKiB, Math.max(minKiB, targetKiB));
    const goalKiB = Math.min(maxKiB, Math.max(minKiB, alignDown(safeUseKiB + 1.5 * headroom)));
    // A guest whose host-backed use is rising gives nothing to the budget either: its statistics
    // lag what it is taking (a 300 s run cut the alloc guest mid-spike, 1536 -> 1408 MiB, to feed
    // another guest, while its RSS rose 230 MiB/s: an OOM kill two seconds later).
    // Quiet: no pressure or rise, and the same size, for settleQuietS.
    const quiet = calm && !pressured && !rising && !climbing && !stopShrink && !shrinkAsked && !shrinking && s.nowS - t.sizeSinceS >= o.settleQuietS;
    plans.push({ g, minKiB, maxKiB, targetKiB, goalKiB, headingKiB: Math.max(headingKiB, recentAskKiB ?? 0), pressured: pressured || rising || climbing, stopShrink, quiet, reason });
  }

  const budget = fitBudget(s, plans, o);
  // What a guest may take above its size for a moment (handing the balloon's memory back deflates before it unplugs).
  let slack = budget - plans.reduce((sum, p) => sum + Math.max(p.g.currentKiB, p.targetKiB, p.headingKiB), 0);
  for (const name of state.track.keys()) if (!s.guests.some((g) => g.name === name)) state.track.delete(name);

  for (const p of plans) {
    const { g } = p;
    // A resize under way is not sent again; stopping a shrink where the guest is now is a change
    // even though the size stays, but holding a guest within its band never cancels a shrink.
    const asked = g.targetKiB ?? g.currentKiB;
    const small = (a: number, b: number): boolean => Math.abs(a - b) < o.minChangeKiB;
    const t = state.track.get(g.name);
    const pend = o.balloonFirst ? t?.handBack ?? null : null;
    if (t && pend) {
      // Handing the balloon's memory back, second change: once the deflate is in, unplug as much.
      t.handBack = null;
      if (!p.pressured && !p.stopShrink && s.nowS - pend.atS <= ASKED_FRESH_S * 2) {
        if (g.currentKiB >= pend.fromKiB + pend.kib - o.minChangeKiB) {
          decision.actions.push({ name: g.name, fromKiB: g.currentKiB, targetKiB: pend.fromKiB, split: 'balloon-back', reason: `handing the balloon's memory back: the guest has the ${mib(pend.kib)} deflated, unplug as much` });
          t.askedKiB = pend.fromKiB; t.askedAtS = s.nowS; t.handedBackAtS = s.nowS;
          continue;
        }
        t.handBack = pend;
        decision.holds.push({ name: g.name, reason: `handing the balloon's memory back: waiting for the guest to take the ${mib(pend.kib)} deflated (at ${mib(g.currentKiB)})` });
        continue;
      }
      // Pressure, a rise or no progress: the guest keeps what it was given; the plan below decides.
    }
    if (small(p.targetKiB, asked) || (!p.stopShrink && small(p.targetKiB, g.currentKiB))) {
      // A quiet guest at its size: what the balloon holds comes back as unplugged blocks, so the
      // balloon has room for the next reclaim. Two changes, so the guest never has less than its
      // size meanwhile (an unplug lands faster than a deflate): deflate first, unplug as much after.
      const kib = alignDown(Math.min(g.balloonHeldKiB ?? 0, g.pluggedKiB ?? 0, slack));
      if (o.balloonFirst && p.quiet && t && asked === g.currentKiB && kib >= o.settleMinKiB && g.balloonRoomKiB !== undefined) {
        slack -= kib;
        t.handBack = { fromKiB: g.currentKiB, kib, atS: s.nowS };
        t.askedKiB = g.currentKiB + kib; t.askedAtS = s.nowS;
        decision.actions.push({ name: g.name, fromKiB: g.currentKiB, targetKiB: g.currentKiB + kib, split: 'balloon-back', reason: `${p.reason}; quiet for ${o.settleQuietS} s: hand ${mib(kib)} of the balloon's memory back as unplugged blocks (deflate, then unplug as much)` });
        continue;
      }
      const why = p.targetKiB === g.currentKiB ? p.reason
        : asked !== g.currentKiB ? `${p.reason} (already heading to ${mib(asked)})` : `${p.reason} (change under ${mib(o.minChangeKiB)})`;
      decision.holds.push({ name: g.name, reason: why });
      continue;
    }
    // Balloon first: a shrink inflates the balloon; a grow takes back what the balloon holds
    // first and plugs the rest at once (setmem's split): the balloon's pages reach the guest even
    // while a Linux 6.1 guest's virtio-mem is stalled in an unplug pass (a spike that met an
    // unplug in flight was OOM-killed waiting for the plug, its balloon full), and every grow
    // leaves the balloon room for the next reclaim. A shrink stopped where the guest is stays
    // balloon-first (setmem's split would unplug what the balloon took meanwhile).
    const split = !o.balloonFirst ? null : p.targetKiB > g.currentKiB ? 'plain' as const : 'balloon-first' as const;
    const action: PolicyAction = { name: g.name, fromKiB: g.currentKiB, targetKiB: p.targetKiB, reason: p.reason, ...(split ? { split } : {}) };
    decision.actions.push(action);
    if (t) { t.askedKiB = p.targetKiB; t.askedAtS = s.nowS; }
  }
  return decision;
}

/**
 * Bring the sum of targets within the budget: first idle guests down to their safe minimum
 * (most slack first), then the growth of pressured guests, shared by shares. Guard rails win
 * over the budget: a budget smaller than every guest's safe minimum is exceeded, not enforced.
 */
function fitBudget(s: Snapshot, plans: Plan[], o: VirtmemPolicyOptions): number {
  const unmanaged = s.guests.filter((g) => !plans.some((p) => p.g === g)).reduce((sum, g) => sum + g.currentKiB, 0);
  let budget: number;
  if (s.host.guestBudgetKiB !== null) {
    budget = s.host.guestBudgetKiB - unmanaged;
  } else {
    // Without a budget: what the guests hold now plus what the host can spare above its reserve.
    const reserve = Math.max(256 * MiB, o.hostReserveFraction * s.host.memTotalKiB);
    budget = plans.reduce((sum, p) => sum + p.g.currentKiB, 0) + (s.host.memAvailableKiB - reserve);
  }
  let over = plans.reduce((sum, p) => sum + p.targetKiB, 0) - budget;
  if (over > 0) {
    for (const p of [...plans].filter((q) => !q.pressured).sort((a, b) => (b.targetKiB - b.minKiB) - (a.targetKiB - a.minKiB))) {
      if (over <= 0) break;
      const cut = Math.min(over, p.targetKiB - p.minKiB);
      if (cut <= 0) continue;
      p.targetKiB = Math.max(p.minKiB, alignDown(p.targetKiB - cut));
      over -= cut;
      p.reason += `; host budget: cut to ${mib(p.targetKiB)}`;
    }
  }
  // Growth goes only into memory that is free now: a guest being shrunk holds its memory until
  // it has given it back, so growing into it at once would overshoot the budget meanwhile.
  const growers = plans.filter((p) => p.targetKiB > p.g.currentKiB);
  if (growers.length === 0) return budget;
  // A guest that is not growing holds the most of its size, the target it gets now and the one
  // it may still be heading to (a guest finishes a plug under way before it takes a newer, lower
  // target; a stopped shrink reaches the guest after it went lower and takes it back up).
  const held = plans.reduce((sum, p) => sum + (growers.includes(p) ? p.g.currentKiB : Math.max(p.g.currentKiB, p.targetKiB, p.headingKiB)), 0);
  const room = Math.max(0, budget - held);
  const wanted = growers.reduce((sum, p) => sum + (p.targetKiB - p.g.currentKiB), 0);
  if (wanted <= room) return budget;
  // Growth waits for memory to be given back: every guest with idle memory or cache gives all of
  // it at once (to where reclaim would take it in steps, cool-down and burst reserve aside), so
  // the memory moves as fast as the guests can give it and the next rounds find it free.
  for (const p of plans) {
    if (p.pressured || growers.includes(p) || p.goalKiB >= Math.min(p.targetKiB, p.g.currentKiB) - o.minChangeKiB) continue;
    p.targetKiB = p.goalKiB;
    p.reason += `; another guest waits for memory: give back all idle memory now (to ${mib(p.targetKiB)})`;
  }
  const shares = growers.reduce((sum, p) => sum + p.g.settings.shares, 0);
  for (const p of growers) {
    const give = Math.min(p.targetKiB - p.g.currentKiB, Math.floor(room * (p.g.settings.shares / shares)));
    // The guard rail wins over the budget: never leave a guest below its safe minimum.
    p.targetKiB = Math.max(p.minKiB, alignDown(p.g.currentKiB + give));
    p.reason += `; growth limited to the free part of the host budget (shares ${p.g.settings.shares})`;
  }
  return budget;
}

/** The policy as the daemon and the benchmark run it. */
export function virtmemPolicy(o: VirtmemPolicyOptions = DEFAULT_POLICY_OPTIONS): Policy<VirtmemPolicyState> {
  return {
    name: 'virtmem',
    periodS: o.periodS,
    initialState: () => ({ lastPressureS: new Map(), pressureStreak: new Map(), track: new Map() }),
    decide: (s, state) => decideVirtmem(s, state, o),
  };
}
