/**
 * QMP client: one connection to one QEMU monitor socket (modelled on qemu.qmp's QMPClient).
 *
 * Lifecycle: connecting -> running -> closing -> closed. Every call is bounded by a timeout and
 * cancellable with an AbortSignal; every pending call settles exactly once, also when the
 * socket dies; no timer outlives the connection.
 */

import {
  QmpAbortedError,
  QmpCommandError,
  QmpConnectError,
  QmpDisconnectedError,
  QmpError,
  QmpProtocolError,
  QmpStateError,
  QmpTimeoutError,
} from './errors.js';
import { QmpEventStream, type QmpEventStreamOptions } from './event-stream.js';
import {
  parseGreeting,
  parseServerMessage,
  preview,
  type QmpErrorReply,
  type QmpGreeting,
  type QmpReturn,
  type QmpServerMessage,
} from './messages.js';
import { QmpTransport } from './transport.js';
import { expectString } from './validate.js';

/** Connection lifecycle; `closing` covers both draining in-flight calls and tearing the socket down. */
export type QmpClientState = 'connecting' | 'running' | 'closing' | 'closed';

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
export const DEFAULT_CLOSE_TIMEOUT_MS = 5_000;
/** Pauses between connects while the monitor's queue of waiting connections is full (doubling, with jitter). */
const BUSY_FIRST_PAUSE_MS = 2;
const BUSY_MAX_PAUSE_MS = 50;
/** How long `close()` waits for QEMU to close its end after ours was half-closed. */
const SOCKET_END_GRACE_MS = 1_000;
/** Ids of timed-out/aborted calls remembered so their late replies are dropped quietly. */
const MAX_ABANDONED_IDS = 1024;

/** Bounds one wait. `timeoutMs: Infinity` disables the timer (the caller then owns the bound). */
export interface QmpCallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** Diagnostics the client otherwise drops silently. */
export type QmpDebugEvent =
  /** A reply for a call that had already timed out or been aborted. */
  | { kind: 'late-reply'; id: number; command: string; reply: QmpReturn | QmpErrorReply }
  /** A reply whose id matches no call this client made (QMP spec 2.4: clients drop these). */
  | { kind: 'unknown-reply'; reply: QmpReturn | QmpErrorReply };

export interface QmpConnectOptions extends QmpCallOptions {
  /**
   * Bound on each answer once connected (greeting, qmp_capabilities), and the default bound of
   * every command on this connection (a call's own `timeoutMs` wins).
   */
  answerTimeoutMs?: number;
  /** Receives dropped replies; must not throw (exceptions are swallowed). */
  onDebug?: (event: QmpDebugEvent) => void;
  /** Longest accepted line from QEMU (default 16 MiB). */
  maxLineBytes?: number;
}

interface Pending {
  command: string;
  args: Record<string, unknown> | undefined;
  succeed(value: unknown): void;
  fail(err: QmpError): void;
}

type HandshakePhase = 'connect' | 'greeting' | 'negotiation';

export class QmpClient {
  readonly socketPath: string;
  /** Resolves once the connection is fully down (socket closed). Never rejects. */
  readonly closed: Promise<void>;
  #state: QmpClientState = 'connecting';
  #greeting: QmpGreeting | undefined;
  #transport: QmpTransport;
  #pending = new Map<number, Pending>();
  #abandoned = new Map<number, string>();
  #nextId = 1;
  #streams = new Set<QmpEventStream>();
  #downReason: QmpError | undefined;
  #resolveClosed!: () => void;
  #onDebug: ((event: QmpDebugEvent) => void) | undefined;
  #handshake: { connected(): void; greeted(): void; failed(reason: QmpError): void } | undefined;
  #onDrained: (() => void) | undefined;
  readonly #commandTimeoutMs: number;

