/**
 * The host's memory on a libvirt host, over libvirt's RPC protocol: virNodeGetFreeMemory,
 * virNodeGetCellsFreeMemory, virNodeGetFreePages, virNodeAllocPages,
 * virNode{Get,Set}MemoryParameters and virNodeGetMemoryStats, plus the capabilities' topology
 * (what virsh reads for --all). libvirt's client library checks some arguments before a call
 * leaves the process; those checks are made here (node-rules.ts) with its words. What virtmem
 * adds: pool growth the host cannot back is refused before the call, and a change libvirt made
 * only in part (a pool the kernel could not fill, the first of several KSM knobs) is undone.
 */
import type { LibvirtClient } from '../../libvirt/client.js';
import { LibvirtError } from '../../libvirt/errors.js';
import {
  AllocPagesFlag, NODE_MAX_CELLS, Proc, STRING_MAX, readNodeMemoryParameters, readNodeMemoryStats, writeAllocPagesArgs,
  writeFreePagesArgs, writeTypedParam,
} from '../../libvirt/protocol.js';
import { XdrReader } from '../../libvirt/xdr.js';
import { VirtError, invalidArg } from '../../domain/errors.js';
import { childrenNamed, parseXmlTree, type Element } from '../../domain/xml-tree.js';
import { checkCellsFreeArgs, checkStatsCell, poolGrowthRefusal, poolTarget, validateKsmUpdate, type PoolChange } from '../memory/node-rules.js';
import {
  ALL_CELLS, type AllocPagesRequest, type AllocPagesResult, type NodeMemory, type NodeMemoryParameter, type NodeMemoryParametersUpdate,
  type NodeMemoryStat, type NodeTopology, type SignalOption,
} from '../node-api.js';

/** Where the connection comes from (the LibvirtDriver: opened on first use, reopened after it died). */
export interface LibvirtConnectionSource {
  connection(signal?: AbortSignal): Promise<LibvirtClient>;
}

const kids = (el: Element | undefined, name: string): Element[] => (el ? childrenNamed(el, name) : []);
const child = (el: Element | undefined, name: string): Element | undefined => kids(el, name)[0];
const intAttr = (el: Element, name: string): number | null => (/^\d+$/.test(el.attrs[name] ?? '') ? Number(el.attrs[name]) : null);

/**
 * The host topology from libvirt's capabilities XML: cell ids with their page pools, and the
 * page sizes virsh offers for `freepages --all` (host/cpu/pages, or the cells' own pages,
 * deduplicated and sorted, where a driver lists them only there). Pure.
 * @throws VirtError XML_ERROR when the document is not XML
 */
export function topologyFromCapabilities(xml: string): NodeTopology {
  const host = child(parseXmlTree(xml), 'host');
  const cells = kids(child(child(host, 'topology'), 'cells'), 'cell').flatMap((c) => {
    const id = intAttr(c, 'id');
    if (id === null) return [];
    const pages = childrenNamed(c, 'pages').flatMap((p) => {
      const sizeKiB = intAttr(p, 'size');
      return sizeKiB === null ? [] : [{ sizeKiB, count: /^\d+$/.test(p.text.trim()) ? Number(p.text.trim()) : 0 }];
    });
    return [{ id, pages }];
  });
  const cpuPages = kids(child(host, 'cpu'), 'pages').flatMap((p) => { const s = intAttr(p, 'size'); return s === null ? [] : [s]; });
  const sizes = cpuPages.length ? cpuPages : cells.flatMap((c) => c.pages.map((p) => p.sizeKiB));
  return { cells, pageSizesKiB: [...new Set(sizes)].sort((a, b) => a - b) };
}

export class LibvirtNodeMemory implements NodeMemory {
  constructor(private readonly src: LibvirtConnectionSource) {}

  private async call(proc: number, args: Parameters<LibvirtClient['call']>[1], opts: SignalOption): Promise<XdrReader> {
    const c = await this.src.connection(opts.signal);
    return new XdrReader(await c.call(proc, args, { signal: opts.signal }));
  }

