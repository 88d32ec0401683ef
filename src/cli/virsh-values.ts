/**
 * virsh's rules for numeric option values, pure: what vshCommandOptInt, vshCommandOptUInt,
 * vshCommandOptULongLong and vshCommandOptScaledInt accept (strtol/strtoul: leading white
 * space and a '+' pass, trailing text does not) and the words they refuse with, so a bad
 * number reads exactly as in virsh. The unit table for scaled values is size.ts's (libvirt's
 * virScaleInteger); size.ts's own parser stays the stricter one for sizes virtmem defines.
 */
import { unitBytes } from '../domain/size.js';
import { UsageError } from './args.js';

const INT_MIN = -(2 ** 31);
const INT_MAX = 2 ** 31 - 1;
const UINT_MAX = 2 ** 32 - 1;
const ULLONG_MAX = 2n ** 64n - 1n;
/** What strtol skips before a number (isspace in the C locale). */
const SPACE = '[ \\t\\n\\v\\f\\r]*';

const malformed = (text: string, name: string): UsageError => new UsageError(`Numeric value '${text}' for <${name}> option is malformed or out of range`);

/**
 * An int option (virStrToLong_i).
 * @throws UsageError with virsh's words when `text` is not a whole decimal int
 */
export function virshInt(text: string, name: string): number {
  const m = new RegExp(`^${SPACE}([+-]?\\d+)$`).exec(text);
  const v = m ? Number(m[1]) : NaN;
  if (!Number.isInteger(v) || v < INT_MIN || v > INT_MAX) throw malformed(text, name);
  return v;
}

/**
 * An unsigned int option that refuses negative numbers (virStrToLong_uip).
 * @throws UsageError with virsh's words
 */
export function virshUInt(text: string, name: string): number {
  const v = unsignedDecimal(text);
  if (v === null || v > BigInt(UINT_MAX)) throw malformed(text, name);
  return Number(v);
}

/**
 * An unsigned long long option that refuses negative numbers (virStrToLong_ullp), as a bigint.
 * @throws UsageError with virsh's words
 */
export function virshULongLong(text: string, name: string): bigint {
  const v = unsignedDecimal(text);
  if (v === null || v > ULLONG_MAX) throw malformed(text, name);
  return v;
}

function unsignedDecimal(text: string): bigint | null {
  const m = new RegExp(`^${SPACE}\\+?(\\d+)$`).exec(text);
  return m ? BigInt(m[1]!) : null;
}

/**
 * A scaled option (vshCommandOptScaledInt): a number with an optional unit, a bare number in
 * units of `scaleBytes`, at most `maxBytes`. Returns bytes.
 * @throws UsageError with virsh's line, and libvirt's second line when the unit is unknown or
 *   the value too large (virsh prints the library's error after its own)
 */
export function virshScaled(text: string, name: string, scaleBytes: bigint, maxBytes: bigint): bigint {
  const first = `Scaled numeric value '${text}' for <${name}> option is malformed or out of range`;
  const m = new RegExp(`^${SPACE}\\+?(\\d+)(.*)$`, 's').exec(text);
  const value = m ? BigInt(m[1]!) : null;
  if (value === null || value > ULLONG_MAX) throw new UsageError(first);
  const suffix = m![2]!;
  const scale = suffix === '' ? scaleBytes : unitBytes(suffix);
  if (scale === undefined) throw new UsageError(`${first}\nerror: invalid argument: unknown suffix '${suffix}'`);
  if (value !== 0n && value > maxBytes / scale) throw new UsageError(`${first}\nerror: numerical overflow: value too large: ${value}${suffix}`);
  return value * scale;
}

const LLONG_MAX = 2n ** 63n - 1n;

/**
 * A memtune limit (virshMemtuneGetSize): strtoll's number, any negative one meaning unlimited
 * (null), else scaled by its unit (a bare number is KiB) to at most LLONG_MAX bytes and rounded
 * up to KiB.
 * @throws UsageError "Unable to parse integer parameter NAME", with libvirt's second line for a
 *   bad unit or a value too large
 */
export function virshMemtuneKiB(text: string, name: string): number | null {
  const first = `Unable to parse integer parameter ${name}`;
  const m = new RegExp(`^${SPACE}([+-]?\\d+)(.*)$`, 's').exec(text);
  if (!m) throw new UsageError(first);
  const value = BigInt(m[1]!);
  if (value > LLONG_MAX || value < -LLONG_MAX - 1n) throw new UsageError(first);
  if (value < 0n) return null;
  const suffix = m[2]!;
  const scale = suffix === '' ? 1024n : unitBytes(suffix);
  if (scale === undefined) throw new UsageError(`${first}\nerror: invalid argument: unknown suffix '${suffix}'`);
  if (value !== 0n && value > LLONG_MAX / scale) throw new UsageError(`${first}\nerror: numerical overflow: value too large: ${value}${suffix}`);
  return Number((value * scale + 1023n) / 1024n);
}

/**
 * An int in C's base 0 (virStrToLong_i with base 0: decimal, 0x hex, leading-0 octal), the whole
 * text; null when it is not one.
 */
export function cIntBase0(text: string): number | null {
  const m = new RegExp(`^${SPACE}([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\\d*)$`).exec(text);
  if (!m) return null;
  const digits = m[2]!;
  const v = /^0[xX]/.test(digits) ? parseInt(digits.slice(2), 16) : digits.length > 1 && digits.startsWith('0') ? parseInt(digits, 8) : Number(digits);
  const signed = m[1] === '-' ? -v : v;
  return Number.isSafeInteger(signed) && signed >= INT_MIN && signed <= INT_MAX ? signed : null;
}
