/**
 * Where a guest's RAM comes from on the QEMU command line: one memory backend per RAM region
 * (the default RAM, or each guest NUMA cell, explicit or the one hot-plug implies; each memory
 * device) with the properties libvirt's QEMU
 * driver gives the same definition (qemuBuildMemoryBackendProps in libvirt 9.0, as observed with
 * `virsh domxml-to-native` on this machine), the -numa options and the machine options that go
 * with them, and the sizes QEMU gets (aligned as libvirt aligns them at start). Pure: the host
 * facts come in as arguments.
 *
 * The rules, per region (a cell or device first, then <memoryBacking>):
 *   - huge pages: a device's own <pagesize>, else the <page> naming its cell, else the <page>
 *     naming no cell (the host's default huge page size for <hugepages/>); the base page size is
 *     no huge page at all;
 *   - backend: memfd when <source type='memfd'> (hugetlb when huge pages); a file (on hugetlbfs,
 *     in the run directory, or the device's own path) when huge pages, a device path, any
 *     explicit access mode or <source type='file'>; anonymous RAM otherwise;
 *   - share: the access mode (device, cell, <memoryBacking>), when one is given;
 *   - discard-data: on file backends without a device path, when discard is given;
 *   - prealloc: <allocation mode='immediate'>, huge pages (not for a device path), an NVDIMM that
 *     is not real persistent memory; for virtio-mem it goes on the device, whose backend is
 *     never reserved (QEMU maps only what is plugged);
 *   - host-nodes and policy: the device's <nodemask> or the cell's memnode or <numatune>'s
 *     memory nodeset, with its mode (strict is QEMU's bind); 'restrictive' puts nothing here
 *     (the cgroup's cpuset.mems does it).
 */
import type { DomainDef, MemAccess, MemoryDeviceDef, NumaMode } from '../../domain/definition.js';
import { VirtError } from '../../domain/errors.js';
import { formatIdSet } from '../../domain/node-set.js';
import { MAX_KIB } from '../../domain/size.js';
import { guestNumaCells } from '../../domain/memory.js';
import { bootMemoryKiB, virtioMemId } from '../memory/layout.js';
import { regionHugepageKiB } from '../memory/backing.js';

/** libvirt aligns boot RAM, each cell and the hot-plug ceiling to 1 MiB at start ... */
export const RAM_ALIGN_KIB = 1024;
/** ... and memory devices to 2 MiB (QEMU's DIMM alignment on x86). */
export const DEVICE_ALIGN_KIB = 2048;

/** QOM ids of memory devices, by model and index among devices of that model. */
export const memoryDeviceId = (model: MemoryDeviceDef['model'], i: number): string =>
  model === 'virtio-mem' ? virtioMemId(i) : model === 'dimm' ? `dimm${i}` : model === 'nvdimm' ? `nvdimm${i}` : `vpmem${i}`;
/**
 * QEMU's id of each memory device of a definition, in order (the same ids its command line and
 * hot-plugs gave them).
 */
export function memoryDeviceIds(def: Pick<DomainDef, 'memoryDevices'>): string[] {
  const counts = new Map<string, number>();
  return def.memoryDevices.map((d) => {
    const n = counts.get(d.model) ?? 0;
    counts.set(d.model, n + 1);
    return d.model === 'dimm' && d.id !== undefined ? d.id : memoryDeviceId(d.model, n);
  });
}

/**
 * What QEMU's balloon counts beyond boot RAM (KiB): its "actual" and its target are sizes of the
 * guest's whole RAM as QEMU sees it (get_current_ram_size: boot RAM plus DIMMs and NVDIMMs, not
 * virtio-mem), while virtmem's balloon is boot RAM only. Seen on QEMU 7.2: a plugged 128 MiB DIMM
 * raised query-balloon's actual by 128 MiB, a plugged virtio-mem block did not.
 */
export function balloonBaseKiB(def: Pick<DomainDef, 'memoryDevices'>): number {
  return def.memoryDevices.reduce((s, d, i) => s + (d.model === 'dimm' || d.model === 'nvdimm' ? alignedDeviceKiB(d, i) : 0), 0);
}

