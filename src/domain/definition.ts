/**
 * The persistent definition of a domain: virtmem's own model, stored as JSON (one file per
 * domain) and mapped to/from libvirt domain XML in `xml.ts`.
 *
 * Units are in the field names. All memory sizes are KiB (libvirt's API unit); conversion to
 * bytes happens only where QEMU is spoken to.
 */

export const DEF_SCHEMA_VERSION = 1 as const;

export interface DiskDef {
  /** Absolute path of the image file, or of the block device for type 'block'. */
  path: string;
  /**
   * Where the data lives (libvirt <disk type>): 'block' is a host block device (QEMU's
   * host_device driver). Absent means 'file', an image file (older definitions have no field).
   */
  type?: 'block';
  /** libvirt <disk device>: 'cdrom' is a read-only removable drive. Absent means 'disk'. */
  device?: 'cdrom';
  format: 'raw' | 'qcow2';
  /** Guest device name as in libvirt's <target dev=...> (e.g. "vda"). */
  target: string;
  bus: 'virtio' | 'sata' | 'ide' | 'scsi';
  /** Always true for a cdrom. */
  readonly: boolean;
}

export interface BalloonDef {
  /** 'none' means no balloon device (libvirt <memballoon model='none'/>). */
  model: 'virtio' | 'none';
  /** Guest statistics polling period; 0 disables (libvirt <stats period=.../>). */
  statsPeriodS: number;
  /** Deflate on guest OOM (libvirt autodeflate='on'). */
  autodeflate: boolean;
  /** Free page reporting (libvirt freePageReporting='on'). */
  freePageReporting: boolean;
}

/** libvirt's memory access mode: whether guest RAM is a shared or a private mapping. */
export type MemAccess = 'shared' | 'private';

/**
 * Where a memory device's RAM comes from on the host (libvirt <devices/memory/source> of a
 * dimm or virtio-mem): host NUMA nodes to bind it to (<nodemask>) and a huge page size
 * (<pagesize>). Absent fields follow <memoryBacking> and <numatune>.
 */
export interface MemorySourceDef {
  hostNodes?: number[];
  pageSizeKiB?: number;
}

/**
 * What every memory device may carry: the guest NUMA node it sits on (libvirt <target/node>,
 * absent means 0), and how its backing is mapped (libvirt's access and discard attributes;
 * absent means what the node's cell or <memoryBacking> says).
 */
interface MemoryDeviceCommon {
  node?: number;
  access?: MemAccess;
  /** Discard the backing file's data at exit (libvirt discard='yes'/'no'). */
  discard?: boolean;
}

/** Guest address of a DIMM-like device (libvirt <address type='dimm' slot base>). */
export interface DimmAddressDef {
  slot?: number;
  /** Guest-physical base address in bytes. */
  baseAddress?: number;
}

/** A virtio-mem device: hot-pluggable memory the guest can grow into without a reboot. */
export interface VirtioMemDef extends MemoryDeviceCommon {
  model: 'virtio-mem';
  /** Size of the device's region: the most it can ever plug. */
  sizeKiB: number;
  /** Plug granularity (libvirt <block>). */
  blockKiB: number;
  /** How much is plugged (libvirt <requested>). */
  requestedKiB: number;
  source?: MemorySourceDef;
}

/**
 * A pc-dimm: a fixed block of hot-plugged memory. libvirt keeps any size at define and QEMU
 * gets it rounded up to 2 MiB at start (domain/memory.ts: alignedDeviceKiB).
 */
export interface DimmDef extends MemoryDeviceCommon {
  model: 'dimm';
  sizeKiB: number;
  /**
   * QEMU's id of a DIMM plugged while the guest runs (live definitions only: unplugging one
   * must not rename the others). Absent: `dimm<i>` by its place among the DIMMs.
   */
  id?: string;
  source?: MemorySourceDef;
  address?: DimmAddressDef;
}

/**
 * An emulated NVDIMM (persistent memory) backed by a host file or device (libvirt
 * <memory model='nvdimm'>). Its size counts in <memory>, as libvirt counts it.
 */
