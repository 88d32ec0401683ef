/**
 * Long-running changes the API answered 202 for: their progress, why they are stuck, how they
 * ended. A new memory change for a guest supersedes the one still running for it (its wait is
 * aborted and it fails naming its successor), so concurrent clients never wait on a target
 * nobody wants any more. Ended operations are kept for `keepMs`, then forgotten.
 */

export type OperationState = 'running' | 'succeeded' | 'failed';

export interface Operation {
  id: string;
  kind: 'set-memory';
  domain: string;
  /** The host's key ('local' for virtmem's own guests). */
  host: string;
  state: OperationState;
  startBytes: number | null;
  targetBytes: number;
  actualBytes: number | null;
  message: string | null;
  /** The stable code of why it failed (a VirtError code: NOT_REACHED, ABORTED, ...), when it failed. */
  code: string | null;
  stuck: boolean;
  createdAtS: number;
  updatedAtS: number;
  /** Last time actualBytes moved (for "stuck"). */
  movedAtS: number;
  abort: AbortController;
}

export type OperationListener = (op: Operation) => void;

export class OperationRegistry {
  /** Every kept operation, oldest first. */
  #ops = new Map<string, Operation>();
  /** The running operation of each guest (host and domain): at most one. */
  #running = new Map<string, Operation>();
  #next = 1;
  #listeners = new Set<OperationListener>();

  constructor(private readonly opts: { keepMs: number; stuckAfterMs: number; maxKept: number } = { keepMs: 600_000, stuckAfterMs: 5_000, maxKept: 1000 }) {}

  onChange(l: OperationListener): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  #emit(op: Operation): void {
    for (const l of this.#listeners) l(op);
  }

  /** Starts a set-memory operation for `domain`; a running one for the same domain is superseded. */
  start(domain: string, targetBytes: number, startBytes: number | null, nowS = Date.now() / 1000, abort = new AbortController(), host = 'local'): Operation {
    this.#prune(nowS);
    const id = `op-${this.#next++}`;
    const key = `${host}\u0000${domain}`;
    const other = this.#running.get(key);
    if (other) {
      this.fail(other, `superseded by ${id} (new target ${targetBytes} bytes)`, nowS, 'ABORTED');
      // With its reason (a default reason is a DOMException, slow to make on every change).
      other.abort.abort(new Error(`superseded by ${id}`));
    }
    const op: Operation = {
      id, kind: 'set-memory', domain, host, state: 'running', startBytes, targetBytes, actualBytes: startBytes, message: null, code: null,
      stuck: false, createdAtS: nowS, updatedAtS: nowS, movedAtS: nowS, abort,
    };
    this.#ops.set(id, op);
    this.#running.set(key, op);
    this.#emit(op);
    return op;
  }

  get(id: string): Operation | null {
    return this.#ops.get(id) ?? null;
  }

  /** Progress: where the guest is now. */
  progress(op: Operation, actualBytes: number, nowS = Date.now() / 1000): void {
    if (op.state !== 'running') return;
    if (op.actualBytes !== actualBytes) { op.actualBytes = actualBytes; op.movedAtS = nowS; op.stuck = false; op.message = null; }
    op.updatedAtS = nowS;
    this.#emit(op);
  }

  /** Marks running operations that have not moved for the stuck bound, with `why(op)` as the reason. */
  checkStuck(why: (op: Operation) => string, nowS = Date.now() / 1000): void {
    for (const op of this.#running.values()) {
      if (op.stuck) continue;
      if ((nowS - op.movedAtS) * 1000 >= this.opts.stuckAfterMs) {
        op.stuck = true;
        op.message = why(op);
        op.updatedAtS = nowS;
        this.#emit(op);
      }
    }
  }

  succeed(op: Operation, actualBytes: number | null, nowS = Date.now() / 1000): void {
    if (op.state !== 'running') return;
    op.state = 'succeeded'; op.stuck = false; op.message = null;
    this.#ended(op);
    if (actualBytes !== null) op.actualBytes = actualBytes;
    op.updatedAtS = nowS;
    this.#emit(op);
  }

  fail(op: Operation, message: string, nowS = Date.now() / 1000, code = 'OPERATION_FAILED'): void {
    if (op.state !== 'running') return;
    op.state = 'failed'; op.message = message; op.code = code; op.stuck = false; op.updatedAtS = nowS;
    this.#ended(op);
    this.#emit(op);
  }

  #ended(op: Operation): void {
    const key = `${op.host}\u0000${op.domain}`;
    if (this.#running.get(key) === op) this.#running.delete(key);
  }

  /**
   * Forgets ended operations older than keepMs, and the oldest ended ones beyond maxKept. Oldest
   * first, stopping at the first one young enough while few enough are kept: a change does not
   * walk every kept operation.
   */
  #prune(nowS: number): void {
    for (const [id, op] of this.#ops) {
      const young = (nowS - op.createdAtS) * 1000 <= this.opts.keepMs;
      if (young && this.#ops.size <= this.opts.maxKept) break;
      if (op.state === 'running') continue;
      if ((nowS - op.updatedAtS) * 1000 > this.opts.keepMs || this.#ops.size > this.opts.maxKept) this.#ops.delete(id);
    }
  }

  /** Every running operation (aborted on shutdown). */
  running(): Operation[] {
    return [...this.#running.values()];
  }
}

/** The API's Operation document. */
export function operationDocument(op: Operation, nowS = Date.now() / 1000): Record<string, unknown> {
  const span = op.startBytes === null ? 0 : op.targetBytes - op.startBytes;
  const fraction = op.state === 'succeeded' ? 1
    : span === 0 || op.startBytes === null || op.actualBytes === null ? 0
    : Math.min(1, Math.max(0, (op.actualBytes - op.startBytes) / span));
  return {
    id: op.id, kind: op.kind, domain: op.domain, ...(op.host === 'local' ? {} : { host: op.host }), state: op.state, startBytes: op.startBytes, targetBytes: op.targetBytes,
    actualBytes: op.actualBytes, fractionDone: Math.round(fraction * 1000) / 1000, message: op.message, ...(op.code !== null ? { code: op.code } : {}), stuck: op.stuck,
    createdAtS: op.createdAtS, updatedAtS: op.updatedAtS, elapsedMs: Math.round(((op.state === 'running' ? nowS : op.updatedAtS) - op.createdAtS) * 1000),
  };
}