/** The id of the backend a memory device maps. */
export const memdevId = (deviceId: string): string => `mem-${deviceId}`;
/** The default RAM backend's id: "pc.ram", the name QEMU itself gives the RAM of 'pc' and 'q35'. */
export const DEFAULT_RAM_ID = 'pc.ram';

/** Where a file backend's mem-path points. */
export type BackingFile =
  | { kind: 'hugetlbfs'; pageSizeKiB: number }
  | { kind: 'memory-dir' }
  | { kind: 'device-path'; path: string };

/** One memory backend before host paths are known. */
export interface BackendPlan {
  id: string;
  qomType: 'memory-backend-ram' | 'memory-backend-file' | 'memory-backend-memfd';
  sizeKiB: number;
  /** The guest NUMA cell the region belongs to, or null for the default RAM and virtio-pmem. */
  cell: number | null;
  /** Huge page size in KiB, or null for base pages. */
  hugepageKiB: number | null;
  file: BackingFile | null;
  share?: boolean;
  discardData?: boolean;
  /** QEMU allocates the whole backend at start (prealloc=on). */
  prealloc: boolean;
  preallocThreads?: number;
  /** virtio-mem: QEMU preallocates plugged blocks through the device instead. */
  devicePrealloc: boolean;
  /** What QEMU allocates at start, before the guest runs (KiB): the backend, or what is plugged. */
  preallocKiB: number;
  /** virtio-mem: the backend is not reserved (MAP_NORESERVE). */
  reserve?: false;
  alignKiB?: number;
  pmem?: boolean;
  /** Host nodes and the QEMU policy binding the backend to them. */
  hostNodes?: number[];
  policy?: 'bind' | 'preferred' | 'interleave';
  /** The region's NUMA mode and host nodes as the definition says them (restrictive included). */
  placement?: { mode: NumaMode; hostNodes: number[] };
  /** True when anonymous default RAM with nothing asked: QEMU's own -m RAM does the same. */
  plain: boolean;
  /** Part of the default RAM: the RAM block keeps its legacy name ("pc.ram"). */
  system: boolean;
}

/** Host facts the plan needs. */
export interface MemoryHost {
  /** The host's default huge page size (Hugepagesize in /proc/meminfo), for <hugepages/>. */
  defaultHugepageKiB: number;
}

/** Where backends' files go, once the host is prepared. */
export interface BackingPaths {
  /** A hugetlbfs mount per page size (KiB). */
  hugetlbfs: ReadonlyMap<number, string>;
  /** A directory for file-backed RAM (QEMU makes an unlinked file in it). */
  memoryDir: string;
}

const roundUp = (kib: number, align: number): number => Math.ceil(kib / align) * align;

function aligned(kib: number, align: number, what: string): number {
  const out = roundUp(kib, align);
  if (out > MAX_KIB) throw new VirtError('CONFIG_UNSUPPORTED', `unsupported configuration: ${what} overflowed after alignment`);
  return out;
}

/** A memory device's size as QEMU gets it: rounded up to 2 MiB, as libvirt does at start. */
export function alignedDeviceKiB(d: MemoryDeviceDef, index = 0): number {
  return aligned(d.sizeKiB, DEVICE_ALIGN_KIB, `size of memory module '${index}'`);
}

interface Region {
  id: string;
  sizeKiB: number;
  cell: number | null;
  device?: MemoryDeviceDef;
  system: boolean;
}

const POLICY: Record<Exclude<NumaMode, 'restrictive'>, 'bind' | 'preferred' | 'interleave'> = {
  strict: 'bind', preferred: 'preferred', interleave: 'interleave',
};

/** The huge page size a region gets (KiB), or null (memory/backing.ts: the one rule). */
function hugepageFor(def: DomainDef, region: Region, host: MemoryHost): number | null {
  return regionHugepageKiB(def, region.device === undefined ? { cell: region.cell } : { cell: region.cell, device: region.device }, host.defaultHugepageKiB);
}