export interface NvdimmDef extends MemoryDeviceCommon {
  model: 'nvdimm';
  sizeKiB: number;
  /** The backing file or device (<source><path>). */
  path: string;
  /** Alignment of the backing mapping (<source><alignsize>). */
  alignKiB?: number;
  /** The backing is real persistent memory (<source><pmem/>): QEMU guarantees persistence. */
  pmem?: boolean;
  /** Size of the label area carved out of the device (<target><label><size>). */
  labelKiB?: number;
  /** The guest sees the device read-only (<target><readonly/>; QEMU's unarmed). */
  readonly?: boolean;
  address?: DimmAddressDef;
}

/** A virtio-pmem device: a host file the guest maps as persistent memory, on PCI. */
export interface VirtioPmemDef extends Omit<MemoryDeviceCommon, 'node'> {
  model: 'virtio-pmem';
  sizeKiB: number;
  path: string;
}

export type MemoryDeviceDef = VirtioMemDef | DimmDef | NvdimmDef | VirtioPmemDef;

/** One <memoryBacking><hugepages><page>: a page size, for some guest NUMA cells or all. */
export interface HugepageDef {
  sizeKiB: number;
  /** Guest NUMA cells this size backs (libvirt nodeset); absent means every cell not named elsewhere. */
  cells?: number[];
}

/**
 * How guest RAM is backed on the host (libvirt <memoryBacking>), mapped to QEMU's memory
 * backends by the driver. Every field absent is libvirt's default: private anonymous memory
 * the kernel may merge (KSM), allocated on first touch.
 */
export interface MemoryBackingDef {
  /** Huge pages; an empty list is <hugepages/>: the host's default huge page size for all RAM. */
  hugepages?: HugepageDef[];
  /** Keep KSM off guest RAM (<nosharepages/>; QEMU mem-merge=off). */
  nosharepages?: boolean;
  /** Lock guest RAM in host memory (<locked/>; QEMU -overcommit mem-lock=on). */
  locked?: boolean;
  /** <source type>: anonymous memory, a file (in virtmem's run directory), or a memfd. */
  source?: 'anonymous' | 'file' | 'memfd';
  /** <access mode>: shared or private mapping; any access but the default uses a file backend. */
  access?: MemAccess;
  /** <allocation>: all RAM up front ('immediate', QEMU prealloc) or on first touch, with threads. */
  allocation?: { mode?: 'immediate' | 'ondemand'; threads?: number };
  /** <discard/>: discard file-backed RAM's data at exit (QEMU discard-data). */
  discard?: boolean;
}

/** One guest NUMA cell (libvirt <cpu><numa><cell>); cells are stored in id order from 0. */
export interface NumaCellDef {
  /** vCPUs of this cell; empty for a memory-only node. */
  cpus: number[];
  memoryKiB: number;
  memAccess?: MemAccess;
  discard?: boolean;
  /** Distances to other cells (libvirt <distances><sibling>), as given. */
  distances?: Array<{ cell: number; value: number }>;
}

/** The guest's NUMA topology (libvirt <cpu><numa>). */
export interface GuestNumaDef {
  cells: NumaCellDef[];
}

/** libvirt's <numatune> memory modes; QEMU policies bind, preferred, interleave (restrictive: cgroup only). */
export type NumaMode = 'strict' | 'preferred' | 'interleave' | 'restrictive';

/**
 * Where guest memory may live on the host (libvirt <numatune>): host nodes given (static
 * placement), or chosen by virtmem when the guest starts (placement='auto', where libvirt asks
 * numad: the fewest nodes with free memory for the whole guest).
 */
export interface NumatuneDef {
  /** <memory mode nodeset|placement='auto'>: every guest RAM region not named by a memnode. */
  memory?: { mode: NumaMode; hostNodes: number[] } | { mode: NumaMode; placement: 'auto' };
  /** <memnode cellid mode nodeset>: one guest NUMA cell's RAM. */
  memnodes?: Array<{ cell: number; mode: NumaMode; hostNodes: number[] }>;
}

