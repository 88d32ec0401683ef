/**
 * Test harness: runs the `virtmem` command exactly as a user does (bin/virtmem executed
 * directly, so short commands go through the warm CLI process as they do for users) against a
 * private, short-lived state directory, and cleans up every QEMU it started.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (dist/test/helpers -> ../../..). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BIN = join(ROOT, 'bin', 'virtmem');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Sandbox {
  stateDir: string;
  /** Run `virtmem ARGS` in this sandbox. Never rejects on a non-zero exit. */
  run(...args: string[]): Promise<RunResult>;
  /** Like run, but fails the test with the output when the exit code is not 0. */
  ok(...args: string[]): Promise<string>;
  /** Kill every QEMU started in this sandbox and remove it. */
  cleanup(): Promise<void>;
}

/** Run the CLI with a bound (default 3 min) so a hang fails the test instead of stalling CI. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(BIN, args, { env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 180_000, maxBuffer: 16 << 20, ...(opts.cwd ? { cwd: opts.cwd } : {}) }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 99) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A fresh state directory (short path: unix socket paths are limited to 107 bytes). */
export async function sandbox(opts: { env?: NodeJS.ProcessEnv } = {}): Promise<Sandbox> {
  const stateDir = await mkdtemp(join(tmpdir(), 'vm-'));
  const run = (...args: string[]): Promise<RunResult> => runCli(['--state-dir', stateDir, ...args], opts.env ? { env: opts.env } : {});
  return {
    stateDir,
    run,
    async ok(...args) {
      const r = await run(...args);
      if (r.code !== 0) throw new Error(`virtmem ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
      return r.stdout;
    },
    async cleanup() {
      const runDir = join(stateDir, 'run');
      for (const name of await readdir(runDir).catch(() => [] as string[])) {
        try {
          const rec = JSON.parse(await readFile(join(runDir, name, 'status.json'), 'utf8')) as { phase: string; pid?: number };
          if (rec.phase === 'running' && rec.pid) process.kill(rec.pid, 'SIGKILL');
        } catch { /* not running */ }
      }
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** Parse `dominfo` output into a map. */
export function parseDominfo(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}
