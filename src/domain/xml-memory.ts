/**
 * libvirt domain XML for the memory configuration, in and out: <memoryBacking>, <numatune>,
 * <memtune>, the guest NUMA cells of <cpu><numa>, and <devices><memory>. Parsing reads what
 * libvirt's schema allows with libvirt's defaults; checks that span the whole definition (cells
 * against vCPUs, devices against cells) are validate-memory.ts's, run on the result. Formatting
 * writes what libvirt's own dumpxml writes for the same definition, in its element order.
 */
import type {
  DimmAddressDef,
  GuestNumaDef,
  HugepageDef,
  MemAccess,
  MemoryBackingDef,
  MemoryDeviceDef,
  MemorySourceDef,
  MemtuneDef,
  NumaCellDef,
  NumaMode,
  NumatuneDef,
} from './definition.js';
import { unsupported, xmlError } from './errors.js';
import { printable } from './name.js';
import { formatIdSet } from './node-set.js';
import { MAX_KIB, parseXmlMemoryKiB } from './size.js';
import { VIRTIO_MEM_MIN_BLOCK_KIB } from './validate-memory.js';
import { ADDRESSING, type Warnings, idSet, memoryKiB, parseCount, yesNo } from './xml-read.js';
import type { Element } from './xml-tree.js';
import { childrenNamed, element, singleChild } from './xml-tree.js';

const kibElement = (name: string, kib: number): Element => element(name, { unit: 'KiB' }, [], String(kib));

function access(value: string | undefined, where: string): MemAccess | undefined {
  if (value === undefined) return undefined;
  if (value === 'shared' || value === 'private') return value;
  throw xmlError(`${where}: expected 'shared' or 'private', got '${printable(value)}'`);
}

const yesNoText = (v: boolean | undefined): string | undefined => (v === undefined ? undefined : v ? 'yes' : 'no');

// ---- <memoryBacking> -------------------------------------------------------------------------

const BACKING_CHILDREN = ['hugepages', 'nosharepages', 'locked', 'source', 'access', 'allocation', 'discard'];

/**
 * <memoryBacking>. An element libvirt's schema does not have there is refused by name.
 * @returns undefined for an empty <memoryBacking/>
 */
export function parseMemoryBacking(el: Element): MemoryBackingDef | undefined {
  const out: MemoryBackingDef = {};
  for (const c of el.children) {
    if (!BACKING_CHILDREN.includes(c.name)) throw unsupported(`<memoryBacking/${c.name}>: not a memory backing setting virtmem knows`);
  }
  const hugepages = singleChild(el, 'hugepages', 'memoryBacking');
  if (hugepages !== undefined) {
    out.hugepages = hugepages.children.map((page): HugepageDef => {
      if (page.name !== 'page') throw unsupported(`<memoryBacking/hugepages/${page.name}>: expected <page>`);
      const size = page.attrs['size'];
      if (size === undefined) throw xmlError("<memoryBacking/hugepages/page> needs a size='...' attribute");
      const out: HugepageDef = { sizeKiB: parseXmlMemoryKiB(size, page.attrs['unit'], '<memoryBacking/hugepages/page size>') };
      const nodeset = page.attrs['nodeset'];
      if (nodeset !== undefined) out.cells = idSet(nodeset, '<memoryBacking/hugepages/page nodeset>');
      return out;
    });
  }
  if (singleChild(el, 'nosharepages', 'memoryBacking') !== undefined) out.nosharepages = true;
  if (singleChild(el, 'locked', 'memoryBacking') !== undefined) out.locked = true;
  const source = singleChild(el, 'source', 'memoryBacking')?.attrs['type'];
  if (source !== undefined) {
    if (source !== 'anonymous' && source !== 'file' && source !== 'memfd') {
      throw xmlError(`<memoryBacking/source type='${printable(source)}'>: expected anonymous, file or memfd`);
    }
    out.source = source;
  }
  const accessEl = singleChild(el, 'access', 'memoryBacking');
  if (accessEl !== undefined) {
    const mode = access(accessEl.attrs['mode'], '<memoryBacking/access mode>');
    if (mode !== undefined) out.access = mode;
  }
  const allocation = singleChild(el, 'allocation', 'memoryBacking');
  if (allocation !== undefined) {
    const a: NonNullable<MemoryBackingDef['allocation']> = {};
    const mode = allocation.attrs['mode'];
    if (mode !== undefined) {
      if (mode !== 'immediate' && mode !== 'ondemand') throw xmlError(`<memoryBacking/allocation mode='${printable(mode)}'>: expected immediate or ondemand`);
      a.mode = mode;
    }
    if (allocation.attrs['threads'] !== undefined) a.threads = parseCount(allocation.attrs['threads'], "<memoryBacking/allocation threads='...'>");
    out.allocation = a;
  }
  if (singleChild(el, 'discard', 'memoryBacking') !== undefined) out.discard = true;
  return Object.keys(out).length === 0 ? undefined : out;
}

