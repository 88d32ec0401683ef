/**
 * The daemon's HTTP API (docs/openapi.json, served under /api/v1) as the page uses it: the only
 * file that knows URLs. Documents are mapped to the view model by model.ts; every call is
 * bounded. Same-origin requests carry the daemon's token cookie (set by GET /?token=...).
 */
import { isTranslationDoc, type TranslationDoc } from './translate-view.js';
import { toPolicyView, type PolicyView } from './policy-model.js';
import { historySamples, num, obj, str, toGuestView, toHostView, toLibvirtHostView, toLibvirtHostsView, toOperationView, type GuestSample, type GuestView, type LibvirtHostView, type OperationView, type Snapshot } from './model.js';

export type { GuestView, LibvirtHostView, OperationView, Snapshot };

/** A guest as the API addresses it: its name, and its libvirt host (null: virtmem's own guest). */
export type GuestRef = Pick<GuestView, 'host' | 'name'>;

const BASE = '/api/v1';
const CALL_BOUND_MS = 30_000;

/** Error for an answer the daemon gave (its message and code) or one the page could not use. */
export class ApiError extends Error {
  constructor(message: string, readonly status: number | null, readonly code: string | null = null) {
    super(message);
    this.name = 'ApiError';
  }
}

async function call(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<unknown> {
  const ctl = new AbortController();
  const bound = setTimeout(() => ctl.abort(), CALL_BOUND_MS);
  const onAbort = (): void => ctl.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const res = await fetch(BASE + path, {
      method, signal: ctl.signal, cache: 'no-store', credentials: 'same-origin',
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
    const text = await res.text();
    let doc: unknown = null;
    try { doc = text ? JSON.parse(text) : null; } catch { /* reported below */ }
    if (!res.ok) {
      const e = obj(obj(doc).error);
      const hint = res.status === 401 ? ' (open the dashboard through the URL with ?token=... that the daemon printed)' : '';
      throw new ApiError((str(e.message) ?? `${method} ${path}: HTTP ${res.status}`) + hint, res.status, str(e.code));
    }
    if (doc === null) throw new ApiError(`${method} ${path}: the daemon's answer is not JSON`, res.status);
    return doc;
  } catch (err) {
    if (err instanceof ApiError) throw err;
    const timedOut = ctl.signal.aborted && !signal?.aborted;
    throw new ApiError(timedOut ? `${method} ${path}: no answer within ${CALL_BOUND_MS / 1000} s` : `${method} ${path}: ${(err as Error).message}`, null);
  } finally {
    clearTimeout(bound);
    signal?.removeEventListener('abort', onAbort);
  }
}

/** A guest's path: /domains/{name}, or /hosts/{host}/domains/{name} with the host's URI as one segment. */
const domainPath = (g: GuestRef): string =>
  `${g.host === null ? '' : `/hosts/${encodeURIComponent(g.host)}`}/domains/${encodeURIComponent(g.name)}`;

function operationOf(doc: unknown): OperationView {
  const op = toOperationView(doc);
  if (!op) throw new ApiError('the daemon answered with an operation the page does not understand', null);
  return op;
}

export const api = {
  /** This host and every running guest of every host, now (time: the daemon's host sample), in two calls. */
  async snapshot(signal?: AbortSignal): Promise<Snapshot> {
    const [hostDoc, statsDoc] = await Promise.all([call('GET', '/host', undefined, signal), call('GET', '/stats', undefined, signal)]);
    const tS = num(obj(hostDoc).sampledAtS) ?? Date.now() / 1000;
    const guests = obj(statsDoc).guests;
    return { tS, host: toHostView(hostDoc), guests: (Array.isArray(guests) ? guests : []).map((d) => toGuestView(d, tS)) };
  },
  /** The libvirt hosts the daemon watches (`daemon --hosts`; empty without). */
  async libvirtHosts(signal?: AbortSignal): Promise<LibvirtHostView[]> {
    return toLibvirtHostsView(await call('GET', '/hosts', undefined, signal));
  },
  /** The guest's recent samples (the daemon's ring buffer), to fill a new chart. */
  async history(g: GuestRef, bootBytes: number | null, signal?: AbortSignal): Promise<GuestSample[]> {
    return historySamples(await call('GET', `${domainPath(g)}/history`, undefined, signal), bootBytes);
  },
  /** The guest's automatic memory policy: settings and what it did last, and why. */
  async policy(g: GuestRef, signal?: AbortSignal): Promise<PolicyView> {
    const view = toPolicyView(await call('GET', `${domainPath(g)}/policy`, undefined, signal), g.host);
    if (!view) throw new ApiError('the daemon answered with a policy document the page does not understand', null);
    return view;
  },
  /** Starts a resize; the operation to follow (already succeeded when the guest was there at once). */
  async startSetMemory(g: GuestRef, targetBytes: number): Promise<OperationView> {
    return operationOf(await call('PUT', `${domainPath(g)}/memory`, { targetBytes }));
  },
  async operation(id: string): Promise<OperationView> {
    return operationOf(await call('GET', `/operations/${encodeURIComponent(id)}`));
  },
  /** Translation works on virtmem's own guests only (the API has no /hosts/{host} path for it). */
  async translate(name: string, address: string, cpu: number): Promise<TranslationDoc> {
    const doc = await call('POST', `${domainPath({ host: null, name })}/translate`, { address, cpu });
    if (!isTranslationDoc(doc)) throw new ApiError('the daemon answered the translation with a document the page does not understand', null);
    return doc;
  },
  /**
   * Follows the daemon's event stream (EventSource reconnects by itself): `change` on every
   * change (the page refreshes soon after), `memory` with each guest's new document, `policy`
   * with each decision of the automatic policy (the decision itself: nothing to fetch), `host`
   * with each libvirt host's new document (up or down, and why). A guest's data name its host
   * when it runs on a libvirt host, so the page routes them to the right card. Returns a
   * function that closes the stream.
   */
  watch(on: { change: () => void; memory: (g: GuestView) => void; policy: (data: unknown) => void; host: (h: LibvirtHostView) => void }): () => void {
    if (typeof EventSource === 'undefined') return () => undefined;
    const es = new EventSource(`${BASE}/events`);
    const data = (ev: Event): unknown => {
      try { return JSON.parse(String((ev as MessageEvent).data)); } catch { return undefined; /* not JSON: nothing the page can show */ }
    };
    for (const type of ['memory', 'state', 'operation']) es.addEventListener(type, () => on.change());
    es.addEventListener('memory', (ev) => {
      const d = data(ev);
      // The document's own time (the daemon's clock) dates the figures.
      if (d !== undefined) on.memory(toGuestView(d, num(obj(d).updatedAtS) ?? Date.now() / 1000));
    });
    es.addEventListener('policy', (ev) => {
      const d = data(ev);
      if (d !== undefined) on.policy(d);
    });
    es.addEventListener('host', (ev) => {
      // The local host's document has no uri: it is not a libvirt host's.
      const h = toLibvirtHostView(data(ev));
      if (h) on.host(h);
    });
    return () => es.close();
  },
};
