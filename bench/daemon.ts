/**
 * The daemon side of the benchmarks (issue 9): virtmemd started on the bench's state directory,
 * its API timed per call over the unix socket from one client process (keep-alive, as a program
 * using the API would), the bulk stats sweep and /metrics at scale, and its resident memory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { daemonRequest, closeDaemonClients, type DaemonTarget } from '../src/driver/remote/http-client.js';
import { timed } from './stats.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'bin.js');

export interface BenchDaemon {
  pid: number;
  target: DaemonTarget;
  stop(): Promise<void>;
}

/** Starts `virtmem daemon [extra...]` (Node directly, so its pid is the daemon's) and waits until it answers. */
export async function startBenchDaemon(stateDir: string, extra: readonly string[] = []): Promise<BenchDaemon> {
  const proc: ChildProcess = spawn(process.execPath, [CLI, '--state-dir', stateDir, 'daemon', ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => { err += c; });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`virtmemd did not start in 60 s: ${err}`)); }, 60_000);
    const check = (): void => { if (/watching \d+ running guest/.test(err)) { clearTimeout(t); resolve(); } };
    proc.stderr!.on('data', check);
    proc.once('exit', (code) => { clearTimeout(t); reject(new Error(`virtmemd exited ${code}: ${err}`)); });
  });
  return {
    pid: proc.pid!,
    target: { socketPath: join(stateDir, 'virtmemd.sock') },
    stop: () => new Promise<void>((resolve) => {
      closeDaemonClients();
      if (proc.exitCode !== null) { resolve(); return; }
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      proc.once('exit', () => { clearTimeout(t); resolve(); });
      proc.kill('SIGTERM');
    }),
  };
}

async function ok(t: DaemonTarget, method: string, path: string, body?: unknown): Promise<unknown> {
  const r = await daemonRequest(t, method, path, body === undefined ? {} : { body });
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${r.text}`);
  return r.body;
}

/** Waits (bounded) until the daemon watches `n` guests with current monitors. */
export async function waitWatching(t: DaemonTarget, n: number, timeoutMs = 120_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = await ok(t, 'GET', '/api/v1/stats') as { guests: Array<{ monitor: string }> };
    if (s.guests.length === n && s.guests.every((g) => g.monitor === 'connected')) return;
    if (Date.now() > end) throw new Error(`virtmemd watches ${s.guests.length} guests, not ${n}, after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Per-call times (ms) of the guest document and of a live setmem through the daemon. */
export async function apiThroughDaemon(t: DaemonTarget, domain: string, calls: number, sizesKiB: [number, number]): Promise<{ info: number[]; setmem: number[] }> {
  const path = `/api/v1/domains/${encodeURIComponent(domain)}`;
  await ok(t, 'GET', path);
  const info = await timed(calls, () => ok(t, 'GET', path));
  const setmem = await timed(calls, (i) => ok(t, 'PUT', `${path}/memory`, { targetBytes: sizesKiB[i % 2]! * 1024 }));
  return { info, setmem };
}

/** Times (ms) of the bulk stats sweep (every guest's accounting in one answer) and of /metrics. */
export async function sweepThroughDaemon(t: DaemonTarget, reps: number): Promise<{ sweep: number[]; metrics: number[] }> {
  await ok(t, 'GET', '/api/v1/stats');
  const sweep = await timed(reps, () => ok(t, 'GET', '/api/v1/stats'));
  const metrics = await timed(reps, () => ok(t, 'GET', '/metrics'));
  return { sweep, metrics };
}
