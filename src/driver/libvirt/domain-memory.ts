/**
 * A domain's memory beyond its size on a libvirt host, over libvirt's RPC protocol:
 * virDomain{Get,Set}MemoryParameters (memtune), virDomain{Get,Set}NumaParameters (numatune),
 * virDomain{Attach,Detach,Update}DeviceFlags, virConnectGetAllDomainStats / virDomainListGetStats
 * (domstats) and virDomainStartDirtyRateCalc. libvirt decides and words its refusals itself;
 * what virsh does on its own side of the connection (the two-step parameter reads, the choice
 * and rewrite of a memory device) is done here the same way.
 */
import type { LibvirtClient } from '../../libvirt/client.js';
import {
  AffectFlag, DOMAIN_LIST_MAX, DOMAIN_PARAMETERS_MAX, DOMAIN_STATS_PARAMS_MAX, Proc, STRING_MAX, TYPED_PARAM_STRING_OKAY, XmlFlag, readDomain,
  readTypedParam, writeDomain, writeTypedParam, type TypedParam, type WireDomain,
} from '../../libvirt/protocol.js';
import { XdrReader } from '../../libvirt/xdr.js';
import type { AffectFlags } from '../api.js';
import {
  MEMORY_PARAMETER_FIELDS, MEMORY_PARAM_UNLIMITED_KIB, STATS_FLAGS, STATS_GROUPS, type DeviceFlags, type DirtyRateMode,
  type DomainStatsRecord, type DomainStatsRequest, type MemoryDeviceUpdate, type MemoryParameter, type MemoryParametersUpdate, type NumaParameters,
  type NumaParametersUpdate,
} from '../domain-memory-api.js';
import { updatedMemoryDeviceXml } from './memory-device-xml.js';

/** What the driver lends: its connection and its lookup (virsh's id, uuid, name order). */
export interface LibvirtDomainSource {
  connection(signal?: AbortSignal): Promise<LibvirtClient>;
  lookup(ref: string, signal?: AbortSignal): Promise<WireDomain>;
}

const affectBits = (f: AffectFlags): number => (f.live ? AffectFlag.LIVE : 0) | (f.config ? AffectFlag.CONFIG : 0);

/** VIR_DOMAIN_DIRTYRATE_MODE_* bits by virsh's mode name (page-sampling is no bit: the default). */
const DIRTY_RATE_FLAG: Record<DirtyRateMode, number> = { 'page-sampling': 0, 'dirty-bitmap': 1, 'dirty-ring': 2 };

export class LibvirtDomainMemory {
  constructor(private readonly src: LibvirtDomainSource) {}

  private async call(d: WireDomain, proc: number, extra: ((w: import('../../libvirt/xdr.js').XdrWriter) => void) | null, signal?: AbortSignal): Promise<XdrReader> {
    const c = await this.src.connection(signal);
    return new XdrReader(await c.call(proc, (w) => { writeDomain(w, d); extra?.(w); }, { signal }));
  }

  /** libvirt's two-step read of a domain's typed parameters: how many, then them. */
  private async params(ref: string, proc: number, flags: DeviceFlags): Promise<TypedParam[]> {
    const d = await this.src.lookup(ref, flags.signal);
    const bits = affectBits(flags) | TYPED_PARAM_STRING_OKAY;
    const first = await this.call(d, proc, (w) => w.int(0).uint(bits), flags.signal);
    first.array(readTypedParam, DOMAIN_PARAMETERS_MAX);
    const n = first.int();
    if (n === 0) return [];
    const r = await this.call(d, proc, (w) => w.int(n).uint(bits), flags.signal);
    return r.array(readTypedParam, DOMAIN_PARAMETERS_MAX);
  }

  private async setParams(ref: string, proc: number, params: TypedParam[], flags: DeviceFlags): Promise<void> {
    const d = await this.src.lookup(ref, flags.signal);
    await this.call(d, proc, (w) => { w.array(params, writeTypedParam, DOMAIN_PARAMETERS_MAX); w.uint(affectBits(flags)); }, flags.signal);
  }

  async memoryParameters(ref: string, flags: DeviceFlags = {}): Promise<MemoryParameter[]> {
    return (await this.params(ref, Proc.DOMAIN_GET_MEMORY_PARAMETERS, flags)).map((p) => {
      const v = p.value.type === 'ullong' ? Number(p.value.value) : typeof p.value.value === 'number' ? p.value.value : null;
      return { field: p.field, valueKiB: v === null || v >= MEMORY_PARAM_UNLIMITED_KIB ? null : v };
    });
  }

