/**
 * Host facts the driver needs before starting QEMU: where the QEMU binary is (which accelerator
 * works is accel.ts's question).
 */
import { access, constants } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';
import { VirtError } from '../../domain/errors.js';

/** The default emulator binary name. */
export const DEFAULT_EMULATOR = 'qemu-system-x86_64';
/** The emulator of i686 guests without an <emulator> (libvirt's tests name it so too). */
export const I686_EMULATOR = 'qemu-system-i386';

/**
 * Resolve the QEMU binary: the definition's <emulator>, else for an i686 guest
 * qemu-system-i386 from PATH, else $VIRTMEM_QEMU, else qemu-system-x86_64 from PATH.
 * @throws VirtError NO_SUPPORT naming the binary when it is missing or not executable.
 */
export async function resolveEmulator(emulator: string | undefined, env = process.env, arch?: 'i686'): Promise<string> {
  const wanted = emulator ?? (arch === 'i686' ? I686_EMULATOR : env.VIRTMEM_QEMU ?? DEFAULT_EMULATOR);
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
    `Cannot find QEMU binary ${wanted}: No such file or directory (install the qemu-system-x86 package or fix <emulator>)${arch === 'i686' && emulator === undefined ? '; an i686 guest runs on qemu-system-i386' : ''}`,
  );
}
