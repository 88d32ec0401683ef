/**
 * Schema validation of a stored domain definition (the JSON form of `DomainDef`).
 *
 * Everything that reaches the driver from disk, the HTTP API or the XML mapper passes through
 * `validateDomainDef`, so the rest of the driver may rely on the invariants below without
 * re-checking them. Unknown fields are rejected (a typo must not be silently ignored) and the
 * result is a fresh object holding only known fields.
 */

import { DEF_SCHEMA_VERSION } from './definition.js';
import type {
  BalloonDef,
  CpuDef,
  PolicyDef,
  DiskDef,
  DomainDef,
  MemoryDef,
  MemoryDeviceDef,
  OsDef,
} from './definition.js';
import { VirtError } from './errors.js';
import { VIRTIO_MEM_BLOCK_KIB, deviceMemoryKiB } from './memory.js';
import { isUuid, normalizeUuid, validateDomainName } from './name.js';
import { MAX_KIB, formatKiB } from './size.js';
import { isXmlSafe } from './xml-chars.js';

/**
 * Smallest boot RAM and start-up balloon target virtmem accepts: 64 MiB. Below that a stock
 * distribution kernel with an initramfs does not boot reliably, and a guest ballooned below it
 * tends to OOM before the balloon driver can deflate.
 */
export const MIN_MEMORY_KIB = 64 * 1024;
/** Most vCPUs: QEMU's limit for the i440fx 'pc' machine (q35 allows more; keep one rule). */
export const MAX_VCPUS = 255;
/** Most hot-plug slots: QEMU's ACPI_MAX_RAM_SLOTS on x86. */
export const MAX_MEMORY_SLOTS = 256;
/**
 * Smallest virtio-mem block: the transparent huge page size on x86_64 (2 MiB), which is also
 * QEMU's default block size there.
 */
export const VIRTIO_MEM_MIN_BLOCK_KIB = VIRTIO_MEM_BLOCK_KIB;
/** pc-dimm sizes must be multiples of 2 MiB on x86 (libvirt aligns them to this too). */
export const DIMM_ALIGN_KIB = 2048;
/** QEMU refuses a `maxmem` that is not a multiple of the 4 KiB target page. */
export const PAGE_KIB = 4;
/** Most disks; a sanity bound, well above the PCI slots a 'pc' guest has for virtio disks. */
export const MAX_DISKS = 64;
/** The guest's statistics polling period is a C int in libvirt. */
export const MAX_STATS_PERIOD_S = 2 ** 31 - 1;

const MAX_PATH_LENGTH = 4096;
const MAX_TEXT_LENGTH = 64 * 1024;

/**
 * A definition failed validation. `path` is the field (e.g. "memory.currentKiB",
 * "disks[1].target") so other front ends (the XML mapper) can name their own element instead;
 * `limit` is true when the value is well-formed but beyond what virtmem supports (too many
 * vCPUs, too little memory), as opposed to self-contradictory.
 */
export class DefValidationError extends VirtError {
  readonly path: string;
  readonly reason: string;
  readonly limit: boolean;
  constructor(path: string, reason: string, limit = false) {
    super('INVALID_ARG', `invalid domain definition: ${path}: ${reason}`);
    this.name = 'DefValidationError';
    this.path = path;
    this.reason = reason;
    this.limit = limit;
  }
}

/** The balloon virtmem gives a new domain: stats every 5 s, deflate on OOM, free page reporting. */
export function defaultBalloon(): BalloonDef {
  return { model: 'virtio', statsPeriodS: 5, autodeflate: true, freePageReporting: true };
}

/**
 * Validates an untrusted value as a `DomainDef` and returns a fresh copy holding only known
 * fields, with optional fields that are `undefined` dropped.
 *
 * Invariants (besides types): schemaVersion 1; a valid name and a canonical lower-case UUID;
 * 1..255 vCPUs; boot RAM (maxKiB minus memory devices) and currentKiB >= MIN_MEMORY_KIB;
 * currentKiB <= maxKiB; memory devices need `memory.hotplug` with ceilingKiB >= maxKiB and
 * enough slots; virtio-mem sizes are multiples of a power-of-two block >= 2 MiB, dimm sizes of
 * 2 MiB; initrd needs a kernel; paths are absolute; no text contains characters XML cannot carry.
 * A balloon of model 'none' comes back with its (meaningless) settings turned off.
 *
 * @throws DefValidationError (a VirtError with code INVALID_ARG) naming the field path.
 */