export function formatMemoryBacking(b: MemoryBackingDef): Element {
  const children: Element[] = [];
  if (b.hugepages !== undefined) {
    children.push(element('hugepages', {}, b.hugepages.map((p) => element('page', {
      size: p.sizeKiB, unit: 'KiB', nodeset: p.cells === undefined ? undefined : formatIdSet(p.cells),
    }))));
  }
  if (b.nosharepages) children.push(element('nosharepages'));
  if (b.locked) children.push(element('locked'));
  if (b.source !== undefined) children.push(element('source', { type: b.source }));
  if (b.access !== undefined) children.push(element('access', { mode: b.access }));
  if (b.allocation !== undefined) children.push(element('allocation', { mode: b.allocation.mode, threads: b.allocation.threads }));
  if (b.discard) children.push(element('discard'));
  return element('memoryBacking', {}, children);
}

// ---- <numatune> --------------------------------------------------------------------------------

const NUMA_MODES: readonly string[] = ['strict', 'preferred', 'interleave', 'restrictive'];

function numaMode(value: string | undefined, where: string): NumaMode {
  if (value === undefined) return 'strict'; // libvirt's default
  if (!NUMA_MODES.includes(value)) throw xmlError(`${where}: mode '${printable(value)}' is not one of ${NUMA_MODES.join(', ')}`);
  return value as NumaMode;
}

/**
 * <numatune>, with libvirt's defaults: placement is static when a nodeset is given, else the
 * <vcpu placement> (`vcpuAuto`); a nodeset given with placement='auto' is dropped, as libvirt
 * drops it (virtmem chooses the host nodes at start, where libvirt asks numad).
 * @returns undefined when it names nothing
 */
export function parseNumatune(el: Element, vcpuAuto = false): NumatuneDef | undefined {
  const out: NumatuneDef = {};
  for (const c of el.children) {
    if (c.name !== 'memory' && c.name !== 'memnode') throw unsupported(`<numatune/${c.name}>: not a NUMA memory setting virtmem knows`);
  }
  const memory = singleChild(el, 'memory', 'numatune');
  if (memory !== undefined) {
    const where = '<numatune/memory>';
    const nodeset = memory.attrs['nodeset'];
    const placement = memory.attrs['placement'] ?? (nodeset === undefined && vcpuAuto ? 'auto' : 'static');
    if (placement !== 'static' && placement !== 'auto') throw xmlError(`${where}: placement '${printable(placement)}' is not static or auto`);
    if (placement === 'auto') {
      out.memory = { mode: numaMode(memory.attrs['mode'], where), placement };
    } else {
      if (nodeset === undefined) throw xmlError(`${where}: nodeset for NUMA memory tuning must be set if 'placement' is 'static'`);
      out.memory = { mode: numaMode(memory.attrs['mode'], where), hostNodes: idSet(nodeset, `${where} nodeset`) };
    }
  }
  const memnodes = childrenNamed(el, 'memnode').map((n) => {
    const where = '<numatune/memnode>';
    const nodeset = n.attrs['nodeset'];
    if (nodeset === undefined) throw xmlError(`${where}: missing required nodeset attribute`);
    return {
      cell: parseCount(n.attrs['cellid'], `${where} cellid`),
      mode: numaMode(n.attrs['mode'], where),
      hostNodes: idSet(nodeset, `${where} nodeset`),
    };
  });
  if (memnodes.length > 0) out.memnodes = memnodes;
  return out.memory === undefined && out.memnodes === undefined ? undefined : out;
}

export function formatNumatune(t: NumatuneDef): Element {
  const children: Element[] = [];
  if (t.memory !== undefined) {
    children.push('placement' in t.memory
      ? element('memory', { mode: t.memory.mode, placement: 'auto' })
      : element('memory', { mode: t.memory.mode, nodeset: formatIdSet(t.memory.hostNodes) }));
  }
  for (const n of t.memnodes ?? []) children.push(element('memnode', { cellid: n.cell, mode: n.mode, nodeset: formatIdSet(n.hostNodes) }));
  return element('numatune', {}, children);
}

// ---- <memtune> ---------------------------------------------------------------------------------

