/**
 * The memory facts of a libvirt domain XML document, as a flat map, so that two documents that
 * describe the same guest memory compare equal however they spell it.
 *
 * One function reads both sides of a comparison (libvirt's `dumpxml` and virtmem's
 * `formatDomainXml`), so a difference is a difference in meaning, not in the reader. Pure: text
 * in, facts out; no libvirt, no files.
 *
 * What is a memory fact (everything else in the document is ignored):
 *   memory (+ dumpCore), currentMemory, maxMemory (+ slots)
 *   memoryBacking/*            every child and attribute (hugepages/page, nosharepages, locked,
 *                              source, access, allocation, discard, and any later addition)
 *   numatune/*                 memory mode/nodeset/placement, memnode cellid/mode/nodeset
 *   memtune/*                  hard_limit, soft_limit, swap_hard_limit, min_guarantee
 *   cpu/numa                   cells (id, cpus, memory, memAccess, discard, distances, caches),
 *                              interconnects (latency, bandwidth)
 *   devices/memory             model, access, discard, every source and target child, and the
 *                              guest address of DIMM-type devices (slot, base)
 *   devices/memballoon         model, autodeflate, freePageReporting, stats period
 *
 * Normalisation, each a rule libvirt itself applies:
 *   - sizes are KiB (element text with unit=, <cell memory unit>, <page size unit>, bandwidth);
 *     cache <size>/<line> are bytes, as they may be smaller than a KiB;
 *   - CPU and node lists (cpus, nodeset, nodemask) are in libvirt's canonical range form:
 *     "0,1,2,^1,5" -> "0,2,5", "0,1,2" -> "0-2";
 *   - <currentMemory> absent means equal to <memory>;
 *   - a virtio balloon's autodeflate and freePageReporting absent mean 'off'; a stats period of
 *     0 (or none) means no polling and is not a fact; a balloon of model='none' has only its model;
 *   - the `unit` attributes themselves disappear (folded into the values).
 * Repeated elements are keyed by their identity where they have one (cell[id], memnode[cellid],
 * sibling[id], interconnect[initiator,target,cache,type]) and by position otherwise
 * (hugepages/page[i], devices/memory[i]), as libvirt keeps their order.
 */

import type { Element } from '../../src/domain/xml-tree.js';
import { parseXmlTree } from '../../src/domain/xml-tree.js';
import { unitBytes } from '../../src/domain/size.js';
import { formatIdSet, parseIdSet } from '../../src/domain/node-set.js';

/** Fact name -> normalised value, e.g. { "memory": "4194304", "numa.cell[0].cpus": "0-1" }. */
export type MemoryFacts = Record<string, string>;

export interface FactDifference {
  fact: string;
  /** missing: in `expected` only; extra: in `actual` only; different: in both, unequal. */
  kind: 'missing' | 'different' | 'extra';
  expected?: string;
  actual?: string;
}

/** Thrown for values no libvirt document could hold (a bad unit or number): never silently equal. */
export class FactError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FactError';
  }
}

// ---- value normalisation -----------------------------------------------------------------------

function bytesOf(value: string, unit: string | undefined, defaultUnit: string, where: string): bigint {
  const digits = value.trim();
  if (!/^\d+$/.test(digits)) throw new FactError(`${where}: '${value}' is not a non-negative integer`);
  const u = unit === undefined || unit === '' ? defaultUnit : unit;
  const per = unitBytes(u);
  if (per === undefined) throw new FactError(`${where}: unknown unit '${u}'`);
  return BigInt(digits) * per;
}

/** A libvirt scaled value in KiB, rounded up as libvirt does (VIR_DIV_UP). */
export function toKiB(value: string, unit: string | undefined, where: string, defaultUnit = 'KiB'): string {
  const bytes = bytesOf(value, unit, defaultUnit, where);
  return ((bytes + 1023n) / 1024n).toString();
}

function toBytes(value: string, unit: string | undefined, where: string): string {
  return bytesOf(value, unit, 'B', where).toString();
}

/**
 * libvirt's bitmap syntax ("0-3,^2,8") in its canonical form ("0-1,3,8"), as virBitmapFormat
 * prints it (the same reading as virtmem's, domain/node-set.ts). Text that is not a bitmap is
 * returned trimmed, unchanged, so it still compares.
 */
export function canonicalBitmap(text: string): string {
  const ids = parseIdSet(text);
  return ids === null ? text.trim() : formatIdSet(ids);
}

