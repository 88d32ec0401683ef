/**
 * The hypervisor-neutral driver API the CLI (and daemon, policy) call: the operations every
 * driver offers. virtmem's own driver (`Driver`, `virtmem:///system`) and the libvirt driver
 * (`LibvirtDriver`, `qemu:///system`, `qemu+tcp://...`) implement it; an operation one of them
 * lacks throws VirtError NO_SUPPORT saying so. Result types are the fields front ends use, so
 * each driver can return more.
 */
import type { AffectFlags, DomainInfo, DomainSummary, SetMemoryOptions, SetMemoryResult } from './native/driver.js';
import type { MemoryStats } from './memory/stats.js';
import type { DomainState, StateReason } from './native/run-status.js';
import type { NodeMemory } from './node-api.js';
export * from './node-api.js';

export interface StartResult {
  live: { name: string };
  id: number | null;
  /** The QEMU process, when the driver knows it. */
  pid: number | null;
  accel: string | null;
  cpuModel?: string | null | undefined;
  /** A note for the user about the accelerator (printed as a warning). */
  accelNote?: string | null | undefined;
}

export interface DefineResult {
  def: { name: string; uuid: string };
  redefined: boolean;
  warnings: string[];
}

export interface HypervisorDriver {
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
  setMaxMemory(ref: string, kib: number, flags?: AffectFlags & { signal?: AbortSignal }): Promise<{ live: boolean; config: boolean }>;
  memoryStats(ref: string, opts?: { signal?: AbortSignal }): Promise<MemoryStats>;
  setStatsPeriod(ref: string, periodS: number, flags?: AffectFlags & { signal?: AbortSignal }): Promise<{ live: boolean; config: boolean }>;
  monitorCommand(ref: string, command: string, opts?: { hmp?: boolean; signal?: AbortSignal }): Promise<string | Record<string, unknown>>;
  /** The host's memory (freecell, freepages, allocpages, node-memory-tune, nodememstats); absent: unsupported. */
  readonly node?: NodeMemory;
  /** Release connections; the driver is unusable afterwards. */
  close?(): Promise<void>;
}
