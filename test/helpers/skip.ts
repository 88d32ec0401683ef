/**
 * The one rule for skipping: a test may skip on a developer's machine that lacks something
 * (a package, root, the built-in guest), never under CI, which installs and starts everything
 * the suite needs: a skip there would hide a broken setup.
 */
import { existsSync } from 'node:fs';

/**
 * The first reason given, or false when there is none.
 * @throws Error under CI (`$CI` set) when there is a reason: CI must run the test.
 */
export function skipUnlessCi(...reasons: Array<string | false | null | undefined>): string | false {
  const reason = reasons.find((r): r is string => typeof r === 'string' && r.length > 0) ?? false;
  if (reason && process.env.CI) throw new Error(`CI must run this test, but: ${reason}`);
  return reason;
}

/** 'needs root' when not root (the tests that start libvirtd, read /proc/PID/mem, reserve hugepages). */
export const notRoot = (): string | false => (process.getuid?.() !== 0 ? 'needs root' : false);

/** This machine's system libvirtd's socket: the libvirt tests drive the real libvirtd. */
export const LIBVIRT_SOCK = '/var/run/libvirt/libvirt-sock';

/** The reason when this machine's libvirtd is not running, else false. */
export const libvirtdMissing = (): string | false => (existsSync(LIBVIRT_SOCK) ? false : `libvirtd is not running (${LIBVIRT_SOCK} missing)`);

/** The reason when the built-in guest (virtmem guest-build) is not built, else false. */
export const builtInGuestMissing = (): string | false => (existsSync('/var/cache/virtmem/guest/vmlinuz') ? false : 'the built-in guest is not built (virtmem guest-build)');
