/**
 * virtmemd's request bodies are bounded while they arrive: a body without end is answered 413
 * and its connection closed after at most the bound plus what the sockets buffer, and a body
 * that trickles is cut by the request bound (408). Against the real ApiServer on a unix socket;
 * neither reaches a route, so the daemon behind it is a stand-in.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiServer } from '../../src/http/server.js';
import type { Daemon } from '../../src/daemon/daemon.js';
import { bounded } from './fake-qmp.js';

const dir = await mkdtemp(join(tmpdir(), 'vm-http-'));
const daemon = { counters: { httpRequests: 0 }, onEvent: () => () => {} } as unknown as Daemon;
const server = new ApiServer({ daemon, token: null, listen: { kind: 'unix', path: join(dir, 'api.sock') }, requestTimeoutMs: 2_000 });
await server.start();
after(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

const HEAD = 'PUT /api/v1/domains/x/memory HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n';

async function open(): Promise<{ sock: Socket; answer: () => string; closed: Promise<void> }> {
  const sock = createConnection(join(dir, 'api.sock'));
  await new Promise((r) => sock.once('connect', r));
  let text = '';
  sock.setEncoding('utf8').on('data', (c: string) => { text += c; });
  sock.on('error', () => {}); // EPIPE / reset once the server hangs up: expected
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  return { sock, answer: () => text, closed };
}

test('a chunked body without end: 413, the connection closed, little of it taken', async () => {
  const c = await open();
  c.sock.write(`${HEAD}transfer-encoding: chunked\r\n\r\n`);
  const chunk = Buffer.from(`10000\r\n${'x'.repeat(0x10000)}\r\n`);
  let sent = 0;
  let done = false;
  void c.closed.then(() => { done = true; });
  while (!done && sent < 256 << 20) {
    sent += chunk.length;
    if (!c.sock.write(chunk)) await new Promise((r) => { c.sock.once('drain', r); c.sock.once('close', r); });
  }
  await bounded(c.closed, 10_000, 'the server closing the connection');
  assert.match(c.answer(), /^HTTP\/1\.1 413 /);
  assert.match(c.answer(), /"code":"BODY_TOO_LARGE"/);
  assert.ok(sent < 16 << 20, `the server took ${sent} bytes of an endless body with a 64 KiB bound`);
});

test('a body that trickles in is cut by the request bound: 408', async () => {
  const c = await open();
  c.sock.write(`${HEAD}content-length: 40\r\n\r\n{"target`);
  await bounded(c.closed, 10_000, 'the server cutting the slow request');
  assert.match(c.answer(), /^HTTP\/1\.1 408 /);
});
