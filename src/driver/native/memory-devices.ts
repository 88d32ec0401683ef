/**
 * Memory devices attached, detached and updated on the native driver (virsh attach-device,
 * detach-device, update-memory-device for <memory>), as libvirt's QEMU driver does them: the
 * definition (config) and the running QEMU (live, chosen by live/config/current), checked with
 * libvirt's rules and words before anything changes.
 *
 * Live, a DIMM is plugged with object-add (its backend, planned like the boot devices':
 * qemu-memory.ts) and device_add; the guest onlines it itself (the built-in guest's kernel does,
 * movable). Unplugging asks the guest through ACPI (device_del) and waits, bounded, for QEMU's
 * DEVICE_DELETED (the guest offlined and ejected it) or an ACPI _OST failure (it refused); the
 * backend goes after the device. A DIMM the guest has not let go of within the bound stays, and
 * the request stays pending with QEMU: a second detach-device finishes the removal once it is
 * gone. virtio-mem devices are resized through update-memory-device (their requested size).
 */
import type { DomainDef, MemoryDeviceDef } from '../../domain/definition.js';
import { VirtError } from '../../domain/errors.js';
import { validateDomainDef } from '../../domain/validate-def.js';
import { childrenNamed, element, formatXmlTree, parseXmlTree } from '../../domain/xml-tree.js';
import { formatMemoryDevice, parseMemoryDevice } from '../../domain/xml-memory.js';
import { Warnings } from '../../domain/xml-read.js';
import { queryMemoryDevices, qomSet, type QmpEventStream } from '../../qmp/index.js';
import { resolveAffect } from '../memory/rules.js';
import { NO_REQUESTED, asDeviceInDomain, checkRequestedSize, libxmlNodeText, selectMemoryDevice } from '../memory/device-rules.js';
import type { DeviceFlags, MemoryDeviceUpdate } from '../domain-memory-api.js';
import type { NativeContext } from './context.js';
import { DEVICE_ALIGN_KIB, memdevId } from './qemu-memory.js';
import { hotAddMemoryDevice, memoryDeviceIds } from './hot-plug.js';
import { writeRunRecord, type RunningRecord } from './run-status.js';
import { monitorError } from './monitor.js';

/** How long a DIMM unplug waits for the guest to offline and eject it (TCG guests are slow). */
export const UNPLUG_WAIT_MS = 60_000;

/** The memory device a device XML describes, and its alias when it names one. */
function parseDevice(xml: string): { dev: MemoryDeviceDef; alias: string | null } {
  const root = parseXmlTree(xml);
  if (root.name !== 'memory') {
    throw new VirtError('NO_SUPPORT', `this function is not supported by the connection driver: virtmem's own driver attaches and detaches <memory> devices, not <${root.name}>`);
  }
  return { dev: parseMemoryDevice(root, new Warnings()), alias: childrenNamed(root, 'alias')[0]?.attrs['name'] ?? null };
}

/** The KiB a device adds to what the guest has at once (virtio-mem: what it plugs). */
const fixedKiB = (d: MemoryDeviceDef): number => (d.model === 'virtio-mem' ? d.requestedKiB : d.sizeKiB);

/**
 * libvirt's checks of a memory device added to a definition (virDomainDefCompatibleDevice):
 * the domain has a hot-plug ceiling and the device fits under it.
 * @throws VirtError CONFIG_UNSUPPORTED in libvirt's words
 */
function checkFits(def: DomainDef, dev: MemoryDeviceDef): void {
  const hp = def.memory.hotplug;
  if (hp === undefined) throw new VirtError('CONFIG_UNSUPPORTED', "unsupported configuration: cannot use/hotplug a memory device when domain 'maxMemory' is not defined");
  if (def.memory.maxKiB + dev.sizeKiB > hp.ceilingKiB) {
    throw new VirtError('CONFIG_UNSUPPORTED', `unsupported configuration: Attaching memory device with size '${dev.sizeKiB}' would exceed domain's maxMemory config size '${hp.ceilingKiB}'`);
  }
}