  private constructor(socketPath: string, opts: QmpConnectOptions) {
    this.socketPath = socketPath;
    this.#onDebug = opts.onDebug;
    this.#commandTimeoutMs = opts.answerTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.closed = new Promise<void>((resolve) => (this.#resolveClosed = resolve));
    this.#transport = new QmpTransport(
      socketPath,
      {
        connected: () => this.#handshake?.connected(),
        message: (raw) => this.#onMessage(raw),
        down: (reason) => this.#shutdown(reason, false),
        closed: () => {
          this.#shutdown(new QmpDisconnectedError('QEMU closed the monitor connection'), false);
          this.#state = 'closed';
          this.#resolveClosed();
        },
      },
      { maxLineBytes: opts.maxLineBytes },
    );
  }

  /**
   * Connects to a QMP unix socket, reads the greeting and negotiates capabilities (spec 4).
   * `timeoutMs` (default 10 s) bounds getting in: while QEMU's queue of waiting connections is
   * full (EAGAIN: other clients wait for the monitor, which serves one at a time) the connect is
   * tried again until then. `answerTimeoutMs`, when given, bounds each answer once connected
   * (the greeting, qmp_capabilities) and is the default bound of every command on the connection;
   * without it the handshake ends within `timeoutMs` and commands default to 30 s.
   * @throws {QmpConnectError} socket missing/refused, or QEMU hung up before the handshake finished.
   * @throws {QmpTimeoutError} `stage` says which wait expired: `busy` (the queue stayed full),
   *   `connect`, `greeting` (connected, but QEMU is stopped or hung, or another client holds the
   *   monitor), `negotiation`.
   * @throws {QmpProtocolError} the peer's greeting or reply is not QMP.
   * @throws {QmpCommandError} QEMU refused `qmp_capabilities`.
   * @throws {QmpAbortedError} `signal` aborted.
   */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const { signal } = opts;
    const boundMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const deadline = Date.now() + boundMs;
    let pauseMs = BUSY_FIRST_PAUSE_MS;
    for (;;) {
      try {
        return await QmpClient.#connectOnce(socketPath, opts, deadline, boundMs);
      } catch (err) {
        if (!(err instanceof QmpConnectError) || (err.cause as NodeJS.ErrnoException | undefined)?.code !== 'EAGAIN') throw err;
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new QmpTimeoutError(
            `the monitor ${socketPath} did not take the connection within ${boundMs} ms: its queue of waiting connections stayed full ` +
              '(QEMU is not accepting: stopped or hung, or other clients are waiting for the monitor, which serves one at a time)',
            { cause: err, stage: 'busy', boundMs },
          );
        }
        // Backoff with jitter, so the clients waiting for one monitor do not retry in step.
        await pause(Math.min(pauseMs * (0.5 + Math.random()), left), signal, socketPath);
        pauseMs = Math.min(pauseMs * 2, BUSY_MAX_PAUSE_MS);
      }
    }
  }

  /** One attempt: connect, greeting, negotiation, each phase bounded as `connect()` says. */
  static #connectOnce(socketPath: string, opts: QmpConnectOptions, deadline: number, connectBoundMs: number): Promise<QmpClient> {
    const { signal } = opts;
    if (signal?.aborted) {
      return Promise.reject(new QmpAbortedError(`connect to ${socketPath} aborted`, { cause: signal.reason }));
    }
    return new Promise<QmpClient>((resolve, reject) => {
      let phase: HandshakePhase = 'connect';
      let done = false;
      let timer: NodeJS.Timeout | undefined;
      const client = new QmpClient(socketPath, opts);
      const finish = (err?: QmpError): void => {
        if (done) return;
        done = true;
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        client.#handshake = undefined;
        if (!err) {
          client.#state = 'running';
          resolve(client);
          return;
        }
        client.#shutdown(err, false);
        reject(handshakeError(err, socketPath, phase));
      };
      const onAbort = (): void =>
        finish(new QmpAbortedError(`connect to ${socketPath} aborted`, { cause: signal?.reason }));
      /** (Re)arms the bound of the phase that starts now: `ms` from now, named `boundMs` in words. */
      const arm = (ms: number, boundMs: number): void => {
        if (timer) clearTimeout(timer);
        timer = Number.isFinite(ms)
          ? setTimeout(() => finish(new QmpTimeoutError(timeoutMessage(socketPath, phase, boundMs), { stage: phase, boundMs })), Math.max(0, ms))
          : undefined;
      };
      /** An answer's bound: answerTimeoutMs when given, else what is left of the connect bound. */
      const armAnswer = (): void => {
        if (opts.answerTimeoutMs !== undefined) arm(opts.answerTimeoutMs, opts.answerTimeoutMs);
        else arm(deadline - Date.now(), connectBoundMs);
      };
      arm(deadline - Date.now(), connectBoundMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      client.#handshake = {
        connected: () => {
          phase = 'greeting';
          armAnswer();
        },
        greeted: () => {
          phase = 'negotiation';
          armAnswer();
          // Spec 4: until qmp_capabilities succeeds only it is allowed and no events are sent.
          // We do not enable "oob": in-band execution keeps replies in issue order.
          client.#call('qmp_capabilities', undefined, { timeoutMs: Infinity }).then(
            () => finish(),
            (err: QmpError) => finish(err),
          );
        },
        failed: (reason) => finish(reason),
      };
    });
  }

  /** Current lifecycle state. */
  get state(): QmpClientState {
    return this.#state;
  }

  /** The server's greeting (QEMU version, capabilities); set once connected. */
  get greeting(): QmpGreeting | undefined {
    return this.#greeting;
  }

  /** Calls still waiting for a reply. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /**
   * Runs a QMP command and resolves with its `return` value, unvalidated (`unknown`).
   * On timeout or abort QEMU may still execute the command; its late reply is dropped.
   * @throws {QmpCommandError} QEMU answered with an error.
   * @throws {QmpTimeoutError} no reply within `timeoutMs` (default: the connection's
   *   `answerTimeoutMs`, else 30 s).
   * @throws {QmpAbortedError} `signal` aborted.
   * @throws {QmpDisconnectedError} the connection went down before the reply.
   * @throws {QmpStateError} the client is closing or closed.
   */
  execute(command: string, args?: Record<string, unknown>, opts: QmpCallOptions = {}): Promise<unknown> {
    if (this.#state !== 'running') {
      return Promise.reject(new QmpStateError(`cannot execute '${command}': QMP client is ${this.#state}`));
    }
    return this.#call(command, args, opts);
  }

  /**
   * Runs an HMP command line through `human-monitor-command` and returns its text output.
   * HMP reports most failures as text, not as a QMP error.
   * @throws everything {@link execute} throws; {QmpProtocolError} if the return is not a string.
   */
  async hmp(commandLine: string, opts: QmpCallOptions = {}): Promise<string> {
    const out = await this.execute('human-monitor-command', { 'command-line': commandLine }, opts);
    return expectString(out, 'human-monitor-command return');
  }

  /**
   * Registers a new event consumer now; create it *before* sending the command whose event
   * you wait for. See {@link QmpEventStream} for queue bounds and end-of-stream behaviour.
   * @throws {QmpStateError} if the connection is already down.
   */
  events(opts: QmpEventStreamOptions = {}): QmpEventStream {
    if (this.#downReason || this.#state === 'closed') {
      throw new QmpStateError(`cannot subscribe to events: QMP client is ${this.#state}`);
    }
    const stream: QmpEventStream = new QmpEventStream(opts, () => this.#streams.delete(stream));
    if (!stream.ended) this.#streams.add(stream);
    return stream;
  }

  /**
   * Stops accepting calls, waits up to `timeoutMs` (default 5 s) for in-flight calls, rejects
   * what is left with QmpDisconnectedError, then ends the socket. Resolves when fully closed;
   * never rejects. Idempotent.
   */
  close(opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#state === 'running') {
      this.#state = 'closing';
      const boundMs = opts.timeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
      void this.#drained(boundMs).then(() => {
        const reason =
          this.#pending.size === 0
            ? new QmpDisconnectedError('QMP client closed')
            : new QmpDisconnectedError(`QMP client closed; in-flight calls did not finish within ${boundMs} ms`);
        this.#shutdown(reason, true);
      });
    }
    return this.closed;
  }

  /**
   * Aborts everything now: pending calls reject with QmpDisconnectedError (`err` is kept in its
   * `cause` chain), event streams end, the socket is destroyed. Idempotent; never throws.
   */
  destroy(err?: unknown): void {
    const reason =
      err instanceof QmpError
        ? err
        : new QmpDisconnectedError(`QMP client destroyed${err instanceof Error ? `: ${err.message}` : ''}`, { cause: err });
    this.#shutdown(reason, false);
  }

  #call(command: string, args: Record<string, unknown> | undefined, opts: QmpCallOptions): Promise<unknown> {
    const { signal } = opts;
    if (signal?.aborted) {
      return Promise.reject(new QmpAbortedError(`'${command}' aborted before it was sent`, { cause: signal.reason }));
    }
    const timeoutMs = opts.timeoutMs ?? this.#commandTimeoutMs;
    // Spec 2.3: the id may be any JSON value; a per-connection counter is what the spec suggests.
    const id = this.#nextId++;
    return new Promise<unknown>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const settle = (outcome: () => void): boolean => {
        if (this.#pending.get(id) !== entry) return false;
        this.#pending.delete(id);
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        outcome();
        if (this.#pending.size === 0) this.#onDrained?.();
        return true;
      };
      const abandon = (err: QmpError): void => {
        if (settle(() => reject(err))) this.#rememberAbandoned(id, command);
      };
      const entry: Pending = {
        command,
        args,
        succeed: (value) => settle(() => resolve(value)),
        fail: (err) => settle(() => reject(err)),
      };
      const onAbort = (): void =>
        abandon(new QmpAbortedError(`'${command}' aborted; QEMU may still execute it`, { cause: signal?.reason }));
      this.#pending.set(id, entry);
      if (Number.isFinite(timeoutMs)) {
        timer = setTimeout(
          () => abandon(new QmpTimeoutError(`no reply to '${command}' within ${timeoutMs} ms; QEMU may still execute it`, { stage: 'reply', boundMs: timeoutMs })),
          Math.max(0, timeoutMs),
        );
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        this.#transport.send(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id });
      } catch (err) {
        entry.fail(err instanceof QmpError ? err : new QmpStateError(`cannot send '${command}': ${String(err)}`, { cause: err }));
      }
    });
  }

  #onMessage(raw: unknown): void {
    if (!this.#greeting) {
      // Spec 2.2: the greeting is the first thing the server sends; anything else is not QMP.
      try {
        this.#greeting = parseGreeting(raw);
      } catch (err) {
        this.#shutdown(err as QmpError, false);
        return;
      }
      this.#handshake?.greeted();
      return;
    }
    let msg: QmpServerMessage;
    try {
      msg = parseServerMessage(raw);
    } catch (err) {
      this.#shutdown(err as QmpError, false);
      return;
    }
    if ('QMP' in msg) {
      this.#shutdown(new QmpProtocolError('QEMU sent a second QMP greeting'), false);
      return;
    }
    if ('event' in msg) {
      for (const stream of this.#streams) stream.deliver(msg);
      return;
    }
    if (!('id' in msg)) {
      // Spec 2.4.2 NOTE: QEMU omits the id when it failed before reading it, so the reply
      // cannot be matched to a call. Like qemu.qmp we give up on the connection.
      this.#shutdown(new QmpProtocolError(`QEMU sent a reply without id: ${preview(raw)}`), false);
      return;
    }
    const entry = typeof msg.id === 'number' ? this.#pending.get(msg.id) : undefined;
    if (!entry) {
      // Spec 2.4: "Clients should drop all the responses that have an unknown id field."
      const command = typeof msg.id === 'number' ? this.#abandoned.get(msg.id) : undefined;
      if (command !== undefined) {
        this.#abandoned.delete(msg.id as number);
        this.#debug({ kind: 'late-reply', id: msg.id as number, command, reply: msg });
      } else {
        this.#debug({ kind: 'unknown-reply', reply: msg });
      }
      return;
    }
    if ('error' in msg) entry.fail(new QmpCommandError(entry.command, entry.args, msg.error.class, msg.error.desc));
    else entry.succeed(msg.return);
  }

  /** Takes the connection down once: rejects pending calls, ends streams, closes the socket. */
  #shutdown(reason: QmpError, graceful: boolean): void {
    if (this.#downReason) return;
    this.#downReason = reason;
    if (this.#state !== 'closed') this.#state = 'closing';
    this.#handshake?.failed(reason);
    for (const entry of [...this.#pending.values()]) {
      entry.fail(new QmpDisconnectedError(`no reply to '${entry.command}': ${reason.message}`, { cause: reason }));
    }
    this.#abandoned.clear();
    this.#onDrained?.();
    const streamEnd = new QmpDisconnectedError(`QMP connection closed: ${reason.message}`, { cause: reason });
    for (const stream of [...this.#streams]) stream.end(streamEnd);
    if (graceful) this.#transport.end(SOCKET_END_GRACE_MS);
    else this.#transport.destroy();
  }

  /** Resolves when no call is pending or after `boundMs`, whichever comes first. */
  #drained(boundMs: number): Promise<void> {
    if (this.#pending.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#onDrained = undefined;
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, boundMs));
      this.#onDrained = done;
    });
  }

  #rememberAbandoned(id: number, command: string): void {
    if (this.#downReason) return;
    this.#abandoned.set(id, command);
    if (this.#abandoned.size > MAX_ABANDONED_IDS) {
      const oldest = this.#abandoned.keys().next();
      if (!oldest.done) this.#abandoned.delete(oldest.value);
    }
  }

  #debug(event: QmpDebugEvent): void {
    try {
      this.#onDebug?.(event);
    } catch {
      // A diagnostics hook must not break the connection.
    }
  }
}

