/**
 * The routes of /api/v1 (docs/openapi.json): each parses its input strictly, calls the daemon
 * and says which status to answer with. No business logic here.
 */
import { HttpError, toHttpError } from './errors.js';
import { Router } from './router.js';
import { parseJsonBody, checkQuery, type BodySpec } from './validate.js';
import { LOCAL, type Daemon } from '../daemon/daemon.js';
import { VirtError, memoryMapJson, translationJson } from '../driver/api.js';
import { validateDomainName } from '../domain/name.js';

export const API_PREFIX = '/api/v1';

/** What a handler gets. */
export interface ApiRequest {
  params: Readonly<Record<string, string>>;
  query: URLSearchParams;
  /** The body text (PUT/POST only; already size-checked). */
  body: string;
  /** Aborts at the request's bound (driver/bounds.ts REQUEST_MS) or when the client goes away. */
  signal: AbortSignal;
  /** The answer may come up to `ms` after the request's bound: a wait the client asked for (the signal's bound stays). */
  waitsLonger(ms: number): void;
}

export interface ApiAnswer {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

export type Handler = (d: Daemon, r: ApiRequest) => Promise<ApiAnswer>;

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const HEX = /^(0[xX])?[0-9a-fA-F_`]{1,32}$/;

const SET_MEMORY: BodySpec = {
  targetBytes: { type: 'integer', min: 1, max: MAX_SAFE, required: true, unit: 'bytes' },
  force: { type: 'boolean' },
  waitMs: { type: 'integer', min: 0, max: 300_000, unit: 'ms' },
  config: { type: 'boolean' },
  timeoutMs: { type: 'integer', min: 1, max: 86_400_000, unit: 'ms' },
};
const SET_MAX: BodySpec = {
  maxBytes: { type: 'integer', min: 1, max: MAX_SAFE, required: true, unit: 'bytes' },
  live: { type: 'boolean' },
  config: { type: 'boolean' },
};
const STATS_PERIOD: BodySpec = {
  periodS: { type: 'integer', min: 0, max: 2 ** 31 - 1, required: true, unit: 's' },
  live: { type: 'boolean' },
  config: { type: 'boolean' },
};
const SET_POLICY: BodySpec = {
  enabled: { type: 'boolean' },
  floorBytes: { type: 'integer', min: 1024, max: MAX_SAFE, nullable: true, unit: 'bytes' },
  ceilingBytes: { type: 'integer', min: 1024, max: MAX_SAFE, nullable: true, unit: 'bytes' },
  shares: { type: 'integer', min: 1, max: 50_000, nullable: true },
};
const TRANSLATE: BodySpec = {
  address: { type: 'string', pattern: HEX, maxLength: 40, required: true, expected: 'a hexadecimal guest-virtual address (0x optional)' },
  cpu: { type: 'integer', min: 0, max: 9999 },
  cr3: { type: 'string', pattern: HEX, maxLength: 40, expected: 'a hexadecimal CR3 value' },
};

/** The domain name of the path, checked. @throws HttpError INVALID_FIELD naming 'name' */
function domainName(r: ApiRequest): string {
  const name = r.params.name!;
  try {
    return validateDomainName(name);
  } catch (err) {
    throw new HttpError(400, 'INVALID_FIELD', (err as Error).message, 'name');
  }
}

function noQuery(r: ApiRequest): void {
  checkQuery(r.query, {});
}

/** A hex address to a bigint. @throws HttpError INVALID_FIELD */
function hexValue(text: string, field: string): bigint {
  const digits = text.replace(/^0x/i, '').replace(/[_`]/g, '');
  if (!/^[0-9a-fA-F]{1,16}$/.test(digits)) throw new HttpError(400, 'INVALID_FIELD', `field '${field}': expected at most 64 bits of hexadecimal, got '${text}'`, field);
  return BigInt(`0x${digits}`);
}

/** Runs `fn`, turning driver refusals into HttpErrors naming `field`. */
async function naming<T>(field: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toHttpError(err, field);
  }
}

/** The host a path names: its /hosts/{host} segment, or the local host. @throws HttpError 404 when not served */
function hostKey(d: Daemon, r: ApiRequest): string {
  const key = r.params.host ?? LOCAL;
  if (!d.hosts.some((h) => h.key === key)) throw new HttpError(404, 'NOT_FOUND', `no host '${key.slice(0, 200)}' is served by this daemon (see GET /api/v1/hosts)`, 'host');
  return key;
}

