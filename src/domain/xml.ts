/**
 * Mapping between libvirt domain XML and virtmem's `DomainDef`.
 *
 * Parsing follows libvirt's rules where they exist (units, defaults, memory invariants) so XML
 * that `virsh define` accepts means the same here. What virtmem does not model falls in three
 * groups:
 *   - harmless for memory semantics (graphics, interfaces, controllers, ...): dropped with one
 *     warning per element name, e.g. "ignored: <devices/interface>";
 *   - changes how guest memory behaves and cannot be honoured (HMAT,
 *     SGX, encrypted memory, ...): refused with CONFIG_UNSUPPORTED naming the element;
 *   - contradictory or malformed: XML_ERROR naming the element.
 *
 * Memory accounting (libvirt docs, "Memory Allocation"; checked against virsh's test driver):
 * <memory> is the total at boot *including* the sizes of all <devices/memory> (dimm and the full
 * <size> of virtio-mem); boot RAM (QEMU's -m) is <memory> minus those sizes. <currentMemory>
 * defaults to <memory>. Memory devices need <maxMemory>, which must be >= <memory>.
 *
 * NUMA: libvirt's QEMU driver insists on a guest NUMA cell whenever <maxMemory> is set, and QEMU
 * itself creates one node when memory hot-plug is enabled. A definition without cells gets that
 * one cell (all vCPUs, all boot RAM) written whenever hot-plug is configured, and a document
 * whose only cell is exactly that one is read as "no cells", so both spellings are one
 * definition. With cells, <memory> is their sum plus the memory devices, as libvirt recomputes
 * it at define.
 *
 * The memory configuration itself (<memoryBacking>, <numatune>, <memtune>, the cells, memory
 * devices) is read and written in xml-memory.ts.
 */

import type { BalloonDef, CpuDef, DiskDef, DomainDef, GuestNumaDef, MemoryDeviceDef, OsDef, PolicyDef } from './definition.js';
import { DEF_SCHEMA_VERSION } from './definition.js';
import { VirtError, unsupported, xmlError } from './errors.js';
import { deviceMemoryKiB, guestNumaCells } from './memory.js';
import { newUuid, normalizeUuid, printable, validateDomainName } from './name.js';
import { parseXmlMemoryKiB } from './size.js';
import { DefValidationError, MAX_VCPUS, defaultBalloon, validateDomainDef } from './validate-def.js';
import {
  formatMemoryBacking, formatMemoryDevice, formatMemtune, formatNumaCells, formatNumatune,
  parseMemoryBacking, parseMemoryDevice, parseMemtune, parseNumaCells, parseNumatune,
} from './xml-memory.js';
import { ADDRESSING, Warnings, memoryKiB, onOff, parseCount } from './xml-read.js';
import type { Element } from './xml-tree.js';
import { element, formatXmlTree, parseXmlTree, singleChild } from './xml-tree.js';

export interface ParsedDomainXml {
  def: DomainDef;
  /** Human-readable notes about what was ignored or reinterpreted, one per element name. */
  warnings: string[];
}

export interface FormatDomainXmlOptions {
  /** Present for a running domain: adds id='N' and reports the live balloon size, as virsh does. */
  running?: { id: number; actualKiB: number };
  /**
   * The <domain type>: 'kvm' with hardware acceleration, 'qemu' for TCG. Default: the
   * definition's own choice ('kvm' -> kvm, else qemu).
   */
  accel?: 'kvm' | 'qemu';
}

// ---- parsing ---------------------------------------------------------------------------------

/** Top-level elements read below. */
const HANDLED = new Set([
  'name', 'uuid', 'title', 'description', 'memory', 'currentMemory', 'maxMemory', 'vcpu', 'os',
  'features', 'cpu', 'clock', 'on_poweroff', 'on_reboot', 'on_crash', 'pm', 'devices',
  'memoryBacking', 'numatune', 'memtune',
]);

/** Application data by definition (libvirt docs: "metadata"); it never affects the guest. */
const SILENT = new Set(['metadata']);

/**
 * Top-level elements that change memory semantics in ways virtmem cannot honour, and why.
 * Lookup tables keyed by document names are Maps: a plain object would answer for
 * `<constructor>` or `<toString>` from Object.prototype.
 */
const REFUSED = new Map(Object.entries({
  launchSecurity: 'encrypted guest memory (SEV/TDX/s390-pv) cannot be ballooned or hot-plugged',
  'qemu:commandline': 'raw QEMU arguments could change the memory setup behind virtmem\u2019s back',
  'qemu:override': 'raw QEMU device properties could change the memory setup behind virtmem\u2019s back',
}));

/**
 * Parses libvirt domain XML into a validated definition plus warnings about what was ignored.
 * A missing <uuid> gets a fresh random one, as in libvirt.
 *
 * @throws VirtError XML_ERROR for oversized, DOCTYPE-bearing or malformed documents, a root other
 *   than <domain>, and contradictory or invalid content (the message names the element).
 * @throws VirtError CONFIG_UNSUPPORTED naming the element when the XML asks for something
 *   virtmem cannot honour (HMAT, network disks, non-x86 guests, ...).
 */
