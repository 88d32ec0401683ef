/**
 * The host's memory on virtmem's own driver: what libvirt's QEMU driver reports and changes
 * for virsh freecell, freepages, allocpages, node-memory-tune and nodememstats, read from and
 * written to the kernel's files directly (src/driver/native/host/), with libvirt's numbers and
 * words. Changes are validated before anything is written (node-rules.ts) and undone when the
 * kernel takes them only in part.
 */
import { join } from 'node:path';
import { VirtError, invalidArg } from '../../domain/errors.js';
import { parseMeminfo } from '../memory/host-memory.js';
import { hostMemAvailableKiB } from '../memory/host-memory.js';
import {
  cellOutOfRange, checkCellsFreeArgs, checkStatsCell, pageSizeUnavailable, partialAllocation, poolGrowthRefusal, poolTarget,
  systemPagesUnsupported, validateKsmUpdate, type PoolChange,
} from '../memory/node-rules.js';
import {
  ALL_CELLS, type AllocPagesRequest, type AllocPagesResult, type NodeMemory, type NodeMemoryParameter, type NodeMemoryParametersUpdate,
  type NodeMemoryStat, type NodeTopology,
} from '../node-api.js';
import { hostFiles, isMissing, strerror, type HostFiles } from './host/sysfs.js';
import { listNodeIds, nodeDir, parseNodeMeminfoKiB, readNodeMeminfo } from './host/numa-nodes.js';
import { listHugepageSizesKiB, poolDir, readPoolCounter, writePoolSize } from './host/hugepages.js';
import { hasKsmFile, ksmFileOf, readKsmParameters, writeKsmKnob } from './host/ksm.js';
import { systemPageSizeKiB } from './host/page-size.js';
import { memoryStatsFromMeminfo } from './host/memory-stats.js';

export interface NativeNodeOptions {
  /** Where sysfs is (tests point it at a fixture tree). Default /sys. */
  sysRoot?: string;
  /** Where procfs is. Default /proc. */
  procRoot?: string;
  /** The file access underneath (tests play a kernel with it). */
  files?: HostFiles;
  /** The host's available memory in KiB for the pool guard (default: MemAvailable). */
  availableKiB?: () => Promise<number | null>;
}

export class NativeNodeMemory implements NodeMemory {
  private readonly sys: string;
  private readonly proc: string;
  private readonly files: HostFiles;
  private readonly availableKiB: () => Promise<number | null>;

  constructor(opts: NativeNodeOptions = {}) {
    this.sys = opts.sysRoot ?? '/sys';
    this.proc = opts.procRoot ?? '/proc';
    this.files = opts.files ?? hostFiles;
    this.availableKiB = opts.availableKiB ?? hostMemAvailableKiB;
  }

  async topology(): Promise<NodeTopology> {
    const [nodes, hugeSizes, pageKiB] = await Promise.all([this.nodes(), listHugepageSizesKiB(this.sys, this.files), systemPageSizeKiB(this.proc)]);
    const cells = await Promise.all(nodes.map(async (id) => {
      const huge = await Promise.all(hugeSizes.map(async (sizeKiB) => ({ sizeKiB, count: await readPoolCounter(this.sys, id, sizeKiB, 'nr_hugepages', this.files).catch(() => 0) })));
      // As libvirt's capabilities: ordinary pages are the node's memory less its huge pages.
      const totalKiB = parseNodeMeminfoKiB(await readNodeMeminfo(this.sys, id, this.files).catch(() => '')).get('MemTotal') ?? 0;
      const hugeKiB = huge.reduce((s, p) => s + p.sizeKiB * p.count, 0);
      return { id, pages: [{ sizeKiB: pageKiB, count: Math.max(0, Math.floor((totalKiB - hugeKiB) / pageKiB)) }, ...huge] };
    }));
    return { cells, pageSizesKiB: [pageKiB, ...hugeSizes] };
  }

