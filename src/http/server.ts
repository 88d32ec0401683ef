/**
 * virtmemd's HTTP server (node:http): on a unix socket (mode 0600) by default, on loopback TCP
 * when asked (always with a token). Every request passes the guard (Host, Origin, token), has
 * a bounded body and a bounded time, and gets a JSON answer; errors name the problem.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { unlink } from 'node:fs/promises';
import { LOCAL, type Daemon, type DaemonEvent } from '../daemon/daemon.js';
import { API_PREFIX, apiRouter, callApi } from './api.js';
import { BACKSTOP_GRACE_MS, HttpError, toHttpError, unansweredError } from './errors.js';
import { checkRequest, tokenEquals, type Listener } from './guard.js';
import { formatMetrics, METRICS_CONTENT_TYPE } from './metrics.js';
import { IDLE_CONNECTION_MS, REQUEST_MS, lazyBoundSignal, requestBoundText } from '../driver/bounds.js';
import { listenOn, listenUnix, type UnixAddress } from './unix-listen.js';
import { InputTooLargeError, readStreamBounded } from '../util/bounded-read.js';

export type ListenAddress = ({ kind: 'unix' } & UnixAddress) | { kind: 'tcp'; host: string; port: number };

/** Serves other files (the dashboard); returns false when `pathname` is not one of them. */
export type StaticFiles = (req: IncomingMessage, res: ServerResponse, pathname: string) => boolean;

export interface ApiServerOptions {
  daemon: Daemon;
  listen: ListenAddress;
  /** Required on TCP; optional on the unix socket. */
  token: string | null;
  staticFiles?: StaticFiles;
  /** Largest accepted request body (default 64 KiB). */
  maxBodyBytes?: number;
  /**
   * Bound on receiving a whole request (headers and body) from a client, and on answering it
   * after it arrived (default REQUEST_MS, driver/bounds.ts).
   */
  requestTimeoutMs?: number;
}

