/**
 * `virtmem demo`: the classic virsh memory workflow, step by step, on the built-in guest. Every
 * step runs the real CLI code path (the same `main` a user runs) and then shows what each layer
 * reports: the driver (dominfo), QEMU (info balloon) and the guest itself (/proc/meminfo).
 */
import { buildDefaultGuest, findDefaultGuest } from '../guest/build.js';
import { GuestAgent, readGuestMeminfo } from '../guest/agent.js';
import { main } from './main.js';
import { readFile } from 'node:fs/promises';
import { VirtError, bootDiagnosis } from '../driver/api.js';
import type { CommandContext } from './commands.js';

export const DEMO_DOMAIN = 'virtmem-demo';
export const DEMO_HOTPLUG = 'virtmem-demo-hotplug';

export async function runDemo(ctx: CommandContext): Promise<void> {
  const { driver } = ctx;
  if (!driver.guestChannels) throw new VirtError('NO_SUPPORT', 'this function is not supported by the connection driver: demo');
  const channels = driver.guestChannels.bind(driver);
  const say = (s: string): void => ctx.out(s + '\n');
  const stateArgs = ctx.stateDir ? ['--state-dir', ctx.stateDir] : [];
  let step = 0;
  const heading = (s: string): void => say(`\n== ${++step}. ${s}`);
  /** Run a virtmem command exactly as a user would, echoing it. Returns the exit code. */
  const virtmem = async (...args: string[]): Promise<number> => {
    say(`$ virtmem ${args.join(' ')}`);
    return main([...stateArgs, ...args], { out: ctx.out, err: ctx.out, isTty: false });
  };
  const must = async (...args: string[]): Promise<void> => {
    const code = await virtmem(...args);
    if (code !== 0) throw new Error(`demo step failed: virtmem ${args.join(' ')} exited ${code}`);
  };
  const guestView = async (name = DEMO_DOMAIN): Promise<void> => {
    const ch = await channels(name);
    const agent = await GuestAgent.connect(ch.agentSocket, { timeoutMs: 60_000 }).catch(async (err: unknown) => {
      // Say what the guest showed, not just that it did not answer (a KVM that runs nothing
      // leaves an empty console; a kernel that fails says so on it).
      const consoleText = await readFile(ch.consoleLog, 'utf8').catch(() => '');
      const accel = (await driver.info(name).catch(() => null))?.accel ?? null;
      throw new VirtError('OPERATION_FAILED', `guest '${name}' did not come up: ${bootDiagnosis(consoleText, accel)} (${(err as Error).message})`, { cause: err });
    });
    try {
      const m = await readGuestMeminfo(agent);
      say(`guest /proc/meminfo: MemTotal ${m.memTotalKiB} KiB, MemAvailable ${m.memAvailableKiB} KiB`);
    } finally {
      agent.close();
    }
  };

  say('virtmem demo: the classic virsh memory workflow, driven by virtmem on a real QEMU guest.');
  heading('The built-in guest (Debian cloud kernel + busybox initramfs)');
  const guest = (await findDefaultGuest()) ?? (await buildDefaultGuest({ log: (l) => say(`  ${l}`) }));
  say(`kernel ${guest.kernelPath}\ninitrd ${guest.initrdPath}`);

  // A previous demo may have been interrupted: start from a clean slate.
  for (const existing of (await driver.list()).filter((d) => d.name === DEMO_DOMAIN || d.name === DEMO_HOTPLUG)) {
    if (existing.state !== 'shutoff') await driver.destroy(existing.name);
    await driver.undefine(existing.name);
  }

  heading('Define a guest with 1 GiB and boot it');
  await must('new', DEMO_DOMAIN, '--memory', '1G');
  await must('start', DEMO_DOMAIN);
  await guestView();
  await must('dominfo', DEMO_DOMAIN);
  await must('qemu-monitor-command', DEMO_DOMAIN, '--hmp', '--cmd', 'info', 'balloon');

  heading('Try to raise the maximum of the running guest (refused, as with virsh)');
  await virtmem('setmaxmem', DEMO_DOMAIN, '2G');

  heading('Shut down (ACPI power button; waits until QEMU has exited)');
  await must('shutdown', DEMO_DOMAIN);
  await must('domstate', DEMO_DOMAIN, '--reason');

  heading('Raise the maximum to 2 GiB in the definition, boot again');
  await must('setmaxmem', DEMO_DOMAIN, '2G');
  await must('start', DEMO_DOMAIN);
  await must('dominfo', DEMO_DOMAIN);

  heading('Set the balloon to 2 GiB and wait until the guest has it');
  await must('setmem', DEMO_DOMAIN, '2G', '--wait');
  await must('dominfo', DEMO_DOMAIN);
  await must('qemu-monitor-command', DEMO_DOMAIN, '--hmp', '--cmd', 'info', 'balloon');
  await must('dommemstat', DEMO_DOMAIN);
  await guestView();

  heading('Shrink with the balloon to 1.5 GiB');
  await must('setmem', DEMO_DOMAIN, '1536M', '--wait');
  await must('dominfo', DEMO_DOMAIN);
  await guestView();

  heading('Clean up the classic guest');
  await must('destroy', DEMO_DOMAIN);
  await must('undefine', DEMO_DOMAIN);

  say('\nNow the virtmem way: grow a running guest past its boot memory, no reboot (virtio-mem).');
  heading('Define a guest with 512 MiB that may grow to 4 GiB while it runs, and boot it');
  await must('new', DEMO_HOTPLUG, '--memory', '512M', '--max-memory', '4G');
  await must('start', DEMO_HOTPLUG);
  await guestView(DEMO_HOTPLUG);
  heading('Grow it to 2 GiB and wait until the guest has it');
  await must('setmem', DEMO_HOTPLUG, '2G', '--wait');
  await must('dominfo', DEMO_HOTPLUG);
  await guestView(DEMO_HOTPLUG);
  heading('Give it back: shrink to 512 MiB (whole virtio-mem blocks go back to the host)');
  await must('setmem', DEMO_HOTPLUG, '512M', '--wait');
  await must('dominfo', DEMO_HOTPLUG);
  await guestView(DEMO_HOTPLUG);

  if (ctx.args.flags.has('keep')) {
    say(`\nThe guest '${DEMO_HOTPLUG}' is still running; remove it with: virtmem destroy ${DEMO_HOTPLUG} && virtmem undefine ${DEMO_HOTPLUG}`);
    return;
  }
  heading('Clean up');
  await must('destroy', DEMO_HOTPLUG);
  await must('undefine', DEMO_HOTPLUG);
  say('\nDone.');
}
