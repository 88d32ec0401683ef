/**
 * Memory sizes as users and libvirt XML write them ("scaled integers"), converted to KiB.
 *
 * The unit table and rounding mirror libvirt's `virScaleInteger` (src/util/virutil.c), used both
 * by virsh's `vshCommandOptScaledInt` (setmem/setmaxmem `--size`) and by the XML parser for
 * `unit=` attributes:
 *   - "b", "byte", "bytes"                   -> 1
 *   - one letter k/m/g/t/p/e, or with "iB"    -> powers of 1024 (k = KiB, M = MiB, ...)
 *   - letter + "B" (KB, MB, GB, TB, PB, EB)   -> powers of 1000
 * all case-insensitive, as in libvirt ("kb" is 1000 bytes, "KIB" is 1024).
 * Byte counts are rounded *up* to whole KiB (libvirt's VIR_DIV_UP), so "1000b" is 1 KiB.
 *
 * Arithmetic is done in BigInt so overflow is detected exactly, never rounded away.
 */

import { VirtError, invalidArg, xmlError } from './errors.js';
import { printable } from './name.js';

/**
 * Largest KiB value accepted: 2^53 - 1 KiB (just under 8 EiB).
 *
 * libvirt bounds memory at LLONG_MAX bytes (`virMemoryMaxValue`) and its API refuses KiB values
 * above LLONG_MAX / 1024 = 2^53 - 1 ("numerical overflow: input too large" from
 * `virsh setmem 8E`). That is exactly Number.MAX_SAFE_INTEGER, so every accepted value is also an
 * exact JavaScript number.
 */
export const MAX_KIB = Number.MAX_SAFE_INTEGER;

const KIB = 1024n;
const MAX_KIB_BIG = BigInt(MAX_KIB);
/** More digits than this cannot fit however small the unit; refuse before building a BigInt. */
const MAX_DIGITS = 24;

/** Unit letters in increasing powers, as in virScaleInteger's fall-through switch. */
const POWER_LETTERS = 'kmgtpe';

/**
 * Bytes per unit for a libvirt unit suffix, or undefined when libvirt would reject the suffix.
 * The empty string is not a unit here; callers substitute their default unit first.
 */
export function unitBytes(unit: string): bigint | undefined {
  const u = unit.toLowerCase();
  if (u === 'b' || u === 'byte' || u === 'bytes') return 1n;
  const power = POWER_LETTERS.indexOf(u.charAt(0)) + 1;
  if (u.length === 0 || power === 0) return undefined;
  const rest = u.slice(1);
  // "" and "ib" are binary (k, KiB); "b" alone is decimal (KB). Anything else is unknown.
  const base = rest === '' || rest === 'ib' ? 1024n : rest === 'b' ? 1000n : undefined;
  return base === undefined ? undefined : base ** BigInt(power);
}

/** count * unit, in KiB rounded up; undefined when above MAX_KIB. */
function scaleToKiB(count: bigint, bytesPerUnit: bigint): number | undefined {
  const bytes = count * bytesPerUnit;
  const kib = (bytes + KIB - 1n) / KIB;
  return kib > MAX_KIB_BIG ? undefined : Number(kib);
}

const UNIT_HELP = 'b, KB, k/KiB, MB, M/MiB, GB, G/GiB, TB, T/TiB, PB, P/PiB, EB, E/EiB';

/**
 * Explains why `text` is not a plain `digits[unit]` scaled integer, for the common mistakes.
 * Returns undefined when the shape is fine.
 */
function describeMalformed(text: string): string | undefined {
  if (text === '') return 'the value is empty';
  if (/\s/.test(text)) return 'whitespace is not allowed';
  if (text.startsWith('-')) return 'negative sizes are not allowed';
  if (text.startsWith('+')) return "a leading '+' is not allowed";
  if (/^0[xX]/.test(text)) return 'hexadecimal is not allowed; write the size in decimal';
  if (/^\d*[.,]\d/.test(text)) return 'fractions are not allowed; use a smaller unit (e.g. 1536M instead of 1.5G)';
  // virsh reads "010" as ten, C and shells as eight: refuse rather than guess.
  if (/^0\d/.test(text)) return 'leading zeros are not allowed (octal-looking)';
  if (!/^\d/.test(text)) return 'expected a whole number with an optional unit suffix';
  return undefined;
}

