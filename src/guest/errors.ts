/**
 * Errors of the guest layer: building the default guest (kernel + initramfs from Debian
 * packages) and talking to its serial command agent.
 *
 * Every error carries a stable `code`; callers branch on it, never on message text. Messages say
 * what to check. Lower-level causes (child process failures, socket errors) are chained via
 * `cause`.
 */

export type GuestBuildErrorCode =
  /** apt could not resolve or download a package (empty lists, no network, unknown package). */
  | 'GUEST_APT_FAILED'
  /** A host tool the build needs (apt-get, apt-cache, dpkg-deb, cpio) is not installed. */
  | 'GUEST_TOOL_MISSING'
  /** Any other build step failed (unpacking, missing module, writing the cache). */
  | 'GUEST_BUILD_FAILED'
  /** The build was cancelled through its AbortSignal. */
  | 'GUEST_BUILD_ABORTED';

export type GuestAgentErrorCode =
  /** The agent socket could not be opened (QEMU not running, wrong path, permissions). */
  | 'AGENT_CONNECT_FAILED'
  /** The guest did not answer a probe in time (still booting, wrong serial port, broken init). */
  | 'AGENT_NOT_READY'
  /** A command did not finish in time. The guest keeps running it; later commands queue behind. */
  | 'AGENT_TIMEOUT'
  /** The socket closed (QEMU exited, close() called) while a command was pending or before it. */
  | 'AGENT_CLOSED'
  /** The wait was cancelled through an AbortSignal. */
  | 'AGENT_ABORTED'
  /** The guest answered something that cannot be parsed (e.g. /proc/meminfo without MemTotal). */
  | 'AGENT_BAD_OUTPUT'
  /** One reply grew past MAX_REPLY_CHARS; the connection is closed (the guest may still be sending). */
  | 'AGENT_REPLY_TOO_LARGE'
  /** The caller passed something unusable (e.g. a command with a NUL byte). */
  | 'AGENT_INVALID_ARG';

export type GuestErrorCode = GuestBuildErrorCode | GuestAgentErrorCode;

/** Root of every error thrown by the guest layer. */
export class GuestError extends Error {
  readonly code: GuestErrorCode;
  constructor(code: GuestErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GuestError';
    this.code = code;
  }
}

/** Building the default guest failed. */
export class GuestBuildError extends GuestError {
  declare readonly code: GuestBuildErrorCode;
  constructor(code: GuestBuildErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'GuestBuildError';
  }
}

/** Talking to the guest's serial command agent failed. */
export class GuestAgentError extends GuestError {
  declare readonly code: GuestAgentErrorCode;
  constructor(code: GuestAgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'GuestAgentError';
  }
}
