/**
 * The policy benchmark's scenario, SIMULATED: three guests, the same scripted demand and host
 * budget for every row, and each policy (none, Proxmox's AutoBalloon port, the MoM port,
 * virtmem's) run at its own cadence through the same pure `Policy` interface the daemon uses.
 * No QEMU is involved: guest memory, page cache, OOM kills and resize speed are modelled (resize
 * speeds from GUEST-FACTS and the live-resize benchmark), so the numbers compare the policies'
 * decisions, not real guests. Deterministic: same output every run.
 *
 *   npm run bench -- policy        (or: node dist/bench/policy-sim.js [--json])
 */
import { proxmoxPolicy } from '../src/policy/proxmox.js';
import { momPolicy } from '../src/policy/mom.js';
import { virtmemPolicy } from '../src/policy/virtmem-policy.js';
import { GiB, MiB, type GuestSnapshot, type Policy, type Snapshot } from '../src/policy/types.js';

const DT = 0.1; // simulation step, s
const END_S = 300;
const QUIET_S = 200;
const SPIKE_S = 170;
const MAX_KIB = 2 * GiB;
const FLOOR_KIB = 384 * MiB;
const BUDGET_KIB = 3.75 * GiB;
const KERNEL_KIB = 80 * MiB;
/** Resize speeds (same actuator for every policy): growing is fast, giving back slower (balloon inflation under TCG ~100 MiB/s, virtio-mem unplug ~1.3 GiB/s). */
const GROW_KIB_PER_S = 2 * GiB;
const SHRINK_KIB_PER_S = 300 * MiB;
/** A workload whose allocation cannot be met for this long is killed by the guest's OOM killer. */
const OOM_AFTER_S = 3;

/** Anonymous memory each guest's workload wants at time t (KiB), and the page cache it reads in. */
interface Workload { anonKiB(t: number): number; cacheFillKiBPerS(t: number): number; active(t: number): boolean }

const clamp = (x: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, x));

const WORKLOADS: Record<string, Workload> = {
  // allocates 1.2 GiB, holds, frees; later a sudden +900 MiB spike, then quiet.
  alloc: {
    anonKiB: (t) => 100 * MiB
      + (t >= 20 && t < 60 ? clamp((t - 20) / 10, 0, 1) * 1.2 * GiB : 0)
      + (t >= SPIKE_S && t < QUIET_S ? clamp((t - SPIKE_S) / 2, 0, 1) * 900 * MiB : 0),
    cacheFillKiBPerS: () => 0,
    active: (t) => (t >= 20 && t < 60) || (t >= SPIKE_S && t < QUIET_S),
  },
  // fills 1.2 GiB of page cache, then goes idle.
  cache: {
    anonKiB: () => 60 * MiB,
    cacheFillKiBPerS: (t) => (t < 20 ? 60 * MiB : 0),
    active: (t) => t < 20,
  },
  // ramps to a 1.6 GiB working set, holds it until quiet.
  ramp: {
    anonKiB: (t) => 200 * MiB + clamp((t - 60) / 90, 0, 1) * 1.4 * GiB * (t < QUIET_S ? 1 : 0),
    cacheFillKiBPerS: () => 0,
    active: (t) => t >= 60 && t < QUIET_S,
  },
};

interface GuestSim {
  name: string;
  w: Workload;
  memKiB: number;
  targetKiB: number;
  cacheKiB: number;
  /** The workload was OOM-killed and stays dead until its next phase. */
  killedUntilPhaseEnd: boolean;
  stalledS: number;
  majorFaults: number;
  lastMajorFaults: number;
  oomKills: number;
  workDemandedS: number;
  workDoneS: number;
  stats: { availableKiB: number; unusedKiB: number; diskCachesKiB: number; majorFaultsPerS: number; atS: number } | null;
}

export interface PolicyRow {
  policy: string;
  givenBackGiBs: number;
  overBudgetS: number;
  oomKills: number;
  majorFaults: number;
  workLostPct: number;
  spikeServedS: number | null;
  settledAfterQuietS: number | null;
  resizeCommands: number;
}

