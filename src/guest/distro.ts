/**
 * A real distribution guest: a minimal Debian 12 (bookworm) root file system with systemd, udev
 * and the Debian cloud kernel, built with debootstrap from the Debian mirror apt is already
 * configured with (no other download), packed into a raw ext4 image without mounting anything
 * (`mke2fs -d`), and cached like the built-in guest.
 *
 * Unlike the built-in busybox guest, memory onlining is the guest's own: a udev rule onlines
 * hot-plugged blocks as movable, the kernel command line has no memhp_default_state. The balloon
 * and virtio-mem drivers are loaded by udev from their modaliases, the ACPI power button is
 * handled by systemd-logind, and a systemd service runs the same serial command agent as the
 * built-in guest (guest/debian12/virtmem-agent), so ./agent.ts talks to both.
 *
 * The cached image is a base: boot each domain from its own copy-on-write overlay
 * (createDistroOverlay), never from the base itself.
 *
 * Also a CLI through `virtmem guest-build --distro debian12`.
 */

import { constants as fsc } from 'node:fs';
import { access, chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../util/atomic-file.js';
import { defaultGuestDir } from './build.js';
import { GuestBuildError } from './errors.js';
import { runTool } from './run-tool.js';

/** The distributions `buildDistroGuest` knows. */
export type DistroName = 'debian12';
export const DISTRO_NAMES: readonly DistroName[] = ['debian12'];

/** A built distro guest: boot with -kernel/-initrd/-append and an overlay of `imagePath` as vda. */
export interface DistroGuest {
  distro: DistroName;
  dir: string;
  kernelPath: string;
  initrdPath: string;
  /** Raw ext4 root file system (the pristine base; boot from an overlay). */
  imagePath: string;
  cmdline: string;
  /** `uname -r` of the guest kernel. */
  kernelVersion: string;
  /** Debian version of the kernel package: the cache key. */
  kernelPackageVersion: string;
  /** ISO 8601 time of the build. */
  builtAt: string;
  /** How long the build took, in seconds. */
  buildS: number;
}

export interface BuildDistroGuestOptions {
  /** Target directory; defaults to distroGuestDir(distro). */
  dir?: string;
  log?: (line: string) => void;
  /** Rebuild even if a complete guest is already there. */
  force?: boolean;
  signal?: AbortSignal;
  /** apt sources files to take the mirror from (tests); default: the host's apt configuration. */
  aptSourcesFiles?: readonly string[];
}

const SUITE = 'bookworm';
/** Packages on top of debootstrap's minbase. dbus: systemd-logind (power button) needs it. */
/** The kernel metapackage: its version is the cache key. */
const KERNEL_PACKAGE = 'linux-image-cloud-amd64';
const INCLUDE = ['systemd-sysv', 'udev', 'dbus', 'kmod', KERNEL_PACKAGE, 'initramfs-tools'];
/**
 * Not needed in a test guest, and each costs boot time under TCG, where one vCPU runs everything
 * in turn (measured with systemd-analyze blame: e2scrub_reap ~10 s, each modprobe@ and debug
 * mount several seconds on a loaded host).
 */
const MASKED_UNITS = [
  'apt-daily.timer', 'apt-daily-upgrade.timer', 'e2scrub_all.timer', 'fstrim.timer', 'getty@tty1.service',
  'e2scrub_reap.service', 'modprobe@drm.service', 'modprobe@efi_pstore.service', 'modprobe@dm_mod.service',
  'modprobe@loop.service', 'sys-kernel-debug.mount', 'sys-kernel-tracing.mount',
];

/**
 * Kernel command line of the Debian guest.
 * - root=/dev/vda rw: the image is a bare ext4 file system (no partition table) on virtio-blk.
 * - console=ttyS0: kernel console and a serial getty on the first port; ttyS1 stays free for
 *   the agent (systemd starts gettys only on console= ports).
 * - panic=-1, loglevel=4: as the built-in guest (reboot on panic; boot chatter only in dmesg).
 * - No memhp_default_state: the guest's udev rule onlines hot-plugged memory.
 */
export const DEBIAN12_CMDLINE = 'console=ttyS0 root=/dev/vda rw panic=-1 loglevel=4';

const MANIFEST_FILE = 'distro.json';
const KERNEL_FILE = 'vmlinuz';
const INITRD_FILE = 'initrd.img';
const IMAGE_FILE = 'root.raw';
const MANIFEST_FORMAT = 1;
/** Free space left in the root file system on top of what the files use. */
const IMAGE_SLACK_BYTES = 512 * 1024 * 1024;

/** Where a distro guest lives: a folder named after it in the built-in guest's cache folder. */
export function distroGuestDir(distro: DistroName): string {
  return join(defaultGuestDir(), distro);
}

/** Parses the `--distro` value. Throws GuestBuildError GUEST_BUILD_FAILED naming the known ones. */
export function parseDistroName(value: string): DistroName {
  if ((DISTRO_NAMES as readonly string[]).includes(value)) return value as DistroName;
  throw new GuestBuildError('GUEST_BUILD_FAILED', `unknown distro '${value}'; known: ${DISTRO_NAMES.join(', ')}`);
}

interface DistroManifest {
  formatVersion: number;
  distro: DistroName;
  kernelFile: string;
  initrdFile: string;
  imageFile: string;
  cmdline: string;
  kernelVersion: string;
  kernelPackageVersion: string;
  mirror: string;
  builtAt: string;
  buildS: number;
}

/** The manifest in `text`, or null if it is not one this version writes. Pure. */
export function parseDistroManifest(text: string): DistroManifest | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  const m = v as Record<string, unknown>;
  if (m.formatVersion !== MANIFEST_FORMAT || !DISTRO_NAMES.includes(m.distro as DistroName)) return null;
  for (const k of ['kernelFile', 'initrdFile', 'imageFile', 'cmdline', 'kernelVersion', 'kernelPackageVersion', 'mirror', 'builtAt']) {
    if (typeof m[k] !== 'string' || m[k] === '') return null;
  }
  for (const k of ['kernelFile', 'initrdFile', 'imageFile']) {
    if ((m[k] as string).includes('/')) return null;
  }
  if (typeof m.buildS !== 'number') return null;
  return m as unknown as DistroManifest;
}

