/**
 * What the libvirt driver reads from libvirt's domain XML, pure: the memory layout (boot RAM,
 * DIMMs, virtio-mem devices with their live sizes) and the balloon statistics period, and the
 * device XML that asks libvirt to resize one virtio-mem device.
 */
import { childrenNamed, formatXmlTree, parseXmlTree, type Element } from '../../domain/xml-tree.js';
import { xmlError } from '../../domain/errors.js';

export interface LibvirtVirtioMem {
  alias: string | null;
  sizeKiB: number;
  blockKiB: number;
  requestedKiB: number;
  /** Plugged now (live XML's <current>; the requested size when absent). */
  currentKiB: number;
  /** The device element as libvirt wrote it. */
  element: Element;
}

export interface LibvirtMemoryLayout {
  name: string;
  /** <memory>: everything, boot RAM plus memory devices. */
  memoryKiB: number;
  currentMemoryKiB: number;
  bootKiB: number;
  dimmKiB: number;
  virtioMem: LibvirtVirtioMem[];
  /** <memballoon><stats period>, 0 when absent. */
  statsPeriodS: number;
  /** <memballoon model>: 'none' when the guest has no balloon. */
  balloonModel: string;
  /** <memballoon autodeflate='on'>. */
  balloonAutodeflate: boolean;
}

const UNIT_KIB: Record<string, number> = {
  b: 1 / 1024, bytes: 1 / 1024, k: 1, kib: 1, kb: 1000 / 1024, m: 1024, mib: 1024, mb: 1e6 / 1024,
  g: 1024 ** 2, gib: 1024 ** 2, gb: 1e9 / 1024, t: 1024 ** 3, tib: 1024 ** 3, tb: 1e12 / 1024,
};

/** A libvirt scaled size element in KiB (unit attribute; KiB when absent). */
export function sizeKiB(el: Element | undefined, what: string): number {
  if (!el) return 0;
  const unit = (el.attrs.unit ?? 'KiB').toLowerCase();
  const f = UNIT_KIB[unit];
  const v = Number(el.text.trim());
  if (f === undefined || !Number.isFinite(v)) throw xmlError(`libvirt XML has an unreadable <${what}>: '${el.text.trim()}' ${el.attrs.unit ?? ''}`);
  return Math.round(v * f);
}

const child = (el: Element | undefined, name: string): Element | undefined => (el ? childrenNamed(el, name)[0] : undefined);

/** Read the memory layout from a domain's XML (live or inactive). */
export function memoryLayoutFromXml(xml: string): LibvirtMemoryLayout {
  const root = parseXmlTree(xml);
  if (root.name !== 'domain') throw xmlError(`expected a <domain> document, got <${root.name}>`);
  const devices = child(root, 'devices');
  const mems = devices ? childrenNamed(devices, 'memory') : [];
  let dimmKiB = 0;
  const virtioMem: LibvirtVirtioMem[] = [];
  for (const m of mems) {
    const target = child(m, 'target');
    const size = sizeKiB(child(target, 'size'), 'memory/target/size');
    if (m.attrs.model === 'virtio-mem') {
      const requested = sizeKiB(child(target, 'requested'), 'memory/target/requested');
      const cur = child(target, 'current');
      virtioMem.push({
        alias: child(m, 'alias')?.attrs.name ?? null, sizeKiB: size, blockKiB: sizeKiB(child(target, 'block'), 'memory/target/block'),
        requestedKiB: requested, currentKiB: cur ? sizeKiB(cur, 'memory/target/current') : requested, element: m,
      });
    } else {
      dimmKiB += size;
    }
  }
  const memoryKiB = sizeKiB(child(root, 'memory'), 'memory');
  const balloon = child(devices, 'memballoon');
  const period = child(balloon, 'stats')?.attrs.period;
  return {
    name: child(root, 'name')?.text.trim() ?? '',
    memoryKiB,
    currentMemoryKiB: sizeKiB(child(root, 'currentMemory'), 'currentMemory') || memoryKiB,
    bootKiB: memoryKiB - dimmKiB - virtioMem.reduce((s, d) => s + d.sizeKiB, 0),
    dimmKiB,
    virtioMem,
    statsPeriodS: period !== undefined && /^[0-9]+$/.test(period) ? Number(period) : 0,
    // libvirt adds a virtio balloon to every QEMU guest that does not say model='none'.
    balloonModel: balloon?.attrs.model ?? 'virtio',
    balloonAutodeflate: balloon?.attrs.autodeflate === 'on',
  };
}

/**
 * The device XML for `virDomainUpdateDeviceFlags` resizing a virtio-mem device: the device as
 * libvirt described it, with a new <requested> (libvirt refuses any other difference).
 */
export function virtioMemUpdateXml(dev: LibvirtVirtioMem, requestedKiB: number): string {
  const copy = structuredClone(dev.element);
  const target = child(copy, 'target');
  if (!target) throw xmlError('virtio-mem device without <target>');
  // <current> is output only; libvirt compares the rest.
  target.children = target.children.filter((c) => c.name !== 'current');
  const req = child(target, 'requested');
  if (!req) throw xmlError('virtio-mem device without <target><requested>');
  req.attrs = Object.assign(Object.create(null) as Record<string, string>, { unit: 'KiB' });
  req.text = String(requestedKiB);
  return formatXmlTree(copy);
}
