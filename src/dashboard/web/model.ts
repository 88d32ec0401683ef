/**
 * The dashboard's view model and the mapping from the daemon's documents to it. Pure (no DOM,
 * no I/O), so unit tests run it under Node. Sizes are bytes; a value the daemon did not send
 * becomes null, never a guess.
 */
import { formatBytes } from './format.js';

/** One point of a guest's memory, all in bytes; null where not known at that time. */
export interface GuestSample {
  tS: number;
  /** Boot RAM the guest has: the balloon's "actual". */
  bootInGuestBytes: number | null;
  virtioMemBytes: number | null;
  /** Boot RAM the balloon holds back from the guest. */
  balloonHeldBytes: number | null;
  guestUsedBytes: number | null;
  guestAvailableBytes: number | null;
  hostRssBytes: number | null;
}

export interface HostView {
  memTotalBytes: number | null;
  memAvailableBytes: number | null;
  psiSomeAvg10: number | null;
  psiFullAvg10: number | null;
}

export interface GuestView {
  /** The libvirt host (its URI) the guest runs on; null for virtmem's own guests. */
  host: string | null;
  name: string;
  state: string;
  /** The daemon's line to the guest is not connected (its monitor, or its libvirt host): the numbers may be old. */
  stale: boolean;
  maxBytes: number | null;
  /** All the RAM the guest has now: boot RAM left by the balloon + virtio-mem plugged. */
  totalBytes: number | null;
  /** Age of the guest's own statistics (used, available) when the daemon answered; null: never reported. */
  statsAgeS: number | null;
  sample: GuestSample;
  /** Its memory on the host, as the card's "On the host" lines; null when the daemon does not say. */
  hostMemory: HostMemoryView | null;
}

/** The card's "On the host" lines: how guest RAM is backed, NUMA placement, the guest's memory cgroup, KSM. */
export interface HostMemoryView {
  backing: string;
  placement: string;
  cgroup: string;
  ksm: string;
}

export interface Snapshot {
  tS: number;
  host: HostView;
  guests: GuestView[];
}

export type OperationState = 'running' | 'succeeded' | 'failed';

export interface OperationView {
  id: string;
  state: OperationState;
  startBytes: number | null;
  targetBytes: number;
  actualBytes: number | null;
  /** Why it failed, or why it is stuck. */
  message: string | null;
  /** The daemon saw nothing move for its stall bound while still running. */
  stuck: boolean;
  /** The daemon's own fractionDone, when it sent one. */
  serverFraction: number | null;
}

/** The daemon's document types (docs/openapi.json), as far as the page reads them. */
export type Json = Record<string, unknown>;
export const obj = (v: unknown): Json => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : {});
export const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
export const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

/** How far `op` has got from its starting size to its target, 0..1. */
export function fractionDone(op: OperationView): number {
  if (op.state === 'succeeded') return 1;
  if (op.serverFraction !== null) return Math.min(1, Math.max(0, op.serverFraction));
  if (op.actualBytes === null || op.startBytes === null) return 0;
  const span = op.targetBytes - op.startBytes;
  if (span === 0) return 1;
  return Math.min(1, Math.max(0, (op.actualBytes - op.startBytes) / span));
}

/** Which sample fields are stacked (bottom first); the others are drawn as lines. */
export const STACKED: ReadonlyArray<keyof GuestSample> = ['bootInGuestBytes', 'virtioMemBytes', 'balloonHeldBytes'];

/**
 * Columns for the chart: for each field in `fields`, its values over time; stacked fields get
 * cumulative values (an unknown layer counts as 0 so the layers above it still draw).
 */
export function chartColumns(samples: readonly GuestSample[], fields: ReadonlyArray<keyof GuestSample>): Array<Array<number | null>> {
  const raw = fields.map((f) => samples.map((s) => s[f]));
  return raw.map((col, fi) => {
    const field = fields[fi]!;
    const k = STACKED.indexOf(field);
    if (k < 0) return col;
    return samples.map((s) => STACKED.slice(0, k + 1).reduce((acc, f) => acc + (s[f] ?? 0), 0));
  });
}

/**
 * What the guest itself uses: its MemTotal minus its MemAvailable, less the pages the balloon
 * holds when the guest counts them in MemTotal. With deflate-on-OOM (virtmem's default) the
 * Linux balloon driver leaves MemTotal alone and inflated pages look "used"; without it,
 * MemTotal shrinks instead. MemTotal above what the guest has tells which case this is.
 */
