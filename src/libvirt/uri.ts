/**
 * libvirt connection URIs, pure: `driver[+transport]://[user@][host][:port]/path[?query]`, and
 * how virtmem reaches the daemon behind one (the transport, the socket or host, and the name
 * sent in CONNECT_OPEN). `virtmem:///...` is virtmem's own driver and not handled here.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { invalidArg } from '../domain/errors.js';

export type LibvirtTransport = 'unix' | 'tcp' | 'tls' | 'ssh';

export interface LibvirtUri {
  /** The URI as given. */
  text: string;
  /** 'qemu', 'test', ... */
  driver: string;
  transport: LibvirtTransport;
  user: string | null;
  host: string | null;
  port: number | null;
  /** '/system', '/session', '/default', ... */
  path: string;
  query: Map<string, string>;
  /** What the daemon is asked to open: the URI without transport, user, host and port. */
  openName: string;
}

/** Query parameters the client side consumes (libvirt's remote driver strips them too). */
const CLIENT_PARAMS = new Set(['socket', 'no_verify', 'no_tty', 'pkipath', 'keyfile', 'sshauth', 'command', 'netcat', 'mode', 'proxy', 'name', 'known_hosts', 'known_hosts_verify', 'tls_priority']);

/** Whether `uri` names virtmem's own driver (or none at all: the default). */
export function isNativeUri(uri: string | undefined | null): boolean {
  return !uri || /^virtmem:\/\/\/(system|session)$/.test(uri);
}

/**
 * Parse a libvirt URI.
 * @throws VirtError INVALID_ARG naming what is wrong.
 */
export function parseLibvirtUri(text: string): LibvirtUri {
  const m = /^([a-z][a-z0-9]*)(?:\+([a-z0-9]+))?:\/\/(?:([^@/?#]*)@)?(\[[0-9a-fA-F:.]+\]|[^/:?#]*)(?::([0-9]+))?(\/[^?#]*)?(?:\?([^#]*))?$/.exec(text);
  if (!m) throw invalidArg(`invalid connection URI '${text}': expected driver[+transport]://[host[:port]]/path`);
  const [, driver, tr, user, hostRaw, portText, path, queryText] = m;
  const host = hostRaw ? hostRaw.replace(/^\[(.*)\]$/, '$1') : null;
  let transport: LibvirtTransport;
  if (tr === undefined) transport = host ? 'tls' : 'unix';
  else if (tr === 'unix' || tr === 'tcp' || tr === 'tls' || tr === 'ssh') transport = tr;
  else throw invalidArg(`unsupported transport '${tr}' in connection URI '${text}' (virtmem speaks unix, tcp, tls and ssh)`);
  if (transport === 'unix' && host) throw invalidArg(`connection URI '${text}' names a host, but the unix transport is local only`);
  if (transport !== 'unix' && !host) throw invalidArg(`connection URI '${text}' needs a host for the ${transport} transport`);
  const port = portText ? Number(portText) : null;
  if (port !== null && (port < 1 || port > 65535)) throw invalidArg(`invalid port ${portText} in connection URI '${text}'`);
  const query = new Map<string, string>();
  for (const part of (queryText ?? '').split('&').filter(Boolean)) {
    const eq = part.indexOf('=');
    const k = decodeURIComponent(eq < 0 ? part : part.slice(0, eq));
    query.set(k, decodeURIComponent(eq < 0 ? '' : part.slice(eq + 1)));
  }
  const kept = [...query].filter(([k]) => !CLIENT_PARAMS.has(k)).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  const p = path ?? '/';
  const openName = query.get('name') ?? `${driver}://${p}${kept.length ? '?' + kept.join('&') : ''}`;
  return { text, driver: driver!, transport, user: user ? decodeURIComponent(user) : null, host, port, path: p, query, openName };
}

/** libvirt's default ports: 16509 for TCP, 16514 for TLS. */
export function defaultPort(t: LibvirtTransport): number {
  return t === 'tls' ? 16514 : 16509;
}

/**
 * The local socket for a unix-transport URI: `?socket=` if given; for privileged URIs the
 * modular daemon's socket when it runs (virtqemud-sock for qemu), else libvirtd's; for
 * /session the per-user one under $XDG_RUNTIME_DIR.
 */
export function unixSocketPath(u: LibvirtUri, env: NodeJS.ProcessEnv = process.env, exists: (p: string) => boolean = existsSync): string {
  const given = u.query.get('socket');
  if (given) return given;
  if (u.path === '/session') {
    const runtime = env.XDG_RUNTIME_DIR ?? join(env.HOME ?? '/root', '.cache');
    return join(runtime, 'libvirt', 'libvirt-sock');
  }
  const modular = `/var/run/libvirt/virt${u.driver}d-sock`;
  if (u.driver !== 'test' && exists(modular)) return modular;
  return '/var/run/libvirt/libvirt-sock';
}

/** The URI to use: `-c` if given, else $LIBVIRT_DEFAULT_URI (as virsh does), else native. */
export function chooseUri(given: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (given !== undefined) return given;
  const fromEnv = env.LIBVIRT_DEFAULT_URI;
  return fromEnv ? fromEnv : undefined;
}
