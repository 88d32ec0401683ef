/**
 * Validation of a definition's memory configuration beyond its sizes: how guest RAM is backed
 * (<memoryBacking>), the guest NUMA cells, host NUMA placement (<numatune>), the memory cgroup
 * limits (<memtune>) and the memory devices. The rules are libvirt's define-time checks (its
 * words where a user would meet them), so what `virsh define` refuses is refused here too; what
 * libvirt only refuses at start (a host node that does not exist, a page size the host lacks)
 * is the driver's to check at start.
 *
 * Every section returns a fresh object with only known fields; optional booleans that are false
 * and empty sections are dropped, so a definition reads the same however it was made.
 */
import type {
  DimmAddressDef,
  GuestNumaDef,
  HugepageDef,
  MemoryBackingDef,
  MemoryDeviceDef,
  MemorySourceDef,
  MemtuneDef,
  NumaCellDef,
  NumaMode,
  NumatuneDef,
} from './definition.js';
import { VIRTIO_MEM_BLOCK_KIB } from './memory.js';
import { MAX_KIB } from './size.js';
import { absolutePath, array, bool, fail, idList, int, multipleOf, oneOf, record } from './validate-fields.js';

/** Most guest NUMA cells: QEMU's MAX_NODES. */
export const MAX_NUMA_CELLS = 128;
/** The smallest page size (x86's base page); a huge page size is larger. */
export const BASE_PAGE_KIB = 4;
/** Smallest virtio-mem block: the transparent huge page size on x86_64, QEMU's default there. */
export const VIRTIO_MEM_MIN_BLOCK_KIB = VIRTIO_MEM_BLOCK_KIB;
/** Smallest NVDIMM label area (libvirt: "nvdimm label must be at least 128KiB"). */
export const MIN_NVDIMM_LABEL_KIB = 128;
/** Most preallocation threads; far above any host's cores. */
export const MAX_PREALLOC_THREADS = 1024;
/** NUMA distances (ACPI SLIT): 10 is local, remote distances are 11..255. */
const LOCAL_DISTANCE = 10;
const MAX_DISTANCE = 255;

const ACCESS = ['shared', 'private'] as const;
const NUMA_MODES = ['strict', 'preferred', 'interleave', 'restrictive'] as const;

/** Drops optional `false` flags: absent and false mean the same, and one spelling keeps JSON stable. */
function flag<K extends string>(out: Partial<Record<K, boolean>>, key: K, v: unknown, path: string): void {
  if (v !== undefined && bool(v, path)) out[key] = true;
}

/**
 * <memoryBacking>. `cellCount` is the number of explicit guest NUMA cells, which huge page cell
 * lists must stay within (libvirt: "hugepages: node N not found").
 * @returns undefined when nothing is asked for (an empty <memoryBacking/>)
 */
export function validateMemoryBacking(v: unknown, cellCount: number): MemoryBackingDef | undefined {
  const o = record(v, 'memoryBacking', [[], ['hugepages', 'nosharepages', 'locked', 'source', 'access', 'allocation', 'discard']]);
  const out: MemoryBackingDef = {};
  if (o['hugepages'] !== undefined) out.hugepages = hugepages(o['hugepages'], cellCount);
  flag(out, 'nosharepages', o['nosharepages'], 'memoryBacking.nosharepages');
  flag(out, 'locked', o['locked'], 'memoryBacking.locked');
  if (o['source'] !== undefined) out.source = oneOf(o['source'], 'memoryBacking.source', ['anonymous', 'file', 'memfd'] as const, true);
  if (o['access'] !== undefined) out.access = oneOf(o['access'], 'memoryBacking.access', ACCESS);
  if (o['allocation'] !== undefined) {
    const a = record(o['allocation'], 'memoryBacking.allocation', [[], ['mode', 'threads']]);
    const alloc: NonNullable<MemoryBackingDef['allocation']> = {};
    if (a['mode'] !== undefined) alloc.mode = oneOf(a['mode'], 'memoryBacking.allocation.mode', ['immediate', 'ondemand'] as const);
    if (a['threads'] !== undefined) alloc.threads = int(a['threads'], 'memoryBacking.allocation.threads', 1, MAX_PREALLOC_THREADS, true);
    out.allocation = alloc;
  }
  flag(out, 'discard', o['discard'], 'memoryBacking.discard');
  return Object.keys(out).length === 0 ? undefined : out;
}

