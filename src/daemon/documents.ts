/**
 * The HTTP API's documents of a guest's live view (docs/openapi.json): Guest and
 * DomainSummary. Pure.
 */
import { freshStallPct, pluggedBytes, totalBytes, type GuestView } from '../driver/view.js';
import { hostMemoryDocument } from '../driver/api.js';

/** The API's Guest document (docs/openapi.json#/components/schemas/Guest). */
export function guestDocument(m: GuestView, nowS: number): Record<string, unknown> {
  const vmem = m.devices.filter((d) => d.model === 'virtio-mem');
  const stats: Record<string, unknown> = {
    periodS: m.statsPeriodS,
    ageS: m.stats.lastUpdateS === undefined ? null : Math.max(0, Math.round((nowS - m.stats.lastUpdateS) * 10) / 10),
    ...m.stats,
  };
  if (m.rssBytes !== null) stats.rssBytes = m.rssBytes;
  const stall = freshStallPct(m.pressure, nowS);
  if (stall !== undefined) stats.stallPct = Math.round(stall * 100) / 100;
  return {
    name: m.name, uuid: m.uuid, id: m.id, state: m.state, monitor: m.monitor, stale: m.monitor !== 'connected',
    staleSinceS: m.staleSinceS, maxMemoryBytes: m.maxMemoryBytes,
    memory: {
      totalBytes: totalBytes(m), targetBytes: m.targetBytes, bootBytes: m.bootBytes, balloonBytes: m.balloonBytes,
      balloonTargetBytes: m.balloonTargetBytes, dimmBytes: m.dimmBytes, pluggedBytes: pluggedBytes(m),
      requestedBytes: vmem.reduce((s, d) => s + d.requestedBytes, 0), hotplugSizeBytes: vmem.reduce((s, d) => s + d.sizeBytes, 0),
      devices: m.devices.map((d) => ({ ...d })),
    },
    stats, updatedAtS: m.updatedAtS, qemuPid: m.qemuPid,
    ...(m.hostMemory ? { hostMemory: hostMemoryDocument(m.hostMemory) } : {}),
  };
}

/** The API's DomainSummary document. */
export function summaryDocument(m: Pick<GuestView, 'name' | 'uuid' | 'id' | 'state' | 'monitor'>): Record<string, unknown> {
  return { name: m.name, uuid: m.uuid, id: m.id, state: m.state, monitor: m.monitor, stale: m.state !== 'shutoff' && m.monitor !== 'connected' };
}

/** A domain of a libvirt host in GET /api/v1/hosts, sizes in bytes. */
export interface LibvirtDomainDocument {
  name: string;
  uuid: string;
  id: number | null;
  state: string;
  monitor: string;
  currentMemoryBytes: number | null;
  maxMemoryBytes: number | null;
  /** Balloon actual as libvirt reports it (its "current": the guest's whole memory). */
  balloonActualBytes: number | null;
  pluggedBytes: number;
  targetBytes: number;
  /** Guest statistics libvirt reported (absent when it reported none). */
  stats: Partial<Record<'availableBytes' | 'usableBytes' | 'unusedBytes' | 'diskCachesBytes' | 'rssBytes', number>>;
}

/** A libvirt host in GET /api/v1/hosts. */
export interface LibvirtHostDocument {
  uri: string;
  state: 'up' | 'down';
  /** Why the host is down (null when up). */
  reason: string | null;
  /** When the guests were last read in full (seconds since the epoch), null before the first read. */
  lastUpdateS: number | null;
  memTotalBytes: number | null;
  memAvailableBytes: number | null;
  budgetBytes: number | null;
  domains: LibvirtDomainDocument[];
}

/** One libvirt host's document from its watch. */
export function libvirtHostDocument(h: { uri: string; budgetBytes: number | null; watch: { state: 'up' | 'down'; reason: string | null; lastUpdateS: number | null; host(): { memTotalBytes: number | null; memAvailableBytes: number | null }; guests(): GuestView[] } }): LibvirtHostDocument {
  const m = h.watch.host();
  return {
    uri: h.uri, state: h.watch.state, reason: h.watch.reason, lastUpdateS: h.watch.lastUpdateS,
    memTotalBytes: m.memTotalBytes, memAvailableBytes: m.memAvailableBytes, budgetBytes: h.budgetBytes,
    domains: h.watch.guests().map((v) => ({
      name: v.name, uuid: v.uuid, id: v.id, state: v.state, monitor: v.monitor,
      currentMemoryBytes: totalBytes(v), maxMemoryBytes: v.maxMemoryBytes, balloonActualBytes: v.hasBalloon ? totalBytes(v) : null,
      pluggedBytes: pluggedBytes(v), targetBytes: v.targetBytes,
      stats: {
        ...(v.stats.availableBytes !== undefined ? { availableBytes: v.stats.availableBytes } : {}),
        ...(v.stats.usableBytes !== undefined ? { usableBytes: v.stats.usableBytes } : {}),
        ...(v.stats.unusedBytes !== undefined ? { unusedBytes: v.stats.unusedBytes } : {}),
        ...(v.stats.diskCachesBytes !== undefined ? { diskCachesBytes: v.stats.diskCachesBytes } : {}),
        ...(v.rssBytes !== null ? { rssBytes: v.rssBytes } : {}),
      },
    })),
  };
}