const MEMTUNE_FIELDS = [
  ['hard_limit', 'hardLimitKiB'],
  ['soft_limit', 'softLimitKiB'],
  ['swap_hard_limit', 'swapHardLimitKiB'],
  ['min_guarantee', 'minGuaranteeKiB'],
] as const;

/**
 * <memtune>. libvirt's "unlimited" (9007199254740991 KiB, what virsh memtune -1 stores) is no
 * limit and is dropped, as libvirt drops it from dumpxml.
 * @returns undefined when no limit is set
 */
export function parseMemtune(el: Element): MemtuneDef | undefined {
  const out: MemtuneDef = {};
  for (const c of el.children) {
    const field = MEMTUNE_FIELDS.find(([name]) => name === c.name);
    if (field === undefined) throw unsupported(`<memtune/${c.name}>: not a memory limit virtmem knows`);
    const kib = memoryKiB(c, `memtune/${c.name}`);
    if (kib < MAX_KIB) out[field[1]] = kib;
  }
  return Object.keys(out).length === 0 ? undefined : out;
}

export function formatMemtune(t: MemtuneDef): Element {
  return element('memtune', {}, MEMTUNE_FIELDS.flatMap(([name, key]) => {
    const v = t[key];
    return v === undefined ? [] : [kibElement(name, v)];
  }));
}

// ---- <cpu><numa> -------------------------------------------------------------------------------

/**
 * The cells of <cpu><numa>, in id order (libvirt numbers cells without an id by position and
 * wants the ids to be 0..n-1). HMAT (cell caches, interconnects) is refused by name.
 */
export function parseNumaCells(numa: Element): GuestNumaDef {
  for (const c of numa.children) {
    if (c.name === 'interconnects') throw unsupported('<cpu/numa/interconnects>: HMAT latencies and bandwidths are not supported');
    if (c.name !== 'cell') throw unsupported(`<cpu/numa/${c.name}>: not a NUMA setting virtmem knows`);
  }
  const cells = childrenNamed(numa, 'cell');
  if (cells.length === 0) throw xmlError('<cpu/numa> has no <cell>');
  const byId = new Map<number, NumaCellDef>();
  cells.forEach((cell, position) => {
    const where = '<cpu/numa/cell>';
    const id = cell.attrs['id'] === undefined ? position : parseCount(cell.attrs['id'], `${where} id`);
    if (byId.has(id)) throw xmlError(`${where}: Duplicate NUMA cell info for cell id '${id}'`);
    for (const c of cell.children) {
      if (c.name === 'cache') throw unsupported('<cpu/numa/cell/cache>: HMAT memory side caches are not supported');
      if (c.name !== 'distances') throw unsupported(`<cpu/numa/cell/${c.name}>: not a NUMA cell setting virtmem knows`);
    }
    const memory = cell.attrs['memory'];
    if (memory === undefined) throw xmlError(`${where} needs a memory='...' attribute`);
    const out: NumaCellDef = {
      cpus: cell.attrs['cpus'] === undefined ? [] : idSet(cell.attrs['cpus'], `${where} cpus`),
      memoryKiB: parseXmlMemoryKiB(memory, cell.attrs['unit'], `${where} memory`),
    };
    const memAccess = access(cell.attrs['memAccess'], `${where} memAccess`);
    if (memAccess !== undefined) out.memAccess = memAccess;
    const discard = yesNo(cell.attrs['discard'], `${where} discard`);
    if (discard !== undefined) out.discard = discard;
    const distances = singleChild(cell, 'distances', 'cpu/numa/cell');
    if (distances !== undefined) {
      out.distances = childrenNamed(distances, 'sibling').map((s) => ({
        cell: parseCount(s.attrs['id'], '<cpu/numa/cell/distances/sibling id>'),
        value: parseCount(s.attrs['value'], '<cpu/numa/cell/distances/sibling value>'),
      }));
    }
    byId.set(id, out);
  });
  const ordered: NumaCellDef[] = [];
  for (let id = 0; id < cells.length; id++) {
    const cell = byId.get(id);
    if (cell === undefined) throw xmlError(`<cpu/numa/cell>: cell ids must be 0 to ${cells.length - 1}; ${id} is missing`);
    ordered.push(cell);
  }
  return { cells: ordered };
}

export function formatNumaCells(numa: GuestNumaDef): Element {
  return element('numa', {}, numa.cells.map((c, id) => element('cell', {
    id,
    cpus: c.cpus.length === 0 ? undefined : formatIdSet(c.cpus),
    memory: c.memoryKiB,
    unit: 'KiB',
    memAccess: c.memAccess,
    discard: yesNoText(c.discard),
  }, c.distances === undefined ? [] : [element('distances', {}, c.distances.map((d) => element('sibling', { id: d.cell, value: d.value })))])));
}