export function parseDomainXml(text: string): ParsedDomainXml {
  const root = parseXmlTree(text);
  if (root.name !== 'domain') throw xmlError(`the root element is <${root.name}>, expected <domain>`);
  checkDomainType(root);
  const warn = new Warnings();
  screenTopLevel(root, warn);

  const devices = parseDevices(singleChild(root, 'devices', ''), warn);
  const { numa, cpu } = parseCpu(singleChild(root, 'cpu', ''), warn);
  const vcpu = parseVcpu(singleChild(root, 'vcpu', ''), warn);
  const def: DomainDef = {
    schemaVersion: DEF_SCHEMA_VERSION,
    ...parseIdentity(root),
    vcpus: vcpu.vcpus,
    memory: parseMemory(root, devices.memoryDevices, numa, warn),
    memoryDevices: devices.memoryDevices,
    os: parseOs(singleChild(root, 'os', ''), warn),
    disks: devices.disks,
    balloon: devices.balloon,
  };
  if (vcpu.current !== undefined) def.currentVcpus = vcpu.current;
  if (devices.emulator !== undefined) def.emulator = devices.emulator;
  def.accel = root.attrs['type'] === 'kvm' ? 'kvm' : 'tcg';
  if (cpu !== undefined) def.cpu = cpu;
  const backingEl = singleChild(root, 'memoryBacking', '');
  const backing = backingEl === undefined ? undefined : parseMemoryBacking(backingEl);
  if (backing !== undefined) def.memoryBacking = backing;
  const numatuneEl = singleChild(root, 'numatune', '');
  // libvirt: <vcpu placement='auto'> places memory automatically too, with or without <numatune>.
  const vcpuAuto = singleChild(root, 'vcpu', '')?.attrs['placement'] === 'auto';
  const numatune = numatuneEl === undefined
    ? (vcpuAuto ? { memory: { mode: 'strict' as const, placement: 'auto' as const } } : undefined)
    : parseNumatune(numatuneEl, vcpuAuto);
  if (numatune !== undefined) def.numatune = numatune;
  if (numa !== undefined && !isImpliedNuma(numa, def)) def.numa = numa;
  const memtuneEl = singleChild(root, 'memtune', '');
  const memtune = memtuneEl === undefined ? undefined : parseMemtune(memtuneEl);
  if (memtune !== undefined) def.memtune = memtune;
  const policy = parsePolicy(singleChild(root, 'metadata', ''));
  if (policy !== undefined) def.policy = policy;
  checkFeatures(singleChild(root, 'features', ''), warn);
  checkClockLifecyclePm(root, warn);
  return { def: revalidate(def), warnings: warn.list };
}

function checkDomainType(root: Element): void {
  const type = root.attrs['type'];
  if (type === undefined) throw xmlError("<domain> has no type attribute (expected type='kvm' or type='qemu')");
  if (type !== 'kvm' && type !== 'qemu') {
    throw unsupported(`<domain type='${printable(type)}'>: virtmem runs QEMU guests only (type='kvm' or 'qemu')`);
  }
}

/** Refuses top-level elements virtmem cannot honour and warns about unknown ones. */
function screenTopLevel(root: Element, warn: Warnings): void {
  for (const el of root.children) {
    if (HANDLED.has(el.name) || SILENT.has(el.name)) continue;
    const reason = REFUSED.get(el.name);
    if (reason !== undefined) throw unsupported(`<${el.name}>: ${reason}`);
    warn.ignored(el.name);
  }
}

/**
 * Whether guest NUMA cells say no more than what a definition without cells means: one cell
 * with every vCPU and all boot RAM, written because hot-plug is configured (formatCpu), that
 * no huge page size or memnode names (as in libvirt, those need explicit cells).
 */
function isImpliedNuma(numa: GuestNumaDef, def: DomainDef): boolean {
  const [cell, ...more] = numa.cells;
  const named = def.numatune?.memnodes !== undefined || (def.memoryBacking?.hugepages ?? []).some((p) => p.cells !== undefined);
  return more.length === 0 && cell !== undefined && def.memory.hotplug !== undefined && !named
    && cell.memAccess === undefined && cell.discard === undefined && cell.distances === undefined
    && cell.cpus.length === def.vcpus && cell.cpus.every((c, i) => c === i)
    && cell.memoryKiB === def.memory.maxKiB - deviceMemoryKiB(def);
}

function parseIdentity(root: Element): Pick<DomainDef, 'name' | 'uuid' | 'title' | 'description'> {
  const nameEl = singleChild(root, 'name', '');
  if (nameEl === undefined) throw xmlError('missing <name>');
  let name: string;
  try {
    name = validateDomainName(nameEl.text);
  } catch (err) {
    throw xmlError(`<name>: ${err instanceof Error ? err.message : String(err)}`, err);
  }
  const uuidEl = singleChild(root, 'uuid', '');
  let uuid = newUuid();
  if (uuidEl !== undefined) {
    // libvirt's virUUIDParse tolerates surrounding whitespace.
    const raw = uuidEl.text.trim();
    try {
      uuid = normalizeUuid(raw);
    } catch (err) {
      throw xmlError(`<uuid>: malformed UUID '${printable(raw)}'`, err);
    }
  }
  const out: Pick<DomainDef, 'name' | 'uuid' | 'title' | 'description'> = { name, uuid };
  const title = singleChild(root, 'title', '')?.text;
  if (title) out.title = title;
  const description = singleChild(root, 'description', '')?.text;
  if (description) out.description = description;
  return out;
}

