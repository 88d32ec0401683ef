/**
 * "Everything is created owner-only" holds for what QEMU makes too (issue "Lose nothing under
 * concurrency and faults"): after `virtmem start` on a real guest, every file under the state
 * directory — QEMU's monitor and serial sockets, its pidfile and console log, virtmem's own
 * status and logs — is 0600/0700 or tighter, not bind()'s 0755 or QEMU's 0644.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { sandbox } from '../helpers/cli.js';
import { skipUnlessCi } from '../helpers/skip.js';
import { findDefaultGuest } from '../../src/guest/build.js';

const sb = await sandbox();
after(() => sb.cleanup());
const skip = skipUnlessCi((await findDefaultGuest()) ? false : 'the built-in guest is not built (virtmem guest-build)');

/** Every path under `dir` with its permission bits. */
async function walk(dir: string): Promise<Array<{ path: string; mode: number; kind: string }>> {
  const out: Array<{ path: string; mode: number; kind: string }> = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    const st = await lstat(path);
    out.push({ path, mode: st.mode & 0o7777, kind: e.isSocket() ? 'socket' : e.isDirectory() ? 'dir' : e.isSymbolicLink() ? 'link' : 'file' });
    if (e.isDirectory()) out.push(...await walk(path));
  }
  return out;
}

test('after start, every file QEMU and virtmem made for the guest is owner-only', { skip }, async () => {
  await sb.ok('new', 'priv', '--memory', '256M', '--accel', 'tcg');
  await sb.ok('start', 'priv');
  try {
    const files = await walk(sb.stateDir);
    const run = join(sb.stateDir, 'run', 'priv');
    for (const name of ['qmp.sock', 'qmp-watch.sock', 'console.sock', 'agent.sock', 'console.log', 'qemu.pid', 'qemu.log', 'status.json']) {
      assert.ok(files.some((f) => f.path === join(run, name)), `${name} exists (the check below covers it)`);
    }
    const open = files.filter((f) => (f.mode & 0o077) !== 0).map((f) => `${f.path} (${f.kind}, 0${f.mode.toString(8)})`);
    assert.deepEqual(open, [], 'files others may use');
  } finally {
    await sb.ok('destroy', 'priv');
  }
});
