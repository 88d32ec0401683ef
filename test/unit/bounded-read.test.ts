/**
 * The one bounded reader (src/util/bounded-read.ts): the bound holds while reading, for files,
 * devices, FIFOs-to-be and streams without end; files of virtmem's own state are never read
 * through a link; secrets with loose modes are refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { InputTooLargeError, NotRegularFileError, readFileBounded, readInputBounded, readStreamBounded } from '../../src/util/bounded-read.js';
import { LoosePermissionsError, looseDirReason, looseSecretReason } from '../../src/util/private-files.js';
import type { Stats } from 'node:fs';

const dir = await mkdtemp(join(tmpdir(), 'vm-read-'));
test.after(() => rm(dir, { recursive: true, force: true }));

/** A stream that never ends (a chunk per turn of the event loop, as a socket), counting what was taken from it. */
function endless(): { stream: Readable; pulled: () => number } {
  let pulled = 0;
  const chunk = Buffer.alloc(16 * 1024, 0x61);
  const stream = new Readable({ read() { setImmediate(() => { pulled += chunk.length; this.push(chunk); }); } });
  return { stream, pulled: () => pulled };
}

test('a file within the bound is read whole; one byte over is refused, naming the file and the bound', async () => {
  const f = join(dir, 'small.xml');
  await writeFile(f, 'x'.repeat(1000));
  assert.equal((await readFileBounded(f, 1000, { what: 'domain XML' })).length, 1000);
  await assert.rejects(readFileBounded(f, 999, { what: 'domain XML' }), (e: unknown) =>
    e instanceof InputTooLargeError && e.code === 'INPUT_TOO_LARGE' && e.message === `${f} is over the 999-byte limit for domain XML; nothing was read past it`);
});

test('/dev/zero stops at the bound (plus one chunk), it is not read to the end first', async () => {
  await assert.rejects(readFileBounded('/dev/zero', 1 << 20, { what: 'domain XML' }), /\/dev\/zero is over the 1048576-byte limit for domain XML/);
});

test('an endless stream is cut at the bound and destroyed', async () => {
  const { stream, pulled } = endless();
  await assert.rejects(readStreamBounded(stream, 256 * 1024, 'standard input', 'domain XML'), InputTooLargeError);
  assert.equal(stream.destroyed, true);
  assert.ok(pulled() < 1024 * 1024, `read ${pulled()} bytes for a 256 KiB bound`);
});

test('drainOnOverflow keeps the stream open and drops what follows (a connection that still gets its answer)', async () => {
  const { stream } = endless();
  await assert.rejects(readStreamBounded(stream, 64 * 1024, 'request body', 'a request body', { drainOnOverflow: true }), InputTooLargeError);
  assert.equal(stream.destroyed, false);
  assert.equal(stream.readableFlowing, true, 'drained, not paused');
  stream.destroy();
});

test('"-" is standard input; a stream that ends is read whole', async () => {
  const buf = await readInputBounded('-', 100, 'domain XML', Readable.from([Buffer.from('<domain/>')]));
  assert.equal(buf.toString(), '<domain/>');
});

test('ownFile: a symbolic link and a FIFO are refused, and nothing of what they point at is read', async () => {
  const target = join(dir, 'secret');
  await writeFile(target, 'root:$6$hash:19000:0:99999:7:::\n');
  const link = join(dir, 'link.json');
  await symlink(target, link);
  await assert.rejects(readFileBounded(link, 1 << 20, { what: 'a stored definition', ownFile: true }), (e: unknown) =>
    e instanceof NotRegularFileError && /is a symbolic link/.test(e.message) && !e.message.includes('root:'));
  const fifo = join(dir, 'fifo.json');
  execFileSync('mkfifo', [fifo]);
  await assert.rejects(readFileBounded(fifo, 1 << 20, { what: 'a stored definition', ownFile: true }), /is a FIFO/);
  // Without ownFile (a user's own argument) a link is followed, as any command does.
  assert.match((await readFileBounded(link, 1 << 20, { what: 'domain XML' })).toString(), /^root:/);
});

test('secret: readable by everyone or writable by others is refused; owner-only and group-read pass', async () => {
  const f = join(dir, 'token');
  await writeFile(f, 'a'.repeat(32));
  for (const [mode, ok] of [[0o600, true], [0o640, true], [0o644, false], [0o660, false], [0o602, false]] as const) {
    await chmod(f, mode);
    const p = readFileBounded(f, 4096, { what: 'a token file', secret: true });
    if (ok) await p;
    else await assert.rejects(p, (e: unknown) => e instanceof LoosePermissionsError && e.message.includes(f) && e.message.includes(`0${mode.toString(8)}`), `mode ${mode.toString(8)}`);
  }
});

test('a state directory writable by its group or everyone is unfit; sticky does not help', () => {
  const st = (mode: number, uid = process.geteuid!()): Stats => ({ mode: 0o040000 | mode, uid, isDirectory: () => true }) as unknown as Stats;
  assert.equal(looseDirReason('/s', st(0o700)), null);
  assert.equal(looseDirReason('/s', st(0o710)), null);
  assert.equal(looseDirReason('/s', st(0o755)), null);
  assert.match(looseDirReason('/s', st(0o770))!, /writable by its group \(mode 0770\).*chmod go-w \/s/);
  assert.match(looseDirReason('/s', st(0o1777))!, /writable by everyone \(mode 01777\)/);
  assert.match(looseDirReason('/s', st(0o700, 4242 + (process.geteuid!() === 4242 ? 1 : 0)))!, /belongs to uid/);
  assert.equal(looseDirReason('/s', st(0o700, 0)), null, 'root-owned is trusted');
  assert.match(looseSecretReason('/t', { mode: 0o100644, uid: 0 } as Stats)!, /readable by everyone/);
});
