/**
 * virsh memtune and numatune on the native driver, as libvirt's QEMU driver answers them
 * (qemuDomain{Get,Set}{Memory,Numa}Parameters): the live side is the running QEMU's cgroup and
 * run record, the config side the definition, chosen by libvirt's live/config/current; the
 * checks are libvirt's, in its order and words, and every one is made before anything changes.
 */
import { withAutoPlacement } from './memory-start.js';
import type { DomainDef, MemtuneDef, NumatuneDef } from '../../domain/definition.js';
import { VirtError, invalidArg } from '../../domain/errors.js';
import { formatIdSet, parseIdSet } from '../../domain/node-set.js';
import { validateDomainDef } from '../../domain/validate-def.js';
import { resolveAffect } from '../memory/rules.js';
import {
  MEMORY_PARAMETER_FIELDS, NUMA_MODES, type DeviceFlags, type MemoryParameter, type MemoryParametersUpdate, type NumaParameters, type NumaParametersUpdate,
} from '../domain-memory-api.js';
import type { NativeContext } from './context.js';
import { hostControllers, readMemtune, setLiveCpusetMems } from './cgroup.js';
import { setMemtune } from './memtune.js';
import { writeRunRecord } from './run-status.js';
import { listNodeIds } from './host/numa-nodes.js';

/**
 * The side a read looks at: the definition when config is asked (or the domain is off), else the
 * running QEMU.
 * @throws VirtError OPERATION_INVALID (--live on a shut-off domain)
 */
async function readSide(ctx: NativeContext, ref: string, flags: DeviceFlags): Promise<{ def: DomainDef; live: { name: string } | null; liveDef: DomainDef | null }> {
  const def = await ctx.lookup(ref);
  const o = await ctx.observe(def.name);
  const side = resolveAffect(flags, o.state !== 'shutoff');
  if (side.config || o.state === 'shutoff') return { def, live: null, liveDef: null };
  // A running guest's automatic placement reads as the nodes it was given, as libvirt's does.
  return { def, live: { name: def.name }, liveDef: withAutoPlacement(o.record.live, o.record.autoNodes) };
}

/** The limits libvirt's QEMU driver has (no min_guarantee: that is a VMware and LXC setting there). */
const QEMU_LIMITS = MEMORY_PARAMETER_FIELDS.filter(([, field]) => field !== 'min_guarantee');

/**
 * memtune's read: hard_limit, soft_limit and swap_hard_limit (KiB, null unlimited) as libvirt's
 * QEMU driver lists them.
 * @throws VirtError NO_DOMAIN, OPERATION_INVALID
 */
export async function memoryParameters(ctx: NativeContext, ref: string, flags: DeviceFlags = {}): Promise<MemoryParameter[]> {
  const { def, live } = await readSide(ctx, ref, flags);
  const t: MemtuneDef = live ? await readMemtune(ctx.paths.root, live.name) : def.memtune ?? {};
  return QEMU_LIMITS.map(([, field, key]) => ({ field, valueKiB: t[key] ?? null }));
}

/**
 * memtune's change. libvirt's rule first (hard_limit may not pass swap_hard_limit, taking the
 * limits the domain has for those not given), then the cgroup (live) and the definition (config).
 * @throws VirtError INVALID_ARG, OPERATION_INVALID, NO_SUPPORT / CONFIG_UNSUPPORTED / OPERATION_FAILED from the cgroups
 */
export async function setMemoryParameters(ctx: NativeContext, ref: string, update: MemoryParametersUpdate, flags: DeviceFlags = {}): Promise<void> {
  // libvirt's QEMU driver takes these three (virTypedParamsValidate); <memtune><min_guarantee> in a definition stays possible.
  if (update.minGuaranteeKiB !== undefined) throw invalidArg("argument unsupported: parameter 'min_guarantee' not supported");
  const def = await ctx.lookup(ref);
  const o = await ctx.observe(def.name);
  const now = o.state !== 'shutoff' ? o.record.live.memtune : def.memtune;
  if (update.hardLimitKiB !== undefined || update.swapHardLimitKiB !== undefined) {
    const limit = (v: number | null | undefined, old: number | undefined): number => (v === undefined ? old ?? Infinity : v ?? Infinity);
    if (limit(update.hardLimitKiB, now?.hardLimitKiB) > limit(update.swapHardLimitKiB, now?.swapHardLimitKiB)) {
      throw invalidArg('invalid argument: memory hard_limit tunable value must be lower than or equal to swap_hard_limit');
    }
  }
  await setMemtune(ctx, ref, update, flags);
}

/** The <numatune> memory mode and nodeset as libvirt's numbers and text (strict and '' when none). */
function numaOf(t: NumatuneDef | undefined): NumaParameters {
  const m = t?.memory;
  return { mode: m ? NUMA_MODES.indexOf(m.mode) : 0, nodeset: m && 'hostNodes' in m ? formatIdSet(m.hostNodes) : '' };
}

