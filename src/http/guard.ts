/**
 * Who may talk to the daemon: the token on TCP, and Host and Origin checks against DNS
 * rebinding (a foreign name resolving to 127.0.0.1 still sends its own Host) and CSRF (a
 * foreign page's requests carry its Origin). Pure.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import { HttpError } from './errors.js';

export interface Listener {
  kind: 'unix' | 'tcp';
  /** TCP port (for the Host and Origin checks). */
  port?: number;
}

export interface GuardInput {
  listener: Listener;
  /** The token required, or null when none is configured (unix socket only). */
  token: string | null;
  host: string | undefined;
  origin: string | undefined;
  authorization: string | undefined;
  cookie: string | undefined;
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];

/** The Host values a TCP listener answers to. */
export function allowedHosts(l: Listener): string[] {
  if (l.kind !== 'tcp') return [...LOOPBACK_NAMES];
  const hosts = LOOPBACK_NAMES.map((h) => `${h}:${l.port}`);
  return l.port === 80 ? [...hosts, ...LOOPBACK_NAMES] : hosts;
}

/** Constant-time token comparison (hashes first, so lengths leak nothing either). */
export function tokenEquals(given: string, wanted: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(wanted).digest();
  return timingSafeEqual(a, b);
}

/** The token value of the virtmem_token cookie, if any. */
export function cookieToken(cookie: string | undefined): string | null {
  if (!cookie) return null;
  for (const part of cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === 'virtmem_token') return v.join('=');
  }
  return null;
}

/**
 * Checks one request.
 * @throws HttpError FORBIDDEN_HOST (403), FORBIDDEN_ORIGIN (403), UNAUTHORIZED (401)
 */
export function checkRequest(g: GuardInput): void {
  const host = (g.host ?? '').toLowerCase();
  if (g.listener.kind === 'tcp' && !allowedHosts(g.listener).includes(host)) {
    throw new HttpError(403, 'FORBIDDEN_HOST', `Host header '${host.slice(0, 100)}' is not this daemon (expected one of ${allowedHosts(g.listener).join(', ')})`, 'header.host');
  }
  if (g.origin !== undefined) {
    const okOrigins = g.listener.kind === 'tcp'
      ? allowedHosts(g.listener).map((h) => `http://${h}`)
      : LOOPBACK_NAMES.map((h) => `http://${h}`);
    if (!okOrigins.includes(g.origin.toLowerCase())) {
      throw new HttpError(403, 'FORBIDDEN_ORIGIN', `Origin '${g.origin.slice(0, 100)}' is not allowed: only the daemon's own pages may call it`, 'header.origin');
    }
  }
  if (g.token === null) return;
  const bearer = /^Bearer (\S+)$/.exec(g.authorization ?? '')?.[1] ?? null;
  const given = bearer ?? cookieToken(g.cookie);
  if (given === null) throw new HttpError(401, 'UNAUTHORIZED', 'a token is required: send "Authorization: Bearer TOKEN" (the token is in the daemon\'s --token-file)', 'header.authorization');
  if (!tokenEquals(given, g.token)) throw new HttpError(401, 'UNAUTHORIZED', 'the token is wrong', 'header.authorization');
}