export interface ScaledKiBOptions {
  /** Unit of a bare number. Default "KiB", as for virsh setmem/setmaxmem. */
  defaultUnit?: string;
  /** Smallest acceptable result in KiB. Default 1 (libvirt refuses a zero memory size). */
  minKiB?: number;
  /** Largest acceptable result in KiB. Default MAX_KIB. */
  maxKiB?: number;
}

/**
 * Parses a virsh-style scaled integer ("512M", "2GiB", "1048576") into KiB, rounding bytes up.
 * Stricter than virsh: no leading whitespace, '+', leading zeros or hex, all of which strtoull
 * would quietly accept.
 *
 * @param what what the value is for, quoted in messages, e.g. "--size" or "memory size".
 * @throws VirtError INVALID_ARG naming the value and `what` when malformed, of unknown unit,
 *   below `minKiB` or above `maxKiB`.
 * @throws VirtError INTERNAL when `opts.defaultUnit` itself is not a valid unit (a caller bug).
 */
export function parseScaledKiB(text: string, what: string, opts: ScaledKiBOptions = {}): number {
  const minKiB = opts.minKiB ?? 1;
  const maxKiB = Math.min(opts.maxKiB ?? MAX_KIB, MAX_KIB);
  const bad = (reason: string): VirtError => invalidArg(`invalid ${what} '${printable(text)}': ${reason}`);

  const malformed = describeMalformed(text);
  if (malformed !== undefined) throw bad(malformed);
  const m = /^(\d+)([A-Za-z]*)$/.exec(text);
  if (m === null) throw bad(`expected a whole number with an optional unit suffix (${UNIT_HELP})`);
  const [, digits = '', suffix = ''] = m;

  const unit = suffix === '' ? (opts.defaultUnit ?? 'KiB') : suffix;
  const perUnit = unitBytes(unit);
  if (perUnit === undefined) {
    if (suffix === '') throw new VirtError('INTERNAL', `parseScaledKiB: invalid default unit '${unit}'`);
    throw bad(`unknown unit '${suffix}' (use ${UNIT_HELP})`);
  }
  const kib = digits.length > MAX_DIGITS ? undefined : scaleToKiB(BigInt(digits), perUnit);
  if (kib === undefined || kib > maxKiB) throw bad(`too large (at most ${formatKiB(maxKiB)})`);
  if (kib < minKiB) throw bad(`below the minimum of ${formatKiB(minKiB)}`);
  return kib;
}

/**
 * Converts a libvirt XML memory value and its `unit` attribute to KiB (rounding bytes up).
 * An absent or empty unit means KiB, as in libvirt's `virDomainParseScaledValue`. Surrounding
 * whitespace is tolerated (RNG's unsignedLong allows it); leading zeros are read as decimal, as
 * libvirt does. Zero is allowed: callers decide what a zero means (e.g. virtio-mem <requested>).
 *
 * @param what the element, quoted in messages; default "memory size".
 * @throws VirtError XML_ERROR when the value is not a decimal integer, the unit is unknown, or the
 *   result exceeds MAX_KIB.
 */
export function parseXmlMemoryKiB(value: string, unit: string | undefined, what = 'memory size'): number {
  const digits = value.trim();
  if (!/^\d+$/.test(digits)) {
    throw xmlError(`${what}: '${printable(value)}' is not a non-negative decimal integer`);
  }
  const u = unit === undefined || unit === '' ? 'KiB' : unit;
  const perUnit = unitBytes(u);
  if (perUnit === undefined) throw xmlError(`${what}: unknown unit '${printable(u)}' (use ${UNIT_HELP})`);
  const kib = digits.length > MAX_DIGITS ? undefined : scaleToKiB(BigInt(digits), perUnit);
  if (kib === undefined) throw xmlError(`${what}: '${printable(value)} ${u}' is too large (at most ${formatKiB(MAX_KIB)})`);
  return kib;
}

const BINARY_UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'] as const;

/**
 * Formats KiB exactly, in the largest binary unit that divides it: 65536 -> "64 MiB",
 * 1536 -> "1536 KiB", 0 -> "0 KiB". Never rounds, so it is safe for messages about limits.
 */
export function formatKiB(kib: number): string {
  let value = kib;
  let i = 0;
  while (value !== 0 && value % 1024 === 0 && i < BINARY_UNITS.length - 1) {
    value /= 1024;
    i++;
  }
  return `${value} ${BINARY_UNITS[i] ?? 'KiB'}`;
}

