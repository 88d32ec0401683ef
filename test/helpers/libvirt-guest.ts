/**
 * Domain XML for libvirt test guests: the built-in guest's kernel and initramfs under TCG, with
 * a statistics-reporting balloon; optionally a virtio-mem region (with the <maxMemory> and NUMA
 * cell libvirt requires for it).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './cli.js';
import { virsh } from './virsh.js';

const GUEST = '/var/cache/virtmem/guest';

export interface LibvirtGuestOptions {
  /** <memory>: boot RAM (plus the virtio-mem region, when given). */
  memoryKiB: number;
  currentKiB?: number;
  /** A virtio-mem region of this size, nothing plugged. */
  virtioMemKiB?: number;
  /** Extra kernel parameters. */
  cmdline?: string;
  /** A unix socket (libvirt binds it) on the guest's second serial port, where the built-in guest's agent answers. */
  agentSocket?: string;
  /** A raw image as the guest's first virtio disk (vda), read-only. */
  readonlyDisk?: string;
  /** The balloon's deflate-on-OOM and free page reporting (what `virtmem new` turns on). */
  balloonAutodeflate?: boolean;
  freePageReporting?: boolean;
}

export function libvirtGuestXml(name: string, o: LibvirtGuestOptions): string {
  const vmem = o.virtioMemKiB ?? 0;
  const total = o.memoryKiB + vmem;
  const hotplug = vmem > 0
    ? { max: `  <maxMemory slots='1' unit='KiB'>${total}</maxMemory>\n`, cpu: `  <cpu><numa><cell id='0' cpus='0' memory='${o.memoryKiB}' unit='KiB'/></numa></cpu>\n`,
      dev: `    <memory model='virtio-mem'>\n      <target><size unit='KiB'>${vmem}</size><node>0</node><block unit='KiB'>2048</block><requested unit='KiB'>0</requested></target>\n    </memory>\n` }
    : { max: '', cpu: '', dev: '' };
  return `<domain type='qemu'>
  <name>${name}</name>
${hotplug.max}  <memory unit='KiB'>${total}</memory>
  <currentMemory unit='KiB'>${o.currentKiB ?? total}</currentMemory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${GUEST}/vmlinuz</kernel>
    <initrd>${GUEST}/initrd.gz</initrd>
    <cmdline>console=ttyS0 ${o.cmdline ? `${o.cmdline} ` : ''}panic=-1 loglevel=4</cmdline>
  </os>
  <features><acpi/><apic/></features>
${hotplug.cpu}  <devices>
    <serial type='pty'/>
    <console type='pty'/>
${o.agentSocket ? `    <serial type='unix'><source mode='bind' path='${o.agentSocket}'/><target port='1'/></serial>\n` : ''}
${o.readonlyDisk ? `    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${o.readonlyDisk}'/><target dev='vda' bus='virtio'/><readonly/></disk>\n` : ''}    <memballoon model='virtio'${o.balloonAutodeflate ? " autodeflate='on'" : ''}${o.freePageReporting ? " freePageReporting='on'" : ''}><stats period='1'/></memballoon>
${hotplug.dev}  </devices>
</domain>
`;
}

/** Kills the QEMU of a libvirt guest by its name (a libvirtd killed in a test leaves its guests running). */
export async function killQemuOf(name: string): Promise<void> {
  const { readdir, readFile } = await import('node:fs/promises');
  for (const pid of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(pid)) continue;
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (argv[0]?.includes('qemu-system') && argv.some((a) => a === `guest=${name},debug-threads=on` || a.startsWith(`guest=${name},`))) {
      try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
    }
  }
}

/**
 * A guest of this machine's libvirtd for one test: `prefix` and a random suffix as its name,
 * defined and started through virtmem's CLI (`-c URI`), handed to `fn`, then destroyed and
 * undefined (with virsh, whatever happened) and its files removed.
 */
export async function withLibvirtGuest(uri: string, prefix: string, o: LibvirtGuestOptions, fn: (name: string) => Promise<void>): Promise<void> {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  const dir = await mkdtemp(join(tmpdir(), `${prefix}-`));
  const file = join(dir, 'guest.xml');
  await writeFile(file, libvirtGuestXml(name, o));
  try {
    for (const step of [['define', file], ['start', name]]) {
      const r = await runCli(['-c', uri, ...step]);
      assert.equal(r.code, 0, `${step[0]}: ${r.stderr}`);
    }
    await fn(name);
  } finally {
    await virsh(uri, 'destroy', name);
    await virsh(uri, 'undefine', name);
    await rm(dir, { recursive: true, force: true });
  }
}
