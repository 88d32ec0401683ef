/**
 * `virtmem demo`: the classic virsh memory workflow, step by step, on the built-in guest. Every
 * step runs the real CLI code path (the same `main` a user runs) and then shows what each layer
 * reports: the driver (dominfo), QEMU (info balloon) and the guest itself (/proc/meminfo).
 */
import { buildDefaultGuest, findDefaultGuest } from '../guest/build.js';
import { GuestAgent, readGuestMeminfo } from '../guest/agent.js';
import { main } from './main.js';
import type { CommandContext } from './commands.js';

export const DEMO_DOMAIN = 'virtmem-demo';

export async function runDemo(ctx: CommandContext): Promise<void> {
  const { driver } = ctx;
  const say = (s: string): void => ctx.out(s + '\n');
  const stateArgs = ['--state-dir', driver.paths.root];
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
  const guestView = async (): Promise<void> => {
    const agent = await GuestAgent.connect(driver.paths.run(DEMO_DOMAIN).agent, { timeoutMs: 60_000 });
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
  const existing = (await driver.list()).find((d) => d.name === DEMO_DOMAIN);
  if (existing) {
    if (existing.state !== 'shutoff') await driver.destroy(DEMO_DOMAIN);
    await driver.undefine(DEMO_DOMAIN);
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

  heading('Shrink with the balloon to 768 MiB');
  await must('setmem', DEMO_DOMAIN, '768M', '--wait');
  await must('dominfo', DEMO_DOMAIN);
  await guestView();

  if (ctx.args.flags.has('keep')) {
    say(`\nThe guest '${DEMO_DOMAIN}' is still running; remove it with: virtmem destroy ${DEMO_DOMAIN} && virtmem undefine ${DEMO_DOMAIN}`);
    return;
  }
  heading('Clean up');
  await must('destroy', DEMO_DOMAIN);
  await must('undefine', DEMO_DOMAIN);
  say('\nDone.');
}
