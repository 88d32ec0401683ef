/**
 * The one face of the driver layer: the hypervisor-neutral interface every driver implements
 * and every type it speaks. Front ends (CLI, daemon, HTTP, policy) call only this and the
 * domain layer, as virsh and libvirt's daemons call only libvirt's public API.
 *
 * Drivers: virtmem's own QEMU driver (native/, `virtmem:///system`), libvirt over its RPC
 * protocol (libvirt/, `qemu:///system`, `qemu+tcp://...`), and the daemon's client (remote/),
 * which forwards to a running virtmemd. An operation a driver lacks throws VirtError
 * NO_SUPPORT saying so; the optional members are the ones only some drivers have.
 *
 * Units: the commands speak KiB, as libvirt's API does; the live views (`GuestView`) carry
 * bytes, as QEMU reports them and the HTTP API serves them. Every name says its unit.
 */
import type { DomainDef, PolicyDef } from '../domain/definition.js';
import type { PolicySettingsChange, PolicySettings } from '../domain/policy.js';
import type { MemorySplit } from '../domain/memory.js';
import type { MemoryStats } from './memory/stats.js';
import type { DriverWatch, WatchOptions } from './watch.js';
import type { Translation, TranslateOptions, MemoryMapReport } from '../inspect/inspector.js';
import type { KvmStatus } from './native/accel.js';
import type { GuestView } from './view.js';
import type { NodeMemory } from './node-api.js';
import type {
  DeviceFlags, DirtyRateMode, GuestHostMemory, DomainStatsRecord, DomainStatsRequest, MemoryDeviceUpdate, MemoryParameter, MemoryParametersUpdate, NumaParameters,
  NumaParametersUpdate,
} from './domain-memory-api.js';

export { VirtError, invalidArg, type VirtErrorCode } from '../domain/errors.js';
export * from './node-api.js';
export * from './domain-memory-api.js';
export type { MemoryStats, MemoryStat } from './memory/stats.js';
export type { DriverWatch, WatchChange, WatchOptions, HostMemory, HostWatchState } from './watch.js';
export type { GuestView, DeviceView, GuestStatsView, MonitorState } from './view.js';
export type { Translation, TranslateOptions, MemoryMapReport, ReadPreference } from '../inspect/inspector.js';
export type { MapRegion, MemoryDeviceSummary } from '../inspect/guest-phys-map.js';
export { flagWords, type PagingMode } from '../inspect/paging.js';
export { translationJson, memoryMapJson, walkFailure } from '../inspect/json.js';
export type { KvmStatus } from './native/accel.js';
export { bootDiagnosis } from './native/accel.js';

/** The accelerator a guest runs with. */
export type Accel = 'kvm' | 'tcg';

/**
 * Lifecycle states in virsh's words. virtmem's own driver reports running, paused and shutoff;
 * libvirt has the others too.
 */
export type DomainState = 'running' | 'paused' | 'shutoff' | 'no state' | 'idle' | 'in shutdown' | 'crashed' | 'pmsuspended';

/** Why a domain is in its state (libvirt's state reasons, in virsh's words). */
export type StateReason =
  | 'booted' | 'unpaused' | 'user' | 'unknown'
  | 'shutdown' | 'destroyed' | 'crashed' | 'failed'
  | (string & {});

/** Which side of a domain an operation affects; neither flag means "current" (libvirt). */
export interface AffectFlags {
  live?: boolean;
  config?: boolean;
}

export interface DomainSummary {
  id: number | null;
  name: string;
  uuid: string;
  state: DomainState;
  reason: StateReason;
  persistent: boolean;
}

/** Where a guest's memory is, for dominfo and --json. */
export interface MemoryBreakdown {
  bootKiB: number;
  balloonKiB: number;
  dimmKiB: number;
  /** virtio-mem memory plugged now. */
  pluggedKiB: number;
  /** The most virtio-mem could plug (sum of device sizes). */
  hotplugSizeKiB: number;
}

export interface DomainInfo extends DomainSummary {
  /** 'hvm' for QEMU guests; other libvirt drivers say otherwise (test:///default: 'linux'). */
  osType: string;
  /** The host's security driver and the domain's label, when the driver reports them (libvirt). */
  security?: { model: string; doi: string; label: string | null; enforcing: boolean } | null;
  /** Whether a managed save image exists, when the driver knows (libvirt). */
  managedSave?: boolean;
  /** libvirt's messages about the domain (taints, deprecations), printed by virsh dominfo. */
  messages?: string[];
  vcpus: number;
  cpuTimeS: number | null;
  maxMemoryKiB: number;
  usedMemoryKiB: number;
  autostart: boolean;
  accel: Accel | null;
  /** The -cpu model QEMU got (null: QEMU's default, or not running). */
  cpuModel: string | null;
  /** Why a running domain asking for auto did not get KVM on a host with a KVM device. */
  accelNote: string | null;
  /** Where the memory is: boot RAM under the balloon, DIMMs, virtio-mem. */
  memory: MemoryBreakdown;
  /** What the memory is on the host: backing, NUMA placement, cgroup, KSM (when the driver knows). */
  hostMemory?: GuestHostMemory;
}

