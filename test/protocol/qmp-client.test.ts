import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { QmpClient, type QmpConnectOptions, type QmpDebugEvent } from '../../src/qmp/client.js';
import {
  QmpAbortedError,
  QmpCommandError,
  QmpConnectError,
  QmpDisconnectedError,
  QmpProtocolError,
  QmpStateError,
  QmpTimeoutError,
} from '../../src/qmp/errors.js';
import type { QmpEvent } from '../../src/qmp/messages.js';
import { bounded, FakeQmpServer, type FakePeer } from './fake-qmp.js';

const T = { timeout: 10_000 };

let server: FakeQmpServer;
let clients: QmpClient[] = [];

beforeEach(async () => {
  server = await FakeQmpServer.start();
  clients = [];
});

afterEach(async () => {
  for (const c of clients) c.destroy();
  await server.close();
});

/** Connects a client and completes the handshake from the peer's side. */
async function connected(opts: QmpConnectOptions = {}): Promise<{ client: QmpClient; peer: FakePeer }> {
  const pending = QmpClient.connect(server.socketPath, opts);
  const peer = await server.nextPeer();
  await peer.handshake();
  const client = await bounded(pending, 2_000, 'connect');
  clients.push(client);
  return { client, peer };
}

/** Asserts the promise rejects with a QmpDisconnectedError, within a bound (no hang). */
async function rejectsDisconnected(p: Promise<unknown>, message?: RegExp): Promise<QmpDisconnectedError> {
  let caught: unknown;
  await bounded(
    p.then(
      () => assert.fail('expected a rejection'),
      (err: unknown) => (caught = err),
    ),
    2_000,
    'pending call to settle',
  );
  assert.ok(caught instanceof QmpDisconnectedError, `expected QmpDisconnectedError, got ${String(caught)}`);
  assert.equal(caught.code, 'QMP_DISCONNECTED');
  if (message) assert.match(caught.message, message);
  return caught;
}

