/**
 * What every part of the libvirt XML reader shares (xml.ts for the domain, xml-memory.ts for its
 * memory configuration): warnings collected once per message, and libvirt's readings of counts,
 * sizes, on/off and yes/no values, node lists, and the device children that only address.
 */
import { xmlError } from './errors.js';
import { printable } from './name.js';
import { parseIdSet } from './node-set.js';
import { parseXmlMemoryKiB } from './size.js';
import type { Element } from './xml-tree.js';

/** Collects warnings, each message once. */
export class Warnings {
  private readonly seen = new Set<string>();
  readonly list: string[] = [];
  add(message: string): void {
    if (this.seen.has(message)) return;
    this.seen.add(message);
    this.list.push(message);
  }
  ignored(where: string): void {
    this.add(`ignored: <${where}>`);
  }
}

export const MAX_COUNT = 2 ** 31 - 1;

/** A decimal integer 0..2^31-1 (libvirt reads these as C ints) in element text or an attribute. */
export function parseCount(value: string | undefined, where: string): number {
  const t = value?.trim() ?? '';
  if (!/^\d{1,10}$/.test(t) || Number(t) > MAX_COUNT) {
    throw xmlError(`${where}: '${printable(value ?? '')}' is not an integer between 0 and ${MAX_COUNT}`);
  }
  return Number(t);
}

/** Parses a scaled memory element (<memory unit='MiB'>512</memory> and kin) to KiB. */
export function memoryKiB(el: Element, where: string): number {
  return parseXmlMemoryKiB(el.text, el.attrs['unit'], `<${where}>`);
}

/** Children of a device that only carry guest addressing or naming; dropping them is harmless. */
export const ADDRESSING = new Set(['address', 'alias', 'acpi', 'boot']);

export function onOff(value: string | undefined, where: string): boolean {
  if (value === undefined || value === 'off') return false;
  if (value === 'on') return true;
  throw xmlError(`${where}: expected 'on' or 'off', got '${printable(value)}'`);
}


/** libvirt's tristate 'yes'/'no' attributes; absent is undefined. */
export function yesNo(value: string | undefined, where: string): boolean | undefined {
  if (value === undefined) return undefined;
  if (value === 'yes' || value === 'no') return value === 'yes';
  throw xmlError(`${where}: expected 'yes' or 'no', got '${printable(value)}'`);
}

/** A CPU or node list in libvirt's bitmap syntax ("0-3,^2"), as ascending ids. */
export function idSet(value: string, where: string): number[] {
  const ids = parseIdSet(value);
  if (ids === null) throw xmlError(`${where}: '${printable(value)}' is not a list of ids like '0-3,5'`);
  return ids;
}
