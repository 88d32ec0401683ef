/**
 * A host whose KVM is present but runs no guest, made on any machine, for the tests of the
 * accelerator choice: a device file that opens read-write stands for /dev/kvm
 * ($VIRTMEM_KVM_DEVICE), and a wrapper around the real QEMU ($VIRTMEM_QEMU) turns every
 * `accel=kvm` start into what such hosts show: a QEMU that runs (its monitor answers) but whose
 * guest never gets anywhere (a firmware that spins at the reset vector, an empty console).
 * Everything else goes to the real QEMU unchanged, so TCG guests really boot.
 * The real /dev/kvm is not touched or hidden.
 */
import { chmod, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface FakeBrokenKvm {
  dir: string;
  /** Environment for `virtmem` that makes it see this host. */
  env: Record<string, string>;
}

/** A 64 KiB "BIOS" whose reset vector (0xFFFF0) is `jmp $`: the vCPU spins, nothing is printed. */
function spinningBios(): Buffer {
  const bios = Buffer.alloc(64 * 1024, 0);
  bios[0xfff0] = 0xeb; // jmp short
  bios[0xfff1] = 0xfe; // -2: itself
  return bios;
}

export async function fakeBrokenKvm(realQemu = 'qemu-system-x86_64'): Promise<FakeBrokenKvm> {
  const dir = await mkdtemp(join(tmpdir(), 'vm-fakekvm-'));
  const device = join(dir, 'kvm');
  await writeFile(device, '', { mode: 0o600 });
  const bios = join(dir, 'spin.bin');
  await writeFile(bios, spinningBios());
  const wrapper = join(dir, 'qemu-system-x86_64');
  // argv in, argv out: no word is ever re-split or evaluated.
  await writeFile(wrapper, `#!/bin/bash
kvm=0
for a in "$@"; do case "$a" in *accel=kvm*) kvm=1 ;; esac; done
if [ "$kvm" = 0 ]; then exec ${realQemu} "$@"; fi
out=()
while [ $# -gt 0 ]; do
  case "$1" in
    -cpu|-kernel|-initrd|-append) shift 2; continue ;;
    *accel=kvm*) out+=("\${1//accel=kvm/accel=tcg}") ;;
    *) out+=("$1") ;;
  esac
  shift
done
exec ${realQemu} "\${out[@]}" -bios ${bios}
`, { mode: 0o755 });
  await chmod(wrapper, 0o755);
  return {
    dir,
    env: { VIRTMEM_QEMU: wrapper, VIRTMEM_KVM_DEVICE: device, VIRTMEM_PROBE_CACHE: join(dir, 'probe.json') },
  };
}