/** One region's backend, by the rules in the header. */
function planRegion(def: DomainDef, region: Region, host: MemoryHost): BackendPlan {
  const backing = def.memoryBacking ?? {};
  const dev = region.device;
  const cell = region.cell === null ? undefined : def.numa?.cells[region.cell];
  const access: MemAccess | undefined = dev?.access ?? cell?.memAccess ?? backing.access;
  const discard: boolean | undefined = dev?.discard ?? cell?.discard ?? (backing.discard ? true : undefined);
  const path = dev !== undefined && (dev.model === 'nvdimm' || dev.model === 'virtio-pmem') ? dev.path : undefined;
  const hugepageKiB = hugepageFor(def, region, host);
  const prealloc = backing.allocation?.mode === 'immediate'
    || (path !== undefined ? dev?.model === 'nvdimm' && !dev.pmem : hugepageKiB !== null);

  const plan: BackendPlan = {
    id: region.id, qomType: 'memory-backend-ram', sizeKiB: region.sizeKiB, cell: region.cell,
    hugepageKiB, file: null, prealloc: false, devicePrealloc: false, preallocKiB: 0, plain: false, system: region.system,
  };
  if (path === undefined && backing.source === 'memfd') {
    plan.qomType = 'memory-backend-memfd';
  } else if (hugepageKiB !== null || path !== undefined || access !== undefined || backing.source === 'file') {
    plan.qomType = 'memory-backend-file';
    plan.file = path !== undefined ? { kind: 'device-path', path } : hugepageKiB !== null ? { kind: 'hugetlbfs', pageSizeKiB: hugepageKiB } : { kind: 'memory-dir' };
    if (path === undefined && discard !== undefined) plan.discardData = discard;
  }
  if (access !== undefined && plan.qomType !== 'memory-backend-ram') plan.share = access === 'shared';
  if (dev?.model === 'virtio-mem') {
    plan.devicePrealloc = prealloc;
    plan.reserve = false;
    if (prealloc) plan.preallocKiB = dev.requestedKiB;
  } else {
    plan.prealloc = prealloc;
    if (prealloc) plan.preallocKiB = region.sizeKiB;
    if (backing.allocation?.threads !== undefined) plan.preallocThreads = backing.allocation.threads;
  }
  if (dev?.model === 'nvdimm') {
    if (dev.alignKiB !== undefined) plan.alignKiB = dev.alignKiB;
    if (dev.pmem) plan.pmem = true;
  }

  const memnode = region.cell === null ? undefined : def.numatune?.memnodes?.find((n) => n.cell === region.cell);
  const mode = memnode?.mode ?? def.numatune?.memory?.mode ?? 'strict';
  const sourceNodes = dev !== undefined && (dev.model === 'dimm' || dev.model === 'virtio-mem') ? dev.source?.hostNodes : undefined;
  const memory = def.numatune?.memory;
  // placement='auto' is resolved to host nodes at start (memory-start.ts) before this is asked.
  const hostNodes = sourceNodes ?? memnode?.hostNodes ?? (memory !== undefined && 'hostNodes' in memory ? memory.hostNodes : undefined);
  if (hostNodes !== undefined) {
    plan.placement = { mode, hostNodes };
    if (mode !== 'restrictive') {
      plan.hostNodes = hostNodes;
      plan.policy = POLICY[mode];
    }
  }
  plan.plain = region.system && plan.qomType === 'memory-backend-ram' && !plan.prealloc
    && plan.preallocThreads === undefined && plan.hostNodes === undefined;
  return plan;
}

/** Everything memory on QEMU's command line, before host paths are filled in. */
export interface MemoryLayoutPlan {
  /** -m: boot RAM, and slots/maxmem with hot-plug (sizes aligned as libvirt aligns them). */
  mOption: string;
  /** Options for -machine (nvdimm=on, mem-merge=off, memory-backend=pc.ram). */
  machineOptions: string[];
  /** The default RAM's backend, or one per guest NUMA cell, in cell order. */
  ram: BackendPlan[];
  /** -numa options (node, dist), after the cells' backends. */
  numaOptions: string[];
  /** Each memory device: its backend and its -device object. */
  devices: Array<{ backend: BackendPlan; props: Record<string, unknown> }>;
  /** -overcommit mem-lock=on for <locked/>. */
  memLock: boolean;
}