/**
 * Memory cgroup limits of the QEMU process (libvirt <memtune>), KiB. Absent means unlimited.
 * Enforced at start and changed live through the host's memory controller (cgroup v1 or v2).
 */
export interface MemtuneDef {
  hardLimitKiB?: number;
  softLimitKiB?: number;
  /** Memory plus swap (libvirt's swap_hard_limit); at least hardLimitKiB. */
  swapHardLimitKiB?: number;
  minGuaranteeKiB?: number;
}

export interface MemoryDef {
  /**
   * Total memory at boot (libvirt <memory>): boot RAM plus the memory devices' sizes.
   * Boot RAM (the `-m` size) is maxKiB minus the sum of memory device sizes, as in libvirt.
   */
  maxKiB: number;
  /** Balloon target at start (libvirt <currentMemory>); <= maxKiB. */
  currentKiB: number;
  /** Hot-plug ceiling (libvirt <maxMemory slots=...>); absent when no hot-plug is configured. */
  hotplug?: { ceilingKiB: number; slots: number };
}

export interface OsDef {
  /** Kernel to boot directly; absent means the built-in default guest. */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** QEMU machine type, e.g. "pc" or "q35"; absent means "pc". */
  machine?: string;
  /**
   * Guest architecture (libvirt <os><type arch>); absent means x86_64. An i686 guest runs on
   * qemu-system-i386 unless the definition names an emulator.
   */
  arch?: 'i686';
}

/**
 * The accelerator a domain asks for: libvirt's <domain type='kvm'> is 'kvm' (KVM or a clear
 * refusal), type='qemu' is 'tcg' (software emulation). Absent means 'auto': KVM when a probe has
 * proven it runs guests on this host, else TCG.
 */
export type AccelChoice = 'kvm' | 'tcg';

/** libvirt's <cpu mode>: how the guest CPU model is chosen. */
export type CpuMode = 'host-passthrough' | 'host-model' | 'maximum' | 'custom';

/** The guest CPU (libvirt <cpu mode=... ><model>...</model></cpu>). */
export interface CpuDef {
  mode: CpuMode;
  /** QEMU CPU model name; required for (and only for) mode 'custom'. */
  model?: string;
}

/**
 * Automatic memory policy settings (libvirt has no fields for these; in XML they live under
 * <metadata> in virtmem's namespace). Absent floor/ceiling/shares take the defaults of
 * `effectivePolicy` in src/policy/settings.ts.
 */
export interface PolicyDef {
  enabled: boolean;
  floorKiB?: number;
  ceilingKiB?: number;
  shares?: number;
}

export interface DomainDef {
  schemaVersion: typeof DEF_SCHEMA_VERSION;
  name: string;
  /** RFC 4122 textual form, lower case. */
  uuid: string;
  title?: string;
  description?: string;
  /** QEMU binary; absent means `qemu-system-x86_64` from PATH (or $VIRTMEM_QEMU). */
  emulator?: string;
  vcpus: number;
  /** vCPUs online at boot (libvirt <vcpu current>); absent means all `vcpus`. */
  currentVcpus?: number;
  /** Accelerator asked for; absent means auto (see AccelChoice). */
  accel?: AccelChoice;
  /**
   * Guest CPU model; absent means libvirt's default: QEMU's default model under TCG,
   * host-passthrough under KVM.
   */
  cpu?: CpuDef;
  /** Automatic memory policy; absent means off. */
  policy?: PolicyDef;
  memory: MemoryDef;
  /** Host backing of guest RAM (libvirt <memoryBacking>); absent means private anonymous memory. */
  memoryBacking?: MemoryBackingDef;
  /** Guest NUMA cells (libvirt <cpu><numa>); absent means one node holding all RAM. */
  numa?: GuestNumaDef;
  /** Host NUMA placement of guest RAM (libvirt <numatune>); absent means the host's default policy. */
  numatune?: NumatuneDef;
  /** Memory cgroup limits (libvirt <memtune>); absent means none. */
  memtune?: MemtuneDef;
  memoryDevices: MemoryDeviceDef[];
  os: OsDef;
  disks: DiskDef[];
  balloon: BalloonDef;
}
