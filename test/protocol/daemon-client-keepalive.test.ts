/**
 * The daemon client against a server that closes kept-alive connections while the client is not
 * looking: the real virtmemd (idle connections closed after 5 s) with a client whose event loop
 * was busy for longer than that, as a test's synchronous child process or a long computation
 * makes it, and a scripted peer that resets a reused connection at the moment a request arrives
 * on it (the race in its purest form). Idempotent requests are sent once more on a new
 * connection; a POST is never sent twice.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { sandbox } from '../helpers/cli.js';
import { startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { daemonRequest, closeDaemonClients, DaemonUnreachableError } from '../../src/driver/remote/http-client.js';

/** Blocks this thread, as spawnSync or a long synchronous computation would. */
function blockEventLoop(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const sb = await sandbox();
let d: RunningDaemon | null = null;
after(async () => {
  closeDaemonClients();
  await d?.stop();
  await sb.cleanup();
});

test('virtmemd: a request after an idle gap longer than the server keeps a connection is answered', { timeout: 120_000 }, async () => {
  d = await startDaemon(sb.stateDir);
  const target = { socketPath: d.socketPath };
  for (let round = 0; round < 2; round++) {
    const first = await daemonRequest(target, 'GET', '/api/v1/host');
    assert.equal(first.status, 200);
    // The daemon closes the idle connection after 5 s (Node closes it about a second later
    // still); this thread does not see the close, so the connection is still in the pool when
    // the next request takes it, and the write meets a closed socket (EPIPE).
    blockEventLoop(7_000);
    const again = await daemonRequest(target, 'GET', '/api/v1/domains');
    assert.equal(again.status, 200, `round ${round}: ${again.text}`);
  }
});

/**
 * An HTTP/1.1 peer that answers every connection's first request (keeping the connection) and
 * resets the connection when a second request arrives on it: the server's idle close crossing
 * the client's request on the wire. Counts requests it answered and connections it reset.
 */
async function resettingPeer(): Promise<{ port: number; answered: string[]; resets: number; close(): Promise<void> }> {
  const state = { answered: [] as string[], resets: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    let buf = '';
    let served = 0;
    sock.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.slice(0, end);
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < end + 4 + length) return;
      buf = buf.slice(end + 4 + length);
      if (served++ > 0) { state.resets++; sock.resetAndDestroy(); return; }
      state.answered.push(head.split(' ', 2).join(' '));
      const body = '{"ok":true}';
      sock.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: keep-alive\r\n\r\n${body}`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port, answered: state.answered, get resets() { return state.resets; },
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}

test('a reset on a reused connection: GET and PUT are sent again on a new connection, POST is not', { timeout: 30_000 }, async () => {
  const peer = await resettingPeer();
  const target = { host: '127.0.0.1', port: peer.port };
  try {
    assert.equal((await daemonRequest(target, 'GET', '/a')).status, 200);
    // The second GET takes the kept-alive connection, is reset, and goes again on a new one.
    const get = await daemonRequest(target, 'GET', '/b');
    assert.deepEqual([get.status, get.body], [200, { ok: true }]);
    assert.equal(peer.resets, 1);
    const put = await daemonRequest(target, 'PUT', '/c', { body: { targetBytes: 1 } });
    assert.equal(put.status, 200);
    assert.equal(peer.resets, 2);
    // A POST may have done its work before the connection broke: it fails rather than repeat.
    await assert.rejects(daemonRequest(target, 'POST', '/d', { body: {} }),
      (e: unknown) => e instanceof DaemonUnreachableError && e.reusedConnection && /not reachable/.test(e.message));
    assert.equal(peer.resets, 3);
    assert.deepEqual(peer.answered, ['GET /a', 'GET /b', 'PUT /c']);
  } finally {
    closeDaemonClients();
    await peer.close();
  }
});