function parseVcpu(el: Element | undefined, warn: Warnings): { vcpus: number; current?: number } {
  if (el === undefined) return { vcpus: 1 }; // libvirt's default
  const vcpus = parseCount(el.text, '<vcpu>');
  if (vcpus < 1) throw xmlError('<vcpu>: a guest needs at least one vCPU');
  if (vcpus > MAX_VCPUS) throw unsupported(`<vcpu>${vcpus}</vcpu>: virtmem supports at most ${MAX_VCPUS} vCPUs`);
  if (el.attrs['cpuset'] !== undefined) warn.ignored('vcpu cpuset');
  const currentText = el.attrs['current'];
  if (currentText === undefined) return { vcpus };
  const current = parseCount(currentText, "<vcpu current='...'>");
  if (current < 1 || current > vcpus) throw xmlError(`<vcpu current='${current}'>: between 1 and the ${vcpus} vCPUs`);
  return current === vcpus ? { vcpus } : { vcpus, current };
}

/**
 * Builds MemoryDef from <memory>, <currentMemory> and <maxMemory> with libvirt's rules. With
 * guest NUMA cells, libvirt's QEMU driver takes their sum as the boot RAM when a domain is
 * defined (it recomputes <memory> = cells + memory devices).
 */
function parseMemory(
  root: Element,
  devices: MemoryDeviceDef[],
  numa: GuestNumaDef | undefined,
  warn: Warnings,
): DomainDef['memory'] {
  const devicesKiB = deviceMemoryKiB({ memoryDevices: devices });
  const cellKiB = numa?.cells.reduce((sum, c) => sum + c.memoryKiB, 0);
  const memoryEl = singleChild(root, 'memory', '');
  const dumpCore = memoryEl?.attrs['dumpCore'];
  // Whether guest RAM goes into QEMU's core dumps: a memory fact the model does not hold.
  if (dumpCore !== undefined) throw unsupported(`<memory dumpCore='${printable(dumpCore)}'>: not supported by virtmem`);
  let totalKiB = memoryEl === undefined ? undefined : memoryKiB(memoryEl, 'memory');
  // Cells of zero size carry no information; libvirt then keeps <memory> too.
  if (cellKiB !== undefined && cellKiB > 0 && totalKiB !== cellKiB + devicesKiB) {
    if (totalKiB !== undefined) {
      warn.add(`<memory> (${totalKiB} KiB) differs from the <cpu/numa> cells plus memory devices (${cellKiB + devicesKiB} KiB); using the NUMA size, as libvirt does`);
    }
    totalKiB = cellKiB + devicesKiB;
  }
  if (totalKiB === undefined || totalKiB === 0) throw xmlError('missing <memory>: the guest memory size must be given');
  if (devicesKiB > totalKiB) {
    throw xmlError(`total size of memory devices (${devicesKiB} KiB) exceeds <memory> (${totalKiB} KiB), which includes them`);
  }

  const currentEl = singleChild(root, 'currentMemory', '');
  let currentKiB = currentEl === undefined ? 0 : memoryKiB(currentEl, 'currentMemory');
  // libvirt treats 0 as absent and silently clamps an oversized value to <memory>; we clamp too
  // (so XML that virsh accepts is accepted) but say so.
  if (currentKiB > totalKiB) {
    warn.add(`<currentMemory> (${currentKiB} KiB) exceeds <memory> (${totalKiB} KiB); using ${totalKiB} KiB, as libvirt does`);
  }
  if (currentKiB === 0 || currentKiB > totalKiB) currentKiB = totalKiB;

  const memory: DomainDef['memory'] = { maxKiB: totalKiB, currentKiB };
  const maxEl = singleChild(root, 'maxMemory', '');
  if (maxEl !== undefined) {
    const ceilingKiB = memoryKiB(maxEl, 'maxMemory');
    if (maxEl.attrs['slots'] === undefined) throw xmlError("<maxMemory> needs a slots='N' attribute, as in libvirt");
    const slots = parseCount(maxEl.attrs['slots'], "<maxMemory slots='...'>");
    if (ceilingKiB < totalKiB) {
      throw xmlError(`<maxMemory> (${ceilingKiB} KiB) must be at least <memory> (${totalKiB} KiB)`);
    }
    memory.hotplug = { ceilingKiB, slots };
  } else if (devices.length > 0) {
    throw xmlError('<devices/memory> needs memory hot-plug: add <maxMemory slots=...> to the domain');
  }
  return memory;
}

/**
 * virtmem's automatic memory policy lives in <metadata> under its own namespace: libvirt has no
 * such fields, and keeps foreign-namespace metadata as it is.
 */
export const POLICY_XML_NS = 'https://virtmem.dev/xmlns/policy/1';