// ---- <devices><memory> -------------------------------------------------------------------------

const REFUSED_MEMORY_MODELS = new Map([
  ['sgx-epc', 'SGX enclave memory'],
]);
const MEMORY_MODELS = ['dimm', 'nvdimm', 'virtio-pmem', 'virtio-mem'];
/** <source> children each model takes. */
const SOURCE_CHILDREN: Record<string, readonly string[]> = {
  dimm: ['nodemask', 'pagesize'],
  'virtio-mem': ['nodemask', 'pagesize'],
  nvdimm: ['path', 'alignsize', 'pmem'],
  'virtio-pmem': ['path'],
};
/** <target> children each model takes; 'current' is output only (virtio-mem's plugged size). */
const TARGET_CHILDREN: Record<string, readonly string[]> = {
  dimm: ['size', 'node'],
  'virtio-mem': ['size', 'node', 'block', 'requested', 'current'],
  nvdimm: ['size', 'node', 'label', 'readonly'],
  'virtio-pmem': ['size'],
};

/** One <devices><memory>. */
export function parseMemoryDevice(el: Element, warn: Warnings): MemoryDeviceDef {
  const model = el.attrs['model'];
  if (model === undefined) throw xmlError("<devices/memory> needs a model attribute (e.g. model='virtio-mem')");
  const refusedModel = REFUSED_MEMORY_MODELS.get(model);
  if (refusedModel !== undefined || !MEMORY_MODELS.includes(model)) {
    throw unsupported(`<devices/memory model='${printable(model)}'>: ${refusedModel ?? 'this model'} is not supported; virtmem supports ${MEMORY_MODELS.map((m) => `'${m}'`).join(', ')}`);
  }
  const where = `devices/memory model='${model}'`;
  for (const child of el.children) {
    if (child.name !== 'target' && child.name !== 'source' && child.name !== 'uuid' && !ADDRESSING.has(child.name)) {
      warn.ignored(`devices/memory/${child.name}`);
    }
  }
  const source = singleChild(el, 'source', 'devices/memory');
  const src = (name: string): Element | undefined => (source === undefined ? undefined : singleChild(source, name, 'devices/memory/source'));
  for (const child of source?.children ?? []) {
    if (!SOURCE_CHILDREN[model]!.includes(child.name)) throw unsupported(`<devices/memory/source/${child.name}>: not a source setting of a ${model}`);
  }
  const target = singleChild(el, 'target', 'devices/memory');
  if (target === undefined) throw xmlError(`<${where}> needs a <target>`);
  for (const child of target.children) {
    if (!TARGET_CHILDREN[model]!.includes(child.name)) warn.ignored(`devices/memory/target/${child.name}`);
  }
  const part = (name: string): Element | undefined => singleChild(target, name, 'devices/memory/target');
  const sizeEl = part('size');
  if (sizeEl === undefined) throw xmlError(`<${where}/target> needs a <size>`);
  const sizeKiB = memoryKiB(sizeEl, 'devices/memory/target/size');

  const common: { node?: number; access?: MemAccess; discard?: boolean } = {};
  const nodeEl = part('node');
  if (nodeEl !== undefined && model !== 'virtio-pmem') common.node = parseCount(nodeEl.text, '<devices/memory/target/node>');
  const acc = access(el.attrs['access'], `<${where} access>`);
  if (acc !== undefined) common.access = acc;
  const discard = yesNo(el.attrs['discard'], `<${where} discard>`);
  if (discard !== undefined) common.discard = discard;

  const hostSource = (): MemorySourceDef | undefined => {
    const out: MemorySourceDef = {};
    const nodemask = src('nodemask');
    if (nodemask !== undefined) out.hostNodes = idSet(nodemask.text, '<devices/memory/source/nodemask>');
    const pagesize = src('pagesize');
    if (pagesize !== undefined) out.pageSizeKiB = memoryKiB(pagesize, 'devices/memory/source/pagesize');
    return Object.keys(out).length === 0 ? undefined : out;
  };
  const path = (): string => {
    const p = src('path')?.text.trim();
    if (!p) throw xmlError(`<${where}> needs <source><path>...</path></source>`);
    return p;
  };

  switch (model) {
    case 'dimm': {
      const s = hostSource();
      const address = dimmAddress(el);
      return { model, sizeKiB, ...common, ...(s ? { source: s } : {}), ...(address ? { address } : {}) };
    }
    case 'virtio-mem': {
      const s = hostSource();
      const block = part('block');
      const requested = part('requested');
      return {
        model,
        sizeKiB,
        // QEMU's default block size on x86_64 is the THP size, 2 MiB; absent <requested> means 0.
        blockKiB: block === undefined ? VIRTIO_MEM_MIN_BLOCK_KIB : memoryKiB(block, 'devices/memory/target/block'),
        requestedKiB: requested === undefined ? 0 : memoryKiB(requested, 'devices/memory/target/requested'),
        ...common,
        ...(s ? { source: s } : {}),
      };
    }
    case 'nvdimm': {
      const out: MemoryDeviceDef = { model, sizeKiB, path: path(), ...common };
      const align = src('alignsize');
      if (align !== undefined) out.alignKiB = memoryKiB(align, 'devices/memory/source/alignsize');
      if (src('pmem') !== undefined) out.pmem = true;
      const label = part('label');
      if (label !== undefined) {
        const labelSize = singleChild(label, 'size', 'devices/memory/target/label');
        if (labelSize === undefined) throw xmlError('<devices/memory/target/label> needs a <size>');
        out.labelKiB = memoryKiB(labelSize, 'devices/memory/target/label/size');
      }
      if (part('readonly') !== undefined) out.readonly = true;
      const address = dimmAddress(el);
      if (address !== undefined) out.address = address;
      return out;
    }
    default: { // virtio-pmem
      const { node: _node, ...rest } = common;
      return { model: 'virtio-pmem', sizeKiB, path: path(), ...rest };
    }
  }
}

