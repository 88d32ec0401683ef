/**
 * Parsers for the one-line answers of HMP address commands (QEMU monitor/misc.c and
 * target/i386/monitor.c): `gpa2hva`, `gpa2hpa`, `gva2gpa`, and the dump of `xp`. Pure.
 */
import { VirtError } from '../domain/errors.js';

/** An address QEMU reported, or its reason for not reporting one ("Unmapped", "... is not RAM"). */
export type HmpAddress = { address: bigint; region?: string } | { reason: string };

/**
 * `gpa2hva ADDR` / `gpa2hpa ADDR`: "Host virtual address for 0x0 (pc.ram) is 0x7f..." or
 * "Host physical address for ...". Anything else is QEMU's reason.
 */
export function parseHostAddress(text: string): HmpAddress {
  const t = text.replace(/\r/g, '').trim();
  const m = /^Host (?:virtual|physical) address for 0x[0-9a-f]+ \((.*)\) is 0x([0-9a-f]+)$/.exec(t);
  if (m) return { address: BigInt(`0x${m[2]}`), region: m[1]! };
  return { reason: t };
}

/** `gva2gpa ADDR`: "gpa: 0x1f200000", or "Unmapped". */
export function parseGva2gpa(text: string): HmpAddress {
  const t = text.replace(/\r/g, '').trim();
  const m = /^gpa: 0x([0-9a-f]+)$/.exec(t);
  return m ? { address: BigInt(`0x${m[1]}`) } : { reason: t };
}

/**
 * The bytes of an `xp /Ngx ADDR` (little-endian 64-bit words) or `xp /Nbx ADDR` dump:
 * lines "000000001c6a2000: 0x000000001bd3d067 0x0000000000000000".
 * @throws VirtError OPERATION_FAILED when the dump holds fewer than `length` bytes.
 */
export function parseXp(text: string, unit: 'g' | 'b', length: number): Uint8Array {
  const width = unit === 'g' ? 8 : 1;
  const out = new Uint8Array(length);
  let at = 0;
  for (const line of text.replace(/\r/g, '').split('\n')) {
    const m = /^[0-9a-f]+:((?:\s+0x[0-9a-f]+)+)\s*$/.exec(line);
    if (!m) continue;
    for (const word of m[1]!.trim().split(/\s+/)) {
      let v = BigInt(word);
      for (let i = 0; i < width && at < length; i++, v >>= 8n) out[at++] = Number(v & 0xffn);
    }
  }
  if (at < length) throw new VirtError('OPERATION_FAILED', `QEMU's 'xp' dump holds ${at} of ${length} bytes: ${text.slice(0, 200)}`);
  return out;
}
