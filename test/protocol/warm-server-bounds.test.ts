/**
 * The warm CLI process bounds what it reads from a client: a request that grows past
 * MAX_REQUEST_BYTES is answered "run it yourself" and the connection closed, and one that never
 * completes is dropped after the request bound (10 s). A real warm-server.js on its own socket.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../helpers/cli.js';
import { until } from '../helpers/poll.js';
import { decodeWarmFrames, MAX_REQUEST_BYTES, WARM_MAGIC } from '../../src/cli/warm-protocol.js';
import { bounded } from './fake-qmp.js';

let dir: string;
let server: ChildProcess;
let socketPath: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vm-warm-'));
  socketPath = join(dir, 'cli.sock');
  server = spawn(process.execPath, [join(ROOT, 'dist', 'src', 'cli', 'warm-server.js'), '--socket', socketPath, '--idle-s', '120'], { stdio: 'ignore' });
  await until('the warm process listening', () => new Promise<boolean>((resolve) => {
    const s = createConnection(socketPath);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  }), (ok) => ok, () => {}, 60_000);
});
after(async () => {
  server.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

/** Connect; collect what the server sends until it closes. */
async function connect(): Promise<{ sock: Socket; received: () => Buffer; closed: Promise<void> }> {
  const sock = createConnection(socketPath);
  await new Promise((r) => sock.once('connect', r));
  const chunks: Buffer[] = [];
  sock.on('data', (c: Buffer) => chunks.push(c));
  sock.on('error', () => {}); // reset once the server hangs up on an endless request: expected
  return { sock, received: () => Buffer.concat(chunks), closed: new Promise((r) => sock.once('close', () => r())) };
}

test('a request without end is cut at MAX_REQUEST_BYTES: "run it yourself", then closed', async () => {
  const c = await connect();
  c.sock.write(`${WARM_MAGIC}\0`);
  const chunk = Buffer.alloc(64 * 1024, 0x41); // one field that never ends
  let sent = 0;
  let closed = false;
  void c.closed.then(() => { closed = true; });
  while (!closed && sent < 64 * MAX_REQUEST_BYTES) {
    sent += chunk.length;
    if (!c.sock.write(chunk)) await new Promise((r) => { c.sock.once('drain', r); c.sock.once('close', r); });
  }
  await bounded(c.closed, 10_000, 'the warm process closing the connection');
  assert.deepEqual(decodeWarmFrames(c.received()).frames.map((f) => f.type), ['r']);
  assert.ok(sent < 8 * MAX_REQUEST_BYTES, `the warm process took ${sent} bytes of an endless request`);
});

test('a request that never completes is dropped after the request bound', async () => {
  const c = await connect();
  c.sock.write(`${WARM_MAGIC}\0` + '1\0'); // and nothing more
  await bounded(c.closed, 30_000, 'the warm process dropping the incomplete request');
  assert.equal(c.received().length, 0, 'nothing ran, nothing was answered');
});
