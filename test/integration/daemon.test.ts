/**
 * virtmemd against a real TCG guest (issue 9, parts 1 and 2): the live model, the event stream,
 * set memory with 200/202 and operations, the bad-input matrix, TCP token/Host/Origin checks,
 * 20 concurrent clients, and a daemon restart that re-attaches while the guest keeps running.
 * Every JSON answer is checked against docs/openapi.json.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { sandbox } from '../helpers/cli.js';
import { openEvents, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { assertConforms } from '../helpers/openapi.js';
import { GuestAgent } from '../../src/guest/agent.js';
import { daemonRequest, closeDaemonClients, type DaemonTarget, type DaemonAnswer } from '../../src/driver/remote/http-client.js';
import { DaemonRpcClient } from '../../src/driver/remote/rpc-client.js';

const MiB = 1024 * 1024;
const DOM = 'dm';
const sb = await sandbox();
let d: RunningDaemon | null = null;
after(async () => {
  closeDaemonClients();
  await d?.stop();
  await sb.cleanup();
});

const unix = (): DaemonTarget => ({ socketPath: d!.socketPath });
const tcpToken = async (): Promise<string> => (await readFile(join(sb.stateDir, 'virtmemd.token'), 'utf8')).trim();

/** A request whose answer must match the contract for `template`. */
async function call(method: string, path: string, template: string, body?: unknown): Promise<DaemonAnswer> {
  const r = await daemonRequest(unix(), method, `/api/v1${path}`, body === undefined ? {} : { body });
  assertConforms(method, template, r.status, r.body);
  return r;
}
const guest = async (): Promise<Record<string, any>> => (await call('GET', `/domains/${DOM}`, '/domains/{name}')).body as Record<string, any>;
const pidOf = async (): Promise<number> => (JSON.parse(await readFile(join(sb.stateDir, 'run', DOM, 'status.json'), 'utf8')) as { pid: number }).pid;

/** Polls `fn` until it returns true; bounded. */
async function until(what: string, fn: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}


before(async () => {
  await sb.ok('new', DOM, '--accel', 'tcg', '--memory', '512M', '--max-memory', '1G');
  await sb.ok('start', DOM);
  await sb.ok('dommemstat', DOM, '--period', '1');
  // Booted far enough for virtio-mem: the guest's driver directory exists (bounded poll).
  const a = await GuestAgent.connect(join(sb.stateDir, 'run', DOM, 'agent.sock'), { timeoutMs: 180_000 });
  try {
    await until('the guest\'s virtio_mem driver', async () => (await a.run('[ -d /sys/bus/virtio/drivers/virtio_mem ] && echo yes || echo no')).output.trim() === 'yes', 180_000);
  } finally {
    a.close();
  }
  d = await startDaemon(sb.stateDir, ['--listen', 'tcp:127.0.0.1:0']);
});

