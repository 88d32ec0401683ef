/** The HTTP layer's pure parts: strict validation, router, guard, metrics formatting. */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseJsonBody, checkQuery, type BodySpec } from '../../src/http/validate.js';
import { Router } from '../../src/http/router.js';
import { checkRequest, cookieToken, allowedHosts } from '../../src/http/guard.js';
import { HttpError, toHttpError } from '../../src/http/errors.js';
import { VirtError } from '../../src/domain/errors.js';
import { formatMetrics, escapeLabel } from '../../src/http/metrics.js';
import { viewFromDefinition as modelFromDefinition } from '../../src/driver/view.js';
import { applyGuestStats } from '../../src/driver/native/qmp-view.js';
import type { DomainDef } from '../../src/domain/definition.js';

const SPEC: BodySpec = {
  targetBytes: { type: 'integer', min: 1, max: Number.MAX_SAFE_INTEGER, required: true, unit: 'bytes' },
  force: { type: 'boolean' },
};

function refused(fn: () => unknown, status: number, code: string, field?: string): HttpError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof HttpError, `expected HttpError, got ${String(err)}`);
    assert.equal(err.status, status);
    assert.equal(err.code, code);
    if (field !== undefined) { assert.equal(err.field, field); assert.ok(err.message.includes(field) || err.message.includes(`'${field.split('.').pop()!}'`), `message names ${field}: ${err.message}`); }
    return err;
  }
  assert.fail('not refused');
}

describe('strict JSON bodies', () => {
  test('a good body passes, unknown fields are refused by name', () => {
    assert.deepEqual(parseJsonBody('{"targetBytes": 1048576}', SPEC), { targetBytes: 1048576 });
    refused(() => parseJsonBody('{"targetBytes": 1048576, "targetKiB": 1}', SPEC), 400, 'UNKNOWN_FIELD', 'targetKiB');
  });
  test('malformed JSON and non-objects', () => {
    refused(() => parseJsonBody('{"targetBytes": ', SPEC), 400, 'BAD_JSON');
    refused(() => parseJsonBody('[1]', SPEC), 400, 'BAD_JSON');
    refused(() => parseJsonBody('null', SPEC), 400, 'BAD_JSON');
  });
  test('wrong types, fractions, out of range, missing: each names the field', () => {
    const e = refused(() => parseJsonBody('{"targetBytes": "1G"}', SPEC), 400, 'INVALID_FIELD', 'targetBytes');
    assert.match(e.message, /expected an integer number of bytes, got a string/);
    refused(() => parseJsonBody('{"targetBytes": 1.5}', SPEC), 400, 'INVALID_FIELD', 'targetBytes');
    refused(() => parseJsonBody('{"targetBytes": 0}', SPEC), 400, 'INVALID_FIELD', 'targetBytes');
    refused(() => parseJsonBody('{"targetBytes": -5}', SPEC), 400, 'INVALID_FIELD', 'targetBytes');
    refused(() => parseJsonBody('{"targetBytes": 1e400}', SPEC), 400, 'INVALID_FIELD', 'targetBytes');
    refused(() => parseJsonBody('{"targetBytes": 18446744073709551616}', SPEC), 400, 'INVALID_FIELD', 'targetBytes');
    refused(() => parseJsonBody('{"targetBytes": 1024, "force": "yes"}', SPEC), 400, 'INVALID_FIELD', 'force');
    refused(() => parseJsonBody('{}', SPEC), 400, 'MISSING_FIELD', 'targetBytes');
  });
  test('query parameters: known, once, decimal', () => {
    assert.deepEqual(checkQuery(new URLSearchParams('sinceS=12.5'), { sinceS: { min: 0, max: 1e12 } }), { sinceS: 12.5 });
    refused(() => checkQuery(new URLSearchParams('x=1'), { sinceS: { min: 0, max: 1 } }), 400, 'UNKNOWN_FIELD', 'query.x');
    refused(() => checkQuery(new URLSearchParams('sinceS=1&sinceS=2'), { sinceS: { min: 0, max: 9 } }), 400, 'INVALID_FIELD', 'query.sinceS');
    refused(() => checkQuery(new URLSearchParams('sinceS=-1'), { sinceS: { min: 0, max: 9 } }), 400, 'INVALID_FIELD', 'query.sinceS');
  });
});