/**
 * The memory part of a domain's QEMU command line.
 * @throws VirtError CONFIG_UNSUPPORTED when a size overflows after alignment, or no guest NUMA
 *   cell has vCPUs (libvirt's words)
 */
export function planMemoryLayout(def: DomainDef, host: MemoryHost): MemoryLayoutPlan {
  const cells = guestNumaCells(def);
  const ram: BackendPlan[] = [];
  const numaOptions: string[] = [];
  let bootKiB: number;
  if (cells !== undefined) {
    if (!cells.some((c) => c.cpus.length > 0)) throw new VirtError('CONFIG_UNSUPPORTED', 'unsupported configuration: At least one NUMA node has to have CPUs');
    bootKiB = 0;
    cells.forEach((c, i) => {
      const sizeKiB = aligned(c.memoryKiB, RAM_ALIGN_KIB, `memory size of NUMA node '${i}'`);
      bootKiB += sizeKiB;
      const plan = planRegion(def, { id: `ram-node${i}`, sizeKiB, cell: i, system: false }, host);
      ram.push(plan);
      // A non-contiguous CPU list repeats the key: cpus=1-27,cpus=29.
      const cpus = formatIdSet(c.cpus).split(',').filter(Boolean).map((r) => `,cpus=${r}`).join('');
      numaOptions.push(`node,nodeid=${i}${cpus},memdev=${plan.id}`);
    });
    if (cells.some((c) => c.distances !== undefined)) {
      cells.forEach((_, src) => cells.forEach((__, dst) => numaOptions.push(`dist,src=${src},dst=${dst},val=${distance(def, src, dst)}`)));
    }
  } else {
    bootKiB = aligned(bootMemoryKiB(def), RAM_ALIGN_KIB, 'initial memory size');
    ram.push(planRegion(def, { id: DEFAULT_RAM_ID, sizeKiB: bootKiB, cell: null, system: true }, host));
  }
  let mOption = `size=${bootKiB}k`;
  if (def.memory.hotplug !== undefined) {
    mOption += `,slots=${def.memory.hotplug.slots},maxmem=${aligned(def.memory.hotplug.ceilingKiB, RAM_ALIGN_KIB, 'maximum memory size')}k`;
  }

  const devices: MemoryLayoutPlan['devices'] = [];
  const ids = memoryDeviceIds(def);
  def.memoryDevices.forEach((d, index) => {
    const id = ids[index]!;
    const plan = planRegion(def, {
      id: memdevId(id), sizeKiB: alignedDeviceKiB(d, index), cell: d.model === 'virtio-pmem' ? null : d.node ?? 0, device: d, system: false,
    }, host);
    devices.push({ backend: plan, props: deviceProps(d, id, plan) });
  });

  const machineOptions: string[] = [];
  if (def.memoryDevices.some((d) => d.model === 'nvdimm')) machineOptions.push('nvdimm=on');
  if (def.memoryBacking?.nosharepages) machineOptions.push('mem-merge=off');
  const system = ram.find((b) => b.system);
  if (system !== undefined && !system.plain) machineOptions.push(`memory-backend=${system.id}`);
  return { mOption, machineOptions, ram, numaOptions, devices, memLock: def.memoryBacking?.locked === true };
}

/** A cell distance: as given (either direction, libvirt completes them), else 10 local, 20 remote. */
function distance(def: DomainDef, src: number, dst: number): number {
  const cells = def.numa?.cells ?? [];
  return cells[src]?.distances?.find((d) => d.cell === dst)?.value
    ?? cells[dst]?.distances?.find((d) => d.cell === src)?.value
    ?? (src === dst ? 10 : 20);
}

