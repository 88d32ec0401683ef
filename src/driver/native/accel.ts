/**
 * Which accelerator runs a guest, decided honestly: KVM only when it has been *seen* to run a
 * guest on this host, never because /dev/kvm merely opens. Some hosts have a /dev/kvm that opens
 * read-write but runs nothing (QEMU aborts on an MSR write, or spins after "Probing EDD" with an
 * empty console), so the only proof is a guest that gets somewhere.
 *
 * The proof is a probe: the built-in guest's kernel booted under KVM with no root file system,
 * which must reach its "Kernel panic - not syncing: VFS: Unable to mount root fs" line (the
 * kernel ran through its whole start-up in long mode) and exit (-no-reboot, panic=-1) within a
 * bound. Results are cached per host boot, host kernel, QEMU binary and probe kernel.
 *
 * libvirt semantics (https://libvirt.org/formatdomain.html#element-and-attribute-overview):
 * <domain type='kvm'> means KVM or a refusal, type='qemu' means TCG. virtmem adds 'auto'.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { homedir, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { writeFileAtomic, ensurePrivateDir } from '../../util/atomic-file.js';
import { VirtError } from '../../domain/errors.js';
import { parseAccelRequest, type AccelRequest } from '../../domain/accel.js';
import type { AccelChoice } from '../../domain/definition.js';
import type { Accel } from './qemu-argv.js';

export { parseAccelRequest, ACCEL_REQUESTS, type AccelRequest } from '../../domain/accel.js';

/** Bound on the probe guest reaching its kernel panic under KVM (it takes < 1 s where KVM works). */
export const KVM_PROBE_TIMEOUT_MS = 12_000;

/** The device opened to see whether KVM is there at all; $VIRTMEM_KVM_DEVICE in tests that fake a host. */
const kvmDevice = (env: NodeJS.ProcessEnv): string => env.VIRTMEM_KVM_DEVICE || '/dev/kvm';

/** What the probe found. */
export interface KvmStatus {
  /** The KVM device exists and opens read-write. */
  devicePresent: boolean;
  device: string;
  /** A guest was seen to run under KVM. */
  usable: boolean;
  /** Why KVM is or is not used, in one sentence. */
  reason: string;
  /** When the probe ran (ISO time); null when no guest was run (no device, no kernel). */
  probedAt: string | null;
  /** How long the probe guest took; null when none ran. */
  probeMs: number | null;
  /** The answer came from the cache. */
  cached: boolean;
}


/**
 * The accelerator a domain asks for: its own choice, else $VIRTMEM_ACCEL, else auto.
 * @throws VirtError INVALID_ARG for a bad $VIRTMEM_ACCEL.
 */
export function accelRequest(choice: AccelChoice | undefined, env: NodeJS.ProcessEnv = process.env): AccelRequest {
  if (choice) return choice;
  const fromEnv = env.VIRTMEM_ACCEL;
  return fromEnv ? parseAccelRequest(fromEnv, '$VIRTMEM_ACCEL') : 'auto';
}

/**
 * Decide the accelerator from a request and what the host offers. Pure.
 * @returns the accelerator and, when auto fell back to TCG on a host that has a KVM device, the
 *   one line that says why.
 * @throws VirtError CONFIG_UNSUPPORTED when KVM is asked for and does not work here.
 */
export function chooseAccel(request: AccelRequest, kvm: KvmStatus, domain: string): { accel: Accel; note: string | null } {
  if (request === 'tcg') return { accel: 'tcg', note: null };
  if (kvm.usable) return { accel: 'kvm', note: null };
  if (request === 'kvm') {
    throw new VirtError('CONFIG_UNSUPPORTED',
      `unsupported configuration: domain '${domain}' asks for KVM (<domain type='kvm'>, --accel kvm) but KVM does not work on this host: ${kvm.reason}; use --accel tcg (<domain type='qemu'>) for software emulation`);
  }
  return {
    accel: 'tcg',
    note: kvm.devicePresent ? `KVM not used: ${kvm.reason}; running '${domain}' under TCG (software emulation); --accel tcg skips this check` : null,
  };
}