describe('router', () => {
  const r = new Router<string>().add('GET', '/domains', 'list').add('GET', '/domains/:name', 'one').add('PUT', '/domains/:name/memory', 'setmem');
  test('matches and decodes parameters', () => {
    assert.equal(r.match('GET', '/domains').route.handler, 'list');
    assert.deepEqual(r.match('GET', '/domains/a%2Bb').params, { name: 'a+b' });
    assert.equal(r.match('HEAD', '/domains').route.handler, 'list');
  });
  test('path tricks stay one segment or find nothing', () => {
    // An encoded slash is a character of the name (the handler refuses it as a name), never a path step.
    assert.deepEqual(r.match('GET', '/domains/..%2F..%2Fetc').params, { name: '../../etc' });
    refused(() => r.match('GET', '/domains/../secrets'), 404, 'NOT_FOUND');
    refused(() => r.match('GET', '/domains/'), 404, 'NOT_FOUND');
    refused(() => r.match('GET', '/domains/%E0%A4%A'), 400, 'INVALID_FIELD', 'path');
  });
  test('wrong method: 405 with the allowed ones', () => {
    const e = refused(() => r.match('DELETE', '/domains/x'), 405, 'METHOD_NOT_ALLOWED');
    assert.equal((e as unknown as { allow: string }).allow, 'GET');
  });
  test('a path matched again (from the cache) gets its own route and parameters, and a refusal stays one', () => {
    for (let i = 0; i < 2; i++) {
      assert.deepEqual(r.match('PUT', '/domains/a/memory').params, { name: 'a' });
      assert.equal(r.match('PUT', '/domains/a/memory').route.handler, 'setmem');
      assert.deepEqual(r.match('GET', '/domains/b').params, { name: 'b' });
      assert.equal(r.match('GET', '/domains/b').route.handler, 'one');
      refused(() => r.match('PUT', '/domains/b'), 405, 'METHOD_NOT_ALLOWED');
      refused(() => r.match('GET', '/domains/b/nothing'), 404, 'NOT_FOUND');
    }
    // Shared by every request of the path, so no handler can change them.
    assert.ok(Object.isFrozen(r.match('GET', '/domains/b').params));
    // More paths than the cache holds: each still matches as it should.
    for (let i = 0; i < 2500; i++) assert.equal(r.match('GET', `/domains/g${i % 1300}`).params.name, `g${i % 1300}`);
    // A route added later is found for a path matched before it.
    const late = new Router<string>().add('GET', '/x/:name', 'one');
    refused(() => late.match('GET', '/x/a/y'), 404, 'NOT_FOUND');
    late.add('GET', '/x/:name/y', 'late');
    assert.equal(late.match('GET', '/x/a/y').route.handler, 'late');
  });
});

