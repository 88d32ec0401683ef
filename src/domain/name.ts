/**
 * Domain identity: names and UUIDs.
 *
 * libvirt itself only forbids '/' in names. virtmem is stricter because a name becomes a file
 * name (the stored definition) and part of socket paths (QMP, serial console), so it must be
 * safe in every shell, path and log line without quoting.
 */

import { randomUUID } from 'node:crypto';
import { invalidArg } from './errors.js';

/** Longest accepted domain name, in characters (all accepted characters are single-byte ASCII). */
export const MAX_DOMAIN_NAME_LENGTH = 64;

const NAME_CHARS = /^[A-Za-z0-9._+-]+$/;

/** The reason `name` is not acceptable, or undefined when it is fine. */
function nameProblem(name: string): string | undefined {
  if (name === '') return 'the name is empty';
  if (name.length > MAX_DOMAIN_NAME_LENGTH) return `longer than ${MAX_DOMAIN_NAME_LENGTH} characters`;
  if (name === '.' || name === '..') return "'.' and '..' are reserved path names";
  if (name.includes('/')) return "'/' is not allowed";
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'control characters are not allowed';
  if (/\s/.test(name)) return 'whitespace is not allowed';
  // A leading '.' hides the stored file; a leading '-' makes the name look like an option.
  if (name.startsWith('.')) return "the name must not start with '.'";
  if (name.startsWith('-')) return "the name must not start with '-'";
  if (!NAME_CHARS.test(name)) return 'only letters, digits and . _ + - are allowed';
  return undefined;
}

/**
 * Checks a domain name and returns it unchanged.
 * Accepted: 1..64 characters of `[A-Za-z0-9._+-]`, not starting with '.' or '-'.
 *
 * @throws VirtError INVALID_ARG saying what is wrong with the name.
 */
export function validateDomainName(name: string): string {
  const problem = nameProblem(name);
  if (problem !== undefined) throw invalidArg(`invalid domain name '${printable(name)}': ${problem}`);
  return name;
}

const UUID_DASHED = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const UUID_PLAIN = /^[0-9a-f]{32}$/i;

/**
 * True for a UUID in the 8-4-4-4-12 form or as 32 bare hex digits, any case. Like libvirt's
 * virUUIDParse it does not check the RFC 4122 version/variant bits: imported UUIDs are kept as
 * they are.
 */
export function isUuid(text: string): boolean {
  return UUID_DASHED.test(text) || UUID_PLAIN.test(text);
}

/**
 * Returns the canonical form (lower case, 8-4-4-4-12) of a UUID accepted by `isUuid`.
 *
 * @throws VirtError INVALID_ARG when `text` is not a UUID.
 */
export function normalizeUuid(text: string): string {
  if (!isUuid(text)) throw invalidArg(`invalid UUID '${printable(text)}'`);
  const hex = text.replace(/-/g, '').toLowerCase();
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A fresh random (version 4) UUID in canonical form. Never throws. */
export function newUuid(): string {
  return randomUUID();
}

/**
 * Makes user input safe to quote in an error message: caps its length and shows control
 * characters as \xNN, so a hostile value cannot forge extra log lines or flood a terminal.
 */
export function printable(text: string): string {
  const shown = text.length > 64 ? `${text.slice(0, 64)}...` : text;
  return shown.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