function toDistroGuest(dir: string, m: DistroManifest): DistroGuest {
  return {
    distro: m.distro,
    dir,
    kernelPath: join(dir, m.kernelFile),
    initrdPath: join(dir, m.initrdFile),
    imagePath: join(dir, m.imageFile),
    cmdline: m.cmdline,
    kernelVersion: m.kernelVersion,
    kernelPackageVersion: m.kernelPackageVersion,
    builtAt: m.builtAt,
    buildS: m.buildS,
  };
}

/** The guest built in `dir`, or null if there is none or it is incomplete. Never throws. */
export async function findDistroGuest(distro: DistroName = 'debian12', dir: string = distroGuestDir(distro)): Promise<DistroGuest | null> {
  let m: DistroManifest | null;
  try {
    m = parseDistroManifest(await readFile(join(dir, MANIFEST_FILE), 'utf8'));
  } catch {
    return null;
  }
  if (!m || m.distro !== distro) return null;
  const g = toDistroGuest(dir, m);
  try {
    for (const p of [g.kernelPath, g.initrdPath, g.imagePath]) {
      const s = await stat(p);
      if (!s.isFile() || s.size === 0) return null;
    }
  } catch {
    return null;
  }
  return g;
}

/**
 * The Debian mirror for `suite` in apt's sources: the first `deb` entry (one-line .list or
 * deb822 .sources format) that carries `suite` itself (not -updates/-security) and component
 * main. Null if there is none. Pure.
 */
