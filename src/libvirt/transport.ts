/**
 * Byte transports to a libvirt daemon: unix socket, TCP, TLS (with libvirt's one-byte
 * certificate-accepted confirmation), and ssh running `virt-ssh-helper` on the remote host.
 * Each yields a Node Duplex; connecting is bounded and cancellable.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createConnection, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { Duplex } from 'node:stream';
import { join } from 'node:path';
import { LibvirtError } from './errors.js';
import { defaultPort, unixSocketPath, type LibvirtUri } from './uri.js';

export interface ConnectOptions {
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/** libc's words for the usual connect failures, as libvirt prints them. */
function errnoText(e: NodeJS.ErrnoException): string {
  const words: Record<string, string> = {
    ECONNREFUSED: 'Connection refused', ENOENT: 'No such file or directory', EACCES: 'Permission denied',
    ETIMEDOUT: 'Connection timed out', EHOSTUNREACH: 'No route to host', ENETUNREACH: 'Network is unreachable',
    ENOTFOUND: 'Name or service not known', EAI_AGAIN: 'Temporary failure in name resolution',
  };
  return (e.code && words[e.code]) ?? e.message;
}

function bounded<T extends Duplex>(what: string, make: () => T, ready: string, opts: ConnectOptions, after?: (s: T) => Promise<void>, failPrefix = `unable to connect to ${what}`): Promise<T> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const s = make();
    const fail = (err: LibvirtError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      s.destroy();
      reject(err);
    };
    const onAbort = (): void => fail(new LibvirtError('aborted', `connecting to ${what} was aborted`));
    const timer = setTimeout(() => fail(new LibvirtError('timeout', `connecting to ${what} timed out after ${opts.timeoutMs} ms`)), opts.timeoutMs);
    if (opts.signal?.aborted) { onAbort(); return; }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    s.once('error', (e: NodeJS.ErrnoException) => fail(new LibvirtError('connect', `${failPrefix}: ${errnoText(e)}`, { cause: e })));
    s.once('close', () => fail(new LibvirtError('connect', `failed to connect to ${what}: connection closed`)));
    s.once(ready, () => {
      const done = (): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        s.removeAllListeners('error');
        s.removeAllListeners('close');
        resolve(s);
      };
      if (after) after(s).then(done, (e: unknown) => fail(e instanceof LibvirtError ? e : new LibvirtError('connect', `failed to connect to ${what}: ${(e as Error).message}`, { cause: e })));
      else done();
    });
  });
}

/** libvirt's TLS servers send one byte 1 once they accepted the client's certificate. */
function tlsConfirmation(s: TLSSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once('readable', () => {
      const b = s.read(1) as Buffer | null;
      if (b && b[0] === 1) resolve();
      else reject(new LibvirtError('connect', 'the server refused our client certificate'));
    });
  });
}

/** Open the byte stream to the daemon behind `u`. */
export async function openTransport(u: LibvirtUri, opts: ConnectOptions): Promise<Duplex> {
  switch (u.transport) {
    case 'unix': {
      const path = unixSocketPath(u);
      return bounded<Socket>(`socket '${path}'`, () => createConnection({ path }), 'connect', opts, undefined, `Failed to connect socket to '${path}'`);
    }
    case 'tcp': {
      const port = u.port ?? defaultPort('tcp');
      return bounded<Socket>(`server at '${u.host}:${port}'`, () => createConnection({ host: u.host!, port }), 'connect', opts);
    }
    case 'tls': {
      const port = u.port ?? defaultPort('tls');
      const pki = u.query.get('pkipath');
      const file = (dflt: string, name: string): Buffer => readFileSync(pki ? join(pki, name) : dflt);
      let ca: Buffer, cert: Buffer | undefined, key: Buffer | undefined;
      try {
        ca = file('/etc/pki/CA/cacert.pem', 'cacert.pem');
        try {
          cert = file('/etc/pki/libvirt/clientcert.pem', 'clientcert.pem');
          key = file('/etc/pki/libvirt/private/clientkey.pem', 'clientkey.pem');
        } catch { cert = undefined; key = undefined; }
      } catch (e) {
        throw new LibvirtError('connect', `cannot read the CA certificate for TLS: ${(e as Error).message}`, { cause: e });
      }
      const verify = u.query.get('no_verify') !== '1';
      return bounded<TLSSocket>(`server at '${u.host}:${port}' (TLS)`, () => tlsConnect({
        host: u.host!, port, ca, ...(cert && key ? { cert, key } : {}), rejectUnauthorized: verify,
        // SNI carries host names only (RFC 6066); an address is still checked against the certificate.
        ...(isIP(u.host!) ? {} : { servername: u.host! }),
      }), 'secureConnect', opts, tlsConfirmation);
    }
    case 'ssh':
      return openSsh(u, opts);
  }
}

/** `ssh host virt-ssh-helper URI`, its stdio as the stream (argv array; URI validated). */
async function openSsh(u: LibvirtUri, opts: ConnectOptions): Promise<Duplex> {
  // ssh hands the remote command to the remote shell: allow only characters that mean
  // nothing there inside single quotes.
  if (!/^[A-Za-z0-9+:/._?=&,-]+$/.test(u.openName)) {
    throw new LibvirtError('connect', `refusing to pass the URI '${u.openName}' to a remote shell: unexpected characters`);
  }
  const argv = ['-T', '-e', 'none', '-o', 'BatchMode=yes'];
  if (u.port) argv.push('-p', String(u.port));
  if (u.user) argv.push('-l', u.user);
  if (u.query.get('keyfile')) argv.push('-i', u.query.get('keyfile')!);
  argv.push('--', u.host!, `virt-ssh-helper '${u.openName}'`);
  const command = u.query.get('command') ?? 'ssh';
  const child = spawn(command, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000); });
  // The stream ends with what ssh said: its exit status and stderr, not the EPIPE our next write
  // gets once it is gone (that is why ssh's stdin errors are swallowed and the exit waited for).
  child.stdin.on('error', () => undefined);
  const duplex = new Duplex({
    read: () => { child.stdout.resume(); },
    write: (chunk: Buffer, _enc, cb) => { if (child.stdin.writable) child.stdin.write(chunk); cb(); },
    final: (cb) => { child.stdin.end(); cb(); },
    destroy: (err, cb) => { if (child.exitCode === null && child.signalCode === null) child.kill(); cb(err); },
  });
  child.stdout.on('data', (d: Buffer) => { if (!duplex.push(d)) child.stdout.pause(); });
  child.once('error', (e) => duplex.destroy(new Error(`cannot run '${command}': ${e.message}`)));
  child.once('close', (code, sig) => {
    const why = code ? `ssh exited with status ${code}` : sig ? `ssh was killed by ${sig}` : null;
    if (why) duplex.destroy(new Error(`${why}${stderr.trim() ? `: ${stderr.trim()}` : ''}`));
    else { duplex.push(null); duplex.destroy(); }
  });
  // ssh has no "connected" moment we can see; the first RPC (AUTH_LIST) bounds the rest.
  if (opts.signal?.aborted) { duplex.destroy(); throw new LibvirtError('aborted', 'connecting over ssh was aborted'); }
  return duplex;
}
