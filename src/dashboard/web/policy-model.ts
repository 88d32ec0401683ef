/**
 * The automatic memory policy as a guest card shows it: the policy document
 * (GET /domains/{name}/policy) and the event stream's `policy` events mapped to one view, and
 * the view to the card's lines. Pure (no DOM, no I/O), so unit tests run it under Node. Sizes
 * are bytes: the event speaks KiB (the policy loop's unit) and is converted here, at the edge.
 */
import { formatAgo, formatBytes } from './format.js';
import { cardKey, num, obj, str } from './model.js';

export type PolicyMode = 'off' | 'per-guest' | 'all';
export type PolicyAction = 'resize' | 'hold' | 'failed';

/** One decision of the policy for one guest. */
export interface PolicyDecisionView {
  /** When the policy decided, as the daemon wrote it (ISO 8601). */
  at: string;
  /** `at` in ms since the epoch; null when the daemon's text is not a time. */
  atMs: number | null;
  action: PolicyAction;
  fromBytes: number | null;
  targetBytes: number | null;
  reason: string;
}

/** The daemon's settings for a guest, as loaded from its policy document. */
export interface PolicySettingsView {
  mode: PolicyMode;
  /** The engine whose decisions run (absent when the daemon runs no policy). */
  engine: string | null;
  /** The guest's own switch (with mode 'all' the daemon reports it on). */
  enabled: boolean;
  floorBytes: number | null;
  ceilingBytes: number | null;
  shares: number | null;
}

/** What a card knows of a guest's policy: settings once the document came, the newest decision seen. */
export interface PolicyView {
  name: string;
  /** The libvirt host (its URI) the guest runs on; null for virtmem's own guests. */
  host: string | null;
  /** null until the policy document has been loaded. */
  settings: PolicySettingsView | null;
  last: PolicyDecisionView | null;
}

/** The lines of the card's "Policy" section. */
export interface PolicyLines {
  /** 'on': the policy may resize this guest; 'loading': the document has not come yet. */
  state: 'on' | 'off' | 'loading';
  /** e.g. "on (per-guest, virtmem)". */
  status: string;
  /** e.g. "floor 300 MiB · ceiling 1.00 GiB"; empty while loading. */
  bounds: string;
  /** e.g. "resize 512 MiB → 300 MiB"; "no decision yet" without one. */
  decision: string;
  /** e.g. "4 s ago"; empty without a decision. */
  ago: string;
  /** The policy's own words for the decision; empty without one. */
  reason: string;
}

const ACTIONS: readonly string[] = ['resize', 'hold', 'failed'] satisfies PolicyAction[];
const MODES: readonly string[] = ['off', 'per-guest', 'all'] satisfies PolicyMode[];

/** A view with nothing loaded yet, for a card that has just appeared. */
export function emptyPolicyView(name: string, host: string | null = null): PolicyView {
  return { name, host, settings: null, last: null };
}

/** A decision from its JSON, sizes already in bytes; null when it lacks what the card shows. */
function decisionOf(d: Record<string, unknown>, fromBytes: number | null, targetBytes: number | null): PolicyDecisionView | null {
  const at = str(d.at);
  const action = str(d.action);
  const reason = str(d.reason);
  if (at === null || action === null || !ACTIONS.includes(action) || reason === null) return null;
  const atMs = Date.parse(at);
  return { at, atMs: Number.isFinite(atMs) ? atMs : null, action: action as PolicyAction, fromBytes, targetBytes, reason };
}

const kibToBytes = (v: unknown): number | null => {
  const k = num(v);
  return k === null ? null : k * 1024;
};

/**
 * The newer of two decisions (by their time; the incoming one on a tie or when a time is
 * unreadable): a document that was read just before an event must not undo the event.
 */
function newer(current: PolicyDecisionView | null, incoming: PolicyDecisionView | null): PolicyDecisionView | null {
  if (incoming === null) return current;
  if (current === null || current.atMs === null || incoming.atMs === null) return incoming;
  return incoming.atMs >= current.atMs ? incoming : current;
}

/**
 * The policy document (GET /domains/{name}/policy, or /hosts/{host}/domains/{name}/policy for a
 * guest of libvirt host `host`) -> view, or null when it is not one the page understands (no
 * mode, no settings).
 */
export function toPolicyView(doc: unknown, host: string | null = null): PolicyView | null {
  const d = obj(doc);
  const name = str(d.name);
  const mode = str(d.mode);
  const s = obj(d.settings);
  if (name === null || mode === null || !MODES.includes(mode) || typeof s.enabled !== 'boolean') return null;
  const l = obj(d.last);
  return {
    name, host,
    settings: {
      mode: mode as PolicyMode, engine: str(d.engine), enabled: s.enabled,
      floorBytes: num(s.floorBytes), ceilingBytes: num(s.ceilingBytes), shares: num(s.shares),
    },
    last: d.last === null ? null : decisionOf(l, num(l.fromBytes), num(l.targetBytes)),
  };
}

/**
 * A freshly loaded document's view over what the card had: its settings, and its last decision
 * unless the card already holds a newer one (an event that overtook the document's answer).
 */
export function mergePolicyView(current: PolicyView, loaded: PolicyView): PolicyView {
  return { name: current.name, host: current.host, settings: loaded.settings ?? current.settings, last: newer(current.last, loaded.last) };
}

/**
 * Applies one SSE `policy` event (data: {name, host?, at, action, fromKiB?, targetKiB?, reason};
 * `host` for a libvirt host's guest) to the views of the guests the page shows, keyed by
 * cardKey(host, name). Returns the changed view, or null when the event is not
 * one the page understands or names a guest without a card (its card loads the document when
 * it appears, and that holds the same decision).
 */
export function withPolicyEvent(views: ReadonlyMap<string, PolicyView>, data: unknown): PolicyView | null {
  const d = obj(data);
  const name = str(d.name);
  const view = name === null ? undefined : views.get(cardKey(str(d.host), name));
  const decision = decisionOf(d, kibToBytes(d.fromKiB), kibToBytes(d.targetKiB));
  if (view === undefined || decision === null) return null;
  return { ...view, last: newer(view.last, decision) };
}

/** The card's lines for `view` at `nowMs` (the daemon's clock, so "ago" does not depend on the browser's). */
export function policyLines(view: PolicyView, nowMs: number): PolicyLines {
  const s = view.settings;
  const last = view.last;
  const decision = last === null ? 'no decision yet'
    : last.action === 'hold' ? 'held'
    : `${last.action} ${formatBytes(last.fromBytes)} → ${formatBytes(last.targetBytes)}`;
  const told = {
    decision,
    ago: last === null ? '' : last.atMs === null ? last.at : formatAgo((nowMs - last.atMs) / 1000),
    reason: last?.reason ?? '',
  };
  if (s === null) return { state: 'loading', status: 'loading…', bounds: '', ...told };
  const on = s.mode !== 'off' && s.enabled;
  const status = s.mode === 'off' ? 'off (the daemon runs no policy: daemon --policy off)'
    : on ? `on (${s.mode}${s.engine ? `, ${s.engine}` : ''})`
    : `off for this guest (virtmem ${view.host === null ? '' : `-c ${view.host} `}policy set ${view.name} --enable)`;
  const bounds = `floor ${formatBytes(s.floorBytes)} · ceiling ${formatBytes(s.ceilingBytes)}`;
  return { state: on ? 'on' : 'off', status, bounds, ...told };
}