export function pickDebianMirror(sources: ReadonlyArray<{ name: string; text: string }>, suite: string = SUITE): string | null {
  for (const { name, text } of sources) {
    if (name.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const fields = new Map<string, string>();
        let last = '';
        for (const raw of stanza.split('\n')) {
          if (raw.startsWith('#')) continue;
          if (/^\s/.test(raw) && last) {
            fields.set(last, `${fields.get(last)} ${raw.trim()}`);
            continue;
          }
          const m = /^([A-Za-z-]+):\s*(.*)$/.exec(raw);
          if (m) {
            last = m[1]!.toLowerCase();
            fields.set(last, m[2]!.trim());
          }
        }
        const words = (k: string): string[] => (fields.get(k) ?? '').split(/\s+/).filter(Boolean);
        if (!words('types').includes('deb')) continue;
        if ((fields.get('enabled') ?? 'yes').toLowerCase() === 'no') continue;
        if (!words('suites').includes(suite) || !words('components').includes('main')) continue;
        const uri = words('uris').find((u) => /^https?:\/\//.test(u));
        if (uri) return uri;
      }
    } else if (name.endsWith('.list')) {
      for (const raw of text.split('\n')) {
        const line = raw.replace(/#.*/, '').trim();
        // deb [options] uri suite component...
        const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$/.exec(line);
        if (!m) continue;
        if (m[2] !== suite || !m[3]!.split(/\s+/).includes('main')) continue;
        if (/^https?:\/\//.test(m[1]!)) return m[1]!;
      }
    }
  }
  return null;
}

async function hostAptSources(files?: readonly string[]): Promise<Array<{ name: string; text: string }>> {
  let names = files;
  if (!names) {
    const d = '/etc/apt/sources.list.d';
    const entries = (await readdir(d).catch(() => [] as string[])).filter((n) => n.endsWith('.list') || n.endsWith('.sources')).sort();
    names = ['/etc/apt/sources.list', ...entries.map((n) => join(d, n))];
  }
  const out: Array<{ name: string; text: string }> = [];
  for (const name of names) {
    try {
      out.push({ name, text: await readFile(name, 'utf8') });
    } catch {
      /* absent: apt ignores it too */
    }
  }
  return out;
}

/** guest/debian12 of this checkout (found from this module's location). */
async function findGuestFiles(): Promise<string> {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const dir = join(d, 'guest', 'debian12');
    try {
      await access(join(dir, 'virtmem-agent'), fsc.R_OK);
      return dir;
    } catch {
      d = dirname(d);
    }
  }
  throw new GuestBuildError('GUEST_BUILD_FAILED', 'cannot find guest/debian12 next to the virtmem installation; is the package complete?');
}

/**
 * Builds the Debian 12 guest into `opts.dir` (default distroGuestDir('debian12')), or returns the
 * one already there unless `opts.force`. Needs root (debootstrap), debootstrap and e2fsprogs.
 * The guest is built in a temporary folder next to the target and renamed into place, so a
 * reader sees the old guest or the new one, never half of one.
 * Throws GuestBuildError: GUEST_APT_FAILED (no usable mirror, debootstrap failed),
 * GUEST_TOOL_MISSING, GUEST_BUILD_FAILED, GUEST_BUILD_ABORTED.
 */
export async function buildDistroGuest(distro: DistroName, opts: BuildDistroGuestOptions = {}): Promise<DistroGuest> {
  const dir = opts.dir ?? distroGuestDir(distro);
  const log = opts.log ?? (() => {});
  const signal = opts.signal;
  if (!opts.force) {
    const cached = await findDistroGuest(distro, dir);
    if (cached) {
      // Keyed on the kernel package: rebuild when apt knows a newer one in the suite and mirror
      // debootstrap would install from (not -security: debootstrap never sees that one).
      const newer = await newerKernelInApt(cached, signal);
      if (newer === null) {
        log(`${distro} guest already built in ${dir} (kernel package ${cached.kernelPackageVersion}); use --force to rebuild`);
        return cached;
      }
      if (process.getuid?.() !== 0) {
        log(`${distro} guest in ${dir} has kernel package ${cached.kernelPackageVersion}, apt has ${newer}: using it; rebuild as root to update`);
        return cached;
      }
      log(`${distro} guest in ${dir} has kernel package ${cached.kernelPackageVersion}, apt has ${newer}: rebuilding`);
    }
  }
  if (process.getuid?.() !== 0) {
    throw new GuestBuildError('GUEST_BUILD_FAILED', `building the ${distro} guest needs root (debootstrap installs packages into a chroot); run it as root`);
  }
  const started = Date.now();
  const files = await findGuestFiles();
  const mirror = pickDebianMirror(await hostAptSources(opts.aptSourcesFiles));
  if (!mirror) {
    throw new GuestBuildError('GUEST_APT_FAILED', `no Debian mirror for '${SUITE}' (component main) in apt's sources (/etc/apt/sources.list, /etc/apt/sources.list.d); the guest is built only from apt's own mirror`);
  }
  const parent = dirname(dir);
  await mkdir(parent, { recursive: true, mode: 0o755 });
  const work = await mkdtemp(join(parent, `.${distro}-build-`));
  try {
    const root = join(work, 'root');
    log(`debootstrap ${SUITE} from ${mirror} (minbase + ${INCLUDE.join(', ')})`);
    let t = Date.now();
    await runTool('debootstrap', ['--variant=minbase', `--include=${INCLUDE.join(',')}`, SUITE, root, mirror], {
      timeoutMs: 20 * 60_000,
      signal,
      failCode: 'GUEST_APT_FAILED',
      packageName: 'debootstrap',
      hint: `Check that ${mirror} is reachable (apt-get update works).`,
    });
    log(`debootstrap done in ${((Date.now() - t) / 1000).toFixed(0)} s`);

    const kernelPackageVersion = await kernelVersionInRoot(root, signal);
    const { kernelVersion, vmlinuz, initrd } = await findBootFiles(root);
    log(`kernel ${kernelVersion} (package version ${kernelPackageVersion})`);

    await configureRoot(root, files);

    const out = join(work, 'out');
    await mkdir(out, { mode: 0o755 });
    await copyFile(vmlinuz, join(out, KERNEL_FILE));
    await copyFile(initrd, join(out, INITRD_FILE));
    // Kernel and initramfs live outside the image (QEMU boots them directly): drop them from it.
    await rm(vmlinuz);
    await rm(initrd);

    t = Date.now();
    const used = await diskUsageBytes(root, signal);
    const sizeKiB = Math.ceil((used + IMAGE_SLACK_BYTES) / 1024 / 1024) * 1024;
    await runTool('mke2fs', ['-q', '-t', 'ext4', '-L', 'virtmem-root', '-d', root, '-F', join(out, IMAGE_FILE), `${sizeKiB}k`], {
      timeoutMs: 10 * 60_000,
      signal,
      failCode: 'GUEST_BUILD_FAILED',
      packageName: 'e2fsprogs',
    });
    log(`root image ${IMAGE_FILE}: ${(sizeKiB / 1024).toFixed(0)} MiB (files ${(used / 1048576).toFixed(0)} MiB) in ${((Date.now() - t) / 1000).toFixed(0)} s`);
    await rm(root, { recursive: true, force: true });

    const manifest: DistroManifest = {
      formatVersion: MANIFEST_FORMAT,
      distro,
      kernelFile: KERNEL_FILE,
      initrdFile: INITRD_FILE,
      imageFile: IMAGE_FILE,
      cmdline: DEBIAN12_CMDLINE,
      kernelVersion,
      kernelPackageVersion,
      mirror,
      builtAt: new Date().toISOString(),
      buildS: Math.round((Date.now() - started) / 1000),
    };
    await writeFileAtomic(join(out, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n', 0o644);
    await chmod(out, 0o755);
    // Into place: move an old guest aside first (rename cannot replace a non-empty folder).
    const old = join(work, 'old');
    await rename(dir, old).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw new GuestBuildError('GUEST_BUILD_FAILED', `cannot replace ${dir}: ${e.message}`, { cause: e });
    });
    try {
      await rename(out, dir);
    } catch (e) {
      throw new GuestBuildError('GUEST_BUILD_FAILED', `cannot move the built guest into ${dir}: ${(e as Error).message}`, { cause: e });
    }
    log(`${distro} guest built in ${dir} in ${manifest.buildS} s`);
    return toDistroGuest(dir, manifest);
  } finally {
    // A debootstrap killed half way leaves /proc and /sys mounted in the chroot: unmount
    // before removing, so the removal never walks into a live file system.
    await unmountUnder(work);
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * The version of `pkg` that `apt-cache madison` lists for `suite`/main on `mirror`, or null.
 * Pure. Lines look like `pkg |  6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages`.
 */
export function madisonVersion(madison: string, pkg: string, mirror: string, suite: string = SUITE): string | null {
  const base = mirror.replace(/\/+$/, '');
  for (const line of madison.split('\n')) {
    const cols = line.split('|').map((c) => c.trim());
    if (cols.length < 3 || cols[0] !== pkg || !cols[1]) continue;
    const [uri, dist] = cols[2]!.split(/\s+/);
    if (uri?.replace(/\/+$/, '') === base && dist === `${suite}/main`) return cols[1];
  }
  return null;
}

/**
 * The kernel package version apt knows for the cached guest's mirror and suite if it is newer
 * than the cached one, else null. Null too when apt or dpkg cannot say (a usable cached guest
 * is never thrown away over a failed look-up).
 */
async function newerKernelInApt(cached: DistroGuest, signal: AbortSignal | undefined): Promise<string | null> {
  try {
    const m = parseDistroManifest(await readFile(join(cached.dir, MANIFEST_FILE), 'utf8'));
    if (!m) return null;
    const r = await runTool('apt-cache', ['madison', KERNEL_PACKAGE], { timeoutMs: 60_000, signal, failCode: 'GUEST_APT_FAILED', packageName: 'apt' });
    const avail = madisonVersion(r.stdout.toString('utf8'), KERNEL_PACKAGE, m.mirror);
    if (!avail || avail === cached.kernelPackageVersion) return null;
    // Exit 0 when avail > cached, 1 when not.
    await runTool('dpkg', ['--compare-versions', avail, 'gt', cached.kernelPackageVersion], { timeoutMs: 30_000, signal, failCode: 'GUEST_BUILD_FAILED', packageName: 'dpkg' });
    return avail;
  } catch {
    return null;
  }
}

/** Mount points strictly under `dir` in /proc/self/mounts, deepest first. Pure. */
export function mountsUnder(procMounts: string, dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return procMounts
    .split('\n')
    .map((l) => (l.split(' ')[1] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((m) => m.startsWith(prefix))
    .sort((x, y) => y.length - x.length);
}

async function unmountUnder(dir: string): Promise<void> {
  const mounts = mountsUnder(await readFile('/proc/self/mounts', 'utf8').catch(() => ''), dir);
  for (const m of mounts) {
    // Lazy: detaches even if something still has a file open there.
    await runTool('umount', ['-l', m], { timeoutMs: 30_000, failCode: 'GUEST_BUILD_FAILED', packageName: 'mount' }).catch(() => {});
  }
}

/**
 * Creates `overlayPath`, a qcow2 overlay over the guest's base image, for one domain to boot
 * from (writes land in the overlay; the base stays pristine). Needs qemu-img (qemu-utils).
 */
export async function createDistroOverlay(guest: DistroGuest, overlayPath: string, signal?: AbortSignal): Promise<void> {
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', guest.imagePath, '-F', 'raw', overlayPath], {
    timeoutMs: 60_000,
    signal,
    failCode: 'GUEST_BUILD_FAILED',
    packageName: 'qemu-utils',
  });
}

async function kernelVersionInRoot(root: string, signal: AbortSignal | undefined): Promise<string> {
  const r = await runTool('dpkg-query', ['--admindir', join(root, 'var', 'lib', 'dpkg'), '-W', '-f', '${Version}', KERNEL_PACKAGE], {
    timeoutMs: 60_000,
    signal,
    failCode: 'GUEST_BUILD_FAILED',
    packageName: 'dpkg',
  });
  const v = r.stdout.toString('utf8').trim();
  if (!v) throw new GuestBuildError('GUEST_BUILD_FAILED', 'linux-image-cloud-amd64 is not installed in the debootstrapped root');
  return v;
}

async function findBootFiles(root: string): Promise<{ kernelVersion: string; vmlinuz: string; initrd: string }> {
  const boot = join(root, 'boot');
  const names = await readdir(boot);
  const kernels = names.filter((n) => n.startsWith('vmlinuz-'));
  if (kernels.length !== 1) {
    throw new GuestBuildError('GUEST_BUILD_FAILED', `expected one kernel in the root's /boot, found ${kernels.length}: ${kernels.join(' ') || 'none'}`);
  }
  const kernelVersion = kernels[0]!.slice('vmlinuz-'.length);
  const initrd = join(boot, `initrd.img-${kernelVersion}`);
  try {
    await access(initrd, fsc.R_OK);
  } catch {
    throw new GuestBuildError('GUEST_BUILD_FAILED', `the kernel package did not leave an initramfs (${initrd}); is initramfs-tools installed in the root?`);
  }
  return { kernelVersion, vmlinuz: join(boot, kernels[0]!), initrd };
}

/** Puts virtmem's files into the root and sets it up to boot on QEMU with no further input. */
async function configureRoot(root: string, files: string): Promise<void> {
  const p = (...parts: string[]): string => join(root, ...parts);
  await copyFile(join(files, 'virtmem-agent'), p('usr', 'local', 'sbin', 'virtmem-agent'));
  await chmod(p('usr', 'local', 'sbin', 'virtmem-agent'), 0o755);
  await copyFile(join(files, 'virtmem-agent.service'), p('etc', 'systemd', 'system', 'virtmem-agent.service'));
  await copyFile(join(files, '80-virtmem-memory-online.rules'), p('etc', 'udev', 'rules.d', '80-virtmem-memory-online.rules'));
  // `systemctl enable` without running anything in the chroot: the link it would make.
  const wants = p('etc', 'systemd', 'system', 'multi-user.target.wants');
  await mkdir(wants, { recursive: true });
  await symlink('/etc/systemd/system/virtmem-agent.service', join(wants, 'virtmem-agent.service'));
  for (const unit of MASKED_UNITS) {
    await rm(p('etc', 'systemd', 'system', unit), { force: true });
    await symlink('/dev/null', p('etc', 'systemd', 'system', unit));
  }
  await writeFile(p('etc', 'fstab'), '# virtmem: the root is /dev/vda (root= on the kernel command line)\n/dev/vda / ext4 rw,errors=remount-ro 0 0\n');
  await writeFile(p('etc', 'hostname'), 'virtmem-debian12\n');
  // Root logs in on the serial console without a password (a test guest on a local socket).
  const shadow = await readFile(p('etc', 'shadow'), 'utf8');
  await writeFile(p('etc', 'shadow'), shadow.replace(/^root:[^:]*:/m, 'root::'));
  // Package downloads and lists are not needed at run time.
  await rm(p('var', 'cache', 'apt', 'archives'), { recursive: true, force: true });
  await mkdir(p('var', 'cache', 'apt', 'archives', 'partial'), { recursive: true });
  for (const n of await readdir(p('var', 'lib', 'apt', 'lists')).catch(() => [] as string[])) {
    if (n !== 'partial' && n !== 'lock') await rm(p('var', 'lib', 'apt', 'lists', n), { force: true, recursive: true });
  }
}

async function diskUsageBytes(root: string, signal: AbortSignal | undefined): Promise<number> {
  const r = await runTool('du', ['-s', '-B1', '--apparent-size', root], { timeoutMs: 120_000, signal, failCode: 'GUEST_BUILD_FAILED' });
  const n = Number(r.stdout.toString('utf8').split('\t')[0]);
  if (!Number.isFinite(n) || n <= 0) throw new GuestBuildError('GUEST_BUILD_FAILED', `cannot measure the size of ${root}`);
  return n;
}
