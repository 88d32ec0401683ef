/**
 * virsh domstats and domdirtyrate-calc on the native driver, as libvirt's QEMU driver answers
 * them (qemuConnectGetAllDomainStats' state, balloon and dirtyrate groups; its field names,
 * types and order), so virsh's formatting of either driver's records is the same. The other
 * groups (cpu-total, vcpu, block, ...) are libvirt's; asked for with --enforce they are refused
 * in libvirt's words, else left out, as libvirt leaves out what a driver lacks.
 */
import { calcDirtyRate, queryDirtyRate, type DirtyRateInfo } from '../../qmp/index.js';
import type { DomainDef } from '../../domain/definition.js';
import { VirtError } from '../../domain/errors.js';
import {
  STATS_GROUPS, type DirtyRateMode, type DomainStatsRecord, type DomainStatsRequest, type StatParam, type StatsGroup,
} from '../domain-memory-api.js';
import { stateCodes } from '../state-codes.js';
import type { NativeContext } from './context.js';
import { memoryStats, queryLiveMemory } from './memory.js';

/** The groups this driver reports. */
const SUPPORTED: readonly StatsGroup[] = ['state', 'balloon', 'dirtyrate'];
/** libvirt's bounds on a dirty rate measurement (MIN/MAX_DIRTYRATE_CALC_PERIOD). */
const DIRTY_RATE_SECONDS = [1, 60] as const;
/** QAPI DirtyRateStatus -> libvirt's virDomainDirtyRateStatus. */
const DIRTY_STATUS: Record<string, number> = { unstarted: 0, measuring: 1, measured: 2 };

const int = (field: string, value: number): StatParam => ({ field, value: { type: 'int', value } });
const llong = (field: string, value: number): StatParam => ({ field, value: { type: 'llong', value: BigInt(Math.trunc(value)) } });
const ullong = (field: string, value: number): StatParam => ({ field, value: { type: 'ullong', value: BigInt(Math.trunc(value)) } });

/** libvirt's dirtyrate group from QEMU's query-dirty-rate answer. Pure. */
export function dirtyRateParams(d: DirtyRateInfo): StatParam[] {
  const out = [
    int('dirtyrate.calc_status', DIRTY_STATUS[d.status] ?? 0), llong('dirtyrate.calc_start_time', d.startTimeS),
    int('dirtyrate.calc_period', d.calcTimeS), { field: 'dirtyrate.calc_mode', value: { type: 'string' as const, value: d.mode ?? 'page-sampling' } },
  ];
  if (d.status === 'measured') {
    out.push(llong('dirtyrate.megabytes_per_second', d.dirtyRateMiBps ?? 0));
    if (d.mode === 'dirty-ring') for (const v of d.vcpuRates ?? []) out.push(ullong(`dirtyrate.vcpu.${v.id}.megabytes_per_second`, v.dirtyRateMiBps));
  }
  return out;
}

/** Whether a domain passes virsh's --list-* filters (none given: every domain). */
function passes(flags: DomainStatsRequest['flags'], state: string): boolean {
  const has = (f: DomainStatsRequest['flags'][number]): boolean => flags.includes(f);
  const active = state !== 'shutoff';
  if ((has('list-active') || has('list-inactive')) && !(has('list-active') && active) && !(has('list-inactive') && !active)) return false;
  // Every native domain is persistent.
  if (has('list-transient') && !has('list-persistent')) return false;
  const states = [has('list-running') && 'running', has('list-paused') && 'paused', has('list-shutoff') && 'shutoff'].filter(Boolean);
  if (states.length > 0 || has('list-other')) return states.includes(state);
  return true;
}

/**
 * domstats: one record per domain, libvirt's fields of each group asked for.
 * @throws VirtError NO_DOMAIN (a domain named does not exist), NO_SUPPORT (--enforce with a group this driver lacks)
 */
