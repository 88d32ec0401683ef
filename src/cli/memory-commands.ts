/**
 * virsh's commands for a domain's memory beyond its size, on either driver: memtune, numatune,
 * attach-device, detach-device, update-memory-device, domstats and domdirtyrate-calc, with
 * virsh's arguments, checks (in its order), words and layout, plus `--json`. Handlers parse,
 * call the driver's optional members (domain-memory-api.ts) and format.
 */
import { VirtError } from '../domain/errors.js';
import {
  DIRTY_RATE_MODES, MEMORY_PARAMETER_FIELDS, NUMA_MODES, STATS_FLAGS, STATS_GROUPS, type AffectFlags, type DeviceFlags, type DirtyRateMode, type HypervisorDriver,
  type MemoryParametersUpdate, type StatsFlag, type StatsGroup, type StatValue,
} from '../driver/api.js';
import { UsageError, type ParsedArgs } from './args.js';
import { affectFlags, readXmlFile, type Command, type CommandContext } from './commands.js';
import { formatDomainStats, formatMemoryParameters, formatNumaParameters } from './format.js';
import { cIntBase0, virshInt, virshMemtuneKiB, virshScaled, virshUInt } from './virsh-values.js';

const json = (ctx: CommandContext, value: unknown): void => ctx.out(JSON.stringify(value, null, 2) + '\n');
const dom = (a: ParsedArgs): string => a.positional.domain!;

/** The driver's member, or libvirt's "not supported" naming the call virsh would make. */
function member<K extends keyof HypervisorDriver>(hv: HypervisorDriver, key: K, api: string): NonNullable<HypervisorDriver[K]> {
  const f = hv[key];
  if (typeof f !== 'function') throw new VirtError('NO_SUPPORT', `this function is not supported by the connection driver: ${api}`);
  return (f as (...a: unknown[]) => unknown).bind(hv) as NonNullable<HypervisorDriver[K]>;
}

/** virsh's VSH_EXCLUSIVE_OPTIONS for two options given by name. */
function exclusive(a: ParsedArgs, x: string, y: string): void {
  const given = (n: string): boolean => a.flags.has(n) || a.positional[n] !== undefined || a.options.has(n);
  if (given(x) && given(y)) throw new UsageError(`Options --${x} and --${y} are mutually exclusive`);
}

/** attach-device/detach-device's flags: --persistent is --config, plus --live on a running domain; none is the legacy API (live). */
async function deviceFlags(ctx: CommandContext): Promise<DeviceFlags> {
  const a = ctx.args;
  exclusive(a, 'persistent', 'current');
  const f: AffectFlags = affectFlags(a);
  const persistent = a.flags.has('persistent');
  const config = !!f.config || persistent;
  let live = !!f.live;
  if (persistent && (await ctx.driver.state(dom(a))).state !== 'shutoff') live = true;
  // virsh calls virDomainAttachDevice without flags, which is live only, as setmem's legacy call.
  if (!config && !live && !a.flags.has('current')) return { live: true };
  return { live, config };
}

/** A JSON value of a typed parameter (64-bit counters as numbers). */
const jsonValue = (v: StatValue): number | string | boolean => (typeof v.value === 'bigint' ? Number(v.value) : v.value);

/** attach-device or detach-device: the same arguments, flags and words but the verb. */
function deviceCommand(verb: 'attach' | 'detach'): Command {
  const [method, api] = verb === 'attach' ? ['attachDevice', 'virDomainAttachDeviceFlags'] as const : ['detachDevice', 'virDomainDetachDeviceFlags'] as const;
  return {
    name: `${verb}-device`, summary: `${verb} device from an XML file`, positionals: ['domain', 'file'], required: 2,
    flags: ['persistent', 'config', 'live', 'current'],
    failPrefix: (a) => `Failed to ${verb} device from ${a.positional.file}`,
    async run(ctx) {
      const flags = await deviceFlags(ctx);
      const xml = await readXmlFile(ctx.args.positional.file!);
      await member(ctx.driver, method, api)(dom(ctx.args), xml, flags);
      if (ctx.json) return json(ctx, { [`${verb}ed`]: true, live: !!flags.live, config: !!flags.config });
      ctx.out(`Device ${verb}ed successfully\n\n`);
    },
  };
}

const MEMTUNE_OPTIONS = MEMORY_PARAMETER_FIELDS.map(([opt]) => opt);
const GROUP_FLAGS = Object.keys(STATS_GROUPS) as StatsGroup[];
const LIST_FLAGS = Object.keys(STATS_FLAGS) as StatsFlag[];

