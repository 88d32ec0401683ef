/**
 * Which strings XML 1.0 can carry. Kept apart from the XML parser so that validating a stored
 * definition does not load the parser (CLI start-up).
 */

/**
 * Characters XML 1.0 cannot carry even escaped: C0 controls other than tab/LF/CR, U+FFFE/U+FFFF
 * and lone surrogates (\p{Cs} in a /u regex matches only unpaired ones).
 */
const NON_XML_CHARS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|\p{Cs}/u;

/** True when `text` can be written into an XML 1.0 document. */
export function isXmlSafe(text: string): boolean {
  return !NON_XML_CHARS.test(text);
}
