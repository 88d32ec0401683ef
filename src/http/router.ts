/**
 * Method + path -> route, with path parameters decoded and checked. Paths are matched on their
 * raw segments: an encoded '/' or '..' inside a name never becomes a path step, and a name is
 * validated as a domain name before any handler sees it. Pure.
 */
import { HttpError } from './errors.js';

export interface Route<H> {
  method: 'GET' | 'PUT' | 'POST';
  /** Segments; ':name' marks a parameter. */
  pattern: string;
  handler: H;
}

export interface Match<H> {
  route: Route<H>;
  params: Readonly<Record<string, string>>;
}

/** Decodes one raw segment. @throws HttpError NOT_FOUND for malformed escapes. */
function decodeSegment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new HttpError(400, 'INVALID_FIELD', `path segment '${raw.slice(0, 64)}' has a malformed %-escape`, 'path');
  }
}

/** Paths matched before, kept for their next request (a client calls the same few paths over and over). */
const MATCH_CACHE_ENTRIES = 1024;

export class Router<H> {
  readonly #routes: Array<Route<H> & { parts: string[] }> = [];
  /** `method path` -> its match (params frozen: every request of that path shares them). */
  readonly #matched = new Map<string, Match<H>>();

  /** Every route as method and pattern (the contract test holds them to docs/openapi.json). */
  routes(): Array<{ method: Route<H>['method']; pattern: string }> {
    return this.#routes.map((r) => ({ method: r.method, pattern: r.pattern }));
  }

  add(method: Route<H>['method'], pattern: string, handler: H): this {
    this.#routes.push({ method, pattern, handler, parts: pattern.split('/').slice(1) });
    this.#matched.clear();
    return this;
  }

  /**
   * Finds the route for `method` and `pathname` (without query).
   * @throws HttpError NOT_FOUND (no such path), METHOD_NOT_ALLOWED (path exists, other method)
   */
  match(method: string, pathname: string): Match<H> {
    const key = `${method} ${pathname}`;
    const seen = this.#matched.get(key);
    if (seen) return seen;
    const m = this.#find(method, pathname);
    if (this.#matched.size >= MATCH_CACHE_ENTRIES) this.#matched.clear();
    this.#matched.set(key, m);
    return m;
  }

  #find(method: string, pathname: string): Match<H> {
    const raw = pathname.split('/').slice(1);
    let allowed: string[] = [];
    for (const r of this.#routes) {
      if (r.parts.length !== raw.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < raw.length && ok; i++) {
        const p = r.parts[i]!;
        if (p.startsWith(':')) {
          if (raw[i] === '') ok = false;
          else params[p.slice(1)] = decodeSegment(raw[i]!);
        } else if (p !== raw[i]) ok = false;
      }
      if (!ok) continue;
      if (r.method !== method && !(r.method === 'GET' && method === 'HEAD')) { allowed.push(r.method); continue; }
      return { route: r, params: Object.freeze(params) };
    }
    if (allowed.length) {
      allowed = [...new Set(allowed)];
      throw Object.assign(new HttpError(405, 'METHOD_NOT_ALLOWED', `method ${method} is not allowed on ${pathname.slice(0, 200)} (allowed: ${allowed.join(', ')})`), { allow: allowed.join(', ') });
    }
    throw new HttpError(404, 'NOT_FOUND', `no such path: ${pathname.slice(0, 200)}`);
  }
}
