/**
 * Checks documents against docs/openapi.json: a small validator for the JSON Schema subset the
 * file uses ($ref, type, nullable, properties, required, additionalProperties, items, enum,
 * minimum, maximum, pattern), so tests can hold the server to its contract without a big
 * dependency.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './cli.js';

export type Schema = Record<string, unknown>;

export const OPENAPI = JSON.parse(readFileSync(join(ROOT, 'docs', 'openapi.json'), 'utf8')) as {
  paths: Record<string, Record<string, { responses?: Record<string, { $ref?: string; content?: Record<string, { schema?: Schema }> }>; requestBody?: { content: Record<string, { schema: Schema }> } }>>;
  components: { schemas: Record<string, Schema>; responses: Record<string, { content: Record<string, { schema: Schema }> }> };
};

const KEYWORDS = new Set(['$ref', 'type', 'nullable', 'properties', 'required', 'additionalProperties', 'items', 'enum', 'minimum', 'maximum', 'pattern', 'description', 'example', 'default', 'format', 'maxLength', 'minLength']);

function resolve(ref: string): Schema {
  const m = /^#\/components\/(schemas|responses)\/(.+)$/.exec(ref);
  if (!m) throw new Error(`unsupported $ref ${ref}`);
  const s = (OPENAPI.components as unknown as Record<string, Record<string, Schema>>)[m[1]!]![m[2]!];
  if (!s) throw new Error(`dangling $ref ${ref}`);
  return s;
}

/** Errors of `value` against `schema`, each with its JSON path; empty when it conforms. */
export function validate(value: unknown, schema: Schema, path = '$'): string[] {
  for (const k of Object.keys(schema)) if (!KEYWORDS.has(k)) throw new Error(`schema keyword '${k}' at ${path} is not supported by this checker`);
  if (typeof schema.$ref === 'string') return validate(value, resolve(schema.$ref), path);
  if (value === null) return schema.nullable === true || schema.type === undefined ? [] : [`${path}: null but not nullable`];
  const errs: string[] = [];
  const t = schema.type as string | undefined;
  const actual = Array.isArray(value) ? 'array' : typeof value;
  if (t === 'integer') { if (typeof value !== 'number' || !Number.isInteger(value)) return [`${path}: expected integer, got ${JSON.stringify(value)}`]; }
  else if (t === 'number') { if (typeof value !== 'number') return [`${path}: expected number, got ${actual}`]; }
  else if (t !== undefined && t !== actual) return [`${path}: expected ${t}, got ${actual}`];
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) errs.push(`${path}: ${JSON.stringify(value)} not in ${JSON.stringify(schema.enum)}`);
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) errs.push(`${path}: ${value} < minimum ${schema.minimum}`);
    if (typeof schema.maximum === 'number' && value > schema.maximum) errs.push(`${path}: ${value} > maximum ${schema.maximum}`);
  }
  if (typeof value === 'string' && typeof schema.pattern === 'string' && !new RegExp(schema.pattern).test(value)) errs.push(`${path}: '${value}' does not match ${schema.pattern}`);
  if (Array.isArray(value) && schema.items) value.forEach((v, i) => errs.push(...validate(v, schema.items as Schema, `${path}[${i}]`)));
  if (actual === 'object' && !Array.isArray(value)) {
    const o = value as Record<string, unknown>;
    const props = (schema.properties ?? {}) as Record<string, Schema>;
    for (const r of (schema.required ?? []) as string[]) if (!(r in o)) errs.push(`${path}: missing required '${r}'`);
    for (const [k, v] of Object.entries(o)) {
      if (props[k]) errs.push(...validate(v, props[k]!, `${path}.${k}`));
      else if (schema.additionalProperties === false) errs.push(`${path}: property '${k}' is not in the schema`);
      else if (typeof schema.additionalProperties === 'object') errs.push(...validate(v, schema.additionalProperties as Schema, `${path}.${k}`));
    }
  }
  return errs;
}

/** The documented JSON schema of `status` for `method` on a path template (e.g. /domains/{name}). */
export function responseSchema(method: string, template: string, status: number): Schema {
  const op = OPENAPI.paths[template]?.[method.toLowerCase()];
  if (!op) throw new Error(`${method} ${template} is not documented`);
  let r = op.responses?.[String(status)];
  if (!r) throw new Error(`${method} ${template} does not document status ${status}`);
  if (r.$ref) r = resolve(r.$ref) as typeof r;
  const schema = r.content?.['application/json']?.schema;
  if (!schema) throw new Error(`${method} ${template} ${status} has no JSON schema`);
  return schema;
}

/** Throws with every mismatch when `body` is not what the contract says for this answer. */
export function assertConforms(method: string, template: string, status: number, body: unknown): void {
  const errs = validate(body, responseSchema(method, template, status));
  if (errs.length) throw new Error(`${method} ${template} ${status} does not match docs/openapi.json:\n  ${errs.join('\n  ')}\nbody: ${JSON.stringify(body).slice(0, 2000)}`);
}