  async freeMemoryBytes(): Promise<number> {
    const nodes = await this.nodes();
    // libvirt: the sum over NUMA nodes; the host's MemFree where the kernel has no nodes.
    if (nodes.length === 0) return (await this.hostMeminfo()).get('MemFree') ?? 0;
    const free = await Promise.all(nodes.map((n) => this.nodeFreeBytes(n)));
    return free.reduce((s, b) => s + b, 0);
  }

  async freeCellsBytes(startCell: number, maxCells: number): Promise<number[]> {
    checkCellsFreeArgs(startCell, maxCells);
    const last = await this.lastCell();
    const bad = cellOutOfRange(startCell, last);
    if (bad) throw bad;
    const cells: number[] = [];
    for (let n = startCell; n <= Math.min(last, startCell + maxCells - 1); n++) cells.push(n);
    // A node missing in between (sparse numbering) reports 0, as libvirt does.
    return Promise.all(cells.map((n) => this.nodeFreeBytes(n)));
  }

  async freePages(pageSizesKiB: number[], startCell: number, cellCount: number): Promise<number[]> {
    const last = await this.lastCell();
    const bad = cellOutOfRange(startCell, last);
    if (bad) throw bad;
    const pageKiB = await systemPageSizeKiB(this.proc);
    const counts: number[] = [];
    for (let cell = startCell; cell <= Math.min(last, startCell + cellCount - 1); cell++) {
      for (const sizeKiB of pageSizesKiB) {
        if (sizeKiB === pageKiB) {
          const freeBytes = cell === ALL_CELLS ? (await this.hostMeminfo()).get('MemFree') ?? 0 : await this.nodeFreeBytes(cell);
          counts.push(Math.floor(freeBytes / (pageKiB * 1024)));
          continue;
        }
        counts.push(await this.poolCounter(cell, sizeKiB, 'free_hugepages'));
      }
    }
    if (counts.length === 0) throw new VirtError('OPERATION_FAILED', 'operation failed: no suitable info found');
    return counts;
  }

  async allocPages(req: AllocPagesRequest): Promise<AllocPagesResult> {
    // libvirt's order: the cell's range, then the page size, then the pool.
    const last = await this.lastCell();
    for (const cell of req.cells) {
      const bad = cellOutOfRange(cell, last);
      if (bad) throw bad;
    }
    if (req.pageSizeKiB === await systemPageSizeKiB(this.proc)) throw systemPagesUnsupported();
    const changes: PoolChange[] = [];
    for (const cell of req.cells) {
      const fromCount = await this.poolCounter(cell, req.pageSizeKiB, 'nr_hugepages');
      const toCount = poolTarget(fromCount, req.pageCount, req.add);
      if (toCount !== null) changes.push({ cell, pageSizeKiB: req.pageSizeKiB, fromCount, toCount });
    }
    const why = poolGrowthRefusal(changes, await this.availableKiB(), 'MemAvailable');
    if (why) throw invalidArg(why);
    const done: PoolChange[] = [];
    for (const c of changes) {
      try {
        await writePoolSize(this.sys, c.cell, c.pageSizeKiB, c.toCount, this.files);
      } catch (e) {
        await this.undoPools(done);
        throw new VirtError('OPERATION_FAILED', `Unable to write to: ${join(poolDir(this.sys, c.cell, c.pageSizeKiB), 'nr_hugepages')}: ${strerror(e)}`, { cause: e });
      }
      done.push(c);
      // The kernel takes what it can get: read back how many pages the pool really has.
      const got = await this.poolCounter(c.cell, c.pageSizeKiB, 'nr_hugepages');
      if (got !== c.toCount) {
        await this.undoPools(done);
        throw partialAllocation(c.toCount, got, true);
      }
    }
    const pools = await Promise.all(req.cells.map(async (cell) => ({ cell, pageSizeKiB: req.pageSizeKiB, count: await this.poolCounter(cell, req.pageSizeKiB, 'nr_hugepages') })));
    return { pools };
  }

  memoryParameters(): Promise<NodeMemoryParameter[]> {
    return readKsmParameters(this.sys, this.files);
  }

