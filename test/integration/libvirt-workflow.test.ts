/**
 * The classic virsh memory workflow (the one `virtmem demo` walks through) on a balloon-only
 * TCG guest that libvirt runs, every step through `virtmem -c qemu:///system`: shrink with
 * `setmem --wait`, shutdown (waits for libvirt's lifecycle event), `setmaxmem` on the shut-off
 * guest, start, grow with `setmem --wait`. After each step virtmem and virsh (run in the test)
 * print the same thing for the same guest. Needs root, a running libvirtd and the built-in guest.
 */
import { libvirtGuestXml } from '../helpers/libvirt-guest.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { skipUnlessCi, notRoot, libvirtdMissing, builtInGuestMissing } from '../helpers/skip.js';
import { virsh as virshAt, virshDominfoLines, type VirshResult } from '../helpers/virsh.js';

const U = 'qemu:///system';
const skip = skipUnlessCi(libvirtdMissing(), notRoot(),
  builtInGuestMissing());

const virsh = (...args: string[]): Promise<VirshResult> => virshAt(U, ...args);

/** dominfo without the line that moves by itself, and without the lines virtmem adds to virsh's. */
const steady = (text: string): string => virshDominfoLines(text).replace(/^CPU time:.*\n/m, '');

async function sameAsVirsh(name: string, what: string): Promise<string> {
  const ours = await runCli(['-c', U, 'dominfo', name]);
  assert.equal(ours.code, 0, ours.stderr);
  assert.equal(steady(ours.stdout), steady((await virsh('dominfo', name)).stdout), `dominfo ${what}`);
  return ours.stdout;
}

test('the virsh workflow on a libvirt guest: setmem --wait, shutdown, setmaxmem, start, setmem --wait — as virsh prints it', { skip, timeout: 600_000 }, async () => {
  const name = `vmlw-${randomBytes(3).toString('hex')}`;
  const dir = await mkdtemp(join(tmpdir(), 'vm-lvw-'));
  const file = join(dir, 'guest.xml');
  await writeFile(file, libvirtGuestXml(name, { memoryKiB: 262144 }));
  try {
    assert.equal((await runCli(['-c', U, 'define', file])).code, 0);
    assert.deepEqual((await runCli(['-c', U, 'start', name])).stdout, `Domain '${name}' started\n\n`);
    // Shrink through the balloon; --wait returns once libvirt reports the guest there.
    const shrink = await runCli(['-c', U, 'setmem', name, '200M', '--wait', '--timeout', '240']);
    assert.deepEqual([shrink.code, shrink.stdout, shrink.stderr], [0, `Domain '${name}' reached 204800 KiB\n\n`, '']);
    assert.match(await sameAsVirsh(name, 'after shrinking'), /^Used memory: +204800 KiB$/m);
    // Growing past the boot memory is what libvirt cannot do live without memory devices.
    const over = await runCli(['-c', U, 'setmem', name, '384M']);
    const vover = await virsh('setmem', name, '384M');
    assert.deepEqual([over.code, over.stderr], [vover.code, vover.stderr], 'setmem above max memory');
    // The classic way: shut down (waits for the guest to be off), raise the maximum, start.
    const down = await runCli(['-c', U, 'shutdown', name, '--timeout', '180']);
    assert.deepEqual([down.code, down.stdout, down.stderr], [0, `Domain '${name}' is being shutdown\n\n`, '']);
    assert.equal((await virsh('domstate', name)).stdout, 'shut off\n\n');
    const max = await runCli(['-c', U, 'setmaxmem', name, '384M']);
    assert.deepEqual([max.code, max.stderr], [0, '']);
    await sameAsVirsh(name, 'shut off, after setmaxmem');
    assert.match((await virsh('dumpxml', name, '--inactive')).stdout, /<memory unit='KiB'>393216<\/memory>/);
    assert.equal((await runCli(['-c', U, 'start', name])).code, 0);
    const grow = await runCli(['-c', U, 'setmem', name, '384M', '--wait', '--timeout', '240']);
    assert.deepEqual([grow.code, grow.stdout, grow.stderr], [0, `Domain '${name}' reached 393216 KiB\n\n`, '']);
    const info = await sameAsVirsh(name, 'after growing');
    assert.match(info, /^Max memory: +393216 KiB$/m);
    assert.match(info, /^Used memory: +393216 KiB$/m);
    const stats = await runCli(['-c', U, 'dommemstat', name]);
    assert.match(stats.stdout, /^actual 393216$/m);
  } finally {
    await virsh('destroy', name);
    await virsh('undefine', name);
    await rm(dir, { recursive: true, force: true });
  }
});