export function validateDomainDef(def: unknown): DomainDef {
  const o = record(def, '', [
    ['schemaVersion', 'name', 'uuid', 'vcpus', 'memory', 'memoryDevices', 'os', 'disks', 'balloon'],
    ['title', 'description', 'emulator', 'accel', 'cpu', 'policy'],
  ]);
  if (o['schemaVersion'] !== DEF_SCHEMA_VERSION) {
    fail('schemaVersion', `unsupported schema version ${show(o['schemaVersion'])} (expected ${DEF_SCHEMA_VERSION})`);
  }
  const memoryDevices = array(o['memoryDevices'], 'memoryDevices', MAX_MEMORY_SLOTS).map((d, i) =>
    memoryDevice(d, `memoryDevices[${i}]`),
  );
  const out: DomainDef = {
    schemaVersion: DEF_SCHEMA_VERSION,
    name: domainName(o['name']),
    uuid: uuid(o['uuid']),
    vcpus: int(o['vcpus'], 'vcpus', 1, MAX_VCPUS, true),
    memory: memory(o['memory'], memoryDevices),
    memoryDevices,
    os: os(o['os']),
    disks: disks(o['disks']),
    balloon: balloon(o['balloon']),
  };
  // Optional fields are added only when present, so deepEqual against the input works.
  if (o['title'] !== undefined) out.title = text(o['title'], 'title', { maxLength: 1024, newlines: false });
  if (o['description'] !== undefined) out.description = text(o['description'], 'description', { newlines: true });
  if (o['emulator'] !== undefined) out.emulator = absolutePath(o['emulator'], 'emulator');
  if (o['accel'] !== undefined) out.accel = oneOf(o['accel'], 'accel', ['kvm', 'tcg'] as const, true);
  if (o['cpu'] !== undefined) out.cpu = cpu(o['cpu']);
  if (o['policy'] !== undefined) out.policy = validatePolicyDef(o['policy'], out.memory.hotplug?.ceilingKiB ?? out.memory.maxKiB);
  return out;
}

/**
 * A guest's stored policy settings, for a guest that can have at most `mostKiB` (its hot-plug
 * ceiling, else its maximum): the same rules for native definitions and libvirt metadata.
 * @throws DefValidationError naming the setting
 */
export function validatePolicyDef(v: unknown, mostKiB: number): PolicyDef {
  const p = policy(v);
  for (const k of ['floorKiB', 'ceilingKiB'] as const) {
    const x = p[k];
    if (x !== undefined && x > mostKiB) fail(`policy.${k}`, `${formatKiB(x)} is above the most this guest can have (${formatKiB(mostKiB)})`);
  }
  return p;
}

// ---- sections ------------------------------------------------------------------------------

function domainName(v: unknown): string {
  const name = text(v, 'name', { newlines: false });
  try {
    return validateDomainName(name);
  } catch (err) {
    return fail('name', err instanceof Error ? err.message : String(err));
  }
}

function uuid(v: unknown): string {
  const s = text(v, 'uuid', { newlines: false });
  // Stored definitions hold the canonical form only, so lookups can compare strings.
  if (!isUuid(s) || normalizeUuid(s) !== s) fail('uuid', `'${s}' is not a lower-case 8-4-4-4-12 UUID`);
  return s;
}

