/**
 * Prometheus text exposition format 0.0.4 from the daemon's live model. Names start with
 * virtmem_, sizes are bytes, counters end in _total, guests carry the label `domain`. A
 * statistic a guest never reported is absent, never 0. Pure: scrapes never ask a guest.
 */
import type { GuestView, HostMemory } from '../driver/api.js';
import { freshStallPct, pluggedBytes, totalBytes } from '../driver/view.js';
import type { LibvirtHostDocument } from '../daemon/documents.js';

type GuestModel = GuestView;
type HostDocument = LibvirtHostDocument;

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface MetricsInput {
  /** Every running guest; `host` is absent for virtmem's own (no host label, as before hosts existed). */
  guests: ReadonlyArray<{ host?: string | undefined; view: GuestModel }>;
  host: HostMemory;
  daemon: { startedAtS: number; operationsStarted: number; sseClients: number; httpRequests: number };
  nowS: number;
  /** libvirt hosts watched with --hosts (absent: none). */
  remoteHosts?: readonly HostDocument[];
}

type Kind = 'gauge' | 'counter';
type Value = (m: GuestModel, nowS: number) => number | undefined;

/** Per-guest metrics: name, type, help, value (undefined: absent). */
const GUEST: ReadonlyArray<[string, Kind, string, Value]> = [
  ['virtmem_guest_up', 'gauge', '1 when the daemon holds a current monitor connection to the guest, 0 when it is stale or down.', (m) => (m.monitor === 'connected' ? 1 : 0)],
  ['virtmem_guest_running', 'gauge', '1 when the guest runs, 0 when paused.', (m) => (m.state === 'running' ? 1 : 0)],
  ['virtmem_guest_memory_bytes', 'gauge', 'Memory the guest has now: balloon actual plus DIMMs plus plugged virtio-mem.', (m) => totalBytes(m)],
  ['virtmem_guest_memory_target_bytes', 'gauge', 'The memory target last set.', (m) => m.targetBytes],
  ['virtmem_guest_memory_max_bytes', 'gauge', 'The maximum memory.', (m) => m.maxMemoryBytes],
  ['virtmem_guest_boot_memory_bytes', 'gauge', 'Boot RAM.', (m) => m.bootBytes],
  ['virtmem_guest_balloon_actual_bytes', 'gauge', 'Balloon actual: how much of boot RAM the guest has.', (m) => (m.hasBalloon ? m.balloonBytes : undefined)],
  ['virtmem_guest_balloon_target_bytes', 'gauge', 'Where the balloon is heading.', (m) => m.balloonTargetBytes ?? undefined],
  ['virtmem_guest_dimm_bytes', 'gauge', 'Memory in DIMMs.', (m) => m.dimmBytes],
  ['virtmem_guest_virtio_mem_plugged_bytes', 'gauge', 'virtio-mem memory plugged.', (m) => (m.devices.length ? pluggedBytes(m) : undefined)],
  ['virtmem_guest_virtio_mem_requested_bytes', 'gauge', 'virtio-mem memory requested.', (m) => (m.devices.length ? m.devices.reduce((s, d) => s + d.requestedBytes, 0) : undefined)],
  ['virtmem_guest_qemu_rss_bytes', 'gauge', 'Resident set of the QEMU process on the host.', (m) => m.rssBytes ?? undefined],
  ['virtmem_guest_stats_period_seconds', 'gauge', 'Guest statistics polling period (0: off).', (m) => (m.hasBalloon ? m.statsPeriodS : undefined)],
  ['virtmem_guest_stats_age_seconds', 'gauge', 'Seconds since the guest last reported statistics.', (m, now) => (m.stats.lastUpdateS === undefined ? undefined : Math.max(0, now - m.stats.lastUpdateS))],
  ['virtmem_guest_mem_total_bytes', 'gauge', 'Guest MemTotal as the guest reported it.', (m) => m.stats.availableBytes],
  ['virtmem_guest_mem_available_bytes', 'gauge', 'Guest MemAvailable as the guest reported it.', (m) => m.stats.usableBytes],
  ['virtmem_guest_mem_free_bytes', 'gauge', 'Guest MemFree as the guest reported it.', (m) => m.stats.unusedBytes],
  ['virtmem_guest_disk_caches_bytes', 'gauge', 'Guest page cache as the guest reported it.', (m) => m.stats.diskCachesBytes],
  ['virtmem_guest_swap_in_bytes_total', 'counter', 'Bytes the guest swapped in.', (m) => m.stats.swapInBytes],
  ['virtmem_guest_swap_out_bytes_total', 'counter', 'Bytes the guest swapped out.', (m) => m.stats.swapOutBytes],
  ['virtmem_guest_major_faults_total', 'counter', 'Major page faults in the guest.', (m) => m.stats.majorFaults],
  ['virtmem_guest_minor_faults_total', 'counter', 'Minor page faults in the guest.', (m) => m.stats.minorFaults],
  ['virtmem_guest_memory_stall_percent', 'gauge', "The guest's own memory stall (PSI some) over its last report interval, where it reports one.", (m, now) => freshStallPct(m.pressure, now)],
  ['virtmem_guest_balloon_change_events_total', 'counter', 'BALLOON_CHANGE events seen since the daemon attached.', (m) => m.counters.balloonChanges],
  ['virtmem_guest_memory_device_size_change_events_total', 'counter', 'MEMORY_DEVICE_SIZE_CHANGE events seen since the daemon attached.', (m) => m.counters.deviceSizeChanges],
  ['virtmem_guest_monitor_timeouts_total', 'counter', 'Monitor questions that got no answer within the per-guest bound.', (m) => m.counters.monitorTimeouts],
  // The memory on the host (GuestHostMemory): backing, the guest's own cgroup, KSM of its QEMU.
  ['virtmem_guest_hugepages_bytes', 'gauge', 'Guest RAM backed by huge pages (all page sizes).', (m) => m.hostMemory && m.hostMemory.backing.hugepages.reduce((s, p) => s + p.pages * p.sizeKiB * 1024, 0)],
  ['virtmem_guest_memory_locked', 'gauge', '1 when guest RAM is locked in host memory (<locked/>).', (m) => m.hostMemory && (m.hostMemory.backing.locked ? 1 : 0)],
  ['virtmem_guest_memory_shared', 'gauge', '1 when some guest RAM is a shared mapping (<access mode=shared>).', (m) => m.hostMemory && (m.hostMemory.backing.shared ? 1 : 0)],
  ['virtmem_guest_memory_mergeable', 'gauge', '1 when KSM may merge guest RAM (no <nosharepages/>).', (m) => m.hostMemory && (m.hostMemory.backing.mergeable ? 1 : 0)],
  ['virtmem_guest_cgroup_memory_usage_bytes', 'gauge', "Memory charged to the guest's own memory cgroup.", (m) => kibBytes(m.hostMemory?.cgroup?.usageKiB)],
  ['virtmem_guest_cgroup_memory_limit_bytes', 'gauge', "Hard limit of the guest's memory cgroup (memtune hard_limit); absent when unlimited.", (m) => kibBytes(m.hostMemory?.cgroup?.hardLimitKiB)],
  ['virtmem_guest_cgroup_memory_soft_limit_bytes', 'gauge', "Soft limit of the guest's memory cgroup (memtune soft_limit); absent when unlimited.", (m) => kibBytes(m.hostMemory?.cgroup?.softLimitKiB)],
  ['virtmem_guest_ksm_merging_pages', 'gauge', "Pages of the guest's QEMU process KSM has merged (ksm_merging_pages).", (m) => m.hostMemory?.ksm?.mergingPages],
  ['virtmem_guest_ksm_merging_bytes', 'gauge', "Memory of the guest's QEMU process KSM has merged.", (m) => kibBytes(m.hostMemory?.ksm?.mergingKiB)],
  ['virtmem_guest_ksm_profit_bytes', 'gauge', "What KSM saves on the guest's QEMU process less its own bookkeeping (ksm_process_profit; may be negative).", (m) => kibBytes(m.hostMemory?.ksm?.profitKiB)],
];