describe('connect and negotiation', () => {
  it('reads the greeting, negotiates capabilities, then runs', T, async () => {
    const pending = QmpClient.connect(server.socketPath);
    const peer = await server.nextPeer();
    peer.greet();
    const cmd = await peer.nextCommand();
    // Spec 4: qmp_capabilities first; we do not enable oob.
    assert.equal(cmd.execute, 'qmp_capabilities');
    assert.equal(cmd.arguments, undefined);
    assert.equal(typeof cmd.id, 'number');
    peer.reply(cmd);
    const client = await bounded(pending, 2_000, 'connect');
    clients.push(client);
    assert.equal(client.state, 'running');
    assert.deepEqual(client.greeting?.version.qemu, { major: 7, minor: 2, micro: 0 });
    assert.deepEqual(client.greeting?.capabilities, ['oob']);
  });

  it('rejects a greeting that is not QMP with QmpProtocolError', T, async () => {
    const pending = QmpClient.connect(server.socketPath);
    const peer = await server.nextPeer();
    peer.send({ hello: 'I am not QEMU' });
    await assert.rejects(pending, (e: unknown) => e instanceof QmpProtocolError && /QMP greeting/.test(e.message));
    await bounded(peer.gone, 2_000, 'client to hang up');
  });

  it('rejects a non-JSON greeting with QmpProtocolError', T, async () => {
    const pending = QmpClient.connect(server.socketPath);
    const peer = await server.nextPeer();
    peer.sendRaw('SSH-2.0-OpenSSH_9.2\r\n');
    await assert.rejects(pending, QmpProtocolError);
  });

  it('times out when no greeting arrives (monitor busy) and says so', T, async () => {
    const started = Date.now();
    const pending = QmpClient.connect(server.socketPath, { timeoutMs: 200 });
    const peer = await server.nextPeer(); // accepted at socket level, but silent like a busy monitor
    await assert.rejects(pending, (e: unknown) => {
      assert.ok(e instanceof QmpTimeoutError);
      assert.equal(e.code, 'QMP_TIMEOUT');
      assert.match(e.message, /no QMP greeting within 200 ms/);
      assert.match(e.message, /busy/);
      return true;
    });
    assert.ok(Date.now() - started < 2_000);
    await bounded(peer.gone, 2_000, 'client to hang up after the timeout');
  });

  it('times out when qmp_capabilities is not answered', T, async () => {
    const pending = QmpClient.connect(server.socketPath, { timeoutMs: 200 });
    const peer = await server.nextPeer();
    peer.greet();
    await peer.nextCommand();
    await assert.rejects(pending, (e: unknown) => e instanceof QmpTimeoutError && /qmp_capabilities/.test(e.message));
  });

  it('passes a refused qmp_capabilities through as QmpCommandError', T, async () => {
    const pending = QmpClient.connect(server.socketPath);
    const peer = await server.nextPeer();
    peer.greet();
    peer.replyError(await peer.nextCommand(), 'GenericError', 'Capabilities negotiation is already complete');
    await assert.rejects(pending, (e: unknown) => e instanceof QmpCommandError && e.command === 'qmp_capabilities');
  });

  it('fails with QmpConnectError when the peer hangs up during the handshake', T, async () => {
    const pending = QmpClient.connect(server.socketPath);
    const peer = await server.nextPeer();
    peer.destroy();
    await assert.rejects(pending, (e: unknown) => e instanceof QmpConnectError && e.cause instanceof QmpDisconnectedError);
  });

  it('fails with QmpConnectError (cause ENOENT) for a missing socket', T, async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'virtmem-qmp-missing-'));
    try {
      await assert.rejects(QmpClient.connect(path.join(dir, 'nope.sock')), (e: unknown) => {
        assert.ok(e instanceof QmpConnectError);
        assert.equal(e.code, 'QMP_CONNECT_FAILED');
        assert.equal((e.cause as NodeJS.ErrnoException).code, 'ENOENT');
        assert.match(e.message, /does not exist/);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('aborts connect through an AbortSignal', T, async () => {
    const ac = new AbortController();
    const pending = QmpClient.connect(server.socketPath, { signal: ac.signal });
    await server.nextPeer();
    ac.abort(new Error('user gave up'));
    await assert.rejects(pending, (e: unknown) => e instanceof QmpAbortedError && (e.cause as Error).message === 'user gave up');
    await assert.rejects(QmpClient.connect(server.socketPath, { signal: AbortSignal.abort() }), QmpAbortedError);
  });
});

describe('execute', () => {
  it('matches concurrent calls to out-of-order replies by id', T, async () => {
    const { client, peer } = await connected();
    const a = client.execute('query-status');
    const b = client.execute('query-balloon');
    const c = client.execute('qom-get', { path: '/machine', property: 'type' });
    const cmds = [await peer.nextCommand(), await peer.nextCommand(), await peer.nextCommand()];
    assert.deepEqual(
      cmds.map((x) => x.execute),
      ['query-status', 'query-balloon', 'qom-get'],
    );
    assert.deepEqual(cmds[2]?.arguments, { path: '/machine', property: 'type' });
    assert.equal(new Set(cmds.map((x) => x.id)).size, 3, 'ids are unique');
    peer.reply(cmds[2]!, 'pc-i440fx-7.2-machine');
    peer.reply(cmds[0]!, { status: 'running', running: true });
    peer.reply(cmds[1]!, { actual: 1 });
    assert.deepEqual(await Promise.all([a, b, c]), [{ status: 'running', running: true }, { actual: 1 }, 'pc-i440fx-7.2-machine']);
    assert.equal(client.pendingCount, 0);
  });

  it('rejects with QmpCommandError carrying class, desc, command and arguments', T, async () => {
    const { client, peer } = await connected();
    const p = client.execute('qom-set', { path: '/machine/peripheral/vm0', property: 'requested-size', value: 'x' });
    peer.replyError(await peer.nextCommand(), 'GenericError', "Parameter 'requested-size' expects uint64");
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof QmpCommandError);
      assert.equal(e.code, 'QMP_COMMAND_FAILED');
      assert.equal(e.errorClass, 'GenericError');
      assert.equal(e.desc, "Parameter 'requested-size' expects uint64");
      assert.equal(e.command, 'qom-set');
      assert.deepEqual(e.args, { path: '/machine/peripheral/vm0', property: 'requested-size', value: 'x' });
      return true;
    });
    assert.equal(client.state, 'running', 'a command error does not hurt the connection');
  });

  it('drops replies with unknown ids (reported to onDebug) and keeps going', T, async () => {
    const debug: QmpDebugEvent[] = [];
    const { client, peer } = await connected({ onDebug: (e) => debug.push(e) });
    const p = client.execute('query-status');
    const cmd = await peer.nextCommand();
    peer.send({ return: { bogus: true }, id: 999_999 });
    peer.send({ return: { bogus: true }, id: 'not-ours' });
    peer.reply(cmd, { status: 'paused', running: false });
    assert.deepEqual(await p, { status: 'paused', running: false });
    assert.deepEqual(
      debug.map((d) => d.kind),
      ['unknown-reply', 'unknown-reply'],
    );
    assert.equal(client.state, 'running');
  });

  it('delivers a reply that arrives one byte at a time, with multi-byte characters', T, async () => {
    const { client, peer } = await connected();
    const p = client.hmp('info name');
    const cmd = await peer.nextCommand();
    assert.deepEqual(cmd, { execute: 'human-monitor-command', arguments: { 'command-line': 'info name' }, id: cmd.id });
    const bytes = Buffer.from(`${JSON.stringify({ return: 'gäst-😀\r\n', id: cmd.id })}\r\n`, 'utf8');
    for (let i = 0; i < bytes.length; i++) peer.sendRaw(bytes.subarray(i, i + 1));
    assert.equal(await p, 'gäst-😀\r\n');
  });

  it('hmp rejects a non-string return with QmpProtocolError', T, async () => {
    const { client, peer } = await connected();
    const p = client.hmp('info balloon');
    peer.reply(await peer.nextCommand(), { not: 'a string' });
    await assert.rejects(p, QmpProtocolError);
  });

  it('on garbage mid-stream: replies before it settle, every other pending call rejects, connection closes', T, async () => {
    const { client, peer } = await connected();
    const first = client.execute('query-status');
    const second = client.execute('query-balloon');
    const third = client.execute('query-kvm');
    const c1 = await peer.nextCommand();
    await peer.nextCommand();
    await peer.nextCommand();
    peer.sendRaw(`${JSON.stringify({ return: 'ok', id: c1.id })}\r\n<html>garbage</html>\r\n`);
    assert.equal(await first, 'ok');
    for (const p of [second, third]) {
      const err = await rejectsDisconnected(p, /no reply to '/);
      assert.ok(err.cause instanceof QmpProtocolError, 'cause says why: protocol error');
      assert.match(err.message, /unparsable QMP line/);
    }
    await bounded(client.closed, 2_000, 'closed');
    assert.equal(client.state, 'closed');
    await assert.rejects(client.execute('query-status'), QmpStateError);
  });

  it('a reply line without end is cut at the default 16 MiB line bound: the call rejects, the connection closes', T, async () => {
    const { client, peer } = await connected();
    const p = client.execute('query-qmp-schema');
    await peer.nextCommand();
    // An endless line from the monitor, written as fast as the client takes it.
    const chunk = Buffer.alloc(1 << 20, 0x61);
    let written = 0;
    void (async () => {
      peer.socket.write('{"return": "');
      while (!peer.socket.destroyed && written < 64 << 20) {
        written += chunk.length;
        if (!peer.socket.write(chunk)) await new Promise((r) => { peer.socket.once('drain', r); peer.socket.once('close', r); });
      }
    })();
    const err = await rejectsDisconnected(p);
    assert.ok(err.cause instanceof QmpProtocolError);
    assert.match(err.message, /QMP line exceeds 16777216 bytes without a line end/);
    await bounded(client.closed, 5_000, 'closed');
    assert.ok(written < 32 << 20, `the client read ${written} bytes before cutting the line`);
  });

  it('treats a reply without id as a protocol error (spec 2.4.2 NOTE: cannot be matched)', T, async () => {
    const { client, peer } = await connected();
    const p = client.execute('query-status');
    await peer.nextCommand();
    peer.send({ error: { class: 'GenericError', desc: 'JSON parse error' } });
    const err = await rejectsDisconnected(p);
    assert.ok(err.cause instanceof QmpProtocolError);
  });

  it('rejects every pending call with QmpDisconnectedError when the peer dies mid-reply', T, async () => {
    const { client, peer } = await connected();
    const calls = [client.execute('query-status'), client.execute('query-balloon'), client.hmp('info balloon')];
    await peer.nextCommand();
    await peer.nextCommand();
    await peer.nextCommand();
    peer.sendRaw(`{"return": {"status": "running", "running": tr`); // half of the first reply
    peer.destroy();
    for (const p of calls) await rejectsDisconnected(p, /QEMU closed the monitor/);
    await bounded(client.closed, 2_000, 'closed');
    assert.equal(client.state, 'closed');
  });

  it('times out with QmpTimeoutError and drops the late reply', T, async () => {
    const debug: QmpDebugEvent[] = [];
    const { client, peer } = await connected({ onDebug: (e) => debug.push(e) });
    const p = client.execute('query-status', undefined, { timeoutMs: 50 });
    const cmd = await peer.nextCommand();
    await assert.rejects(p, (e: unknown) => e instanceof QmpTimeoutError && /no reply to 'query-status' within 50 ms/.test(e.message));
    assert.equal(client.pendingCount, 0);
    // The late reply must not resolve anything else, nor break the connection.
    const next = client.execute('query-balloon');
    const cmd2 = await peer.nextCommand();
    peer.reply(cmd, 'late');
    peer.reply(cmd2, { actual: 42 });
    assert.deepEqual(await next, { actual: 42 });
    assert.deepEqual(debug, [{ kind: 'late-reply', id: cmd.id, command: 'query-status', reply: { return: 'late', id: cmd.id } }]);
    assert.equal(client.state, 'running');
  });

  it('aborts a call through its AbortSignal with QmpAbortedError; the late reply is dropped', T, async () => {
    const debug: QmpDebugEvent[] = [];
    const { client, peer } = await connected({ onDebug: (e) => debug.push(e) });
    const ac = new AbortController();
    const p = client.execute('query-status', undefined, { signal: ac.signal });
    const cmd = await peer.nextCommand();
    ac.abort(new Error('user pressed ^C'));
    await assert.rejects(p, (e: unknown) => e instanceof QmpAbortedError && e.code === 'QMP_ABORTED' && (e.cause as Error).message === 'user pressed ^C');
    peer.reply(cmd, 'late');
    // An already-aborted signal rejects without sending anything.
    await assert.rejects(client.execute('stop', undefined, { signal: AbortSignal.abort() }), QmpAbortedError);
    const p2 = client.execute('cont');
    const cmd2 = await peer.nextCommand();
    assert.equal(cmd2.execute, 'cont', 'the pre-aborted stop was never sent');
    peer.reply(cmd2);
    assert.deepEqual(await p2, {});
    assert.deepEqual(debug.map((d) => d.kind), ['late-reply']);
  });
});