/** A definition with `dev` added: <memory> grows by its size, the current memory by what it brings at once. */
function withDevice(def: DomainDef, dev: MemoryDeviceDef): DomainDef {
  return {
    ...def,
    memory: { ...def.memory, maxKiB: def.memory.maxKiB + dev.sizeKiB, currentKiB: def.memory.currentKiB + fixedKiB(dev) },
    memoryDevices: [...def.memoryDevices, dev],
  };
}

/** A definition with device `i` removed, the sizes it counted in going with it. */
function withoutDevice(def: DomainDef, i: number): DomainDef {
  const dev = def.memoryDevices[i]!;
  const maxKiB = def.memory.maxKiB - dev.sizeKiB;
  return {
    ...def,
    memory: { ...def.memory, maxKiB, currentKiB: Math.min(maxKiB, Math.max(0, def.memory.currentKiB - fixedKiB(dev))) },
    memoryDevices: def.memoryDevices.filter((_, k) => k !== i),
  };
}

/**
 * Which device of `devices` a detach XML means (virDomainMemoryFindByDef): the same model, node,
 * size, block and requested size, source, path, and the alias and DIMM address when given.
 */
function findDevice(devices: readonly MemoryDeviceDef[], ids: readonly string[] | null, want: MemoryDeviceDef, alias: string | null): number {
  const same = (a: unknown, b: unknown): boolean => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
  return devices.findIndex((d, i) => {
    if (alias !== null && ids?.[i] !== alias) return false;
    if (d.model !== want.model || (d.model !== 'virtio-pmem' && want.model !== 'virtio-pmem' && (d.node ?? 0) !== (want.node ?? 0))) return false;
    if (d.sizeKiB !== want.sizeKiB) return false;
    switch (want.model) {
      case 'virtio-mem':
        return d.model === 'virtio-mem' && d.blockKiB === want.blockKiB && d.requestedKiB === want.requestedKiB && same(d.source, want.source);
      case 'dimm':
        return d.model === 'dimm' && same(d.source, want.source) && (want.address === undefined || same(d.address, want.address));
      case 'nvdimm':
        return d.model === 'nvdimm' && d.path === want.path;
      default:
        return d.model === 'virtio-pmem' && d.path === want.path;
    }
  });
}

const NOT_FOUND = 'device not found: matching memory device was not found';

/** The next free DIMM id of a live definition (dimm0, dimm1, ... the first not in use). */
function freeDimmId(live: DomainDef): string {
  const used = new Set(memoryDeviceIds(live));
  for (let i = 0; ; i++) if (!used.has(`dimm${i}`)) return `dimm${i}`;
}

/**
 * attach-device of a <memory>: the definition gets it (config), the running guest gets it
 * plugged (live; DIMMs and virtio-mem).
 * @throws VirtError NO_SUPPORT (not <memory>, a model QEMU cannot plug), CONFIG_UNSUPPORTED (no
 *   hot-plug ceiling, no room, no slot), INVALID_ARG / XML_ERROR (a bad device), OPERATION_INVALID
 */
export async function attachDevice(ctx: NativeContext, ref: string, xml: string, flags: DeviceFlags = {}): Promise<void> {
  await deviceChange(ctx, ref, xml, flags, async ({ name, dev, def, o, side }) => {
    let config: DomainDef | null = null;
    if (side.config) {
      checkFits(def, dev);
      config = validateDomainDef(withDevice(def, dev));
    }
    if (side.live && o.state !== 'shutoff') await plugLive(ctx, name, o.record, dev, flags.signal);
    if (config) await ctx.store.save(config);
  });
}

/** What a device change works on, under the domain's lock: the device XML read, the definition, the domain's state, the sides asked for. */
interface DeviceChange {
  name: string;
  dev: MemoryDeviceDef;
  alias: string | null;
  def: DomainDef;
  o: Awaited<ReturnType<NativeContext['observe']>>;
  side: { live: boolean; config: boolean };
}