/** The -device object of a memory device (bytes, as QEMU takes them). */
function deviceProps(d: MemoryDeviceDef, id: string, plan: BackendPlan): Record<string, unknown> {
  const memdev = plan.id;
  switch (d.model) {
    case 'dimm':
      return { driver: 'pc-dimm', node: d.node ?? 0, memdev, id, ...dimmAddress(d.address) };
    case 'nvdimm':
      return {
        driver: 'nvdimm', node: d.node ?? 0,
        ...(d.labelKiB !== undefined ? { 'label-size': d.labelKiB * 1024 } : {}),
        ...(d.readonly ? { unarmed: true } : {}),
        memdev, id, ...dimmAddress(d.address),
      };
    case 'virtio-pmem':
      return { driver: 'virtio-pmem-pci', memdev, id };
    case 'virtio-mem':
      return {
        driver: 'virtio-mem-pci', node: d.node ?? 0, 'block-size': d.blockKiB * 1024, 'requested-size': d.requestedKiB * 1024,
        memdev, ...(plan.devicePrealloc ? { prealloc: true } : {}), id,
      };
  }
}

function dimmAddress(a: { slot?: number; baseAddress?: number } | undefined): Record<string, number> {
  return { ...(a?.slot !== undefined ? { slot: a.slot } : {}), ...(a?.baseAddress !== undefined ? { addr: a.baseAddress } : {}) };
}

/**
 * A backend as QEMU's -object JSON, with the host paths filled in.
 * @throws VirtError INTERNAL when a huge page size has no hugetlbfs mount (the caller prepares one
 *   for every size the plan uses)
 */
export function backendObject(plan: BackendPlan, paths: BackingPaths): Record<string, unknown> {
  const o: Record<string, unknown> = { 'qom-type': plan.qomType, id: plan.id };
  if (plan.qomType === 'memory-backend-memfd' && plan.hugepageKiB !== null) {
    o['hugetlb'] = true;
    o['hugetlbsize'] = plan.hugepageKiB * 1024;
  }
  if (plan.file !== null) {
    o['mem-path'] = memPath(plan.file, paths);
    if (plan.discardData !== undefined) o['discard-data'] = plan.discardData;
  }
  if (plan.share !== undefined) o['share'] = plan.share;
  // The default RAM keeps QEMU's legacy RAM block name (libvirt does the same, for migration).
  if (plan.system && plan.qomType !== 'memory-backend-ram') o['x-use-canonical-path-for-ramblock-id'] = false;
  if (plan.reserve === false) o['reserve'] = false;
  if (plan.prealloc) o['prealloc'] = true;
  if (plan.preallocThreads !== undefined) o['prealloc-threads'] = plan.preallocThreads;
  o['size'] = plan.sizeKiB * 1024;
  if (plan.alignKiB !== undefined) o['align'] = plan.alignKiB * 1024;
  if (plan.pmem) o['pmem'] = true;
  if (plan.hostNodes !== undefined) {
    o['host-nodes'] = plan.hostNodes;
    o['policy'] = plan.policy;
  }
  return o;
}

function memPath(file: BackingFile, paths: BackingPaths): string {
  switch (file.kind) {
    case 'device-path': return file.path;
    case 'memory-dir': return paths.memoryDir;
    case 'hugetlbfs': {
      const mount = paths.hugetlbfs.get(file.pageSizeKiB);
      if (mount === undefined) throw new VirtError('INTERNAL', `internal error: no hugetlbfs mount for ${file.pageSizeKiB} KiB pages was prepared`);
      return mount;
    }
  }
}

/** Huge page sizes (KiB) whose backends are files on hugetlbfs (memfd needs no mount), ascending. */
export function hugetlbfsSizesNeeded(plan: MemoryLayoutPlan): number[] {
  const sizes = allBackends(plan).flatMap((b) => (b.file?.kind === 'hugetlbfs' ? [b.file.pageSizeKiB] : []));
  return [...new Set(sizes)].sort((a, b) => a - b);
}

/** Every backend of a plan: RAM first, then the devices'. */
export function allBackends(plan: MemoryLayoutPlan): BackendPlan[] {
  return [...plan.ram, ...plan.devices.map((d) => d.backend)];
}
