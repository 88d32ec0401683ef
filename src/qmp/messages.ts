/**
 * The QMP server's message model and validators (docs/interop/qmp-spec, sections 2.2-2.5).
 *
 * Wire JSON stays `unknown` until one of these functions has checked its shape; anything that
 * does not fit is a QmpProtocolError.
 */

import { QmpProtocolError } from './errors.js';
import { expectArray, expectNumber, expectObject, expectString, type JsonObject } from './validate.js';

/** Spec 2.2: `{"QMP": {"version": {...}, "capabilities": [...]}}`, sent once, right after connect. */
export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

/** Spec 2.4.1: success reply. `id` echoes the command's id; it is absent if the command had none. */
export interface QmpReturn {
  id?: unknown;
  return: unknown;
}

/** Spec 2.4.2: error reply. `id` may be missing when QEMU failed before reading it (e.g. bad JSON). */
export interface QmpErrorReply {
  id?: unknown;
  error: { class: string; desc: string };
}

/** Spec 2.5: asynchronous event. `data` is optional on the wire; it is `{}` here when absent. */
export interface QmpEvent {
  event: string;
  data: JsonObject;
  /** Host time of the event; both members are -1 if QEMU could not read the clock (spec 2.5). */
  timestamp: { seconds: number; microseconds: number };
}

/** Anything the server can send. Narrow with `'QMP' in m`, `'return' in m`, `'error' in m`, `'event' in m`. */
export type QmpServerMessage = { QMP: QmpGreeting } | QmpReturn | QmpErrorReply | QmpEvent;

/** @throws {QmpProtocolError} unless `raw` is a well-formed greeting. */
export function parseGreeting(raw: unknown): QmpGreeting {
  const outer = expectObject(raw, 'QMP greeting');
  if (!('QMP' in outer)) {
    throw new QmpProtocolError(`expected a QMP greeting ({"QMP": ...}), got ${preview(raw)}: is this a QMP monitor socket?`);
  }
  const qmp = expectObject(outer.QMP, 'greeting.QMP');
  const version = expectObject(qmp.version, 'greeting.QMP.version');
  const qemu = expectObject(version.qemu, 'greeting.QMP.version.qemu');
  return {
    version: {
      qemu: {
        major: expectNumber(qemu.major, 'greeting.QMP.version.qemu.major'),
        minor: expectNumber(qemu.minor, 'greeting.QMP.version.qemu.minor'),
        micro: expectNumber(qemu.micro, 'greeting.QMP.version.qemu.micro'),
      },
      package: expectString(version.package, 'greeting.QMP.version.package'),
    },
    capabilities: expectArray(qmp.capabilities, 'greeting.QMP.capabilities').map((c, i) =>
      expectString(c, `greeting.QMP.capabilities[${i}]`),
    ),
  };
}

/** @throws {QmpProtocolError} unless `raw` is a well-formed event. */
export function parseEvent(raw: unknown): QmpEvent {
  const obj = expectObject(raw, 'QMP event');
  const ts = expectObject(obj.timestamp, 'event.timestamp');
  return {
    event: expectString(obj.event, 'event.event'),
    data: obj.data === undefined ? {} : expectObject(obj.data, 'event.data'),
    timestamp: {
      seconds: expectNumber(ts.seconds, 'event.timestamp.seconds'),
      microseconds: expectNumber(ts.microseconds, 'event.timestamp.microseconds'),
    },
  };
}

/** @throws {QmpProtocolError} unless `raw` is a success or error reply. */
export function parseReply(raw: unknown): QmpReturn | QmpErrorReply {
  const obj = expectObject(raw, 'QMP reply');
  const id = 'id' in obj ? { id: obj.id } : {};
  if ('return' in obj) {
    if ('error' in obj) throw new QmpProtocolError(`QMP reply has both "return" and "error": ${preview(raw)}`);
    return { ...id, return: obj.return };
  }
  if ('error' in obj) {
    const err = expectObject(obj.error, 'reply.error');
    return { ...id, error: { class: expectString(err.class, 'reply.error.class'), desc: expectString(err.desc, 'reply.error.desc') } };
  }
  throw new QmpProtocolError(`QMP reply has neither "return" nor "error": ${preview(raw)}`);
}

/**
 * Classifies and validates any message from the server.
 * @throws {QmpProtocolError} if it is none of greeting, reply or event, or malformed.
 */
export function parseServerMessage(raw: unknown): QmpServerMessage {
  const obj = expectObject(raw, 'QMP message');
  if ('event' in obj) return parseEvent(obj);
  if ('QMP' in obj) return { QMP: parseGreeting(obj) };
  return parseReply(obj);
}

/** Short JSON rendering of a bad message for error texts. */
export function preview(raw: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(raw) ?? String(raw);
  } catch {
    text = String(raw);
  }
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
