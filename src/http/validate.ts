/**
 * Strict validation of JSON request bodies and query strings: unknown fields are refused, each
 * error names the field, numbers must be integers in range (no strings, no floats, no
 * exponents beyond 2^53). Pure.
 */
import { HttpError } from './errors.js';

export type FieldSpec =
  | { type: 'integer'; min: number; max: number; required?: boolean; unit?: string; nullable?: boolean }
  | { type: 'number'; min: number; max: number; required?: boolean }
  | { type: 'boolean'; required?: boolean }
  | { type: 'string'; pattern: RegExp; maxLength: number; required?: boolean; expected: string };

export type BodySpec = Readonly<Record<string, FieldSpec>>;

const describe = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : typeof v === 'string' ? 'a string' : typeof v === 'number' ? (Number.isInteger(v) ? 'an integer' : 'a fraction') : `a ${typeof v}`;

function bad(field: string, message: string): HttpError {
  return new HttpError(400, 'INVALID_FIELD', `field '${field}': ${message}`, field);
}

/** Checks one value against its spec. @throws HttpError INVALID_FIELD naming `field` */
export function checkField(field: string, spec: FieldSpec, v: unknown): unknown {
  switch (spec.type) {
    case 'integer':
      if (v === null && spec.nullable) return null;
      if (typeof v !== 'number' || !Number.isInteger(v)) throw bad(field, `expected an integer${spec.unit ? ` number of ${spec.unit}` : ''}, got ${describe(v)}`);
      if (v < spec.min || v > spec.max) throw bad(field, `${v} is out of range (${spec.min} to ${spec.max}${spec.unit ? ` ${spec.unit}` : ''})`);
      return v;
    case 'number':
      if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(field, `expected a number, got ${describe(v)}`);
      if (v < spec.min || v > spec.max) throw bad(field, `${v} is out of range (${spec.min} to ${spec.max})`);
      return v;
    case 'boolean':
      if (typeof v !== 'boolean') throw bad(field, `expected true or false, got ${describe(v)}`);
      return v;
    case 'string':
      if (typeof v !== 'string') throw bad(field, `expected ${spec.expected}, got ${describe(v)}`);
      if (v.length > spec.maxLength || !spec.pattern.test(v)) throw bad(field, `expected ${spec.expected}, got '${v.slice(0, 40).replace(/[^\x20-\x7e]/g, '?')}'`);
      return v;
  }
}

/**
 * Parses a JSON body text and checks it against `spec`.
 * @throws HttpError BAD_JSON, UNKNOWN_FIELD, MISSING_FIELD, INVALID_FIELD
 */
export function parseJsonBody<T>(text: string, spec: BodySpec): T {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, 'BAD_JSON', `request body is not valid JSON: ${(err as Error).message}`);
  }
  return checkObject<T>(doc, spec);
}

/** @throws HttpError BAD_JSON, UNKNOWN_FIELD, MISSING_FIELD, INVALID_FIELD */
export function checkObject<T>(doc: unknown, spec: BodySpec): T {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new HttpError(400, 'BAD_JSON', `request body must be a JSON object, got ${describe(doc)}`);
  }
  const o = doc as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!Object.hasOwn(spec, k)) {
      const known = Object.keys(spec).join(', ');
      throw new HttpError(400, 'UNKNOWN_FIELD', `unknown field '${k.slice(0, 64).replace(/[^\x20-\x7e]/g, '?')}' (known: ${known})`, k.slice(0, 64));
    }
  }
  const out: Record<string, unknown> = {};
  for (const [k, s] of Object.entries(spec)) {
    if (!Object.hasOwn(o, k)) {
      if (s.required) throw new HttpError(400, 'MISSING_FIELD', `field '${k}' is required`, k);
      continue;
    }
    out[k] = checkField(k, s, o[k]);
  }
  return out as T;
}

/**
 * Query parameters: only the known ones, each at most once, numbers in decimal.
 * @throws HttpError UNKNOWN_FIELD, INVALID_FIELD (field 'query.NAME')
 */
export function checkQuery(params: URLSearchParams, spec: Readonly<Record<string, { min: number; max: number }>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of new Set(params.keys())) {
    const field = `query.${k.slice(0, 64)}`;
    const s = spec[k];
    if (!s) throw new HttpError(400, 'UNKNOWN_FIELD', `unknown query parameter '${k.slice(0, 64)}'`, field);
    const all = params.getAll(k);
    if (all.length > 1) throw bad(field, 'given more than once');
    const text = all[0]!;
    if (!/^[0-9]{1,16}(\.[0-9]{1,6})?$/.test(text)) throw bad(field, `expected a non-negative decimal number, got '${text.slice(0, 40)}'`);
    const v = Number(text);
    if (v < s.min || v > s.max) throw bad(field, `${v} is out of range (${s.min} to ${s.max})`);
    out[k] = v;
  }
  return out;
}
