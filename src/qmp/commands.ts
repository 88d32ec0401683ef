/**
 * Typed wrappers for the QMP commands the driver uses. Each validates the reply (wire JSON is
 * `unknown` until checked here) and converts QMP's hyphenated names to camelCase with units.
 * Sizes are bytes on the wire (QAPI `size`) and stay bytes here.
 *
 * Every function throws what {@link QmpClient.execute} throws (QmpCommandError, QmpTimeoutError,
 * QmpAbortedError, QmpDisconnectedError, QmpStateError) and QmpProtocolError if the reply has
 * the wrong shape.
 */

import type { QmpCallOptions, QmpClient } from './client.js';
import { QmpDisconnectedError } from './errors.js';
import {
  expectArray,
  expectBoolean,
  expectNumber,
  expectObject,
  expectString,
  optionalString,
  type JsonObject,
} from './validate.js';

/** Anything that can run a command; lets tests pass a scripted stand-in. */
export type QmpExecutor = Pick<QmpClient, 'execute'>;

/** `query-status`. `status` is QEMU's RunState, e.g. `running`, `paused`, `prelaunch` (with -S), `shutdown`. */
export async function queryStatus(qmp: QmpExecutor, opts?: QmpCallOptions): Promise<{ status: string; running: boolean }> {
  const r = expectObject(await qmp.execute('query-status', undefined, opts), 'query-status');
  return { status: expectString(r.status, 'query-status.status'), running: expectBoolean(r.running, 'query-status.running') };
}

/** `query-balloon`: the guest's current memory as the balloon sees it. Fails with DeviceNotActive without a balloon. */
export async function queryBalloon(qmp: QmpExecutor, opts?: QmpCallOptions): Promise<{ actualBytes: number }> {
  const r = expectObject(await qmp.execute('query-balloon', undefined, opts), 'query-balloon');
  return { actualBytes: expectNumber(r.actual, 'query-balloon.actual') };
}

/** `balloon`: asks the guest to shrink/grow to `targetBytes`. Returns at once; progress shows in BALLOON_CHANGE events. */
export async function setBalloon(qmp: QmpExecutor, targetBytes: number, opts?: QmpCallOptions): Promise<void> {
  await qmp.execute('balloon', { value: targetBytes }, opts);
}

/** `qom-get`: reads a QOM property; the value's shape depends on the property, so it stays `unknown`. */
export async function qomGet(qmp: QmpExecutor, path: string, property: string, opts?: QmpCallOptions): Promise<unknown> {
  return qmp.execute('qom-get', { path, property }, opts);
}

/** `qom-set`: writes a QOM property, e.g. a virtio-mem device's `requested-size` (bytes). */
export async function qomSet(
  qmp: QmpExecutor,
  path: string,
  property: string,
  value: unknown,
  opts?: QmpCallOptions,
): Promise<void> {
  await qmp.execute('qom-set', { path, property, value }, opts);
}

/**
 * `query-memory-size-summary`. QEMU omits `plugged-memory` when the machine has no
 * hot-plug memory region; nothing can be plugged then, so it is reported as 0.
 */
export async function queryMemorySizeSummary(
  qmp: QmpExecutor,
  opts?: QmpCallOptions,
): Promise<{ baseMemoryBytes: number; pluggedMemoryBytes: number }> {
  const r = expectObject(await qmp.execute('query-memory-size-summary', undefined, opts), 'query-memory-size-summary');
  return {
    baseMemoryBytes: expectNumber(r['base-memory'], 'query-memory-size-summary.base-memory'),
    pluggedMemoryBytes:
      r['plugged-memory'] === undefined ? 0 : expectNumber(r['plugged-memory'], 'query-memory-size-summary.plugged-memory'),
  };
}

/** A virtio-mem device (QAPI VirtioMEMDeviceInfo). Addresses are guest-physical; x86 keeps them below 2^52, exact in a double. */
export interface VirtioMemDeviceInfo {
  type: 'virtio-mem';
  id?: string;
  memaddr: number;
  requestedSizeBytes: number;
  sizeBytes: number;
  maxSizeBytes: number;
  blockSizeBytes: number;
  node: number;
  memdev: string;
}

/** A pc-dimm or nvdimm (QAPI PCDIMMDeviceInfo). */
export interface DimmDeviceInfo {
  type: 'dimm' | 'nvdimm';
  id?: string;
  addr: number;
  sizeBytes: number;
  slot: number;
  node: number;
  memdev: string;
  hotplugged: boolean;
  hotpluggable: boolean;
}

