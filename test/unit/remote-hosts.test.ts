/**
 * The pure parts of `daemon --hosts`: the hosts file, bulk statistics to the domain model, the
 * /metrics families and the dashboard's view of GET /api/v1/hosts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHostsFile, remoteDomain, type HostDocument } from '../../src/daemon/remote-hosts.js';
import { formatMetrics } from '../../src/http/metrics.js';
import { toLibvirtHostsView } from '../../src/dashboard/web/model.js';
import { VirtError } from '../../src/domain/errors.js';

test('hosts file: URIs one per line, comments and blank lines skipped', () => {
  assert.deepEqual(parseHostsFile('# hosts\n\nqemu+tcp://10.0.0.2/system   # rack 1\n  test:///default\nqemu+ssh://root@h:22/system?keyfile=/k\n', 'f'),
    ['qemu+tcp://10.0.0.2/system', 'test:///default', 'qemu+ssh://root@h:22/system?keyfile=/k']);
});

test('hosts file: a bad line is refused naming the file and line', () => {
  const refused = (text: string, re: RegExp): void => {
    assert.throws(() => parseHostsFile(text, '/etc/virtmem/hosts'), (e: unknown) => e instanceof VirtError && e.code === 'INVALID_ARG' && re.test(e.message));
  };
  refused('test:///default\n# x\nqemu+bogus://h/system\n', /^\/etc\/virtmem\/hosts line 3: unsupported transport 'bogus'/);
  refused('not a uri\n', /line 1: invalid connection URI 'not a uri'/);
  refused('qemu+tcp:///system\n', /line 1: .*needs a host/);
  refused('test:///default\ntest:///default\n', /line 2: 'test:\/\/\/default' is listed twice/);
  refused('virtmem:///system\n', /line 1: .*virtmem's own driver/);
  refused('# nothing\n\n', /lists no libvirt URI/);
});

test('bulk statistics to the domain model: KiB to bytes, balloon actual only while running', () => {
  const running = remoteDomain({ name: 'a', uuid: 'u', id: 3, stats: { 'state.state': 1, 'balloon.current': 1024, 'balloon.maximum': 2048, 'balloon.rss': 10, 'balloon.available': 900 } });
  assert.deepEqual(running, { name: 'a', uuid: 'u', id: 3, state: 'running', currentMemoryBytes: 1048576, maxMemoryBytes: 2097152, balloonActualBytes: 1048576, stats: { availableBytes: 921600, rssBytes: 10240 } });
  const off = remoteDomain({ name: 'b', uuid: 'v', id: null, stats: { 'state.state': 5, 'balloon.current': 1024, 'balloon.maximum': 2048 } });
  assert.equal(off.state, 'shutoff');
  assert.equal(off.balloonActualBytes, null);
  assert.equal(remoteDomain({ name: 'c', uuid: 'w', id: null, stats: {} }).currentMemoryBytes, null);
});

const host = { memTotalBytes: 100, memAvailableBytes: 50, swapTotalBytes: null, swapFreeBytes: null, psi: null, sampledAtS: 1 };
const daemon = { startedAtS: 1, operationsStarted: 0, sseClients: 0, httpRequests: 3 };

test('/metrics: hosts up/down and their domains with host, domain and kind labels; nothing without --hosts', () => {
  const hosts: HostDocument[] = [
    { uri: 'qemu+tcp://h"1/system', state: 'up', reason: null, lastUpdateS: 1, domains: [remoteDomain({ name: 'a', uuid: 'u', id: 1, stats: { 'state.state': 1, 'balloon.current': 1024, 'balloon.maximum': 2048 } })] },
    { uri: 'test:///default', state: 'down', reason: 'gone', lastUpdateS: null, domains: [] },
  ];
  const text = formatMetrics({ guests: [], host, daemon, nowS: 2, remoteHosts: hosts });
  assert.match(text, /^virtmem_host_up\{host="qemu\+tcp:\/\/h\\"1\/system"\} 1$/m);
  assert.match(text, /^virtmem_host_up\{host="test:\/\/\/default"\} 0$/m);
  assert.match(text, /^virtmem_host_domain_memory_bytes\{host="qemu\+tcp:\/\/h\\"1\/system",domain="a",kind="current"\} 1048576$/m);
  assert.match(text, /^virtmem_host_domain_memory_bytes\{host="qemu\+tcp:\/\/h\\"1\/system",domain="a",kind="max"\} 2097152$/m);
  assert.doesNotMatch(text, /kind="rss"/, 'a statistic never reported is absent');
  const without = formatMetrics({ guests: [], host, daemon, nowS: 2 });
  assert.doesNotMatch(without, /virtmem_host_up|virtmem_host_domain_memory_bytes/);
});

test('dashboard: /api/v1/hosts to views, skipping what it cannot use', () => {
  assert.deepEqual(toLibvirtHostsView({ hosts: [
    { uri: 'test:///default', state: 'up', reason: null, domains: [{ name: 'test', state: 'running', currentMemoryBytes: 5, maxMemoryBytes: 9 }, { state: 'x' }] },
    { state: 'down' },
    { uri: 'qemu+tcp://h/system', state: 'down', reason: 'no reply', domains: 'junk' },
  ] }), [
    { uri: 'test:///default', up: true, reason: null, domains: [{ name: 'test', state: 'running', currentBytes: 5, maxBytes: 9 }] },
    { uri: 'qemu+tcp://h/system', up: false, reason: 'no reply', domains: [] },
  ]);
  assert.deepEqual(toLibvirtHostsView(null), []);
});
