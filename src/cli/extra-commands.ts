/**
 * Commands virsh does not have: creating a domain without writing XML, building the built-in
 * guest, and the demo.
 */
import type { DomainDef, DiskDef, CpuDef } from '../domain/definition.js';
import { parseAccelRequest } from '../domain/accel.js';
import { VIRTIO_MEM_BLOCK_KIB } from '../domain/memory.js';
import { DEF_SCHEMA_VERSION } from '../domain/definition.js';
import { parseScaledKiB } from '../domain/size.js';
import { newUuid, validateDomainName } from '../domain/name.js';
import { defaultBalloon } from '../domain/validate-def.js';
import { isAbsolute, resolve } from 'node:path';
import { UsageError, type ParsedArgs } from './args.js';
import { VirtError } from '../driver/api.js';
import type { Command } from './commands.js';

/** Build a definition from `new`'s options. Pure apart from the uuid. */
export function definitionFromOptions(a: ParsedArgs): DomainDef {
  const name = validateDomainName(a.positional.name!);
  const opt = (k: string): string | undefined => a.options.get(k);
  const bootKiB = parseScaledKiB(opt('memory') ?? '1G', 'memory');
  const currentKiB = opt('current-memory') !== undefined ? parseScaledKiB(opt('current-memory')!, 'current memory') : bootKiB;
  // --max-memory above --memory: the difference is a virtio-mem region the running guest can
  // grow into without a reboot; --hotplug-ceiling reserves more address space for setmaxmem --live.
  const maxKiB = opt('max-memory') !== undefined ? parseScaledKiB(opt('max-memory')!, 'max memory') : bootKiB;
  if (maxKiB < bootKiB) throw new UsageError(`--max-memory ${opt('max-memory')} is below --memory ${opt('memory') ?? '1G'}`);
  const ceilingKiB = opt('hotplug-ceiling') !== undefined ? parseScaledKiB(opt('hotplug-ceiling')!, 'hot-plug ceiling') : maxKiB;
  if (ceilingKiB < maxKiB) throw new UsageError('--hotplug-ceiling is below --max-memory');
  const hotplug = ceilingKiB > bootKiB;
  const memoryDevices: DomainDef['memoryDevices'] = maxKiB > bootKiB
    ? [{ model: 'virtio-mem', sizeKiB: maxKiB - bootKiB, blockKiB: VIRTIO_MEM_BLOCK_KIB, requestedKiB: 0 }]
    : [];
  const vcpusText = opt('vcpus') ?? '1';
  if (!/^[0-9]+$/.test(vcpusText)) throw new UsageError(`invalid vcpus '${vcpusText}': expected a whole number`);
  const file = (k: string): string | undefined => (opt(k) === undefined ? undefined : resolve(opt(k)!));
  const kernel = file('kernel');
  const initrd = file('initrd');
  if (!kernel && (initrd || opt('cmdline') !== undefined)) throw new UsageError('--initrd and --cmdline need --kernel');
  const disks: DiskDef[] = opt('disk') === undefined ? [] : [diskFromOption(opt('disk')!)];
  const accelText = opt('accel');
  const accel = accelText === undefined ? 'auto' : parseAccelRequest(accelText, '--accel');
  const cpu = opt('cpu') === undefined ? undefined : cpuFromOption(opt('cpu')!);
  const balloon = defaultBalloon();
  if (a.flags.has('no-balloon')) balloon.model = 'none';
  if (a.flags.has('no-autodeflate')) balloon.autodeflate = false;
  if (a.flags.has('no-free-page-reporting')) balloon.freePageReporting = false;
  const vcpus = Number(vcpusText);
  return {
    schemaVersion: DEF_SCHEMA_VERSION,
    name,
    uuid: newUuid(),
    vcpus,
    ...(accel !== 'auto' ? { accel } : {}),
    ...(cpu ? { cpu } : {}),
    memory: { maxKiB, currentKiB, ...(hotplug ? { hotplug: { ceilingKiB, slots: 8 } } : {}) },
    ...memoryOptions(a, bootKiB, vcpus),
    memoryDevices,
    os: { ...(kernel ? { kernel } : {}), ...(initrd ? { initrd } : {}), ...(opt('cmdline') !== undefined ? { cmdline: opt('cmdline')! } : {}) },
    disks,
    balloon,
  };
}