/** <metadata><virtmem:policy xmlns:virtmem='...' enabled='yes' floor='...' unit='KiB'/>, if present. */
function parsePolicy(metadata: Element | undefined): PolicyDef | undefined {
  if (metadata === undefined) return undefined;
  const el = metadata.children.find((c) => {
    const [prefix, local] = c.name.includes(':') ? c.name.split(':', 2) as [string, string] : [undefined, c.name];
    const ns = prefix === undefined ? c.attrs['xmlns'] : c.attrs[`xmlns:${prefix}`];
    return local === 'policy' && ns === POLICY_XML_NS;
  });
  return el === undefined ? undefined : policyFromElement(el);
}

/** The policy element's attributes. @throws VirtError XML_ERROR naming the attribute */
function policyFromElement(el: Element): PolicyDef {
  const where = '<metadata/policy>';
  const enabled = el.attrs['enabled'];
  if (enabled !== 'yes' && enabled !== 'no') throw xmlError(`${where}: enabled='${printable(enabled ?? '')}' must be 'yes' or 'no'`);
  const out: PolicyDef = { enabled: enabled === 'yes' };
  const unit = el.attrs['unit'];
  const floor = el.attrs['floor'];
  if (floor !== undefined) out.floorKiB = parseXmlMemoryKiB(floor, unit, `${where} floor`);
  const ceiling = el.attrs['ceiling'];
  if (ceiling !== undefined) out.ceilingKiB = parseXmlMemoryKiB(ceiling, unit, `${where} ceiling`);
  const shares = el.attrs['shares'];
  if (shares !== undefined) out.shares = parseCount(shares, `${where} shares`);
  return out;
}

/**
 * The policy in the element libvirt returns for virtmem's namespace (virDomainGetMetadata,
 * VIR_DOMAIN_METADATA_ELEMENT), or null when it is not there.
 * @throws VirtError XML_ERROR when it is there but unreadable
 */
export function parsePolicyMetadata(elementXml: string): PolicyDef | null {
  const el = parseXmlTree(elementXml);
  // libvirt answers for the namespace it was asked about, with the element's prefix and
  // namespace declaration stripped (<policy enabled='yes' .../>).
  const local = el.name.includes(':') ? el.name.split(':', 2)[1] : el.name;
  return local === 'policy' ? policyFromElement(el) : null;
}

/** The element virDomainSetMetadata stores for a policy (libvirt adds virtmem's namespace and prefix). */
export function formatPolicyMetadata(p: PolicyDef): string {
  const el = formatPolicy(p).children[0]!;
  el.name = 'policy';
  delete el.attrs['xmlns:virtmem'];
  return formatXmlTree(el);
}

function formatPolicy(p: PolicyDef): Element {
  return element('metadata', {}, [element('virtmem:policy', {
    'xmlns:virtmem': POLICY_XML_NS, enabled: p.enabled ? 'yes' : 'no',
    floor: p.floorKiB, ceiling: p.ceilingKiB, shares: p.shares,
    unit: p.floorKiB !== undefined || p.ceilingKiB !== undefined ? 'KiB' : undefined,
  })]);
}

/** libvirt's <cpu mode> values. */
const CPU_MODES = ['host-passthrough', 'host-model', 'maximum', 'custom'] as const;
/** <cpu> children that shape a model virtmem does not configure beyond its name. */
const CPU_IGNORED = new Set(['topology', 'feature', 'vendor', 'cache', 'maxphysaddr']);

/**
 * Reads <cpu>: the CPU mode and model (libvirt: a <cpu> without mode is 'custom', and a custom
 * <cpu> without <model> asks for nothing, the hypervisor default), and its guest NUMA cells.
 * Topology, features and vendor are accepted with a warning.
 */
function parseCpu(cpu: Element | undefined, warn: Warnings): { numa: GuestNumaDef | undefined; cpu: CpuDef | undefined } {
  if (cpu === undefined) return { numa: undefined, cpu: undefined };
  const mode = cpu.attrs['mode'] ?? 'custom';
  if (!(CPU_MODES as readonly string[]).includes(mode)) {
    throw xmlError(`<cpu mode='${printable(mode)}'>: expected one of ${CPU_MODES.join(', ')}`);
  }
  for (const c of cpu.children) {
    if (CPU_IGNORED.has(c.name)) warn.add(`<cpu/${c.name}>: virtmem sets the CPU model only; topology, features and vendor are ignored`);
    else if (c.name !== 'numa' && c.name !== 'model') warn.ignored(`cpu/${c.name}`);
  }
  const modelEl = singleChild(cpu, 'model', 'cpu');
  const model = modelEl?.text.trim();
  let def: CpuDef | undefined;
  if (mode === 'custom') {
    if (model) def = { mode: 'custom', model };
  } else {
    if (model) warn.add(`<cpu mode='${mode}'>: <model> is used only with mode='custom'; ignored`);
    def = { mode: mode as CpuDef['mode'] };
  }
  const numa = singleChild(cpu, 'numa', 'cpu');
  return { numa: numa === undefined ? undefined : parseNumaCells(numa), cpu: def };
}