/** Progress of a memory change, reported while it is followed. */
export interface BalloonProgress {
  actualKiB: number;
  targetKiB: number;
  startKiB: number;
  elapsedMs: number;
}

export interface SetMemoryOptions extends AffectFlags {
  /** Skip the guard rails (guest in-use memory, host available memory). */
  force?: boolean;
  /** libvirt's "current": live when running, else config. Without any flag: live only (virsh). */
  current?: boolean;
  /** Wait until the guest reached the target (live only). */
  wait?: boolean;
  /**
   * With `wait`, a grow is "reached" only once the guest onlined what was plugged (its own
   * MemTotal, rules.ts guestTotalBaseline). That needs a statistics report from before the
   * change, which can hold the change back up to GUEST_BASELINE_MS: false sends at once and
   * takes QEMU's plugged sizes as reached (for a caller that watches the guest anyway, as the
   * policy does). Default true.
   */
  onliningCheck?: boolean;
  /** How the change is split between balloon and virtio-mem (domain/memory.ts MemorySplit); default 'plain'. */
  split?: MemorySplit;
  /** Bound on the whole wait (default: memory/rules.ts). */
  timeoutMs?: number;
  /** Give up when the guest makes no progress for this long (default: memory/rules.ts). */
  stallMs?: number;
  onProgress?: (p: BalloonProgress) => void;
  signal?: AbortSignal;
}

export interface SetMemoryResult {
  targetKiB: number;
  /** What the guest had when the call returned (live), when known. */
  actualKiB: number | null;
  /** True only when waited for and reached. */
  reached: boolean;
  live: boolean;
  config: boolean;
}

export interface StartResult {
  live: { name: string };
  id: number | null;
  /** The QEMU process, when the driver knows it. */
  pid: number | null;
  accel: Accel | null;
  cpuModel?: string | null | undefined;
  /** A note for the user about the accelerator (printed as a warning). */
  accelNote?: string | null | undefined;
}

export interface DefineResult {
  def: { name: string; uuid: string };
  redefined: boolean;
  warnings: string[];
}

/** `virtmem capabilities`: what the host offers guests. */
export interface HostCapabilities {
  emulator: { path: string; version: string | null } | { path: null; version: null; error: string };
  /** null when there is no QEMU to probe with. */
  kvm: KvmStatus | null;
  accel: { autoPicks: Accel; envOverride: string | null };
  cpu: { defaultUnderKvm: string; defaultUnderTcg: string; modes: string[] };
  hostMemory: { totalKiB: number | null; availableKiB: number | null; pressure: string | null };
  defaultGuest: { kernel: string; kernelVersion: string; initrd: string } | null;
}

/** What the automatic policy last did for a guest (the daemon runs it). */
export interface PolicyDecisionRecord {
  at: string;
  action: 'resize' | 'hold' | 'failed';
  fromKiB?: number;
  targetKiB?: number;
  reason: string;
}

/** A guest's automatic memory policy settings. */
export interface PolicyDocument {
  name: string;
  /** The settings with their defaults filled in. */
  settings: PolicySettings;
  /** What is stored for the guest (null: nothing, every setting is its default). */
  configured: PolicyDef | null;
  /** The policy's last decision, when a running daemon knows one (undefined: not asked). */
  last?: PolicyDecisionRecord | null;
}

/** Flags of a `setMaxMemory`/`setStatsPeriod` call. */
export type AffectOptions = AffectFlags & { signal?: AbortSignal };

