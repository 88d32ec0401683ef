/**
 * The one rule for skipping: a test may skip on a developer's machine that lacks something
 * (a package, root, the built-in guest), never under CI, which installs and starts everything
 * the suite needs: a skip there would hide a broken setup.
 */

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