/** Runs `fn` on a device change under the domain's job lock (the XML is read before the lock is taken). */
async function deviceChange(ctx: NativeContext, ref: string, xml: string, flags: DeviceFlags, fn: (c: DeviceChange) => Promise<void>): Promise<void> {
  const { dev, alias } = parseDevice(xml);
  const { name } = await ctx.lookup(ref);
  await ctx.withDomainLock(name, async () => {
    const def = await ctx.current(name, ref);
    const o = await ctx.observe(name);
    await fn({ name, dev, alias, def, o, side: resolveAffect(flags, o.state !== 'shutoff') });
  }, flags.signal);
}

/** Plugs `dev` into the running guest and records it in the live definition. Caller holds the lock. */
async function plugLive(ctx: NativeContext, name: string, rec: RunningRecord, dev: MemoryDeviceDef, signal?: AbortSignal): Promise<void> {
  const live = rec.live;
  if (dev.model === 'nvdimm' || dev.model === 'virtio-pmem') {
    throw new VirtError('NO_SUPPORT', `Operation not supported: virtmem's own driver plugs DIMMs and virtio-mem devices into a running guest, not ${dev.model}; attach it with --config and restart`);
  }
  checkFits(live, dev);
  const hp = live.memory.hotplug!;
  if (live.memoryDevices.length + 1 > hp.slots) {
    throw new VirtError('CONFIG_UNSUPPORTED', `unsupported configuration: memory device count '${live.memoryDevices.length + 1}' exceeds slots count '${hp.slots}'`);
  }
  // QEMU maps DIMMs in 2 MiB steps; libvirt rounds the size up the same way when it plugs one.
  const plugged: MemoryDeviceDef = dev.model === 'dimm'
    ? { ...dev, sizeKiB: Math.ceil(dev.sizeKiB / DEVICE_ALIGN_KIB) * DEVICE_ALIGN_KIB, id: freeDimmId(live) }
    : dev;
  if (plugged.model === 'virtio-mem') checkRequestedSize(plugged, plugged.requestedKiB);
  const grown = withDevice(live, plugged);
  await hotAddMemoryDevice(ctx, name, grown, rec.autoNodes, signal);
  rec.live = grown;
  await writeRunRecord(ctx.paths.run(name), rec);
}

/**
 * detach-device of a <memory>: the definition loses it (config), the running guest has it
 * unplugged (live; DIMMs, which the guest must offline first).
 * @throws VirtError INVALID_ARG (no such device), NO_SUPPORT (a model QEMU cannot unplug),
 *   OPERATION_FAILED (the guest refused), TIMEOUT (the guest did not let go in time)
 */
export async function detachDevice(ctx: NativeContext, ref: string, xml: string, flags: DeviceFlags = {}): Promise<void> {
  await deviceChange(ctx, ref, xml, flags, async ({ name, dev, alias, def, o, side }) => {
    let config: DomainDef | null = null;
    if (side.config) {
      const i = findDevice(def.memoryDevices, null, dev, alias);
      if (i < 0) throw new VirtError('INVALID_ARG', NOT_FOUND);
      config = validateDomainDef(withoutDevice(def, i));
    }
    if (side.live && o.state !== 'shutoff') {
      const rec = o.record;
      const ids = memoryDeviceIds(rec.live);
      // The live definition keeps the sizes QEMU got (aligned); a device XML names what it was given.
      const aligned: MemoryDeviceDef = dev.model === 'dimm' ? { ...dev, sizeKiB: Math.ceil(dev.sizeKiB / DEVICE_ALIGN_KIB) * DEVICE_ALIGN_KIB } : dev;
      const i = findDevice(rec.live.memoryDevices, ids, aligned, alias);
      if (i < 0) throw new VirtError('INVALID_ARG', NOT_FOUND);
      const model = rec.live.memoryDevices[i]!.model;
      if (model !== 'dimm') {
        throw new VirtError('NO_SUPPORT', `Operation not supported: QEMU cannot unplug a ${model} device from a running guest${model === 'virtio-mem' ? ' (give its memory back with update-memory-device --requested-size 0, or setmem)' : ''}`);
      }
      await unplugDimm(ctx, name, ids[i]!, flags.signal);
      rec.live = withoutDevice(rec.live, i);
      await writeRunRecord(ctx.paths.run(name), rec);
    }
    if (config) await ctx.store.save(config);
  });
}