const BITMAP_ATTRS = new Set(['cpus', 'nodeset']);
const BITMAP_ELEMENTS = new Set(['nodemask']);

// ---- generic flattening ------------------------------------------------------------------------

/** How repeated children are told apart: by these attributes, or by position when absent. */
const IDENTITY: Record<string, readonly string[]> = {
  cell: ['id'],
  memnode: ['cellid'],
  sibling: ['id'],
  latency: ['initiator', 'target', 'cache', 'type'],
  bandwidth: ['initiator', 'target', 'cache', 'type'],
};

/** Attributes that are part of an element's key (above), not facts of their own. */
function identityAttrs(name: string): readonly string[] {
  return IDENTITY[name] ?? [];
}

function childKey(parent: Element, child: Element, position: number): string {
  const ids = identityAttrs(child.name);
  if (ids.length > 0) {
    const parts = ids.map((a) => child.attrs[a]).filter((v): v is string => v !== undefined);
    // libvirt numbers cells without an id by position.
    if (parts.length === 0) return `${child.name}[${position}]`;
    return `${child.name}[${parts.map((p) => p.trim()).join(',')}]`;
  }
  const same = parent.children.filter((c) => c.name === child.name);
  return same.length > 1 || child.name === 'page' ? `${child.name}[${position}]` : child.name;
}

/**
 * Records `el` under `prefix`: its normalised text (or 'yes' for an empty element with nothing
 * else), its attributes as `prefix.attr`, and its children recursively. Sizes with a unit are
 * folded to KiB, cache sizes to bytes, bitmaps canonicalised.
 */
function flatten(
  el: Element,
  prefix: string,
  out: MemoryFacts,
  skip: (child: Element) => boolean = () => false,
  parent = '',
): void {
  const attrs = { ...el.attrs };
  const unit = attrs['unit'];
  delete attrs['unit'];
  for (const id of identityAttrs(el.name)) delete attrs[id];
  const text = el.text.trim();

  // <size value='10' unit='KiB'/> and <line value='8' unit='B'/> inside a NUMA cache.
  if ((el.name === 'size' || el.name === 'line') && attrs['value'] !== undefined && parent === 'cache') {
    out[`${prefix}.bytes`] = toBytes(attrs['value'], unit, prefix);
    delete attrs['value'];
  } else if (el.name === 'bandwidth' && attrs['value'] !== undefined) {
    out[`${prefix}.value`] = toKiB(attrs['value'], unit, prefix);
    delete attrs['value'];
  } else if (el.name === 'cell' && attrs['memory'] !== undefined) {
    out[`${prefix}.memory`] = toKiB(attrs['memory'], unit, prefix);
    delete attrs['memory'];
  } else if (el.name === 'page' && attrs['size'] !== undefined) {
    out[`${prefix}.size`] = toKiB(attrs['size'], unit, prefix);
    delete attrs['size'];
  } else if (text !== '') {
    if (unit !== undefined || (/^\d+$/.test(text) && isSizeElement(el.name))) out[prefix] = toKiB(text, unit, prefix);
    else out[prefix] = BITMAP_ELEMENTS.has(el.name) ? canonicalBitmap(text) : text;
  }

  for (const [name, value] of Object.entries(attrs)) {
    out[`${prefix}.${name}`] = BITMAP_ATTRS.has(name) ? canonicalBitmap(value) : value.trim();
  }

  const counts = new Map<string, number>();
  let any = false;
  for (const child of el.children) {
    if (skip(child)) continue;
    any = true;
    const n = counts.get(child.name) ?? 0;
    counts.set(child.name, n + 1);
    flatten(child, `${prefix}.${childKey(el, child, n)}`, out, undefined, el.name);
  }
  if (text === '' && !any && Object.keys(attrs).length === 0 && !(prefix in out) && !hasFactsUnder(out, prefix)) {
    out[prefix] = 'yes';
  }
}

function hasFactsUnder(out: MemoryFacts, prefix: string): boolean {
  const p = `${prefix}.`;
  return Object.keys(out).some((k) => k.startsWith(p));
}

/** Elements whose text is a size in KiB even without a unit attribute (libvirt's default unit). */
function isSizeElement(name: string): boolean {
  return ['size', 'block', 'requested', 'current', 'pagesize', 'alignsize', 'hard_limit', 'soft_limit',
    'swap_hard_limit', 'min_guarantee'].includes(name);
}

// ---- the document ------------------------------------------------------------------------------

