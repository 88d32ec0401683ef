/**
 * The virtmem commands: virsh's names, arguments, units and output, plus `--json`. Handlers
 * only parse, call the driver API and format; every decision lives in the driver.
 */
import type { AffectFlags, HypervisorDriver } from '../driver/api.js';
import { parseScaledKiB } from '../domain/size.js';
import { InputTooLargeError, readInputBounded } from '../util/bounded-read.js';
import { UsageError, type CommandSyntax, type ParsedArgs } from './args.js';
import { formatDominfo, formatList, formatMemStats, stateText, stateWithReason } from './format.js';

export interface CommandContext {
  /** The driver the connection URI selected: virtmem's own, or libvirt (api.ts). */
  driver: HypervisorDriver;
  /** Whether it is virtmem's own driver (no -c, or virtmem:///...). */
  native: boolean;
  /** --state-dir as given (virtmem's own driver and its daemon). */
  stateDir: string | undefined;
  args: ParsedArgs;
  json: boolean;
  out: (text: string) => void;
  err: (text: string) => void;
  isTty: boolean;
}

export interface Command extends CommandSyntax {
  name: string;
  summary: string;
  /**
   * virsh's first error line for this command, e.g. "Failed to start domain 'x'"; null where
   * virsh prints the bare error.
   */
  failPrefix?: (args: ParsedArgs, code: string) => string | null;
  run(ctx: CommandContext): Promise<void>;
}

const json = (ctx: CommandContext, value: unknown): void => ctx.out(JSON.stringify(value, null, 2) + '\n');

/**
 * An XML file named on the command line ('-': standard input), bounded while it is read.
 * @throws UsageError in virsh's words when it cannot be opened, InputTooLargeError past the bound
 */
export async function readXmlFile(file: string): Promise<string> {
  const { MAX_XML_BYTES } = await import('../domain/xml-tree.js'); // with saxes: only when reading XML
  try {
    // Bounded while reading: `define /dev/zero` stops at the limit instead of filling memory.
    return (await readInputBounded(file, MAX_XML_BYTES, 'domain XML')).toString('utf8');
  } catch (e) {
    if (e instanceof InputTooLargeError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'No such file or directory' : code === 'EACCES' ? 'Permission denied' : code === 'EISDIR' ? 'Is a directory' : (e as Error).message;
    throw new UsageError(`Failed to open file '${file}': ${why}`);
  }
}

/** virsh's --live/--config/--current, with its mutual exclusion rule. */
export function affectFlags(a: ParsedArgs): AffectFlags {
  const current = a.flags.has('current');
  for (const f of ['live', 'config']) {
    if (current && a.flags.has(f)) throw new UsageError(`Options --current and --${f} are mutually exclusive`);
  }
  return { live: a.flags.has('live'), config: a.flags.has('config') };
}

/** Parse a value in seconds given on the command line. */
function seconds(text: string | undefined, what: string, min: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^[0-9]+$/.test(text) || Number(text) < min || Number(text) > 86_400) {
    throw new UsageError(`invalid ${what} '${text}': expected whole seconds from ${min} to 86400`);
  }
  return Number(text);
}

const dom = (a: ParsedArgs): string => a.positional.domain!;

/** The <size> argument, with virsh's first error line and the reason after it. */
function sizeArg(a: ParsedArgs): number {
  const text = a.positional.size!;
  try {
    // 0 passes here so the driver can refuse it with libvirt's own words.
    return parseScaledKiB(text, 'memory size', { minKiB: 0 });
  } catch (err) {
    throw new UsageError(`Scaled numeric value '${text}' for <size> option is malformed or out of range\nerror: ${(err as Error).message}`);
  }
}