/** Routes of one guest, served for virtmem's own guests and, under /hosts/{host}, for every libvirt host's. */
function guestRoutes(router: Router<Handler>): void {
  for (const prefix of ['', '/hosts/:host']) {
    router
      .add('GET', `${prefix}/domains/:name`, async (d, r) => {
        noQuery(r);
        return { status: 200, body: await naming('name', () => d.guest(domainName(r), hostKey(d, r))) };
      })
      .add('GET', `${prefix}/domains/:name/info`, async (d, r) => {
        noQuery(r);
        return { status: 200, body: await naming('name', () => d.info(domainName(r), hostKey(d, r), r)) };
      })
      .add('GET', `${prefix}/domains/:name/memory-stats`, async (d, r) => {
        noQuery(r);
        return { status: 200, body: await naming('name', () => d.memoryStats(domainName(r), hostKey(d, r), r.signal)) };
      })
      .add('PUT', `${prefix}/domains/:name/memory`, async (d, r) => {
        noQuery(r);
        const name = domainName(r);
        const host = hostKey(d, r);
        const b = parseJsonBody<{ targetBytes: number; force?: boolean; waitMs?: number; config?: boolean; timeoutMs?: number }>(r.body, SET_MEMORY);
        // Sending the change has the request's bound; the wait the client asked for comes after it.
        if (b.waitMs) r.waitsLonger(b.waitMs);
        const a = await naming('targetBytes', () => d.setMemory(name, b.targetBytes, {
          force: b.force ?? false, waitMs: b.waitMs ?? 0, config: b.config ?? false, ...(b.timeoutMs !== undefined ? { timeoutMs: b.timeoutMs } : {}), signal: r.signal,
        }, host));
        const running = a.operation.state === 'running';
        return {
          status: running ? 202 : 200,
          body: { operation: d.operationDocument(a.operation) },
          ...(running ? { headers: { location: `${API_PREFIX}/operations/${a.operation.id}` } } : {}),
        };
      })
      .add('PUT', `${prefix}/domains/:name/max-memory`, async (d, r) => {
        noQuery(r);
        const name = domainName(r);
        const host = hostKey(d, r);
        const b = parseJsonBody<{ maxBytes: number; live?: boolean; config?: boolean }>(r.body, SET_MAX);
        return { status: 200, body: await naming('maxBytes', () => d.setMaxMemory(name, b.maxBytes, flags(b), host, r.signal)) };
      })
      .add('PUT', `${prefix}/domains/:name/stats-period`, async (d, r) => {
        noQuery(r);
        const name = domainName(r);
        const host = hostKey(d, r);
        const b = parseJsonBody<{ periodS: number; live?: boolean; config?: boolean }>(r.body, STATS_PERIOD);
        return { status: 200, body: await naming('periodS', () => d.setStatsPeriod(name, b.periodS, flags(b), host, r.signal)) };
      })
      .add('GET', `${prefix}/domains/:name/history`, async (d, r) => {
        const q = checkQuery(r.query, { sinceS: { min: 0, max: 1e12 } });
        const name = domainName(r);
        return { status: 200, body: await naming('name', () => d.history(name, q.sinceS ?? 0, hostKey(d, r))) };
      })
      .add('GET', `${prefix}/domains/:name/policy`, async (d, r) => {
        noQuery(r);
        const name = domainName(r);
        return { status: 200, body: await naming('name', () => d.policyDocument(name, hostKey(d, r))) };
      })
      .add('PUT', `${prefix}/domains/:name/policy`, async (d, r) => {
        noQuery(r);
        const name = domainName(r);
        const host = hostKey(d, r);
        const b = parseJsonBody<{ enabled?: boolean; floorBytes?: number | null; ceilingBytes?: number | null; shares?: number | null }>(r.body, SET_POLICY);
        const kib = (v: number | null | undefined, field: string): number | null | undefined => {
          if (v === undefined || v === null) return v;
          if (v % 1024 !== 0) throw new HttpError(400, 'INVALID_FIELD', `field '${field}': ${v} is not a multiple of 1024 bytes`, field);
          return v / 1024;
        };
        const change = {
          ...(b.enabled !== undefined ? { enabled: b.enabled } : {}),
          ...(b.floorBytes !== undefined ? { floorKiB: kib(b.floorBytes, 'floorBytes') } : {}),
          ...(b.ceilingBytes !== undefined ? { ceilingKiB: kib(b.ceilingBytes, 'ceilingBytes') } : {}),
          ...(b.shares !== undefined ? { shares: b.shares } : {}),
        };
        if (Object.keys(change).length === 0) throw new HttpError(400, 'INVALID_FIELD', 'the body changes nothing: give at least one of enabled, floorBytes, ceilingBytes, shares', 'body');
        return { status: 200, body: await naming('body', () => d.setPolicy(name, change, host, r.signal)) };
      });
  }
}