  async setMemoryParameters(ref: string, update: MemoryParametersUpdate, flags: DeviceFlags = {}): Promise<void> {
    const params: TypedParam[] = [];
    for (const [, field, key] of MEMORY_PARAMETER_FIELDS) {
      const v = update[key];
      if (v !== undefined) params.push({ field, value: { type: 'ullong', value: BigInt(v === null ? MEMORY_PARAM_UNLIMITED_KIB : v) } });
    }
    await this.setParams(ref, Proc.DOMAIN_SET_MEMORY_PARAMETERS, params, flags);
  }

  async numaParameters(ref: string, flags: DeviceFlags = {}): Promise<NumaParameters> {
    const params = await this.params(ref, Proc.DOMAIN_GET_NUMA_PARAMETERS, flags);
    const mode = params.find((p) => p.field === 'numa_mode')?.value;
    const nodeset = params.find((p) => p.field === 'numa_nodeset')?.value;
    return { mode: mode?.type === 'int' ? mode.value : 0, nodeset: nodeset?.type === 'string' ? nodeset.value : '' };
  }

  async setNumaParameters(ref: string, update: NumaParametersUpdate, flags: DeviceFlags = {}): Promise<void> {
    // virsh's order: the nodeset first, then the mode.
    const params: TypedParam[] = [];
    if (update.nodeset !== undefined) params.push({ field: 'numa_nodeset', value: { type: 'string', value: update.nodeset } });
    if (update.mode !== undefined) params.push({ field: 'numa_mode', value: { type: 'int', value: update.mode } });
    await this.setParams(ref, Proc.DOMAIN_SET_NUMA_PARAMETERS, params, flags);
  }

  async attachDevice(ref: string, xml: string, flags: DeviceFlags = {}): Promise<void> {
    const d = await this.src.lookup(ref, flags.signal);
    await this.call(d, Proc.DOMAIN_ATTACH_DEVICE_FLAGS, (w) => w.string(xml, STRING_MAX).uint(affectBits(flags)), flags.signal);
  }

  async detachDevice(ref: string, xml: string, flags: DeviceFlags = {}): Promise<void> {
    const d = await this.src.lookup(ref, flags.signal);
    await this.call(d, Proc.DOMAIN_DETACH_DEVICE_FLAGS, (w) => w.string(xml, STRING_MAX).uint(affectBits(flags)), flags.signal);
  }

  /** virsh's update-memory-device: the domain XML (inactive with --config), the device picked and rewritten, sent unless printXml. */
  async updateMemoryDevice(ref: string, update: MemoryDeviceUpdate, flags: DeviceFlags = {}): Promise<{ xml: string }> {
    const d = await this.src.lookup(ref, flags.signal);
    const domainXml = (await this.call(d, Proc.DOMAIN_GET_XML_DESC, (w) => w.uint(flags.config ? XmlFlag.INACTIVE : 0), flags.signal)).string(STRING_MAX);
    const xml = updatedMemoryDeviceXml(domainXml, { alias: update.alias, node: update.node }, update.requestedKiB);
    if (!update.printXml) await this.call(d, Proc.DOMAIN_UPDATE_DEVICE_FLAGS, (w) => w.string(xml, STRING_MAX).uint(affectBits(flags)), flags.signal);
    return { xml };
  }

  async domainStats(req: DomainStatsRequest): Promise<DomainStatsRecord[]> {
    const c = await this.src.connection(req.signal);
    const doms: WireDomain[] = [];
    for (const ref of req.domains ?? []) doms.push(await this.src.lookup(ref, req.signal));
    const groups = req.groups.reduce((s, g) => s | STATS_GROUPS[g], 0);
    const flags = req.flags.reduce((s, f) => s + STATS_FLAGS[f], 0);
    const r = new XdrReader(await c.call(Proc.CONNECT_GET_ALL_DOMAIN_STATS, (w) => {
      w.array(doms, writeDomain, DOMAIN_LIST_MAX).uint(groups).uint(flags);
    }, { signal: req.signal }));
    const records = r.array((x) => ({ dom: readDomain(x), params: x.array(readTypedParam, DOMAIN_STATS_PARAMS_MAX) }), DOMAIN_LIST_MAX);
    return records.map((rec) => ({ name: rec.dom.name, params: rec.params }));
  }

  async startDirtyRateCalc(ref: string, seconds: number, mode: DirtyRateMode | null, signal?: AbortSignal): Promise<void> {
    const d = await this.src.lookup(ref, signal);
    const bits = mode === null ? 0 : DIRTY_RATE_FLAG[mode] ?? 0;
    await this.call(d, Proc.DOMAIN_START_DIRTY_RATE_CALC, (w) => w.int(seconds).uint(bits), signal);
  }
}