/**
 * Asks the guest to give DIMM `id` back and waits (bounded) until QEMU removed it, then removes
 * its backend. A DIMM already gone (an earlier request the guest honoured late) only loses its backend.
 * @throws VirtError OPERATION_FAILED (the guest refused the eject), TIMEOUT
 */
async function unplugDimm(ctx: NativeContext, name: string, id: string, signal?: AbortSignal): Promise<void> {
  await ctx.monitor(name, async (c) => {
    // Subscribed before the request, so the answer cannot slip by.
    const events = c.events({ names: ['DEVICE_DELETED', 'ACPI_DEVICE_OST'] });
    try {
      const present = (await queryMemoryDevices(c)).some((d) => d.id === id);
      if (present) {
        await c.execute('device_del', { id });
        await waitUnplugged(events, name, id, signal);
      }
      await c.execute('object-del', { id: memdevId(id) }).catch((err: unknown) => { throw monitorError(name, err); });
    } finally {
      events.close();
    }
  }, signal);
}

/** Waits for DEVICE_DELETED of `id`, or the guest's ACPI refusal, within UNPLUG_WAIT_MS. */
async function waitUnplugged(events: QmpEventStream, name: string, id: string, signal?: AbortSignal): Promise<void> {
  const end = Date.now() + UNPLUG_WAIT_MS;
  for (;;) {
    const left = end - Date.now();
    if (left <= 0) {
      throw new VirtError('TIMEOUT', `Timed out during operation: the guest of domain '${name}' did not release DIMM '${id}' within ${UNPLUG_WAIT_MS / 1000} s (its memory may be in use, or not onlined movable); the unplug request stays pending with QEMU: run detach-device again to finish it once the guest let go`);
    }
    const ev = await events.nextEvent({ timeoutMs: left, ...(signal ? { signal } : {}) }).catch((err: unknown) => {
      if ((err as { code?: string }).code === 'QMP_TIMEOUT') return null;
      throw monitorError(name, err);
    });
    if (ev === null) continue;
    const data = (ev.data ?? {}) as Record<string, unknown>;
    if (ev.event === 'DEVICE_DELETED' && data['device'] === id) return;
    const info = data['info'] as Record<string, unknown> | undefined;
    // ACPI _OST: source 0x103 is an eject request; a status other than 0 is the guest's refusal.
    if (ev.event === 'ACPI_DEVICE_OST' && info?.['device'] === id && info['source'] === 0x103 && info['status'] !== 0) {
      throw new VirtError('OPERATION_FAILED', `operation failed: the guest of domain '${name}' refused to release DIMM '${id}' (ACPI _OST status ${String(info['status'])}): its memory is in use or not movable`);
    }
  }
}

/**
 * update-memory-device: the device chosen as virsh chooses it, in the live definition (with
 * QEMU's ids as aliases) or the stored one (--config, no aliases); a virtio-mem device's
 * requested size changed (live: QEMU's requested-size), and its XML as it would be sent.
 * @throws VirtError INVALID_ARG (virsh's words: no device, several, no <requested>),
 *   XML_ERROR (libvirt's: a size off the block or above the device), CONFIG_UNSUPPORTED
 */
