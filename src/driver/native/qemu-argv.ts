/**
 * The QEMU command line for a domain: a pure function of the definition and the host facts, so
 * it is unit-tested without starting anything. Sizes are converted from KiB to QEMU's units here
 * and nowhere else.
 */
import type { CpuDef, DiskDef, DomainDef } from '../../domain/definition.js';
import { VirtError } from '../../domain/errors.js';
import type { RunPaths } from './paths.js';
import { virtioMemId } from '../memory/layout.js';
import { backendObject, planMemoryLayout, type BackingPaths, type MemoryLayoutPlan } from './qemu-memory.js';

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
  /**
   * The memory layout (qemu-memory.ts) and where its files go on this host. Absent: planned
   * here with a 2 MiB default huge page size and no hugetlbfs mount (enough without huge pages).
   */
  memory?: { plan: MemoryLayoutPlan; backing: BackingPaths };
}

/** QOM ids of devices virtmem talks to later; the monitor addresses them by these. */
export const BALLOON_ID = 'balloon0';
export const BALLOON_QOM_PATH = `/machine/peripheral/${BALLOON_ID}`;

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
  const memory = inp.memory ?? {
    plan: planMemoryLayout(def, { defaultHugepageKiB: 2048 }),
    backing: { hugetlbfs: new Map<number, string>(), memoryDir: paths.memoryDir },
  };
  const { plan } = memory;
  const object = (o: Record<string, unknown>): void => push('-object', JSON.stringify(o));

  push('-name', `guest=${optValue(def.name)},debug-threads=on`);
  push('-uuid', def.uuid);
  push('-machine', [def.os.machine ?? 'pc', `accel=${inp.accel}`, ...plan.machineOptions].join(','));
  const cpu = qemuCpuModel(def.cpu, inp.accel);
  if (cpu !== null) push('-cpu', cpu);
  push('-smp', def.currentVcpus === undefined ? String(def.vcpus) : `${def.currentVcpus},maxcpus=${def.vcpus}`);

  push('-m', plan.mOption);
  // Guest RAM: the default RAM's backend (when QEMU's own would not do), or one per NUMA cell
  // with its -numa node; memory devices come with their -device below.
  for (const b of plan.ram) if (!b.plain) object(backendObject(b, memory.backing));
  for (const n of plan.numaOptions) push('-numa', n);
  if (plan.memLock) push('-overcommit', 'mem-lock=on');

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

  for (const dev of plan.devices) {
    object(backendObject(dev.backend, memory.backing));
    push('-device', JSON.stringify(dev.props));
  }

  if (def.disks.some((d) => d.bus === 'scsi')) push('-device', 'virtio-scsi-pci,id=scsi0');
  def.disks.forEach((d, i) => {
    const drive = `drive-${d.target}`;
    // A block device goes through QEMU's host_device driver; an image through 'file'.
    push('-blockdev', `driver=${d.type === 'block' ? 'host_device' : 'file'},node-name=file${i},filename=${optValue(d.path)},read-only=${onOff(d.readonly)}`);
    push('-blockdev', `driver=${d.format},node-name=${drive},file=file${i},read-only=${onOff(d.readonly)}`);
    push('-device', `${diskDevice(d)},drive=${drive},id=${d.target}`);
  });
  return argv;
}

/** The QEMU device of a disk or cdrom on its bus. */
function diskDevice(d: DiskDef): string {
  if (d.device === 'cdrom') return d.bus === 'scsi' ? 'scsi-cd' : 'ide-cd';
  return d.bus === 'virtio' ? 'virtio-blk-pci' : d.bus === 'scsi' ? 'scsi-hd' : 'ide-hd';
}
