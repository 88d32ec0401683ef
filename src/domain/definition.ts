/**
 * The persistent definition of a domain: virtmem's own model, stored as JSON (one file per
 * domain) and mapped to/from libvirt domain XML in `xml.ts`.
 *
 * Units are in the field names. All memory sizes are KiB (libvirt's API unit); conversion to
 * bytes happens only where QEMU is spoken to.
 */

export const DEF_SCHEMA_VERSION = 1 as const;

export interface DiskDef {
  /** Absolute path of the image file on the host. */
  path: string;
  format: 'raw' | 'qcow2';
  /** Guest device name as in libvirt's <target dev=...> (e.g. "vda"). */
  target: string;
  bus: 'virtio' | 'sata' | 'ide' | 'scsi';
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

/** A virtio-mem device: hot-pluggable memory the guest can grow into without a reboot. */
export interface VirtioMemDef {
  model: 'virtio-mem';
  /** Size of the device's region: the most it can ever plug. */
  sizeKiB: number;
  /** Plug granularity (libvirt <block>). */
  blockKiB: number;
  /** How much is plugged (libvirt <requested>). */
  requestedKiB: number;
}

/** A pc-dimm: a fixed block of hot-plugged memory. */
export interface DimmDef {
  model: 'dimm';
  sizeKiB: number;
}

export type MemoryDeviceDef = VirtioMemDef | DimmDef;

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
  memoryDevices: MemoryDeviceDef[];
  os: OsDef;
  disks: DiskDef[];
  balloon: BalloonDef;
}
