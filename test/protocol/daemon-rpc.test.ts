/**
 * virtmemd's RPC socket (src/http/rpc-server.ts) under what a real guest does not produce on
 * demand: frames split anywhere, requests that cannot be read, a length word out of bounds, a
 * handler that never answers, a client that goes away, a server that goes away under the
 * client. Against the real RpcServer and DaemonRpcClient on a unix socket; the daemon behind
 * it is a stand-in with the few methods these routes call. The real daemon's answers over RPC
 * are tested in test/integration/daemon.test.ts.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RpcServer, RPC_MAX_REQUEST_BYTES } from '../../src/http/rpc-server.js';
import { DaemonRpcClient } from '../../src/driver/remote/rpc-client.js';
import { DaemonUnreachableError } from '../../src/driver/remote/http-client.js';
import { LengthFrames, lengthFrame } from '../../src/util/length-frames.js';
import type { Daemon } from '../../src/daemon/daemon.js';
import { bounded } from './fake-qmp.js';

const dir = await mkdtemp(join(tmpdir(), 'vm-rpc-'));
const aborted: string[] = [];
const daemon = {
  counters: { httpRequests: 0 },
  hosts: [{ key: 'local' }],
  libvirtHosts: () => [],
  // GET /domains never answers: the bound and the backstop must.
  list: () => new Promise(() => {}),
  // GET /domains/{name}/info answers after 300 ms, or notes that its signal was aborted.
  info: (name: string, _host: string, call: { readonly signal: AbortSignal }) => new Promise((resolve, reject) => {
    const t = setTimeout(() => resolve({ name }), 300);
    call.signal.addEventListener('abort', () => { clearTimeout(t); aborted.push(name); reject(new Error('aborted')); }, { once: true });
  }),
} as unknown as Daemon;
const path = join(dir, 'rpc.sock');
const server = new RpcServer({ daemon, listen: { path }, requestTimeoutMs: 500 });
await server.start();
after(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

/** A raw connection: frames out, answers parsed. */
async function raw(): Promise<{ sock: Socket; answers: Array<Record<string, any>>; closed: Promise<void>; send(doc: unknown): void }> {
  const sock = createConnection(path);
  await new Promise((r) => sock.once('connect', r));
  const answers: Array<Record<string, any>> = [];
  const frames = new LengthFrames({ minBytes: 6, maxBytes: 1 << 20, outOfBounds: (n) => new Error(`bad length ${n}`) });
  sock.on('data', (c: Buffer) => { for (const f of frames.push(c)) answers.push(JSON.parse(f.subarray(4).toString('utf8'))); });
  sock.on('error', () => {});
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  return { sock, answers, closed, send: (doc) => sock.write(lengthFrame(Buffer.from(JSON.stringify(doc)))) };
}

