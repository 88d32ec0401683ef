/**
 * A client of virtmemd's RPC socket (src/http/rpc-server.ts has the protocol): one long-lived
 * connection, calls may overlap, each bounded. The answers are the HTTP API's, as
 * DaemonAnswer. When the connection breaks, every open call fails with DaemonUnreachableError
 * and the next call connects again.
 */
import { createConnection, type Socket } from 'node:net';
import { LengthFrames, LENGTH_WORD_BYTES, lengthFrame } from '../../util/length-frames.js';
import { DaemonUnreachableError, MAX_ANSWER_BYTES, type DaemonAnswer } from './http-client.js';

/** Bound on connecting (default for every call's own bound too). */
const CONNECT_MS = 10_000;
const CALL_MS = 30_000;

interface Open {
  resolve(a: DaemonAnswer): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class DaemonRpcClient {
  #sock: Socket | null = null;
  #connecting: Promise<Socket> | null = null;
  #nextId = 1;
  readonly #open = new Map<number, Open>();

  constructor(readonly socketPath: string) {}

  /**
   * One call: `path` below /api/v1 with its query, `body` any JSON for PUT and POST.
   * @throws DaemonUnreachableError when the daemon cannot be reached, the connection breaks, or no answer comes within `timeoutMs`
   */
  call(method: 'GET' | 'PUT' | 'POST', path: string, body?: unknown, timeoutMs = CALL_MS): Promise<DaemonAnswer> {
    // Not async: a call on an open connection costs no extra promise hops.
    const sock = this.#sock;
    if (!sock) return this.#connect(Math.min(timeoutMs, CONNECT_MS)).then((s) => this.#send(s, method, path, body, timeoutMs));
    return this.#send(sock, method, path, body, timeoutMs);
  }

  #send(sock: Socket, method: string, path: string, body: unknown, timeoutMs: number): Promise<DaemonAnswer> {
    if (sock.destroyed) return Promise.reject(new DaemonUnreachableError('virtmemd closed the connection'));
    const id = this.#nextId++;
    let frame: Buffer;
    try {
      frame = lengthFrame(JSON.stringify(body === undefined ? { id, method, path } : { id, method, path, body }));
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return new Promise<DaemonAnswer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#open.delete(id);
        reject(new DaemonUnreachableError(`virtmemd did not answer within ${timeoutMs} ms`, { timedOut: true }));
      }, timeoutMs);
      this.#open.set(id, { resolve, reject, timer });
      sock.write(frame);
    });
  }

  /** Closes the connection; open calls fail. */
  close(): void {
    this.#sock?.destroy();
    this.#sock = null;
  }

  #connect(timeoutMs: number): Promise<Socket> {
    this.#connecting ??= new Promise<Socket>((resolve, reject) => {
      const sock = createConnection(this.socketPath);
      const timer = setTimeout(() => { sock.destroy(); reject(new DaemonUnreachableError(`virtmemd (${this.socketPath}) did not take the connection within ${timeoutMs} ms`, { timedOut: true })); }, timeoutMs);
      const frames = new LengthFrames({
        minBytes: LENGTH_WORD_BYTES + 2,
        maxBytes: LENGTH_WORD_BYTES + MAX_ANSWER_BYTES,
        outOfBounds: (len) => new DaemonUnreachableError(`virtmemd sent a frame of ${len} bytes, outside the bounds of an answer`),
      });
      sock.once('connect', () => { clearTimeout(timer); this.#sock = sock; resolve(sock); });
      sock.on('data', (chunk: Buffer) => {
        try {
          for (const f of frames.push(chunk)) this.#deliver(f);
        } catch (err) {
          sock.destroy(err as Error);
        }
      });
      sock.once('error', (err) => { clearTimeout(timer); reject(new DaemonUnreachableError(`virtmemd not reachable: ${err.message}`, { cause: err })); });
      sock.once('close', () => {
        if (this.#sock === sock) this.#sock = null;
        for (const [id, o] of this.#open) { clearTimeout(o.timer); o.reject(new DaemonUnreachableError('virtmemd closed the connection before it answered')); this.#open.delete(id); }
      });
    }).finally(() => { this.#connecting = null; });
    return this.#connecting;
  }

  #deliver(frame: Buffer): void {
    const text = frame.subarray(LENGTH_WORD_BYTES).toString('utf8');
    const doc = JSON.parse(text) as { id: number | null; status: number; body: unknown; headers?: Record<string, string> };
    const o = doc.id === null ? undefined : this.#open.get(doc.id);
    if (!o) {
      // An answer to no call of ours: the daemon could not read a request; it names why.
      if (doc.id === null) throw new DaemonUnreachableError(`virtmemd refused a request it could not read: ${text.slice(0, 300)}`);
      return; // a call that timed out meanwhile
    }
    this.#open.delete(doc.id!);
    clearTimeout(o.timer);
    o.resolve({ status: doc.status, headers: doc.headers ?? {}, body: doc.body, text });
  }
}
