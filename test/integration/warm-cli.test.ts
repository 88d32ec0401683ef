/**
 * The `virtmem` command as users run it (bin/virtmem): short commands are answered by the warm
 * CLI process, and the answer is byte for byte what the plain CLI (VIRTMEM_WARM=0) gives,
 * including errors and exit codes.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sandbox, runCli, ROOT } from '../helpers/cli.js';

const sb = await sandbox();
after(() => sb.cleanup());

const warmSocketDir = process.getuid?.() === 0 ? '/run/virtmem'
  : process.env.XDG_RUNTIME_DIR?.startsWith('/') ? join(process.env.XDG_RUNTIME_DIR, 'virtmem') : `/tmp/virtmem-${process.getuid?.()}`;

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

test('a warm process of this build serves them', async () => {
  await sb.ok('list', '--all');
  const id = (await readFile(join(ROOT, 'dist', 'warm-id'), 'utf8')).trim();
  const sockets = (await readdir(warmSocketDir)).filter((f) => f.startsWith(`cli-${id}-`) && f.endsWith('.sock'));
  assert.ok(sockets.length >= 1, `no warm socket for build ${id} in ${warmSocketDir}`);
});
