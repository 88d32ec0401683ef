/**
 * The built-in default guest: a Debian cloud kernel plus a small busybox initramfs, built from
 * Debian packages on the host and cached, so `virtmem start` needs no disk image.
 *
 * What the guest does at run time is in guest/init (serial console on ttyS0, command agent on
 * ttyS1, ACPI power button -> poweroff); the host side of the agent is ./agent.ts.
 *
 * Also a CLI: `node dist/src/guest/build.js [--force] [--dir DIR]`.
 */

import { createHash } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { access, chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { writeFileAtomic } from '../util/atomic-file.js';
import { elfIsStatic, parseModinfo } from './elf.js';
import { GuestBuildError } from './errors.js';
import {
  DEFAULT_GUEST_MODULES,
  moduleNameFromPath,
  parseDepends,
  parseModulesBuiltin,
  planModules,
  type ModuleFile,
} from './kernel-modules.js';
import { MANIFEST_FORMAT_VERSION, parseGuestManifest, serialiseGuestManifest, type GuestManifest } from './manifest.js';
import { runTool } from './run-tool.js';

/** A built default guest, ready to boot with `-kernel kernelPath -initrd initrdPath -append cmdline`. */
export interface DefaultGuest {
  /** Directory holding the guest (and its guest.json). */
  dir: string;
  kernelPath: string;
  initrdPath: string;
  cmdline: string;
  /** `uname -r` of the guest kernel. */
  kernelVersion: string;
  /** ISO 8601 time of the build. */
  builtAt: string;
  /** Whether the initramfs has /bin/vmhelper (needs gcc on the building host). */
  hasVmhelper: boolean;
  /** What it was built from (see GuestManifest.sourcesDigest); null: not recorded. */
  sourcesDigest: string | null;
  /** Kernel modules it has: loaded by /init, then built into the kernel. */
  modules: string[];
}

export interface BuildDefaultGuestOptions {
  /** Target directory; defaults to defaultGuestDir(). */
  dir?: string;
  /** Progress lines for a human. */
  log?: (line: string) => void;
  /** Rebuild even if a complete guest is already there (e.g. to pick up a kernel update). */
  force?: boolean;
  signal?: AbortSignal;
}

/**
 * Kernel command line of the default guest.
 * - console=ttyS0: kernel messages and the shell on the first serial port.
 * - memhp_default_state=online_movable: virtio-mem / DIMM memory is onlined as it is plugged,
 *   into ZONE_MOVABLE so it can be unplugged again.
 * - panic=-1: reboot at once on a panic. A kernel that waits after a panic (panic=0) spins in
 *   mdelay() forever, which under TCG burns a host core while looking "running"; a reboot
 *   instead shows up as a QMP RESET event (and as an exit when QEMU runs with -no-reboot), and
 *   the panic text stays in the console log.
 * - loglevel=4 (what `quiet` sets): warnings, errors and panics still reach the console; the
 *   ~300 lines (23 KB) of routine boot chatter per boot do not, they stay in `dmesg`. Measured
 *   under TCG it does not change boot time (~3.4 s guest uptime at agent-ready either way).
 */
export const DEFAULT_GUEST_CMDLINE = 'console=ttyS0 memhp_default_state=online_movable panic=-1 loglevel=4';

/** The metapackage that always depends on the current Debian cloud kernel. */
const KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';
const MANIFEST_FILE = 'guest.json';
const KERNEL_FILE = 'vmlinuz';
const INITRD_FILE = 'initrd.gz';
const APT_HINT = 'Check that apt works on this host: run `apt-get update` (as root) and that the Debian mirror is reachable.';

/**
 * Where the default guest lives: $VIRTMEM_GUEST_DIR if set; for root /var/cache/virtmem/guest;
 * otherwise $XDG_CACHE_HOME/virtmem/guest (default ~/.cache/virtmem/guest). Never throws.
 */
export function defaultGuestDir(): string {
  const override = process.env.VIRTMEM_GUEST_DIR;
  if (override) return override;
  if (process.getuid?.() === 0) return '/var/cache/virtmem/guest';
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(cache, 'virtmem', 'guest');
}

/**
 * The guest built in `dir` (default defaultGuestDir()), or null if there is none or it is
 * incomplete. Cheap: one small read and two stats. Never throws.
 */
export async function findDefaultGuest(dir: string = defaultGuestDir()): Promise<DefaultGuest | null> {
  let text: string;
  try {
    text = await readFile(join(dir, MANIFEST_FILE), 'utf8');
  } catch {
    return null;
  }
  const m = parseGuestManifest(text);
  if (!m) return null;
  const guest = toDefaultGuest(dir, m);
  try {
    const [k, i] = await Promise.all([stat(guest.kernelPath), stat(guest.initrdPath)]);
    if (!k.isFile() || !i.isFile() || k.size === 0 || i.size === 0) return null;
  } catch {
    return null;
  }
  return guest;
}

function toDefaultGuest(dir: string, m: GuestManifest): DefaultGuest {
  return {
    dir,
    kernelPath: join(dir, m.kernelFile),
    initrdPath: join(dir, m.initrdFile),
    cmdline: m.cmdline,
    kernelVersion: m.kernelVersion,
    builtAt: m.builtAt,
    hasVmhelper: m.hasVmhelper,
    sourcesDigest: m.sourcesDigest ?? null,
    modules: [...m.modules, ...m.builtinModules],
  };
}

/**
 * Builds the default guest into `opts.dir` (default defaultGuestDir()) from Debian packages, or
 * returns the one already there unless `opts.force`. Needs apt-get, apt-cache, dpkg-deb and cpio;
 * gcc is optional (without it there is no /bin/vmhelper). Downloads ~27 MB once.
 * Throws GuestBuildError: GUEST_APT_FAILED, GUEST_TOOL_MISSING, GUEST_BUILD_FAILED,
 * GUEST_BUILD_ABORTED.
 */
export async function buildDefaultGuest(opts: BuildDefaultGuestOptions = {}): Promise<DefaultGuest> {
  const dir = opts.dir ?? defaultGuestDir();
  const log = opts.log ?? (() => {});
  const signal = opts.signal;
  const sources = await findGuestSources();
  const digest = await guestSourcesDigest(sources);
  if (!opts.force) {
    const cached = await findDefaultGuest(dir);
    if (cached && cached.sourcesDigest === digest) {
      log(`default guest already built in ${dir} (kernel ${cached.kernelVersion}); use --force to rebuild`);
      return cached;
    }
    if (cached) log(`default guest in ${dir} was built from other sources (guest/init, guest/vmhelper.c or the module list changed): rebuilding`);
  }
  const started = Date.now();
  const work = await mkdtemp(join(tmpdir(), 'virtmem-guest-'));
  try {
    const kernelPackage = await resolveKernelPackage(signal);
    log(`kernel package: ${kernelPackage} (via ${KERNEL_METAPACKAGE})`);
    const kernelDeb = await aptDownload(kernelPackage, work, signal);
    const kernelPackageVersion = (await debField(kernelDeb, 'Version', signal)) || 'unknown';
    const pkgRoot = join(work, 'kernel');
    await extractDeb(kernelDeb, pkgRoot, signal);
    await rm(kernelDeb, { force: true });

    const { kernelVersion, vmlinuz } = await findKernelImage(pkgRoot);
    log(`kernel ${kernelVersion} (package version ${kernelPackageVersion})`);
    const plan = await planKernelModules(join(pkgRoot, 'lib', 'modules', kernelVersion));
    log(`modules to load: ${plan.load.map((m) => m.name).join(' ') || '(none)'}`);
    if (plan.builtin.length > 0) log(`built into this kernel (not loaded): ${plan.builtin.join(' ')}`);

    const busybox = await findBusybox(work, signal, log);
    const vmhelper = await compileVmhelper(sources.vmhelperC, work, signal, log);

    const root = join(work, 'root');
    await stageInitramfs(root, { init: sources.init, busybox, vmhelper, modules: plan.load });
    const initrd = await packInitramfs(root, signal);
    log(`initramfs: ${(initrd.length / 1024).toFixed(0)} KiB gzip`);

    await mkdir(dir, { recursive: true, mode: 0o755 });
    await chmod(dir, 0o755).catch(() => {}); // an existing dir we do not own keeps its mode
    const manifest: GuestManifest = {
      formatVersion: MANIFEST_FORMAT_VERSION,
      kernelFile: KERNEL_FILE,
      initrdFile: INITRD_FILE,
      cmdline: DEFAULT_GUEST_CMDLINE,
      kernelVersion,
      kernelPackage,
      kernelPackageVersion,
      modules: plan.load.map((m) => m.name),
      builtinModules: plan.builtin,
      hasVmhelper: vmhelper !== null,
      builtAt: new Date().toISOString(),
      sourcesDigest: digest,
    };
    try {
      await writeFileAtomic(join(dir, KERNEL_FILE), await readFile(vmlinuz), 0o644);
      await writeFileAtomic(join(dir, INITRD_FILE), initrd, 0o644);
      // Last: its presence is what findDefaultGuest() trusts.
      await writeFileAtomic(join(dir, MANIFEST_FILE), serialiseGuestManifest(manifest), 0o644);
    } catch (e) {
      throw new GuestBuildError('GUEST_BUILD_FAILED', `cannot write the guest into ${dir}: ${(e as Error).message}; check the directory is writable or set VIRTMEM_GUEST_DIR`, { cause: e });
    }
    log(`default guest built in ${dir} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return toDefaultGuest(dir, manifest);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * The digest a default guest built from this checkout records (GuestManifest.sourcesDigest);
 * `modules` other than DEFAULT_GUEST_MODULES gives the digest of a build with another module list.
 */
export async function defaultGuestSourcesDigest(modules: readonly string[] = DEFAULT_GUEST_MODULES): Promise<string> {
  return guestSourcesDigest(await findGuestSources(), modules);
}

/**
 * sha256 of what the initramfs is made from: the two sources, the module list, the command line.
 * A cached guest whose digest differs is rebuilt, so adding a module to DEFAULT_GUEST_MODULES is
 * enough to have every cached guest rebuilt by `guest-build` (and setup).
 */
async function guestSourcesDigest(sources: { init: string; vmhelperC: string }, modules: readonly string[] = DEFAULT_GUEST_MODULES): Promise<string> {
  const h = createHash('sha256');
  for (const part of [await readFile(sources.init), await readFile(sources.vmhelperC).catch(() => Buffer.alloc(0)), modules.join(','), DEFAULT_GUEST_CMDLINE]) {
    h.update(part).update('\0');
  }
  return h.digest('hex');
}

/** guest/init and guest/vmhelper.c of this checkout (found from this module's location). */
async function findGuestSources(): Promise<{ init: string; vmhelperC: string }> {
  // src/guest/build.ts and dist/src/guest/build.js sit 2 or 3 levels below the project root.
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const init = join(d, 'guest', 'init');
    try {
      await access(init, fsc.R_OK);
      return { init, vmhelperC: join(d, 'guest', 'vmhelper.c') };
    } catch {
      d = dirname(d);
    }
  }
  throw new GuestBuildError('GUEST_BUILD_FAILED', 'cannot find guest/init next to the virtmem installation; is the package complete?');
}

/** The versioned kernel package the cloud metapackage currently depends on. */
async function resolveKernelPackage(signal: AbortSignal | undefined): Promise<string> {
  let out: string;
  try {
    out = (
      await runTool('apt-cache', ['depends', '--no-recommends', '--no-suggests', KERNEL_METAPACKAGE], {
        timeoutMs: 60_000,
        signal,
        failCode: 'GUEST_APT_FAILED',
        packageName: 'apt',
      })
    ).stdout.toString('utf8');
  } catch (e) {
    if (e instanceof GuestBuildError && e.code === 'GUEST_APT_FAILED') {
      throw new GuestBuildError(
        'GUEST_APT_FAILED',
        `apt does not know ${KERNEL_METAPACKAGE}: the package lists are probably empty or stale. Run \`apt-get update\` (as root) and retry.`,
        { cause: e },
      );
    }
    throw e;
  }
  const pkg = pickKernelPackage(out);
  if (!pkg) {
    throw new GuestBuildError(
      'GUEST_APT_FAILED',
      `${KERNEL_METAPACKAGE} does not depend on a linux-image-*-cloud-amd64 package (apt-cache said: ${out.trim() || 'nothing'}). Run \`apt-get update\` and retry.`,
    );
  }
  return pkg;
}

