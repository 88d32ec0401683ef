/**
 * Following a set-memory operation from the page: start it through the API (202 + an operation
 * to poll), then poll the operation until it ends, reporting how far the guest has got between
 * where it started and the target. Every poll is bounded, and so is the whole wait.
 */
import { api, type GuestRef } from './api.js';
import { fractionDone, type OperationView } from './model.js';
import { formatBytes } from './format.js';

export interface ProgressUpdate {
  state: OperationView['state'];
  /** 0..1 of the way from the starting size to the target. */
  fraction: number;
  actualBytes: number | null;
  targetBytes: number;
  text: string;
}

const POLL_MS = 500;
/** Longest the page follows one operation (the daemon has its own, shorter, bound). */
const GIVE_UP_MS = 15 * 60_000;

function describe(op: OperationView): string {
  const where = `${formatBytes(op.actualBytes)} of ${formatBytes(op.targetBytes)}`;
  if (op.state === 'succeeded') return `Reached ${formatBytes(op.targetBytes)}.`;
  if (op.state === 'failed') return `Failed at ${formatBytes(op.actualBytes)}: ${op.message ?? 'the daemon gave no reason'}`;
  if (op.stuck) return `Stuck at ${formatBytes(op.actualBytes)} of ${formatBytes(op.targetBytes)}: ${op.message ?? 'nothing moved'}`;
  return `Resizing… ${where}`;
}

/**
 * Starts setting guest `g`'s memory to `targetBytes` (on its own host) and calls `onUpdate`
 * until the operation ends.
 * @throws Error when the daemon refuses to start it (its message says why) or stops answering.
 */
export async function followOperation(g: GuestRef, targetBytes: number, onUpdate: (p: ProgressUpdate) => void): Promise<void> {
  let op = await api.startSetMemory(g, targetBytes);
  const deadline = Date.now() + GIVE_UP_MS;
  for (;;) {
    onUpdate({ state: op.state, fraction: fractionDone(op), actualBytes: op.actualBytes, targetBytes: op.targetBytes, text: describe(op) });
    if (op.state !== 'running') return;
    if (Date.now() > deadline) throw new Error(`gave up following the resize after ${GIVE_UP_MS / 60_000} minutes; it may still be running in the daemon`);
    await new Promise((r) => setTimeout(r, POLL_MS));
    op = await api.operation(op.id);
  }
}