/** Where probe results are cached: next to the built-in guest's cache. */
export function probeCachePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.VIRTMEM_PROBE_CACHE) return env.VIRTMEM_PROBE_CACHE;
  if (process.getuid?.() === 0) return '/var/cache/virtmem/kvm-probe.json';
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'virtmem', 'kvm-probe.json');
}

export interface KvmStatusOptions {
  /** The QEMU binary guests will run with. */
  emulator: string;
  /** A bootable kernel (the built-in guest's); null when there is none yet. */
  kernel: string | null;
  /** Ignore the cache and probe again. */
  refresh?: boolean;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

/** In-process memo: one probe per key per process, even when several starts ask at once. */
const memo = new Map<string, Promise<KvmStatus>>();

/**
 * Whether KVM runs guests on this host: from the cache when this host boot, kernel, QEMU binary
 * and probe kernel were probed before, else by running the probe (bounded by `timeoutMs`).
 * Never throws: every failure is a reason.
 */
export async function kvmStatus(opts: KvmStatusOptions): Promise<KvmStatus> {
  const env = opts.env ?? process.env;
  const device = kvmDevice(env);
  try {
    const fh = await open(device, 'r+');
    await fh.close();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT'
      ? `${device} does not exist (no hardware virtualization, or the kvm module is not loaded)`
      : `${device} cannot be opened read-write (${code ?? String(err)}; is this user in the kvm group?)`;
    return { devicePresent: false, device, usable: false, reason, probedAt: null, probeMs: null, cached: false };
  }
  if (!opts.kernel) {
    return {
      devicePresent: true, device, usable: false, probedAt: null, probeMs: null, cached: false,
      reason: `${device} opens, but KVM is not proven to run guests (no kernel to probe with: build the built-in guest with \`virtmem guest-build\`)`,
    };
  }
  const key = await cacheKey(device, opts.emulator, opts.kernel);
  const cachePath = probeCachePath(env);
  if (!opts.refresh) {
    const hit = (await readCache(cachePath))[key];
    if (hit) return { ...hit, cached: true };
  }
  let pending = opts.refresh ? undefined : memo.get(key);
  if (!pending) {
    pending = runProbe(device, opts.emulator, opts.kernel, opts.timeoutMs ?? KVM_PROBE_TIMEOUT_MS, opts.signal).then(async (s) => {
      if (!opts.signal?.aborted) await writeCache(cachePath, key, s).catch(() => {}); // a cache that cannot be written only costs time
      return s;
    });
    memo.set(key, pending);
    pending.catch(() => memo.delete(key));
  }
  return pending;
}

/** Everything the answer depends on: a new boot, host kernel, QEMU or probe kernel probes again. */
async function cacheKey(device: string, emulator: string, kernel: string): Promise<string> {
  const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => 'unknown')).trim();
  const id = async (p: string): Promise<string> => {
    const s = await stat(p).catch(() => null);
    return s ? `${p}:${s.size}:${Math.floor(s.mtimeMs)}` : `${p}:missing`;
  };
  return [bootId, release(), device, await id(emulator), await id(kernel)].join('|');
}

type CacheFile = Record<string, Omit<KvmStatus, 'cached'>>;

async function readCache(path: string): Promise<CacheFile> {
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v as CacheFile : {};
  } catch {
    return {};
  }
}

/** Keep the newest few entries: keys change with every host boot. */
const CACHE_ENTRIES = 16;

async function writeCache(path: string, key: string, s: KvmStatus): Promise<void> {
  const { cached: _cached, ...entry } = s;
  const all = { ...(await readCache(path)), [key]: entry };
  const kept = Object.entries(all).slice(-CACHE_ENTRIES);
  await ensurePrivateDir(dirname(path));
  await writeFileAtomic(path, JSON.stringify(Object.fromEntries(kept), null, 2) + '\n');
}

/** The kernel's line once it has run its whole start-up and found no root file system. */
const PANIC_LINE = /Kernel panic - not syncing/;