/** The `linux-image-*-cloud-amd64` package in `apt-cache depends` output, or null. Pure. */
export function pickKernelPackage(aptCacheDependsOutput: string): string | null {
  for (const line of aptCacheDependsOutput.split('\n')) {
    const m = /^\s*\|?Depends:\s*(linux-image-[0-9][^\s<>]*-cloud-amd64)\s*$/.exec(line);
    if (m?.[1]) return m[1];
  }
  return null;
}

/** `apt-get download pkg` into `dir`; resolves with the .deb's path. */
async function aptDownload(pkg: string, dir: string, signal: AbortSignal | undefined): Promise<string> {
  await runTool('apt-get', ['download', pkg], {
    cwd: dir,
    timeoutMs: 15 * 60_000,
    signal,
    failCode: 'GUEST_APT_FAILED',
    hint: APT_HINT,
    packageName: 'apt',
  });
  const debs = (await readdir(dir)).filter((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (debs.length !== 1 || !debs[0]) {
    throw new GuestBuildError('GUEST_APT_FAILED', `apt-get download ${pkg} left ${debs.length} matching .deb files in ${dir}; expected one`);
  }
  return join(dir, debs[0]);
}

async function debField(deb: string, field: string, signal: AbortSignal | undefined): Promise<string> {
  const { stdout } = await runTool('dpkg-deb', ['-f', deb, field], {
    timeoutMs: 60_000,
    signal,
    failCode: 'GUEST_BUILD_FAILED',
    packageName: 'dpkg',
  });
  return stdout.toString('utf8').trim();
}

async function extractDeb(deb: string, into: string, signal: AbortSignal | undefined): Promise<void> {
  await mkdir(into, { recursive: true });
  await runTool('dpkg-deb', ['-x', deb, into], {
    timeoutMs: 5 * 60_000,
    signal,
    failCode: 'GUEST_BUILD_FAILED',
    hint: `Check free space in ${tmpdir()} (the kernel package unpacks to ~110 MB).`,
    packageName: 'dpkg',
  });
}

async function findKernelImage(pkgRoot: string): Promise<{ kernelVersion: string; vmlinuz: string }> {
  const boot = join(pkgRoot, 'boot');
  const images = (await readdir(boot).catch(() => [] as string[])).filter((f) => f.startsWith('vmlinuz-'));
  if (images.length !== 1 || !images[0]) {
    throw new GuestBuildError('GUEST_BUILD_FAILED', `expected one boot/vmlinuz-* in the kernel package, found ${images.length}`);
  }
  return { kernelVersion: images[0].slice('vmlinuz-'.length), vmlinuz: join(boot, images[0]) };
}

/**
 * Decides which of DEFAULT_GUEST_MODULES (and their dependencies) to insmod: built-ins come from
 * modules.builtin, dependencies from each module's .modinfo.
 */
async function planKernelModules(modDir: string): Promise<ReturnType<typeof planModules>> {
  const builtin = parseModulesBuiltin(await readFile(join(modDir, 'modules.builtin'), 'utf8').catch(() => ''));
  // name -> path of every module file in the package (uncompressed and compressed).
  const paths = new Map<string, string>();
  for (const rel of await readdir(join(modDir, 'kernel'), { recursive: true })) {
    const name = moduleNameFromPath(rel);
    if (name && !paths.has(name)) paths.set(name, join(modDir, 'kernel', rel));
  }
  // Read .modinfo of everything reachable from the wanted set.
  const files = new Map<string, ModuleFile>();
  const queue = [...DEFAULT_GUEST_MODULES];
  for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
    const path = paths.get(name);
    if (builtin.has(name) || files.has(name) || !path) continue;
    if (!path.endsWith('.ko')) {
      throw new GuestBuildError('GUEST_BUILD_FAILED', `module ${name} is compressed (${relative(modDir, path)}); busybox insmod needs uncompressed .ko files, which Debian 12 kernels ship`);
    }
    const info = parseModinfo(await readFile(path));
    if (!info) throw new GuestBuildError('GUEST_BUILD_FAILED', `${relative(modDir, path)} is not a kernel module (no .modinfo)`);
    const depends = parseDepends(info.get('depends'));
    files.set(name, { path, depends });
    queue.push(...depends);
  }
  const plan = planModules(DEFAULT_GUEST_MODULES, builtin, files);
  if (plan.missing.length > 0) {
    throw new GuestBuildError(
      'GUEST_BUILD_FAILED',
      `kernel in ${modDir} has neither built in nor as modules: ${plan.missing.join(' ')}; the default guest needs virtio, virtio-balloon, virtio-mem, virtio-blk and the ACPI button`,
    );
  }
  return plan;
}

/** A static busybox: the host's /bin/busybox if static (busybox-static), else downloaded. */
async function findBusybox(work: string, signal: AbortSignal | undefined, log: (l: string) => void): Promise<string> {
  for (const candidate of ['/bin/busybox', '/usr/bin/busybox']) {
    const buf = await readFile(candidate).catch(() => null);
    if (buf && elfIsStatic(buf) === true) {
      log(`busybox: ${candidate}`);
      return candidate;
    }
  }
  log('busybox: no static busybox installed, downloading busybox-static');
  const deb = await aptDownload('busybox-static', work, signal);
  const into = join(work, 'busybox-static');
  await extractDeb(deb, into, signal);
  for (const rel of ['bin/busybox', 'usr/bin/busybox']) {
    const p = join(into, rel);
    const buf = await readFile(p).catch(() => null);
    if (buf && elfIsStatic(buf) === true) return p;
  }
  throw new GuestBuildError('GUEST_BUILD_FAILED', 'the busybox-static package holds no static bin/busybox');
}

/** Compiles guest/vmhelper.c statically; null (with a log line) when gcc is not installed. */
async function compileVmhelper(
  source: string,
  work: string,
  signal: AbortSignal | undefined,
  log: (l: string) => void,
): Promise<string | null> {
  const out = join(work, 'vmhelper');
  try {
    await runTool('gcc', ['-static', '-O2', '-std=c99', '-Wall', '-o', out, source], {
      timeoutMs: 5 * 60_000,
      signal,
      failCode: 'GUEST_BUILD_FAILED',
      hint: 'Check that libc6-dev (static libc.a) is installed.',
      packageName: 'gcc',
    });
  } catch (e) {
    if (e instanceof GuestBuildError && e.code === 'GUEST_TOOL_MISSING') {
      log('gcc not found: building the guest without /bin/vmhelper (tests that need it will be skipped); install gcc and rebuild with --force to add it');
      return null;
    }
    throw e;
  }
  log('vmhelper: compiled (gcc -static)');
  return out;
}

interface InitramfsContents {
  init: string;
  busybox: string;
  vmhelper: string | null;
  modules: ReadonlyArray<{ name: string; path: string }>;
}

/** Lays out the initramfs tree under `root` (see guest/init for how it is used). */
async function stageInitramfs(root: string, c: InitramfsContents): Promise<void> {
  for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys', 'tmp', 'run', 'root', 'var/log', 'etc/virtmem', 'etc/acpi/PWRF', 'lib/modules']) {
    await mkdir(join(root, d), { recursive: true, mode: 0o755 });
  }
  await chmod(join(root, 'tmp'), 0o1777);
  await chmod(join(root, 'root'), 0o700);
  await copyWithMode(c.init, join(root, 'init'), 0o755);
  await copyWithMode(c.busybox, join(root, 'bin', 'busybox'), 0o755);
  // /init's #! line needs /bin/sh before /init has run `busybox --install`.
  await symlink('busybox', join(root, 'bin', 'sh'));
  if (c.vmhelper) await copyWithMode(c.vmhelper, join(root, 'bin', 'vmhelper'), 0o755);
  for (const m of c.modules) await copyWithMode(m.path, join(root, 'lib', 'modules', `${m.name}.ko`), 0o644);
  await writeFile(join(root, 'etc', 'virtmem', 'modules'), c.modules.map((m) => `${m.name}\n`).join(''), { mode: 0o644 });
  // busybox acpid maps the power-button key to the action "PWRF/00000080" and runs the file of
  // that name under its config dir. -f: power off now, no init to hand a runlevel change to.
  await writeFile(join(root, 'etc', 'acpi', 'PWRF', '00000080'), '#!/bin/sh\nexec poweroff -f\n', { mode: 0o755 });
}

