/**
 * setmem --wait grows a guest right after a shrink and says "reached": the wait compares the
 * guest's MemTotal after the plug with its MemTotal before it, and "before" must be a report
 * taken after the shrink settled, not the guest's last periodic report (which may still show
 * the memory the shrink took away, so the grow would look as if the guest never onlined it).
 * On a native guest and, through the same rule, on a guest libvirt runs (needs root, a running
 * libvirtd and the built-in guest).
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { sandbox, parseDominfo, runCli } from '../helpers/cli.js';
import { GuestAgent, readGuestMeminfo } from '../../src/guest/agent.js';
import { until } from '../helpers/poll.js';
import { withLibvirtGuest } from '../helpers/libvirt-guest.js';
import { skipUnlessCi, notRoot, libvirtdMissing, builtInGuestMissing } from '../helpers/skip.js';

const sb = await sandbox();
after(() => sb.cleanup());
const MiB = 1024;
const BOOT_MIB = 512;
const GROWN_MIB = 1536;
/** Each cycle is another chance for a periodic report to land before the shrink settled. */
const CYCLES = 3;

const info = async (name: string): Promise<Map<string, string>> => parseDominfo(await sb.ok('dominfo', name));

/** setmem --wait to `mib` MiB, which must exit 0 and say it reached it; dominfo must show it. */
async function setmemReached(name: string, mib: number): Promise<void> {
  const r = await sb.run('setmem', name, `${mib}M`, '--wait', '--timeout', '120');
  assert.equal(r.code, 0, `setmem ${mib}M --wait: ${r.stderr}`);
  assert.equal(r.stdout, `Domain '${name}' reached ${mib * MiB} KiB\n\n`);
  assert.equal((await info(name)).get('Used memory'), `${mib * MiB} KiB`);
}

// Two statistics periods: the project's default (5 s: the last report may be seconds old) and
// 1 s (the period the other live-resize tests use: the last report is under a second old).
for (const periodS of [5, 1]) {
  describe(`a virtio-mem guest reporting statistics every ${periodS} s`, () => {
    const name = `gs${periodS}`;
    let a: GuestAgent;
    let bootTotalKiB = 0;
    before(async () => {
      await sb.ok('new', name, '--memory', `${BOOT_MIB}M`, '--max-memory', '2G');
      await sb.ok('start', name);
      await sb.ok('dommemstat', name, '--period', String(periodS), '--live');
      a = await GuestAgent.connect(join(sb.stateDir, 'run', name, 'agent.sock'), { timeoutMs: 90_000 });
      // The check that the guest onlined plugged memory needs its statistics: wait for the first
      // (before it, last_update is 0).
      await until('the guest reports its statistics', () => sb.ok('dommemstat', name), (t) => /^last_update [1-9]/m.test(t));
      bootTotalKiB = (await readGuestMeminfo(a)).memTotalKiB;
    });
    after(async () => {
      a?.close();
      await sb.run('destroy', name);
    });

    /** The guest's own MemTotal shows the grown memory (less a virtio-mem block). */
    async function guestHasGrown(what: string): Promise<void> {
      const kib = (await readGuestMeminfo(a)).memTotalKiB;
      assert.ok(kib - bootTotalKiB >= (GROWN_MIB - BOOT_MIB - 2) * MiB, `${what}: guest MemTotal ${bootTotalKiB} -> ${kib} KiB`);
    }

    test(`grow, then shrink and grow again at once, all with --wait (${CYCLES} times): each reached, and the guest has the memory`, async () => {
      await setmemReached(name, GROWN_MIB);
      await guestHasGrown('first grow');
      for (let i = 0; i < CYCLES; i++) {
        await setmemReached(name, BOOT_MIB);
        // No pause: the grow comes while the guest's last report may predate the shrink.
        await setmemReached(name, GROWN_MIB);
        await guestHasGrown(`grow ${i + 1} after a shrink`);
      }
    });
  });
}

describe('a virtio-mem guest libvirt runs, reporting statistics every 5 s', () => {
  const U = 'qemu:///system';
  const skip = skipUnlessCi(libvirtdMissing(), notRoot(), builtInGuestMissing());
  const lv = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => runCli(['-c', U, ...args]);
  /** The guest's own MemTotal, as its statistics report it ("available", KiB). */
  const reportedTotalKiB = async (name: string): Promise<number> => Number(/^available (\d+)$/m.exec((await lv('dommemstat', name)).stdout)?.[1]);

  test(`grow, then shrink and grow again at once, all with --wait (${CYCLES} times): each reached, and the guest reports the memory`, { skip, timeout: 600_000 }, async () => {
    await withLibvirtGuest(U, 'vmgs', { memoryKiB: BOOT_MIB * MiB, currentKiB: BOOT_MIB * MiB, virtioMemKiB: (GROWN_MIB - BOOT_MIB) * MiB, cmdline: 'memhp_default_state=online_movable' }, async (name) => {
      assert.equal((await lv('dommemstat', name, '--period', '5', '--live')).code, 0);
      await until('the guest reports its statistics', async () => (await lv('dommemstat', name)).stdout, (t) => /^last_update [1-9]/m.test(t));
      const bootTotalKiB = await reportedTotalKiB(name);
      const reached = async (mib: number): Promise<void> => {
        const r = await lv('setmem', name, `${mib}M`, '--wait', '--timeout', '120');
        assert.deepEqual([r.code, r.stdout, r.stderr], [0, `Domain '${name}' reached ${mib * MiB} KiB\n\n`, ''], `setmem ${mib}M --wait`);
        assert.match((await lv('dominfo', name)).stdout, new RegExp(`^Used memory: +${mib * MiB} KiB$`, 'm'));
      };
      /** The guest's report after a grow: the statistics --wait asked for are its newest. */
      const grown = async (what: string): Promise<void> => {
        const kib = await reportedTotalKiB(name);
        assert.ok(kib - bootTotalKiB >= (GROWN_MIB - BOOT_MIB - 2) * MiB, `${what}: the guest reports MemTotal ${bootTotalKiB} -> ${kib} KiB`);
      };
      await reached(GROWN_MIB);
      await grown('first grow');
      for (let i = 0; i < CYCLES; i++) {
        await reached(BOOT_MIB);
        await reached(GROWN_MIB);
        await grown(`grow ${i + 1} after a shrink`);
      }
    });
  });
});
