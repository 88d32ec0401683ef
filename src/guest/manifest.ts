/**
 * `guest.json`: the manifest of a built default guest. It is written last (atomically), so its
 * presence means the kernel and initramfs it names are complete. File names are relative to the
 * manifest's directory so the cache directory can be moved.
 */

export const MANIFEST_FORMAT_VERSION = 1 as const;

export interface GuestManifest {
  formatVersion: typeof MANIFEST_FORMAT_VERSION;
  /** Kernel image file name inside the guest directory. */
  kernelFile: string;
  /** gzip-compressed newc cpio initramfs file name inside the guest directory. */
  initrdFile: string;
  /** Kernel command line the guest is meant to boot with. */
  cmdline: string;
  /** `uname -r` of the kernel, e.g. "6.1.0-56-cloud-amd64". */
  kernelVersion: string;
  /** Debian package the kernel came from, and its version. */
  kernelPackage: string;
  kernelPackageVersion: string;
  /** Modules insmod-ed by /init, in order. */
  modules: string[];
  /** Wanted modules that this kernel has built in (nothing to load). */
  builtinModules: string[];
  /** Whether /bin/vmhelper is in the initramfs (gcc was available at build time). */
  hasVmhelper: boolean;
  /** ISO 8601 time of the build. */
  builtAt: string;
  /**
   * sha256 of what the initramfs was made from in this checkout (guest/init, guest/vmhelper.c,
   * the module list, the command line): a guest built from other sources is rebuilt by
   * `guest-build`. Absent in guests built before it was recorded (those count as out of date).
   */
  sourcesDigest?: string;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString);
/** A plain file name: the manifest may not point outside its own directory. */
const isFileName = (v: unknown): v is string => isString(v) && v.length > 0 && !v.includes('/') && v !== '.' && v !== '..';

/** Parses and validates a manifest; null for anything that is not a complete, current one. */
export function parseGuestManifest(text: string): GuestManifest | null {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return null;
  const m = raw as Record<string, unknown>;
  if (m.formatVersion !== MANIFEST_FORMAT_VERSION) return null;
  if (!isFileName(m.kernelFile) || !isFileName(m.initrdFile)) return null;
  if (!isString(m.cmdline) || !isString(m.kernelVersion) || !isString(m.builtAt)) return null;
  if (!isString(m.kernelPackage) || !isString(m.kernelPackageVersion)) return null;
  if (!isStringArray(m.modules) || !isStringArray(m.builtinModules)) return null;
  if (typeof m.hasVmhelper !== 'boolean') return null;
  return {
    formatVersion: MANIFEST_FORMAT_VERSION,
    kernelFile: m.kernelFile,
    initrdFile: m.initrdFile,
    cmdline: m.cmdline,
    kernelVersion: m.kernelVersion,
    kernelPackage: m.kernelPackage,
    kernelPackageVersion: m.kernelPackageVersion,
    modules: m.modules,
    builtinModules: m.builtinModules,
    hasVmhelper: m.hasVmhelper,
    builtAt: m.builtAt,
    ...(isString(m.sourcesDigest) ? { sourcesDigest: m.sourcesDigest } : {}),
  };
}

/** The manifest as written to disk (stable key order, trailing newline). */
export function serialiseGuestManifest(m: GuestManifest): string {
  return `${JSON.stringify(m, null, 2)}\n`;
}
