/**
 * Starts `virtmem daemon` (bin/virtmem, as users run it) on a sandbox's state directory and
 * stops it; every wait bounded.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { after } from 'node:test';
import { BIN, sandbox, type Sandbox } from './cli.js';
import { closeDaemonClients } from '../../src/driver/remote/http-client.js';

export interface RunningDaemon {
  proc: ChildProcess;
  socketPath: string;
  /** The TCP port when started with one. */
  port: number | null;
  stderr(): string;
  /** SIGTERM, then SIGKILL after 15 s; resolves with the exit code. */
  stop(): Promise<number | null>;
}

export async function startDaemon(stateDir: string, extra: string[] = [], timeoutMs = 60_000): Promise<RunningDaemon> {
  const proc = spawn(BIN, ['--state-dir', stateDir, 'daemon', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => { err += c; });
  proc.stdout!.resume();
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`daemon did not start within ${timeoutMs} ms: ${err}`)); }, timeoutMs);
    const check = (): void => { if (/watching \d+ running guest/.test(err)) { clearTimeout(t); proc.stderr!.off('data', check); resolve(); } };
    proc.stderr!.on('data', check);
    proc.once('exit', (code) => { clearTimeout(t); reject(new Error(`daemon exited ${code}: ${err}`)); });
  });
  const m = /listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(err);
  return {
    proc, socketPath: join(stateDir, 'virtmemd.sock'), port: m ? Number(m[1]) : null,
    stderr: () => err,
    stop: () => new Promise((resolve) => {
      if (proc.exitCode !== null) { resolve(proc.exitCode); return; }
      const t = setTimeout(() => proc.kill('SIGKILL'), 15_000);
      proc.once('exit', (code) => { clearTimeout(t); resolve(code); });
      proc.kill('SIGTERM');
    }),
  };
}

/**
 * A sandbox whose daemon the test starts when it needs it; after the file's tests the daemon
 * is stopped (resumed first, should a test have left it stopped), and the sandbox removed.
 */
export async function sandboxWithDaemon(): Promise<{ sb: Sandbox; start(extra?: string[]): Promise<RunningDaemon>; daemon(): RunningDaemon }> {
  const sb = await sandbox();
  let d: RunningDaemon | null = null;
  after(async () => {
    closeDaemonClients();
    if (d) { d.proc.kill('SIGCONT'); await d.stop(); }
    await sb.cleanup();
  });
  return {
    sb,
    start: async (extra = []) => (d = await startDaemon(sb.stateDir, extra)),
    daemon: () => { if (!d) throw new Error('the daemon was not started'); return d; },
  };
}

/** Collects the SSE stream's events until `stop()`. */
export function openEvents(t: { socketPath?: string }): { events: Array<{ type: string; data: any }>; stop(): void; ready: Promise<void> } {
  const events: Array<{ type: string; data: any }> = [];
  let buf = '';
  let onReady!: () => void;
  const ready = new Promise<void>((r) => { onReady = r; });
  const req = request({ socketPath: t.socketPath!, path: '/api/v1/events', headers: { host: 'localhost' } }, (res) => {
    if (res.statusCode !== 200 || !/^text\/event-stream/.test(String(res.headers['content-type']))) throw new Error(`/api/v1/events answered ${res.statusCode} ${String(res.headers['content-type'])}`);
    res.setEncoding('utf8').on('data', (c: string) => {
      buf += c;
      if (buf.includes(': connected')) onReady();
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const type = /^event: (.+)$/m.exec(block)?.[1];
        const data = /^data: (.+)$/m.exec(block)?.[1];
        if (type && data) events.push({ type, data: JSON.parse(data) });
      }
    });
  });
  req.on('error', () => {});
  req.end();
  return { events, stop: () => req.destroy(), ready };
}
