/**
 * Proxmox VE's automatic ballooning, ported faithfully for side-by-side comparison: the
 * algorithm of pve-manager's PVE/AutoBalloon.pm (compute_alg1) and its caller in
 * PVE/Service/pvestatd.pm (every 10 s: keep host memory use at 80 % of MemTotal, move each VM by
 * at most 100 MiB per round). Read from the published source and checked against its own test
 * cases (test/unit/policy-proxmox.test.ts); written anew here, in bytes as the original.
 */
import type { Decision, GuestSnapshot, Policy, Snapshot } from './types.js';

/** One VM as compute_alg1 sees it (pvestatd's vmstatus), bytes. */
export interface PveVmStatus {
  maxmem: number;
  /** Weight; undefined means the default 1000; 0 excludes the VM. */
  shares?: number;
  /** Current balloon size (0: no balloon driver). */
  balloon: number;
  /** The configured floor (0: not set, VM excluded). */
  balloon_min: number;
  /** Guest free memory (balloon statistics), 0 when unknown. */
  freemem: number;
}

/**
 * compute_alg1: distribute `goal` bytes (positive: give to VMs, negative: take back) over the
 * VMs by shares, each moving by at most `maxchange`, VMs under memory pressure served first on
 * growth and VMs with enough free memory first on shrink. Changes of 10 MiB or less are ignored.
 * Returns the new balloon sizes of the VMs it changed. Pure.
 */
export function computeAlg1(vmstatus: ReadonlyMap<string, PveVmStatus>, goal: number, maxchange: number): Map<string, number> {
  const res = new Map<string, number>();
  const sharesOf = (d: PveVmStatus): number => d.shares || 1000;

  const change = (idlist: string[], bytes: number): number => {
    let rest = bytes;
    let repeat = true;
    let progress = 1;
    const done = new Set<string>();
    while (rest && repeat && progress) {
      repeat = false;
      progress = 0;
      let sharesTotal = 0;
      let allocOld = 0;
      for (const id of idlist) {
        if (done.has(id)) continue;
        const d = vmstatus.get(id)!;
        const balloon = res.get(id) ?? d.balloon;
        allocOld += balloon - d.balloon_min;
        sharesTotal += sharesOf(d);
      }
      let changes = 0;
      const allocNew = allocOld + rest;
      for (const id of idlist) {
        if (done.has(id)) continue;
        const d = vmstatus.get(id)!;
        let desired = d.balloon_min + Math.trunc((allocNew / sharesTotal) * sharesOf(d));
        if (desired > d.maxmem) {
          desired = d.maxmem;
          repeat = true;
        } else if (desired < d.balloon_min) {
          desired = d.balloon_min;
          repeat = true;
        }
        let balloon: number;
        if (bytes > 0 && desired - d.balloon > 0) {
          const next = d.balloon + maxchange;
          balloon = next > desired ? desired : next;
        } else if (desired - d.balloon < 0) {
          const next = d.balloon - maxchange;
          balloon = next > desired ? next : desired;
        } else {
          done.add(id);
          continue;
        }
        const diff = balloon - d.balloon;
        if (diff !== 0) {
          const old = res.get(id) ?? d.balloon;
          res.set(id, balloon);
          const delta = balloon - old;
          if (delta !== 0) {
            changes += delta;
            progress += Math.abs(diff);
            repeat = true;
          }
        }
      }
      rest -= changes;
    }
    return rest;
  };

  const all: string[] = [];
  const pressured: string[] = [];
  const roomy: string[] = [];
  for (const [id, d] of vmstatus) {
    if (!d.balloon) continue; // no balloon driver
    if (!d.balloon_min) continue; // no floor configured
    if (d.shares !== undefined && d.shares === 0) continue;
    all.push(id);
    if (d.freemem && d.freemem > d.balloon_min * 0.25 && d.balloon >= d.balloon_min) roomy.push(id);
    else pressured.push(id);
  }
  const MiB10 = 10 * 1024 * 1024;
  if (goal > MiB10) {
    const rest = change(pressured, goal);
    if (rest >= goal) change(all, rest); // no progress: consider all VMs
  } else if (goal < -MiB10) {
    const rest = change(roomy, goal);
    if (rest <= goal) change(all, rest);
  }
  return res;
}

/** pvestatd's numbers. */
export const PVE_PERIOD_S = 10;
export const PVE_TARGET_PCT = 80;
export const PVE_MAXCHANGE_BYTES = 100 * 1024 * 1024;

const toPve = (g: GuestSnapshot): PveVmStatus => ({
  maxmem: Math.min(g.settings.ceilingKiB, g.maxKiB) * 1024,
  shares: g.settings.shares,
  balloon: g.currentKiB * 1024,
  balloon_min: g.settings.floorKiB * 1024,
  freemem: (g.signals?.unusedKiB ?? 0) * 1024,
});

/**
 * pvestatd's auto_ballooning as a Policy. Host goal: MemTotal * 80 % - used, used being
 * MemTotal - MemAvailable. With a guest budget (the benchmark's fixed host), the host is taken
 * to be one whose 80 % is exactly that budget, so goal = budget - what the guests hold.
 */
export const proxmoxPolicy: Policy<null> = {
  name: 'proxmox',
  periodS: PVE_PERIOD_S,
  initialState: () => null,
  decide(s: Snapshot): Decision {
    const managed = s.guests.filter((g) => g.settings.enabled);
    const goalBytes = s.host.guestBudgetKiB !== null
      ? (s.host.guestBudgetKiB - managed.reduce((sum, g) => sum + g.currentKiB, 0)) * 1024
      : Math.trunc(s.host.memTotalKiB * 1024 * PVE_TARGET_PCT / 100 - (s.host.memTotalKiB - s.host.memAvailableKiB) * 1024);
    const status = new Map(managed.map((g) => [g.name, toPve(g)]));
    const res = computeAlg1(status, goalBytes, PVE_MAXCHANGE_BYTES);
    const decision: Decision = { actions: [], holds: [] };
    for (const g of managed) {
      const b = res.get(g.name);
      const target = b === undefined ? g.currentKiB : Math.trunc(b / 1024);
      if (target === g.currentKiB) decision.holds.push({ name: g.name, reason: `host goal ${Math.round(goalBytes / 2 ** 20)} MiB: no change for this VM` });
      else decision.actions.push({ name: g.name, fromKiB: g.currentKiB, targetKiB: target, reason: `Proxmox compute_alg1, host goal ${Math.round(goalBytes / 2 ** 20)} MiB` });
    }
    return decision;
  },
};
