/**
 * What this host offers guests (`virtmem capabilities`): the QEMU binary, whether KVM runs
 * guests (the cached probe, or a new one with `refresh`), what 'auto' picks, CPU model
 * defaults, host memory, the built-in guest; and what a shut-off domain would get here.
 */
import { spawn } from 'node:child_process';
import type { DomainDef } from '../../domain/definition.js';
import type { Accel, HostCapabilities } from '../api.js';
import { sampleHostMemory } from '../memory/host-memory.js';
import { resolveEmulator } from './emulator.js';
import { accelRequest, type KvmStatus } from './accel.js';
import { defaultGuest, kvm } from './process.js';
import type { NativeContext } from './context.js';

/**
 * Never throws for a missing QEMU or guest: they are reported.
 */
export async function hostCapabilities(ctx: NativeContext, opts: { refresh?: boolean; signal?: AbortSignal } = {}): Promise<HostCapabilities> {
  const guest = await defaultGuest(ctx);
  let emulator: HostCapabilities['emulator'];
  let probe: KvmStatus | null = null;
  try {
    const path = await resolveEmulator(undefined);
    const version = await qemuVersion(path);
    emulator = { path, version };
    probe = await kvm(ctx, { emulator: path, ...(opts.refresh ? { refresh: true } : {}), signal: opts.signal });
  } catch (err) {
    emulator = { path: null, version: null, error: (err as Error).message };
  }
  let envAccel: string | null = process.env.VIRTMEM_ACCEL ?? null;
  let autoPicks: Accel = probe?.usable ? 'kvm' : 'tcg';
  try {
    const r = accelRequest(undefined);
    if (r !== 'auto') autoPicks = r;
  } catch (err) {
    envAccel = `${envAccel} (invalid: ${(err as Error).message})`;
  }
  const host = await sampleHostMemory();
  const kib = (bytes: number | null): number | null => (bytes === null ? null : bytes / 1024);
  const some = host.psi?.some;
  const psi = some ? `some avg10=${some.avg10.toFixed(2)} avg60=${some.avg60.toFixed(2)} avg300=${some.avg300.toFixed(2)} total=${some.totalUs}` : '';
  return {
    emulator,
    kvm: probe,
    accel: { autoPicks, envOverride: envAccel },
    cpu: { defaultUnderKvm: 'host-passthrough (-cpu host)', defaultUnderTcg: "QEMU's default model (qemu64)", modes: ['host-passthrough', 'host-model', 'maximum', 'custom'] },
    hostMemory: { totalKiB: kib(host.memTotalBytes), availableKiB: kib(host.memAvailableBytes), pressure: psi || null },
    defaultGuest: guest ? { kernel: guest.kernelPath, kernelVersion: guest.kernelVersion, initrd: guest.initrdPath } : null,
  };
}

/** The accelerator a shut-off domain would get now (auto asks the cached KVM probe). */
export async function plannedAccel(ctx: NativeContext, def: DomainDef): Promise<Accel> {
  const request = accelRequest(def.accel);
  if (request !== 'auto') return request;
  return (await kvm(ctx)).usable ? 'kvm' : 'tcg';
}

/** Fill in the built-in guest's kernel for display, so dumpxml output boots under libvirt. */
export async function withGuestKernel(ctx: NativeContext, def: DomainDef): Promise<DomainDef> {
  if (def.os.kernel) return def;
  const guest = await defaultGuest(ctx);
  if (!guest) return def;
  return { ...def, os: { ...def.os, kernel: guest.kernelPath, initrd: guest.initrdPath, cmdline: def.os.cmdline ?? guest.cmdline } };
}

/** First line of `qemu-system-x86_64 --version`, bounded; null when it does not answer. */
function qemuVersion(path: string): Promise<string | null> {
  return new Promise((resolve) => {
    let out = '';
    const child = spawn(path, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const timer = setTimeout(() => { child.kill('SIGKILL'); }, 5_000);
    child.stdout.setEncoding('utf8').on('data', (c: string) => { if (out.length < 4096) out += c; });
    child.once('error', () => { clearTimeout(timer); resolve(null); });
    child.once('close', () => { clearTimeout(timer); resolve(out.split('\n')[0]?.trim() || null); });
  });
}