describe('events', () => {
  const SHUTDOWN_DATA = { guest: false, reason: 'host-qmp-quit' };

  it('delivers events to two consumers according to their filters', T, async () => {
    const { client, peer } = await connected();
    const shutdownOnly = client.events({ names: ['SHUTDOWN'] });
    const all = client.events();
    peer.event('STOP');
    peer.event('SHUTDOWN', SHUTDOWN_DATA);
    const got = await shutdownOnly.nextEvent({ timeoutMs: 1_000 });
    assert.equal(got.event, 'SHUTDOWN');
    assert.deepEqual(got.data, SHUTDOWN_DATA);
    assert.deepEqual(got.timestamp, { seconds: 1700000000, microseconds: 1 });
    const a = await all.nextEvent({ timeoutMs: 1_000 });
    const b = await all.nextEvent({ timeoutMs: 1_000 });
    assert.deepEqual([a.event, a.data], ['STOP', {}]);
    assert.equal(b.event, 'SHUTDOWN');
    assert.equal(shutdownOnly.size, 0, 'STOP was filtered out');
  });

  it('a stream registered before the command sees the event the command causes', T, async () => {
    const { client, peer } = await connected();
    const stream = client.events({ names: ['BALLOON_CHANGE'] });
    const p = client.execute('balloon', { value: 268435456 });
    const cmd = await peer.nextCommand();
    // QEMU may emit the event before the reply; the stream must already hold it.
    peer.event('BALLOON_CHANGE', { actual: 268435456 });
    peer.reply(cmd);
    await p;
    assert.deepEqual((await stream.nextEvent({ timeoutMs: 1_000 })).data, { actual: 268435456 });
  });

  it('ends iteration and rejects pending nextEvent with QmpDisconnectedError when QEMU goes away', T, async () => {
    const { client, peer } = await connected();
    const iterated = client.events();
    const waiting = client.events({ names: ['SHUTDOWN'] });
    const seen: string[] = [];
    const loop = (async () => {
      for await (const e of iterated) seen.push(e.event);
    })();
    const pending = waiting.nextEvent({ timeoutMs: 5_000 });
    peer.event('RESUME');
    await bounded(
      (async () => {
        while (seen.length === 0) await new Promise((r) => setImmediate(r));
      })(),
      2_000,
      'RESUME to arrive',
    );
    peer.destroy();
    await bounded(loop, 2_000, 'iteration to end');
    assert.deepEqual(seen, ['RESUME']);
    await rejectsDisconnected(pending);
    assert.throws(() => client.events(), QmpStateError);
  });

  it('a closed stream stops receiving and is unregistered', T, async () => {
    const { client, peer } = await connected();
    const s1 = client.events();
    const s2 = client.events();
    s1.close();
    peer.event('STOP');
    await s2.nextEvent({ timeoutMs: 1_000 });
    assert.equal(s1.size, 0);
    await assert.rejects(s1.nextEvent(), QmpStateError);
  });
});

