/**
 * Runs the host tools the guest build needs (apt-get, dpkg-deb, cpio, gcc) with argv arrays,
 * a time bound and an AbortSignal, and turns every way they can fail into a GuestBuildError.
 */

import { spawn } from 'node:child_process';
import { GuestBuildError, type GuestBuildErrorCode } from './errors.js';

export interface RunToolOptions {
  cwd?: string;
  /** Bytes written to the child's stdin, which is then closed. */
  input?: Buffer;
  /** Killed (SIGKILL) after this long. */
  timeoutMs: number;
  signal?: AbortSignal;
  /** Code of the error thrown when the tool runs but fails (exit status, timeout). */
  failCode: GuestBuildErrorCode;
  /** What to tell the user to check when it fails, appended to the message. */
  hint?: string;
  /** Debian package providing the tool, named when it is not installed. */
  packageName?: string;
}

export interface ToolResult {
  stdout: Buffer;
  stderr: string;
}

/**
 * Runs `file args...` and resolves with its output when it exits 0.
 * Throws GuestBuildError: GUEST_TOOL_MISSING (not installed), GUEST_BUILD_ABORTED (signal),
 * `opts.failCode` (non-zero exit, killed by a signal, timed out).
 */
export function runTool(file: string, args: readonly string[], opts: RunToolOptions): Promise<ToolResult> {
  const what = [file, ...args].join(' ');
  return new Promise<ToolResult>((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(new GuestBuildError('GUEST_BUILD_ABORTED', `guest build aborted before running ${file}`));
      return;
    }
    const child = spawn(file, [...args], {
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let settled = false;
    let timedOut = false;
    let aborted = false;
    const finish = (e: GuestBuildError | null, result?: ToolResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (e) reject(e);
      else resolve(result as ToolResult);
    };
    const onAbort = (): void => {
      aborted = true;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    // EPIPE when the tool exits without reading all input is reported through its exit status.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? Buffer.alloc(0));

    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') {
        const pkg = opts.packageName ? ` (Debian package ${opts.packageName})` : '';
        finish(new GuestBuildError('GUEST_TOOL_MISSING', `${file} is not installed${pkg}; install it and retry`, { cause: e }));
      } else {
        finish(new GuestBuildError(opts.failCode, `could not run ${file}: ${e.message}`, { cause: e }));
      }
    });
    child.on('close', (code, sig) => {
      const stderr = Buffer.concat(err).toString('utf8');
      if (aborted) {
        finish(new GuestBuildError('GUEST_BUILD_ABORTED', `guest build aborted while running ${file}`));
      } else if (timedOut) {
        finish(new GuestBuildError(opts.failCode, `${what} did not finish within ${Math.round(opts.timeoutMs / 1000)} s${hint(opts)}`));
      } else if (code !== 0) {
        const status = sig ? `was killed by ${sig}` : `exited with status ${code}`;
        const tail = lastLines(stderr, 6);
        finish(new GuestBuildError(opts.failCode, `${what} ${status}${tail ? `:\n${tail}` : ''}${hint(opts)}`));
      } else {
        finish(null, { stdout: Buffer.concat(out), stderr });
      }
    });
  });
}

function hint(opts: RunToolOptions): string {
  return opts.hint ? `\n${opts.hint}` : '';
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}
