/**
 * The guest's own memory stall time (PSI), as the built-in guest reports it: its /init writes
 * /proc/pressure/memory to its third serial port (ttyS2) once a second, which QEMU exposes as
 * the run directory's pressure.sock. One line per report:
 *
 *   psi some avg10=0.00 avg60=0.00 avg300=0.00 total=1234 full avg10=0.00 avg60=0.00 avg300=0.00 total=567
 *
 * The feed is read by the native watch only (a QEMU socket chardev serves one client); nobody
 * listening costs the guest nothing (QEMU drops what it writes). Guests that do not write it
 * (another kernel, another init) simply never report, and the policy goes without.
 */
import { createConnection, type Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import type { GuestPressure } from '../view.js';

/** One report: cumulative stall time (µs) and the kernel's 10 s average (percent). */
export interface PsiReport {
  someTotalUs: number;
  someAvg10: number;
  fullTotalUs: number;
}


const LINE = /^psi some avg10=([\d.]+) avg60=[\d.]+ avg300=[\d.]+ total=(\d+) full avg10=[\d.]+ avg60=[\d.]+ avg300=[\d.]+ total=(\d+)\s*$/;

/** Parses one feed line; null for anything else (console noise, a torn line). Pure. */
export function parsePsiLine(line: string): PsiReport | null {
  const m = LINE.exec(line.trim());
  if (!m) return null;
  return { someAvg10: Number(m[1]), someTotalUs: Number(m[2]), fullTotalUs: Number(m[3]) };
}

/**
 * Stall share between two reports, in percent of the wall time between them (0..100). Pure.
 * A counter that went backwards (the guest rebooted) gives 0.
 */
export function stallPct(prev: { totalUs: number; atS: number }, now: { totalUs: number; atS: number }): number {
  const dt = now.atS - prev.atS;
  if (dt <= 0 || now.totalUs < prev.totalUs) return 0;
  return Math.min(100, ((now.totalUs - prev.totalUs) / 1e6 / dt) * 100);
}

/** Reads a guest's pressure feed while started; reconnects while the socket is there. Never throws. */
export class GuestPressureFeed {
  #stop = new AbortController();
  #socket: Socket | null = null;
  #loop: Promise<void> | null = null;
  #prev: { totalUs: number; atS: number } | null = null;

  constructor(private readonly path: string, private readonly onReport: (p: GuestPressure) => void, private readonly retryMs = 2_000) {}

  start(): void {
    this.#loop ??= this.#run();
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    this.#socket?.destroy();
    await this.#loop;
  }

  async #run(): Promise<void> {
    while (!this.#stop.signal.aborted) {
      await this.#session();
      await delay(this.retryMs, undefined, { signal: this.#stop.signal }).catch(() => {});
    }
  }

  /** One connection: resolves when it closes or fails (refused: the guest has no such port). */
  #session(): Promise<void> {
    return new Promise((resolve) => {
      const s = createConnection(this.path);
      this.#socket = s;
      let buf = '';
      s.setEncoding('utf8');
      s.on('data', (chunk: string) => {
        buf += chunk;
        // A guest that writes without newlines must not grow the buffer without bound.
        if (buf.length > 65_536) buf = buf.slice(-4096);
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const r = parsePsiLine(buf.slice(0, i));
          buf = buf.slice(i + 1);
          if (r) this.#report(r);
        }
      });
      s.once('error', () => {});
      s.once('close', () => { this.#socket = null; resolve(); });
    });
  }

  #report(r: PsiReport): void {
    const now = { totalUs: r.someTotalUs, atS: Date.now() / 1000 };
    const somePct = this.#prev ? stallPct(this.#prev, now) : r.someAvg10;
    this.#prev = now;
    this.onReport({ somePct, someAvg10: r.someAvg10, atS: now.atS });
  }
}
