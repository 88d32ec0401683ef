/**
 * A guest's automatic memory policy settings: what is stored (`PolicyDef` in its definition,
 * or under <metadata> in virtmem's namespace in libvirt XML: domain/xml.ts), the settings with
 * their defaults filled in, and how a change applies. Pure; both drivers use it.
 */
import type { DomainDef, PolicyDef } from './definition.js';

export const MIB_KIB = 1024;
export const DEFAULT_SHARES = 1000;

/** Per-guest policy settings, defaults filled in. */
export interface PolicySettings {
  /** The policy may resize this guest. Off by default. */
  enabled: boolean;
  /** Never below this (libvirt has no field; Proxmox calls it balloon_min). */
  floorKiB: number;
  /** Never above this; at most the guest's maximum memory. */
  ceilingKiB: number;
  /** Weight when memory is scarce (Proxmox's default is 1000; 0 is not allowed: disable instead). */
  shares: number;
}

/** A change: fields not given keep their value; null resets one to its default. */
export interface PolicySettingsChange {
  enabled?: boolean;
  floorKiB?: number | null;
  ceilingKiB?: number | null;
  shares?: number | null;
}

/**
 * The settings the policy works with: floor default a quarter of the most the guest can have
 * (at least 128 MiB), ceiling default that most (the hot-plug ceiling, or the maximum), shares 1000.
 */
export function effectivePolicy(def: Pick<DomainDef, 'policy' | 'memory'>): PolicySettings {
  return policySettings(def.policy ?? null, def.memory.hotplug?.ceilingKiB ?? def.memory.maxKiB);
}

/** The settings of a stored `PolicyDef` for a guest that can have at most `mostKiB`. */
export function policySettings(p: PolicyDef | null, mostKiB: number): PolicySettings {
  const q: PolicyDef = p ?? { enabled: false };
  const ceilingKiB = q.ceilingKiB ?? mostKiB;
  const floorKiB = q.floorKiB ?? Math.min(ceilingKiB, Math.max(128 * MIB_KIB, Math.round(mostKiB / 4 / 1024) * 1024));
  return { enabled: q.enabled, floorKiB, ceilingKiB, shares: q.shares ?? DEFAULT_SHARES };
}

/** The stored settings after `change` (validate the result before storing it). */
export function applyPolicyChange(p: PolicyDef | null | undefined, change: PolicySettingsChange): PolicyDef {
  const next: Record<string, unknown> = { ...(p ?? { enabled: false }) };
  for (const [k, v] of Object.entries(change)) {
    if (v === null) delete next[k];
    else if (v !== undefined) next[k] = v;
  }
  return next as unknown as PolicyDef;
}
