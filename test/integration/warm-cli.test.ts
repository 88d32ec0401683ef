/**
 * The `virtmem` command as users run it (bin/virtmem): short commands are answered by the warm
 * CLI process, and the answer is byte for byte what the plain CLI (VIRTMEM_WARM=0) gives,
 * including errors and exit codes.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { sandbox, runCli, ROOT } from '../helpers/cli.js';

const sb = await sandbox();
after(() => sb.cleanup());

const warmSocketDir = process.getuid?.() === 0 ? '/run/virtmem'
  : process.env.XDG_RUNTIME_DIR?.startsWith('/') ? join(process.env.XDG_RUNTIME_DIR, 'virtmem') : `/tmp/virtmem-${process.getuid?.()}`;

/** Sockets of this build's warm processes. */
async function warmSockets(): Promise<string[]> {
  const id = (await readFile(join(ROOT, 'dist', 'warm-id'), 'utf8')).trim();
  return (await readdir(warmSocketDir).catch(() => [] as string[])).filter((f) => f.startsWith(`cli-${id}-`) && f.endsWith('.sock'));
}

before(async () => {
  // The first invocation runs on its own and starts the warm process for the next ones.
  await sb.ok('list', '--all');
  const deadline = Date.now() + 30_000;
  while ((await warmSockets()).length === 0) {
    assert.ok(Date.now() < deadline, `no warm CLI process of this build came up in ${warmSocketDir}`);
    await delay(100);
  }
});

async function both(...args: string[]): Promise<void> {
  const argv = ['--state-dir', sb.stateDir, ...args];
  const warm = await runCli(argv);
  const plain = await runCli(argv, { env: { VIRTMEM_WARM: '0' } });
  assert.deepEqual(warm, plain, `virtmem ${args.join(' ')}`);
}

test('short commands give the plain CLI\'s output, errors and exit codes', async () => {
  await sb.ok('new', 'vm', '--memory', '512M'); // not a warm command: runs on its own
  await both('list', '--all');
  await both('list', '--all', '--json');
  await both('dominfo', 'vm');
  await both('dominfo', 'nosuch');
  await both('setmem', 'vm', '400M', '--config');
  await both('dominfo', 'vm');
  await both('setmem', 'vm', 'bad-size', '--config');
  await both('dommemstat', 'vm');
  await both('list', '--bogus');
  await both('nosuchcommand');
  await both();
});

test('commands the warm process does not take still run, on their own', async () => {
  await sb.ok('new', 'vm2', '--memory', '256M');
  assert.match(await sb.ok('dominfo', 'vm2'), /^Max memory:\s+262144 KiB$/m);
  await sb.ok('undefine', 'vm2');
});
