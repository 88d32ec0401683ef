/**
 * `virtmem guest-build --distro NAME`: builds (or shows) a distribution guest disk image
 * (src/guest/distro.ts) and prints what to pass to `virtmem new`.
 */
import { DISTRO_NAMES, buildDistroGuest, type DistroName } from '../guest/distro.js';
import { UsageError } from './args.js';
import type { CommandContext } from './commands.js';

export async function runDistroBuild(ctx: CommandContext, distro: string): Promise<void> {
  if (!(DISTRO_NAMES as readonly string[]).includes(distro)) {
    throw new UsageError(`unknown distro '${distro}' for --distro; known: ${DISTRO_NAMES.join(', ')}`);
  }
  const g = await buildDistroGuest(distro as DistroName, {
    force: ctx.args.flags.has('force'),
    log: (l) => ctx.err(l.endsWith('\n') ? l : l + '\n'),
  });
  if (ctx.json) return void ctx.out(JSON.stringify(g, null, 2) + '\n');
  ctx.out(`kernel  ${g.kernelPath}\ninitrd  ${g.initrdPath}\ncmdline ${g.cmdline}\nimage   ${g.imagePath}\n` +
    `(boot each domain from its own overlay: qemu-img create -f qcow2 -b ${g.imagePath} -F raw DOMAIN.qcow2)\n`);
}