export interface HypervisorDriver {
  /** The connection URI as the user gave it (virtmem:///system for the native driver). */
  readonly uri: string;
  list(): Promise<DomainSummary[]>;
  state(ref: string): Promise<{ state: DomainState; reason: StateReason }>;
  info(ref: string, signal?: AbortSignal): Promise<DomainInfo>;
  start(ref: string, opts?: { paused?: boolean; signal?: AbortSignal }): Promise<StartResult>;
  shutdown(ref: string, opts?: { timeoutMs?: number | null; signal?: AbortSignal }): Promise<{ stopped: boolean }>;
  destroy(ref: string, signal?: AbortSignal): Promise<void>;
  defineXml(xml: string): Promise<DefineResult>;
  undefine(ref: string): Promise<{ name: string }>;
  dumpXml(ref: string, opts?: { inactive?: boolean; signal?: AbortSignal }): Promise<string>;
  setMemory(ref: string, kib: number, opts?: SetMemoryOptions): Promise<SetMemoryResult>;
  setMaxMemory(ref: string, kib: number, flags?: AffectOptions): Promise<{ live: boolean; config: boolean }>;
  memoryStats(ref: string, opts?: { signal?: AbortSignal }): Promise<MemoryStats>;
  setStatsPeriod(ref: string, periodS: number, flags?: AffectOptions): Promise<{ live: boolean; config: boolean }>;
  monitorCommand(ref: string, command: string, opts?: { hmp?: boolean; signal?: AbortSignal }): Promise<string | Record<string, unknown>>;
  /** A guest's policy settings (defaults filled in). */
  policy(ref: string, signal?: AbortSignal): Promise<PolicyDocument>;
  /** Change a guest's policy settings; fields not given keep their value, null resets one. */
  setPolicy(ref: string, change: PolicySettingsChange, signal?: AbortSignal): Promise<PolicyDocument>;
  /** The live view a shut-off guest would boot with (its memory parts; nothing measured). */
  inactiveView(ref: string, signal?: AbortSignal): Promise<GuestView>;
  /** Keep the policy's last decision for a guest where `policy()` finds it again (the daemon calls it). */
  recordPolicyDecision?(ref: string, d: PolicyDecisionRecord): Promise<void>;
  /**
   * Watch this host: every running guest's live memory view, kept current from the
   * hypervisor's events, and a stream of changes. One watch per driver.
   */
  watch(opts?: WatchOptions): DriverWatch;
  /** Define from virtmem's own definition (`virtmem new`). Native driver only. */
  define?(def: DomainDef): Promise<{ def: DomainDef; redefined: boolean }>;
  /** What the host offers guests. Native driver only. */
  capabilities?(opts?: { refresh?: boolean; signal?: AbortSignal }): Promise<HostCapabilities>;
  /** Where a guest's agent channel and console log are (the built-in guest's). Native driver only. */
  guestChannels?(ref: string): Promise<{ agentSocket: string; consoleLog: string }>;
  /** GVA -> GPA -> HVA -> HPA of a running guest. Native driver only. */
  translate?(ref: string, gva: bigint, opts?: TranslateOptions & { signal?: AbortSignal }): Promise<Translation>;
  /** The guest-physical memory map of a running guest. Native driver only. */
  memoryMap?(ref: string, opts?: { signal?: AbortSignal }): Promise<MemoryMapReport>;
  /** The host's memory (virsh freecell, freepages, allocpages, node-memory-tune, nodememstats). */
  readonly node?: NodeMemory;
  // A domain's memory beyond its size (domain-memory-api.ts): virsh memtune, numatune,
  // attach-device/detach-device of <memory>, update-memory-device, domstats, domdirtyrate-calc.
  /** Memory cgroup limits (virDomainGetMemoryParameters), libvirt's fields in its order. */
  memoryParameters?(ref: string, flags?: DeviceFlags): Promise<MemoryParameter[]>;
  /** Change memory cgroup limits (virDomainSetMemoryParameters); all checked before any is set. */
  setMemoryParameters?(ref: string, update: MemoryParametersUpdate, flags?: DeviceFlags): Promise<void>;
  /** Host NUMA placement (virDomainGetNumaParameters). */
  numaParameters?(ref: string, flags?: DeviceFlags): Promise<NumaParameters>;
  /** Change host NUMA placement (virDomainSetNumaParameters). */
  setNumaParameters?(ref: string, update: NumaParametersUpdate, flags?: DeviceFlags): Promise<void>;
  /** Attach a device from its XML (virDomainAttachDeviceFlags); the native driver takes <memory>. */
  attachDevice?(ref: string, xml: string, flags?: DeviceFlags): Promise<void>;
  /** Detach a device described by its XML (virDomainDetachDeviceFlags). */
  detachDevice?(ref: string, xml: string, flags?: DeviceFlags): Promise<void>;
  /** virsh update-memory-device: one memory device chosen, changed, and its XML as sent. */
  updateMemoryDevice?(ref: string, update: MemoryDeviceUpdate, flags?: DeviceFlags): Promise<{ xml: string }>;
  /** Statistics of domains (virConnectGetAllDomainStats / virDomainListGetStats). */
  domainStats?(req: DomainStatsRequest): Promise<DomainStatsRecord[]>;
  /** Start measuring the dirty page rate (virDomainStartDirtyRateCalc); `domainStats` dirtyrate reads it. */
  startDirtyRateCalc?(ref: string, seconds: number, mode: DirtyRateMode | null, signal?: AbortSignal): Promise<void>;
  /** Definitions that cannot be read (left out of `list`), each with why. Native driver only. */
  unreadableDefinitions?(): Promise<Array<{ name: string; reason: string }>>;
  /** Release connections; the driver is unusable afterwards. */
  close(): Promise<void>;
}