function timeoutMessage(socketPath: string, phase: HandshakePhase, timeoutMs: number): string {
  switch (phase) {
    case 'connect':
      return `could not connect to QMP socket ${socketPath} within ${timeoutMs} ms`;
    case 'greeting':
      return (
        `connected to ${socketPath} but QEMU sent no QMP greeting within ${timeoutMs} ms: ` +
        'QEMU is stopped or hung, or the monitor is busy with another client (a QMP monitor serves one client at a time)'
      );
    case 'negotiation':
      return `QEMU did not answer qmp_capabilities on ${socketPath} within ${timeoutMs} ms`;
  }
}

/** Waits `ms`, or rejects with QmpAbortedError when `signal` aborts first. */
function pause(ms: number, signal: AbortSignal | undefined, socketPath: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new QmpAbortedError(`connect to ${socketPath} aborted`, { cause: signal?.reason }));
    };
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, Math.max(0, ms));
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The error `connect()` rejects with: a hang-up during the handshake is a failed connect. */
function handshakeError(err: QmpError, socketPath: string, phase: HandshakePhase): QmpError {
  if (err instanceof QmpDisconnectedError) {
    return new QmpConnectError(`QEMU closed the monitor ${socketPath} during the QMP handshake (${phase})`, { cause: err });
  }
  return err;
}
