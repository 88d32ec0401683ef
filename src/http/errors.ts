/**
 * Errors of the HTTP layer and the one place where driver errors become status codes. Every
 * error body is `{"error": {"code", "message", "field"?}}` (docs/openapi.json#/components/schemas/Error).
 */
import { VirtError, type VirtErrorCode } from '../domain/errors.js';
import { seconds } from '../driver/bounds.js';

export type HttpErrorCode =
  | 'BAD_JSON' | 'UNKNOWN_FIELD' | 'INVALID_FIELD' | 'MISSING_FIELD' | 'BODY_TOO_LARGE' | 'BAD_CONTENT_TYPE'
  | 'UNAUTHORIZED' | 'FORBIDDEN_ORIGIN' | 'FORBIDDEN_HOST' | 'NOT_FOUND' | 'METHOD_NOT_ALLOWED' | 'REQUEST_TIMEOUT'
  | 'BUSY' | VirtErrorCode;

/** An answer other than success, with its status, stable code and (for input errors) the field. */
export class HttpError extends Error {
  constructor(readonly status: number, readonly code: HttpErrorCode, message: string, readonly field?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HttpError';
  }

  body(): { error: { code: string; message: string; field?: string } } {
    return { error: { code: this.code, message: this.message, ...(this.field !== undefined ? { field: this.field } : {}) } };
  }
}

const STATUS: Record<VirtErrorCode, number> = {
  NO_DOMAIN: 404,
  INVALID_ARG: 400,
  OPERATION_INVALID: 409,
  OPERATION_FAILED: 500,
  CONFIG_UNSUPPORTED: 400,
  XML_ERROR: 400,
  DOMAIN_ACTIVE: 409,
  DOMAIN_EXISTS: 409,
  TIMEOUT: 504,
  ABORTED: 503,
  MONITOR_FAILED: 502,
  NOT_REACHED: 409,
  NO_SUPPORT: 501,
  INTERNAL: 500,
};

/**
 * Any thrown value as an HttpError. Driver errors keep their code; `field` names the input the
 * driver refused when the caller knows it (e.g. targetBytes for a refused size).
 */
export function toHttpError(err: unknown, field?: string): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof VirtError) {
    const status = STATUS[err.code] ?? 500;
    return new HttpError(status, err.code, err.message, status === 400 ? field : undefined, { cause: err });
  }
  return new HttpError(500, 'INTERNAL', `internal error: ${(err as Error)?.message ?? String(err)}`, undefined, { cause: err });
}

/** A request's backstop answers this long after its bound, when its own waits did not end it (both transports). */
export const BACKSTOP_GRACE_MS = 1_000;

/** The backstop's answer: the daemon could not answer within `ms`. */
export function unansweredError(ms: number): HttpError {
  return new HttpError(504, 'TIMEOUT', `Timed out during operation: virtmemd could not answer within ${seconds(ms)}`);
}
