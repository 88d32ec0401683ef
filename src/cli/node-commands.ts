/**
 * virsh's host memory commands, on either driver: freecell, freepages, allocpages,
 * node-memory-tune and nodememstats, with virsh's arguments, checks (in its order), words and
 * layout, plus `--json`. Handlers parse, call the driver's `node` API and format.
 */
import { VirtError } from '../domain/errors.js';
import type { HypervisorDriver, NodeMemory, NodeMemoryParametersUpdate } from '../driver/api.js';
import { ALL_CELLS } from '../driver/api.js';
import { UsageError, type ParsedArgs } from './args.js';
import type { Command, CommandContext } from './commands.js';
import { formatFreeCell, formatFreeCells, formatFreePages, formatFreeTotal, formatNodeMemStats, formatNodeMemoryParameters } from './format.js';
import { virshInt, virshScaled, virshUInt, virshULongLong } from './virsh-values.js';

const json = (ctx: CommandContext, value: unknown): void => ctx.out(JSON.stringify(value, null, 2) + '\n');

/** The driver's host memory API, or libvirt's "not supported" naming the call virsh would make. */
function nodeOf(hv: HypervisorDriver, api: string): NodeMemory {
  if (!hv.node) throw new VirtError('NO_SUPPORT', `this function is not supported by the connection driver: ${api}`);
  return hv.node;
}

/** virsh's VSH_EXCLUSIVE_OPTIONS_VAR(all, cellno). */
function exclusiveAllCellno(a: ParsedArgs): void {
  if (a.flags.has('all') && a.positional.cellno !== undefined) throw new UsageError('Options --all and --cellno are mutually exclusive');
}

/** A page size in KiB from a scaled option: a bare number is KiB, bytes round up (VIR_DIV_UP). */
function pageSizeKiB(text: string, name: string): number {
  const bytes = virshScaled(text, name, 1024n, 0xffff_ffffn);
  return Number((bytes + 1023n) / 1024n);
}

/** Cell ids as virsh takes them for --all: from the host's topology (capabilities). */
async function cellIds(node: NodeMemory): Promise<number[]> {
  return (await node.topology()).cells.map((c) => c.id);
}

const KSM_OPTIONS = [
  ['shm-pages-to-scan', 'shmPagesToScan'],
  ['shm-sleep-millisecs', 'shmSleepMillisecs'],
  ['shm-merge-across-nodes', 'shmMergeAcrossNodes'],
] as const satisfies ReadonlyArray<readonly [string, keyof NodeMemoryParametersUpdate]>;

const ksmUpdate = (a: ParsedArgs): NodeMemoryParametersUpdate => {
  const update: NodeMemoryParametersUpdate = {};
  for (const [opt, key] of KSM_OPTIONS) if (a.positional[opt] !== undefined) update[key] = virshUInt(a.positional[opt]!, opt);
  return update;
};

