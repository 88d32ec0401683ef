/**
 * Short-lived monitor sessions for one-shot operations. A session connects to the domain's
 * "short calls" monitor, runs a function, and closes; QMP failures are translated into driver
 * errors here, once, so the rest of the driver speaks only VirtError.
 *
 * The domain's second monitor (qmp-watch.sock) is left for a long-lived watcher, so a daemon
 * holding it never blocks CLI calls.
 */
import { QmpClient, QmpError, QmpCommandError } from '../../qmp/index.js';
import { VirtError } from '../../domain/errors.js';

export interface MonitorOptions {
  signal?: AbortSignal;
  /** Bound on connecting (incl. waiting for another client to leave the monitor). */
  connectTimeoutMs?: number;
}

/** Translate a QMP-layer failure into a driver error for domain `name`. */
export function monitorError(name: string, err: unknown): VirtError {
  if (err instanceof VirtError) return err;
  if (err instanceof QmpCommandError) {
    return new VirtError('OPERATION_FAILED', `internal error: unable to execute QEMU command '${err.command}': ${err.desc}`, { cause: err });
  }
  if (err instanceof QmpError) {
    switch (err.code) {
      case 'QMP_DISCONNECTED':
        return new VirtError('OPERATION_FAILED', `operation failed: domain '${name}' is no longer running: QEMU closed the monitor during the operation`, { cause: err });
      case 'QMP_TIMEOUT':
        return new VirtError('TIMEOUT', `Timed out during operation: the monitor of domain '${name}' did not answer in time (${err.message})`, { cause: err });
      case 'QMP_ABORTED':
        return new VirtError('ABORTED', `operation on domain '${name}' aborted`, { cause: err });
      case 'QMP_CONNECT_FAILED': {
        // Only a missing or refusing socket means QEMU is gone; EAGAIN is a monitor whose listen
        // queue is full of clients waiting their turn (a QMP monitor serves one at a time).
        const errno = (err.cause as NodeJS.ErrnoException | undefined)?.code;
        if (errno === 'EAGAIN') {
          return new VirtError('TIMEOUT', `Timed out during operation: the monitor of domain '${name}' is busy with other clients (${err.message})`, { cause: err });
        }
        return new VirtError('OPERATION_INVALID', `Requested operation is not valid: domain is not running (cannot connect to the monitor of '${name}')`, { cause: err });
      }
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
      timeoutMs: opts.connectTimeoutMs ?? 10_000,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (err) {
    throw monitorError(name, err);
  }
  try {
    return await fn(client);
  } catch (err) {
    throw monitorError(name, err);
  } finally {
    await client.close().catch(() => client.destroy());
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
