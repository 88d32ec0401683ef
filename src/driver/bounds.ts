/**
 * How long virtmem waits: one bound per kind of wait, the same on every path (the daemon and its
 * HTTP API, the CLI with and without the daemon). README ("Bounds") states these numbers. A
 * wait that reaches its bound fails TIMEOUT, naming what did not answer and the bound.
 *
 * Part of the driver layer's face: the drivers enforce the guest-side bounds, the daemon, its
 * HTTP server and the daemon's client the others.
 */
import { VirtError } from '../domain/errors.js';

/** A question to a guest's monitor: QEMU's answer to one command, or its greeting on a new connection. */
export const MONITOR_ANSWER_MS = 3_000;

/**
 * Getting a guest's short-call monitor (without the daemon): the turn behind other virtmem calls
 * on the same guest (one QMP monitor serves one client at a time), and QEMU's queue of waiting
 * connections while it is full (EAGAIN).
 */
export const MONITOR_CONNECT_MS = 10_000;

/** Waiting for a guest's job lock while another call changes the guest (libvirt waits 30 s too). */
export const LOCK_WAIT_MS = 30_000;

/**
 * virtmemd's HTTP API: a request must arrive whole within this, and is answered within this
 * after it arrived (a PUT .../memory with waitMs waits as long as it asks). Every wait inside a
 * request ends at this bound.
 */
export const REQUEST_MS = 10_000;

/** A libvirt host's answer to the daemon: connecting, each call, each question of its watch. */
export const LIBVIRT_HOST_ANSWER_MS = 5_000;

/** A kept-alive connection to virtmemd with no request in it is closed after this. */
export const IDLE_CONNECTION_MS = 5_000;

/** How long the CLI waits for virtmemd's answer: the daemon's own bound plus the way there and back. */
export const DAEMON_ANSWER_MS = REQUEST_MS + 2_000;

/** A bound in words: "3 s", "0.5 s". */
export function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

const requestBounds = new Map<number, string>();
/** A request's bound in words, "virtmemd answers a request within 10 s" (made once per length: every request names it). */
export function requestBoundText(ms: number): string {
  let t = requestBounds.get(ms);
  if (t === undefined) {
    t = `virtmemd answers a request within ${seconds(ms)}`;
    if (requestBounds.size < 16) requestBounds.set(ms, t);
  }
  return t;
}

/**
 * The reason a signal is aborted with when a caller's bound ran out (a request to the daemon):
 * a wait it ends fails TIMEOUT naming itself and this bound, not ABORTED.
 */
export class BoundReached extends Error {
  readonly code = 'BOUND_REACHED';
  /** `bound` says whose bound it was, e.g. "virtmemd answers a request within 10 s". */
  constructor(readonly bound: string) {
    super(bound);
    this.name = 'BoundReached';
  }
}

/**
 * boundSignal made only when something first asks for the signal (its bound still counted from
 * this call): a request answered from memory makes no controller, timer or listener.
 */
export function lazyBoundSignal(ms: number, bound: string, parent?: AbortSignal): { readonly signal: AbortSignal; clear(): void } {
  const start = performance.now();
  let made: { signal: AbortSignal; clear(): void } | null = null;
  let cleared = false;
  return {
    get signal(): AbortSignal {
      if (!made) {
        const left = ms - (performance.now() - start);
        made = left > 0 ? boundSignal(left, bound, parent) : { signal: AbortSignal.abort(parent?.aborted ? parent.reason : new BoundReached(bound)), clear: () => {} };
        if (cleared) made.clear();
      }
      return made.signal;
    },
    clear(): void { cleared = true; made?.clear(); },
  };
}

/**
 * A signal that aborts with BoundReached after `ms`, or with `parent`'s reason when that aborts
 * first. `clear()` stops the timer.
 */
export function boundSignal(ms: number, bound: string, parent?: AbortSignal): { signal: AbortSignal; clear(): void } {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new BoundReached(bound)), ms);
  timer.unref();
  const onParent = (): void => ac.abort(parent?.reason);
  if (parent?.aborted) onParent();
  else parent?.addEventListener('abort', onParent, { once: true });
  return {
    signal: ac.signal,
    clear: () => { clearTimeout(timer); parent?.removeEventListener('abort', onParent); },
  };
}

/**
 * The error a wait ends with when its signal aborted, given the signal's reason: TIMEOUT when a
 * caller's bound ended it ("Timed out during operation: WHAT (virtmemd answers a request within
 * 10 s)"), else ABORTED. `what` says what was waited for.
 */
export function stoppedBy(reason: unknown, what: string): VirtError {
  if (reason instanceof BoundReached) return new VirtError('TIMEOUT', `Timed out during operation: ${what} (${reason.bound})`, { cause: reason });
  return new VirtError('ABORTED', `operation aborted: ${what}`, { cause: reason });
}