/**
 * `new`'s memory configuration: --hugepages SIZE (all boot RAM on huge pages of that size),
 * --locked (RAM locked in host memory), --numa-cells N (vCPUs and boot RAM split evenly into N
 * guest NUMA cells, RAM in whole MiB, the rest to the last cell), --hard-limit / --soft-limit
 * (memory cgroup limits). Pure; the definition's validation checks the values.
 */
function memoryOptions(a: ParsedArgs, bootKiB: number, vcpus: number): Pick<DomainDef, 'memoryBacking' | 'numa' | 'memtune'> {
  const opt = (k: string): string | undefined => a.options.get(k);
  const out: Pick<DomainDef, 'memoryBacking' | 'numa' | 'memtune'> = {};
  const backing: NonNullable<DomainDef['memoryBacking']> = {};
  if (opt('hugepages') !== undefined) backing.hugepages = [{ sizeKiB: parseScaledKiB(opt('hugepages')!, 'huge page size') }];
  if (a.flags.has('locked')) backing.locked = true;
  if (Object.keys(backing).length > 0) out.memoryBacking = backing;
  const cellsText = opt('numa-cells');
  if (cellsText !== undefined) {
    const n = /^[0-9]+$/.test(cellsText) ? Number(cellsText) : NaN;
    if (!(n >= 1 && n <= vcpus)) throw new UsageError(`invalid --numa-cells '${cellsText}': a whole number from 1 to the vCPUs (${vcpus})`);
    const cellKiB = Math.floor(bootKiB / n / 1024) * 1024;
    out.numa = {
      cells: Array.from({ length: n }, (_, i) => ({
        cpus: Array.from({ length: vcpus }, (_, c) => c).filter((c) => Math.floor((c * n) / vcpus) === i),
        memoryKiB: i === n - 1 ? bootKiB - cellKiB * (n - 1) : cellKiB,
      })),
    };
  }
  const memtune: NonNullable<DomainDef['memtune']> = {};
  if (opt('hard-limit') !== undefined) memtune.hardLimitKiB = parseScaledKiB(opt('hard-limit')!, 'hard limit');
  if (opt('soft-limit') !== undefined) memtune.softLimitKiB = parseScaledKiB(opt('soft-limit')!, 'soft limit');
  if (Object.keys(memtune).length > 0) out.memtune = memtune;
  return out;
}

/**
 * `--disk PATH[,format=raw|qcow2][,readonly][,target=vdX]`, virt-install's spelling cut to what a
 * virtio disk needs (`path=PATH` is also accepted; `,,` is a comma inside the path, as in QEMU
 * and virt-install). Without format=, a `.qcow2` name means qcow2, anything else raw. Pure.
 * @throws UsageError naming --disk for an empty path or an unknown or bad setting
 */
export function diskFromOption(text: string): DiskDef {
  const fields = splitCommaList(text);
  const first = fields.shift() ?? '';
  const pathText = first.startsWith('path=') ? first.slice('path='.length) : first;
  if (pathText === '' || /^(format|readonly|target)(=|$)/.test(first)) {
    throw new UsageError(`--disk '${text}': the image path comes first (--disk PATH[,format=raw|qcow2][,readonly][,target=vdX])`);
  }
  const path = isAbsolute(pathText) ? pathText : resolve(pathText);
  const disk: DiskDef = {
    path,
    // A device node is a host block device (QEMU's host_device), as virt-install takes it.
    ...(path.startsWith('/dev/') ? { type: 'block' as const } : {}),
    format: pathText.endsWith('.qcow2') ? 'qcow2' : 'raw',
    target: 'vda',
    bus: 'virtio',
    readonly: false,
  };
  for (const field of fields) {
    const eq = field.indexOf('=');
    const key = eq < 0 ? field : field.slice(0, eq);
    const value = eq < 0 ? undefined : field.slice(eq + 1);
    if (key === 'format' && (value === 'raw' || value === 'qcow2')) disk.format = value;
    else if (key === 'format') throw new UsageError(`--disk: format '${value ?? ''}' is not supported: use format=raw or format=qcow2`);
    else if (key === 'readonly' && (value === undefined || value === 'on' || value === 'yes')) disk.readonly = true;
    else if (key === 'readonly' && (value === 'off' || value === 'no')) disk.readonly = false;
    else if (key === 'readonly') throw new UsageError(`--disk: readonly='${value}' is not on/off`);
    else if (key === 'target' && value !== undefined && /^vd[a-z]{1,3}$/.test(value)) disk.target = value;
    else if (key === 'target') throw new UsageError(`--disk: target '${value ?? ''}' is not a virtio disk name like vda or vdb`);
    else throw new UsageError(`--disk: unknown setting '${field}' (known: format=raw|qcow2, readonly, target=vdX)`);
  }
  return disk;
}

