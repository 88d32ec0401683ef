/**
 * Host memory as the driver (guard rails, capabilities) and the daemon sample it: /proc/meminfo (MemTotal, MemAvailable, swap) and
 * /proc/pressure/memory (PSI). Parsers are pure; the reader is a thin shell.
 */
import { readFile } from 'node:fs/promises';

/** One PSI line ("some" or "full"). */
export interface PressureLine {
  avg10: number;
  avg60: number;
  avg300: number;
  totalUs: number;
}

export interface HostMemory {
  memTotalBytes: number | null;
  memAvailableBytes: number | null;
  swapTotalBytes: number | null;
  swapFreeBytes: number | null;
  /** null when the kernel has no PSI (CONFIG_PSI off or psi=0). */
  psi: { some: PressureLine; full: PressureLine } | null;
  sampledAtS: number;
}

/** Fields of /proc/meminfo in bytes (the file says "kB" and means KiB). Pure. */
export function parseMeminfo(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z0-9_()]+):\s+(\d+)(?:\s+kB)?$/.exec(line.trim());
    if (m) out.set(m[1]!, Number(m[2]) * (line.trim().endsWith('kB') ? 1024 : 1));
  }
  return out;
}

/**
 * /proc/pressure/memory: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and the same for
 * "full" (Documentation/accounting/psi.rst). Pure; null when either line is missing or odd.
 */
export function parsePressure(text: string): { some: PressureLine; full: PressureLine } | null {
  const lines: Partial<Record<'some' | 'full', PressureLine>> = {};
  for (const line of text.split('\n')) {
    const m = /^(some|full) avg10=([0-9.]+) avg60=([0-9.]+) avg300=([0-9.]+) total=(\d+)$/.exec(line.trim());
    if (m) lines[m[1] as 'some' | 'full'] = { avg10: Number(m[2]), avg60: Number(m[3]), avg300: Number(m[4]), totalUs: Number(m[5]) };
  }
  return lines.some && lines.full ? { some: lines.some, full: lines.full } : null;
}

/** Read both files now; a file that cannot be read leaves its fields null. Never throws. */
export async function sampleHostMemory(files = { meminfo: '/proc/meminfo', pressure: '/proc/pressure/memory' }): Promise<HostMemory> {
  const [mi, pr] = await Promise.all([
    readFile(files.meminfo, 'utf8').catch(() => ''),
    readFile(files.pressure, 'utf8').catch(() => ''),
  ]);
  const m = parseMeminfo(mi);
  return {
    memTotalBytes: m.get('MemTotal') ?? null,
    memAvailableBytes: m.get('MemAvailable') ?? null,
    swapTotalBytes: m.get('SwapTotal') ?? null,
    swapFreeBytes: m.get('SwapFree') ?? null,
    psi: parsePressure(pr),
    sampledAtS: Date.now() / 1000,
  };
}

/** This host's MemAvailable in KiB, or null when /proc/meminfo cannot be read. */
export async function hostMemAvailableKiB(): Promise<number | null> {
  const bytes = parseMeminfo(await readFile('/proc/meminfo', 'utf8').catch(() => '')).get('MemAvailable');
  return bytes === undefined ? null : bytes / 1024;
}