export async function domainStats(ctx: NativeContext, req: DomainStatsRequest): Promise<DomainStatsRecord[]> {
  const asked = req.groups.length === 0 ? SUPPORTED : req.groups;
  const missing = asked.filter((g) => !SUPPORTED.includes(g));
  if (req.flags.includes('enforce') && missing.length > 0) {
    const bits = missing.reduce((s, g) => s | STATS_GROUPS[g], 0);
    throw new VirtError('NO_SUPPORT', `Operation not supported: Stats types bits 0x${bits.toString(16)} are not supported by this daemon`);
  }
  const groups = SUPPORTED.filter((g) => asked.includes(g));
  const defs: DomainDef[] = req.domains === null ? await ctx.store.all() : await Promise.all(req.domains.map((r) => ctx.lookup(r)));
  const out: DomainStatsRecord[] = [];
  for (const def of defs) {
    const o = await ctx.observe(def.name);
    if (req.domains === null && !passes(req.flags, o.state)) continue;
    const params: StatParam[] = [];
    const running = o.state !== 'shutoff' ? o.record : null;
    for (const g of groups) {
      if (g === 'state') {
        const c = stateCodes(o.state, o.reason);
        params.push(int('state.state', c.state), int('state.reason', c.reason));
      } else if (g === 'balloon') {
        params.push(...await balloonParams(ctx, def, running, req.signal));
      } else if (running !== null) {
        params.push(...dirtyRateParams(await ctx.monitor(def.name, (c) => queryDirtyRate(c), req.signal)));
      }
    }
    out.push({ name: def.name, params });
  }
  return out;
}

/** balloon.current and balloon.maximum (KiB), then the guest's statistics as dommemstat has them. */
async function balloonParams(ctx: NativeContext, def: DomainDef, running: { live: DomainDef } | null, signal?: AbortSignal): Promise<StatParam[]> {
  if (running === null) return [ullong('balloon.current', def.memory.currentKiB), ullong('balloon.maximum', def.memory.maxKiB)];
  const live = running.live;
  const now = await ctx.monitor(def.name, (c) => queryLiveMemory(c, live), signal);
  const out = [ullong('balloon.current', now.totalKiB), ullong('balloon.maximum', live.memory.maxKiB)];
  const ms = await memoryStats(ctx, def.name, signal ? { signal } : {});
  // libvirt's balloon group: dommemstat's statistics but "actual", last_update spelled last-update.
  for (const s of ms.stats) if (s.name !== 'actual') out.push(ullong(`balloon.${s.name === 'last_update' ? 'last-update' : s.name}`, s.value));
  return out;
}

/**
 * domdirtyrate-calc: start measuring for `seconds` (libvirt's 1..60). page-sampling works under
 * TCG and KVM; dirty-bitmap needs KVM's dirty log (QEMU 7.2 under TCG crashes on it: refused
 * here instead); dirty-ring needs a dirty ring the native driver never sets up.
 * @throws VirtError CONFIG_UNSUPPORTED (seconds), OPERATION_INVALID (not running), NO_SUPPORT (mode),
 *   OPERATION_FAILED (QEMU refused, e.g. a measurement under way)
 */
export async function startDirtyRateCalc(ctx: NativeContext, ref: string, seconds: number, mode: DirtyRateMode | null, signal?: AbortSignal): Promise<void> {
  const [lo, hi] = DIRTY_RATE_SECONDS;
  if (!Number.isInteger(seconds) || seconds < lo || seconds > hi) {
    throw new VirtError('CONFIG_UNSUPPORTED', `unsupported configuration: seconds=${seconds} is invalid, please choose value within [${lo}, ${hi}].`);
  }
  const def = await ctx.lookup(ref);
  const rec = await ctx.requireRunning(def.name);
  if (mode === 'dirty-ring') throw new VirtError('NO_SUPPORT', 'Operation not supported: dirty-ring calculation mode requires dirty-ring feature enabled.');
  if (mode === 'dirty-bitmap' && rec.accel !== 'kvm') {
    throw new VirtError('NO_SUPPORT', "Operation not supported: dirty-bitmap calculation mode needs KVM's dirty page log; this guest runs under TCG (QEMU aborts on it there): use page-sampling");
  }
  await ctx.withDomainLock(def.name, () => ctx.monitor(def.name, (c) => calcDirtyRate(c, seconds, mode ?? undefined), signal), signal);
}