async function answersOf(c: { answers: unknown[] }, n: number): Promise<void> {
  const end = Date.now() + 10_000;
  while (c.answers.length < n) {
    if (Date.now() > end) assert.fail(`${c.answers.length} answers, not ${n}, within 10 s`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('the socket is owner-only; answers carry the request id, in the order they are ready', async () => {
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  const c = await raw();
  c.send({ id: 7, method: 'GET', path: '/api/v1/domains/slow/info' });
  c.send({ id: 8, method: 'GET', path: '/api/v1/hosts' });
  await answersOf(c, 2);
  assert.deepEqual(c.answers[0], { id: 8, status: 200, body: { hosts: [] } });
  assert.deepEqual(c.answers[1], { id: 7, status: 200, body: { name: 'slow' } });
  c.sock.destroy();
});

test('a request split across writes, and several in one write, are all read', async () => {
  const c = await raw();
  const a = lengthFrame(Buffer.from(JSON.stringify({ id: 1, method: 'GET', path: '/api/v1/hosts' })));
  const b = lengthFrame(Buffer.from(JSON.stringify({ id: 2, method: 'GET', path: '/api/v1/hosts' })));
  const all = Buffer.concat([a, b]);
  for (let i = 0; i < all.length; i += 3) { c.sock.write(all.subarray(i, i + 3)); await new Promise((r) => setImmediate(r)); }
  await answersOf(c, 2);
  assert.deepEqual(c.answers.map((x) => x.id).sort(), [1, 2]);
  c.sock.destroy();
});

test('requests that cannot be read are answered 400 naming why; the connection stays usable', async () => {
  const c = await raw();
  c.sock.write(lengthFrame(Buffer.from('{"id": 1, "meth')));
  c.send({ method: 'GET', path: '/api/v1/hosts' });
  c.send({ id: 3, method: 'DELETE', path: '/api/v1/hosts' });
  c.send({ id: 4, method: 'GET', path: 'api/v1/hosts' });
  c.send({ id: 5, method: 'GET', path: '/api/v1/hosts', extra: 1 });
  c.send({ id: 6, method: 'GET', path: '/api/v1/nowhere' });
  c.send({ id: 7, method: 'GET', path: '/api/v1/hosts' });
  await answersOf(c, 7);
  const by = (id: number | null): Array<Record<string, any>> => c.answers.filter((x) => x.id === id);
  assert.deepEqual(by(null).map((x) => [x.status, x.body.error.code]).sort(), [[400, 'BAD_JSON'], [400, 'MISSING_FIELD']]);
  assert.deepEqual([by(3)[0]!.status, by(3)[0]!.body.error.field], [400, 'method']);
  assert.deepEqual([by(4)[0]!.status, by(4)[0]!.body.error.field], [400, 'path']);
  assert.deepEqual([by(5)[0]!.status, by(5)[0]!.body.error.code], [400, 'UNKNOWN_FIELD']);
  assert.deepEqual([by(6)[0]!.status, by(6)[0]!.body.error.code], [404, 'NOT_FOUND']);
  assert.equal(by(7)[0]!.status, 200);
  c.sock.destroy();
});

test('a length word out of bounds: 413, then the connection is closed', async () => {
  const c = await raw();
  const word = Buffer.alloc(4);
  word.writeUInt32BE(RPC_MAX_REQUEST_BYTES + 1);
  c.sock.write(word);
  await bounded(c.closed, 10_000, 'the server closing the connection');
  assert.equal(c.answers.length, 1);
  assert.deepEqual([c.answers[0]!.id, c.answers[0]!.status, c.answers[0]!.body.error.code], [null, 413, 'BODY_TOO_LARGE']);
});

test('a handler that never answers: 504 after its bound; the client\u2019s bound is its own', async () => {
  const rpc = new DaemonRpcClient(path);
  try {
    const r = await rpc.call('GET', '/api/v1/domains');
    assert.equal(r.status, 504);
    assert.equal((r.body as any).error.code, 'TIMEOUT');
    await assert.rejects(rpc.call('GET', '/api/v1/domains', undefined, 100), (e: unknown) => e instanceof DaemonUnreachableError && e.timedOut);
  } finally {
    rpc.close();
  }
});

test('a client that goes away aborts its requests', async () => {
  const c = await raw();
  c.send({ id: 1, method: 'GET', path: '/api/v1/domains/gone/info' });
  await new Promise((r) => setTimeout(r, 50));
  c.sock.destroy();
  const end = Date.now() + 5_000;
  while (!aborted.includes('gone') && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  assert.ok(aborted.includes('gone'), 'the handler saw its signal aborted');
});

test('the client: a server that closes fails the open calls; the next call connects again', async () => {
  const other = join(dir, 'other.sock');
  const s2 = new RpcServer({ daemon, listen: { path: other } });
  await s2.start();
  const rpc = new DaemonRpcClient(other);
  try {
    assert.equal((await rpc.call('GET', '/api/v1/hosts')).status, 200);
    // Its failure is awaited from the start: it comes while the server closes.
    const open = assert.rejects(rpc.call('GET', '/api/v1/domains/x/info'), (e: unknown) => e instanceof DaemonUnreachableError);
    await new Promise((r) => setTimeout(r, 20));
    await s2.close();
    await open;
    await assert.rejects(rpc.call('GET', '/api/v1/hosts'), (e: unknown) => e instanceof DaemonUnreachableError && /not reachable/.test(e.message));
    const s3 = new RpcServer({ daemon, listen: { path: other } });
    await s3.start();
    try {
      assert.equal((await rpc.call('GET', '/api/v1/hosts')).status, 200);
    } finally {
      await s3.close();
    }
  } finally {
    rpc.close();
  }
});