/** Run the scenario under one policy (null: no policy). Pure. */
export function simulate(policy: Policy<unknown> | null): PolicyRow {
  // Every row starts with the budget split evenly (currentMemory 1.25 GiB of a 2 GiB maximum).
  const startKiB = Math.floor(BUDGET_KIB / 3 / 1024) * 1024;
  const guests: GuestSim[] = Object.entries(WORKLOADS).map(([name, w]) => ({
    name, w, memKiB: startKiB, targetKiB: startKiB, cacheKiB: 0, killedUntilPhaseEnd: false, stalledS: 0,
    majorFaults: 0, lastMajorFaults: 0, oomKills: 0, workDemandedS: 0, workDoneS: 0, stats: null,
  }));
  const state = policy?.initialState();
  let givenBack = 0;
  let overBudget = 0;
  let commands = 0;
  let spikeServed: number | null = null;
  let lastCommandAfterQuiet: number | null = null;
  let nextPolicyS = 0;
  const steps = Math.round(END_S / DT);
  for (let i = 0; i < steps; i++) {
    const t = i * DT;
    for (const g of guests) {
      // The resize moves toward its target at the actuator's speed.
      if (g.memKiB < g.targetKiB) g.memKiB = Math.min(g.targetKiB, g.memKiB + GROW_KIB_PER_S * DT);
      else if (g.memKiB > g.targetKiB) g.memKiB = Math.max(g.targetKiB, g.memKiB - SHRINK_KIB_PER_S * DT);
      const active = g.w.active(t);
      if (!active) g.killedUntilPhaseEnd = false;
      const anon = g.killedUntilPhaseEnd ? 60 * MiB : g.w.anonKiB(t);
      const room = g.memKiB - KERNEL_KIB;
      // Page cache fills what is free and is dropped first when memory gets tight.
      g.cacheKiB = clamp(g.cacheKiB + g.w.cacheFillKiBPerS(t) * DT, 0, Math.max(0, room - anon));
      const fits = anon <= room;
      // A running workload needs ~32 MiB of its own file pages (binaries, libraries) in memory;
      // with less it refaults them. An idle guest with a full page cache refaults nothing.
      const tight = active && room - anon < 32 * MiB;
      if (tight) g.majorFaults += (fits ? 500 : 5000) * DT;
      if (active && !g.killedUntilPhaseEnd) {
        g.workDemandedS += DT;
        if (fits) { g.workDoneS += DT * (tight ? 0.7 : 1); g.stalledS = 0; } else { g.stalledS += DT; }
        if (g.stalledS >= OOM_AFTER_S) { g.oomKills++; g.killedUntilPhaseEnd = true; g.stalledS = 0; }
      } else if (active) {
        g.workDemandedS += DT; // killed: the work is lost
      }
      if (g.name === 'alloc' && spikeServed === null && t >= SPIKE_S + 2 && fits && !g.killedUntilPhaseEnd) spikeServed = t - SPIKE_S;
      // Guest statistics, refreshed every second (stats period 1 s).
      if (Math.abs(t - Math.round(t)) < DT / 2) {
        const availableKiB = Math.max(0, room - anon);
        g.stats = { availableKiB, unusedKiB: Math.max(0, availableKiB - g.cacheKiB), diskCachesKiB: g.cacheKiB, majorFaultsPerS: g.majorFaults - g.lastMajorFaults, atS: t };
        g.lastMajorFaults = g.majorFaults;
      }
      givenBack += (MAX_KIB - g.memKiB) * DT;
    }
    const total = guests.reduce((s, g) => s + g.memKiB, 0);
    if (total > BUDGET_KIB + MiB) overBudget += DT;
    if (policy && t >= nextPolicyS - 1e-9) {
      nextPolicyS += policy.periodS;
      const snapshot: Snapshot = {
        nowS: t,
        host: { memTotalKiB: 24 * GiB, memAvailableKiB: 24 * GiB - total, guestBudgetKiB: BUDGET_KIB },
        guests: guests.map((g): GuestSnapshot => ({
          name: g.name, currentKiB: Math.round(g.memKiB), maxKiB: MAX_KIB,
          settings: { enabled: true, floorKiB: FLOOR_KIB, ceilingKiB: MAX_KIB, shares: 1000 },
          signals: g.stats && { availableKiB: g.stats.availableKiB, unusedKiB: g.stats.unusedKiB, diskCachesKiB: g.stats.diskCachesKiB,
            majorFaultsPerS: g.stats.majorFaultsPerS, swapInKiBPerS: 0, ageS: t - g.stats.atS },
        })),
      };
      const d = policy.decide(snapshot, state);
      for (const a of d.actions) {
        const g = guests.find((x) => x.name === a.name)!;
        g.targetKiB = a.targetKiB;
        commands++;
        if (t >= QUIET_S) lastCommandAfterQuiet = t;
      }
    }
  }
  const demanded = guests.reduce((s, g) => s + g.workDemandedS, 0);
  const done = guests.reduce((s, g) => s + g.workDoneS, 0);
  return {
    policy: policy?.name ?? 'none',
    givenBackGiBs: givenBack / GiB,
    overBudgetS: overBudget,
    oomKills: guests.reduce((s, g) => s + g.oomKills, 0),
    majorFaults: Math.round(guests.reduce((s, g) => s + g.majorFaults, 0)),
    workLostPct: demanded ? (1 - done / demanded) * 100 : 0,
    spikeServedS: spikeServed,
    settledAfterQuietS: policy ? (lastCommandAfterQuiet === null ? 0 : lastCommandAfterQuiet - QUIET_S) : null,
    resizeCommands: commands,
  };
}

export function runPolicySim(): PolicyRow[] {
  return [null, proxmoxPolicy, momPolicy, virtmemPolicy()].map((p) => simulate(p as Policy<unknown> | null));
}

export function formatPolicyTable(rows: PolicyRow[]): string {
  const f = (x: number | null, d = 1): string => (x === null ? '—' : x.toFixed(d));
  const best = Math.max(...rows.filter((r) => r.policy === 'proxmox' || r.policy === 'mom').map((r) => r.givenBackGiBs));
  const lines = [
    `SIMULATION (no QEMU): 3 guests, max 2 GiB, floor 384 MiB, each starting at a third of the host budget of ${BUDGET_KIB / GiB} GiB, ${END_S} s, quiet from ${QUIET_S} s, spike +900 MiB at ${SPIKE_S} s`,
    '',
    '| policy | given back (GiB·s) | vs best of Proxmox/MoM | over budget (s) | OOM kills | major faults | work lost | spike served (s) | settled after quiet (s) | resize commands |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.policy} | ${f(r.givenBackGiBs)} | ${best > 0 ? `${(r.givenBackGiBs / best).toFixed(2)}x` : '—'} | ${f(r.overBudgetS)} | ${r.oomKills} | ${r.majorFaults} | ${f(r.workLostPct)} % | ${f(r.spikeServedS)} | ${f(r.settledAfterQuietS)} | ${r.resizeCommands} |`),
  ];
  return lines.join('\n') + '\n';
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const rows = runPolicySim();
  process.stdout.write(process.argv.includes('--json') ? JSON.stringify(rows, null, 2) + '\n' : formatPolicyTable(rows));
}