const JSON_HEADERS = { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' };
const SSE_PING_MS = 15_000;
/** An event stream client this far behind is dropped rather than buffered without limit. */
const SSE_MAX_BACKLOG_BYTES = 1 << 20;

export class ApiServer {
  readonly #server: Server;
  readonly #router = apiRouter();
  readonly #listener: Listener;
  readonly #sse = new Set<ServerResponse>();
  #address: ListenAddress;

  constructor(private readonly opts: ApiServerOptions) {
    if (opts.listen.kind === 'tcp') {
      if (!opts.token) throw new HttpError(500, 'INTERNAL', 'a TCP listener needs a token');
      if (!['127.0.0.1', '::1', 'localhost'].includes(opts.listen.host)) {
        throw new HttpError(500, 'INTERNAL', `refusing to listen on ${opts.listen.host}: only loopback addresses are allowed`);
      }
    }
    this.#address = opts.listen;
    this.#listener = { kind: opts.listen.kind, ...(opts.listen.kind === 'tcp' ? { port: opts.listen.port } : {}) };
    const timeout = opts.requestTimeoutMs ?? REQUEST_MS;
    // node checks these bounds every connectionsCheckingInterval (default 30 s, which would let
    // a trickling request live 40 s): check each second, so a request is cut close to its bound.
    this.#server = createServer({
      requestTimeout: timeout, headersTimeout: timeout, keepAliveTimeout: IDLE_CONNECTION_MS, connectionsCheckingInterval: Math.min(1_000, timeout),
    }, (req, res) => {
      void this.#handle(req, res);
    });
    // Slow clients: node answers 408 when a request is not complete within requestTimeout.
    this.#server.maxHeadersCount = 100;
  }

  /** Where the server listens (the TCP port is known after start when 0 was asked). */
  get address(): ListenAddress {
    return this.#address;
  }

  /**
   * Starts listening. A stale unix socket (no one answering) is replaced; a live one is not.
   * @throws HttpError INTERNAL when another daemon answers there, or listening fails
   */
  async start(): Promise<void> {
    const l = this.opts.listen;
    if (l.kind === 'unix') {
      await listenUnix(this.#server, l);
    } else {
      await listenOn(this.#server, () => this.#server.listen(l.port, l.host));
      const a = this.#server.address();
      if (a && typeof a === 'object') {
        this.#address = { kind: 'tcp', host: l.host, port: a.port };
        this.#listener.port = a.port;
      }
    }
  }

  /** Stops accepting, ends event streams, waits for open requests (bounded), removes the socket. */
  async close(): Promise<void> {
    for (const res of this.#sse) res.end();
    this.#sse.clear();
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { this.#server.closeAllConnections(); }, 2_000);
      this.#server.close(() => { clearTimeout(t); resolve(); });
      this.#server.closeIdleConnections();
    });
    if (this.opts.listen.kind === 'unix') await unlink(this.opts.listen.path).catch(() => {});
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const d = this.opts.daemon;
    d.counters.httpRequests++;
    // Every wait inside the request ends at its bound (the answer then names what did not
    // answer), or when the client goes away; a route may wait longer for an answer it was asked
    // to wait for (PUT memory's waitMs). The backstop answers if something ignored the signal.
    const boundMs = this.opts.requestTimeoutMs ?? REQUEST_MS;
    const gone = new AbortController();
    const bound = lazyBoundSignal(boundMs, requestBoundText(boundMs), gone.signal);
    let backstop: NodeJS.Timeout | undefined;
    const answerWithin = (ms: number): void => {
      clearTimeout(backstop);
      backstop = setTimeout(() => {
        if (res.headersSent) return; // an answer is on its way (or a stream is open)
        this.#json(res, 504, unansweredError(ms).body());
      }, ms + BACKSTOP_GRACE_MS);
      backstop.unref();
    };
    answerWithin(boundMs);
    res.once('close', () => { gone.abort(); bound.clear(); clearTimeout(backstop); });
    try {
      const url = req.url ?? '';
      if (!url.startsWith('/')) throw new HttpError(400, 'INVALID_FIELD', 'the request target must be a path', 'path');
      const q = url.indexOf('?');
      const pathname = q < 0 ? url : url.slice(0, q);
      const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
      const method = req.method ?? 'GET';

      // The dashboard's way in on TCP: /?token=T sets the cookie (HttpOnly, SameSite=Strict).
      if (pathname === '/' && query.has('token') && this.opts.token) {
        checkRequest({ listener: this.#listener, token: null, host: req.headers.host, origin: req.headers.origin, authorization: undefined, cookie: undefined });
        if (!tokenEquals(query.get('token') ?? '', this.opts.token)) throw new HttpError(401, 'UNAUTHORIZED', 'the token is wrong', 'query.token');
        res.writeHead(303, { location: '/', 'set-cookie': `virtmem_token=${this.opts.token}; HttpOnly; SameSite=Strict; Path=/`, 'cache-control': 'no-store' });
        res.end();
        return;
      }
      checkRequest({
        listener: this.#listener, token: this.opts.token, host: req.headers.host, origin: req.headers.origin,
        authorization: req.headers.authorization, cookie: req.headers.cookie,
      });

      if (pathname === '/metrics') {
        if (method !== 'GET' && method !== 'HEAD') throw Object.assign(new HttpError(405, 'METHOD_NOT_ALLOWED', `method ${method} is not allowed on /metrics (allowed: GET)`), { allow: 'GET' });
        const text = formatMetrics({
          guests: d.allModels().map(({ host, view }) => ({ host: host === LOCAL ? undefined : host, view })), host: d.hostMemory, nowS: Date.now() / 1000,
          remoteHosts: d.libvirtHosts().map((h) => d.libvirtHostDocument(h)),
          daemon: { startedAtS: d.startedAtS, operationsStarted: d.counters.operationsStarted, sseClients: this.#sse.size, httpRequests: d.counters.httpRequests },
        });
        res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE, 'cache-control': 'no-store' });
        res.end(method === 'HEAD' ? undefined : text);
        return;
      }
      if (pathname === API_PREFIX + '/events') {
        if (method !== 'GET') throw Object.assign(new HttpError(405, 'METHOD_NOT_ALLOWED', `method ${method} is not allowed on ${pathname} (allowed: GET)`), { allow: 'GET' });
        // An event stream stays open by design: no request bound, no backstop.
        clearTimeout(backstop);
        bound.clear();
        this.#openEvents(req, res);
        return;
      }
      if (pathname === API_PREFIX || pathname.startsWith(API_PREFIX + '/')) {
        this.#router.match(method, pathname.slice(API_PREFIX.length)); // 404/405 before a body is read
        let body = '';
        if (method === 'PUT' || method === 'POST') body = await this.#readBody(req);
        const answer = await callApi(this.#router, d, method, pathname, { query, body, get signal() { return bound.signal; }, waitsLonger: (ms) => answerWithin(boundMs + ms) });
        this.#json(res, answer.status, answer.body, answer.headers);
        return;
      }
      if (this.opts.staticFiles?.(req, res, pathname)) return;
      throw new HttpError(404, 'NOT_FOUND', `no such path: ${pathname.slice(0, 200)}`);
    } catch (err) {
      const e = toHttpError(err);
      const allow = (err as { allow?: string }).allow;
      if (res.writableEnded) return; // the backstop answered already
      if (res.headersSent) { res.destroy(); return; }
      this.#json(res, e.status, e.body(), {
        ...(allow ? { allow } : {}),
        ...(e.status === 401 ? { 'www-authenticate': 'Bearer realm="virtmemd"' } : {}),
        ...(e.code === 'BODY_TOO_LARGE' ? { connection: 'close' } : {}),
      });
    }
  }

  #json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (res.writableEnded || res.destroyed) return;
    const text = JSON.stringify(body) + '\n';
    res.writeHead(status, { ...JSON_HEADERS, 'content-length': String(Buffer.byteLength(text)), ...headers });
    res.end(text);
  }

  /**
   * The request body as text: JSON only, at most maxBodyBytes.
   * @throws HttpError BAD_CONTENT_TYPE (415), BODY_TOO_LARGE (413), BAD_JSON (400, not UTF-8)
   */
  #readBody(req: IncomingMessage): Promise<string> {
    const max = this.opts.maxBodyBytes ?? 65_536;
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/json') {
      req.resume();
      return Promise.reject(new HttpError(415, 'BAD_CONTENT_TYPE', `request body must be application/json, got '${type.slice(0, 60) || 'none'}'`, 'header.content-type'));
    }
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > max) {
      req.resume();
      return Promise.reject(new HttpError(413, 'BODY_TOO_LARGE', `request body of ${declared} bytes is larger than the ${max} bytes allowed`, 'body'));
    }
    // Bounded while reading; past the bound the rest is drained so the 413 still goes out
    // (with connection: close, which ends an endless body).
    return readStreamBounded(req, max, 'request body', 'a request body', { drainOnOverflow: true }).then(
      (bytes) => {
        try {
          return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
        } catch {
          throw new HttpError(400, 'BAD_JSON', 'request body is not valid UTF-8', 'body');
        }
      },
      (err: Error) => {
        if (err instanceof InputTooLargeError) throw new HttpError(413, 'BODY_TOO_LARGE', `request body is larger than the ${max} bytes allowed`, 'body');
        throw new HttpError(400, 'BAD_JSON', `request body could not be read: ${err.message}`, 'body');
      },
    );
  }

  #openEvents(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', connection: 'keep-alive' });
    res.write('retry: 2000\n: connected\n\n');
    this.#sse.add(res);
    this.opts.daemon.counters.sseClients = this.#sse.size;
    const send = (ev: DaemonEvent): void => {
      if (res.writableLength > SSE_MAX_BACKLOG_BYTES) { res.destroy(); return; }
      res.write(`event: ${ev.type}\ndata: ${JSON.stringify(ev.data)}\n\n`);
    };
    const off = this.opts.daemon.onEvent(send);
    const ping = setInterval(() => res.write(': ping\n\n'), SSE_PING_MS);
    ping.unref();
    req.socket.setTimeout(0);
    res.once('close', () => {
      off();
      clearInterval(ping);
      this.#sse.delete(res);
      this.opts.daemon.counters.sseClients = this.#sse.size;
    });
  }
}