/** Any other memory device kind (virtio-pmem, sgx-epc, future ones): kept, not interpreted. */
export interface OtherMemoryDeviceInfo {
  type: 'other';
  qemuType: string;
  id?: string;
  data: JsonObject;
}

export type MemoryDeviceInfo = VirtioMemDeviceInfo | DimmDeviceInfo | OtherMemoryDeviceInfo;

/** `query-memory-devices`: hot-pluggable memory devices. */
export async function queryMemoryDevices(qmp: QmpExecutor, opts?: QmpCallOptions): Promise<MemoryDeviceInfo[]> {
  const list = expectArray(await qmp.execute('query-memory-devices', undefined, opts), 'query-memory-devices');
  return list.map((item, i) => parseMemoryDevice(item, `query-memory-devices[${i}]`));
}

/** Validates one `query-memory-devices` entry. @throws {QmpProtocolError} on a wrong shape. */
export function parseMemoryDevice(raw: unknown, what = 'memory device'): MemoryDeviceInfo {
  const item = expectObject(raw, what);
  const type = expectString(item.type, `${what}.type`);
  const d = expectObject(item.data, `${what}.data`);
  const at = (key: string): string => `${what}.data.${key}`;
  const id = optionalString(d.id, at('id'));
  const withId = id === undefined ? {} : { id };
  switch (type) {
    case 'virtio-mem':
      return {
        type,
        ...withId,
        memaddr: expectNumber(d.memaddr, at('memaddr')),
        requestedSizeBytes: expectNumber(d['requested-size'], at('requested-size')),
        sizeBytes: expectNumber(d.size, at('size')),
        maxSizeBytes: expectNumber(d['max-size'], at('max-size')),
        blockSizeBytes: expectNumber(d['block-size'], at('block-size')),
        node: expectNumber(d.node, at('node')),
        memdev: expectString(d.memdev, at('memdev')),
      };
    case 'dimm':
    case 'nvdimm':
      return {
        type,
        ...withId,
        addr: expectNumber(d.addr, at('addr')),
        sizeBytes: expectNumber(d.size, at('size')),
        slot: expectNumber(d.slot, at('slot')),
        node: expectNumber(d.node, at('node')),
        memdev: expectString(d.memdev, at('memdev')),
        hotplugged: expectBoolean(d.hotplugged, at('hotplugged')),
        hotpluggable: expectBoolean(d.hotpluggable, at('hotpluggable')),
      };
    default:
      return { type: 'other', qemuType: type, ...withId, data: d };
  }
}

/** `system_powerdown`: presses the ACPI power button; the guest decides whether to shut down. */
export async function systemPowerdown(qmp: QmpExecutor, opts?: QmpCallOptions): Promise<void> {
  await qmp.execute('system_powerdown', undefined, opts);
}

/**
 * `quit`: QEMU exits. A disconnect before the reply counts as success (QEMU may close the
 * monitor before its reply is flushed; qemu.qmp's machine.py tolerates the same).
 */
export async function quit(qmp: QmpExecutor, opts?: QmpCallOptions): Promise<void> {
  try {
    await qmp.execute('quit', undefined, opts);
  } catch (err) {
    if (!(err instanceof QmpDisconnectedError)) throw err;
  }
}

/** `stop`: pauses the vCPUs. */
export async function stop(qmp: QmpExecutor, opts?: QmpCallOptions): Promise<void> {
  await qmp.execute('stop', undefined, opts);
}

/** `cont`: resumes the vCPUs (also starts a guest launched with -S). */
export async function cont(qmp: QmpExecutor, opts?: QmpCallOptions): Promise<void> {
  await qmp.execute('cont', undefined, opts);
}

/** Value of a guest stat the guest did not report (docs/interop/virtio-balloon-stats). */
export const UNSUPPORTED_STAT = -1;

/** Balloon guest statistics as returned by `qom-get <balloon> guest-stats`. */
export interface BalloonGuestStats {
  /** Keys as QEMU names them (`stat-total-memory`, `stat-available-memory`, ...); unsupported ones are -1. */
  stats: Record<string, number>;
  /** Seconds since the Unix epoch of the guest's last report; 0 until the first one. */
  lastUpdate: number;
}

/**
 * Reads balloon guest statistics. They are only refreshed after `guest-stats-polling-interval`
 * was set on the device (docs/interop/virtio-balloon-stats).
 */
