/**
 * A minimal XML element tree: parsed from text with saxes, and serialised back in libvirt's
 * style (two-space indent, single-quoted attributes). It knows nothing about domains.
 *
 * Hostile input is bounded here, once, for every caller: documents over 1 MiB, any DOCTYPE
 * (the only place entities can be declared, so this refuses "billion laughs" expansion and
 * external entities alike) and nesting deeper than MAX_XML_DEPTH are refused. saxes itself only
 * knows the five predefined entities and character references.
 */

import { SaxesParser } from 'saxes';
import { xmlError } from './errors.js';
import { isXmlSafe } from './xml-chars.js';

export { isXmlSafe };

export interface Element {
  name: string;
  /** Attributes by name; a null-prototype object, so names like "constructor" are plain keys. */
  attrs: Record<string, string>;
  children: Element[];
  /** Concatenated character data (text and CDATA) directly inside this element. */
  text: string;
}

/** Largest document accepted, in UTF-8 bytes. Domain XML is a few KiB; 1 MiB is generous. */
export const MAX_XML_BYTES = 1024 * 1024;
/** Deepest element nesting accepted. libvirt domain XML nests about 6 deep. */
export const MAX_XML_DEPTH = 64;

/** Creates an element; attrs are copied into a null-prototype object. */
export function element(
  name: string,
  attrs: Record<string, string | number | undefined> = {},
  children: Element[] = [],
  text = '',
): Element {
  const a: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) a[k] = String(v);
  return { name, attrs: a, children, text };
}

/**
 * Parses a document into its root element.
 *
 * @throws VirtError XML_ERROR for documents over MAX_XML_BYTES, a DOCTYPE, nesting deeper than
 *   MAX_XML_DEPTH, or malformed XML (with saxes's line and column).
 */
export function parseXmlTree(text: string): Element {
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > MAX_XML_BYTES) {
    throw xmlError(`XML document is ${bytes} bytes, over the ${MAX_XML_BYTES}-byte limit`);
  }
  const parser = new SaxesParser<{ xmlns: false; position: true }>({ xmlns: false, position: true });
  const stack: Element[] = [];
  let root: Element | undefined;

  // saxes reports errors through this handler; throwing stops the parse at the first one.
  parser.on('error', (err) => {
    // saxes prefixes "line:column: "; we state the position in words instead. Its column is
    // that of the next character, i.e. the 1-based column of the offending one.
    const message = err.message.replace(/^\d+:\d+: /, '');
    throw xmlError(`malformed XML at line ${parser.line}, column ${parser.column}: ${message}`, err);
  });
  parser.on('doctype', () => {
    throw xmlError(
      `XML at line ${parser.line}: <!DOCTYPE> is not allowed (it could declare <!ENTITY> expansions or external entities)`,
    );
  });
  parser.on('opentag', (tag) => {
    if (stack.length >= MAX_XML_DEPTH) {
      throw xmlError(`XML at line ${parser.line}: elements nested deeper than ${MAX_XML_DEPTH} levels`);
    }
    const el = element(tag.name, tag.attributes);
    const parent = stack[stack.length - 1];
    if (parent === undefined) root = el;
    else parent.children.push(el);
    stack.push(el);
  });
  parser.on('closetag', () => {
    stack.pop();
  });
  const addText = (t: string): void => {
    const current = stack[stack.length - 1];
    if (current !== undefined) current.text += t;
  };
  parser.on('text', addText);
  parser.on('cdata', addText);

  parser.write(text).close();
  if (root === undefined) throw xmlError('XML document has no root element');
  return root;
}

/** Child elements of `el` named `name`, in document order. */
export function childrenNamed(el: Element, name: string): Element[] {
  return el.children.filter((c) => c.name === name);
}

/**
 * The single child of `el` named `name`, or undefined when absent.
 *
 * @param where the path of `el` for messages, e.g. "devices/memory".
 * @throws VirtError XML_ERROR when there is more than one.
 */
export function singleChild(el: Element, name: string, where: string): Element | undefined {
  const found = childrenNamed(el, name);
  if (found.length > 1) throw xmlError(`<${where === '' ? name : `${where}/${name}`}> appears ${found.length} times`);
  return found[0];
}

function escapeText(s: string): string {
  // '\r' would be read back as '\n' (XML end-of-line normalisation) unless written as a reference.
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\r/g, '&#13;');
}

function escapeAttr(s: string): string {
  // Whitespace characters in attributes would be normalised to spaces unless written as references.
  return escapeText(s)
    .replace(/'/g, '&apos;')
    .replace(/"/g, '&quot;')
    .replace(/\n/g, '&#10;')
    .replace(/\t/g, '&#9;');
}

/**
 * Serialises `el` the way libvirt prints domain XML: two-space indentation, attributes in
 * single quotes, empty elements self-closed, a trailing newline. Mixed content (text and
 * children in one element) is not supported: the text is dropped.
 *
 * @throws VirtError XML_ERROR when a name, attribute or text holds characters XML cannot carry.
 */
export function formatXmlTree(el: Element): string {
  const lines: string[] = [];
  writeElement(el, 0, lines);
  return `${lines.join('\n')}\n`;
}

function writeElement(el: Element, depth: number, out: string[]): void {
  const pad = '  '.repeat(depth);
  const attrs = Object.entries(el.attrs)
    .map(([k, v]) => ` ${k}='${escapeAttr(checked(v, `${el.name}@${k}`))}'`)
    .join('');
  const open = `${pad}<${el.name}${attrs}`;
  if (el.children.length > 0) {
    out.push(`${open}>`);
    for (const c of el.children) writeElement(c, depth + 1, out);
    out.push(`${pad}</${el.name}>`);
  } else if (el.text !== '') {
    out.push(`${open}>${escapeText(checked(el.text, el.name))}</${el.name}>`);
  } else {
    out.push(`${open}/>`);
  }
}

function checked(s: string, where: string): string {
  if (!isXmlSafe(s)) throw xmlError(`<${where}> contains characters that XML cannot represent`);
  return s;
}
