/**
 * A small client for virtmemd's API on its unix socket (or loopback TCP), for the CLI, the
 * benchmarks and tests. Every call is bounded; keep-alive connections are reused.
 */
import { Agent, request } from 'node:http';
import { IDLE_CONNECTION_MS } from '../bounds.js';
import { InputTooLargeError, readStreamBounded } from '../../util/bounded-read.js';

/** The most of one answer the client reads (the largest, /stats with many guests, is far below). */
export const MAX_ANSWER_BYTES = 16 << 20;

export interface DaemonTarget {
  socketPath?: string;
  host?: string;
  port?: number;
  token?: string;
}

export interface DaemonAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON, or the text when the answer is not JSON. */
  body: unknown;
  text: string;
}

/** Error for "no answer": the daemon is not there, or did not answer within the bound. */
export class DaemonUnreachableError extends Error {
  readonly code = 'DAEMON_UNREACHABLE';
  /** The request went out on a kept-alive connection an earlier request had opened. */
  readonly reusedConnection: boolean;
  /** The daemon was reached but did not answer within the bound (it is there, but hung or slow). */
  readonly timedOut: boolean;
  constructor(message: string, options?: { cause?: unknown; reusedConnection?: boolean; timedOut?: boolean }) {
    super(message, options);
    this.name = 'DaemonUnreachableError';
    this.reusedConnection = options?.reusedConnection ?? false;
    this.timedOut = options?.timedOut ?? false;
  }
}

/**
 * How long a kept-alive connection may sit idle in the pool. The daemon closes idle connections
 * after IDLE_CONNECTION_MS (its keepAliveTimeout); the client lets go of them sooner, so it rarely writes into
 * a connection the server is closing. Rarely is not never (the close can cross a request on
 * the wire): see `retryable`.
 */
const IDLE_SOCKET_MS = IDLE_CONNECTION_MS - 1_000;

const agents = new Map<string, Agent>();

function agentFor(t: DaemonTarget): Agent {
  const key = t.socketPath ?? `${t.host}:${t.port}`;
  let a = agents.get(key);
  if (!a) { a = new Agent({ keepAlive: true, maxSockets: 64, timeout: IDLE_SOCKET_MS }); agents.set(key, a); }
  return a;
}

/** Closes kept-alive connections (so a short-lived process can exit at once). */
export function closeDaemonClients(): void {
  for (const a of agents.values()) a.destroy();
  agents.clear();
}

/** Methods that may be sent twice (RFC 9110 §9.2.2): a retry cannot do a change twice. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);

/**
 * Whether a failed request may be sent again: it went out on a reused keep-alive connection
 * that the server had already closed (the server's idle timeout crossed our request), so the
 * server never read it. That is Node's documented answer to this race (`request.reusedSocket`).
 */
function retryable(method: string, reusedConnection: boolean, err: NodeJS.ErrnoException | undefined): boolean {
  return reusedConnection && IDEMPOTENT.has(method) && (err?.code === 'ECONNRESET' || err?.code === 'EPIPE');
}

interface RequestOptions {
  body?: unknown;
  rawBody?: string | Buffer;
  headers?: Record<string, string>;
  /** Bound on the whole request, retry included (default 30 s). */
  timeoutMs?: number;
}

/**
 * One request. `body` is sent as JSON; `rawBody` as it is. An idempotent request that meets a
 * kept-alive connection the daemon has just closed is sent once more on a new connection.
 * @throws DaemonUnreachableError when the daemon cannot be reached or does not answer in time
 */
export async function daemonRequest(t: DaemonTarget, method: string, path: string, opts: RequestOptions = {}): Promise<DaemonAnswer> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  try {
    return await attempt(t, method, path, opts, deadline);
  } catch (err) {
    if (!(err instanceof DaemonUnreachableError) || !retryable(method, err.reusedConnection, err.cause as NodeJS.ErrnoException)) throw err;
    return attempt(t, method, path, opts, deadline);
  }
}