describe('guard', () => {
  const tcp = { kind: 'tcp' as const, port: 8123 };
  const base = { listener: tcp, token: 'sekrit-token-0123456789', host: '127.0.0.1:8123', origin: undefined, authorization: 'Bearer sekrit-token-0123456789', cookie: undefined };
  test('the right token on the right host passes; the cookie works too', () => {
    checkRequest(base);
    checkRequest({ ...base, authorization: undefined, cookie: 'a=b; virtmem_token=sekrit-token-0123456789' });
    checkRequest({ ...base, host: 'localhost:8123', origin: 'http://localhost:8123' });
  });
  test('missing or wrong token: 401', () => {
    refused(() => checkRequest({ ...base, authorization: undefined }), 401, 'UNAUTHORIZED');
    refused(() => checkRequest({ ...base, authorization: 'Bearer nope' }), 401, 'UNAUTHORIZED');
    refused(() => checkRequest({ ...base, authorization: 'Basic c2Vrcml0' }), 401, 'UNAUTHORIZED');
  });
  test('DNS rebinding (foreign Host) and CSRF (foreign Origin): 403', () => {
    refused(() => checkRequest({ ...base, host: 'evil.example:8123' }), 403, 'FORBIDDEN_HOST');
    refused(() => checkRequest({ ...base, host: '127.0.0.1:9999' }), 403, 'FORBIDDEN_HOST');
    refused(() => checkRequest({ ...base, host: undefined }), 403, 'FORBIDDEN_HOST');
    refused(() => checkRequest({ ...base, origin: 'http://evil.example' }), 403, 'FORBIDDEN_ORIGIN');
    refused(() => checkRequest({ ...base, origin: 'null' }), 403, 'FORBIDDEN_ORIGIN');
  });
  test('unix socket without a token: only Origin is checked', () => {
    checkRequest({ ...base, listener: { kind: 'unix' }, token: null, host: 'whatever', authorization: undefined });
    refused(() => checkRequest({ ...base, listener: { kind: 'unix' }, token: null, origin: 'http://evil.example' }), 403, 'FORBIDDEN_ORIGIN');
  });
  test('helpers', () => {
    assert.equal(cookieToken('x=1; virtmem_token=a=b'), 'a=b');
    assert.equal(cookieToken(undefined), null);
    assert.deepEqual(allowedHosts(tcp), ['localhost:8123', '127.0.0.1:8123', '[::1]:8123']);
  });
});

describe('errors map to status codes in one place', () => {
  test('driver codes', () => {
    assert.equal(toHttpError(new VirtError('NO_DOMAIN', 'x')).status, 404);
    assert.equal(toHttpError(new VirtError('OPERATION_INVALID', 'x')).status, 409);
    const e = toHttpError(new VirtError('INVALID_ARG', 'too big'), 'targetBytes');
    assert.equal(e.status, 400);
    assert.equal(e.field, 'targetBytes');
    assert.equal(toHttpError(new Error('boom')).status, 500);
  });
});

const DEF = {
  schemaVersion: 1, name: 'g"1', uuid: '00000000-0000-0000-0000-000000000001', vcpus: 1,
  memory: { maxKiB: 1048576, currentKiB: 524288 },
  memoryDevices: [{ model: 'virtio-mem', sizeKiB: 524288, blockKiB: 2048, requestedKiB: 0 }],
  os: {}, disks: [], balloon: { model: 'virtio', autodeflate: true, freePageReporting: true, statsPeriodS: 5 },
} as unknown as DomainDef;

