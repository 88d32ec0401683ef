/**
 * KSM (kernel samepage merging) under /sys/kernel/mm/ksm: the parameters libvirt reports as the
 * node's memory parameters, in its order, names and types, and writing one knob.
 * Parsers are pure; readers and the writer are thin.
 */
import { join } from 'node:path';
import { VirtError } from '../../../domain/errors.js';
import type { NodeMemoryParameter } from '../../node-api.js';
import { hostFiles, isMissing, type HostFiles } from './sysfs.js';

/** The files libvirt reads (virHostMemGetParameters), in its order: file, libvirt's name, type. */
export const KSM_PARAMETERS = [
  { file: 'pages_to_scan', field: 'shm_pages_to_scan', type: 'uint' },
  { file: 'sleep_millisecs', field: 'shm_sleep_millisecs', type: 'uint' },
  { file: 'pages_shared', field: 'shm_pages_shared', type: 'ullong' },
  { file: 'pages_sharing', field: 'shm_pages_sharing', type: 'ullong' },
  { file: 'pages_unshared', field: 'shm_pages_unshared', type: 'ullong' },
  { file: 'pages_volatile', field: 'shm_pages_volatile', type: 'ullong' },
  { file: 'full_scans', field: 'shm_full_scans', type: 'ullong' },
  { file: 'merge_across_nodes', field: 'shm_merge_across_nodes', type: 'uint' },
] as const;

/** The KSM file behind one of libvirt's field names ("shm_pages_to_scan" -> "pages_to_scan"). */
export function ksmFileOf(field: string): string | null {
  return KSM_PARAMETERS.find((p) => p.field === field)?.file ?? null;
}

/**
 * A KSM file's text ("100\n") as a number: a decimal integer up to the newline, within the
 * type's range. Pure.
 * @throws VirtError INTERNAL with libvirt's words ("failed to parse pages_to_scan")
 */
export function parseKsmValue(text: string, file: string, type: 'uint' | 'ullong'): number {
  const line = text.split('\n')[0] ?? '';
  const max = type === 'uint' ? 0xffff_ffff : Number.MAX_SAFE_INTEGER;
  if (!/^\d+$/.test(line) || Number(line) > max) throw new VirtError('INTERNAL', `internal error: failed to parse ${file}`);
  return Number(line);
}

const ksmDir = (sysRoot: string): string => join(sysRoot, 'kernel/mm/ksm');

/** Every KSM parameter the kernel has, in libvirt's order (files it lacks are left out). */
export async function readKsmParameters(sysRoot: string, files: HostFiles = hostFiles): Promise<NodeMemoryParameter[]> {
  const read = await Promise.all(KSM_PARAMETERS.map(async (p): Promise<NodeMemoryParameter | null> => {
    try {
      return { field: p.field, type: p.type, value: parseKsmValue(await files.read(join(ksmDir(sysRoot), p.file)), p.file, p.type) };
    } catch (e) {
      if (isMissing(e)) return null;
      throw e;
    }
  }));
  return read.filter((p): p is NodeMemoryParameter => p !== null);
}

/**
 * Writes one KSM knob. The caller has validated the value.
 * @throws the fs error (the kernel's EINVAL, EBUSY, ...)
 */
export function writeKsmKnob(sysRoot: string, file: string, value: number, files: HostFiles = hostFiles): Promise<void> {
  return files.write(join(ksmDir(sysRoot), file), String(value));
}

/** Whether the kernel has this KSM file. */
export async function hasKsmFile(sysRoot: string, file: string, files: HostFiles = hostFiles): Promise<boolean> {
  return files.read(join(ksmDir(sysRoot), file)).then(() => true, () => false);
}