/** "a,,b,c" -> ["a,b", "c"]: commas split, a doubled comma is a literal one (QEMU's rule). Pure. */
function splitCommaList(text: string): string[] {
  const fields: string[] = [];
  let field = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== ',') field += text[i];
    else if (text[i + 1] === ',') { field += ','; i++; }
    else { fields.push(field); field = ''; }
  }
  fields.push(field);
  return fields;
}

/**
 * `--cpu`: a libvirt CPU mode (host-passthrough, host-model, maximum) or a QEMU model name
 * (custom mode). Pure.
 */
export function cpuFromOption(text: string): CpuDef {
  if (text === 'host-passthrough' || text === 'host-model' || text === 'maximum') return { mode: text };
  if (text === 'host') return { mode: 'host-passthrough' };
  if (text === 'max') return { mode: 'maximum' };
  return { mode: 'custom', model: text }; // the definition's validation checks the name
}

export const EXTRA_COMMANDS: Command[] = [
  {
    name: 'new', summary: 'define a domain without XML (defaults: 1G, 1 vCPU, the built-in guest; --max-memory: grow without reboot)',
    positionals: ['name'], required: 1,
    flags: ['no-balloon', 'no-autodeflate', 'no-free-page-reporting', 'start', 'locked'],
    options: ['memory', 'current-memory', 'max-memory', 'hotplug-ceiling', 'vcpus', 'kernel', 'initrd', 'cmdline', 'disk', 'accel', 'cpu', 'hugepages', 'numa-cells', 'hard-limit', 'soft-limit'],
    failPrefix: (a) => `Failed to define domain '${a.positional.name}'`,
    async run(ctx) {
      const def = definitionFromOptions(ctx.args);
      if (!ctx.driver.define) throw new VirtError('NO_SUPPORT', 'this function is not supported by the connection driver: new');
      await ctx.driver.define(def);
      const started = ctx.args.flags.has('start') ? await ctx.driver.start(def.name) : null;
      if (started?.accelNote) ctx.err(`warning: ${started.accelNote}\n`);
      if (ctx.json) return void ctx.out(JSON.stringify({ name: def.name, uuid: def.uuid, id: started?.id ?? null }, null, 2) + '\n');
      ctx.out(`Domain '${def.name}' defined\n${started ? `Domain '${def.name}' started\n` : ''}\n`);
    },
  },
  {
    name: 'capabilities', summary: 'what this host offers: QEMU, KVM (proven by a probe guest), CPU models, memory',
    positionals: [], required: 0, flags: ['probe'],
    async run(ctx) {
      if (!ctx.driver.capabilities) throw new VirtError('NO_SUPPORT', 'this function is not supported by the connection driver: capabilities');
      const caps = await ctx.driver.capabilities({ refresh: ctx.args.flags.has('probe') });
      if (ctx.json) return void ctx.out(JSON.stringify(caps, null, 2) + '\n');
      const { formatCapabilities } = await import('./format.js');
      ctx.out(formatCapabilities(caps));
    },
  },
  {
    name: 'guest-build', summary: 'build (or show) the built-in default guest from Debian packages (--distro debian12: a Debian 12 disk image)',
    positionals: [], required: 0, flags: ['force'], options: ['distro'],
    async run(ctx) {
      const distro = ctx.args.options.get('distro');
      if (distro !== undefined) {
        const { runDistroBuild } = await import('./distro-build.js');
        return runDistroBuild(ctx, distro);
      }
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