/** <address type='dimm' slot='N' base='0x...'/>; other address types (PCI) are guest bus addressing. */
function dimmAddress(el: Element): DimmAddressDef | undefined {
  const address = singleChild(el, 'address', 'devices/memory');
  if (address === undefined || address.attrs['type'] !== 'dimm') return undefined;
  const out: DimmAddressDef = {};
  if (address.attrs['slot'] !== undefined) out.slot = parseCount(address.attrs['slot'], "<devices/memory/address slot='...'>");
  const base = address.attrs['base'];
  if (base !== undefined) {
    const value = /^0x[0-9a-f]{1,13}$/i.test(base.trim()) ? Number(base.trim()) : NaN;
    if (!Number.isSafeInteger(value)) throw xmlError(`<devices/memory/address base='${printable(base)}'>: expected a hexadecimal guest address like 0x100000000`);
    out.baseAddress = value;
  }
  return Object.keys(out).length === 0 ? undefined : out;
}

/** One <devices><memory>, as libvirt writes it (devices without a node sit on node 0). */
export function formatMemoryDevice(d: MemoryDeviceDef): Element {
  const source: Element[] = [];
  const target: Element[] = [kibElement('size', d.sizeKiB)];
  let address: Element | undefined;
  if (d.model === 'virtio-pmem') {
    source.push(element('path', {}, [], d.path));
  } else {
    target.push(element('node', {}, [], String(d.node ?? 0)));
  }
  if (d.model === 'dimm' || d.model === 'virtio-mem') {
    if (d.source?.hostNodes !== undefined) source.push(element('nodemask', {}, [], formatIdSet(d.source.hostNodes)));
    if (d.source?.pageSizeKiB !== undefined) source.push(kibElement('pagesize', d.source.pageSizeKiB));
  }
  if (d.model === 'nvdimm') {
    source.push(element('path', {}, [], d.path));
    if (d.alignKiB !== undefined) source.push(kibElement('alignsize', d.alignKiB));
    if (d.pmem) source.push(element('pmem'));
    if (d.labelKiB !== undefined) target.push(element('label', {}, [kibElement('size', d.labelKiB)]));
    if (d.readonly) target.push(element('readonly'));
  }
  if (d.model === 'virtio-mem') target.push(kibElement('block', d.blockKiB), kibElement('requested', d.requestedKiB));
  if ((d.model === 'dimm' || d.model === 'nvdimm') && d.address !== undefined) {
    address = element('address', {
      type: 'dimm',
      slot: d.address.slot,
      base: d.address.baseAddress === undefined ? undefined : `0x${d.address.baseAddress.toString(16)}`,
    });
  }
  const children = [
    ...(source.length > 0 ? [element('source', {}, source)] : []),
    element('target', {}, target),
    ...(address ? [address] : []),
  ];
  return element('memory', { model: d.model, access: d.access, discard: yesNoText(d.discard) }, children);
}