export const COMMANDS: Command[] = [
  {
    name: 'list', summary: 'list domains', positionals: [], required: 0,
    flags: ['all', 'inactive', 'name'],
    async run(ctx) {
      const { all, inactive, name } = { all: ctx.args.flags.has('all'), inactive: ctx.args.flags.has('inactive'), name: ctx.args.flags.has('name') };
      const rows = (await ctx.driver.list()).filter((r) => (all ? true : inactive ? r.state === 'shutoff' : r.state !== 'shutoff'));
      // A definition that does not read is left out of the list, as libvirt leaves it out, and
      // named on stderr, so it is not lost from sight.
      for (const u of await ctx.driver.unreadableDefinitions?.().catch(() => []) ?? []) ctx.err(`warning: domain '${u.name}' is not listed: ${u.reason}\n`);
      if (ctx.json) return json(ctx, rows);
      ctx.out(formatList(rows, { name }));
    },
  },
  {
    name: 'dominfo', summary: 'domain information', positionals: ['domain'], required: 1,
    async run(ctx) {
      const info = await ctx.driver.info(dom(ctx.args));
      if (ctx.json) return json(ctx, info);
      ctx.out(formatDominfo(info));
    },
  },
  {
    name: 'domstate', summary: 'domain state', positionals: ['domain'], required: 1, flags: ['reason'],
    async run(ctx) {
      const s = await ctx.driver.state(dom(ctx.args));
      if (ctx.json) return json(ctx, s);
      ctx.out((ctx.args.flags.has('reason') ? stateWithReason(s.state, s.reason) : stateText(s.state)) + '\n\n');
    },
  },
  {
    name: 'start', summary: 'start a (previously defined) inactive domain', positionals: ['domain'], required: 1,
    flags: ['paused'],
    failPrefix: (a, code) => (code === 'DOMAIN_ACTIVE' ? null : `Failed to start domain '${dom(a)}'`),
    async run(ctx) {
      const rec = await ctx.driver.start(dom(ctx.args), { paused: ctx.args.flags.has('paused') });
      if (rec.accelNote) ctx.err(`warning: ${rec.accelNote}\n`);
      if (ctx.json) return json(ctx, { name: rec.live.name, id: rec.id, pid: rec.pid, accel: rec.accel, cpuModel: rec.cpuModel ?? null });
      ctx.out(`Domain '${rec.live.name}' started\n\n`);
    },
  },
  {
    name: 'shutdown', summary: 'gracefully shut down a domain (waits until it is off unless --no-wait)',
    positionals: ['domain'], required: 1, flags: ['no-wait'], options: ['timeout'],
    failPrefix: (a) => `Failed to shutdown domain '${dom(a)}'`,
    async run(ctx) {
      const noWait = ctx.args.flags.has('no-wait');
      const timeoutS = seconds(ctx.args.options.get('timeout'), 'timeout', 1) ?? 60;
      const name = dom(ctx.args);
      const r = await ctx.driver.shutdown(name, { timeoutMs: noWait ? null : timeoutS * 1000 });
      if (ctx.json) return json(ctx, { name, stopped: r.stopped });
      ctx.out(`Domain '${name}' is being shutdown\n\n`);
    },
  },
  {
    name: 'destroy', summary: 'destroy (stop) a domain', positionals: ['domain'], required: 1,
    failPrefix: (a) => `Failed to destroy domain '${dom(a)}'`,
    async run(ctx) {
      await ctx.driver.destroy(dom(ctx.args));
      if (ctx.json) return json(ctx, { name: dom(ctx.args), destroyed: true });
      ctx.out(`Domain '${dom(ctx.args)}' destroyed\n\n`);
    },
  },
  {
    name: 'define', summary: 'define (but don\'t start) a domain from an XML file (- for standard input)', positionals: ['file'], required: 1,
    failPrefix: (a) => `Failed to define domain from ${a.positional.file}`,
    async run(ctx) {
      const file = ctx.args.positional.file!;
      const xml = await readXmlFile(file);
      const r = await ctx.driver.defineXml(xml);
      for (const w of r.warnings) ctx.err(`warning: ${w}\n`);
      if (ctx.json) return json(ctx, { name: r.def.name, uuid: r.def.uuid, redefined: r.redefined, warnings: r.warnings });
      ctx.out(`Domain '${r.def.name}' defined from ${file}\n\n`);
    },
  },
  {
    name: 'undefine', summary: 'undefine a domain', positionals: ['domain'], required: 1,
    failPrefix: (a) => `Failed to undefine domain '${dom(a)}'`,
    async run(ctx) {
      const def = await ctx.driver.undefine(dom(ctx.args));
      if (ctx.json) return json(ctx, { name: def.name, undefined: true });
      ctx.out(`Domain '${def.name}' has been undefined\n\n`);
    },
  },
  {
    name: 'dumpxml', summary: 'domain information in XML', positionals: ['domain'], required: 1, flags: ['inactive'],
    async run(ctx) {
      const xml = await ctx.driver.dumpXml(dom(ctx.args), { inactive: ctx.args.flags.has('inactive') });
      if (ctx.json) return json(ctx, { xml });
      // virsh prints libvirt's document (ending in a newline) and one more newline. The native
      // driver's output keeps its own shape (its tests pin it).
      const virshTail = ctx.native ? '' : '\n';
      ctx.out(xml.endsWith('\n') ? xml + virshTail : xml + '\n');
    },
  },
  {
    name: 'setmem', summary: 'change memory allocation (the balloon target)', positionals: ['domain', 'size'], required: 2,
    flags: ['live', 'config', 'current', 'wait', 'force'], options: ['timeout'],
    async run(ctx) {
      const flags = affectFlags(ctx.args);
      const kib = sizeArg(ctx.args);
      const wait = ctx.args.flags.has('wait');
      const timeoutS = seconds(ctx.args.options.get('timeout'), 'timeout', 1);
      if (timeoutS !== undefined && !wait) throw new UsageError('--timeout requires --wait');
      const progress = wait && ctx.isTty && !ctx.json ? progressPrinter(ctx) : undefined;
      const r = await ctx.driver.setMemory(dom(ctx.args), kib, {
        ...flags, current: ctx.args.flags.has('current'), wait, force: ctx.args.flags.has('force'),
        ...(timeoutS !== undefined ? { timeoutMs: timeoutS * 1000 } : {}),
        ...(progress ? { onProgress: progress } : {}),
      }).finally(() => progress && ctx.err('\n'));
      if (ctx.json) return json(ctx, r);
      // Like virsh, a plain setmem only requests the change; --wait confirms it.
      ctx.out(wait && r.live ? `Domain '${dom(ctx.args)}' reached ${r.actualKiB} KiB\n\n` : '\n');
    },
  },
  {
    name: 'setmaxmem', summary: 'change maximum memory limit', positionals: ['domain', 'size'], required: 2,
    flags: ['live', 'config', 'current'],
    failPrefix: () => 'Unable to change MaxMemorySize',
    async run(ctx) {
      const flags = affectFlags(ctx.args);
      const kib = sizeArg(ctx.args);
      const r = await ctx.driver.setMaxMemory(dom(ctx.args), kib, flags);
      if (ctx.json) return json(ctx, { maxMemoryKiB: kib, ...r });
      ctx.out('\n');
    },
  },
  {
    name: 'dommemstat', summary: 'get memory statistics for a domain (--period: set how often the guest reports)',
    positionals: ['domain'], required: 1, flags: ['live', 'config', 'current'], options: ['period'],
    failPrefix: (a) => (a.options.has('period') ? 'Unable to change balloon collection period.' : `Failed to get memory statistics for domain ${dom(a)}`),
    async run(ctx) {
      const flags = affectFlags(ctx.args);
      const period = ctx.args.options.get('period');
      if (period !== undefined) {
        // virsh: --period only changes the period (live/config/current) and prints nothing.
        if (/^-[0-9]+$/.test(period)) throw new UsageError(`Invalid collection period value '${period}'`);
        if (!/^[0-9]+$/.test(period)) throw new UsageError(`Numeric value '${period}' for <period> option is malformed or out of range`);
        const r = await ctx.driver.setStatsPeriod(dom(ctx.args), Number(period), flags);
        if (ctx.json) return json(ctx, { periodS: Number(period), ...r });
        ctx.out('\n');
        return;
      }
      const ms = await ctx.driver.memoryStats(dom(ctx.args));
      if (ctx.json) return json(ctx, ms);
      ctx.out(formatMemStats(ms));
    },
  },
  {
    name: 'qemu-monitor-command', summary: 'QEMU Monitor Command', positionals: ['domain', 'command...'], required: 2,
    flags: ['hmp', 'pretty'], restMarkers: ['cmd'],
    async run(ctx) {
      const hmp = ctx.args.flags.has('hmp');
      const r = await ctx.driver.monitorCommand(dom(ctx.args), ctx.args.rest.join(' '), { hmp });
      if (typeof r === 'string') {
        if (ctx.json) return json(ctx, { output: r });
        ctx.out(r + '\n\n'); // HMP text as QEMU sent it (CRLF included), then virsh's two newlines
        return;
      }
      ctx.out(ctx.args.flags.has('pretty') || ctx.json ? JSON.stringify(r, null, 2) + '\n' : JSON.stringify(r) + '\n\n');
    },
  },
];

/** A one-line progress bar on stderr for `setmem --wait` on a terminal. */
function progressPrinter(ctx: CommandContext): (p: { actualKiB: number; targetKiB: number; startKiB: number; elapsedMs: number }) => void {
  return (p) => {
    const total = Math.abs(p.targetKiB - p.startKiB) || 1;
    const moved = Math.abs(p.actualKiB - p.startKiB);
    const frac = Math.min(1, moved / total);
    const width = 30;
    const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.');
    const rate = p.elapsedMs > 0 ? (moved / 1024) / (p.elapsedMs / 1000) : 0;
    ctx.err(`\r[${bar}] ${(moved / 1024).toFixed(0)}/${(total / 1024).toFixed(0)} MiB  ${rate.toFixed(0)} MiB/s  now ${p.actualKiB} KiB`);
  };
}