export const NODE_COMMANDS: Command[] = [
  {
    name: 'freecell', summary: 'NUMA free memory', positionals: ['cellno'], required: 0, numeric: ['cellno'], flags: ['all'],
    async run(ctx) {
      const a = ctx.args;
      exclusiveAllCellno(a);
      const cell = a.positional.cellno !== undefined ? virshInt(a.positional.cellno, 'cellno') : null;
      if (a.flags.has('all')) {
        const node = nodeOf(ctx.driver, 'virConnectGetCapabilities');
        const cells: Array<{ cell: number; freeBytes: number }> = [];
        for (const id of await cellIds(node)) {
          const free = await node.freeCellsBytes(id, 1);
          if (free.length !== 1) throw new VirtError('OPERATION_FAILED', `failed to get free memory for NUMA node number: ${id}`);
          cells.push({ cell: id, freeBytes: free[0]! });
        }
        if (ctx.json) return json(ctx, { cells: cells.map((c) => ({ cell: c.cell, freeKiB: Math.floor(c.freeBytes / 1024) })), totalKiB: Math.floor(cells.reduce((s, c) => s + c.freeBytes, 0) / 1024) });
        return ctx.out(formatFreeCells(cells));
      }
      if (cell !== null) {
        const free = await nodeOf(ctx.driver, 'virNodeGetCellsFreeMemory').freeCellsBytes(cell, 1);
        if (ctx.json) return json(ctx, { cell, freeKiB: Math.floor((free[0] ?? 0) / 1024) });
        return ctx.out(formatFreeCell(cell, free[0] ?? 0));
      }
      const total = await nodeOf(ctx.driver, 'virNodeGetFreeMemory').freeMemoryBytes();
      if (ctx.json) return json(ctx, { totalKiB: Math.floor(total / 1024) });
      ctx.out(formatFreeTotal(total));
    },
  },
  {
    name: 'freepages', summary: 'NUMA free pages', positionals: ['cellno', 'pagesize'], required: 0, numeric: ['cellno', 'pagesize'], flags: ['all'],
    async run(ctx) {
      const a = ctx.args;
      exclusiveAllCellno(a);
      const sizeKiB = a.positional.pagesize !== undefined ? pageSizeKiB(a.positional.pagesize, 'pagesize') : null;
      let cells: Array<{ cell: number; pages: Array<{ sizeKiB: number; free: number }> }>;
      if (a.flags.has('all')) {
        const node = nodeOf(ctx.driver, 'virConnectGetCapabilities');
        const topo = await node.topology();
        const sizes = sizeKiB !== null ? [sizeKiB] : topo.pageSizesKiB;
        if (sizes.length === 0) throw new VirtError('OPERATION_FAILED', 'could not get information about supported page sizes');
        cells = [];
        for (const { id } of topo.cells) {
          const counts = await node.freePages(sizes, id, 1);
          cells.push({ cell: id, pages: sizes.map((s, i) => ({ sizeKiB: s, free: counts[i] ?? 0 })) });
        }
      } else {
        if (a.positional.cellno === undefined) throw new UsageError('missing cellno argument');
        const cell = virshInt(a.positional.cellno, 'cellno');
        if (cell < ALL_CELLS) throw new UsageError('cell number must be non-negative integer or -1');
        if (sizeKiB === null) throw new UsageError('missing pagesize argument');
        const counts = await nodeOf(ctx.driver, 'virNodeGetFreePages').freePages([sizeKiB], cell, 1);
        cells = [{ cell, pages: [{ sizeKiB, free: counts[0] ?? 0 }] }];
      }
      if (ctx.json) return json(ctx, { cells: cells.map((c) => ({ cell: c.cell === ALL_CELLS ? null : c.cell, pages: c.pages })) });
      ctx.out(formatFreePages(cells, { all: a.flags.has('all') }));
    },
  },
  {
    name: 'allocpages', summary: 'Manipulate pages pool size', positionals: ['pagesize', 'pagecount', 'cellno'], required: 2,
    numeric: ['pagesize', 'pagecount', 'cellno'], flags: ['add', 'all'],
    async run(ctx) {
      const a = ctx.args;
      exclusiveAllCellno(a);
      const cell = a.positional.cellno !== undefined ? virshInt(a.positional.cellno, 'cellno') : ALL_CELLS;
      const sizeKiB = pageSizeKiB(a.positional.pagesize!, 'pagesize');
      // Counts past 2^53 pages are more memory than exists; the driver refuses them by name.
      const count = Number(virshULongLong(a.positional.pagecount!, 'pagecount'));
      const node = nodeOf(ctx.driver, a.flags.has('all') ? 'virConnectGetCapabilities' : 'virNodeAllocPages');
      const cells = a.flags.has('all') ? await cellIds(node) : [cell];
      const r = await node.allocPages({ pageSizeKiB: sizeKiB, pageCount: count, cells, add: a.flags.has('add') });
      if (ctx.json) return json(ctx, { pageSizeKiB: sizeKiB, pageCount: count, add: a.flags.has('add'), pools: r.pools.map((p) => ({ ...p, cell: p.cell === ALL_CELLS ? null : p.cell })) });
      ctx.out('\n');
    },
  },
  {
    name: 'node-memory-tune', summary: 'Get or set node memory parameters',
    positionals: KSM_OPTIONS.map(([opt]) => opt), required: 0, numeric: KSM_OPTIONS.map(([opt]) => opt),
    failPrefix: (a) => (KSM_OPTIONS.some(([opt]) => a.positional[opt] !== undefined) ? 'Unable to change memory parameters' : 'Unable to get number of memory parameters'),
    async run(ctx) {
      const update = ksmUpdate(ctx.args);
      if (Object.keys(update).length === 0) {
        const params = await nodeOf(ctx.driver, 'virNodeGetMemoryParameters').memoryParameters();
        if (ctx.json) return json(ctx, { parameters: Object.fromEntries(params.map((p) => [p.field, p.value])) });
        return ctx.out(formatNodeMemoryParameters(params));
      }
      await nodeOf(ctx.driver, 'virNodeSetMemoryParameters').setMemoryParameters(update);
      if (ctx.json) return json(ctx, { set: Object.fromEntries(KSM_OPTIONS.flatMap(([opt, key]) => (update[key] === undefined ? [] : [[opt.replace(/-/g, '_'), update[key]]]))) });
      ctx.out('\n');
    },
  },
  {
    name: 'nodememstats', summary: 'Prints memory stats of the node.', positionals: ['cell'], required: 0, numeric: ['cell'],
    failPrefix: () => 'Unable to get number of memory stats',
    async run(ctx) {
      const cell = ctx.args.positional.cell !== undefined ? virshInt(ctx.args.positional.cell, 'cell') : ALL_CELLS;
      const stats = await nodeOf(ctx.driver, 'virNodeGetMemoryStats').memoryStats(cell);
      if (ctx.json) return json(ctx, { cell: cell === ALL_CELLS ? null : cell, memoryKiB: Object.fromEntries(stats.map((s) => [s.field, s.valueKiB])) });
      ctx.out(formatNodeMemStats(stats));
    },
  },
];
