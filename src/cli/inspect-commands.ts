/**
 * Commands that look inside a running guest's memory: `translate` (GVA -> GPA -> HVA -> HPA)
 * and `memmap` (the guest-physical map with host addresses and residency). Handlers parse,
 * call the driver and format.
 */
import { VirtError, memoryMapJson, translationJson, type ReadPreference } from '../driver/api.js';
import { UsageError } from './args.js';
import type { Command, CommandContext } from './commands.js';

// The formatting loads on demand, so other commands do not pay for it at start-up.
const formats = (): Promise<typeof import('./inspect-format.js')> => import('./inspect-format.js');

const json = (ctx: CommandContext, value: unknown): void => ctx.out(JSON.stringify(value, null, 2) + '\n');

/**
 * A 64-bit address as people copy it from QEMU, /proc/kallsyms or a debugger: hexadecimal,
 * with or without 0x, `_` or a backtick allowed between digits (ffffffff`81000000).
 * @throws UsageError when it is not such a number or exceeds 64 bits.
 */
export function parseAddress(text: string, what: string): bigint {
  const digits = text.trim().replace(/^0x/i, '').replace(/[_`]/g, '');
  if (!/^[0-9a-fA-F]{1,16}$/.test(digits)) {
    throw new UsageError(`invalid ${what} '${text}': expected a hexadecimal number of at most 64 bits (0x optional)`);
  }
  return BigInt(`0x${digits}`);
}

function viaOption(text: string | undefined): ReadPreference {
  if (text === undefined || text === 'auto') return 'auto';
  if (text === 'proc-mem' || text === 'monitor') return text;
  throw new UsageError(`invalid --via '${text}': expected auto, proc-mem or monitor`);
}

export const INSPECT_COMMANDS: Command[] = [
  {
    name: 'translate',
    summary: 'walk the guest page tables: guest-virtual -> guest-physical -> host-virtual -> host-physical',
    positionals: ['domain', 'address'], required: 2, options: ['cr3', 'cpu', 'via'],
    async run(ctx) {
      const a = ctx.args;
      const gva = parseAddress(a.positional.address!, 'address');
      const cr3Text = a.options.get('cr3');
      const cpuText = a.options.get('cpu');
      if (cpuText !== undefined && !/^[0-9]{1,4}$/.test(cpuText)) throw new UsageError(`invalid --cpu '${cpuText}': expected a vCPU number`);
      const { formatTranslation } = await formats();
      if (!ctx.driver.translate) throw new VirtError('NO_SUPPORT', 'this function is not supported by the connection driver: translate');
      const t = await ctx.driver.translate(a.positional.domain!, gva, {
        ...(cr3Text !== undefined ? { cr3: parseAddress(cr3Text, 'CR3 value') } : {}),
        ...(cpuText !== undefined ? { cpu: Number(cpuText) } : {}),
        via: viaOption(a.options.get('via')),
      });
      if (ctx.json) return json(ctx, translationJson(t));
      ctx.out(formatTranslation(t));
    },
  },
  {
    name: 'memmap',
    summary: 'guest-physical memory map: RAM, holes, devices, virtio-mem, host addresses and residency',
    positionals: ['domain'], required: 1,
    async run(ctx) {
      const { formatMemoryMap } = await formats();
      if (!ctx.driver.memoryMap) throw new VirtError('NO_SUPPORT', 'this function is not supported by the connection driver: memmap');
      const m = await ctx.driver.memoryMap(ctx.args.positional.domain!);
      if (ctx.json) return json(ctx, memoryMapJson(m));
      ctx.out(formatMemoryMap(m));
    },
  },
];
