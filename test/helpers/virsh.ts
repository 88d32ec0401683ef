/**
 * libvirt's own virsh for tests, run asynchronously: a test never blocks its event loop (which
 * may hold kept-alive connections, timers, a browser) while virsh runs. And the one way tests
 * recognise their own leftover domains in a libvirtd: by UUID, not by name.
 */
import { execFile } from 'node:child_process';

export interface VirshResult { code: number; stdout: string; stderr: string }

/**
 * virtmem's dominfo without the lines it adds below virsh's (src/cli/format.ts: where the memory
 * is, and how the host holds it). "KSM sharing" comes and goes with the host's KSM (another test
 * may turn it on meanwhile), so a comparison with virsh's dominfo leaves these out; the tests of
 * the lines themselves read them.
 */
export const virshDominfoLines = (text: string): string =>
  text.replace(/^(Boot memory|DIMMs|Hot-plugged|Memory backing|NUMA placement|Memory cgroup|KSM sharing):.*\n/gm, '');

/** `virsh -c URI ARGS...`, bounded (default 2 min); never rejects on a non-zero exit. */
export function virsh(uri: string, ...args: string[]): Promise<VirshResult> {
  return virshWith({}, uri, ...args);
}

/** virsh with a bound of its own. */
export function virshWith(opts: { timeoutMs?: number }, uri: string, ...args: string[]): Promise<VirshResult> {
  return new Promise((resolve) => {
    execFile('virsh', ['-c', uri, ...args], { encoding: 'utf8', timeout: opts.timeoutMs ?? 120_000, maxBuffer: 16 << 20, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 99) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Makes sure none of `names` is defined on `uri` before a test defines them. A domain with one
 * of the names and one of `ownUuids` is a leftover of an earlier run of the same test (killed
 * before its cleanup): it is destroyed and undefined. Any other domain with the name belongs to
 * someone else and is left alone.
 * @returns the names held by other domains (the test cannot run), empty when all are free.
 */
export async function clearOwnLeftovers(uri: string, names: readonly string[], ownUuids: readonly string[]): Promise<string[]> {
  const own = new Set(ownUuids.map((u) => u.toLowerCase()));
  const foreign: string[] = [];
  for (const name of names) {
    const r = await virsh(uri, 'domuuid', name);
    if (r.code !== 0) continue; // not defined
    if (!own.has(r.stdout.trim().toLowerCase())) { foreign.push(name); continue; }
    await virsh(uri, 'destroy', name);
    await virsh(uri, 'undefine', name);
  }
  return foreign;
}

/**
 * Destroys and undefines a test's domains, and waits until none of them is defined any more:
 * a call the test gave up on (a define that timed out on our side) may still be running in
 * libvirtd and define a domain after a first undefine. Bounded by `timeoutMs`.
 * @returns the names still defined when the bound ran out (empty when all are gone).
 */
export async function removeDomains(uri: string, names: readonly string[], timeoutMs = 90_000): Promise<string[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    for (const n of names) {
      await virsh(uri, 'destroy', n);
      await virsh(uri, 'undefine', n);
    }
    const defined = (await virsh(uri, 'list', '--all', '--name')).stdout.split('\n').map((l) => l.trim());
    const left = names.filter((n) => defined.includes(n));
    if (left.length === 0 || Date.now() > end) return left;
    await new Promise((r) => setTimeout(r, 1_000));
  }
}