  async topology(opts: SignalOption = {}): Promise<NodeTopology> {
    const r = await this.call(Proc.CONNECT_GET_CAPABILITIES, null, opts);
    return topologyFromCapabilities(r.string(STRING_MAX));
  }

  async freeMemoryBytes(opts: SignalOption = {}): Promise<number> {
    return (await this.call(Proc.NODE_GET_FREE_MEMORY, null, opts)).uhyper();
  }

  async freeCellsBytes(startCell: number, maxCells: number, opts: SignalOption = {}): Promise<number[]> {
    checkCellsFreeArgs(startCell, maxCells);
    const r = await this.call(Proc.NODE_GET_CELLS_FREE_MEMORY, (w) => w.int(startCell).int(maxCells), opts);
    return r.array((x) => x.uhyper(), NODE_MAX_CELLS);
  }

  async freePages(pageSizesKiB: number[], startCell: number, cellCount: number, opts: SignalOption = {}): Promise<number[]> {
    const r = await this.call(Proc.NODE_GET_FREE_PAGES, (w) => writeFreePagesArgs(w, pageSizesKiB, startCell, cellCount), opts);
    return r.array((x) => x.uhyper(), NODE_MAX_CELLS);
  }

  async allocPages(req: AllocPagesRequest, opts: SignalOption = {}): Promise<AllocPagesResult> {
    const before = await this.topology(opts);
    // The guard covers the huge page pools the host lists; anything else (the system page size,
    // a size or cell it does not have) goes to libvirt, which refuses it in its own words.
    const changes: PoolChange[] = [];
    if (req.pageSizeKiB !== before.pageSizesKiB[0]) {
      for (const cell of req.cells) {
        const fromCount = poolSize(before, cell, req.pageSizeKiB);
        const toCount = fromCount === null ? null : poolTarget(fromCount, req.pageCount, req.add);
        if (fromCount !== null && toCount !== null) changes.push({ cell, pageSizeKiB: req.pageSizeKiB, fromCount, toCount });
      }
    }
    const why = poolGrowthRefusal(changes, await this.availableKiB(opts), 'free + buffers + cached, from nodememstats');
    if (why) throw invalidArg(why);
    const flags = req.add ? AllocPagesFlag.ADD : AllocPagesFlag.SET;
    for (const cell of req.cells) {
      try {
        await this.call(Proc.NODE_ALLOC_PAGES, (w) => writeAllocPagesArgs(w, [req.pageSizeKiB], [req.pageCount], cell, 1, flags), opts);
      } catch (e) {
        // libvirt leaves a pool the kernel filled in part as it is, and the cells before as
        // resized: put every pool of this size back to what it was.
        const undone = await this.restorePools(before, req.pageSizeKiB, opts).catch(() => false);
        throw undone ? withNote(e, ' (undone: every pool is back at its size before the call)') : e;
      }
    }
    const after = await this.topology(opts);
    return { pools: req.cells.map((cell) => ({ cell, pageSizeKiB: req.pageSizeKiB, count: poolSize(after, cell, req.pageSizeKiB) ?? 0 })) };
  }

  async memoryParameters(opts: SignalOption = {}): Promise<NodeMemoryParameter[]> {
    // libvirt's two steps: how many, then that many.
    const n = readNodeMemoryParameters(await this.call(Proc.NODE_GET_MEMORY_PARAMETERS, (w) => w.int(0).uint(0), opts)).nparams;
    if (n === 0) return [];
    const { params } = readNodeMemoryParameters(await this.call(Proc.NODE_GET_MEMORY_PARAMETERS, (w) => w.int(n).uint(0), opts));
    return params.map((p) => {
      const v = p.value;
      if (v.type === 'uint' || v.type === 'ullong') return { field: p.field, type: v.type, value: Number(v.value) };
      throw new LibvirtError('protocol', `node memory parameter '${p.field}' has type ${v.type}, not an unsigned integer`);
    });
  }

