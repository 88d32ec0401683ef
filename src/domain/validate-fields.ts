/**
 * The field checkers every part of definition validation uses (validate-def.ts for the domain,
 * validate-memory.ts for its memory configuration): each takes an untrusted value and the
 * field's path, and returns the value typed or throws DefValidationError naming the path.
 */

import { VirtError } from './errors.js';
import { MAX_SET_ID } from './node-set.js';
import { formatKiB } from './size.js';
import { isXmlSafe } from './xml-chars.js';

export const MAX_PATH_LENGTH = 4096;
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

export function fail(path: string, reason: string, limit = false): never {
  throw new DefValidationError(path || '(root)', reason, limit);
}

/** Short, safe rendering of an unexpected value for messages. */
export function show(v: unknown): string {
  if (typeof v === 'string') return `'${v.length > 40 ? `${v.slice(0, 40)}...` : v}'`;
  if (v === null || typeof v !== 'object') return String(v);
  return Array.isArray(v) ? 'an array' : 'an object';
}

/**
 * `v` as a plain object with exactly the given required keys and a subset of the optional ones.
 * A key whose value is `undefined` counts as absent (it cannot come from JSON anyway).
 */
export function record(v: unknown, path: string, [required, optional]: [string[], string[]]): Record<string, unknown> {
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

export function array(v: unknown, path: string, maxLength: number): unknown[] {
  if (!Array.isArray(v)) fail(path, `expected an array, got ${show(v)}`);
  if (v.length > maxLength) fail(path, `more than ${maxLength} entries`, true);
  return v;
}

export function int(v: unknown, path: string, min: number, max: number, limit = false): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(path, `expected an integer, got ${show(v)}`);
  if (v < min) fail(path, `${v} is below the minimum ${describeBound(path, min)}`, limit);
  if (v > max) fail(path, `${v} is above the maximum ${describeBound(path, max)}`, limit);
  return v;
}

/** Bounds of KiB fields read better with a unit ("64 MiB") than as raw numbers. */
function describeBound(path: string, bound: number): string {
  return path.endsWith('KiB') ? `of ${formatKiB(bound)}` : `of ${bound}`;
}

export function multipleOf(value: number, unit: number, path: string, what: string): void {
  if (value % unit !== 0) fail(path, `${value} KiB is not a multiple of ${what} (${unit} KiB)`);
}

export function bool(v: unknown, path: string): boolean {
  if (typeof v !== 'boolean') fail(path, `expected true or false, got ${show(v)}`);
  return v;
}

export function oneOf<T extends string>(v: unknown, path: string, values: readonly T[], limit = false): T {
  if (typeof v !== 'string') fail(path, `expected one of ${values.join(', ')}, got ${show(v)}`);
  if (!(values as readonly string[]).includes(v)) {
    fail(path, `'${v}' is not supported (expected one of ${values.join(', ')})`, limit);
  }
  return v as T;
}

export function text(v: unknown, path: string, opts: { newlines: boolean; maxLength?: number }): string {
  if (typeof v !== 'string') fail(path, `expected a string, got ${show(v)}`);
  const maxLength = opts.maxLength ?? MAX_TEXT_LENGTH;
  if (v.length > maxLength) fail(path, `longer than ${maxLength} characters`);
  if (!isXmlSafe(v)) fail(path, 'contains control or invalid characters');
  if (!opts.newlines && /[\r\n\t]/.test(v)) fail(path, 'must be a single line');
  return v;
}

export function absolutePath(v: unknown, path: string): string {
  const p = text(v, path, { newlines: false, maxLength: MAX_PATH_LENGTH });
  if (!p.startsWith('/')) fail(path, `'${p}' is not an absolute path`);
  return p;
}

/**
 * A list of ids (vCPUs, host or guest NUMA nodes): integers 0..max, ascending, no repeats, and
 * non-empty unless `allowEmpty` (a NUMA cell without vCPUs).
 */
export function idList(v: unknown, path: string, opts: { max?: number; allowEmpty?: boolean } = {}): number[] {
  const max = opts.max ?? MAX_SET_ID;
  const list = array(v, path, MAX_SET_ID + 1);
  if (list.length === 0 && !opts.allowEmpty) fail(path, 'must name at least one id');
  list.forEach((x, i) => {
    int(x, `${path}[${i}]`, 0, max);
    if (i > 0 && (x as number) <= (list[i - 1] as number)) fail(path, 'ids must be ascending without repeats');
  });
  return list as number[];
}
