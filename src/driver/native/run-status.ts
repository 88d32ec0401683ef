/**
 * The runtime record of a domain (`<state>/run/<name>/status.json`) and how the domain's state
 * is derived from it plus the host: the record says what we started, /proc says whether it is
 * still there, QEMU's pidfile says whether it went away cleanly (QEMU removes its pidfile on
 * an orderly exit, so a dead process with its pidfile still present crashed or was killed).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFile, access } from 'node:fs/promises';
import type { DomainDef } from '../../domain/definition.js';
import type { RunPaths } from './paths.js';
import { writeFileAtomic } from '../../util/atomic-file.js';
import { isProcessAlive, isProcessAliveSync } from './host-process.js';
import type { Accel, StateReason } from '../api.js';

/** The states the native driver reports (a subset of api.ts's DomainState). */
export type NativeState = 'running' | 'paused' | 'shutoff';

export interface RunningRecord {
  version: 1;
  phase: 'running';
  pid: number;
  /** Process start time (clock ticks after boot): guards against pid reuse. */
  startTicks: number;
  id: number;
  accel: Accel;
  /** The -cpu model QEMU got; absent: QEMU's default (records before this field: 'max'). */
  cpuModel?: string;
  /** Why auto did not pick KVM on a host that has a KVM device. */
  accelNote?: string;
  startedAt: string;
  /** The live definition: the definition as booted plus live changes (balloon target ...). */
  live: DomainDef;
  paused?: boolean;
  /** Set when an ACPI shutdown was requested, for the reason reported afterwards. */
  shutdownRequested?: boolean;
  /** The host nodes numatune placement='auto' got at start (devices hot-added later get them too). */
  autoNodes?: number[];
}

export interface StoppedRecord {
  version: 1;
  phase: 'shutoff';
  reason: StateReason;
  stoppedAt: string;
}

export type RunRecord = RunningRecord | StoppedRecord;

/** Read the run record; null when there is none. */
export async function readRunRecord(paths: RunPaths): Promise<RunRecord | null> {
  try {
    const rec = JSON.parse(await readFile(paths.status, 'utf8')) as RunRecord;
    return rec && rec.version === 1 ? rec : null;
  } catch {
    return null;
  }
}

/**
 * Write the run record atomically. Not fsynced: a run record describes a QEMU process, which a
 * host crash ends too, and after one the record says "running" for a process that is gone, which
 * observe() already reads as crashed/shut off. So durability buys nothing, while an fsync per
 * setmem cost most of a live change's time (issue 9).
 */
export async function writeRunRecord(paths: RunPaths, rec: RunRecord): Promise<void> {
  await writeFileAtomic(paths.status, JSON.stringify(rec, null, 2) + '\n', 0o600, { durable: false });
}

/**
 * Which version of the run record is on disk (null: none): every write is a rename of a new file,
 * so inode, nanosecond mtime and size tell a later write apart. Not mtime alone, compared with
 * a clock: file times come from a coarse clock (a tick of up to 4 ms), so a record written just
 * after a moment can carry a time before it.
 */
export function runRecordVersion(paths: RunPaths): string | null {
  // Synchronous: one stat, on the hot path of a fast change (native/memory.ts).
  let st;
  try {
    st = statSync(paths.status, { bigint: true });
  } catch {
    return null;
  }
  return `${st.ino}:${st.mtimeNs}:${st.size}`;
}

/** The observed state of a domain. */
export type Observed =
  | { state: 'running' | 'paused'; reason: StateReason; record: RunningRecord }
  | { state: 'shutoff'; reason: StateReason; record: RunRecord | null; exited?: boolean };

/**
 * Derive the state from the run record and the host. `exited` is set when the record still
 * says running but the process is gone: the caller may persist the stopped record.
 */
export async function observe(paths: RunPaths): Promise<Observed> {
  const rec = await readRunRecord(paths);
  const alive = rec?.phase === 'running' && await isProcessAlive(rec.pid, rec.startTicks);
  const pidfileLeft = rec?.phase === 'running' && !alive && await access(paths.pidfile).then(() => true, () => false);
  return observed(rec, alive, pidfileLeft);
}

/**
 * observe() without the thread pool, for a listing of many domains at once (each domain costs
 * one or two small reads; 200 of them queued on the thread pool took ~15 ms).
 */
export function observeSync(paths: RunPaths): Observed {
  let rec: RunRecord | null = null;
  try {
    const r = JSON.parse(readFileSync(paths.status, 'utf8')) as RunRecord;
    rec = r && r.version === 1 ? r : null;
  } catch { /* none */ }
  const alive = rec?.phase === 'running' && isProcessAliveSync(rec.pid, rec.startTicks);
  return observed(rec, alive, rec?.phase === 'running' && !alive && existsSync(paths.pidfile));
}

/** Why a live domain of the native driver is in its state (libvirt's reasons): QEMU booted it, or the user paused it. */
export function liveReason(state: 'running' | 'paused'): 'booted' | 'user' {
  return state === 'paused' ? 'user' : 'booted';
}

/** The state a run record and the host's facts make. Pure. */
function observed(rec: RunRecord | null, alive: boolean, pidfileLeft: boolean): Observed {
  if (!rec) return { state: 'shutoff', reason: 'unknown', record: null };
  if (rec.phase === 'shutoff') return { state: 'shutoff', reason: rec.reason, record: rec };
  if (alive) return rec.paused ? { state: 'paused', reason: liveReason('paused'), record: rec } : { state: 'running', reason: liveReason('running'), record: rec };
  return { state: 'shutoff', reason: pidfileLeft ? 'crashed' : 'shutdown', record: rec, exited: true };
}