function attempt(t: DaemonTarget, method: string, path: string, opts: RequestOptions, deadline: number): Promise<DaemonAnswer> {
  return new Promise((resolve, reject) => {
    const payload = opts.rawBody ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
    const headers: Record<string, string> = {
      host: t.socketPath ? 'localhost' : `${t.host}:${t.port}`,
      ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) } : {}),
      ...(t.token ? { authorization: `Bearer ${t.token}` } : {}),
      ...opts.headers,
    };
    const req = request({
      method, path, headers, agent: agentFor(t),
      ...(t.socketPath ? { socketPath: t.socketPath } : { host: t.host, port: t.port }),
    }, (res) => {
      // A daemon's answer is bounded too: nothing it says is read past MAX_ANSWER_BYTES.
      readStreamBounded(res, MAX_ANSWER_BYTES, 'virtmemd answer', 'a daemon answer').then((buf) => {
        clearTimeout(timer);
        const text = buf.toString('utf8');
        let body: unknown = text;
        if ((res.headers['content-type'] ?? '').startsWith('application/json')) {
          try { body = JSON.parse(text); } catch { body = text; }
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text });
      }, (err: Error) => {
        clearTimeout(timer);
        req.destroy();
        reject(new DaemonUnreachableError(err instanceof InputTooLargeError ? err.message : `virtmemd answer broke off: ${err.message}`, { cause: err }));
      });
    });
    const timeoutMs = Math.max(0, deadline - Date.now());
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; req.destroy(new Error(`no answer within ${timeoutMs} ms`)); }, timeoutMs);
    req.once('error', (err) => {
      clearTimeout(timer);
      reject(new DaemonUnreachableError(timedOut ? `virtmemd did not answer within ${timeoutMs} ms` : `virtmemd not reachable: ${err.message}`, { cause: err, reusedConnection: req.reusedSocket, timedOut }));
    });
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** An operation document as the daemon sends it (docs/openapi.json#/components/schemas/Operation). */
export interface OperationDoc {
  id: string;
  state: 'running' | 'succeeded' | 'failed';
  startBytes: number | null;
  targetBytes: number;
  actualBytes: number | null;
  message: string | null;
  code?: string;
  elapsedMs: number;
}

/**
 * The daemon's event stream (`GET /api/v1/events`, server-sent events), for following an
 * operation: `ready` resolves once the stream is open (subscribe before the change, so no
 * event of it is missed); `until` resolves with the first operation document for `id` that
 * `done` accepts, and hands every one before to `each`. Bounded by `timeoutMs`; the stream is
 * closed by `close()` and when the daemon goes away (then `until` rejects).
 * @throws DaemonUnreachableError when the daemon does not answer or closes the stream
 */
export function operationEvents(t: DaemonTarget): {
  ready: Promise<void>;
  until(id: string, done: (op: OperationDoc) => boolean, each: (op: OperationDoc) => void, timeoutMs: number): Promise<OperationDoc>;
  close(): void;
} {
  const seen: OperationDoc[] = [];
  let wake: (() => void) | null = null;
  let broken: Error | null = null;
  let buf = '';
  let readyResolve!: () => void;
  let readyReject!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => { readyResolve = res; readyReject = rej; });
  ready.catch(() => undefined);
  const fail = (e: Error): void => { broken ??= e; readyReject(e); const w = wake; wake = null; w?.(); };
  const req = request({
    method: 'GET', path: '/api/v1/events', agent: false,
    headers: { host: t.socketPath ? 'localhost' : `${t.host}:${t.port}`, ...(t.token ? { authorization: `Bearer ${t.token}` } : {}) },
    ...(t.socketPath ? { socketPath: t.socketPath } : { host: t.host, port: t.port }),
  }, (res) => {
    if (res.statusCode !== 200) { fail(new DaemonUnreachableError(`virtmemd answered ${res.statusCode} for its event stream`)); res.resume(); return; }
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_ANSWER_BYTES) { req.destroy(); fail(new DaemonUnreachableError('virtmemd event stream: an event over the size bound')); return; }
      if (buf.includes(': connected')) readyResolve();
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (!/^event: operation$/m.test(block)) continue;
        const data = /^data: (.+)$/m.exec(block)?.[1];
        try { if (data) seen.push(JSON.parse(data) as OperationDoc); } catch { /* not ours to judge: skip */ }
        const w = wake; wake = null; w?.();
      }
    });
    res.once('end', () => fail(new DaemonUnreachableError('virtmemd closed its event stream')));
    res.once('error', (e) => fail(new DaemonUnreachableError(`virtmemd event stream broke off: ${e.message}`, { cause: e })));
  });
  req.once('error', (e) => fail(new DaemonUnreachableError(`virtmemd not reachable: ${e.message}`, { cause: e })));
  req.end();
  const connectBound = setTimeout(() => { req.destroy(); fail(new DaemonUnreachableError('virtmemd did not open its event stream within 10 s')); }, 10_000);
  void ready.then(() => clearTimeout(connectBound), () => clearTimeout(connectBound));
  return {
    ready,
    async until(id, done, each, timeoutMs) {
      const end = Date.now() + timeoutMs;
      let i = 0;
      for (;;) {
        for (; i < seen.length; i++) {
          const op = seen[i]!;
          if (op.id !== id) continue;
          if (done(op)) return op;
          each(op);
        }
        if (broken) throw broken;
        const left = end - Date.now();
        if (left <= 0) throw new DaemonUnreachableError(`virtmemd sent no end of operation ${id} within ${Math.round(timeoutMs / 1000)} s`);
        await new Promise<void>((r) => { const tm = setTimeout(() => { wake = null; r(); }, left); wake = () => { clearTimeout(tm); r(); }; });
      }
    },
    close() {
      clearTimeout(connectBound);
      req.destroy();
    },
  };
}