export function guestUsedBytes(memTotalBytes: number | null, memAvailableBytes: number | null, guestHasBytes: number | null, balloonHeldBytes: number | null): number | null {
  if (memTotalBytes === null || memAvailableBytes === null) return null;
  const used = memTotalBytes - memAvailableBytes;
  const held = balloonHeldBytes ?? 0;
  const countsBalloon = held > 0 && guestHasBytes !== null && memTotalBytes > guestHasBytes;
  return Math.max(0, countsBalloon ? used - held : used);
}

/** Host document (GET /host) -> view. */
export function toHostView(doc: unknown): HostView {
  const h = obj(doc);
  const psi = obj(h.psi);
  return {
    memTotalBytes: num(h.memTotalBytes), memAvailableBytes: num(h.memAvailableBytes),
    psiSomeAvg10: num(obj(psi.some).avg10), psiFullAvg10: num(obj(psi.full).avg10),
  };
}

/** The layers of one moment, from the balloon, virtio-mem and guest statistics numbers. */
function sampleOf(tS: number, bootBytes: number | null, balloonBytes: number | null, pluggedBytes: number | null, memTotalBytes: number | null, memAvailableBytes: number | null, rssBytes: number | null, totalBytes: number | null): GuestSample {
  const held = bootBytes !== null && balloonBytes !== null ? Math.max(0, bootBytes - balloonBytes) : null;
  return {
    tS,
    bootInGuestBytes: balloonBytes,
    virtioMemBytes: pluggedBytes,
    balloonHeldBytes: held,
    guestUsedBytes: guestUsedBytes(memTotalBytes, memAvailableBytes, totalBytes, held),
    guestAvailableBytes: memAvailableBytes,
    hostRssBytes: rssBytes,
  };
}

/** Guest document (GET /domains/{name}, /stats, or an SSE `memory` event) at time `tS` -> view. */
export function toGuestView(doc: unknown, tS: number): GuestView {
  const d = obj(doc);
  const mem = obj(d.memory);
  const stats = obj(d.stats);
  const total = num(mem.totalBytes);
  return {
    host: str(d.host),
    name: str(d.name) ?? '?',
    state: str(d.state) ?? 'unknown',
    stale: d.stale === true,
    maxBytes: num(d.maxMemoryBytes),
    totalBytes: total,
    statsAgeS: num(stats.ageS),
    hostMemory: d.hostMemory === undefined ? null : hostMemoryView(d.hostMemory),
    sample: sampleOf(tS, num(mem.bootBytes), num(mem.balloonBytes), num(mem.pluggedBytes), num(stats.availableBytes), num(stats.usableBytes), num(stats.rssBytes), total),
  };
}

/** A Guest document's hostMemory (docs/openapi.json GuestHostMemory) -> the card's lines. Pure. */
export function hostMemoryView(doc: unknown): HostMemoryView {
  const h = obj(doc);
  const b = obj(h.backing);
  const pages = Array.isArray(b.hugepages) ? b.hugepages.map(obj) : [];
  const backing = [
    pages.length ? pages.map((p) => `${num(p.pages) ?? 0} × ${formatBytes(num(p.pageSizeBytes) ?? 0)} huge pages`).join(' + ') : 'base pages',
    ...(str(b.source) && b.source !== 'anonymous' ? [str(b.source)!] : []), ...(b.shared === true ? ['shared'] : []), ...(b.locked === true ? ['locked'] : []),
    ...(b.mergeable === false ? ['no KSM'] : []),
  ].join(', ');
  const p = h.placement === null || h.placement === undefined ? null : obj(h.placement);
  const memnodes = p && Array.isArray(p.memnodes) ? p.memnodes.map(obj) : [];
  const placement = p === null ? "host's default" : [
    ...(str(p.nodeset) ? [`${str(p.mode)} on node ${str(p.nodeset)}`] : []), ...memnodes.map((n) => `cell ${num(n.cell)}: ${str(n.mode)} on node ${str(n.nodeset)}`),
  ].join('; ');
  const c = h.cgroup === null || h.cgroup === undefined ? null : obj(h.cgroup);
  const limit = c && num(c.hardLimitBytes);
  const usage = c && num(c.usageBytes);
  const cgroup = c === null ? 'none of its own' : `${usage === null ? '—' : formatBytes(usage)} of ${limit === null ? 'unlimited' : `${formatBytes(limit)} limit`}`;
  const k = h.ksm === null || h.ksm === undefined ? null : obj(h.ksm);
  const ksm = k === null ? 'not known' : (num(k.mergingPages) ?? 0) === 0 ? 'nothing merged' : `${num(k.mergingPages)} pages merged (${formatBytes(num(k.mergingBytes) ?? 0)})`;
  return { backing, placement, cgroup, ksm };
}