describe('close and destroy', () => {
  it('close() lets in-flight calls finish, refuses new ones, then ends the socket politely', T, async () => {
    const { client, peer } = await connected();
    const inflight = client.execute('query-status');
    const cmd = await peer.nextCommand();
    const closing = client.close();
    assert.equal(client.state, 'closing');
    await assert.rejects(client.execute('query-balloon'), (e: unknown) => e instanceof QmpStateError && e.code === 'QMP_STATE');
    peer.reply(cmd, { status: 'running', running: true });
    assert.deepEqual(await inflight, { status: 'running', running: true });
    await bounded(closing, 2_000, 'close');
    assert.equal(client.state, 'closed');
    await bounded(peer.gone, 2_000, 'peer to see the hang-up');
    assert.equal(peer.sawEnd, true, 'the client half-closed (FIN), it did not just reset');
    assert.equal(await client.close(), undefined, 'close() is idempotent');
  });

  it('close() gives up on in-flight calls after its bound', T, async () => {
    const { client, peer } = await connected();
    const inflight = client.execute('query-status', undefined, { timeoutMs: 60_000 });
    await peer.nextCommand();
    const closing = client.close({ timeoutMs: 100 });
    const err = await rejectsDisconnected(inflight, /did not finish within 100 ms/);
    assert.ok(err.cause instanceof QmpDisconnectedError);
    await bounded(closing, 2_000, 'close');
    assert.equal(client.state, 'closed');
  });

  it('destroy() rejects in-flight calls now with the given cause', T, async () => {
    const { client, peer } = await connected();
    const a = client.execute('query-status');
    const b = client.execute('query-balloon');
    await peer.nextCommand();
    const why = new Error('domain is being torn down');
    client.destroy(why);
    for (const p of [a, b]) {
      const err = await rejectsDisconnected(p, /destroyed: domain is being torn down/);
      assert.equal((err.cause as QmpDisconnectedError).cause, why);
    }
    await bounded(client.closed, 2_000, 'closed');
    assert.equal(client.state, 'closed');
    client.destroy(); // idempotent
  });

  it('execute and events after close reject with QmpStateError', T, async () => {
    const { client } = await connected();
    await bounded(client.close(), 2_000, 'close');
    await assert.rejects(client.execute('query-status'), (e: unknown) => e instanceof QmpStateError && /closed/.test(e.message));
    await assert.rejects(client.hmp('info status'), QmpStateError);
    assert.throws(() => client.events(), QmpStateError);
  });

  it('closed resolves (never rejects) when QEMU goes away on its own', T, async () => {
    const { client, peer } = await connected();
    const events: QmpEvent[] = [];
    const s = client.events();
    peer.event('SHUTDOWN', { guest: true, reason: 'guest-shutdown' });
    events.push(await s.nextEvent({ timeoutMs: 1_000 }));
    peer.destroy();
    await bounded(client.closed, 2_000, 'closed');
    assert.equal(client.state, 'closed');
    assert.equal(events[0]?.event, 'SHUTDOWN');
  });
});
