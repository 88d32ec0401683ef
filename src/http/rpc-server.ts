/**
 * virtmemd's RPC socket: the API of /api/v1 without HTTP, for programs that make many calls on
 * one long-lived connection (libvirt's clients talk to libvirtd the same way). Same routes,
 * same validation, same answers and errors as HTTP (api.ts callApi); only the framing differs.
 * On a unix socket beside virtmemd.sock, with its mode and group: the file's mode is the access
 * control, as on the HTTP unix socket.
 *
 * Framing: every message is a 4-byte big-endian length (counting itself) and UTF-8 JSON.
 *   request  {"id": N, "method": "GET"|"PUT"|"POST", "path": "/api/v1/...[?query]", "body"?: JSON}
 *   answer   {"id": N, "status": HTTP status, "body": JSON, "headers"?: {"location"|"allow": ...}}
 * `id` is the client's (an integer, 0 to 2^53-1) and comes back with the answer. Requests on
 * one connection may overlap; answers come as each is ready. A request that cannot be read
 * (bad JSON, a missing or wrong field) is answered 400 with id null when it has none; a length
 * word out of bounds ends the connection after a 413 (the stream cannot be trusted after it).
 * Every request has the HTTP API's bound (REQUEST_MS, longer by the wait a client asks for);
 * a client that goes away aborts its requests.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { unlink } from 'node:fs/promises';
import type { Daemon } from '../daemon/daemon.js';
import { apiRouter, callApi, type ApiAnswer } from './api.js';
import { BACKSTOP_GRACE_MS, HttpError, toHttpError, unansweredError } from './errors.js';
import { listenUnix, type UnixAddress } from './unix-listen.js';
import { REQUEST_MS, lazyBoundSignal, requestBoundText } from '../driver/bounds.js';
import { LengthFrames, LENGTH_WORD_BYTES, lengthFrame } from '../util/length-frames.js';

/** The largest request: the HTTP API's body bound and room for the envelope. */
export const RPC_MAX_REQUEST_BYTES = 64 * 1024 + 4 * 1024;
/** Requests one connection may have open at once; more are answered 503 BUSY. */
export const RPC_MAX_PENDING = 64;
/** A client this far behind reading its answers is dropped rather than buffered without limit. */
const MAX_BACKLOG_BYTES = 16 << 20;
const MAX_PATH = 4096;
/** Strict UTF-8 (a request that is not is refused); one decoder for every request. */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

export interface RpcServerOptions {
  daemon: Daemon;
  listen: UnixAddress;
  /** Bound on answering a request (default REQUEST_MS). */
  requestTimeoutMs?: number;
}

/** A request as it came, checked. */
interface RpcRequest {
  id: number;
  method: 'GET' | 'PUT' | 'POST';
  path: string;
  body: string;
}

/**
 * One frame's JSON as a request.
 * @throws HttpError BAD_JSON / MISSING_FIELD / INVALID_FIELD / UNKNOWN_FIELD, with the id when it could be read
 */
