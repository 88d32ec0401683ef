/**
 * Host facts the driver needs before starting QEMU: which accelerator works and where the QEMU
 * binary is.
 */
import { access, constants, open } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';
import { VirtError } from './errors.js';
import type { Accel } from './qemu-argv.js';

let accelCache: Accel | undefined;

/** 'kvm' when /dev/kvm can be opened read-write, else 'tcg' (software emulation). */
export async function detectAccel(): Promise<Accel> {
  if (accelCache) return accelCache;
  const forced = process.env.VIRTMEM_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return (accelCache = forced);
  try {
    const fh = await open('/dev/kvm', 'r+');
    await fh.close();
    accelCache = 'kvm';
  } catch {
    accelCache = 'tcg';
  }
  return accelCache;
}

/** The default emulator binary name. */
export const DEFAULT_EMULATOR = 'qemu-system-x86_64';

/**
 * Resolve the QEMU binary: the definition's <emulator>, else $VIRTMEM_QEMU, else PATH.
 * @throws VirtError NO_SUPPORT naming the binary when it is missing or not executable.
 */
export async function resolveEmulator(emulator: string | undefined, env = process.env): Promise<string> {
  const wanted = emulator ?? env.VIRTMEM_QEMU ?? DEFAULT_EMULATOR;
  const candidates = isAbsolute(wanted)
    ? [wanted]
    : (env.PATH ?? '/usr/bin:/bin').split(delimiter).filter(Boolean).map((d) => join(d, wanted));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      /* next */
    }
  }
  throw new VirtError(
    'NO_SUPPORT',
    `Cannot find QEMU binary ${wanted}: No such file or directory (install the qemu-system-x86 package or fix <emulator>)`,
  );
}
