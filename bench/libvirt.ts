/**
 * The libvirt side of the benchmarks: installing and starting libvirt (Debian packages;
 * `libvirtd` and `virtlogd` on their local unix sockets only), one-shot `virsh` calls and a
 * long-lived `virsh` process that runs many commands (libvirt's "one process, many calls").
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';

export const URI = 'qemu:///system';
const VIRSH_ENV = { ...process.env, LC_ALL: 'C', LIBVIRT_DEFAULT_URI: URI };

/** Run one virsh command; throws with its stderr when it fails. */
export function virsh(...args: string[]): string {
  const r = spawnSync('virsh', ['-c', URI, ...args], { env: VIRSH_ENV, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`virsh ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function pidOf(name: string): number | null {
  const r = spawnSync('pgrep', ['-x', name], { encoding: 'utf8' });
  const pid = Number(r.stdout.trim().split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

export interface LibvirtHandle {
  libvirtdPid: number;
  virtlogdPid: number | null;
  /** Daemons this run started (stopped again at the end). */
  started: number[];
}

/**
 * Make sure virsh, libvirtd and virtlogd are installed (apt-get, as root) and running, and that
 * qemu:///system answers.
 * @throws Error when not root and something is missing, or libvirtd does not come up in 30 s.
 */
export async function ensureLibvirt(log: (s: string) => void): Promise<LibvirtHandle> {
  if (!have('virsh') || !existsSync('/usr/sbin/libvirtd') || !existsSync('/usr/sbin/virtlogd')) {
    if (process.getuid?.() !== 0) throw new Error('libvirt is not installed; run as root (apt-get install libvirt-daemon-system libvirt-clients)');
    log('installing libvirt (libvirt-daemon-system, libvirt-clients) from Debian');
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    for (const argv of [['update', '-qq'], ['install', '-y', '-qq', '--no-install-recommends', 'libvirt-daemon-system', 'libvirt-clients']]) {
      const r = spawnSync('apt-get', argv, { env, stdio: ['ignore', 'ignore', 'inherit'] });
      if (r.status !== 0) throw new Error(`apt-get ${argv.join(' ')} failed`);
    }
  }
  const started: number[] = [];
  // Without --listen, libvirtd serves only its unix sockets (/run/libvirt/libvirt-sock*).
  for (const daemon of ['virtlogd', 'libvirtd']) {
    if (pidOf(daemon) !== null) continue;
    log(`starting ${daemon} -d (local unix sockets only)`);
    const r = spawnSync(`/usr/sbin/${daemon}`, ['-d'], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`${daemon} -d failed`);
    const pid = pidOf(daemon);
    if (pid !== null) started.push(pid);
  }
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = spawnSync('virsh', ['-c', URI, 'uri'], { env: VIRSH_ENV, stdio: 'ignore', timeout: 10_000 });
    if (r.status === 0) break;
    if (Date.now() > deadline) throw new Error('libvirtd does not answer on qemu:///system after 30 s');
    await delay(200);
  }
  const libvirtdPid = pidOf('libvirtd');
  if (libvirtdPid === null) throw new Error('libvirtd answers but its process was not found');
  return { libvirtdPid, virtlogdPid: pidOf('virtlogd'), started };
}

/** Resident and peak resident memory of a process, MiB. */
export async function processMemory(pid: number): Promise<{ rssMiB: number; hwmMiB: number } | null> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => null);
  if (!status) return null;
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMiB: kib('VmRSS') / 1024, hwmMiB: kib('VmHWM') / 1024 };
}

const END = '__virtmem_bench_end__';

/**
 * One long-lived `virsh` process reading commands from a pipe, as libvirt's "many calls in one
 * process": after each command we send `echo END` and wait for that line, so every call is timed
 * on its own.
 */
export class VirshSession {
  #child: ChildProcessWithoutNullStreams;
  #out = '';
  #err = '';
  #waiter: (() => void) | null = null;
  #exited = false;

  constructor() {
    // stdbuf: virsh's stdout to a pipe is block-buffered; each answer must arrive when it is done.
    this.#child = spawn('stdbuf', ['-oL', '-eL', 'virsh', '-q', '-c', URI], { env: VIRSH_ENV });
    this.#child.stdout.setEncoding('utf8').on('data', (s: string) => { this.#out += s; this.#waiter?.(); });
    this.#child.stderr.setEncoding('utf8').on('data', (s: string) => { this.#err += s; });
    this.#child.on('exit', () => { this.#exited = true; this.#waiter?.(); });
  }

  /**
   * Run one virsh command line (virsh quoting) and return its output.
   * @throws Error when virsh wrote an error, exited, or did not answer within `timeoutMs`.
   */
  async run(line: string, timeoutMs = 120_000): Promise<string> {
    this.#out = '';
    this.#err = '';
    this.#child.stdin.write(`${line}\necho ${END}\n`);
    // virsh prints the newline after `echo`'s text only with its next prompt.
    const marker = `\n${END}`;
    const deadline = Date.now() + timeoutMs;
    while (!this.#out.includes(marker)) {
      if (this.#exited) throw new Error(`virsh exited during '${line}': ${this.#err}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`virsh did not answer '${line}' within ${timeoutMs} ms`);
      const ac = new AbortController();
      await Promise.race([
        new Promise<void>((resolve) => { this.#waiter = resolve; }),
        delay(left, undefined, { signal: ac.signal }).catch(() => {}),
      ]);
      ac.abort();
      this.#waiter = null;
    }
    if (this.#err.includes('error:')) throw new Error(`virsh '${line}': ${this.#err.trim()}`);
    // Output between the echoed command and the marker (virsh echoes the prompt and command).
    return this.#out.slice(0, this.#out.indexOf(marker));
  }

  async close(): Promise<void> {
    if (this.#exited) return;
    this.#child.stdin.end('quit\n');
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { this.#child.kill('SIGKILL'); resolve(); }, 5_000);
      this.#child.once('exit', () => { clearTimeout(t); resolve(); });
      if (this.#exited) { clearTimeout(t); resolve(); }
    });
  }
}
