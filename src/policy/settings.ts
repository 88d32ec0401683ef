/**
 * A domain's policy settings with their defaults filled in. (The XML form, under <metadata> in
 * virtmem's namespace, is in src/domain/xml.ts.)
 */
import type { DomainDef, PolicyDef } from '../domain/definition.js';
import type { PolicySettings } from './types.js';
import { MiB } from './types.js';

export const DEFAULT_SHARES = 1000;

/**
 * The settings the policy works with: floor default a quarter of the most the guest can have
 * (at least 128 MiB), ceiling default that most (the hot-plug ceiling, or the maximum), shares 1000.
 */
export function effectivePolicy(def: DomainDef): PolicySettings {
  const p: PolicyDef = def.policy ?? { enabled: false };
  const most = def.memory.hotplug?.ceilingKiB ?? def.memory.maxKiB;
  const ceilingKiB = p.ceilingKiB ?? most;
  const floorKiB = p.floorKiB ?? Math.min(ceilingKiB, Math.max(128 * MiB, Math.round(most / 4 / 1024) * 1024));
  return { enabled: p.enabled, floorKiB, ceilingKiB, shares: p.shares ?? DEFAULT_SHARES };
}