export const MEMORY_COMMANDS: Command[] = [
  {
    name: 'memtune', summary: 'Get or set memory parameters', positionals: ['domain', ...MEMTUNE_OPTIONS], required: 1, numeric: MEMTUNE_OPTIONS,
    flags: ['config', 'live', 'current'],
    failPrefix: (a) => (MEMTUNE_OPTIONS.some((o) => a.positional[o] !== undefined) ? 'Unable to change memory parameters' : 'Unable to get number of memory parameters'),
    async run(ctx) {
      const a = ctx.args;
      const flags = affectFlags(a);
      const update: MemoryParametersUpdate = {};
      for (const [opt, , key] of MEMORY_PARAMETER_FIELDS) {
        if (a.positional[opt] !== undefined) update[key] = virshMemtuneKiB(a.positional[opt]!, opt);
      }
      if (Object.keys(update).length === 0) {
        const params = await member(ctx.driver, 'memoryParameters', 'virDomainGetMemoryParameters')(dom(a), flags);
        if (ctx.json) return json(ctx, { parameters: Object.fromEntries(params.map((p) => [p.field, p.valueKiB])) });
        return ctx.out(formatMemoryParameters(params));
      }
      await member(ctx.driver, 'setMemoryParameters', 'virDomainSetMemoryParameters')(dom(a), update, flags);
      if (ctx.json) return json(ctx, { set: Object.fromEntries(MEMORY_PARAMETER_FIELDS.flatMap(([, field, key]) => (update[key] === undefined ? [] : [[field, update[key]]]))) });
      ctx.out('\n');
    },
  },
  {
    name: 'numatune', summary: 'Get or set numa parameters', positionals: ['domain', 'mode', 'nodeset'], required: 1, flags: ['config', 'live', 'current'],
    failPrefix: (a) => (a.positional.mode !== undefined || a.positional.nodeset !== undefined ? 'Unable to change numa parameters' : 'Unable to get number of memory parameters'),
    async run(ctx) {
      const a = ctx.args;
      const flags = affectFlags(a);
      const { nodeset, mode: modeText } = a.positional;
      if (nodeset === '' || modeText === '') throw new UsageError('Option argument is empty');
      let mode: number | undefined;
      if (modeText !== undefined) {
        // A name, or the number of a mode newer than virsh knows (libvirt checks the range).
        const byName = (NUMA_MODES as readonly string[]).indexOf(modeText);
        const n = byName >= 0 ? byName : cIntBase0(modeText);
        if (n === null) throw new UsageError(`Invalid mode: ${modeText}`);
        mode = n;
      }
      if (mode === undefined && nodeset === undefined) {
        const p = await member(ctx.driver, 'numaParameters', 'virDomainGetNumaParameters')(dom(a), flags);
        if (ctx.json) return json(ctx, { mode: NUMA_MODES[p.mode] ?? p.mode, nodeset: p.nodeset });
        return ctx.out(formatNumaParameters(p));
      }
      await member(ctx.driver, 'setNumaParameters', 'virDomainSetNumaParameters')(dom(a), { ...(mode !== undefined ? { mode } : {}), ...(nodeset !== undefined ? { nodeset } : {}) }, flags);
      if (ctx.json) return json(ctx, { set: { ...(mode !== undefined ? { mode: NUMA_MODES[mode] ?? mode } : {}), ...(nodeset !== undefined ? { nodeset } : {}) } });
      ctx.out('\n');
    },
  },
  deviceCommand('attach'),
  deviceCommand('detach'),
  {
    name: 'update-memory-device', summary: 'update memory device of a domain', positionals: ['domain', 'alias', 'node', 'requested-size'], required: 1,
    numeric: ['node', 'requested-size'], flags: ['config', 'live', 'current', 'print-xml'],
    async run(ctx) {
      const a = ctx.args;
      const flags = affectFlags(a);
      exclusive(a, 'node', 'alias');
      const node = a.positional.node !== undefined ? virshUInt(a.positional.node, 'node') : undefined;
      const size = a.positional['requested-size'];
      const requestedKiB = size !== undefined ? Number((virshScaled(size, 'requested-size', 1024n, 2n ** 64n - 1n) + 1023n) / 1024n) : undefined;
      const printXml = a.flags.has('print-xml');
      const r = await member(ctx.driver, 'updateMemoryDevice', 'virDomainUpdateDeviceFlags')(dom(a), {
        ...(a.positional.alias !== undefined ? { alias: a.positional.alias } : {}), ...(node !== undefined ? { node } : {}),
        ...(requestedKiB !== undefined ? { requestedKiB } : {}), printXml,
      }, flags);
      if (ctx.json) return json(ctx, { xml: r.xml, updated: !printXml });
      ctx.out(printXml ? `${r.xml}\n` : '\n');
    },
  },
  {
    name: 'domstats', summary: 'get statistics about one or multiple domains', positionals: ['domain...'], required: 0,
    flags: [...GROUP_FLAGS, ...LIST_FLAGS, 'raw'],
    async run(ctx) {
      const a = ctx.args;
      const records = await member(ctx.driver, 'domainStats', 'virConnectGetAllDomainStats')({
        domains: a.rest.length > 0 ? a.rest : null,
        groups: GROUP_FLAGS.filter((g) => a.flags.has(g)),
        flags: LIST_FLAGS.filter((f) => a.flags.has(f)),
      });
      if (ctx.json) return json(ctx, { domains: records.map((r) => ({ name: r.name, stats: Object.fromEntries(r.params.map((p) => [p.field, jsonValue(p.value)])) })) });
      ctx.out(formatDomainStats(records));
    },
  },
  {
    name: 'domdirtyrate-calc', summary: "Calculate a vm's memory dirty rate", positionals: ['domain', 'seconds', 'mode'], required: 1, numeric: ['seconds'],
    async run(ctx) {
      const a = ctx.args;
      const seconds = a.positional.seconds !== undefined ? virshInt(a.positional.seconds, 'seconds') : 1;
      const modeText = a.positional.mode;
      if (modeText === '') throw new UsageError('Option argument is empty');
      if (modeText !== undefined && !(DIRTY_RATE_MODES as readonly string[]).includes(modeText)) throw new UsageError(`Unknown calculation mode '${modeText}'`);
      const mode = (modeText ?? null) as DirtyRateMode | null;
      await member(ctx.driver, 'startDirtyRateCalc', 'virDomainStartDirtyRateCalc')(dom(a), seconds, mode);
      if (ctx.json) return json(ctx, { started: true, seconds, mode: mode ?? 'page-sampling' });
      ctx.out("Start to calculate domain's memory dirty rate successfully.\n\n");
    },
  },
];