/**
 * One API call as every transport makes it (HTTP, the RPC socket): the route for `method` and
 * `pathname` (below API_PREFIX), its handler on the daemon.
 * @throws HttpError NOT_FOUND / METHOD_NOT_ALLOWED (no such route), and what the handler throws
 */
export function callApi(router: Router<Handler>, d: Daemon, method: string, pathname: string, r: Omit<ApiRequest, 'params'>): Promise<ApiAnswer> {
  if (pathname !== API_PREFIX && !pathname.startsWith(API_PREFIX + '/')) throw new HttpError(404, 'NOT_FOUND', `no such path: ${pathname.slice(0, 200)}`);
  const m = router.match(method, pathname.slice(API_PREFIX.length));
  // The transport's own object, not a copy: its signal is made only if a handler asks for it.
  return m.route.handler(d, Object.assign(r, { params: m.params }));
}

export function apiRouter(): Router<Handler> {
  const router = new Router<Handler>()
    .add('GET', '/domains', async (d, r) => {
      noQuery(r);
      return { status: 200, body: { domains: await d.list() } };
    })
    .add('GET', '/hosts/:host/domains', async (d, r) => {
      noQuery(r);
      return { status: 200, body: { domains: await naming('host', () => d.list(hostKey(d, r))) } };
    })
    .add('GET', '/stats', async (d, r) => {
      noQuery(r);
      const nowS = Date.now() / 1000;
      return { status: 200, body: { guests: d.allGuestDocuments(nowS) } };
    })
    .add('GET', '/domains/:name/memmap', async (d, r) => {
      noQuery(r);
      const name = domainName(r);
      const drv = d.local.driver;
      if (!drv.memoryMap) throw new VirtError('NO_SUPPORT', 'this driver has no memory map');
      return { status: 200, body: memoryMapJson(await naming('name', () => drv.memoryMap!(name, { signal: r.signal }))) };
    })
    .add('POST', '/domains/:name/translate', async (d, r) => {
      noQuery(r);
      const name = domainName(r);
      const b = parseJsonBody<{ address: string; cpu?: number; cr3?: string }>(r.body, TRANSLATE);
      const gva = hexValue(b.address, 'address');
      const cr3 = b.cr3 === undefined ? undefined : hexValue(b.cr3, 'cr3');
      const drv = d.local.driver;
      if (!drv.translate) throw new VirtError('NO_SUPPORT', 'this driver cannot translate addresses');
      const t = await naming('address', () => drv.translate!(name, gva, { ...(b.cpu !== undefined ? { cpu: b.cpu } : {}), ...(cr3 !== undefined ? { cr3 } : {}), signal: r.signal }));
      return { status: 200, body: translationJson(t) };
    })
    .add('GET', '/operations/:id', async (d, r) => {
      noQuery(r);
      const id = r.params.id!;
      if (!/^op-[0-9]{1,12}$/.test(id)) throw new HttpError(400, 'INVALID_FIELD', `operation id '${id.slice(0, 40)}' is not of the form op-N`, 'id');
      const op = d.ops.get(id);
      if (!op) throw new HttpError(404, 'NOT_FOUND', `no operation '${id}' (ended operations are kept for 10 minutes)`);
      return { status: 200, body: { operation: d.operationDocument(op) } };
    })
    .add('GET', '/hosts', async (d, r) => {
      noQuery(r);
      return { status: 200, body: { hosts: d.libvirtHosts().map((h) => d.libvirtHostDocument(h)) } };
    })
    .add('GET', '/host', async (d, r) => {
      noQuery(r);
      return { status: 200, body: d.hostDocument() };
    });
  guestRoutes(router);
  return router;
}

function flags(b: { live?: boolean; config?: boolean }): { live?: boolean; config?: boolean } {
  return { ...(b.live !== undefined ? { live: b.live } : {}), ...(b.config !== undefined ? { config: b.config } : {}) };
}
