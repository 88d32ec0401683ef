/**
 * The accelerator a domain or the user asks for: 'kvm' and 'tcg' as libvirt's <domain type>
 * ('kvm', 'qemu'), and virtmem's 'auto' (KVM where it has been seen to run a guest, else TCG;
 * driver/native/accel.ts decides). Pure.
 */
import type { AccelChoice } from './definition.js';
import { invalidArg } from './errors.js';

/** What a domain or the user asks for. */
export type AccelRequest = 'auto' | AccelChoice;

export const ACCEL_REQUESTS: readonly AccelRequest[] = ['auto', 'kvm', 'tcg'];

/**
 * Parse an accelerator choice from the command line or the environment.
 * @throws VirtError INVALID_ARG naming where the bad value came from.
 */
export function parseAccelRequest(value: string, where: string): AccelRequest {
  if ((ACCEL_REQUESTS as readonly string[]).includes(value)) return value as AccelRequest;
  throw invalidArg(`invalid argument: ${where} '${value}' is not an accelerator (expected auto, kvm or tcg)`);
}
