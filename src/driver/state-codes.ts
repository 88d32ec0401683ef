/**
 * libvirt's numbers for domain states and their reasons (virDomainState and the per-state
 * reason enums), with virsh's words for them: the libvirt driver reads them off the wire, the
 * native driver reports its states in them where libvirt's API speaks numbers (domstats
 * state.state / state.reason). Pure.
 */
import type { DomainState, StateReason } from './api.js';

/** virDomainState in order: the number is the index. */
export const STATE_TEXT: readonly DomainState[] = ['no state', 'running', 'idle', 'paused', 'in shutdown', 'shutoff', 'crashed', 'pmsuspended'];

/** virsh's words for state reasons, per state number. */
export const REASONS: Readonly<Record<number, readonly string[]>> = {
  1: ['unknown', 'booted', 'migrated', 'restored', 'from snapshot', 'unpaused', 'migration canceled', 'save canceled', 'event wakeup', 'crashed', 'post-copy'],
  2: ['unknown'],
  3: ['unknown', 'user', 'migrating', 'saving', 'dumping', 'I/O error', 'watchdog', 'from snapshot', 'shutting down', 'creating snapshot', 'api error', 'starting up', 'post-copy', 'post-copy failed'],
  4: ['unknown', 'user'],
  5: ['unknown', 'shutdown', 'destroyed', 'crashed', 'migrated', 'saved', 'failed', 'from snapshot', 'daemon'],
  6: ['unknown', 'panicked'],
  7: ['unknown'],
};

/** libvirt's state number as the neutral state. */
export function stateOf(n: number): DomainState {
  return STATE_TEXT[n] ?? 'no state';
}

/** libvirt's reason number of a state as virsh's word. */
export function reasonOf(state: number, reason: number): StateReason {
  return (REASONS[state]?.[reason] ?? 'unknown') as StateReason;
}

/** A neutral state and reason as libvirt's numbers (an unknown reason is 0, libvirt's "unknown"). */
export function stateCodes(state: DomainState, reason: StateReason): { state: number; reason: number } {
  const s = Math.max(0, STATE_TEXT.indexOf(state));
  return { state: s, reason: Math.max(0, REASONS[s]?.indexOf(reason) ?? 0) };
}
