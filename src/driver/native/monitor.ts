/**
 * Short-lived monitor sessions for one-shot operations. A session connects to the domain's
 * "short calls" monitor, runs a function, and closes; QMP failures are translated into driver
 * errors here, once, so the rest of the driver speaks only VirtError. Every error that a bound
 * ended names the monitor that did not answer and the bound (driver/bounds.ts).
 *
 * The domain's second monitor (qmp-watch.sock) is left for a long-lived watcher, so a daemon
 * holding it never blocks CLI calls.
 */
import { QmpClient, QmpError, QmpCommandError, QmpTimeoutError } from '../../qmp/index.js';
import { VirtError } from '../../domain/errors.js';
import { MONITOR_ANSWER_MS, MONITOR_CONNECT_MS, seconds, stoppedBy } from '../bounds.js';

export interface MonitorOptions {
  signal?: AbortSignal;
  /** Bound on getting in: QEMU's queue of waiting connections while it is full (default MONITOR_CONNECT_MS). */
  connectTimeoutMs?: number;
  /**
   * The bound a time-out while getting in names (default connectTimeoutMs): the caller's whole
   * bound, when it spent part of it waiting for its turn at the monitor.
   */
  connectBoundMs?: number;
  /** Bound on each answer: the greeting and every command (default MONITOR_ANSWER_MS). */
  answerTimeoutMs?: number;
}

/** Why a QMP wait expired, in words for the user; `connectBoundMs` is the bound on getting in. */
function timeoutText(name: string, err: QmpTimeoutError, connectBoundMs?: number): string {
  const boundMs = (err.stage === 'busy' || err.stage === 'connect') && connectBoundMs !== undefined ? connectBoundMs : err.boundMs;
  const bound = boundMs === undefined ? 'in time' : `within ${seconds(boundMs)}`;
  switch (err.stage) {
    case 'busy':
      return `the monitor of domain '${name}' did not answer ${bound}: it took no new connection (its queue of waiting connections stayed full)`;
    case 'connect':
      return `the monitor of domain '${name}' did not answer ${bound}: no connection (${err.message})`;
    case 'greeting':
    case 'negotiation':
      return `the monitor of domain '${name}' did not answer ${bound}: connected, but QEMU sent no ${err.stage === 'greeting' ? 'greeting' : 'answer to qmp_capabilities'}`;
    default:
      return `the monitor of domain '${name}' did not answer ${bound} (${err.message})`;
  }
}

/**
 * Translate a QMP-layer failure into a driver error for domain `name`; `connectBoundMs` is the
 * bound a time-out while getting in names (default: the one the QMP layer had).
 */
export function monitorError(name: string, err: unknown, connectBoundMs?: number): VirtError {
  if (err instanceof VirtError) return err;
  if (err instanceof QmpCommandError) {
    return new VirtError('OPERATION_FAILED', `internal error: unable to execute QEMU command '${err.command}': ${err.desc}`, { cause: err });
  }
  if (err instanceof QmpTimeoutError) {
    return new VirtError('TIMEOUT', `Timed out during operation: ${timeoutText(name, err, connectBoundMs)}`, { cause: err });
  }
  if (err instanceof QmpError) {
    switch (err.code) {
      case 'QMP_DISCONNECTED':
        return new VirtError('OPERATION_FAILED', `operation failed: domain '${name}' is no longer running: QEMU closed the monitor during the operation`, { cause: err });
      case 'QMP_ABORTED':
        // A caller's bound (a request to the daemon) is a time-out; anything else an abort.
        return stoppedBy(err.cause, `the monitor of domain '${name}' did not answer`);
      case 'QMP_CONNECT_FAILED':
        // A missing or refusing socket means QEMU is gone (a full queue is retried: QMP_TIMEOUT).
        return new VirtError('OPERATION_INVALID', `Requested operation is not valid: domain is not running (cannot connect to the monitor of '${name}')`, { cause: err });
      default:
        return new VirtError('MONITOR_FAILED', `internal error: monitor of domain '${name}': ${err.message}`, { cause: err });
    }
  }
  return new VirtError('INTERNAL', `internal error: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/**
 * Connect to `socketPath`, run `fn`, close. Errors come out as VirtError.
 * @throws VirtError (see monitorError)
 */
export async function withMonitor<T>(
  name: string,
  socketPath: string,
  fn: (client: QmpClient) => Promise<T>,
  opts: MonitorOptions = {},
): Promise<T> {
  let client: QmpClient;
  try {
    client = await QmpClient.connect(socketPath, {
      timeoutMs: opts.connectTimeoutMs ?? MONITOR_CONNECT_MS,
      answerTimeoutMs: opts.answerTimeoutMs ?? MONITOR_ANSWER_MS,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (err) {
    throw monitorError(name, err, opts.connectBoundMs);
  }
  let failed = false;
  try {
    return await fn(client);
  } catch (err) {
    failed = true;
    throw monitorError(name, err);
  } finally {
    // After a failure the connection is dropped at once: a polite close would wait for a QEMU
    // that may not answer any more.
    if (failed) client.destroy();
    else await client.close().catch(() => client.destroy());
  }
}

/**
 * Run `fn` on a connection someone else holds open (the daemon's watch monitor); it stays open.
 * Errors come out as VirtError.
 * @throws VirtError (see monitorError)
 */
export async function onHeldMonitor<T>(name: string, client: QmpClient, fn: (client: QmpClient) => Promise<T>): Promise<T> {
  try {
    return await fn(client);
  } catch (err) {
    throw monitorError(name, err);
  }
}