/** Machine type families virtmem runs: versioned names map to their family. */
function machineFamily(machine: string): OsDef['machine'] | undefined {
  if (/^(pc-)?q35(-|$)/.test(machine)) return 'q35';
  if (/^pc(-i440fx)?(-|$)/.test(machine)) return 'pc';
  return undefined;
}

const OS_TEXT = ['kernel', 'initrd', 'cmdline'] as const;

function parseOs(os: Element | undefined, warn: Warnings): OsDef {
  if (os === undefined) throw xmlError("missing <os>: expected <os><type>hvm</type></os>");
  const type = singleChild(os, 'type', 'os');
  if (type === undefined) throw xmlError("missing <os/type>: expected <type>hvm</type>");
  if (type.text.trim() !== 'hvm') {
    throw unsupported(`<os/type>${printable(type.text.trim())}</type>: virtmem runs full virtualisation ('hvm') guests only`);
  }
  const arch = type.attrs['arch'];
  if (arch !== undefined && arch !== 'x86_64' && arch !== 'i686') {
    throw unsupported(`<os/type arch='${printable(arch)}'>: virtmem runs x86_64 and i686 guests only`);
  }
  const out: OsDef = {};
  if (arch === 'i686') out.arch = 'i686';
  const machine = type.attrs['machine'];
  if (machine !== undefined) {
    const family = machineFamily(machine);
    if (family === undefined) {
      throw unsupported(`<os/type machine='${printable(machine)}'>: virtmem supports the 'pc' and 'q35' machine families`);
    }
    if (family !== machine) warn.add(`<os/type machine='${printable(machine)}'>: using QEMU's current '${family}' machine`);
    out.machine = family;
  }
  for (const name of OS_TEXT) {
    const value = singleChild(os, name, 'os')?.text;
    if (value) out[name] = value;
  }
  if (os.attrs['firmware'] !== undefined) warn.ignored(`os firmware='${printable(os.attrs['firmware'])}'`);
  for (const el of os.children) {
    if (el.name === 'type' || (OS_TEXT as readonly string[]).includes(el.name)) continue;
    // With a kernel, boot order is irrelevant; without one virtmem boots its built-in guest.
    if (el.name === 'boot' && out.kernel !== undefined) continue;
    if (el.name === 'boot') warn.add('ignored: <os/boot> (no <os/kernel>: virtmem boots its built-in guest kernel)');
    else warn.ignored(`os/${el.name}`);
  }
  return out;
}

/** acpi, apic and pae are what virtmem's guests get anyway; the rest is dropped with a warning. */
function checkFeatures(features: Element | undefined, warn: Warnings): void {
  for (const el of features?.children ?? []) {
    if (el.name !== 'acpi' && el.name !== 'apic' && el.name !== 'pae') warn.ignored(`features/${el.name}`);
  }
}

const LIFECYCLE_DEFAULTS = { on_poweroff: 'destroy', on_reboot: 'restart', on_crash: 'destroy' } as const;

function checkClockLifecyclePm(root: Element, warn: Warnings): void {
  const offset = singleChild(root, 'clock', '')?.attrs['offset'];
  if (offset !== undefined && offset !== 'utc') warn.ignored(`clock offset='${printable(offset)}'`);
  for (const [name, expected] of Object.entries(LIFECYCLE_DEFAULTS)) {
    const action = singleChild(root, name, '')?.text.trim();
    if (action !== undefined && action !== expected) {
      warn.add(`ignored: <${name}>${printable(action)}</${name}> (virtmem always does '${expected}')`);
    }
  }
  for (const el of singleChild(root, 'pm', '')?.children ?? []) {
    if (el.attrs['enabled'] === 'yes') warn.ignored(`pm/${el.name} enabled='yes'`);
  }
}

// ---- devices -----------------------------------------------------------------------------------

interface ParsedDevices {
  emulator?: string;
  disks: DiskDef[];
  memoryDevices: MemoryDeviceDef[];
  balloon: BalloonDef;
}

function parseDevices(devices: Element | undefined, warn: Warnings): ParsedDevices {
  const out: ParsedDevices = { disks: [], memoryDevices: [], balloon: defaultBalloon() };
  if (devices === undefined) return out;
  const emulator = singleChild(devices, 'emulator', 'devices')?.text;
  if (emulator) out.emulator = emulator;
  // libvirt adds a virtio balloon when none is given; virtmem adds its own default one.
  const balloon = singleChild(devices, 'memballoon', 'devices');
  if (balloon !== undefined) out.balloon = parseBalloon(balloon, warn);
  for (const el of devices.children) {
    switch (el.name) {
      case 'emulator':
      case 'memballoon':
        break;
      case 'disk': {
        const disk = parseDisk(el, warn);
        if (disk !== undefined) out.disks.push(disk);
        break;
      }
      case 'memory':
        out.memoryDevices.push(parseMemoryDevice(el, warn));
        break;
      case 'serial':
      case 'console':
        // virtmem always gives the guest a pty serial console, which is what this asks for.
        if (el.attrs['type'] !== 'pty') warn.ignored(`devices/${el.name} type='${printable(el.attrs['type'] ?? '')}'`);
        break;
      default:
        warn.ignored(`devices/${el.name}`);
    }
  }
  return out;
}

