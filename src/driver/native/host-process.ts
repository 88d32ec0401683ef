/**
 * Facts about host processes read from /proc: liveness (with protection against PID reuse),
 * CPU time and resident memory of a QEMU process.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/** Fields of /proc/PID/stat we use. */
export interface ProcStat {
  state: string;
  /** utime + stime in clock ticks. */
  cpuTicks: number;
  /** Start time after boot in clock ticks: with the pid, identifies the process uniquely. */
  startTicks: number;
}

/** Linux USER_HZ; 100 on every mainstream architecture configuration. */
export const CLOCK_TICKS_PER_S = 100;

/** Parse /proc/PID/stat text. Pure. Returns null when the text is not in the expected form. */
export function parseProcStat(text: string): ProcStat | null {
  // The command name (field 2) is in parentheses and may itself contain spaces and ')'.
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const rest = text.slice(close + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14, stime 15, starttime 22.
  const state = rest[0];
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  const start = Number(rest[19]);
  if (!state || !Number.isFinite(utime) || !Number.isFinite(stime) || !Number.isFinite(start)) return null;
  return { state, cpuTicks: utime + stime, startTicks: start };
}

/** Read /proc/PID/stat; null when the process does not exist. */
export async function readProcStat(pid: number): Promise<ProcStat | null> {
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * Is the process with this pid (and, when given, this start time) alive? Zombies count as dead:
 * an exited QEMU whose parent has not reaped it yet is gone for every purpose of ours.
 */
export async function isProcessAlive(pid: number, startTicks?: number): Promise<boolean> {
  const st = await readProcStat(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return false;
  return startTicks === undefined || st.startTicks === startTicks;
}

/**
 * isProcessAlive without the thread pool: one small read of /proc, for a caller that asks about
 * many processes at once (list of 200 guests) and would otherwise queue 200 reads.
 */
export function isProcessAliveSync(pid: number, startTicks?: number): boolean {
  let st: ProcStat | null;
  try {
    st = parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
  if (!st || st.state === 'Z' || st.state === 'X') return false;
  return startTicks === undefined || st.startTicks === startTicks;
}

/** Resident set size of a process in KiB (VmRSS), or null if unknown. */
export async function readRssKiB(pid: number): Promise<number | null> {
  try {
    const text = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(text);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