/**
 * numatune's read.
 * @throws VirtError NO_DOMAIN, OPERATION_INVALID
 */
export async function numaParameters(ctx: NativeContext, ref: string, flags: DeviceFlags = {}): Promise<NumaParameters> {
  const { def, liveDef } = await readSide(ctx, ref, flags);
  return numaOf((liveDef ?? def).numatune);
}

/** <numatune> with the memory mode and/or nodeset changed (virDomainNumatuneSet), or the reason it cannot be. */
function withNuma(def: DomainDef, mode: number | undefined, nodes: number[] | undefined, validate = true): DomainDef {
  if (mode === undefined && nodes === undefined) return def;
  const old = def.numatune?.memory;
  const hostNodes = nodes ?? (old && 'hostNodes' in old ? old.hostNodes : undefined);
  if (hostNodes === undefined) throw new VirtError('CONFIG_UNSUPPORTED', "unsupported configuration: nodeset for NUMA memory tuning must be set if 'placement' is 'static'");
  const memory = { mode: NUMA_MODES[mode ?? NUMA_MODES.indexOf(old?.mode ?? 'strict')]!, hostNodes };
  const next = { ...def, numatune: { ...def.numatune, memory } };
  return validate ? validateDomainDef(next) : next;
}

/**
 * numatune's change, checked as libvirt checks it: the mode's range, the nodeset's syntax and
 * that it names a node; on a running domain the mode cannot change, a strict nodeset cannot
 * change, and any other nodeset change needs restrictive mode (the cgroup's cpuset.mems moves).
 * @throws VirtError INVALID_ARG, OPERATION_INVALID, CONFIG_UNSUPPORTED
 */
export async function setNumaParameters(ctx: NativeContext, ref: string, update: NumaParametersUpdate, flags: DeviceFlags = {}): Promise<void> {
  const { mode } = update;
  if (mode !== undefined && (!Number.isInteger(mode) || mode < 0 || mode >= NUMA_MODES.length)) throw invalidArg(`invalid argument: unsupported numatune mode: '${mode}'`);
  let nodes: number[] | undefined;
  if (update.nodeset !== undefined) {
    const parsed = parseIdSet(update.nodeset);
    if (parsed === null) throw invalidArg(`invalid argument: Failed to parse bitmap '${update.nodeset}'`);
    if (parsed.length === 0) throw new VirtError('OPERATION_INVALID', `Requested operation is not valid: Invalid nodeset of 'numatune': ${update.nodeset}`);
    nodes = parsed;
  }
  const { name } = await ctx.lookup(ref);
  await ctx.withDomainLock(name, async () => {
    const def = await ctx.current(name, ref);
    const o = await ctx.observe(name);
    const side = resolveAffect(flags, o.state !== 'shutoff');
    let live: DomainDef | null = null;
    if (side.live && o.state !== 'shutoff') {
      const rec = o.record;
      if ((await hostControllers()).cpuset === undefined) throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: cgroup cpuset controller is not mounted');
      const current = numaOf(rec.live.numatune);
      if (mode !== undefined && rec.live.numatune?.memory !== undefined && current.mode !== mode) {
        throw new VirtError('OPERATION_INVALID', "Requested operation is not valid: can't change numatune mode for running domain");
      }
      if (mode === 0) {
        // libvirt compares the nodeset given (none: empty) with the domain's.
        if (formatIdSet(nodes ?? []) !== current.nodeset) throw new VirtError('OPERATION_INVALID', "Requested operation is not valid: can't change nodeset for strict mode for running domain");
      } else {
        if (nodes !== undefined) {
          if (rec.live.numatune?.memory !== undefined && rec.live.numatune.memory.mode !== 'restrictive') {
            throw new VirtError('OPERATION_INVALID', 'Requested operation is not valid: change of nodeset for running domain requires restrictive numa mode');
          }
          const host = await listNodeIds('/sys');
          const missing = nodes.find((n) => !host.includes(n));
          if (missing !== undefined) throw new VirtError('CONFIG_UNSUPPORTED', `unsupported configuration: NUMA node ${missing} is unavailable`);
        }
        live = withNuma(rec.live, mode, nodes, false); // the live definition: checked above, as libvirt checks it
      }
    }
    const config = side.config ? withNuma(def, mode, nodes) : null;
    // Everything is checked: now the changes.
    if (live !== null && o.state !== 'shutoff') {
      if (nodes !== undefined) await setLiveCpusetMems(ctx.paths.root, name, o.record.pid, nodes);
      o.record.live = live;
      await writeRunRecord(ctx.paths.run(name), o.record);
    }
    if (config !== null) await ctx.store.save(config);
  }, flags.signal);
}
