/**
 * Per-consumer queue of QMP events.
 *
 * Like qemu.qmp's EventListener: every consumer gets its own filtered queue, registered when it
 * is created, so a caller creates it *before* sending the command that causes the event and
 * cannot miss it. One shared emitter would race (the event may arrive before the listener).
 */

import { QmpAbortedError, QmpStateError, QmpTimeoutError, type QmpError } from './errors.js';
import type { QmpEvent } from './messages.js';

/** Default bound of a stream's queue. */
export const DEFAULT_EVENT_QUEUE = 1024;
/** Default bound of one {@link QmpEventStream.nextEvent} wait. */
export const DEFAULT_EVENT_TIMEOUT_MS = 30_000;

export interface QmpEventStreamOptions {
  /** Event names to keep (exact match, e.g. `SHUTDOWN`); all events when omitted. */
  names?: readonly string[];
  /** Aborting it closes the stream, like {@link QmpEventStream.close}. */
  signal?: AbortSignal;
  /**
   * Bound of the queue. When full, the *oldest* event is dropped and {@link QmpEventStream.dropped}
   * is incremented: a slow consumer loses history, never the most recent state, and never makes
   * the client buffer without limit.
   */
  maxQueue?: number;
}

interface Waiter {
  take(event: QmpEvent): void;
  end(reason: QmpError): void;
}

/**
 * An `AsyncIterable<QmpEvent>` with a bounded queue. Iteration ends when the client goes down
 * or the stream is closed; events queued before that are still delivered first. Leaving a
 * `for await` loop early closes the stream.
 */
export class QmpEventStream implements AsyncIterable<QmpEvent> {
  readonly names: ReadonlySet<string> | undefined;
  readonly maxQueue: number;
  #queue: QmpEvent[] = [];
  #dropped = 0;
  #waiters: Waiter[] = [];
  #ended: QmpError | undefined;
  #onClose: (() => void) | undefined;
  #signal: AbortSignal | undefined;
  #onAbort = (): void => this.close();

  /** `onClose` runs once when the stream ends (the client uses it to unregister the stream). */
  constructor(opts: QmpEventStreamOptions = {}, onClose?: () => void) {
    this.names = opts.names ? new Set(opts.names) : undefined;
    this.maxQueue = Math.max(1, opts.maxQueue ?? DEFAULT_EVENT_QUEUE);
    if (opts.signal?.aborted) {
      // Ended from birth; onClose is not called since nothing registered the stream yet.
      this.#ended = new QmpStateError('QMP event stream was closed: its signal was already aborted');
      return;
    }
    this.#onClose = onClose;
    if (opts.signal) {
      this.#signal = opts.signal;
      opts.signal.addEventListener('abort', this.#onAbort, { once: true });
    }
  }

  /** Events discarded because the queue was full. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Events queued and not yet consumed. */
  get size(): number {
    return this.#queue.length;
  }

  /** True once the stream no longer receives events (closed, aborted, or client down). */
  get ended(): boolean {
    return this.#ended !== undefined;
  }

  /** Whether this stream's filter keeps events called `name`. */
  matches(name: string): boolean {
    return this.names === undefined || this.names.has(name);
  }

  /** Offers an event; used by QmpClient (and by tests feeding a stream directly). Never throws. */
  deliver(event: QmpEvent): void {
    if (this.#ended || !this.matches(event.event)) return;
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.take(event);
      return;
    }
    if (this.#queue.length >= this.maxQueue) {
      this.#queue.shift();
      this.#dropped++;
    }
    this.#queue.push(event);
  }

  /** Stops receiving; waiting consumers see the end. Used by QmpClient when the connection goes down. */
  end(reason: QmpError): void {
    if (this.#ended) return;
    this.#ended = reason;
    this.#signal?.removeEventListener('abort', this.#onAbort);
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.end(reason);
    const onClose = this.#onClose;
    this.#onClose = undefined;
    onClose?.();
  }

  /** Unregisters the stream. Pending `nextEvent` calls reject with QmpStateError; iteration ends. Idempotent. */
  close(): void {
    this.end(new QmpStateError('QMP event stream was closed'));
  }

  /**
   * Resolves with the next matching event (queued ones first).
   * @throws {QmpTimeoutError} after `timeoutMs` (default 30 s; `Infinity` disables the bound).
   * @throws {QmpAbortedError} if `signal` aborts.
   * @throws {QmpDisconnectedError} if the client went down and the queue is empty.
   * @throws {QmpStateError} if the stream was closed and the queue is empty.
   */
  nextEvent(opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<QmpEvent> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#ended) return Promise.reject(this.#ended);
    const { signal } = opts;
    if (signal?.aborted) {
      return Promise.reject(new QmpAbortedError('wait for QMP event aborted', { cause: signal.reason }));
    }
    const timeoutMs = opts.timeoutMs ?? DEFAULT_EVENT_TIMEOUT_MS;
    return new Promise<QmpEvent>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const cleanup = (): void => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const i = this.#waiters.indexOf(waiter);
        if (i !== -1) this.#waiters.splice(i, 1);
      };
      const waiter: Waiter = {
        take: (event) => {
          cleanup();
          resolve(event);
        },
        end: (reason) => {
          cleanup();
          reject(reason);
        },
      };
      const onAbort = (): void => {
        cleanup();
        reject(new QmpAbortedError('wait for QMP event aborted', { cause: signal?.reason }));
      };
      if (Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => {
          cleanup();
          reject(new QmpTimeoutError(`no QMP event${this.#describeFilter()} within ${timeoutMs} ms`, { stage: 'event', boundMs: timeoutMs }));
        }, Math.max(0, timeoutMs));
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<QmpEvent> {
    return {
      next: () => {
        const queued = this.#queue.shift();
        if (queued) return Promise.resolve({ value: queued, done: false });
        if (this.#ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise<IteratorResult<QmpEvent>>((resolve) => {
          this.#waiters.push({
            take: (event) => resolve({ value: event, done: false }),
            end: () => resolve({ value: undefined, done: true }),
          });
        });
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  #describeFilter(): string {
    return this.names ? ` (${[...this.names].join(', ')})` : '';
  }
}