function parseBalloon(el: Element, warn: Warnings): BalloonDef {
  const model = el.attrs['model'];
  if (model === undefined) throw xmlError("<devices/memballoon> needs a model attribute (e.g. model='virtio')");
  if (model === 'none') {
    if (el.attrs['autodeflate'] !== undefined || el.attrs['freePageReporting'] !== undefined || el.children.length > 0) {
      warn.add("<devices/memballoon model='none'>: settings of the absent balloon are ignored");
    }
    return { model: 'none', statsPeriodS: 0, autodeflate: false, freePageReporting: false };
  }
  if (model === 'virtio-transitional' || model === 'virtio-non-transitional') {
    // These only select PCI IDs for legacy guest drivers; the balloon behaves the same.
    warn.add(`<devices/memballoon model='${model}'> is treated as model='virtio'`);
  } else if (model !== 'virtio') {
    throw unsupported(`<devices/memballoon model='${printable(model)}'>: virtmem supports virtio balloons only`);
  }
  const stats = singleChild(el, 'stats', 'devices/memballoon');
  for (const child of el.children) {
    if (child.name !== 'stats' && child.name !== 'driver' && !ADDRESSING.has(child.name)) {
      warn.ignored(`devices/memballoon/${child.name}`);
    }
  }
  return {
    model: 'virtio',
    // libvirt: no <stats> (or period 0) means statistics polling is off.
    statsPeriodS: stats === undefined ? 0 : parseCount(stats.attrs['period'], '<devices/memballoon/stats period>'),
    autodeflate: onOff(el.attrs['autodeflate'], '<devices/memballoon autodeflate>'),
    freePageReporting: onOff(el.attrs['freePageReporting'], '<devices/memballoon freePageReporting>'),
  };
}

/** libvirt's bus default from the target name prefix (virDomainDiskDefAssignAddress and kin). */
const BUS_BY_PREFIX = new Map<string, DiskDef['bus']>([['vd', 'virtio'], ['sd', 'scsi'], ['hd', 'ide']]);
const DISK_BUSES: readonly string[] = ['virtio', 'sata', 'ide', 'scsi'];
const DISK_KNOWN = new Set(['driver', 'source', 'target', 'readonly', 'backingStore', ...ADDRESSING]);
/** Disk children whose loss would change what the guest sees or stores. */
const DISK_REFUSED = new Map([
  ['transient', 'transient disks (writes discarded at shutdown) are not supported'],
  ['encryption', 'encrypted disk images are not supported'],
]);

/**
 * A disk or cdrom backed by an image file or a host block device; a floppy or an empty cdrom
 * drive yields undefined (dropped with a warning). A cdrom is read-only, as libvirt makes it.
 */
function parseDisk(el: Element, warn: Warnings): DiskDef | undefined {
  const device = el.attrs['device'] ?? 'disk';
  const type = el.attrs['type'] ?? 'file';
  if (device === 'floppy') {
    warn.ignored(`devices/disk device='${device}'`);
    return undefined;
  }
  if (device !== 'disk' && device !== 'cdrom') throw unsupported(`<devices/disk device='${printable(device)}'>: only device='disk' and 'cdrom' are supported`);
  if (type !== 'file' && type !== 'block') {
    throw unsupported(`<devices/disk type='${printable(type)}'>: virtmem supports image files (type='file') and host block devices (type='block') only`);
  }
  for (const child of el.children) {
    const refused = DISK_REFUSED.get(child.name);
    if (refused !== undefined) throw unsupported(`<devices/disk/${child.name}>: ${refused}`);
    if (!DISK_KNOWN.has(child.name)) warn.ignored(`devices/disk/${child.name}`);
  }
  const format = singleChild(el, 'driver', 'devices/disk')?.attrs['type'] ?? 'raw';
  if (format !== 'raw' && format !== 'qcow2') {
    throw unsupported(`<devices/disk/driver type='${printable(format)}'>: disk images must be raw or qcow2`);
  }
  const sourceAttr = type === 'block' ? 'dev' : 'file';
  const path = singleChild(el, 'source', 'devices/disk')?.attrs[sourceAttr];
  if (path === undefined && device === 'cdrom') {
    // An empty drive holds nothing the guest could read: dropping it loses nothing.
    warn.ignored("devices/disk device='cdrom'");
    return undefined;
  }
  if (path === undefined) throw xmlError(`<devices/disk> needs <source ${sourceAttr}='...'/>`);
  const target = singleChild(el, 'target', 'devices/disk');
  const dev = target?.attrs['dev'];
  if (target === undefined || dev === undefined) throw xmlError("<devices/disk> needs <target dev='...'/>");
  const bus = target.attrs['bus'] ?? BUS_BY_PREFIX.get(dev.slice(0, 2));
  if (bus === undefined) throw xmlError(`<devices/disk/target dev='${printable(dev)}'>: cannot infer the bus; add bus='virtio'`);
  if (!DISK_BUSES.includes(bus)) {
    throw unsupported(`<devices/disk/target bus='${printable(bus)}'>: supported buses are ${DISK_BUSES.join(', ')}`);
  }
  const out: DiskDef = {
    path,
    format,
    target: dev,
    bus: bus as DiskDef['bus'],
    readonly: device === 'cdrom' || singleChild(el, 'readonly', 'devices/disk') !== undefined,
  };
  if (type === 'block') out.type = 'block';
  if (device === 'cdrom') out.device = 'cdrom';
  return out;
}

