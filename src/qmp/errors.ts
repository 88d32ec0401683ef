/**
 * Errors of the QMP layer (talking to one QEMU monitor socket).
 *
 * One root, `QmpError`, with a stable `code`; callers branch on `code` (or `instanceof`), never
 * on message text. The tree follows qemu.qmp (python/qemu/qmp/error.py, qmp_client.py):
 * the command failed / no reply will ever come / the peer broke the protocol / wrong state,
 * plus the usual timeout, abort and connect failures. Underlying errors are chained via `cause`.
 */

export type QmpErrorCode =
  /** QEMU answered the command with `{"error": {"class", "desc"}}`. */
  | 'QMP_COMMAND_FAILED'
  /** The connection went down while waiting; no reply will ever come. */
  | 'QMP_DISCONNECTED'
  /** A bounded wait (connect, command, event) expired. */
  | 'QMP_TIMEOUT'
  /** The caller cancelled the wait through an AbortSignal. */
  | 'QMP_ABORTED'
  /** The peer sent something QMP does not allow (bad greeting, unparsable line, wrong shape). */
  | 'QMP_PROTOCOL'
  /** The client is not in a state that allows the operation (e.g. closed). */
  | 'QMP_STATE'
  /** The monitor socket could not be reached (ENOENT, ECONNREFUSED, ...) or hung up during the handshake. */
  | 'QMP_CONNECT_FAILED';

/** Root of every error thrown by the QMP layer. */
export class QmpError extends Error {
  readonly code: QmpErrorCode;
  constructor(code: QmpErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'QmpError';
    this.code = code;
  }
}

/** QEMU executed (or refused) the command and answered with an error class and description. */
export class QmpCommandError extends QmpError {
  /** QMP error class, e.g. `CommandNotFound`, `GenericError`, `DeviceNotActive`. */
  readonly errorClass: string;
  /** QEMU's human-readable description; per the QMP spec (2.4.2) clients must not parse it. */
  readonly desc: string;
  /** The command that was sent. */
  readonly command: string;
  /** The arguments that were sent, if any. */
  readonly args: Readonly<Record<string, unknown>> | undefined;
  constructor(command: string, args: Record<string, unknown> | undefined, errorClass: string, desc: string) {
    super('QMP_COMMAND_FAILED', `QEMU rejected '${command}': ${errorClass}: ${desc}`);
    this.name = 'QmpCommandError';
    this.errorClass = errorClass;
    this.desc = desc;
    this.command = command;
    this.args = args;
  }
}

/** The connection went down (QEMU closed the monitor, died, or the client was destroyed) while waiting. */
export class QmpDisconnectedError extends QmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('QMP_DISCONNECTED', message, options);
    this.name = 'QmpDisconnectedError';
  }
}

/**
 * Which wait expired: `busy` the monitor's queue of waiting connections stayed full (EAGAIN),
 * `connect` no connection, `greeting` connected but QEMU sent no greeting, `negotiation` no
 * answer to qmp_capabilities, `reply` no answer to a command, `event` no event.
 */
export type QmpTimeoutStage = 'busy' | 'connect' | 'greeting' | 'negotiation' | 'reply' | 'event';

/** A bounded wait expired. For a command, QEMU may still execute it; its late reply is dropped. */
export class QmpTimeoutError extends QmpError {
  readonly stage: QmpTimeoutStage;
  /** The bound that expired, when the waiter knows it. */
  readonly boundMs: number | undefined;
  constructor(message: string, options?: { cause?: unknown; stage?: QmpTimeoutStage; boundMs?: number }) {
    super('QMP_TIMEOUT', message, options);
    this.name = 'QmpTimeoutError';
    this.stage = options?.stage ?? 'reply';
    this.boundMs = options?.boundMs;
  }
}

/** The wait was cancelled through an AbortSignal; `cause` is the signal's reason. */
export class QmpAbortedError extends QmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('QMP_ABORTED', message, options);
    this.name = 'QmpAbortedError';
  }
}

/** The peer broke the protocol: bad greeting, unparsable line, over-long line, reply of the wrong shape. */
export class QmpProtocolError extends QmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('QMP_PROTOCOL', message, options);
    this.name = 'QmpProtocolError';
  }
}

/** The client is in the wrong state for the operation (e.g. `execute` after `close()`). */
export class QmpStateError extends QmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('QMP_STATE', message, options);
    this.name = 'QmpStateError';
  }
}

/** Connecting to the monitor socket failed; `cause` holds the system error (ENOENT, ECONNREFUSED, ...). */
export class QmpConnectError extends QmpError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('QMP_CONNECT_FAILED', message, options);
    this.name = 'QmpConnectError';
  }
}
