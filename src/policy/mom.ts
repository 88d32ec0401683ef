/**
 * oVirt MoM's balloon policy (vdsm's mom.d/02-balloon.policy), ported for comparison: every
 * 10 s, when host free memory is below 20 % every guest shrinks by at most 5 % per round toward
 * used + a free share scaled by host pressure; otherwise every ballooned guest grows by 5 %
 * (at least to used + 20 % of its maximum). Changes below 0.25 % are skipped. Read from the
 * published policy file and written anew; "used" is balloon_cur - mem_unused as in MoM.
 */
import type { Decision, Policy, Snapshot } from './types.js';

export const MOM = {
  periodS: 10,
  pressureThreshold: 0.20,
  pressureCritical: 0.05,
  minGuestFreePercent: 0.20,
  maxBalloonChangePercent: 0.05,
  minBalloonChangePercent: 0.0025,
} as const;

export const momPolicy: Policy<null> = {
  name: 'mom',
  periodS: MOM.periodS,
  initialState: () => null,
  decide(s: Snapshot): Decision {
    const managed = s.guests.filter((g) => g.settings.enabled);
    // With a budget, "host free" is what is left of it; else the host's own MemAvailable.
    const hostFreePct = s.host.guestBudgetKiB !== null
      ? Math.max(0, s.host.guestBudgetKiB - managed.reduce((sum, g) => sum + g.currentKiB, 0)) / s.host.guestBudgetKiB
      : s.host.memAvailableKiB / s.host.memTotalKiB;
    const shrink = hostFreePct < MOM.pressureThreshold;
    const decision: Decision = { actions: [], holds: [] };
    for (const g of managed) {
      const cur = g.currentKiB;
      const max = Math.min(g.settings.ceilingKiB, g.maxKiB);
      if (!g.signals) { decision.holds.push({ name: g.name, reason: 'no guest statistics' }); continue; }
      const used = cur - g.signals.unusedKiB;
      let size: number;
      if (shrink) {
        const freePct = hostFreePct <= MOM.pressureCritical ? -0.05 + hostFreePct : MOM.minGuestFreePercent * (hostFreePct / MOM.pressureThreshold);
        const min = used + freePct * cur;
        size = Math.max(cur * (1 - MOM.maxBalloonChangePercent), min);
        if (size > cur) { decision.holds.push({ name: g.name, reason: 'host under pressure, guest has no room to give' }); continue; }
      } else {
        if (cur >= max) { decision.holds.push({ name: g.name, reason: 'at its maximum' }); continue; }
        const min = used + MOM.minGuestFreePercent * max;
        size = Math.max(Math.min(cur * (1 + MOM.maxBalloonChangePercent), max), min);
      }
      // MoM itself has no floor; the benchmark's floor is applied as every policy's guard rail.
      size = Math.trunc(Math.min(Math.max(size, g.settings.floorKiB), max));
      if (Math.abs(size - cur) <= MOM.minBalloonChangePercent * cur) {
        decision.holds.push({ name: g.name, reason: 'change too small' });
        continue;
      }
      decision.actions.push({ name: g.name, fromKiB: cur, targetKiB: size, reason: `MoM ${shrink ? 'shrink' : 'grow'} (host free ${(hostFreePct * 100).toFixed(1)} %)` });
    }
    return decision;
  },
};
