/**
 * Long-lived CLI processes for race tests (cli-worker.ts is the process): `run(argv)` hands a
 * command to one process and resolves with its exit code, output and when it ran, so two
 * commands given to two workers at once really race across processes. Every wait is bounded.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { ROOT } from './cli.js';

export interface WorkerResult {
  code: number;
  stdout: string;
  stderr: string;
  /** When the command began and ended (CLOCK_MONOTONIC ns, comparable across processes). */
  startNs: bigint;
  endNs: bigint;
}

export class CliWorker {
  readonly #proc: ChildProcess;
  readonly #waiting = new Map<number, { resolve(r: WorkerResult): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  #next = 1;
  #stderr = '';

  constructor(env: NodeJS.ProcessEnv = {}) {
    this.#proc = spawn(process.execPath, [join(ROOT, 'dist', 'test', 'helpers', 'cli-worker.js')], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env, VIRTMEM_CLI_WORKER: '1' } });
    this.#proc.stderr!.setEncoding('utf8').on('data', (s: string) => { this.#stderr = (this.#stderr + s).slice(-4000); });
    createInterface({ input: this.#proc.stdout! }).on('line', (line) => {
      const r = JSON.parse(line) as { id: number; code: number; stdout: string; stderr: string; startNs: string; endNs: string };
      const w = this.#waiting.get(r.id);
      if (!w) return;
      this.#waiting.delete(r.id);
      clearTimeout(w.timer);
      w.resolve({ code: r.code, stdout: r.stdout, stderr: r.stderr, startNs: BigInt(r.startNs), endNs: BigInt(r.endNs) });
    });
    this.#proc.once('exit', (code) => {
      for (const w of this.#waiting.values()) { clearTimeout(w.timer); w.reject(new Error(`CLI worker exited ${code}: ${this.#stderr}`)); }
      this.#waiting.clear();
    });
  }

  get pid(): number {
    return this.#proc.pid!;
  }

  /**
   * Runs `virtmem ARGV` in this worker, `offsetMs` after it gets the request (see cli-worker.ts);
   * rejects only when it does not answer within `timeoutMs`.
   */
  run(argv: string[], opts: { offsetMs?: number; timeoutMs?: number } = {}): Promise<WorkerResult> {
    const timeoutMs = opts.timeoutMs ?? 120_000;
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.#waiting.delete(id); reject(new Error(`CLI worker: no answer to ${argv.join(' ')} within ${timeoutMs} ms`)); }, timeoutMs);
      this.#waiting.set(id, { resolve, reject, timer });
      this.#proc.stdin!.write(JSON.stringify({ id, argv, ...(opts.offsetMs ? { offsetMs: opts.offsetMs } : {}) }) + '\n');
    });
  }

  /** Ends the process (stdin closed, then SIGKILL after 5 s). */
  async stop(): Promise<void> {
    if (this.#proc.exitCode !== null || this.#proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.#proc.once('exit', () => resolve()));
    this.#proc.stdin!.end();
    const t = setTimeout(() => this.#proc.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(t);
  }
}
