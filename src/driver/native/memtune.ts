/**
 * A domain's memory cgroup limits (<memtune>) read and changed: in the definition (config) and
 * on the running QEMU's cgroup (live), as libvirt's virDomainSetMemoryParameters does for
 * `virsh memtune`. Limits not named in a change stay as they are; null removes one.
 */
import type { MemtuneDef } from '../../domain/definition.js';
import { validateMemtune } from '../../domain/validate-memory.js';
import { resolveAffect } from '../memory/rules.js';
import type { AffectOptions } from '../api.js';
import type { NativeContext } from './context.js';
import { readMemtune, setLiveMemtune } from './cgroup.js';
import { writeRunRecord } from './run-status.js';

/** A change of some limits, KiB; null is unlimited. */
export type MemtuneChange = { [K in keyof MemtuneDef]?: number | null };

/** `base` with `change` applied, validated (libvirt's rules: swap_hard_limit >= hard_limit). */
export function applyMemtuneChange(base: MemtuneDef | undefined, change: MemtuneChange): MemtuneDef | undefined {
  const next: Record<string, number> = { ...base };
  for (const [k, v] of Object.entries(change)) {
    if (v === null) delete next[k];
    else if (v !== undefined) next[k] = v;
  }
  return validateMemtune(next);
}

/**
 * Sets memory limits. Live: the running QEMU's cgroup gets them at once (created, with QEMU moved
 * in, when the domain started without limits). Config: the definition keeps them for the next
 * start.
 * @throws VirtError INVALID_ARG (a bad value), OPERATION_INVALID (live on a shut-off domain),
 *   NO_SUPPORT / OPERATION_FAILED from the host's cgroups
 */
export async function setMemtune(ctx: NativeContext, ref: string, change: MemtuneChange, flags: AffectOptions = {}): Promise<{ live: boolean; config: boolean }> {
  const { name } = await ctx.lookup(ref);
  return ctx.withDomainLock(name, async () => {
    const def = await ctx.current(name, ref);
    const o = await ctx.observe(name);
    const target = resolveAffect(flags, o.state !== 'shutoff');
    if (target.live) {
      const rec = await ctx.requireRunning(name);
      const next = applyMemtuneChange(rec.live.memtune, change);
      await setLiveMemtune(ctx.paths.root, name, rec.pid, next ?? {});
      const { memtune: _old, ...rest } = rec.live;
      rec.live = next === undefined ? rest : { ...rest, memtune: next };
      await writeRunRecord(ctx.paths.run(name), rec);
    }
    if (target.config) {
      const next = applyMemtuneChange(def.memtune, change);
      const { memtune: _old, ...rest } = def;
      await ctx.store.save(next === undefined ? rest : { ...rest, memtune: next });
    }
    return target;
  }, flags.signal);
}

/** The limits: of the running QEMU's cgroup as the kernel holds them (live), else the definition's. */
export async function memtune(ctx: NativeContext, ref: string, opts: { live?: boolean } = {}): Promise<MemtuneDef> {
  const def = await ctx.lookup(ref);
  if (!opts.live) return def.memtune ?? {};
  await ctx.requireRunning(def.name);
  return readMemtune(ctx.paths.root, def.name);
}