function memory(v: unknown, devices: MemoryDeviceDef[]): MemoryDef {
  const o = record(v, 'memory', [['maxKiB', 'currentKiB'], ['hotplug']]);
  const maxKiB = int(o['maxKiB'], 'memory.maxKiB', MIN_MEMORY_KIB, MAX_KIB, true);
  const currentKiB = int(o['currentKiB'], 'memory.currentKiB', MIN_MEMORY_KIB, MAX_KIB, true);
  if (currentKiB > maxKiB) {
    fail('memory.currentKiB', `${currentKiB} KiB exceeds memory.maxKiB (${maxKiB} KiB)`);
  }
  // maxKiB counts the memory devices, as libvirt's <memory> does; what is left boots the guest.
  const devicesKiB = deviceMemoryKiB({ memoryDevices: devices });
  if (maxKiB - devicesKiB < MIN_MEMORY_KIB) {
    fail(
      'memory.maxKiB',
      `boot RAM (maxKiB ${maxKiB} KiB minus ${devicesKiB} KiB of memory devices) is below the minimum of ${formatKiB(MIN_MEMORY_KIB)}`,
      devicesKiB <= maxKiB,
    );
  }
  const out: MemoryDef = { maxKiB, currentKiB };
  if (o['hotplug'] !== undefined) out.hotplug = hotplug(o['hotplug'], maxKiB, devices.length);
  else if (devices.length > 0) {
    fail('memoryDevices', 'memory devices need memory hot-plug: set memory.hotplug (libvirt <maxMemory>)');
  }
  return out;
}

function hotplug(v: unknown, maxKiB: number, deviceCount: number): { ceilingKiB: number; slots: number } {
  const o = record(v, 'memory.hotplug', [['ceilingKiB', 'slots'], []]);
  const ceilingKiB = int(o['ceilingKiB'], 'memory.hotplug.ceilingKiB', 0, MAX_KIB);
  if (ceilingKiB < maxKiB) {
    fail('memory.hotplug.ceilingKiB', `${ceilingKiB} KiB is below memory.maxKiB (${maxKiB} KiB)`);
  }
  if (ceilingKiB % PAGE_KIB !== 0) {
    fail('memory.hotplug.ceilingKiB', `${ceilingKiB} KiB is not a multiple of the ${PAGE_KIB} KiB page size`);
  }
  const slots = int(o['slots'], 'memory.hotplug.slots', 1, MAX_MEMORY_SLOTS, true);
  if (slots < deviceCount) {
    fail('memory.hotplug.slots', `${slots} slots cannot hold ${deviceCount} memory devices`);
  }
  return { ceilingKiB, slots };
}

function memoryDevice(v: unknown, path: string): MemoryDeviceDef {
  const model = record(v, path, [['model'], ['sizeKiB', 'blockKiB', 'requestedKiB']])['model'];
  if (model === 'dimm') {
    const o = record(v, path, [['model', 'sizeKiB'], []]);
    const sizeKiB = int(o['sizeKiB'], `${path}.sizeKiB`, DIMM_ALIGN_KIB, MAX_KIB);
    multipleOf(sizeKiB, DIMM_ALIGN_KIB, `${path}.sizeKiB`, 'the 2 MiB dimm alignment');
    return { model: 'dimm', sizeKiB };
  }
  if (model !== 'virtio-mem') fail(`${path}.model`, `expected 'virtio-mem' or 'dimm', got ${show(model)}`);
  const o = record(v, path, [['model', 'sizeKiB', 'blockKiB', 'requestedKiB'], []]);
  const blockKiB = int(o['blockKiB'], `${path}.blockKiB`, VIRTIO_MEM_MIN_BLOCK_KIB, MAX_KIB);
  if (!Number.isInteger(Math.log2(blockKiB))) {
    fail(`${path}.blockKiB`, `${blockKiB} KiB is not a power of two`);
  }
  const sizeKiB = int(o['sizeKiB'], `${path}.sizeKiB`, blockKiB, MAX_KIB);
  multipleOf(sizeKiB, blockKiB, `${path}.sizeKiB`, 'the block size');
  const requestedKiB = int(o['requestedKiB'], `${path}.requestedKiB`, 0, sizeKiB);
  multipleOf(requestedKiB, blockKiB, `${path}.requestedKiB`, 'the block size');
  return { model: 'virtio-mem', sizeKiB, blockKiB, requestedKiB };
}

function os(v: unknown): OsDef {
  const o = record(v, 'os', [[], ['kernel', 'initrd', 'cmdline', 'machine']]);
  const out: OsDef = {};
  if (o['kernel'] !== undefined) out.kernel = absolutePath(o['kernel'], 'os.kernel');
  if (o['initrd'] !== undefined) {
    // QEMU refuses -initrd without -kernel; the built-in guest brings its own initrd.
    if (out.kernel === undefined) fail('os.initrd', 'an initrd needs os.kernel');
    out.initrd = absolutePath(o['initrd'], 'os.initrd');
  }
  if (o['cmdline'] !== undefined) out.cmdline = text(o['cmdline'], 'os.cmdline', { newlines: false, maxLength: MAX_PATH_LENGTH });
  if (o['machine'] !== undefined) out.machine = oneOf(o['machine'], 'os.machine', ['pc', 'q35'] as const, true);
  return out;
}

