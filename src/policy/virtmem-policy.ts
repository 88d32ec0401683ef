/**
 * virtmem's memory policy: pressure-driven, like Meta's senpai rather than like Proxmox or MoM.
 * Each guest is kept at what it uses plus a headroom, read from its own statistics every second:
 *
 * - **Grow fast on pressure.** A guest whose available memory falls under half its headroom, or
 *   that refaults (major faults), swaps in or reports memory stall, gets its use plus three
 *   headrooms at once (at least +256 MiB), and is not reclaimed from for a cool-down.
 * - **Reclaim steadily.** A guest with more than two headrooms available (idle memory and page
 *   cache: the guest's MemAvailable counts reclaimable cache) gives back down to its use plus
 *   1.5 headrooms, at most `reclaimStepKiB` per round, so a guest that starts to need memory
 *   again shows pressure long before it runs out.
 * - **Fit the budget.** When the targets together exceed the host's budget (or would push host
 *   MemAvailable under its reserve), idle guests are cut to their safe minimum first, then growth
 *   is shared by shares.
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
}

export const DEFAULT_POLICY_OPTIONS: VirtmemPolicyOptions = {
  periodS: 1,
  minHeadroomKiB: 96 * MiB,
  headroomFraction: 0.125,
  reclaimStepKiB: 256 * MiB,
  minGrowKiB: 256 * MiB,
  coolDownS: 20,
  maxStatsAgeS: 10,
  minChangeKiB: 8 * MiB,
  majorFaultsPerSPressure: 100,
  stallPctPressure: 1,
  hostReserveFraction: 0.05,
};

/** Per-guest memory between rounds. */
export interface VirtmemPolicyState {
  lastPressureS: Map<string, number>;
  /** Rounds in a row with pressure: each one doubles the growth step (a guest that keeps
   * running out needs more than its statistics can show: stalled allocations are not "used"). */
  pressureStreak: Map<string, number>;
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
  pressured: boolean;
  reason: string;
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
    if (sig.ageS > o.maxStatsAgeS) { decision.holds.push({ name: g.name, reason: `guest statistics are ${Math.round(sig.ageS)} s old` }); continue; }
    const useKiB = Math.max(0, g.currentKiB - sig.availableKiB);
    const headroom = Math.max(o.minHeadroomKiB, Math.round(o.headroomFraction * useKiB));
    const minKiB = Math.min(maxKiB, Math.max(g.settings.floorKiB, alignUp(useKiB + headroom / 2)));
    const why: string[] = [];
    if (sig.availableKiB < headroom / 2) why.push(`available ${mib(sig.availableKiB)} < ${mib(headroom / 2)}`);
    if (sig.majorFaultsPerS > o.majorFaultsPerSPressure) why.push(`${Math.round(sig.majorFaultsPerS)} major faults/s`);
    if (sig.swapInKiBPerS > 0) why.push(`swapping in ${mib(sig.swapInKiBPerS)}/s`);
    if (sig.stallPct !== undefined && sig.stallPct > o.stallPctPressure) why.push(`memory stall ${sig.stallPct.toFixed(1)} %`);
    const pressured = why.length > 0;
    const coolingS = s.nowS - (state.lastPressureS.get(g.name) ?? -Infinity);
    const streak = pressured && coolingS <= 2 * o.periodS ? (state.pressureStreak.get(g.name) ?? 0) + 1 : 0;
    state.pressureStreak.set(g.name, streak);
    if (pressured) state.lastPressureS.set(g.name, s.nowS);
    let targetKiB = g.currentKiB;
    let reason = `use ${mib(useKiB)} + headroom ${mib(headroom)}: within band`;
    if (pressured) {
      const stepKiB = o.minGrowKiB * 2 ** Math.min(streak, 4);
      targetKiB = alignUp(Math.max(useKiB + 3 * headroom, g.currentKiB + stepKiB));
      reason = `pressure (${why.join(', ')}): grow by at least ${mib(stepKiB)}${streak ? ` (pressure ${streak + 1} rounds in a row)` : ''}`;
    } else if (sig.availableKiB < headroom) {
      targetKiB = alignUp(useKiB + 2 * headroom);
      reason = `available ${mib(sig.availableKiB)} below headroom ${mib(headroom)}: grow`;
    } else if (sig.availableKiB > 2 * headroom) {
      if (coolingS < o.coolDownS) {
        reason = `idle memory ${mib(sig.availableKiB - headroom)}, but pressure ${Math.round(coolingS)} s ago: cooling down`;
      } else {
        const want = useKiB + 1.5 * headroom;
        targetKiB = alignDown(Math.max(want, g.currentKiB - o.reclaimStepKiB));
        reason = `${mib(sig.availableKiB)} available (idle or cache) > 2 x headroom: reclaim toward use ${mib(useKiB)} + 1.5 x headroom`;
      }
    }
    targetKiB = Math.min(maxKiB, Math.max(minKiB, targetKiB));
    plans.push({ g, minKiB, maxKiB, targetKiB, pressured, reason });
  }

  fitBudget(s, plans, o);

  for (const p of plans) {
    const { g } = p;
    if (Math.abs(p.targetKiB - g.currentKiB) < o.minChangeKiB) {
      decision.holds.push({ name: g.name, reason: p.targetKiB === g.currentKiB ? p.reason : `${p.reason} (change under ${mib(o.minChangeKiB)})` });
      continue;
    }
    const action: PolicyAction = { name: g.name, fromKiB: g.currentKiB, targetKiB: p.targetKiB, reason: p.reason };
    decision.actions.push(action);
  }
  return decision;
}

/**
 * Bring the sum of targets within the budget: first idle guests down to their safe minimum
 * (most slack first), then the growth of pressured guests, shared by shares. Guard rails win
 * over the budget: a budget smaller than every guest's safe minimum is exceeded, not enforced.
 */
function fitBudget(s: Snapshot, plans: Plan[], o: VirtmemPolicyOptions): void {
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
  if (growers.length === 0) return;
  const held = plans.reduce((sum, p) => sum + (growers.includes(p) ? p.g.currentKiB : Math.max(p.g.currentKiB, p.targetKiB)), 0);
  const room = Math.max(0, budget - held);
  const wanted = growers.reduce((sum, p) => sum + (p.targetKiB - p.g.currentKiB), 0);
  if (wanted <= room) return;
  const shares = growers.reduce((sum, p) => sum + p.g.settings.shares, 0);
  for (const p of growers) {
    const give = Math.min(p.targetKiB - p.g.currentKiB, Math.floor(room * (p.g.settings.shares / shares)));
    // The guard rail wins over the budget: never leave a guest below its safe minimum.
    p.targetKiB = Math.max(p.minKiB, alignDown(p.g.currentKiB + give));
    p.reason += `; growth limited to the free part of the host budget (shares ${p.g.settings.shares})`;
  }
}

/** The policy as the daemon and the benchmark run it. */
export function virtmemPolicy(o: VirtmemPolicyOptions = DEFAULT_POLICY_OPTIONS): Policy<VirtmemPolicyState> {
  return {
    name: 'virtmem',
    periodS: o.periodS,
    initialState: () => ({ lastPressureS: new Map(), pressureStreak: new Map() }),
    decide: (s, state) => decideVirtmem(s, state, o),
  };
}
