/**
 * The QEMU command line for a domain: a pure function of the definition and the host facts, so
 * it is unit-tested without starting anything. Sizes are converted from KiB to QEMU's units here
 * and nowhere else.
 */
import type { CpuDef, DomainDef } from '../../domain/definition.js';
import { VirtError } from '../../domain/errors.js';
import type { RunPaths } from './paths.js';
import { bootMemoryKiB, virtioMemId } from '../memory/layout.js';

export { virtioMemId };

export type { Accel } from '../api.js';
import type { Accel } from '../api.js';

/** What the command line needs besides the definition. */
export interface LaunchInputs {
  def: DomainDef;
  paths: RunPaths;
  accel: Accel;
  kernel: string;
  initrd?: string;
  cmdline?: string;
}

/** QOM ids of devices virtmem talks to later; the monitor addresses them by these. */
export const BALLOON_ID = 'balloon0';
export const BALLOON_QOM_PATH = `/machine/peripheral/${BALLOON_ID}`;
export const dimmId = (i: number): string => `dimm${i}`;

/** QEMU's -chardev/-device option syntax escapes a literal comma by doubling it. */
const optValue = (v: string): string => v.replaceAll(',', ',,');

const onOff = (b: boolean): string => (b ? 'on' : 'off');

/**
 * The `-cpu` model for a definition's <cpu> under an accelerator, or null for QEMU's default
 * (qemu64). Defaults as libvirt's: host-passthrough under KVM, QEMU's own model under TCG (the
 * fast one for TCG: 'max' turns on 5-level paging and makes virtio-mem unplug ~4x slower).
 * @throws VirtError CONFIG_UNSUPPORTED for host-passthrough without KVM (QEMU: "CPU model 'host'
 *   requires KVM").
 */
export function qemuCpuModel(cpu: CpuDef | undefined, accel: Accel): string | null {
  if (cpu === undefined) return accel === 'kvm' ? 'host' : null;
  switch (cpu.mode) {
    case 'host-passthrough':
      if (accel !== 'kvm') {
        throw new VirtError('CONFIG_UNSUPPORTED', "unsupported configuration: CPU mode 'host-passthrough' needs KVM, and this guest would run under TCG; use <cpu mode='maximum'> (--cpu maximum) or a named model");
      }
      return 'host';
    // libvirt computes a named model close to the host; virtmem passes the host CPU under KVM
    // and the most TCG can emulate otherwise.
    case 'host-model': return accel === 'kvm' ? 'host' : 'max';
    case 'maximum': return 'max';
    case 'custom': return cpu.model!;
  }
}

/**
 * Build argv (without the binary). The guest starts paused (-S) so the driver can set the
 * balloon target and statistics period before the first guest instruction runs, like libvirt.
 */
export function buildQemuArgv(inp: LaunchInputs): string[] {
  const { def, paths } = inp;
  const argv: string[] = [];
  const push = (...a: string[]): void => { argv.push(...a); };

  push('-name', `guest=${optValue(def.name)},debug-threads=on`);
  push('-uuid', def.uuid);
  push('-machine', `${def.os.machine ?? 'pc'},accel=${inp.accel}`);
  const cpu = qemuCpuModel(def.cpu, inp.accel);
  if (cpu !== null) push('-cpu', cpu);
  push('-smp', String(def.vcpus));

  let mem = `size=${bootMemoryKiB(def)}k`;
  if (def.memory.hotplug) mem += `,slots=${def.memory.hotplug.slots},maxmem=${def.memory.hotplug.ceilingKiB}k`;
  push('-m', mem);

  push('-nodefaults', '-no-user-config', '-display', 'none');
  push('-msg', 'timestamp=on');
  push('-pidfile', paths.pidfile);

  push('-kernel', inp.kernel);
  if (inp.initrd) push('-initrd', inp.initrd);
  if (inp.cmdline) push('-append', inp.cmdline);

  // Two monitors: one for short calls (CLI/API one-shots) and one kept free for a long-lived
  // watcher; a QMP monitor serves a single client at a time.
  push('-chardev', `socket,id=qmp,path=${optValue(paths.qmp)},server=on,wait=off`);
  push('-mon', 'chardev=qmp,mode=control');
  push('-chardev', `socket,id=qmpwatch,path=${optValue(paths.qmpWatch)},server=on,wait=off`);
  push('-mon', 'chardev=qmpwatch,mode=control');
  // ttyS0: console (also logged); ttyS1: the built-in guest's command agent.
  push('-chardev', `socket,id=con0,path=${optValue(paths.console)},server=on,wait=off,logfile=${optValue(paths.consoleLog)}`);
  push('-serial', 'chardev:con0');
  push('-chardev', `socket,id=agent0,path=${optValue(paths.agent)},server=on,wait=off`);
  push('-serial', 'chardev:agent0');
  // The built-in guest writes its memory stall (PSI) here once a second, for the daemon's policy.
  push('-chardev', `socket,id=pressure0,path=${optValue(paths.pressure)},server=on,wait=off`);
  push('-serial', 'chardev:pressure0');

  if (def.balloon.model === 'virtio') {
    push('-device', `virtio-balloon-pci,id=${BALLOON_ID},deflate-on-oom=${onOff(def.balloon.autodeflate)},free-page-reporting=${onOff(def.balloon.freePageReporting)}`);
  }

  let vm = 0;
  let dimm = 0;
  for (const dev of def.memoryDevices) {
    if (dev.model === 'virtio-mem') {
      const id = virtioMemId(vm++);
      push('-object', `memory-backend-ram,id=mem-${id},size=${dev.sizeKiB}k`);
      push('-device', `virtio-mem-pci,id=${id},memdev=mem-${id},block-size=${dev.blockKiB}k,requested-size=${dev.requestedKiB}k`);
    } else {
      const id = dimmId(dimm++);
      push('-object', `memory-backend-ram,id=mem-${id},size=${dev.sizeKiB}k`);
      push('-device', `pc-dimm,id=${id},memdev=mem-${id}`);
    }
  }

  if (def.disks.some((d) => d.bus === 'scsi')) push('-device', 'virtio-scsi-pci,id=scsi0');
  def.disks.forEach((d, i) => {
    const drive = `drive-${d.target}`;
    push('-blockdev', `driver=file,node-name=file${i},filename=${optValue(d.path)},read-only=${onOff(d.readonly)}`);
    push('-blockdev', `driver=${d.format},node-name=${drive},file=file${i},read-only=${onOff(d.readonly)}`);
    const dev = d.bus === 'virtio' ? 'virtio-blk-pci' : d.bus === 'scsi' ? 'scsi-hd' : 'ide-hd';
    push('-device', `${dev},drive=${drive},id=${d.target}`);
  });
  return argv;
}
