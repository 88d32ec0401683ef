/**
 * A real distribution guest (issue 8, part 3): Debian 12 with systemd, udev and the Debian cloud
 * kernel, booted from a qcow2 overlay over the cached base image (src/guest/distro.ts). The seed
 * workflow and a virtio-mem grow/shrink with --wait run on it, with memory onlined by the guest's
 * own udev rule (no memhp_default_state), and the balloon's guest statistics in dommemstat.
 *
 * Builds the image when it is not cached (a few minutes; CI builds it in scripts/setup.sh --dev).
 * Needs root for that build; never skips.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { sandbox, parseDominfo } from '../helpers/cli.js';
import { GuestAgent, readGuestMeminfo } from '../../src/guest/agent.js';
import { buildDistroGuest, createDistroOverlay, findDistroGuest, type DistroGuest } from '../../src/guest/distro.js';

const sb = await sandbox();
after(() => sb.cleanup());
const MiB = 1024;
const NAME = 'deb';

const info = async (): Promise<Map<string, string>> => parseDominfo(await sb.ok('dominfo', NAME));

/** Memory blocks of the guest: how many are online, and how many of those sit in ZONE_MOVABLE. */
async function guestBlocks(a: GuestAgent): Promise<{ blockKiB: number; online: number; movable: number }> {
  const r = await a.run(
    'cd /sys/devices/system/memory; bs=$(cat block_size_bytes); on=0; mv=0; ' +
      'for b in memory*; do [ "$(cat $b/online)" = 1 ] || continue; on=$((on+1)); [ "$(cat $b/valid_zones)" = Movable ] && mv=$((mv+1)); done; ' +
      'echo $bs $on $mv',
  );
  const [bs, on, mv] = r.output.trim().split(' ');
  return { blockKiB: parseInt(bs!, 16) / 1024, online: Number(on), movable: Number(mv) };
}