function hugepages(v: unknown, cellCount: number): HugepageDef[] {
  const pages = array(v, 'memoryBacking.hugepages', 64).map((p, i) => {
    const path = `memoryBacking.hugepages[${i}]`;
    const o = record(p, path, [['sizeKiB'], ['cells']]);
    const page: HugepageDef = { sizeKiB: int(o['sizeKiB'], `${path}.sizeKiB`, BASE_PAGE_KIB, MAX_KIB) };
    if (o['cells'] !== undefined) {
      page.cells = idList(o['cells'], `${path}.cells`);
      const beyond = page.cells.find((c) => c >= cellCount);
      if (beyond !== undefined) fail(`${path}.cells`, `hugepages: node ${beyond} not found (the guest has ${cellCount} NUMA cell${cellCount === 1 ? '' : 's'})`);
    }
    return page;
  });
  // libvirt's rules: one page size for everything not named, and no cell named twice.
  const masters = pages.filter((p) => p.cells === undefined);
  if (masters.length > 1) fail('memoryBacking.hugepages', `two master hugepages detected: ${masters[0]!.sizeKiB} and ${masters[1]!.sizeKiB}`);
  const owner = new Map<number, number>();
  pages.forEach((p, i) => {
    for (const c of p.cells ?? []) {
      const other = owner.get(c);
      if (other !== undefined) fail(`memoryBacking.hugepages[${i}].cells`, `hugepages: node ${c} is in page ${other} and page ${i}`);
      owner.set(c, i);
    }
  });
  return pages;
}

/**
 * <cpu><numa>: cells in id order; their vCPUs within 0..vcpus-1 and in one cell each.
 */
export function validateNuma(v: unknown, vcpus: number): GuestNumaDef {
  const o = record(v, 'numa', [['cells'], []]);
  const list = array(o['cells'], 'numa.cells', MAX_NUMA_CELLS);
  if (list.length === 0) fail('numa.cells', 'a guest NUMA topology needs at least one cell');
  const cellOfCpu = new Map<number, number>();
  const cells = list.map((c, i): NumaCellDef => {
    const path = `numa.cells[${i}]`;
    const co = record(c, path, [['cpus', 'memoryKiB'], ['memAccess', 'discard', 'distances']]);
    const cpus = idList(co['cpus'], `${path}.cpus`, { allowEmpty: true });
    const beyond = cpus.find((cpu) => cpu >= vcpus);
    if (beyond !== undefined) fail(`${path}.cpus`, `vCPU ${beyond} is beyond the guest's ${vcpus} vCPU${vcpus === 1 ? '' : 's'}`);
    for (const cpu of cpus) {
      const other = cellOfCpu.get(cpu);
      if (other !== undefined) fail(`${path}.cpus`, `NUMA cells ${other} and ${i} have overlapping vCPU ids (${cpu})`);
      cellOfCpu.set(cpu, i);
    }
    const cell: NumaCellDef = { cpus, memoryKiB: int(co['memoryKiB'], `${path}.memoryKiB`, 1, MAX_KIB) };
    if (co['memAccess'] !== undefined) cell.memAccess = oneOf(co['memAccess'], `${path}.memAccess`, ACCESS);
    if (co['discard'] !== undefined) cell.discard = bool(co['discard'], `${path}.discard`);
    if (co['distances'] !== undefined) cell.distances = distances(co['distances'], `${path}.distances`, i, list.length);
    return cell;
  });
  return { cells };
}

