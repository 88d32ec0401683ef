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
import { deviceMemoryKiB } from './memory.js';
import { isUuid, normalizeUuid, validateDomainName } from './name.js';
import { MAX_KIB, formatKiB } from './size.js';
import { DefValidationError, MAX_PATH_LENGTH, absolutePath, array, bool, fail, int, oneOf, record, show, text } from './validate-fields.js';
import { validateMemoryBacking, validateMemoryDevice, validateMemtune, validateNuma, validateNumatune } from './validate-memory.js';

export { DefValidationError };
export { VIRTIO_MEM_MIN_BLOCK_KIB } from './validate-memory.js';

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
/** Most disks; a sanity bound, well above the PCI slots a 'pc' guest has for virtio disks. */
export const MAX_DISKS = 64;
/** The guest's statistics polling period is a C int in libvirt. */
export const MAX_STATS_PERIOD_S = 2 ** 31 - 1;

/** The balloon virtmem gives a new domain: stats every 5 s, deflate on OOM, free page reporting. */
export function defaultBalloon(): BalloonDef {
  return { model: 'virtio', statsPeriodS: 5, autodeflate: true, freePageReporting: true };
}

/**
 * Validates an untrusted value as a `DomainDef` and returns a fresh copy holding only known
 * fields, with optional fields that are `undefined` dropped.
 *
 * Invariants (besides types): schemaVersion 1; a valid name and a canonical lower-case UUID;
 * 1..255 vCPUs, currentVcpus within them; boot RAM (maxKiB minus memory devices) and currentKiB
 * >= MIN_MEMORY_KIB; currentKiB <= maxKiB; with guest NUMA cells, boot RAM is the sum of the
 * cells (libvirt recomputes <memory> so); memory devices need `memory.hotplug` with ceilingKiB
 * >= maxKiB and enough slots, sit on an existing cell, and DIMM slots are distinct; virtio-mem
 * sizes are multiples of a power-of-two block >= 2 MiB; the memory configuration follows
 * libvirt's define-time rules (validate-memory.ts); initrd needs a kernel; paths are absolute;
 * no text contains characters XML cannot carry. A balloon of model 'none' comes back with its
 * (meaningless) settings turned off.
 *
 * @throws DefValidationError (a VirtError with code INVALID_ARG) naming the field path.
 */
export function validateDomainDef(def: unknown): DomainDef {
  const o = record(def, '', [
    ['schemaVersion', 'name', 'uuid', 'vcpus', 'memory', 'memoryDevices', 'os', 'disks', 'balloon'],
    ['title', 'description', 'emulator', 'accel', 'cpu', 'policy', 'currentVcpus', 'memoryBacking', 'numa', 'numatune', 'memtune'],
  ]);
  if (o['schemaVersion'] !== DEF_SCHEMA_VERSION) {
    fail('schemaVersion', `unsupported schema version ${show(o['schemaVersion'])} (expected ${DEF_SCHEMA_VERSION})`);
  }
  const vcpus = int(o['vcpus'], 'vcpus', 1, MAX_VCPUS, true);
  const numa = o['numa'] === undefined ? undefined : validateNuma(o['numa'], vcpus);
  // Without explicit cells the guest still has one NUMA node (QEMU's), which memory devices sit
  // on; huge page cell lists and memnodes name explicit cells only, as in libvirt.
  const cellCount = numa?.cells.length ?? 1;
  const memoryDevices = array(o['memoryDevices'], 'memoryDevices', MAX_MEMORY_SLOTS).map((d, i) =>
    validateMemoryDevice(d, `memoryDevices[${i}]`, cellCount),
  );
  const out: DomainDef = {
    schemaVersion: DEF_SCHEMA_VERSION,
    name: domainName(o['name']),
    uuid: uuid(o['uuid']),
    vcpus,
    memory: memory(o['memory'], memoryDevices),
    memoryDevices,
    os: os(o['os']),
    disks: disks(o['disks']),
    balloon: balloon(o['balloon']),
  };
  // Optional fields are added only when present, so deepEqual against the input works.
  if (o['currentVcpus'] !== undefined) {
    const current = int(o['currentVcpus'], 'currentVcpus', 1, vcpus);
    if (current !== vcpus) out.currentVcpus = current; // all of them online is the default
  }
  if (o['title'] !== undefined) out.title = text(o['title'], 'title', { maxLength: 1024, newlines: false });
  if (o['description'] !== undefined) out.description = text(o['description'], 'description', { newlines: true });
  if (o['emulator'] !== undefined) out.emulator = absolutePath(o['emulator'], 'emulator');
  if (o['accel'] !== undefined) out.accel = oneOf(o['accel'], 'accel', ['kvm', 'tcg'] as const, true);
  if (o['cpu'] !== undefined) out.cpu = cpu(o['cpu']);
  if (o['policy'] !== undefined) out.policy = validatePolicyDef(o['policy'], out.memory.hotplug?.ceilingKiB ?? out.memory.maxKiB);
  if (o['memoryBacking'] !== undefined) {
    const backing = validateMemoryBacking(o['memoryBacking'], numa?.cells.length ?? 0);
    if (backing !== undefined) out.memoryBacking = backing;
  }
  if (numa !== undefined) {
    const cellsKiB = numa.cells.reduce((s, c) => s + c.memoryKiB, 0);
    const bootKiB = out.memory.maxKiB - deviceMemoryKiB(out);
    if (cellsKiB !== bootKiB) fail('numa.cells', `the cells hold ${cellsKiB} KiB, but boot RAM (memory.maxKiB minus memory devices) is ${bootKiB} KiB`);
    out.numa = numa;
  }
  if (o['numatune'] !== undefined) {
    const numatune = validateNumatune(o['numatune'], numa?.cells.length ?? 0);
    if (numatune !== undefined) out.numatune = numatune;
  }
  if (o['memtune'] !== undefined) {
    const memtune = validateMemtune(o['memtune']);
    if (memtune !== undefined) out.memtune = memtune;
  }
  checkDimmSlots(out);
  return out;
}