/**
 * Asks the guest for a new statistics report now: QEMU's balloon polls on a timer, and a timer
 * made anew (interval 0, then `periodS` again) fires at once; setting the same interval does
 * nothing. The report lands in `guest-stats` when the guest answers (tens of milliseconds).
 * Both commands are written at once (QEMU runs a monitor's commands in order), so a client
 * that dies between them does not leave the guest's statistics off. No-op for `periodS` <= 0.
 */
export async function requestBalloonGuestStats(qmp: QmpExecutor, balloonPath: string, periodS: number, opts?: QmpCallOptions): Promise<void> {
  if (periodS <= 0) return;
  await Promise.all([0, periodS].map((v) => qomSet(qmp, balloonPath, 'guest-stats-polling-interval', v, opts)));
}

export async function queryBalloonGuestStats(
  qmp: QmpExecutor,
  balloonPath: string,
  opts?: QmpCallOptions,
): Promise<BalloonGuestStats> {
  return parseBalloonGuestStats(await qomGet(qmp, balloonPath, 'guest-stats', opts));
}

/** Validates a `guest-stats` value. @throws {QmpProtocolError} on a wrong shape. */
export function parseBalloonGuestStats(raw: unknown): BalloonGuestStats {
  const r = expectObject(raw, 'guest-stats');
  const statsIn = expectObject(r.stats, 'guest-stats.stats');
  const stats: Record<string, number> = {};
  for (const [key, value] of Object.entries(statsIn)) {
    const n = expectNumber(value, `guest-stats.stats.${key}`);
    // The docs say -1, but QEMU keeps stats as uint64 and prints -1 as 18446744073709551615,
    // which JSON.parse rounds to 2^64 (seen on QEMU 7.2). Both mean "not reported".
    stats[key] = n === UNSUPPORTED_STAT || n >= 2 ** 64 ? UNSUPPORTED_STAT : n;
  }
  return { stats, lastUpdate: expectNumber(r['last-update'], 'guest-stats.last-update') };
}

/** `query-dirty-rate` (QAPI DirtyRateInfo): the last or running dirty page rate measurement. */
export interface DirtyRateInfo {
  /** unstarted, measuring or measured. */
  status: string;
  /** When the measurement started (seconds, QEMU's monotonic clock). */
  startTimeS: number;
  /** How long it measures (seconds). */
  calcTimeS: number;
  /** page-sampling, dirty-bitmap or dirty-ring (absent before QEMU 6.2). */
  mode?: string;
  /** MiB/s, when measured. */
  dirtyRateMiBps?: number;
  /** Per vCPU, in dirty-ring mode. */
  vcpuRates?: Array<{ id: number; dirtyRateMiBps: number }>;
}

/** `query-dirty-rate`. @throws as every command, QmpProtocolError on a wrong shape */
export async function queryDirtyRate(qmp: QmpExecutor, opts?: QmpCallOptions): Promise<DirtyRateInfo> {
  const r = expectObject(await qmp.execute('query-dirty-rate', undefined, opts), 'query-dirty-rate');
  const out: DirtyRateInfo = {
    status: expectString(r.status, 'query-dirty-rate.status'),
    startTimeS: expectNumber(r['start-time'], 'query-dirty-rate.start-time'),
    calcTimeS: expectNumber(r['calc-time'], 'query-dirty-rate.calc-time'),
  };
  const mode = optionalString(r.mode, 'query-dirty-rate.mode');
  if (mode !== undefined) out.mode = mode;
  if (r['dirty-rate'] !== undefined) out.dirtyRateMiBps = expectNumber(r['dirty-rate'], 'query-dirty-rate.dirty-rate');
  if (r['vcpu-dirty-rate'] !== undefined) {
    out.vcpuRates = expectArray(r['vcpu-dirty-rate'], 'query-dirty-rate.vcpu-dirty-rate').map((v, i) => {
      const o = expectObject(v, `query-dirty-rate.vcpu-dirty-rate[${i}]`);
      return { id: expectNumber(o.id, `vcpu-dirty-rate[${i}].id`), dirtyRateMiBps: expectNumber(o['dirty-rate'], `vcpu-dirty-rate[${i}].dirty-rate`) };
    });
  }
  return out;
}

/** `calc-dirty-rate`: start measuring the dirty page rate for `calcTimeS` seconds; query-dirty-rate reads it. */
export async function calcDirtyRate(qmp: QmpExecutor, calcTimeS: number, mode?: string, opts?: QmpCallOptions): Promise<void> {
  await qmp.execute('calc-dirty-rate', { 'calc-time': calcTimeS, ...(mode === undefined ? {} : { mode }) }, opts);
}
