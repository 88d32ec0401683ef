/**
 * Bounded polling for tests: read until a condition holds, or fail with the last value read.
 * For states a test cannot wait on as an event (a guest's size, a page against the API).
 */
import { setTimeout as delay } from 'node:timers/promises';

/**
 * Polls `read` every `intervalMs` (500 ms) until `ok`; every value goes through `each` first.
 * @throws Error naming `what` and the last value when `ok` does not hold within `timeoutMs`.
 */
export async function until<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, each: (v: T) => void = () => {}, timeoutMs = 120_000, intervalMs = 500): Promise<T> {
  const end = Date.now() + timeoutMs;
  let v = await read();
  for (;;) {
    each(v);
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs / 1000} s (last ${JSON.stringify(v)})`);
    await delay(intervalMs);
    v = await read();
  }
}