function distances(v: unknown, path: string, self: number, cellCount: number): NonNullable<NumaCellDef['distances']> {
  const seen = new Set<number>();
  return array(v, path, MAX_NUMA_CELLS).map((d, i) => {
    const o = record(d, `${path}[${i}]`, [['cell', 'value'], []]);
    const cell = int(o['cell'], `${path}[${i}].cell`, 0, cellCount - 1);
    if (seen.has(cell)) fail(`${path}[${i}].cell`, `a second distance to cell ${cell}`);
    seen.add(cell);
    const value = int(o['value'], `${path}[${i}].value`, LOCAL_DISTANCE, MAX_DISTANCE);
    if (cell === self && value !== LOCAL_DISTANCE) fail(`${path}[${i}].value`, `the distance of a cell to itself is ${LOCAL_DISTANCE}, not ${value}`);
    if (cell !== self && value === LOCAL_DISTANCE) fail(`${path}[${i}].value`, `a distance to another cell must be above ${LOCAL_DISTANCE}`);
    return { cell, value };
  });
}

/**
 * <numatune>, static or automatic placement. `cellCount` is the number of explicit guest NUMA cells
 * (0 without <cpu><numa>), which memnodes need.
 * @returns undefined when it names nothing
 */
export function validateNumatune(v: unknown, cellCount: number): NumatuneDef | undefined {
  const o = record(v, 'numatune', [[], ['memory', 'memnodes']]);
  const out: NumatuneDef = {};
  if (o['memory'] !== undefined) {
    const m = record(o['memory'], 'numatune.memory', [['mode'], ['hostNodes', 'placement']]);
    const memMode = mode(m['mode'], 'numatune.memory.mode');
    if (m['placement'] !== undefined) {
      if (m['placement'] !== 'auto') fail('numatune.memory.placement', `expected 'auto' (static placement gives hostNodes), got ${JSON.stringify(m['placement'])}`);
      if (m['hostNodes'] !== undefined) fail('numatune.memory.hostNodes', "placement 'auto' chooses the host nodes at start: give no hostNodes");
      out.memory = { mode: memMode, placement: 'auto' };
    } else {
      if (m['hostNodes'] === undefined) fail('numatune.memory.hostNodes', "missing (or placement: 'auto')");
      out.memory = { mode: memMode, hostNodes: idList(m['hostNodes'], 'numatune.memory.hostNodes') };
    }
  }
  if (o['memnodes'] !== undefined) {
    const list = array(o['memnodes'], 'numatune.memnodes', MAX_NUMA_CELLS);
    if (list.length > 0 && cellCount === 0) fail('numatune.memnodes', 'Element \'memnode\' is invalid without any guest NUMA cells');
    if (list.length > 0 && out.memory !== undefined && 'placement' in out.memory) fail('numatune.memnodes', 'Per-node binding is not compatible with automatic NUMA placement.');
    const seen = new Set<number>();
    out.memnodes = list.map((n, i) => {
      const path = `numatune.memnodes[${i}]`;
      const no = record(n, path, [['cell', 'mode', 'hostNodes'], []]);
      const cell = int(no['cell'], `${path}.cell`, 0, cellCount - 1);
      if (seen.has(cell)) fail(`${path}.cell`, `Multiple memnode elements with cellid ${cell}`);
      seen.add(cell);
      return { cell, mode: mode(no['mode'], `${path}.mode`), hostNodes: idList(no['hostNodes'], `${path}.hostNodes`) };
    });
    if (out.memnodes.length === 0) delete out.memnodes;
  }
  // libvirt: restrictive (cgroup-only placement) is all or nothing.
  const restrictive = out.memory?.mode === 'restrictive';
  out.memnodes?.forEach((n, i) => {
    if (restrictive && n.mode !== 'restrictive') fail(`numatune.memnodes[${i}].mode`, "'restrictive' mode is required in memnode element when mode is 'restrictive' in memory element");
    if (!restrictive && n.mode === 'restrictive' && out.memory !== undefined) fail('numatune.memory.mode', "'restrictive' mode is required in memory element when mode is 'restrictive' in memnode element");
  });
  return out.memory === undefined && out.memnodes === undefined ? undefined : out;
}