/** KiB as bytes; undefined (absent) for null or undefined. */
function kibBytes(kib: number | null | undefined): number | undefined {
  return kib === null || kib === undefined ? undefined : kib * 1024;
}

/** A label value escaped as the format asks (backslash, double quote, newline). */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** A sample value: integers as integers, others with up to 6 decimals. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return Number.isInteger(v) ? String(v) : String(Math.round(v * 1e6) / 1e6);
}

/** The whole /metrics page. */
export function formatMetrics(input: MetricsInput): string {
  const out: string[] = [];
  const family = (name: string, kind: Kind, help: string, samples: Array<[labels: string, v: number]>): void => {
    if (!samples.length) return;
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${kind}`);
    for (const [labels, v] of samples) out.push(`${name}${labels} ${formatValue(v)}`);
  };
  for (const [name, kind, help, value] of GUEST) {
    const samples: Array<[string, number]> = [];
    for (const { host, view: m } of input.guests) {
      const v = value(m, input.nowS);
      if (v !== undefined) samples.push([host === undefined ? `{domain="${escapeLabel(m.name)}"}` : `{host="${escapeLabel(host)}",domain="${escapeLabel(m.name)}"}`, v]);
    }
    family(name, kind, help, samples);
  }
  // Where NUMA places a guest's memory, as labels (an info metric: the value is always 1).
  const guestLabels = (host: string | undefined, m: GuestModel): string => (host === undefined ? `domain="${escapeLabel(m.name)}"` : `host="${escapeLabel(host)}",domain="${escapeLabel(m.name)}"`);
  family('virtmem_guest_numa_placement_info', 'gauge', "Host NUMA placement of the guest's memory (<numatune>): mode and host nodeset.", input.guests.flatMap(({ host, view: m }) => {
    const p = m.hostMemory?.placement;
    return p ? [[`{${guestLabels(host, m)},mode="${escapeLabel(p.mode)}",nodeset="${escapeLabel(p.nodeset)}"}`, 1] as [string, number]] : [];
  }));
  family('virtmem_guest_hugepages', 'gauge', 'Huge pages guest RAM takes, by page size.', input.guests.flatMap(({ host, view: m }) =>
    (m.hostMemory?.backing.hugepages ?? []).map((p) => [`{${guestLabels(host, m)},page_size_bytes="${p.sizeKiB * 1024}"}`, p.pages] as [string, number])));
  const h = input.host;
  const one = (v: number | null | undefined): Array<[string, number]> => (v === null || v === undefined ? [] : [['', v]]);
  family('virtmem_host_memory_total_bytes', 'gauge', 'Host MemTotal.', one(h.memTotalBytes));
  family('virtmem_host_memory_available_bytes', 'gauge', 'Host MemAvailable.', one(h.memAvailableBytes));
  family('virtmem_host_swap_total_bytes', 'gauge', 'Host SwapTotal.', one(h.swapTotalBytes));
  family('virtmem_host_swap_free_bytes', 'gauge', 'Host SwapFree.', one(h.swapFreeBytes));
  if (h.psi) {
    for (const kind of ['some', 'full'] as const) {
      const p = h.psi[kind];
      family(`virtmem_host_memory_pressure_${kind}_avg10_ratio`, 'gauge', `Share of the last 10 s in which ${kind === 'some' ? 'some' : 'all'} tasks stalled on memory (PSI).`, [['', p.avg10 / 100]]);
      family(`virtmem_host_memory_pressure_${kind}_seconds_total`, 'counter', `Time ${kind === 'some' ? 'some' : 'all'} tasks stalled on memory (PSI total).`, [['', p.totalUs / 1e6]]);
    }
  }
  const hosts = input.remoteHosts ?? [];
  family('virtmem_host_up', 'gauge', '1 when the daemon reads the libvirt host (--hosts), 0 when it is down.', hosts.map((h) => [`{host="${escapeLabel(h.uri)}"}`, h.state === 'up' ? 1 : 0]));
  const KINDS: ReadonlyArray<[string, (x: HostDocument['domains'][number]) => number | null | undefined]> = [
    ['current', (x) => x.currentMemoryBytes], ['max', (x) => x.maxMemoryBytes], ['balloon_actual', (x) => x.balloonActualBytes],
    ['available', (x) => x.stats.availableBytes], ['usable', (x) => x.stats.usableBytes], ['unused', (x) => x.stats.unusedBytes],
    ['disk_caches', (x) => x.stats.diskCachesBytes], ['rss', (x) => x.stats.rssBytes],
  ];
  const hostSamples: Array<[string, number]> = [];
  for (const h of hosts) {
    for (const x of h.domains) {
      for (const [kind, get] of KINDS) {
        const v = get(x);
        if (typeof v === 'number') hostSamples.push([`{host="${escapeLabel(h.uri)}",domain="${escapeLabel(x.name)}",kind="${kind}"}`, v]);
      }
    }
  }
  family('virtmem_host_domain_memory_bytes', 'gauge', 'Memory of the domains of the libvirt hosts (--hosts), by kind: current, max, balloon_actual and the guest statistics libvirt reports.', hostSamples);
  const d = input.daemon;
  family('virtmem_daemon_guests', 'gauge', 'Running guests the daemon watches.', [['', input.guests.length]]);
  family('virtmem_daemon_start_time_seconds', 'gauge', 'When the daemon started (seconds since the epoch).', [['', d.startedAtS]]);
  family('virtmem_daemon_operations_started_total', 'counter', 'Memory changes started through the API.', [['', d.operationsStarted]]);
  family('virtmem_daemon_http_requests_total', 'counter', 'HTTP requests answered.', [['', d.httpRequests]]);
  family('virtmem_daemon_event_stream_clients', 'gauge', 'Open event streams.', [['', d.sseClients]]);
  return out.join('\n') + '\n';
}