function only(el: Element, name: string): Element | undefined {
  return el.children.find((c) => c.name === name);
}

/** Device children that are not memory facts: guest bus addressing and naming. */
const DEVICE_NOISE = new Set(['alias', 'acpi', 'driver', 'uuid']);

/**
 * The memory facts of one domain XML document.
 *
 * @throws Error (XML_ERROR from the tree parser) for text that is not XML, FactError for sizes
 *   with a unit or number libvirt would refuse.
 */
export function extractMemoryFacts(xml: string): MemoryFacts {
  const root = parseXmlTree(xml);
  if (root.name !== 'domain') throw new FactError(`the root element is <${root.name}>, expected <domain>`);
  const out: MemoryFacts = {};

  const memory = only(root, 'memory');
  if (memory !== undefined) {
    out['memory'] = toKiB(memory.text, memory.attrs['unit'], 'memory');
    if (memory.attrs['dumpCore'] !== undefined) out['memory.dumpCore'] = memory.attrs['dumpCore'];
  }
  const current = only(root, 'currentMemory');
  const currentKiB = current === undefined ? undefined : toKiB(current.text, current.attrs['unit'], 'currentMemory');
  // libvirt: absent (or 0) means "the same as <memory>".
  if (currentKiB !== undefined && currentKiB !== '0') out['currentMemory'] = currentKiB;
  else if (out['memory'] !== undefined) out['currentMemory'] = out['memory'];
  const max = only(root, 'maxMemory');
  if (max !== undefined) {
    out['maxMemory'] = toKiB(max.text, max.attrs['unit'], 'maxMemory');
    if (max.attrs['slots'] !== undefined) out['maxMemory.slots'] = max.attrs['slots'].trim();
  }

  for (const name of ['memoryBacking', 'numatune', 'memtune']) {
    const el = only(root, name);
    if (el === undefined) continue;
    const before = Object.keys(out).length;
    flatten(el, name, out);
    // An empty container asks for nothing (libvirt drops an empty <memoryBacking/>).
    if (out[name] === 'yes' && Object.keys(out).length === before + 1) delete out[name];
  }

  const cpu = only(root, 'cpu');
  const numa = cpu === undefined ? undefined : only(cpu, 'numa');
  if (numa !== undefined) flatten(numa, 'numa', out);

  const devices = only(root, 'devices');
  if (devices !== undefined) {
    let i = 0;
    for (const dev of devices.children) {
      if (dev.name !== 'memory') continue;
      const prefix = `devices.memory[${i++}]`;
      flatten(dev, prefix, out, (c) => DEVICE_NOISE.has(c.name) || (c.name === 'address' && c.attrs['type'] !== 'dimm'));
    }
    const balloon = only(devices, 'memballoon');
    if (balloon !== undefined) balloonFacts(balloon, out);
  }
  return out;
}

function balloonFacts(el: Element, out: MemoryFacts): void {
  const model = el.attrs['model'] ?? '';
  out['memballoon.model'] = model;
  if (model === 'none') return;
  out['memballoon.autodeflate'] = el.attrs['autodeflate'] ?? 'off';
  out['memballoon.freePageReporting'] = el.attrs['freePageReporting'] ?? 'off';
  const period = only(el, 'stats')?.attrs['period']?.trim();
  if (period !== undefined && period !== '' && Number(period) !== 0) out['memballoon.stats.period'] = String(Number(period));
}

/**
 * Differences between two fact maps, sorted by fact name. Empty means the same memory.
 */
export function diffMemoryFacts(expected: MemoryFacts, actual: MemoryFacts): FactDifference[] {
  const out: FactDifference[] = [];
  const names = new Set([...Object.keys(expected), ...Object.keys(actual)]);
  for (const fact of [...names].sort()) {
    const e = expected[fact];
    const a = actual[fact];
    if (e === a) continue;
    if (a === undefined) out.push({ fact, kind: 'missing', expected: e });
    else if (e === undefined) out.push({ fact, kind: 'extra', actual: a });
    else out.push({ fact, kind: 'different', expected: e, actual: a });
  }
  return out;
}

/** One line per difference, for reports: "missing numatune.memory.mode (strict)". */
export function describeDifference(d: FactDifference): string {
  if (d.kind === 'missing') return `missing ${d.fact} (libvirt: ${d.expected})`;
  if (d.kind === 'extra') return `extra ${d.fact} (virtmem: ${d.actual})`;
  return `different ${d.fact} (libvirt: ${d.expected}, virtmem: ${d.actual})`;
}