  async setMemoryParameters(update: NodeMemoryParametersUpdate, opts: SignalOption = {}): Promise<void> {
    const wanted = validateKsmUpdate(update);
    const before = await this.memoryParameters(opts).catch(() => null);
    const send = (params: Array<{ field: string; value: number }>): Promise<XdrReader> =>
      this.call(Proc.NODE_SET_MEMORY_PARAMETERS, (w) => w.array(params, (x, p) => writeTypedParam(x, { field: p.field, value: { type: 'uint', value: p.value } })).uint(0), opts);
    try {
      await send(wanted);
    } catch (e) {
      // libvirt writes the knobs one by one and stops at the first the kernel refuses.
      if (!before) throw e;
      const now = await this.memoryParameters(opts).catch(() => null);
      const back = wanted.flatMap((w) => {
        const was = before.find((p) => p.field === w.field)?.value;
        const is = now?.find((p) => p.field === w.field)?.value;
        return was !== undefined && is !== undefined && was !== is ? [{ field: w.field, value: was }] : [];
      });
      if (back.length === 0) throw e;
      const undone = await send(back).then(() => true, () => false);
      throw undone ? withNote(e, ' (undone: the parameters set before it are back as they were)') : e;
    }
  }

  async memoryStats(cell: number, opts: SignalOption = {}): Promise<NodeMemoryStat[]> {
    checkStatsCell(cell);
    const n = readNodeMemoryStats(await this.call(Proc.NODE_GET_MEMORY_STATS, (w) => w.int(0).int(cell).uint(0), opts)).nparams;
    if (n === 0) return [];
    const { params } = readNodeMemoryStats(await this.call(Proc.NODE_GET_MEMORY_STATS, (w) => w.int(n).int(cell).uint(0), opts));
    return params.map((p) => ({ field: p.field, valueKiB: p.value }));
  }

  /** What the host could give a pool: free + buffers + cached (libvirt reports no MemAvailable). */
  private async availableKiB(opts: SignalOption): Promise<number | null> {
    const stats = await this.memoryStats(ALL_CELLS, opts).catch(() => null);
    if (!stats) return null;
    const get = (f: string): number => stats.find((s) => s.field === f)?.valueKiB ?? 0;
    return stats.some((s) => s.field === 'free') ? get('free') + get('buffers') + get('cached') : null;
  }

  /** Sets every cell's pool of one size back to its size in `before`; true when one was changed. */
  private async restorePools(before: NodeTopology, pageSizeKiB: number, opts: SignalOption): Promise<boolean> {
    const now = await this.topology(opts);
    let changed = false;
    for (const cell of before.cells) {
      const was = poolSize(before, cell.id, pageSizeKiB);
      if (was === null || poolSize(now, cell.id, pageSizeKiB) === was) continue;
      await this.call(Proc.NODE_ALLOC_PAGES, (w) => writeAllocPagesArgs(w, [pageSizeKiB], [was], cell.id, 1, AllocPagesFlag.SET), opts);
      changed = true;
    }
    return changed;
  }
}

/** A pool's size in a topology: one cell's, or the sum over cells for ALL_CELLS; null when absent. */
function poolSize(t: NodeTopology, cell: number, pageSizeKiB: number): number | null {
  const counts = t.cells.filter((c) => cell === ALL_CELLS || c.id === cell).map((c) => c.pages.find((p) => p.sizeKiB === pageSizeKiB)?.count);
  if (counts.length === 0 || counts.some((n) => n === undefined)) return null;
  return (counts as number[]).reduce((s, n) => s + n, 0);
}

/** The same error with a sentence added (libvirt's number and domain kept for --json). */
function withNote(e: unknown, note: string): unknown {
  if (e instanceof LibvirtError && e.libvirtCode !== null && e.detail) {
    return new LibvirtError('remote', e.message + note, { wire: { code: e.libvirtCode, domain: e.libvirtDomain ?? 0, message: e.message + note, ...e.detail }, cause: e });
  }
  if (e instanceof VirtError) return new VirtError(e.code, e.message + note, { cause: e });
  return e;
}