describe('a Debian 12 guest (systemd, udev, distro kernel)', () => {
  let g: DistroGuest;
  let a: GuestAgent;

  before(async () => {
    let t = Date.now();
    // A user's tests also take the one `sudo setup.sh --dev` built for root (readable by all).
    const rootBuilt = process.getuid?.() === 0 ? null : await findDistroGuest('debian12', '/var/cache/virtmem/guest/debian12');
    g = rootBuilt ?? (await buildDistroGuest('debian12', { log: (l) => console.log(`# ${l}`) }));
    console.log(`# distro guest ready in ${((Date.now() - t) / 1000).toFixed(1)} s (cached build took ${g.buildS} s): kernel ${g.kernelVersion}`);
    const overlay = join(sb.stateDir, `${NAME}.qcow2`);
    await createDistroOverlay(g, overlay);
    await sb.ok('new', NAME, '--accel', 'tcg', '--memory', '512M', '--max-memory', '2G',
      '--kernel', g.kernelPath, '--initrd', g.initrdPath, '--cmdline', g.cmdline, '--disk', overlay);
    t = Date.now();
    await sb.ok('start', NAME);
    // systemd under TCG: a generous bound.
    a = await GuestAgent.connect(join(sb.stateDir, 'run', NAME, 'agent.sock'), { timeoutMs: 300_000 });
    console.log(`# start to agent ready under TCG: ${((Date.now() - t) / 1000).toFixed(1)} s`);
  });
  after(() => a?.close());

  test('it is the distro: systemd is PID 1, the root is the virtio disk, the distro kernel runs', async () => {
    assert.equal((await a.run('cat /proc/1/comm')).output.trim(), 'systemd');
    assert.match((await a.run('. /etc/os-release; echo $ID $VERSION_ID')).output, /^debian 12$/m);
    assert.equal((await a.run('uname -r')).output.trim(), g.kernelVersion);
    assert.match((await a.run('findmnt -n -o SOURCE,FSTYPE /')).output, /^\/dev\/vda\s+ext4$/m);
    // The test depends on these; they come from udev's modalias handling, not from virtmem.
    assert.match((await a.run('cat /proc/modules')).output, /^virtio_balloon /m);
    assert.match((await a.run('cat /proc/modules')).output, /^virtio_mem /m);
    // Let systemd finish starting (bounded) so that logind is there for the power button.
    const r = await a.run('systemctl is-system-running --wait', { timeoutMs: 240_000 });
    assert.match(r.output, /running|degraded/, r.output);
    if (/degraded/.test(r.output)) console.log(`# degraded: ${(await a.run('systemctl --failed --no-legend')).output.trim()}`);
    console.log(`# guest's own boot times: ${(await a.run('systemd-analyze time')).output.trim().replace(/\s+/g, ' ')}`);
    assert.equal((await a.run('systemctl is-active systemd-logind')).output.trim(), 'active');
  });

  test('dominfo and dommemstat with guest statistics', async () => {
    const i = await info();
    assert.equal(i.get('State'), 'running');
    assert.equal(i.get('Max memory'), '2097152 KiB');
    assert.equal(i.get('Used memory'), '524288 KiB');
    await sb.ok('dommemstat', NAME, '--period', '1');
    // The guest reports on its own schedule: ask until its statistics are in (bounded).
    const deadline = Date.now() + 60_000;
    let stats = await sb.ok('dommemstat', NAME);
    while (!/^usable \d+$/m.test(stats)) {
      assert.ok(Date.now() < deadline, `no guest statistics in dommemstat:\n${stats}`);
      await new Promise((r) => setTimeout(r, 1000));
      stats = await sb.ok('dommemstat', NAME);
    }
    assert.match(stats, /^actual 524288$/m);
    assert.match(stats, /^unused \d+$/m);
    const available = Number(/^available (\d+)$/m.exec(stats)?.[1]);
    const guest = await readGuestMeminfo(a);
    assert.equal(available, guest.memTotalKiB, 'available is the guest MemTotal');
  });

  test('balloon: setmem 384M --wait and back to 512M --wait; the guest sees it', async () => {
    // virtmem's balloon deflates on guest OOM, so the driver leaves MemTotal alone: the pages it
    // hands back to the host are missing from MemAvailable instead.
    const before = (await readGuestMeminfo(a)).memAvailableKiB;
    assert.equal(await sb.ok('setmem', NAME, '384M', '--wait', '--timeout', '180'), `Domain '${NAME}' reached 393216 KiB\n\n`);
    assert.equal((await info()).get('Used memory'), '393216 KiB');
    assert.match(await sb.ok('dommemstat', NAME), /^actual 393216$/m);
    const down = (await readGuestMeminfo(a)).memAvailableKiB;
    assert.ok(before - down >= 100 * MiB, `guest MemAvailable ${before} -> ${down} KiB with 128 MiB in the balloon`);
    assert.equal(await sb.ok('setmem', NAME, '512M', '--wait', '--timeout', '180'), `Domain '${NAME}' reached 524288 KiB\n\n`);
    assert.equal((await info()).get('Used memory'), '524288 KiB');
    const up = (await readGuestMeminfo(a)).memAvailableKiB;
    assert.ok(up - down >= 100 * MiB, `guest MemAvailable ${down} -> ${up} KiB with the balloon deflated`);
  });

  test('virtio-mem: setmem 1536M --wait; the guest onlined the memory itself, as movable', async () => {
    // The kernel is told nothing: it leaves new blocks offline, so the onlining below is udev's.
    assert.doesNotMatch((await a.run('cat /proc/cmdline')).output, /memhp_default_state/);
    assert.equal((await a.run('cat /sys/devices/system/memory/auto_online_blocks')).output.trim(), 'offline');
    const before = await guestBlocks(a);
    const memBefore = (await readGuestMeminfo(a)).memTotalKiB;
    assert.equal(await sb.ok('setmem', NAME, '1536M', '--wait', '--timeout', '180'), `Domain '${NAME}' reached 1572864 KiB\n\n`);
    const i = await info();
    assert.equal(i.get('Used memory'), '1572864 KiB');
    assert.equal(i.get('Hot-plugged'), '1048576 KiB of 1572864 KiB (virtio-mem)');
    const after = await guestBlocks(a);
    const pluggedBlocks = (1024 * MiB) / after.blockKiB;
    assert.ok(after.online - before.online >= pluggedBlocks, `online blocks ${before.online} -> ${after.online} (block ${after.blockKiB} KiB)`);
    assert.ok(after.movable - before.movable >= pluggedBlocks, `movable blocks ${before.movable} -> ${after.movable}`);
    const memAfter = (await readGuestMeminfo(a)).memTotalKiB;
    assert.ok(memAfter - memBefore >= 1024 * MiB - MiB, `guest MemTotal ${memBefore} -> ${memAfter} KiB`);
  });

  test('virtio-mem: shrink back to 512M --wait', async () => {
    // The guard rail goes by the guest's statistics, which lag one report: ask again (bounded)
    // if it still sees the memory as used.
    const deadline = Date.now() + 60_000;
    let r = await sb.run('setmem', NAME, '512M', '--wait', '--timeout', '180');
    while (r.code !== 0 && /refusing to shrink/.test(r.stderr) && Date.now() < deadline) {
      r = await sb.run('setmem', NAME, '512M', '--wait', '--timeout', '180');
    }
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `Domain '${NAME}' reached 524288 KiB\n\n`);
    const i = await info();
    assert.equal(i.get('Used memory'), '524288 KiB');
    assert.equal(i.get('Hot-plugged'), '0 KiB of 1572864 KiB (virtio-mem)');
  });

  test('shutdown completes: systemd powers the guest off on the ACPI power button', async () => {
    a.close();
    await sb.ok('shutdown', NAME, '--timeout', '240');
    assert.equal((await sb.ok('domstate', NAME, '--reason')).trim(), 'shut off (shutdown)');
  });
});
