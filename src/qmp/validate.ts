/**
 * Tiny shape checks turning `unknown` wire JSON into typed values. Each throws QmpProtocolError
 * naming the path of the offending member, so a bad reply is diagnosable from the message alone.
 * Unknown extra members are ignored: the QMP spec (5, Compatibility Considerations) says newer
 * QEMUs may add keys and clients must ignore them.
 */

import { QmpProtocolError } from './errors.js';

export type JsonObject = Record<string, unknown>;

/** @throws {QmpProtocolError} unless `value` is a plain JSON object. */
export function expectObject(value: unknown, what: string): JsonObject {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new QmpProtocolError(`${what}: expected a JSON object, got ${describe(value)}`);
  }
  return value as JsonObject;
}

/** @throws {QmpProtocolError} unless `value` is a JSON array. */
export function expectArray(value: unknown, what: string): unknown[] {
  if (!Array.isArray(value)) throw new QmpProtocolError(`${what}: expected a JSON array, got ${describe(value)}`);
  return value;
}

/** @throws {QmpProtocolError} unless `value` is a string. */
export function expectString(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new QmpProtocolError(`${what}: expected a string, got ${describe(value)}`);
  return value;
}

/** @throws {QmpProtocolError} unless `value` is a finite number. */
export function expectNumber(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new QmpProtocolError(`${what}: expected a number, got ${describe(value)}`);
  }
  return value;
}

/** @throws {QmpProtocolError} unless `value` is a boolean. */
export function expectBoolean(value: unknown, what: string): boolean {
  if (typeof value !== 'boolean') throw new QmpProtocolError(`${what}: expected a boolean, got ${describe(value)}`);
  return value;
}

/** Returns `undefined` for an absent member. @throws {QmpProtocolError} if present but not a string. */
export function optionalString(value: unknown, what: string): string | undefined {
  return value === undefined ? undefined : expectString(value, what);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (value === undefined) return 'nothing';
  return typeof value;
}
