/**
 * Errors of the driver layer (domains, definitions, lifecycle, memory).
 *
 * Every error carries a stable `code`; front ends (CLI, HTTP) map codes to their own presentation
 * in one place and never branch on message text. Lower-layer errors (QMP, fs) are chained via
 * `cause`.
 */

export type VirtErrorCode =
  /** No domain with that name/uuid. */
  | 'NO_DOMAIN'
  /** A user-supplied argument (size, name, flag combination) is invalid. */
  | 'INVALID_ARG'
  /** The operation is not valid in the domain's current state (e.g. not running). */
  | 'OPERATION_INVALID'
  /** The operation was attempted and failed (QEMU refused, process died, ...). */
  | 'OPERATION_FAILED'
  /** The definition asks for something this driver cannot honour. */
  | 'CONFIG_UNSUPPORTED'
  /** The XML document is malformed or not a libvirt domain. */
  | 'XML_ERROR'
  /** The domain is already running (start twice). */
  | 'DOMAIN_ACTIVE'
  /** A domain with that name or uuid already exists. */
  | 'DOMAIN_EXISTS'
  /** A bounded wait expired (lock, shutdown, monitor, guest convergence). */
  | 'TIMEOUT'
  /** The operation was cancelled through an AbortSignal. */
  | 'ABORTED'
  /** Talking to the QEMU monitor failed (QEMU gone, protocol error). */
  | 'MONITOR_FAILED'
  /** A target (e.g. balloon size) was requested but the guest did not reach it. */
  | 'NOT_REACHED'
  /** The QEMU binary or another host prerequisite is missing. */
  | 'NO_SUPPORT'
  /** Bug or unexpected host condition. */
  | 'INTERNAL';

/** Root of every error thrown by the driver layer. */
export class VirtError extends Error {
  readonly code: VirtErrorCode;
  constructor(code: VirtErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VirtError';
    this.code = code;
  }
}

/** Shorthand constructors keep call sites short and consistent. */
export const invalidArg = (message: string, cause?: unknown): VirtError =>
  new VirtError('INVALID_ARG', message, { cause });
export const xmlError = (message: string, cause?: unknown): VirtError =>
  new VirtError('XML_ERROR', message, { cause });
export const unsupported = (message: string): VirtError => new VirtError('CONFIG_UNSUPPORTED', message);