/** DIMM-like devices with a slot: below the slot count, one device per slot. */
function checkDimmSlots(def: DomainDef): void {
  const seen = new Map<number, number>();
  def.memoryDevices.forEach((d, i) => {
    const slot = d.model === 'dimm' || d.model === 'nvdimm' ? d.address?.slot : undefined;
    if (slot === undefined) return;
    const slots = def.memory.hotplug?.slots ?? 0;
    if (slot >= slots) fail(`memoryDevices[${i}].address.slot`, `memory device slot '${slot}' exceeds slots count '${slots}'`);
    const other = seen.get(slot);
    if (other !== undefined) fail(`memoryDevices[${i}].address.slot`, `memory device slot '${slot}' is already being used by another memory device (memoryDevices[${other}])`);
    seen.set(slot, i);
  });
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
  const slots = int(o['slots'], 'memory.hotplug.slots', 1, MAX_MEMORY_SLOTS, true);
  if (slots < deviceCount) {
    fail('memory.hotplug.slots', `${slots} slots cannot hold ${deviceCount} memory devices`);
  }
  return { ceilingKiB, slots };
}

function os(v: unknown): OsDef {
  const o = record(v, 'os', [[], ['kernel', 'initrd', 'cmdline', 'machine', 'arch']]);
  const out: OsDef = {};
  if (o['kernel'] !== undefined) out.kernel = absolutePath(o['kernel'], 'os.kernel');
  if (o['initrd'] !== undefined) {
    // QEMU refuses -initrd without -kernel; the built-in guest brings its own initrd.
    if (out.kernel === undefined) fail('os.initrd', 'an initrd needs os.kernel');
    out.initrd = absolutePath(o['initrd'], 'os.initrd');
  }
  if (o['cmdline'] !== undefined) out.cmdline = text(o['cmdline'], 'os.cmdline', { newlines: false, maxLength: MAX_PATH_LENGTH });
  if (o['machine'] !== undefined) out.machine = oneOf(o['machine'], 'os.machine', ['pc', 'q35'] as const, true);
  if (o['arch'] !== undefined) out.arch = oneOf(o['arch'], 'os.arch', ['i686'] as const, true);
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
  const o = record(v, path, [['path', 'format', 'target', 'bus', 'readonly'], ['type', 'device']]);
  const target = text(o['target'], `${path}.target`, { newlines: false });
  if (!DISK_TARGET.test(target)) fail(`${path}.target`, `'${target}' is not a device name like vda, sda or hda`);
  const out: DiskDef = {
    path: absolutePath(o['path'], `${path}.path`),
    format: oneOf(o['format'], `${path}.format`, ['raw', 'qcow2'] as const, true),
    target,
    bus: oneOf(o['bus'], `${path}.bus`, ['virtio', 'sata', 'ide', 'scsi'] as const, true),
    readonly: bool(o['readonly'], `${path}.readonly`),
  };
  // 'file' and 'disk' are the defaults, stored as absent (definitions from before had neither).
  if (o['type'] !== undefined && oneOf(o['type'], `${path}.type`, ['file', 'block'] as const, true) === 'block') out.type = 'block';
  if (o['device'] !== undefined && oneOf(o['device'], `${path}.device`, ['disk', 'cdrom'] as const, true) === 'cdrom') {
    if (!out.readonly) fail(`${path}.readonly`, 'a cdrom is read-only');
    if (out.bus === 'virtio') fail(`${path}.bus`, "a cdrom sits on an IDE, SATA or SCSI bus, not 'virtio'");
    out.device = 'cdrom';
  }
  return out;
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