async function copyWithMode(from: string, to: string, mode: number): Promise<void> {
  await writeFile(to, await readFile(from), { mode });
  await chmod(to, mode);
}

/** `cpio -H newc -o` of the tree at `root` (owner root, sorted), gzip-compressed. */
async function packInitramfs(root: string, signal: AbortSignal | undefined): Promise<Buffer> {
  const entries = (await readdir(root, { recursive: true })).sort();
  const list = Buffer.from(entries.map((e) => `${e}\0`).join(''));
  const { stdout } = await runTool('cpio', ['--quiet', '-o', '-H', 'newc', '--null', '-R', '0:0', '--reproducible'], {
    cwd: root,
    input: list,
    timeoutMs: 2 * 60_000,
    signal,
    failCode: 'GUEST_BUILD_FAILED',
    packageName: 'cpio',
  });
  return promisify(gzip)(stdout, { level: 9 });
}

/** CLI: `node dist/src/guest/build.js [--force] [--dir DIR]`. */
async function main(argv: string[]): Promise<number> {
  let values: { force?: boolean; dir?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { force: { type: 'boolean' }, dir: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }));
  } catch (e) {
    process.stderr.write(`error: ${(e as Error).message}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write('usage: build.js [--force] [--dir DIR]\nBuilds virtmem\'s default guest (kernel + initramfs) from Debian packages.\n');
    return 0;
  }
  const ac = new AbortController();
  const onSigint = (): void => ac.abort();
  process.once('SIGINT', onSigint);
  try {
    const g = await buildDefaultGuest({
      dir: values.dir,
      force: values.force,
      signal: ac.signal,
      log: (line) => process.stderr.write(`${line}\n`),
    });
    process.stdout.write(
      `dir:     ${g.dir}\nkernel:  ${g.kernelPath} (${g.kernelVersion})\ninitrd:  ${g.initrdPath}\ncmdline: ${g.cmdline}\nbuilt:   ${g.builtAt}\n`,
    );
    return 0;
  } catch (e) {
    const code = e instanceof GuestBuildError ? ` [${e.code}]` : '';
    process.stderr.write(`error${code}: ${(e as Error).message}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