export function parseRpcRequest(frame: Buffer): RpcRequest {
  let doc: unknown;
  try {
    doc = JSON.parse(UTF8.decode(frame.subarray(LENGTH_WORD_BYTES)));
  } catch (err) {
    throw new HttpError(400, 'BAD_JSON', `request is not valid UTF-8 JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new HttpError(400, 'BAD_JSON', 'request must be a JSON object');
  const o = doc as Record<string, unknown>;
  const id = o.id;
  const withId = (e: HttpError): HttpError => Object.assign(e, { rpcId: typeof id === 'number' && Number.isSafeInteger(id) && id >= 0 ? id : null });
  for (const k of Object.keys(o)) {
    if (!['id', 'method', 'path', 'body'].includes(k)) throw withId(new HttpError(400, 'UNKNOWN_FIELD', `unknown field '${k.slice(0, 64).replace(/[^\x20-\x7e]/g, '?')}' (known: id, method, path, body)`, k.slice(0, 64)));
  }
  if (id === undefined) throw withId(new HttpError(400, 'MISSING_FIELD', "missing field 'id'", 'id'));
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) throw withId(new HttpError(400, 'INVALID_FIELD', "field 'id': expected an integer from 0 to 2^53-1", 'id'));
  const method = o.method;
  if (method !== 'GET' && method !== 'PUT' && method !== 'POST') throw withId(new HttpError(400, 'INVALID_FIELD', "field 'method': expected GET, PUT or POST", 'method'));
  const path = o.path;
  if (typeof path !== 'string' || !path.startsWith('/') || path.length > MAX_PATH) throw withId(new HttpError(400, 'INVALID_FIELD', `field 'path': expected a path starting with '/', at most ${MAX_PATH} characters`, 'path'));
  if (o.body !== undefined && method === 'GET') throw withId(new HttpError(400, 'INVALID_FIELD', "field 'body': a GET request has no body", 'body'));
  return { id, method, path, body: o.body === undefined ? '' : JSON.stringify(o.body) };
}

/** An error as its answer (the route's allowed methods with a 405, as HTTP's allow header). */
function errorAnswer(err: unknown): ApiAnswer {
  const e = toHttpError(err);
  const allow = (err as { allow?: string }).allow;
  return { status: e.status, body: e.body(), ...(allow ? { headers: { allow } } : {}) };
}

export class RpcServer {
  readonly #server: Server;
  readonly #router = apiRouter();
  readonly #sockets = new Set<Socket>();

  constructor(private readonly opts: RpcServerOptions) {
    this.#server = createServer((s) => this.#connection(s));
    this.#server.maxConnections = 256;
  }

  get path(): string {
    return this.opts.listen.path;
  }

  /** @throws HttpError INTERNAL when another daemon answers there, or listening fails */
  async start(): Promise<void> {
    await listenUnix(this.#server, this.opts.listen);
  }

  /** Stops accepting, ends every connection (their requests are aborted), removes the socket. */
  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await unlink(this.opts.listen.path).catch(() => {});
  }

  #connection(sock: Socket): void {
    this.#sockets.add(sock);
    const gone = new AbortController();
    let pending = 0;
    const frames = new LengthFrames({
      minBytes: LENGTH_WORD_BYTES + 2,
      maxBytes: RPC_MAX_REQUEST_BYTES,
      outOfBounds: (len, tooShort) => new HttpError(tooShort ? 400 : 413, tooShort ? 'BAD_JSON' : 'BODY_TOO_LARGE',
        tooShort ? `frame length ${len} is shorter than a request` : `request of ${len} bytes is larger than the ${RPC_MAX_REQUEST_BYTES} bytes allowed`),
    });
    const send = (id: number | null, a: ApiAnswer): void => {
      if (sock.destroyed) return;
      if (sock.writableLength > MAX_BACKLOG_BYTES) { sock.destroy(); return; }
      sock.write(lengthFrame(JSON.stringify(a.headers ? { id, status: a.status, body: a.body, headers: a.headers } : { id, status: a.status, body: a.body })));
    };
    const fail = (id: number | null, err: unknown): void => send(id, errorAnswer(err));
    sock.on('data', (chunk: Buffer) => {
      let list: Buffer[];
      try {
        list = frames.push(chunk);
      } catch (err) {
        fail(null, err);
        sock.end();
        sock.pause();
        return;
      }
      for (const f of list) {
        let r: RpcRequest;
        try {
          r = parseRpcRequest(f);
        } catch (err) {
          fail((err as { rpcId?: number | null }).rpcId ?? null, err);
          continue;
        }
        if (pending >= RPC_MAX_PENDING) { fail(r.id, new HttpError(503, 'BUSY', `more than ${RPC_MAX_PENDING} requests open on this connection: wait for answers first`)); continue; }
        pending++;
        const id = r.id;
        this.#answer(r, gone.signal, (a) => { pending--; send(id, a); });
      }
    });
    sock.on('error', () => {});
    sock.once('close', () => { this.#sockets.delete(sock); gone.abort(new Error('the client went away')); });
  }

  /**
   * Answers `r` through `reply`, exactly once, never with a rejection: errors become their
   * answers, and a handler that ignores its bound is answered 504 by the backstop.
   */
  #answer(r: RpcRequest, gone: AbortSignal, reply: (a: ApiAnswer) => void): void {
    const d = this.opts.daemon;
    d.counters.httpRequests++;
    const boundMs = this.opts.requestTimeoutMs ?? REQUEST_MS;
    const bound = lazyBoundSignal(boundMs, requestBoundText(boundMs), gone);
    let backstop: NodeJS.Timeout | undefined;
    let answered = false;
    const once = (a: ApiAnswer): void => {
      if (answered) return;
      answered = true;
      clearTimeout(backstop);
      bound.clear();
      reply(a);
    };
    const answerWithin = (ms: number): void => {
      clearTimeout(backstop);
      backstop = setTimeout(() => once({ status: 504, body: unansweredError(ms).body() }), ms + BACKSTOP_GRACE_MS);
      backstop.unref();
    };
    answerWithin(boundMs);
    try {
      const q = r.path.indexOf('?');
      const pathname = q < 0 ? r.path : r.path.slice(0, q);
      const query = new URLSearchParams(q < 0 ? '' : r.path.slice(q + 1));
      callApi(this.#router, d, r.method, pathname, { query, body: r.body, get signal() { return bound.signal; }, waitsLonger: (ms) => answerWithin(boundMs + ms) })
        .then(once, (err: unknown) => once(errorAnswer(err)));
    } catch (err) {
      once(errorAnswer(err));
    }
  }
}