function mode(v: unknown, path: string): NumaMode {
  return oneOf(v, path, NUMA_MODES);
}

/**
 * <memtune>; swap_hard_limit (memory plus swap) may not be below hard_limit, as libvirt says.
 * @returns undefined when no limit is set
 */
export function validateMemtune(v: unknown): MemtuneDef | undefined {
  const o = record(v, 'memtune', [[], ['hardLimitKiB', 'softLimitKiB', 'swapHardLimitKiB', 'minGuaranteeKiB']]);
  const out: MemtuneDef = {};
  for (const k of ['hardLimitKiB', 'softLimitKiB', 'swapHardLimitKiB', 'minGuaranteeKiB'] as const) {
    if (o[k] !== undefined) out[k] = int(o[k], `memtune.${k}`, 0, MAX_KIB);
  }
  if (out.hardLimitKiB !== undefined && out.swapHardLimitKiB !== undefined && out.hardLimitKiB > out.swapHardLimitKiB) {
    fail('memtune.swapHardLimitKiB', `memory hard_limit tunable value (${out.hardLimitKiB} KiB) must be lower than or equal to swap_hard_limit (${out.swapHardLimitKiB} KiB)`);
  }
  return Object.keys(out).length === 0 ? undefined : out;
}

/**
 * One memory device. `cellCount`: guest NUMA nodes it may sit on (1 without explicit cells).
 */
export function validateMemoryDevice(v: unknown, path: string, cellCount: number): MemoryDeviceDef {
  const model = record(v, path, [['model'], ['sizeKiB', 'blockKiB', 'requestedKiB', 'node', 'access', 'discard', 'source', 'address', 'path', 'alignKiB', 'pmem', 'labelKiB', 'readonly']])['model'];
  const common = ['node', 'access', 'discard'];
  switch (model) {
    case 'dimm': {
      const o = record(v, path, [['model', 'sizeKiB'], [...common, 'source', 'address']]);
      return {
        model,
        sizeKiB: int(o['sizeKiB'], `${path}.sizeKiB`, 1, MAX_KIB),
        ...commonFields(o, path, cellCount),
        ...optional('source', o['source'], () => source(o['source'], `${path}.source`)),
        ...optional('address', o['address'], () => dimmAddress(o['address'], `${path}.address`)),
      };
    }
    case 'virtio-mem': {
      const o = record(v, path, [['model', 'sizeKiB', 'blockKiB', 'requestedKiB'], [...common, 'source']]);
      const blockKiB = int(o['blockKiB'], `${path}.blockKiB`, VIRTIO_MEM_MIN_BLOCK_KIB, MAX_KIB);
      if (!Number.isInteger(Math.log2(blockKiB))) fail(`${path}.blockKiB`, `${blockKiB} KiB is not a power of two`);
      const sizeKiB = int(o['sizeKiB'], `${path}.sizeKiB`, blockKiB, MAX_KIB);
      multipleOf(sizeKiB, blockKiB, `${path}.sizeKiB`, 'the block size');
      const requestedKiB = int(o['requestedKiB'], `${path}.requestedKiB`, 0, sizeKiB);
      multipleOf(requestedKiB, blockKiB, `${path}.requestedKiB`, 'the block size');
      return {
        model, sizeKiB, blockKiB, requestedKiB,
        ...commonFields(o, path, cellCount),
        ...optional('source', o['source'], () => source(o['source'], `${path}.source`)),
      };
    }
    case 'nvdimm': {
      const o = record(v, path, [['model', 'sizeKiB', 'path'], [...common, 'alignKiB', 'pmem', 'labelKiB', 'readonly', 'address']]);
      const sizeKiB = int(o['sizeKiB'], `${path}.sizeKiB`, 1, MAX_KIB);
      const out: MemoryDeviceDef = { model, sizeKiB, path: absolutePath(o['path'], `${path}.path`), ...commonFields(o, path, cellCount) };
      if (o['alignKiB'] !== undefined) out.alignKiB = int(o['alignKiB'], `${path}.alignKiB`, BASE_PAGE_KIB, MAX_KIB);
      flag(out, 'pmem', o['pmem'], `${path}.pmem`);
      if (o['labelKiB'] !== undefined) {
        out.labelKiB = int(o['labelKiB'], `${path}.labelKiB`, MIN_NVDIMM_LABEL_KIB, MAX_KIB);
        if (out.labelKiB >= sizeKiB) fail(`${path}.labelKiB`, 'label size must be smaller than NVDIMM size');
      }
      flag(out, 'readonly', o['readonly'], `${path}.readonly`);
      Object.assign(out, optional('address', o['address'], () => dimmAddress(o['address'], `${path}.address`)));
      return out;
    }
    case 'virtio-pmem': {
      const o = record(v, path, [['model', 'sizeKiB', 'path'], ['access', 'discard']]);
      const out: MemoryDeviceDef = { model, sizeKiB: int(o['sizeKiB'], `${path}.sizeKiB`, 1, MAX_KIB), path: absolutePath(o['path'], `${path}.path`) };
      if (o['access'] !== undefined) out.access = oneOf(o['access'], `${path}.access`, ACCESS);
      if (o['discard'] !== undefined) out.discard = bool(o['discard'], `${path}.discard`);
      return out;
    }
    default:
      return fail(`${path}.model`, `expected 'virtio-mem', 'dimm', 'nvdimm' or 'virtio-pmem', got ${typeof model === 'string' ? `'${model}'` : String(model)}`);
  }
}