export async function updateMemoryDevice(ctx: NativeContext, ref: string, update: MemoryDeviceUpdate, flags: DeviceFlags = {}): Promise<{ xml: string }> {
  const { name } = await ctx.lookup(ref);
  return ctx.withDomainLock(name, async () => {
    const def = await ctx.current(name, ref);
    const o = await ctx.observe(name);
    const side = resolveAffect(flags, o.state !== 'shutoff');
    const running = o.state !== 'shutoff' ? o.record : null;
    // virsh reads the inactive XML with --config, else the domain as it is.
    const shown = flags.config || running === null ? def : running.live;
    // Aliases are what a running guest's devices are known by; a stored definition has none.
    const ids = shown === def ? null : memoryDeviceIds(shown);
    const index = selectMemoryDevice(shown.memoryDevices.map((_, i) => i), { alias: update.alias, node: update.node }, (i) => {
      const d = shown.memoryDevices[i]!;
      return { node: d.model === 'virtio-pmem' ? null : d.node ?? 0, alias: ids?.[i] ?? null };
    });
    let dev = shown.memoryDevices[index]!;
    if (update.requestedKiB !== undefined) {
      if (dev.model !== 'virtio-mem') throw new VirtError('INVALID_ARG', NO_REQUESTED);
      dev = { ...dev, requestedKiB: update.requestedKiB };
    }
    const xml = memoryDeviceXml(dev, ids?.[index] ?? null);
    if (update.printXml) return { xml };
    if (dev.model !== 'virtio-mem') {
      // libvirt: only a virtio-mem device's requested size may change.
      if (side.live) throw new VirtError('CONFIG_UNSUPPORTED', `unsupported configuration: cannot modify memory of model '${dev.model}'`);
      return { xml };
    }
    checkRequestedSize(dev, dev.requestedKiB);
    const requested = dev.requestedKiB;
    const setRequested = (d: DomainDef, i: number): DomainDef => {
      const old = d.memoryDevices[i] as typeof dev;
      return {
        ...d,
        memory: { ...d.memory, currentKiB: Math.min(d.memory.maxKiB, Math.max(0, d.memory.currentKiB - old.requestedKiB + requested)) },
        memoryDevices: d.memoryDevices.map((x, k) => (k === i ? { ...old, requestedKiB: requested } : x)),
      };
    };
    // The same device on the other side: the one at the same place among the virtio-mem devices.
    const vmemIndex = shown.memoryDevices.slice(0, index).filter((d) => d.model === 'virtio-mem').length;
    const at = (d: DomainDef): number => d.memoryDevices.map((x, i) => [x, i] as const).filter(([x]) => x.model === 'virtio-mem')[vmemIndex]?.[1] ?? -1;
    const configIndex = side.config ? at(def) : -1;
    if (side.config && configIndex < 0) throw new VirtError('CONFIG_UNSUPPORTED', 'unsupported configuration: memory not found');
    const config = side.config ? validateDomainDef(setRequested(def, configIndex)) : null;
    if (side.live && running !== null) {
      const i = at(running.live);
      if (i < 0) throw new VirtError('CONFIG_UNSUPPORTED', `unsupported configuration: memory '${ids?.[index] ?? ''}' not found`);
      await ctx.monitor(name, (c) => qomSet(c, `/machine/peripheral/${memoryDeviceIds(running.live)[i]}`, 'requested-size', requested * 1024), flags.signal);
      running.live = setRequested(running.live, i);
      await writeRunRecord(ctx.paths.run(name), running);
    }
    if (config) await ctx.store.save(config);
    return { xml };
  }, flags.signal);
}

/** A memory device's XML as libvirt's device XML (with the alias QEMU knows it by, on a live definition). */
function memoryDeviceXml(dev: MemoryDeviceDef, alias: string | null): string {
  const el = formatMemoryDevice(dev);
  if (alias !== null) el.children.push(element('alias', { name: alias }));
  return libxmlNodeText(asDeviceInDomain(formatXmlTree(el)));
}

