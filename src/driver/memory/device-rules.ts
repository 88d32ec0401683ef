/**
 * The rules of virsh update-memory-device both drivers follow: which memory device a call means
 * (the one on --node, the one with --alias, or the only one), in virsh's words when there is
 * none or more than one. virsh makes this choice on its side of the connection; the libvirt
 * driver makes it on libvirt's domain XML, the native driver on its definition. Pure.
 */
import { VirtError } from '../../domain/errors.js';

/** How update-memory-device names its device: neither means "the only one". */
export interface MemoryDeviceSelector {
  alias?: string | undefined;
  node?: number | undefined;
}

/**
 * The one device `sel` names among `devices` (each with its guest node and alias as the
 * domain XML shows them).
 * @throws VirtError INVALID_ARG "no memory device found", or "multiple memory devices found,
 *   use --alias or --node to select one" (virsh's words)
 */
export function selectMemoryDevice<T>(devices: readonly T[], sel: MemoryDeviceSelector, facts: (d: T) => { node: number | null; alias: string | null }): T {
  const found = devices.filter((d) => {
    const f = facts(d);
    if (sel.node !== undefined) return f.node === sel.node;
    if (sel.alias !== undefined) return f.alias === sel.alias;
    return true;
  });
  if (found.length === 0) throw new VirtError('INVALID_ARG', 'no memory device found');
  if (found.length > 1) throw new VirtError('INVALID_ARG', 'multiple memory devices found, use --alias or --node to select one');
  return found[0]!;
}

/** virsh's words when --requested-size is given for a device without <requested> (not virtio-mem). */
export const NO_REQUESTED = 'virtio-mem device is missing <requested/>';

/**
 * A virtio-mem device's requested size as libvirt validates it (its words, VIR_ERR_XML_DETAIL):
 * at most the device's size, a whole number of blocks.
 * @throws VirtError XML_ERROR
 */
export function checkRequestedSize(dev: { sizeKiB: number; blockKiB: number }, requestedKiB: number): void {
  if (requestedKiB > dev.sizeKiB) throw new VirtError('XML_ERROR', `requested size must be smaller than or equal to @size (${dev.sizeKiB}KiB)`);
  if (requestedKiB % dev.blockKiB !== 0) throw new VirtError('XML_ERROR', 'requested size must be an integer multiple of block size');
}

/**
 * A device element's text as virsh prints it (virXMLNodeToString, libxml2's xmlNodeDump of a
 * node of the parsed domain XML): as it stood in the document, so its lines keep the document's
 * indentation (a device sits 4 spaces deep, its children 6), the first line without it, and
 * attribute values in double quotes. `text` is the element as it stands in the document.
 */
export function libxmlNodeText(text: string): string {
  return text.trimStart().replace(/<[^!?][^>]*>/g, (tag) => tag.replace(/([\w:-]+)='([^']*)'/g, '$1="$2"'));
}

/** A device element written on its own at depth 0 (2 spaces a level), as it stands inside <devices>. */
export function asDeviceInDomain(elementXml: string): string {
  return elementXml.trimEnd().split('\n').map((l) => `    ${l}`).join('\n');
}
