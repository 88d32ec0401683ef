/**
 * A small client for virtmemd's API on its unix socket (or loopback TCP), for the CLI, the
 * benchmarks and tests. Every call is bounded; keep-alive connections are reused.
 */
import { Agent, request } from 'node:http';

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
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DaemonUnreachableError';
  }
}

const agents = new Map<string, Agent>();

function agentFor(t: DaemonTarget): Agent {
  const key = t.socketPath ?? `${t.host}:${t.port}`;
  let a = agents.get(key);
  if (!a) { a = new Agent({ keepAlive: true, maxSockets: 64 }); agents.set(key, a); }
  return a;
}

/** Closes kept-alive connections (so a short-lived process can exit at once). */
export function closeDaemonClients(): void {
  for (const a of agents.values()) a.destroy();
  agents.clear();
}

/**
 * One request. `body` is sent as JSON; `rawBody` as it is.
 * @throws DaemonUnreachableError when the daemon cannot be reached or does not answer in time
 */
export function daemonRequest(
  t: DaemonTarget, method: string, path: string,
  opts: { body?: unknown; rawBody?: string | Buffer; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<DaemonAnswer> {
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
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        if ((res.headers['content-type'] ?? '').startsWith('application/json')) {
          try { body = JSON.parse(text); } catch { body = text; }
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text });
      });
      res.once('error', (err) => { clearTimeout(timer); reject(new DaemonUnreachableError(`virtmemd answer broke off: ${err.message}`, { cause: err })); });
    });
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.once('error', (err) => { clearTimeout(timer); reject(new DaemonUnreachableError(`virtmemd not reachable: ${err.message}`, { cause: err })); });
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}