// ---- final validation ----------------------------------------------------------------------

/** Runs the definition schema over the parsed result, reporting failures by XML element. */
function revalidate(def: DomainDef): DomainDef {
  try {
    return validateDomainDef(def);
  } catch (err) {
    if (!(err instanceof DefValidationError)) throw err;
    const message = `${elementForPath(err.path)}: ${err.reason}`;
    // Beyond virtmem's limits (too little memory, ...) is unsupported; anything else is invalid.
    throw err.limit ? new VirtError('CONFIG_UNSUPPORTED', message, { cause: err }) : xmlError(message, err);
  }
}

/** Definition fields and the XML elements they come from, for validation messages. */
const ELEMENT_BY_PATH = new Map(Object.entries({
  name: '<name>',
  uuid: '<uuid>',
  title: '<title>',
  description: '<description>',
  emulator: '<devices/emulator>',
  vcpus: '<vcpu>',
  accel: "<domain type='...'>",
  cpu: '<cpu>',
  'cpu.mode': "<cpu mode='...'>",
  'cpu.model': '<cpu/model>',
  policy: '<metadata/policy>',
  'policy.enabled': "<metadata/policy enabled='...'>",
  'policy.floorKiB': "<metadata/policy floor='...'>",
  'policy.ceilingKiB': "<metadata/policy ceiling='...'>",
  'policy.shares': "<metadata/policy shares='...'>",
  'memory.maxKiB': '<memory>',
  'memory.currentKiB': '<currentMemory>',
  'memory.hotplug.ceilingKiB': '<maxMemory>',
  'memory.hotplug.slots': "<maxMemory slots='...'>",
  memoryDevices: '<devices/memory>',
  'os.kernel': '<os/kernel>',
  'os.initrd': '<os/initrd>',
  'os.cmdline': '<os/cmdline>',
  'os.machine': "<os/type machine='...'>",
  'os.arch': "<os/type arch='...'>",
  currentVcpus: "<vcpu current='...'>",
  numa: '<cpu/numa>',
  'numa.cells': '<cpu/numa>',
  memoryBacking: '<memoryBacking>',
  'memoryBacking.hugepages': '<memoryBacking/hugepages>',
  'memoryBacking.allocation.threads': "<memoryBacking/allocation threads='...'>",
  numatune: '<numatune>',
  'numatune.memory.hostNodes': "<numatune/memory nodeset='...'>",
  'numatune.memory.mode': "<numatune/memory mode='...'>",
  'numatune.memnodes': '<numatune/memnode>',
}));

/** Fields of list entries (disks[i].x, memoryDevices[i].x) and where they sit in the device. */
const DEVICE_PART_BY_FIELD = new Map(Object.entries({
  sizeKiB: 'target/size',
  blockKiB: 'target/block',
  requestedKiB: 'target/requested',
  node: 'target/node',
  labelKiB: 'target/label/size',
  alignKiB: 'source/alignsize',
  source: 'source',
  address: "address type='dimm'",
  format: "driver type='...'",
  target: "target dev='...'",
  bus: "target bus='...'",
}));

/** The lists of the memory configuration and their elements. */
const LIST_ELEMENT = new Map(Object.entries({
  'memoryBacking.hugepages': 'memoryBacking/hugepages/page',
  'numa.cells': 'cpu/numa/cell',
  'numatune.memnodes': 'numatune/memnode',
}));

/** "disks[1].target" -> "<devices/disk #2 target dev='...'>"; unknown paths are returned as is. */
function elementForPath(path: string): string {
  const direct = ELEMENT_BY_PATH.get(path);
  if (direct !== undefined) return direct;
  const m = /^(disks|memoryDevices)\[(\d+)\](?:\.(\w+))?/.exec(path);
  if (m !== null) {
    const device = m[1] === 'disks' ? 'devices/disk' : 'devices/memory';
    const field = m[3] === 'path' ? (m[1] === 'disks' ? "source file='...'" : 'source/path') : m[3];
    const part = field === undefined ? '' : ` ${DEVICE_PART_BY_FIELD.get(field) ?? field}`;
    return `<${device} #${Number(m[2]) + 1}${part}>`;
  }
  const list = /^(memoryBacking\.hugepages|numa\.cells|numatune\.memnodes)\[(\d+)\](?:\.(\w+))?/.exec(path);
  if (list !== null) return `<${LIST_ELEMENT.get(list[1]!)} #${Number(list[2]) + 1}${list[3] === undefined ? '' : ` ${list[3]}`}>`;
  for (const section of ['memoryBacking', 'numatune', 'memtune']) {
    if (path.startsWith(`${section}.`)) return `<${section}/${path.slice(section.length + 1).replace(/\./g, '/')}>`;
  }
  if (path.startsWith('balloon')) return '<devices/memballoon>';
  return path;
}

// ---- formatting --------------------------------------------------------------------------------