/**
 * Boot `kernel` under KVM with no root file system and watch its console (a file) until the
 * kernel panics (KVM works), QEMU exits without that (KVM broken: its stderr says why), or the
 * bound passes (KVM present but not running the guest: the console shows how far it got).
 */
async function runProbe(device: string, emulator: string, kernel: string, timeoutMs: number, signal?: AbortSignal): Promise<KvmStatus> {
  const dir = await mkdtemp(join(tmpdir(), 'virtmem-kvm-probe-'));
  const consolePath = join(dir, 'console.log');
  const argv = [
    '-machine', 'pc,accel=kvm', '-cpu', 'host', '-m', '128M', '-smp', '1',
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-kernel', kernel, '-append', 'console=ttyS0 panic=-1 loglevel=4',
    '-serial', `file:${consolePath.replaceAll(',', ',,')}`, // QEMU option syntax: a literal comma is doubled
  ];
  const t0 = Date.now();
  const base = { devicePresent: true, device, probedAt: new Date().toISOString() };
  try {
    let stderr = '';
    const outcome = await new Promise<{ kind: 'exit'; code: number | null; sig: string | null } | { kind: 'timeout' } | { kind: 'error'; err: Error }>((resolve) => {
      const child = spawn(emulator, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr.setEncoding('utf8').on('data', (c: string) => { if (stderr.length < 8192) stderr += c; });
      const timer = setTimeout(() => { child.kill('SIGKILL'); resolve({ kind: 'timeout' }); }, timeoutMs);
      const onAbort = (): void => { child.kill('SIGKILL'); };
      signal?.addEventListener('abort', onAbort, { once: true });
      child.once('error', (err) => { clearTimeout(timer); signal?.removeEventListener('abort', onAbort); resolve({ kind: 'error', err }); });
      child.once('close', (code, sig) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve({ kind: 'exit', code, sig });
      });
    });
    const probeMs = Date.now() - t0;
    const consoleText = await readFile(consolePath, 'utf8').catch(() => '');
    if (outcome.kind === 'exit' && PANIC_LINE.test(consoleText)) {
      return { ...base, usable: true, reason: `a probe guest booted under KVM in ${probeMs} ms`, probeMs, cached: false };
    }
    if (outcome.kind === 'error') {
      return { ...base, usable: false, reason: `the KVM probe could not run ${emulator}: ${outcome.err.message}`, probeMs, cached: false };
    }
    const seen = consoleSummary(consoleText);
    if (outcome.kind === 'timeout') {
      return { ...base, usable: false, probeMs, cached: false,
        reason: `KVM is present but did not run a probe guest: no progress within ${Math.round(timeoutMs / 1000)} s (${seen})` };
    }
    const said = stderr.split('\n').map((l) => l.trim()).find((l) => /error|fail|assert/i.test(l)) ?? stderr.trim().split('\n')[0] ?? '';
    return { ...base, usable: false, probeMs, cached: false,
      reason: `KVM is present but QEMU could not run a guest with it (QEMU exited ${outcome.sig ?? outcome.code}${said ? `: ${said.slice(0, 160)}` : ''}; ${seen})` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** "console empty" or "console stopped at '<last line>'", for messages. Pure. */
export function consoleSummary(consoleText: string): string {
  const lines = consoleText.split('\n').map((l) => l.replace(/^\[\s*[\d.]+\]\s*/, '').trim()).filter(Boolean);
  const last = lines.at(-1);
  if (!last) return 'console empty';
  return `console stopped at '${last.length > 100 ? `${last.slice(0, 100)}...` : last}'`;
}

/**
 * Why a guest that was started shows no sign of life, from its console and accelerator, for the
 * error a waiting caller gives instead of a bare time-out. Pure.
 */
export function bootDiagnosis(consoleText: string, accel: Accel | null): string {
  const seen = consoleSummary(consoleText);
  const reachedKernel = /Linux version|Run \/init|Freeing unused kernel/.test(consoleText);
  if (accel === 'kvm' && !reachedKernel) {
    return `KVM is present but did not run the guest (${seen}); use --accel tcg`;
  }
  if (!reachedKernel) return `the guest's kernel never started (${seen})`;
  return `the guest booted but did not answer (${seen})`;
}