/**
 * `{ [key]: make() }` when `v` is present and `make` gives a non-empty object, else nothing:
 * optional sections spread into a result (an empty one means the same as none).
 */
function optional<K extends string, T extends object>(key: K, v: unknown, make: () => T): Partial<Record<K, T>> {
  if (v === undefined) return {};
  const value = make();
  return Object.keys(value).length === 0 ? {} : ({ [key]: value } as Record<K, T>);
}

function commonFields(o: Record<string, unknown>, path: string, cellCount: number): { node?: number; access?: 'shared' | 'private'; discard?: boolean } {
  const out: { node?: number; access?: 'shared' | 'private'; discard?: boolean } = {};
  if (o['node'] !== undefined) {
    const node = int(o['node'], `${path}.node`, 0, MAX_NUMA_CELLS);
    if (node >= cellCount) fail(`${path}.node`, `can't add memory backend for guest node '${node}' as the guest has only '${cellCount}' NUMA nodes configured`);
    if (node !== 0) out.node = node; // node 0 is the default, stored as absent
  }
  if (o['access'] !== undefined) out.access = oneOf(o['access'], `${path}.access`, ACCESS);
  if (o['discard'] !== undefined) out.discard = bool(o['discard'], `${path}.discard`);
  return out;
}

function source(v: unknown, path: string): MemorySourceDef {
  const o = record(v, path, [[], ['hostNodes', 'pageSizeKiB']]);
  const out: MemorySourceDef = {};
  if (o['hostNodes'] !== undefined) out.hostNodes = idList(o['hostNodes'], `${path}.hostNodes`);
  if (o['pageSizeKiB'] !== undefined) out.pageSizeKiB = int(o['pageSizeKiB'], `${path}.pageSizeKiB`, BASE_PAGE_KIB, MAX_KIB);
  return out;
}

function dimmAddress(v: unknown, path: string): DimmAddressDef {
  const o = record(v, path, [[], ['slot', 'baseAddress']]);
  const out: DimmAddressDef = {};
  if (o['slot'] !== undefined) out.slot = int(o['slot'], `${path}.slot`, 0, 255);
  if (o['baseAddress'] !== undefined) out.baseAddress = int(o['baseAddress'], `${path}.baseAddress`, 0, Number.MAX_SAFE_INTEGER);
  return out;
}
