/**
 * Commands virsh does not have: creating a domain without writing XML, building the built-in
 * guest, and the demo.
 */
import type { DomainDef, DiskDef } from '../driver/definition.js';
import { DEF_SCHEMA_VERSION } from '../driver/definition.js';
import { parseScaledKiB } from '../driver/size.js';
import { newUuid, validateDomainName } from '../driver/name.js';
import { defaultBalloon } from '../driver/validate-def.js';
import { isAbsolute, resolve } from 'node:path';
import { UsageError, type ParsedArgs } from './args.js';
import type { Command } from './commands.js';

/** Build a definition from `new`'s options. Pure apart from the uuid. */
export function definitionFromOptions(a: ParsedArgs): DomainDef {
  const name = validateDomainName(a.positional.name!);
  const opt = (k: string): string | undefined => a.options.get(k);
  const maxKiB = parseScaledKiB(opt('memory') ?? '1G', 'memory');
  const currentKiB = opt('current-memory') !== undefined ? parseScaledKiB(opt('current-memory')!, 'current memory') : maxKiB;
  const vcpusText = opt('vcpus') ?? '1';
  if (!/^[0-9]+$/.test(vcpusText)) throw new UsageError(`invalid vcpus '${vcpusText}': expected a whole number`);
  const file = (k: string): string | undefined => (opt(k) === undefined ? undefined : resolve(opt(k)!));
  const kernel = file('kernel');
  const initrd = file('initrd');
  if (!kernel && (initrd || opt('cmdline') !== undefined)) throw new UsageError('--initrd and --cmdline need --kernel');
  const disks: DiskDef[] = [];
  const diskPath = opt('disk');
  if (diskPath !== undefined) {
    disks.push({ path: isAbsolute(diskPath) ? diskPath : resolve(diskPath), format: diskPath.endsWith('.qcow2') ? 'qcow2' : 'raw', target: 'vda', bus: 'virtio', readonly: false });
  }
  const balloon = defaultBalloon();
  if (a.flags.has('no-balloon')) balloon.model = 'none';
  return {
    schemaVersion: DEF_SCHEMA_VERSION,
    name,
    uuid: newUuid(),
    vcpus: Number(vcpusText),
    memory: { maxKiB, currentKiB },
    memoryDevices: [],
    os: { ...(kernel ? { kernel } : {}), ...(initrd ? { initrd } : {}), ...(opt('cmdline') !== undefined ? { cmdline: opt('cmdline')! } : {}) },
    disks,
    balloon,
  };
}

export const EXTRA_COMMANDS: Command[] = [
  {
    name: 'new', summary: 'define a domain without XML (defaults: 1G, 1 vCPU, the built-in guest)',
    positionals: ['name'], required: 1,
    flags: ['no-balloon', 'start'], options: ['memory', 'current-memory', 'vcpus', 'kernel', 'initrd', 'cmdline', 'disk'],
    failPrefix: (a) => `Failed to define domain '${a.positional.name}'`,
    async run(ctx) {
      const def = definitionFromOptions(ctx.args);
      await ctx.driver.define(def);
      const started = ctx.args.flags.has('start') ? await ctx.driver.start(def.name) : null;
      if (ctx.json) return void ctx.out(JSON.stringify({ name: def.name, uuid: def.uuid, id: started?.id ?? null }, null, 2) + '\n');
      ctx.out(`Domain '${def.name}' defined\n${started ? `Domain '${def.name}' started\n` : ''}\n`);
    },
  },
  {
    name: 'guest-build', summary: 'build (or show) the built-in default guest from Debian packages',
    positionals: [], required: 0, flags: ['force'],
    async run(ctx) {
      const { buildDefaultGuest } = await import('../guest/build.js');
      const g = await buildDefaultGuest({ force: ctx.args.flags.has('force'), log: (l) => ctx.err(l.endsWith('\n') ? l : l + '\n') });
      if (ctx.json) return void ctx.out(JSON.stringify(g, null, 2) + '\n');
      ctx.out(`kernel  ${g.kernelPath}\ninitrd  ${g.initrdPath}\ncmdline ${g.cmdline}\n`);
    },
  },
  {
    name: 'demo', summary: 'walk through the classic virsh memory workflow on the built-in guest',
    positionals: [], required: 0, flags: ['keep'],
    async run(ctx) {
      const { runDemo } = await import('./demo.js');
      await runDemo(ctx);
    },
  },
];
