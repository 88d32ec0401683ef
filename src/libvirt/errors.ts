/**
 * Errors of the libvirt RPC layer. One class, `LibvirtError`, under the driver layer's
 * `VirtError` root so front ends present it like any driver error; `kind` says which of the
 * failure families it is, and errors the daemon sent keep libvirt's own code and domain.
 */
import { VirtError, type VirtErrorCode } from '../domain/errors.js';
import type { WireError } from './protocol.js';

export type LibvirtErrorKind =
  /** The daemon answered the call with an error (libvirtCode/libvirtDomain are set). */
  | 'remote'
  /** Could not reach or open the connection (socket, TLS, ssh, auth). */
  | 'connect'
  /** The connection closed while the call waited: no reply will ever come. */
  | 'closed'
  /** The peer stopped answering keepalive pings. */
  | 'keepalive'
  /** The call got no reply within its timeout. */
  | 'timeout'
  /** The caller's AbortSignal fired. */
  | 'aborted'
  /** The peer broke the protocol (bad packet, unknown serial, undecodable reply). */
  | 'protocol';

/** virErrorNumber values with a meaning virtmem maps to its own codes. */
export const LibvirtCode = {
  INTERNAL_ERROR: 1, NO_MEMORY: 2, NO_SUPPORT: 3, UNKNOWN_HOST: 4, NO_CONNECT: 5, INVALID_CONN: 6,
  INVALID_DOMAIN: 7, INVALID_ARG: 8, OPERATION_FAILED: 9, XML_ERROR: 27, OPERATION_DENIED: 29,
  NO_DOMAIN: 42, OPERATION_INVALID: 55, AUTH_FAILED: 45, CONFIG_UNSUPPORTED: 67,
  OPERATION_TIMEOUT: 68, ARGUMENT_UNSUPPORTED: 74, OPERATION_UNSUPPORTED: 84,
  RPC: 39, SYSTEM_ERROR: 38,
} as const;

function codeFor(libvirtCode: number): VirtErrorCode {
  switch (libvirtCode) {
    case LibvirtCode.NO_DOMAIN: return 'NO_DOMAIN';
    case LibvirtCode.INVALID_ARG: case LibvirtCode.ARGUMENT_UNSUPPORTED: return 'INVALID_ARG';
    case LibvirtCode.OPERATION_INVALID: return 'OPERATION_INVALID';
    case LibvirtCode.XML_ERROR: return 'XML_ERROR';
    case LibvirtCode.CONFIG_UNSUPPORTED: return 'CONFIG_UNSUPPORTED';
    case LibvirtCode.NO_SUPPORT: case LibvirtCode.OPERATION_UNSUPPORTED: return 'NO_SUPPORT';
    case LibvirtCode.OPERATION_TIMEOUT: return 'TIMEOUT';
    default: return 'OPERATION_FAILED';
  }
}

const KIND_CODE: Record<Exclude<LibvirtErrorKind, 'remote'>, VirtErrorCode> = {
  connect: 'OPERATION_FAILED', closed: 'OPERATION_FAILED', keepalive: 'TIMEOUT',
  timeout: 'TIMEOUT', aborted: 'ABORTED', protocol: 'INTERNAL',
};

export class LibvirtError extends VirtError {
  readonly kind: LibvirtErrorKind;
  /** libvirt's virErrorNumber (remote errors only). */
  readonly libvirtCode: number | null;
  /** libvirt's virErrorDomain (remote errors only). */
  readonly libvirtDomain: number | null;
  /** The rest of libvirt's error record (remote errors only). */
  readonly detail: Omit<WireError, 'code' | 'domain' | 'message'> | null;

  constructor(kind: LibvirtErrorKind, message: string, opts: { wire?: WireError; cause?: unknown } = {}) {
    const w = opts.wire;
    super(w ? codeFor(w.code) : KIND_CODE[kind as Exclude<LibvirtErrorKind, 'remote'>] ?? 'INTERNAL', message, { cause: opts.cause });
    this.name = 'LibvirtError';
    this.kind = kind;
    this.libvirtCode = w?.code ?? null;
    this.libvirtDomain = w?.domain ?? null;
    this.detail = w ? { level: w.level, str1: w.str1, str2: w.str2, str3: w.str3, int1: w.int1, int2: w.int2 } : null;
  }

  /** An error the daemon sent in a reply. */
  static fromWire(w: WireError): LibvirtError {
    return new LibvirtError('remote', w.message ?? `libvirt error ${w.code} (domain ${w.domain})`, { wire: w });
  }
}