/**
 * Formats a definition as libvirt domain XML in libvirt's own style; the output validates against
 * libvirt's RNG schema and parses back to an equal definition. With `running`, <currentMemory>
 * is the live balloon size and <domain> carries the id, like `virsh dumpxml` of a running guest.
 * Emits only what the definition holds: a caller wanting the built-in kernel shown fills it in first.
 *
 * @throws VirtError XML_ERROR if a string holds characters XML cannot carry (validated
 *   definitions never do).
 */
export function formatDomainXml(def: DomainDef, opts: FormatDomainXmlOptions = {}): string {
  const { memory } = def;
  const kib = (name: string, value: number, attrs: Record<string, string | number> = {}): Element =>
    element(name, { ...attrs, unit: 'KiB' }, [], String(value));
  const text = (name: string, value: string): Element => element(name, {}, [], value);

  const children: Element[] = [text('name', def.name), text('uuid', def.uuid)];
  if (def.title !== undefined) children.push(text('title', def.title));
  if (def.description !== undefined) children.push(text('description', def.description));
  if (def.policy !== undefined) children.push(formatPolicy(def.policy));
  if (memory.hotplug !== undefined) {
    children.push(kib('maxMemory', memory.hotplug.ceilingKiB, { slots: memory.hotplug.slots }));
  }
  children.push(
    kib('memory', memory.maxKiB),
    kib('currentMemory', opts.running?.actualKiB ?? memory.currentKiB),
  );
  // libvirt's order: memtune, memoryBacking, vcpu, numatune, os.
  if (def.memtune !== undefined) children.push(formatMemtune(def.memtune));
  if (def.memoryBacking !== undefined) children.push(formatMemoryBacking(def.memoryBacking));
  children.push(element('vcpu', { placement: 'static', current: def.currentVcpus }, [], String(def.vcpus)));
  if (def.numatune !== undefined) children.push(formatNumatune(def.numatune));
  children.push(
    formatOs(def.os),
    element('features', {}, [element('acpi'), element('apic')]),
  );
  if (memory.hotplug !== undefined || def.cpu !== undefined || def.numa !== undefined) children.push(formatCpu(def));
  children.push(
    element('clock', { offset: 'utc' }),
    ...Object.entries(LIFECYCLE_DEFAULTS).map(([name, action]) => text(name, action)),
    formatDevices(def),
  );
  const type = opts.accel ?? (def.accel === 'kvm' ? 'kvm' : 'qemu');
  const root = element('domain', { type, id: opts.running?.id }, children);
  return formatXmlTree(root);
}

function formatOs(os: OsDef): Element {
  const children = [element('type', { arch: os.arch ?? 'x86_64', machine: os.machine }, [], 'hvm')];
  for (const name of OS_TEXT) {
    const value = os[name];
    if (value !== undefined) children.push(element(name, {}, [], value));
  }
  return element('os', {}, children);
}

/**
 * <cpu>: the CPU mode and model, and the guest NUMA cells: the definition's, or the single one
 * libvirt's QEMU driver wants with memory hot-plug (all vCPUs, all boot RAM).
 */
function formatCpu(def: DomainDef): Element {
  const children: Element[] = [];
  const attrs: Record<string, string> = {};
  if (def.cpu !== undefined) {
    attrs['mode'] = def.cpu.mode;
    if (def.cpu.mode === 'custom') {
      attrs['match'] = 'exact';
      children.push(element('model', { fallback: 'forbid' }, [], def.cpu.model));
    }
  }
  const cells = guestNumaCells(def);
  if (cells !== undefined) children.push(formatNumaCells({ cells }));
  return element('cpu', attrs, children);
}

function formatDevices(def: DomainDef): Element {
  const children: Element[] = [];
  if (def.emulator !== undefined) children.push(element('emulator', {}, [], def.emulator));
  children.push(...def.disks.map(formatDisk));
  children.push(
    element('serial', { type: 'pty' }, [element('target', { port: 0 })]),
    element('console', { type: 'pty' }, [element('target', { type: 'serial', port: 0 })]),
    formatBalloon(def.balloon),
    ...def.memoryDevices.map(formatMemoryDevice),
  );
  return element('devices', {}, children);
}

function formatDisk(disk: DiskDef): Element {
  const type = disk.type ?? 'file';
  const children = [
    element('driver', { name: 'qemu', type: disk.format }),
    element('source', type === 'block' ? { dev: disk.path } : { file: disk.path }),
    element('target', { dev: disk.target, bus: disk.bus }),
  ];
  if (disk.readonly) children.push(element('readonly'));
  return element('disk', { type, device: disk.device ?? 'disk' }, children);
}

function formatBalloon(b: BalloonDef): Element {
  if (b.model === 'none') return element('memballoon', { model: 'none' });
  const onOffAttr = (v: boolean): string => (v ? 'on' : 'off');
  // libvirt's schema wants a positive period; no <stats> is how it spells "polling off".
  const children = b.statsPeriodS > 0 ? [element('stats', { period: b.statsPeriodS })] : [];
  return element(
    'memballoon',
    { model: 'virtio', autodeflate: onOffAttr(b.autodeflate), freePageReporting: onOffAttr(b.freePageReporting) },
    children,
  );
}