/** History document (GET /domains/{name}/history) -> samples; boot RAM comes from the guest document. */
export function historySamples(doc: unknown, bootBytes: number | null): GuestSample[] {
  const samples = obj(doc).samples;
  if (!Array.isArray(samples)) return [];
  return samples.map(obj).filter((h) => num(h.tS) !== null).map((h) =>
    sampleOf(num(h.tS)!, bootBytes, num(h.balloonBytes), num(h.pluggedBytes), num(h.availableBytes), num(h.usableBytes), num(h.rssBytes), num(h.totalBytes)));
}

/**
 * Operation document ({ operation }) -> view, or null when it is not one the page understands.
 */
export function toOperationView(doc: unknown): OperationView | null {
  const o = obj(obj(doc).operation);
  const id = str(o.id);
  const state = str(o.state);
  const target = num(o.targetBytes);
  if (id === null || target === null || (state !== 'running' && state !== 'succeeded' && state !== 'failed')) return null;
  return {
    id, state, startBytes: num(o.startBytes), targetBytes: target, actualBytes: num(o.actualBytes),
    message: str(o.message), stuck: o.stuck === true, serverFraction: num(o.fractionDone),
  };
}

/** One libvirt host watched with `daemon --hosts` (GET /api/v1/hosts, or an SSE `host` event). */
export interface LibvirtHostView {
  uri: string;
  up: boolean;
  /** Why it is down; null when up. */
  reason: string | null;
  memTotalBytes: number | null;
  memAvailableBytes: number | null;
  /** What its policy-managed guests may hold together; null: no budget. */
  budgetBytes: number | null;
  /** How many running guests it has. */
  guests: number;
}

/** One libvirt host document -> view; null when it names no host. Pure. */
export function toLibvirtHostView(doc: unknown): LibvirtHostView | null {
  const o = obj(doc);
  const uri = str(o.uri);
  if (uri === null) return null;
  return {
    uri, up: o.state === 'up', reason: str(o.reason),
    memTotalBytes: num(o.memTotalBytes), memAvailableBytes: num(o.memAvailableBytes), budgetBytes: num(o.budgetBytes),
    guests: Array.isArray(o.domains) ? o.domains.length : 0,
  };
}

/** GET /api/v1/hosts to views, in the daemon's order (the hosts file's); what the page cannot use is left out. Pure. */
export function toLibvirtHostsView(doc: unknown): LibvirtHostView[] {
  const hosts = obj(doc).hosts;
  return (Array.isArray(hosts) ? hosts : []).flatMap((h) => toLibvirtHostView(h) ?? []);
}

/**
 * The key a guest's card is kept under: its host and its name (two hosts may each run a guest
 * of the same name; a domain name has no NUL). Pure.
 */
export function cardKey(host: string | null, name: string): string {
  return host === null ? name : `${host}\u0000${name}`;
}

/**
 * The suffix of a card's test hooks and element ids: the name with every character but
 * [A-Za-z0-9_-] made '_', and for a libvirt host's guest '@' and the host's index in
 * GET /api/v1/hosts (the `libvirt-host-N` of its group), so guests of the same name on two
 * hosts never share one. Pure.
 */
export function cardId(name: string, hostIndex: number | null): string {
  const safe = name.replace(/[^A-Za-z0-9_-]/g, '_');
  return hostIndex === null ? safe : `${safe}@${hostIndex}`;
}

/** Guests of one host, for one group of cards. */
export interface HostGroup {
  /** null: virtmem's own guests on this machine. */
  host: LibvirtHostView | null;
  /** The host's index in GET /api/v1/hosts; null for virtmem's own guests. */
  index: number | null;
  guests: GuestView[];
}

/**
 * The page's groups: virtmem's own guests first, then each libvirt host in the daemon's order
 * with its guests (a host without guests still has its group: its header says up or down and
 * why). Guests keep the order the daemon sent them in. A guest naming a host the page was not
 * told of is left out (the two lists are read at the same time; the next refresh brings both). Pure.
 */
export function groupByHost(guests: readonly GuestView[], hosts: readonly LibvirtHostView[]): HostGroup[] {
  return [
    { host: null, index: null, guests: guests.filter((g) => g.host === null) },
    ...hosts.map((h, index): HostGroup => ({ host: h, index, guests: guests.filter((g) => g.host === h.uri) })),
  ];
}
