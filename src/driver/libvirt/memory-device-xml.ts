/**
 * virsh update-memory-device's work on libvirt's domain XML, done here as virsh does it on its
 * side of the connection: find the <devices><memory> elements, pick one (memory/device-rules.ts),
 * set its <target><requested>, and write the element as libxml2's xmlNodeDump writes a node of
 * a parsed document (virXMLNodeToString): its text as it stood in the document, white space
 * included, with attribute values in double quotes. libvirt writes its XML itself, one element
 * per line with single-quoted attributes, so its memory devices are found by their text. Pure.
 */
import { VirtError } from '../../domain/errors.js';
import { NO_REQUESTED, libxmlNodeText, selectMemoryDevice, type MemoryDeviceSelector } from '../memory/device-rules.js';

/** One <devices><memory> element of a domain XML. */
export interface MemoryDeviceText {
  /** The element's text, from `<memory` to `</memory>`. */
  text: string;
  node: number | null;
  alias: string | null;
}

/** The memory devices of a libvirt domain XML, in document order. */
export function memoryDeviceTexts(domainXml: string): MemoryDeviceText[] {
  const out: MemoryDeviceText[] = [];
  for (const m of domainXml.matchAll(/<memory model=[^>]*>[\s\S]*?<\/memory>/g)) {
    const text = m[0];
    const target = /<target>([\s\S]*?)<\/target>/.exec(text)?.[1] ?? '';
    const node = /<node>(\d+)<\/node>/.exec(target)?.[1];
    out.push({ text, node: node === undefined ? null : Number(node), alias: /<alias name='([^']*)'\/>/.exec(text)?.[1] ?? null });
  }
  return out;
}

/**
 * The device XML update-memory-device sends: the device `sel` names, with `requestedKiB` as its
 * <requested> when given.
 * @throws VirtError INVALID_ARG in virsh's words (no device, several, no <requested>)
 */
export function updatedMemoryDeviceXml(domainXml: string, sel: MemoryDeviceSelector, requestedKiB: number | undefined): string {
  const dev = selectMemoryDevice(memoryDeviceTexts(domainXml), sel, (d) => d);
  let text = dev.text;
  if (requestedKiB !== undefined) {
    if (!/<requested\b[^>]*>[^<]*<\/requested>|<requested\b[^>]*\/>/.test(text)) throw new VirtError('INVALID_ARG', NO_REQUESTED);
    // xmlNodeSetContent: the element keeps its attributes, its content becomes the number.
    text = text.replace(/<requested\b([^>]*?)(?:\/>|>[^<]*<\/requested>)/, (_m, attrs: string) => `<requested${attrs}>${requestedKiB}</requested>`);
  }
  return libxmlNodeText(text);
}