/** Most policy shares (Proxmox allows 0..50000; 0 is "off" there, here it is `enabled: false`). */
export const MAX_POLICY_SHARES = 50_000;

function policy(v: unknown): PolicyDef {
  const o = record(v, 'policy', [['enabled'], ['floorKiB', 'ceilingKiB', 'shares']]);
  const out: PolicyDef = { enabled: bool(o['enabled'], 'policy.enabled') };
  if (o['floorKiB'] !== undefined) out.floorKiB = int(o['floorKiB'], 'policy.floorKiB', MIN_MEMORY_KIB, MAX_KIB);
  if (o['ceilingKiB'] !== undefined) out.ceilingKiB = int(o['ceilingKiB'], 'policy.ceilingKiB', MIN_MEMORY_KIB, MAX_KIB);
  if (out.floorKiB !== undefined && out.ceilingKiB !== undefined && out.floorKiB > out.ceilingKiB) {
    fail('policy.floorKiB', `the floor ${formatKiB(out.floorKiB)} is above the ceiling ${formatKiB(out.ceilingKiB)}`);
  }
  if (o['shares'] !== undefined) out.shares = int(o['shares'], 'policy.shares', 1, MAX_POLICY_SHARES);
  return out;
}

/** QEMU CPU model names: letters, digits and a few separators (e.g. Skylake-Client-v4, qemu64). */
const CPU_MODEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function cpu(v: unknown): CpuDef {
  const o = record(v, 'cpu', [['mode'], ['model']]);
  const mode = oneOf(o['mode'], 'cpu.mode', ['host-passthrough', 'host-model', 'maximum', 'custom'] as const, true);
  if (mode !== 'custom') {
    if (o['model'] !== undefined) fail('cpu.model', `a model is given only with mode 'custom' (mode is '${mode}')`);
    return { mode };
  }
  if (o['model'] === undefined) fail('cpu.model', "mode 'custom' needs a CPU model name (e.g. qemu64, Skylake-Client)");
  const model = text(o['model'], 'cpu.model', { newlines: false, maxLength: 64 });
  if (!CPU_MODEL.test(model)) fail('cpu.model', `'${model}' is not a CPU model name (letters, digits, '.', '_' and '-')`);
  return { mode, model };
}

const DISK_TARGET = /^(vd|sd|hd)[a-z]{1,3}$/;

function disks(v: unknown): DiskDef[] {
  const list = array(v, 'disks', MAX_DISKS).map((d, i) => disk(d, `disks[${i}]`));
  const seen = new Map<string, number>();
  list.forEach((d, i) => {
    const first = seen.get(d.target);
    if (first !== undefined) fail(`disks[${i}].target`, `'${d.target}' is already used by disks[${first}]`);
    seen.set(d.target, i);
  });
  return list;
}

function disk(v: unknown, path: string): DiskDef {
  const o = record(v, path, [['path', 'format', 'target', 'bus', 'readonly'], []]);
  const target = text(o['target'], `${path}.target`, { newlines: false });
  if (!DISK_TARGET.test(target)) fail(`${path}.target`, `'${target}' is not a device name like vda, sda or hda`);
  return {
    path: absolutePath(o['path'], `${path}.path`),
    format: oneOf(o['format'], `${path}.format`, ['raw', 'qcow2'] as const, true),
    target,
    bus: oneOf(o['bus'], `${path}.bus`, ['virtio', 'sata', 'ide', 'scsi'] as const, true),
    readonly: bool(o['readonly'], `${path}.readonly`),
  };
}