  async setMemoryParameters(update: NodeMemoryParametersUpdate): Promise<void> {
    const wanted = validateKsmUpdate(update);
    for (const w of wanted) {
      if (!await hasKsmFile(this.sys, ksmFileOf(w.field)!, this.files)) {
        throw new VirtError('OPERATION_INVALID', `Requested operation is not valid: Parameter '${w.field}' is not supported by this kernel`);
      }
    }
    const before = new Map((await this.memoryParameters()).map((p) => [p.field, p.value]));
    const written: string[] = [];
    for (const w of wanted) {
      try {
        await writeKsmKnob(this.sys, ksmFileOf(w.field)!, w.value, this.files);
      } catch (e) {
        // All or nothing: the knobs written before this one go back to what they were.
        for (const field of written.reverse()) await writeKsmKnob(this.sys, ksmFileOf(field)!, before.get(field)!, this.files).catch(() => undefined);
        throw new VirtError('OPERATION_FAILED', `failed to set ${w.field}: ${strerror(e)}`, { cause: e });
      }
      written.push(w.field);
    }
  }

  async memoryStats(cell: number): Promise<NodeMemoryStat[]> {
    checkStatsCell(cell);
    let text: string;
    if (cell === ALL_CELLS) {
      text = await this.files.read(join(this.proc, 'meminfo')).catch((e: unknown) => { throw cannotOpen(join(this.proc, 'meminfo'), e); });
    } else {
      const last = await this.lastCell();
      if (cell > last) throw invalidArg(`cellNum in virHostMemGetStats must be less than or equal to ${last}`);
      text = await readNodeMeminfo(this.sys, cell, this.files).catch((e: unknown) => { throw cannotOpen(join(nodeDir(this.sys, cell), 'meminfo'), e); });
    }
    const stats = memoryStatsFromMeminfo(text, cell === ALL_CELLS);
    if (stats.length === 0) throw new VirtError('INTERNAL', 'internal error: no available memory line found');
    return stats;
  }

  /** The host's NUMA nodes; a kernel without them counts as one node 0, as libvirt does. */
  private async nodes(): Promise<number[]> {
    const ids = await listNodeIds(this.sys, this.files);
    return ids.length ? ids : [0];
  }

  private async lastCell(): Promise<number> {
    return Math.max(...await this.nodes());
  }

  private async hostMeminfo(): Promise<Map<string, number>> {
    return parseMeminfo(await this.files.read(join(this.proc, 'meminfo')).catch(() => ''));
  }

  /** A node's MemFree in bytes; 0 for a node that cannot be read (libvirt's choice too). */
  private async nodeFreeBytes(node: number): Promise<number> {
    const text = await readNodeMeminfo(this.sys, node, this.files).catch(() => null);
    if (text === null) return node === 0 ? (await this.hostMeminfo()).get('MemFree') ?? 0 : 0;
    return (parseNodeMeminfoKiB(text).get('MemFree') ?? 0) * 1024;
  }

  /** A pool counter, or libvirt's "page size N is not available" when the pool does not exist. */
  private async poolCounter(cell: number, pageSizeKiB: number, counter: 'nr_hugepages' | 'free_hugepages'): Promise<number> {
    try {
      return await readPoolCounter(this.sys, cell, pageSizeKiB, counter, this.files);
    } catch (e) {
      if (isMissing(e)) throw pageSizeUnavailable(pageSizeKiB, cell);
      throw e;
    }
  }

  /** Puts pools back to their size before the call, newest first; best effort. */
  private async undoPools(done: PoolChange[]): Promise<void> {
    for (const c of [...done].reverse()) await writePoolSize(this.sys, c.cell, c.pageSizeKiB, c.fromCount, this.files).catch(() => undefined);
  }
}

function cannotOpen(path: string, e: unknown): VirtError {
  return new VirtError('OPERATION_FAILED', `cannot open ${path}: ${strerror(e)}`, { cause: e });
}
