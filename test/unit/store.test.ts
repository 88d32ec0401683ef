/**
 * The definition store with bad files among good ones: each bad one is set aside with its
 * reason (a link, a FIFO, too large, not JSON, an invalid field), the good ones are returned,
 * and no error quotes what a bad file holds.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DefinitionStore, MAX_DEFINITION_BYTES } from '../../src/domain/store.js';
import { StatePaths } from '../../src/driver/native/paths.js';
import { defaultBalloon, validateDomainDef } from '../../src/domain/validate-def.js';

const root = await mkdtemp(join(tmpdir(), 'vm-store-'));
after(() => rm(root, { recursive: true, force: true }));
const paths = new StatePaths(root);
const store = new DefinitionStore(paths);

test('bad definition files are set aside one by one with a reason that never quotes them', async () => {
  const good = validateDomainDef({
    schemaVersion: 1, name: 'good', uuid: '6be4c8f2-ae14-4861-b174-25727cc97f74', vcpus: 1,
    memory: { maxKiB: 262144, currentKiB: 262144 }, memoryDevices: [], os: {}, disks: [], balloon: defaultBalloon(),
  });
  await store.save(good);
  const secret = join(root, 'secret.txt');
  await writeFile(secret, 'TOP-SECRET-LINE\n');
  await symlink(secret, paths.definition('link'));
  execFileSync('mkfifo', [paths.definition('fifo')]); // read without O_NONBLOCK, this would block forever
  await writeFile(paths.definition('huge'), `{"pad": "${'SECRET'.repeat(MAX_DEFINITION_BYTES / 6)}"}`);
  await writeFile(paths.definition('notjson'), 'SECRET-NOT-JSON {');
  await writeFile(paths.definition('badfield'), JSON.stringify({ ...good, name: 'badfield', uuid: 'SECRET-UUID' }));

  const { defs, unreadable } = await store.scan();
  assert.deepEqual(defs.map((d) => d.name), ['good']);
  const why = Object.fromEntries(unreadable.map((u) => [u.name, u.error.message]));
  assert.deepEqual(Object.keys(why), ['badfield', 'fifo', 'huge', 'link', 'notjson']);
  assert.match(why.link!, /link\.json is a symbolic link, not a regular file/);
  assert.match(why.fifo!, /fifo\.json is a FIFO, not a regular file/);
  assert.match(why.huge!, /huge\.json is over the 1048576-byte limit for a stored definition/);
  assert.match(why.notjson!, /notjson\.json is not valid JSON$/);
  assert.match(why.badfield!, /badfield\.json has an invalid uuid$/);
  for (const [name, message] of Object.entries(why)) {
    assert.match(message, new RegExp(`^stored definition of '${name}' is unusable: `));
    assert.doesNotMatch(message, /SECRET/, `${name}: ${message}`);
    assert.equal((unreadable.find((u) => u.name === name)!.error.cause as Error | undefined)?.message?.includes('SECRET') ?? false, false);
  }
  assert.deepEqual((await store.all()).map((d) => d.name), ['good']);
  await assert.rejects(store.get('link'), /is a symbolic link/);
});