function balloon(v: unknown): BalloonDef {
  const o = record(v, 'balloon', [['model', 'statsPeriodS', 'autodeflate', 'freePageReporting'], []]);
  const out: BalloonDef = {
    model: oneOf(o['model'], 'balloon.model', ['virtio', 'none'] as const, true),
    statsPeriodS: int(o['statsPeriodS'], 'balloon.statsPeriodS', 0, MAX_STATS_PERIOD_S),
    autodeflate: bool(o['autodeflate'], 'balloon.autodeflate'),
    freePageReporting: bool(o['freePageReporting'], 'balloon.freePageReporting'),
  };
  // Without a device these settings mean nothing. Store them off, so a definition reads the
  // same whichever way it was made (e.g. defaultBalloon() with the model switched to 'none').
  if (out.model === 'none') return { model: 'none', statsPeriodS: 0, autodeflate: false, freePageReporting: false };
  return out;
}

// ---- primitive checkers ----------------------------------------------------------------------

function fail(path: string, reason: string, limit = false): never {
  throw new DefValidationError(path || '(root)', reason, limit);
}

/** Short, safe rendering of an unexpected value for messages. */
function show(v: unknown): string {
  if (typeof v === 'string') return `'${v.length > 40 ? `${v.slice(0, 40)}...` : v}'`;
  if (v === null || typeof v !== 'object') return String(v);
  return Array.isArray(v) ? 'an array' : 'an object';
}

/**
 * `v` as a plain object with exactly the given required keys and a subset of the optional ones.
 * A key whose value is `undefined` counts as absent (it cannot come from JSON anyway).
 */
function record(v: unknown, path: string, [required, optional]: [string[], string[]]): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(path, `expected an object, got ${show(v)}`);
  const o = v as Record<string, unknown>;
  const prefix = path === '' ? '' : `${path}.`;
  for (const key of Object.keys(o)) {
    if (o[key] !== undefined && !required.includes(key) && !optional.includes(key)) {
      fail(`${prefix}${key}`, 'unknown field');
    }
  }
  for (const key of required) {
    if (o[key] === undefined) fail(`${prefix}${key}`, 'missing');
  }
  return o;
}

function array(v: unknown, path: string, maxLength: number): unknown[] {
  if (!Array.isArray(v)) fail(path, `expected an array, got ${show(v)}`);
  if (v.length > maxLength) fail(path, `more than ${maxLength} entries`, true);
  return v;
}

function int(v: unknown, path: string, min: number, max: number, limit = false): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(path, `expected an integer, got ${show(v)}`);
  if (v < min) fail(path, `${v} is below the minimum ${describeBound(path, min)}`, limit);
  if (v > max) fail(path, `${v} is above the maximum ${describeBound(path, max)}`, limit);
  return v;
}

/** Bounds of KiB fields read better with a unit ("64 MiB") than as raw numbers. */
function describeBound(path: string, bound: number): string {
  return path.endsWith('KiB') ? `of ${formatKiB(bound)}` : `of ${bound}`;
}

function multipleOf(value: number, unit: number, path: string, what: string): void {
  if (value % unit !== 0) fail(path, `${value} KiB is not a multiple of ${what} (${unit} KiB)`);
}

function bool(v: unknown, path: string): boolean {
  if (typeof v !== 'boolean') fail(path, `expected true or false, got ${show(v)}`);
  return v;
}

function oneOf<T extends string>(v: unknown, path: string, values: readonly T[], limit = false): T {
  if (typeof v !== 'string') fail(path, `expected one of ${values.join(', ')}, got ${show(v)}`);
  if (!(values as readonly string[]).includes(v)) {
    fail(path, `'${v}' is not supported (expected one of ${values.join(', ')})`, limit);
  }
  return v as T;
}

function text(v: unknown, path: string, opts: { newlines: boolean; maxLength?: number }): string {
  if (typeof v !== 'string') fail(path, `expected a string, got ${show(v)}`);
  const maxLength = opts.maxLength ?? MAX_TEXT_LENGTH;
  if (v.length > maxLength) fail(path, `longer than ${maxLength} characters`);
  if (!isXmlSafe(v)) fail(path, 'contains control or invalid characters');
  if (!opts.newlines && /[\r\n\t]/.test(v)) fail(path, 'must be a single line');
  return v;
}

function absolutePath(v: unknown, path: string): string {
  const p = text(v, path, { newlines: false, maxLength: MAX_PATH_LENGTH });
  if (!p.startsWith('/')) fail(path, `'${p}' is not an absolute path`);
  return p;
}