describe('virtmemd with one running guest', () => {
  test('the socket is owner-only; list, guest, host, stats answer from the live model', async () => {
    const st = await stat(d!.socketPath);
    assert.equal(st.mode & 0o777, 0o600);
    const list = await call('GET', '/domains', '/domains');
    assert.deepEqual((list.body as any).domains.map((x: any) => [x.name, x.state]), [[DOM, 'running']]);
    await until('the monitor connected and guest statistics', async () => {
      const g = await guest();
      return g.monitor === 'connected' && typeof g.stats.usableBytes === 'number';
    });
    const g = await guest();
    assert.equal(g.memory.bootBytes, 512 * MiB);
    assert.equal(g.memory.totalBytes, 512 * MiB);
    assert.equal(g.maxMemoryBytes, 1024 * MiB);
    assert.ok(g.stats.rssBytes > 0);
    const host = await call('GET', '/host', '/host');
    assert.ok((host.body as any).memTotalBytes > 0);
    assert.equal((host.body as any).guests, 1);
    const sweep = await call('GET', '/stats', '/stats');
    assert.equal((sweep.body as any).guests.length, 1);
    await call('GET', `/domains/${DOM}/history`, '/domains/{name}/history');
  });

  test('a setmem done from the CLI shows in the model and as an SSE event', async () => {
    const sse = openEvents(unix());
    await sse.ready;
    try {
      await sb.ok('setmem', DOM, '640M', '--wait', '--timeout', '120');
      await until('the model at 640 MiB', async () => (await guest()).memory.totalBytes === 640 * MiB);
      await until('an SSE memory event at 640 MiB', async () => sse.events.some((e) => e.type === 'memory' && e.data.name === DOM && e.data.memory.totalBytes === 640 * MiB));
      const ev = sse.events.find((e) => e.type === 'memory' && e.data.memory.totalBytes === 640 * MiB)!;
      assertConforms('GET', '/domains/{name}', 200, ev.data);
      await until('the target the CLI set, from the run record', async () => (await guest()).memory.targetBytes === 640 * MiB);
      // The CLI's wait went through the daemon: an operation of its own on the stream.
      assert.ok(sse.events.some((e) => e.type === 'operation' && e.data.domain === DOM && e.data.targetBytes === 640 * MiB && e.data.state === 'succeeded'), 'setmem --wait through the daemon');
    } finally {
      sse.stop();
    }
  });

  test('set memory: 202 with an operation that reaches its target, then 200 when already there', async () => {
    const sse = openEvents(unix());
    await sse.ready;
    try {
      const r = await call('PUT', `/domains/${DOM}/memory`, '/domains/{name}/memory', { targetBytes: 896 * MiB });
      assert.ok(r.status === 202 || r.status === 200, `status ${r.status}`);
      const op = (r.body as any).operation;
      assert.equal(op.targetBytes, 896 * MiB);
      if (r.status === 202) assert.equal(r.headers.location, `/api/v1/operations/${op.id}`);
      await until('the operation succeeded', async () => {
        const o = await call('GET', `/operations/${op.id}`, '/operations/{id}');
        return (o.body as any).operation.state === 'succeeded';
      });
      assert.equal((await guest()).memory.totalBytes, 896 * MiB);
      assert.ok(sse.events.some((e) => e.type === 'operation' && e.data.id === op.id && e.data.state === 'succeeded'), 'operation events on the stream');
      const again = await call('PUT', `/domains/${DOM}/memory`, '/domains/{name}/memory', { targetBytes: 896 * MiB });
      assert.equal(again.status, 200);
      assert.equal((again.body as any).operation.state, 'succeeded');
      // waitMs: the answer comes when the guest got there.
      const waited = await call('PUT', `/domains/${DOM}/memory`, '/domains/{name}/memory', { targetBytes: 512 * MiB, waitMs: 120_000 });
      assert.equal(waited.status, 200);
      assert.equal((waited.body as any).operation.actualBytes, 512 * MiB);
      const cli = await sb.ok('dominfo', DOM);
      assert.match(cli, /^Used memory:\s+524288 KiB$/m);
    } finally {
      sse.stop();
    }
  });

  test('stats period and max memory through the API', async () => {
    const r = await call('PUT', `/domains/${DOM}/stats-period`, '/domains/{name}/stats-period', { periodS: 2, live: true });
    assert.deepEqual(r.body, { periodS: 2, live: true, config: false });
    assert.equal((await guest()).stats.periodS, 2);
    const refused = await call('PUT', `/domains/${DOM}/max-memory`, '/domains/{name}/max-memory', { maxBytes: 2048 * MiB, live: true });
    assert.equal(refused.status, 409, 'no hot-plug ceiling beyond 1 GiB: refused with the reason');
    assert.match((refused.body as any).error.message, /hot-plug/);
  });

  test('the RPC socket: owner-only, the same answers and errors as HTTP, calls overlapping on one connection', async () => {
    const path = join(sb.stateDir, 'virtmemd-rpc.sock');
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const rpc = new DaemonRpcClient(path);
    try {
      const viaHttp = (await call('GET', `/domains/${DOM}/info`, '/domains/{name}/info')).body as Record<string, any>;
      const viaRpc = await rpc.call('GET', `/api/v1/domains/${DOM}/info`);
      assertConforms('GET', '/domains/{name}/info', viaRpc.status, viaRpc.body);
      const info = viaRpc.body as Record<string, any>;
      assert.equal(info.name, DOM);
      assert.deepEqual(info.memory, viaHttp.memory);
      assert.equal(info.maxMemoryBytes, viaHttp.maxMemoryBytes);
      const many = await Promise.all(Array.from({ length: 20 }, () => rpc.call('GET', `/api/v1/domains/${DOM}`)));
      for (const r of many) { assert.equal(r.status, 200); assert.equal((r.body as any).name, DOM); }
      const bad = await rpc.call('PUT', `/api/v1/domains/${DOM}/memory`, { targetBytes: '512M' });
      assert.equal(bad.status, 400);
      assert.deepEqual([(bad.body as any).error.code, (bad.body as any).error.field], ['INVALID_FIELD', 'targetBytes']);
      const none = await rpc.call('GET', '/api/v1/domains/nosuch/info');
      assert.equal(none.status, 404);
      assert.equal((none.body as any).error.code, 'NO_DOMAIN');
      const wrong = await rpc.call('POST', `/api/v1/domains/${DOM}/memory`, { targetBytes: 536870912 });
      assert.equal(wrong.status, 405);
      assert.equal(wrong.headers.allow, 'PUT');
      const grown = await rpc.call('PUT', `/api/v1/domains/${DOM}/memory`, { targetBytes: 768 * MiB, waitMs: 120_000 });
      assertConforms('PUT', '/domains/{name}/memory', grown.status, grown.body);
      assert.equal(grown.status, 200, grown.text);
      assert.equal((grown.body as any).operation.actualBytes, 768 * MiB);
      assert.match(await sb.ok('dominfo', DOM), /^Used memory:\s+786432 KiB$/m);
      const back = await rpc.call('PUT', `/api/v1/domains/${DOM}/memory`, { targetBytes: 512 * MiB, waitMs: 120_000 });
      assert.equal(back.status, 200, back.text);
      assert.equal((await guest()).memory.totalBytes, 512 * MiB);
    } finally {
      rpc.close();
    }
  });

  test('memmap and translate through the API', async () => {
    const map = await call('GET', `/domains/${DOM}/memmap`, '/domains/{name}/memmap');
    assert.equal(map.status, 200);
    assert.ok((map.body as any).regions.some((r: any) => r.kind === 'ram'), 'the map has RAM');
    const info = await daemonRequest(unix(), 'POST', `/api/v1/domains/${DOM}/translate`, { body: { address: '0x0', cpu: 0 } });
    assertConforms('POST', '/domains/{name}/translate', info.status, info.body);
    assert.equal(info.status, 200, info.text);
    assert.equal((info.body as any).gva, '0x0');
    assert.equal(typeof (info.body as any).mapped, 'boolean');
  });

  test('bad input: each a 4xx naming the problem, nothing changed', async () => {
    const before = await guest();
    const put = (body: string, headers: Record<string, string> = {}, path = `/api/v1/domains/${DOM}/memory`): Promise<DaemonAnswer> =>
      daemonRequest(unix(), 'PUT', path, { rawBody: body, headers: { 'content-type': 'application/json', ...headers } });
    const cases: Array<[string, () => Promise<DaemonAnswer>, number, string, string | null]> = [
      ['malformed JSON', () => put('{"targetBytes": '), 400, 'BAD_JSON', null],
      ['unknown field', () => put('{"targetBytes": 536870912, "size": 1}'), 400, 'UNKNOWN_FIELD', 'size'],
      ['wrong type', () => put('{"targetBytes": "512M"}'), 400, 'INVALID_FIELD', 'targetBytes'],
      ['negative', () => put('{"targetBytes": -1}'), 400, 'INVALID_FIELD', 'targetBytes'],
      ['fraction', () => put('{"targetBytes": 1.5}'), 400, 'INVALID_FIELD', 'targetBytes'],
      ['above the maximum', () => put(JSON.stringify({ targetBytes: 4096 * MiB })), 400, 'INVALID_ARG', 'targetBytes'],
      ['below the floor', () => put(JSON.stringify({ targetBytes: 1024 })), 400, 'INVALID_ARG', 'targetBytes'],
      ['not KiB aligned', () => put(JSON.stringify({ targetBytes: 536870913 })), 400, 'INVALID_ARG', 'targetBytes'],
      ['missing field', () => put('{}'), 400, 'MISSING_FIELD', 'targetBytes'],
      ['not JSON content type', () => put('{"targetBytes": 536870912}', { 'content-type': 'text/plain' }), 415, 'BAD_CONTENT_TYPE', null],
      ['huge body', () => put(JSON.stringify({ targetBytes: 536870912, pad: 'x'.repeat(200_000) })), 413, 'BODY_TOO_LARGE', null],
      ['path trick in the name', () => put('{"targetBytes": 536870912}', {}, '/api/v1/domains/..%2F..%2Fetc/memory'), 400, 'INVALID_FIELD', 'name'],
      ['no such domain', () => put('{"targetBytes": 536870912}', {}, '/api/v1/domains/nosuch/memory'), 404, 'NO_DOMAIN', null],
      ['dot-dot path', () => daemonRequest(unix(), 'GET', '/api/v1/domains/../../etc/passwd'), 404, 'NOT_FOUND', null],
      ['unknown query', () => daemonRequest(unix(), 'GET', `/api/v1/domains/${DOM}?x=1`), 400, 'UNKNOWN_FIELD', 'query.x'],
      ['wrong method', () => daemonRequest(unix(), 'DELETE', `/api/v1/domains/${DOM}`), 405, 'METHOD_NOT_ALLOWED', null],
      ['bad operation id', () => daemonRequest(unix(), 'GET', '/api/v1/operations/..%2Fx'), 400, 'INVALID_FIELD', 'id'],
      ['foreign Origin on the socket', () => daemonRequest(unix(), 'PUT', `/api/v1/domains/${DOM}/memory`, { body: { targetBytes: 536870912 }, headers: { origin: 'http://evil.example' } }), 403, 'FORBIDDEN_ORIGIN', null],
      ['bad translate address', () => daemonRequest(unix(), 'POST', `/api/v1/domains/${DOM}/translate`, { body: { address: 'zz' } }), 400, 'INVALID_FIELD', 'address'],
      ['stats period out of range', () => daemonRequest(unix(), 'PUT', `/api/v1/domains/${DOM}/stats-period`, { body: { periodS: -1 } }), 400, 'INVALID_FIELD', 'periodS'],
    ];
    for (const [what, send, status, code, field] of cases) {
      const r = await send();
      assert.equal(r.status, status, `${what}: ${r.text}`);
      const e = (r.body as any).error;
      assert.equal(e.code, code, `${what}: ${r.text}`);
      assert.ok(e.message.length > 10, what);
      if (field) assert.equal(e.field, field, `${what}: ${r.text}`);
      assertConforms('GET', '/domains/{name}', 404, { error: e }); // every error body has the documented shape
    }
    const after = await guest();
    assert.equal(after.memory.targetBytes, before.memory.targetBytes, 'nothing changed');
    assert.equal(after.memory.totalBytes, before.memory.totalBytes, 'nothing changed');
    assert.equal(after.stats.periodS, before.stats.periodS);
  });

  test('a slow client is cut off; others are answered meanwhile', async () => {
    const { createConnection } = await import('node:net');
    const slow = createConnection(d!.socketPath);
    await new Promise((r) => slow.once('connect', r));
    slow.write('PUT /api/v1/domains/dm/memory HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{"target');
    let answer = '';
    slow.setEncoding('utf8').on('data', (c: string) => { answer += c; });
    const closed = new Promise((r) => slow.once('close', r));
    assert.equal((await call('GET', '/domains', '/domains')).status, 200, 'answered while the slow client dawdles');
    await closed;
    assert.match(answer, /^HTTP\/1\.1 408/, `answer to the slow client: ${answer}`);
  });

  test('TCP: token, Host and Origin are checked', async () => {
    const token = await tcpToken();
    const t: DaemonTarget = { host: '127.0.0.1', port: d!.port!, token };
    const ok = await daemonRequest(t, 'GET', '/api/v1/domains');
    assert.equal(ok.status, 200);
    const noToken = await daemonRequest({ ...t, token: '' }, 'GET', '/api/v1/domains');
    assert.equal(noToken.status, 401);
    assert.equal((noToken.body as any).error.code, 'UNAUTHORIZED');
    const wrong = await daemonRequest({ ...t, token: 'x'.repeat(32) }, 'PUT', `/api/v1/domains/${DOM}/memory`, { body: { targetBytes: 600 * MiB } });
    assert.equal(wrong.status, 401);
    const rebinding = await daemonRequest(t, 'GET', '/api/v1/domains', { headers: { host: `attacker.example:${d!.port}` } });
    assert.equal(rebinding.status, 403);
    assert.equal((rebinding.body as any).error.code, 'FORBIDDEN_HOST');
    const csrf = await daemonRequest(t, 'PUT', `/api/v1/domains/${DOM}/memory`, { body: { targetBytes: 600 * MiB }, headers: { origin: 'http://attacker.example' } });
    assert.equal(csrf.status, 403);
    assert.equal((csrf.body as any).error.code, 'FORBIDDEN_ORIGIN');
    const own = await daemonRequest(t, 'GET', '/api/v1/host', { headers: { origin: `http://127.0.0.1:${d!.port}` } });
    assert.equal(own.status, 200);
    const metrics = await daemonRequest({ ...t, token: '' }, 'GET', '/metrics');
    assert.equal(metrics.status, 401, '/metrics is behind the token too');
    const cookie = await daemonRequest({ host: '127.0.0.1', port: d!.port! }, 'GET', `/?token=${encodeURIComponent(token)}`);
    assert.equal(cookie.status, 303);
    assert.match(String(cookie.headers['set-cookie']), /virtmem_token=.+; HttpOnly; SameSite=Strict/);
    assert.equal((await guest()).memory.targetBytes, 512 * MiB, 'refused requests changed nothing');
  });

  test('20 concurrent clients changing and reading the same guest: all answered, the last target wins', async () => {
    const targets = Array.from({ length: 10 }, (_, i) => (520 + 8 * i) * MiB);
    const writes = targets.map((targetBytes) => daemonRequest(unix(), 'PUT', `/api/v1/domains/${DOM}/memory`, { body: { targetBytes }, timeoutMs: 120_000 }));
    const reads = Array.from({ length: 10 }, () => daemonRequest(unix(), 'GET', `/api/v1/domains/${DOM}`, { timeoutMs: 120_000 }));
    const answers = await Promise.all([...writes, ...reads]);
    for (const a of answers.slice(0, 10)) assert.ok(a.status === 200 || a.status === 202, a.text);
    for (const a of answers.slice(10)) assert.equal(a.status, 200, a.text);
    // The operations the writes started: each one ended or superseded, none left waiting forever.
    const ops = answers.slice(0, 10).map((a) => (a.body as any).operation);
    const lastOp = ops.reduce((x, y) => (Number(x.id.slice(3)) > Number(y.id.slice(3)) ? x : y));
    await until('the last operation succeeded', async () => (((await call('GET', `/operations/${lastOp.id}`, '/operations/{id}')).body as any).operation.state === 'succeeded'));
    for (const op of ops) {
      const o = ((await call('GET', `/operations/${op.id}`, '/operations/{id}')).body as any).operation;
      assert.notEqual(o.state, 'running', `${op.id} still running`);
    }
    const g = await guest();
    assert.equal(g.memory.targetBytes, lastOp.targetBytes, 'no lost update: the target of the last write');
    await until('the guest at that target', async () => (await guest()).memory.totalBytes === lastOp.targetBytes);
    const rec = JSON.parse(await readFile(join(sb.stateDir, 'run', DOM, 'status.json'), 'utf8')) as { live: { memory: { currentKiB: number } } };
    assert.equal(rec.live.memory.currentKiB * 1024, lastOp.targetBytes, 'the run record agrees');
  });

  test('the CLI goes through the daemon when it runs, with the same output as without it', async () => {
    const direct = { VIRTMEM_DAEMON: '0' };
    const { runCli } = await import('../helpers/cli.js');
    const both = async (...args: string[]): Promise<[string, string]> => {
      const via = await runCli(['--state-dir', sb.stateDir, ...args]);
      const plain = await runCli(['--state-dir', sb.stateDir, ...args], { env: direct });
      assert.equal(via.code, plain.code, `${args.join(' ')}: ${via.stderr} / ${plain.stderr}`);
      assert.equal(via.stderr, plain.stderr, args.join(' '));
      return [via.stdout, plain.stdout];
    };
    assertConforms('GET', '/domains/{name}/info', 200, (await daemonRequest(unix(), 'GET', `/api/v1/domains/${DOM}/info`)).body);
    assertConforms('GET', '/domains/{name}/memory-stats', 200, (await daemonRequest(unix(), 'GET', `/api/v1/domains/${DOM}/memory-stats`)).body);
    for (const args of [['dominfo', DOM], ['dominfo', DOM, '--json'], ['list', '--all'], ['list', '--all', '--json'], ['dominfo', 'nosuch']]) {
      const [via, plain] = await both(...args);
      assert.equal(via.replace(/^CPU time:.*$/m, '').replace(/"cpuTimeS": [0-9.]+/, ''), plain.replace(/^CPU time:.*$/m, '').replace(/"cpuTimeS": [0-9.]+/, ''), args.join(' '));
    }
    // dommemstat: the same statistics in the same order (values move with the guest).
    const [viaStats, plainStats] = await both('dommemstat', DOM);
    assert.deepEqual(viaStats.split('\n').map((l) => l.split(' ')[0]), plainStats.split('\n').map((l) => l.split(' ')[0]));
    // A plain setmem through the daemon: the daemon starts the operation, the CLI prints what it always prints.
    const opsBefore = Number(/^virtmem_daemon_operations_started_total (\d+)$/m.exec((await daemonRequest(unix(), 'GET', '/metrics')).text)![1]);
    const r = await runCli(['--state-dir', sb.stateDir, 'setmem', DOM, '600M']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '\n');
    const opsAfter = Number(/^virtmem_daemon_operations_started_total (\d+)$/m.exec((await daemonRequest(unix(), 'GET', '/metrics')).text)![1]);
    assert.equal(opsAfter, opsBefore + 1, 'the change went through the daemon');
    await until('the guest at 600 MiB', async () => (await guest()).memory.totalBytes === 600 * MiB);
    // Refusals keep the driver's words.
    const [refusedVia, refusedPlain] = await both('setmem', DOM, '8G');
    assert.equal(refusedVia, refusedPlain);
  });

  test('restart: the daemon re-attaches while the guest keeps running', async () => {
    const pid = await pidOf();
    const target = (await guest()).memory.targetBytes as number;
    assert.equal(await d!.stop(), 0, `clean exit: ${d!.stderr()}`);
    // The guest outlives the daemon; the CLI works without it.
    assert.match(await sb.ok('domstate', DOM), /^running$/m);
    await sb.ok('setmem', DOM, '560M', '--wait', '--timeout', '120');
    d = await startDaemon(sb.stateDir, ['--listen', 'tcp:127.0.0.1:0']);
    await until('re-attached', async () => (await guest()).monitor === 'connected');
    const g = await guest();
    assert.equal(g.qemuPid, pid, 'same QEMU');
    assert.equal(g.memory.totalBytes, 560 * MiB, 'the change made while it was down is seen');
    assert.notEqual(target, 560 * MiB);
    const r = await call('PUT', `/domains/${DOM}/memory`, '/domains/{name}/memory', { targetBytes: 512 * MiB, waitMs: 120_000 });
    assert.equal(r.status, 200);
  });

  test('a guest that goes away is reported shut off', async () => {
    const sse = openEvents(unix());
    await sse.ready;
    try {
      await sb.ok('destroy', DOM);
      await until('a state event', async () => sse.events.some((e) => e.type === 'state' && e.data.name === DOM && e.data.state === 'shutoff'));
      await until('listed as shut off', async () => ((await call('GET', '/domains', '/domains')).body as any).domains[0].state === 'shutoff');
      const g = await call('GET', `/domains/${DOM}`, '/domains/{name}');
      assert.equal((g.body as any).state, 'shutoff');
      const r = await daemonRequest(unix(), 'PUT', `/api/v1/domains/${DOM}/memory`, { body: { targetBytes: 512 * MiB } });
      assert.equal(r.status, 409);
      assert.match((r.body as any).error.message, /not running/);
    } finally {
      sse.stop();
    }
  });
});
