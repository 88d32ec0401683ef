/**
 * The daemon's HTTP API as the page uses it: the only file that knows URLs and the shape of the
 * daemon's documents (docs/openapi.json). Every answer is checked before use; sizes arrive as
 * integer bytes with the unit in the field name.
 * PROVISIONAL: written before the daemon's contract existed; to be aligned with it.
 */
import { isTranslationDoc, type TranslationDoc } from './translate-view.js';
import { guestUsedBytes, obj, num, str, type GuestView, type HostView, type Json, type OperationView, type Snapshot } from './model.js';

export type { GuestView, OperationView, Snapshot };

const BASE = '/api/v1';

/** Error for an answer the daemon gave (its message) or one the page could not use. */
export class ApiError extends Error {
  constructor(message: string, readonly status: number | null) {
    super(message);
    this.name = 'ApiError';
  }
}

async function call(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<unknown> {
  const ctl = new AbortController();
  const bound = setTimeout(() => ctl.abort(), 30_000);
  const onAbort = (): void => ctl.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const res = await fetch(BASE + path, {
      method, signal: ctl.signal, cache: 'no-store',
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
    const text = await res.text();
    let doc: unknown = null;
    try { doc = text ? JSON.parse(text) : null; } catch { /* reported below */ }
    if (!res.ok) {
      const e = obj(obj(doc).error);
      throw new ApiError(str(e.message) ?? str(obj(doc).message) ?? `${method} ${path}: HTTP ${res.status}`, res.status);
    }
    if (doc === null && text) throw new ApiError(`${method} ${path}: the daemon's answer is not JSON`, res.status);
    return doc;
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError(ctl.signal.aborted && !signal?.aborted ? `${method} ${path}: no answer within 30 s` : `${method} ${path}: ${(err as Error).message}`, null);
  } finally {
    clearTimeout(bound);
    signal?.removeEventListener('abort', onAbort);
  }
}

function toGuest(d: Json, tS: number): GuestView {
  const mem = obj(d.memory);
  const stats = obj(d.stats);
  const boot = num(mem.bootBytes);
  const balloon = num(mem.balloonBytes);
  const plugged = num(mem.pluggedBytes);
  const total = num(stats.availableBytes);
  const usable = num(stats.usableBytes);
  const held = boot !== null && balloon !== null ? Math.max(0, boot - balloon) : null;
  return {
    name: str(d.name) ?? '?',
    state: str(d.state) ?? 'unknown',
    maxBytes: num(d.maxMemoryBytes),
    totalBytes: balloon === null ? null : balloon + (plugged ?? 0),
    sample: {
      tS,
      bootInGuestBytes: balloon,
      virtioMemBytes: plugged,
      balloonHeldBytes: held,
      guestUsedBytes: guestUsedBytes(total, usable, balloon === null ? null : balloon + (plugged ?? 0), held),
      guestAvailableBytes: usable,
      hostRssBytes: num(stats.rssBytes),
    },
  };
}

function toOperation(v: unknown): OperationView {
  const o = obj(obj(v).operation ?? v);
  const id = str(o.id);
  const state = str(o.state);
  const target = num(o.targetBytes);
  if (id === null || target === null || (state !== 'running' && state !== 'succeeded' && state !== 'failed')) {
    throw new ApiError('the daemon answered with an operation the page does not understand', null);
  }
  return { id, state, startBytes: num(o.startBytes), targetBytes: target, actualBytes: num(o.actualBytes), message: str(o.message) };
}

export const api = {
  /** Host and every running guest, now. */
  async snapshot(signal?: AbortSignal): Promise<Snapshot> {
    const tS = Date.now() / 1000;
    const [hostDoc, listDoc] = await Promise.all([call('GET', '/host', undefined, signal), call('GET', '/domains', undefined, signal)]);
    const h = obj(hostDoc);
    const psi = obj(h.psi);
    const host: HostView = {
      memTotalBytes: num(h.memTotalBytes), memAvailableBytes: num(h.memAvailableBytes),
      psiSomeAvg10: num(obj(psi.some).avg10), psiFullAvg10: num(obj(psi.full).avg10),
    };
    const names = (Array.isArray(obj(listDoc).domains) ? (obj(listDoc).domains as unknown[]) : []).map(obj).filter((d) => d.state === 'running').map((d) => str(d.name)).filter((n): n is string => n !== null);
    const docs = await Promise.all(names.map((n) => call('GET', `/domains/${encodeURIComponent(n)}`, undefined, signal)));
    return { tS, host, guests: docs.map((d) => toGuest(obj(d), tS)) };
  },
  /** Starts a resize; answers with the operation to follow. */
  async startSetMemory(name: string, targetBytes: number): Promise<OperationView> {
    return toOperation(await call('PUT', `/domains/${encodeURIComponent(name)}/memory`, { targetBytes }));
  },
  async operation(id: string): Promise<OperationView> {
    return toOperation(await call('GET', `/operations/${encodeURIComponent(id)}`));
  },
  async translate(name: string, address: string, cpu: number): Promise<TranslationDoc> {
    const doc = await call('POST', `/domains/${encodeURIComponent(name)}/translate`, { address, cpu });
    if (!isTranslationDoc(doc)) throw new ApiError('the daemon answered the translation with a document the page does not understand', null);
    return doc;
  },
  /** Calls `onChange` whenever the daemon's event stream reports something; reconnects by itself. */
  watch(onChange: () => void): void {
    if (typeof EventSource === 'undefined') return;
    const es = new EventSource(`${BASE}/events`);
    es.onmessage = () => onChange();
    for (const type of ['memory', 'state', 'operation']) es.addEventListener(type, () => onChange());
  },
};