describe('metrics text', () => {
  test('format 0.0.4: HELP/TYPE per family, escaped labels, counters _total, unreported stats absent', () => {
    const m = modelFromDefinition(DEF, { id: 1, state: 'running', pid: 42 }, 1000);
    m.monitor = 'connected';
    const text = formatMetrics({ guests: [{ view: m }, { host: 'qemu:///system', view: { ...m, name: 'lv' } }], host: { memTotalBytes: 100, memAvailableBytes: 50, swapTotalBytes: null, swapFreeBytes: null, psi: null, sampledAtS: 1 }, daemon: { startedAtS: 1, operationsStarted: 0, sseClients: 0, httpRequests: 3 }, nowS: 1001 });
    assert.match(text, /^# HELP virtmem_guest_memory_bytes .+\n# TYPE virtmem_guest_memory_bytes gauge\nvirtmem_guest_memory_bytes\{domain="g\\"1"\} 536870912$/m);
    assert.match(text, /^virtmem_guest_up\{domain="g\\"1"\} 1$/m);
    // A libvirt host's guest: the same names, with a host label.
    assert.match(text, /^virtmem_guest_memory_bytes\{host="qemu:\/\/\/system",domain="lv"\} 536870912$/m);
    assert.doesNotMatch(text, /virtmem_guest_mem_available_bytes/, 'never reported: absent, not 0');
    assert.doesNotMatch(text, /virtmem_host_swap/);
    assert.doesNotMatch(text, /virtmem_guest_qemu_rss_bytes/);
    for (const line of text.trimEnd().split('\n')) {
      assert.match(line, /^(# (HELP|TYPE) virtmem_[a-z0-9_]+ .+|virtmem_[a-z0-9_]+(\{(host="(?:[^"\\]|\\.)*",)?domain="(?:[^"\\]|\\.)*"\})? -?[0-9.e+]+)$/, line);
    }
    for (const m2 of text.matchAll(/^# TYPE (\S+) counter$/gm)) assert.match(m2[1]!, /_total$/);
    applyGuestStats(m, { stats: { 'stat-available-memory': 4096, 'stat-total-memory': -1, 'stat-minor-faults': 7 }, lastUpdate: 999 }, 1001);
    const t2 = formatMetrics({ guests: [{ view: m }], host: { memTotalBytes: null, memAvailableBytes: null, swapTotalBytes: null, swapFreeBytes: null, psi: null, sampledAtS: 1 }, daemon: { startedAtS: 1, operationsStarted: 0, sseClients: 0, httpRequests: 3 }, nowS: 1001 });
    assert.match(t2, /^virtmem_guest_mem_available_bytes\{domain="g\\"1"\} 4096$/m);
    assert.match(t2, /^virtmem_guest_minor_faults_total\{domain="g\\"1"\} 7$/m);
    assert.match(t2, /^virtmem_guest_stats_age_seconds\{domain="g\\"1"\} 2$/m);
    assert.doesNotMatch(t2, /virtmem_guest_mem_total_bytes/, '-1 from QEMU means not reported');
  });
  test('label escaping', () => {
    assert.equal(escapeLabel('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  });
});

describe('daemon --listen', async () => {
  const { parseListen } = await import('../../src/cli/daemon-command.js');
  test('loopback only, with or without tcp:', () => {
    assert.equal(parseListen(undefined), null);
    assert.equal(parseListen('unix'), null);
    assert.deepEqual(parseListen('tcp:127.0.0.1:8430'), { host: '127.0.0.1', port: 8430 });
    assert.deepEqual(parseListen('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseListen('tcp:[::1]:9'), { host: '::1', port: 9 });
    for (const bad of ['tcp:0.0.0.0:80', '192.168.1.5:80', 'tcp:127.0.0.1:70000', 'tcp:127.0.0.1', 'http://127.0.0.1:1']) {
      assert.throws(() => parseListen(bad), /invalid --listen/, bad);
    }
  });
});

test('every route of /api/v1 is in docs/openapi.json, and every documented path and method is served', async () => {
  const { apiRouter } = await import('../../src/http/api.js');
  const { readFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { ROOT } = await import('../helpers/cli.js');
  const doc = JSON.parse(readFileSync(join(ROOT, 'docs', 'openapi.json'), 'utf8')) as { paths: Record<string, Record<string, unknown>> };
  const served = new Set(apiRouter().routes().map((r) => `${r.method} ${r.pattern.replace(/:([a-z]+)/g, '{$1}')}`));
  // The event stream is answered beside the router (it is not a request/answer route).
  const documented = new Set(Object.entries(doc.paths).flatMap(([path, item]) => Object.keys(item).filter((m) => m !== 'parameters').map((m) => `${m.toUpperCase()} ${path}`)).filter((x) => x !== 'GET /events'));
  assert.deepEqual([...served].filter((x) => !documented.has(x)), [], 'served but not documented');
  assert.deepEqual([...documented].filter((x) => !served.has(x)), [], 'documented but not served');
});
