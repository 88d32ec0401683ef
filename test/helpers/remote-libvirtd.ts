/**
 * A "remote" libvirt host for tests: a second libvirtd in its own mount namespace (private
 * /run/libvirt, /var/lib/libvirt, ... so it shares no state with the machine's libvirtd),
 * listening on 127.0.0.1 TCP with auth none. Reach it as `qemu+tcp://127.0.0.1:PORT/system`.
 * Needs root (mount namespaces) and Debian's libvirt-daemon-system.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ROOT } from './cli.js';

export interface RemoteLibvirtd {
  uri: string;
  port: number;
  /** `qemu+tls://127.0.0.1:PORT/system?pkipath=...` when started with `tlsPki`, else null. */
  tlsUri: string | null;
  /** The libvirtd process: kill it to make the "remote" daemon die mid-call. */
  pid: number;
  /** Stop libvirtd and its virtlogd (guests it still runs are killed with it by the caller). */
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

const accepts = (port: number): Promise<boolean> => new Promise((resolve) => {
  const s = createConnection({ host: '127.0.0.1', port });
  s.once('connect', () => { s.destroy(); resolve(true); });
  s.once('error', () => resolve(false));
});

/**
 * Start the second libvirtd; resolves when its TCP port accepts (bounded: 30 s). With `tlsPki`
 * (a folder holding cacert.pem, servercert.pem and serverkey.pem) it also listens for TLS on
 * 127.0.0.1, requiring a client certificate signed by that CA (libvirt's default).
 */
export async function startRemoteLibvirtd(opts: { tlsPki?: string } = {}): Promise<RemoteLibvirtd> {
  const dir = await mkdtemp(join(tmpdir(), 'vm-rlibvirtd-'));
  const port = await freePort();
  const tlsPort = opts.tlsPki ? await freePort() : null;
  const conf = join(dir, 'libvirtd.conf');
  const pki = opts.tlsPki;
  await writeFile(conf, [
    'listen_tcp = 1', `tcp_port = "${port}"`, 'listen_addr = "127.0.0.1"', 'auth_tcp = "none"',
    ...(pki ? ['listen_tls = 1', `tls_port = "${tlsPort}"`, 'auth_tls = "none"', `ca_file = "${pki}/cacert.pem"`,
      `cert_file = "${pki}/servercert.pem"`, `key_file = "${pki}/serverkey.pem"`] : ['listen_tls = 0']),
    // 'unix_sock_dir' stays the default: it is inside the private /run/libvirt.
  ].join('\n') + '\n');
  const logPid = join(dir, 'virtlogd.pid');
  const script = join(ROOT, 'test', 'fixtures', 'libvirt', 'remote-libvirtd.sh');
  const log = join(dir, 'libvirtd.log');
  const out = await import('node:fs').then((fs) => fs.openSync(log, 'w'));
  const child = spawn('unshare', ['--mount', '--propagation', 'private', script, conf, logPid], { stdio: ['ignore', out, out], detached: true });
  child.unref();
  let exited = false;
  child.once('exit', () => { exited = true; });
  const deadline = Date.now() + 30_000;
  while (!(await accepts(port)) || (tlsPort !== null && !(await accepts(tlsPort)))) {
    if (exited || Date.now() > deadline) {
      const text = await readFile(log, 'utf8').catch(() => '');
      try { process.kill(child.pid!, 'SIGKILL'); } catch { /* gone */ }
      throw new Error(`the remote libvirtd did not listen on 127.0.0.1:${port}${exited ? ' (it exited)' : ' within 30 s'}:\n${text}`);
    }
    await delay(50);
  }
  const pid = child.pid!;
  return {
    uri: `qemu+tcp://127.0.0.1:${port}/system`,
    port,
    tlsUri: tlsPort === null ? null : `qemu+tls://127.0.0.1:${tlsPort}/system?pkipath=${pki}`,
    pid,
    async stop() {
      const kill = (p: number, sig: NodeJS.Signals): void => { try { process.kill(p, sig); } catch { /* gone */ } };
      kill(pid, 'SIGTERM');
      const vpid = Number((await readFile(logPid, 'utf8').catch(() => '')).trim());
      if (vpid > 0) kill(vpid, 'SIGTERM');
      const until = Date.now() + 10_000;
      while (!exited && Date.now() < until) await delay(50);
      if (!exited) kill(pid, 'SIGKILL');
      await rm(dir, { recursive: true, force: true });
    },
  };
}
