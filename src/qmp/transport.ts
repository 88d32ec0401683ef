/**
 * Thin socket shell under QmpClient (the counterpart of qemu.qmp's protocol.py): owns the unix
 * socket and the line decoder, hands up parsed JSON, and reports exactly once that the
 * connection is down and, later, that the socket is fully closed. Knows nothing of commands.
 */

import net from 'node:net';
import { QmpConnectError, QmpDisconnectedError, QmpStateError, type QmpError } from './errors.js';
import { QmpLineDecoder, encodeCommand } from './framing.js';

export interface QmpTransportHandlers {
  /** The socket connected (the greeting is still to come). */
  connected(): void;
  /** One parsed JSON message, in arrival order. */
  message(raw: unknown): void;
  /** Called at most once: the peer hung up, the socket failed, or the stream broke the protocol. */
  down(reason: QmpError): void;
  /** The socket is fully closed; called once, after `down` if that was called. */
  closed(): void;
}

export class QmpTransport {
  readonly socketPath: string;
  #socket: net.Socket;
  #handlers: QmpTransportHandlers;
  #decoder: QmpLineDecoder;
  #connected = false;
  #down = false;
  #endTimer: NodeJS.Timeout | undefined;

  constructor(socketPath: string, handlers: QmpTransportHandlers, opts: { maxLineBytes?: number } = {}) {
    this.socketPath = socketPath;
    this.#handlers = handlers;
    this.#decoder = new QmpLineDecoder({ maxLineBytes: opts.maxLineBytes });
    this.#socket = net.createConnection({ path: socketPath });
    this.#socket.on('connect', () => {
      this.#connected = true;
      if (!this.#down) handlers.connected();
    });
    this.#socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    // With allowHalfOpen off (the default), 'end' means QEMU closed its side; Node ends ours.
    this.#socket.on('end', () => this.#goDown(new QmpDisconnectedError('QEMU closed the monitor connection')));
    this.#socket.on('error', (err: NodeJS.ErrnoException) => this.#goDown(this.#socketError(err)));
    this.#socket.on('close', () => {
      if (this.#endTimer) clearTimeout(this.#endTimer);
      this.#endTimer = undefined;
      this.#goDown(new QmpDisconnectedError('QEMU closed the monitor connection'));
      handlers.closed();
    });
  }

  /**
   * Writes one command line.
   * @throws {QmpStateError} if the connection is already down.
   * @throws {TypeError} if `msg` is not JSON-serialisable.
   */
  send(msg: object): void {
    if (this.#down) throw new QmpStateError('QMP connection is down');
    // Write errors (EPIPE, ECONNRESET) surface as the socket's 'error' event and take it down.
    this.#socket.write(encodeCommand(msg));
  }

  /** Half-closes politely; destroys the socket if the peer has not closed after `graceMs`. */
  end(graceMs: number): void {
    this.#down = true;
    if (this.#socket.destroyed) return;
    this.#socket.end();
    this.#endTimer ??= setTimeout(() => this.#socket.destroy(), graceMs);
  }

  /** Drops the connection now. Idempotent. */
  destroy(): void {
    this.#down = true;
    this.#socket.destroy();
  }

  #onData(chunk: Buffer): void {
    if (this.#down) return; // after a local close or protocol error nothing more is delivered
    const { messages, error } = this.#decoder.feed(chunk);
    // Messages before a bad line are still delivered, so replies that did arrive settle normally.
    for (const msg of messages) {
      if (this.#down) return;
      this.#handlers.message(msg);
    }
    if (error) {
      this.#goDown(error);
      this.#socket.destroy();
    }
  }

  #goDown(reason: QmpError): void {
    if (this.#down) return;
    this.#down = true;
    this.#handlers.down(reason);
  }

  #socketError(err: NodeJS.ErrnoException): QmpError {
    if (this.#connected) {
      return new QmpDisconnectedError(`QEMU closed the monitor connection (${err.code ?? err.message})`, { cause: err });
    }
    const hint =
      err.code === 'ENOENT'
        ? 'the socket does not exist; check that QEMU runs with this -chardev socket path'
        : err.code === 'ECONNREFUSED'
          ? 'nothing listens on it; QEMU has probably exited'
          : err.code === 'EACCES'
            ? 'permission denied on the socket'
            : err.code === 'EAGAIN'
              ? 'its queue of waiting connections is full (the monitor serves one client at a time)'
              : err.message;
    return new QmpConnectError(`cannot connect to QMP socket ${this.socketPath}: ${hint}`, { cause: err });
  }
}
