/** libvirt URI parsing, transport and socket choice, and which URIs stay native. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseUri, isNativeUri, parseLibvirtUri, unixSocketPath } from '../../src/libvirt/uri.js';
import { VirtError } from '../../src/domain/errors.js';

test('transports, hosts, ports and the name sent to the daemon', () => {
  const cases: Array<[string, string, string | null, number | null, string]> = [
    ['qemu:///system', 'unix', null, null, 'qemu:///system'],
    ['qemu:///session', 'unix', null, null, 'qemu:///session'],
    ['test:///default', 'unix', null, null, 'test:///default'],
    ['qemu+tcp://127.0.0.1:16600/system', 'tcp', '127.0.0.1', 16600, 'qemu:///system'],
    ['qemu+tls://host.example/system', 'tls', 'host.example', null, 'qemu:///system'],
    ['qemu://host.example/system', 'tls', 'host.example', null, 'qemu:///system'],
    ['qemu+ssh://root@web1:2222/system?keyfile=/k&mode=direct', 'ssh', 'web1', 2222, 'qemu:///system'],
    ['qemu+tcp://[::1]:16509/system?extra=1', 'tcp', '::1', 16509, 'qemu:///system?extra=1'],
    ['qemu+unix:///system?socket=/tmp/s', 'unix', null, null, 'qemu:///system'],
  ];
  for (const [text, transport, host, port, openName] of cases) {
    const u = parseLibvirtUri(text);
    assert.deepEqual([u.transport, u.host, u.port, u.openName], [transport, host, port, openName], text);
  }
  assert.equal(parseLibvirtUri('qemu+ssh://root@web1/system').user, 'root');
});

test('bad URIs are refused naming the problem', () => {
  for (const [text, why] of [['nonsense', /invalid connection URI/], ['qemu+foo://h/system', /unsupported transport 'foo'/],
    ['qemu+tcp:///system', /needs a host/], ['qemu+unix://h/system', /local only/], ['qemu+tcp://h:99999/system', /invalid port/]] as const) {
    assert.throws(() => parseLibvirtUri(text), (e: unknown) => e instanceof VirtError && e.code === 'INVALID_ARG' && why.test(e.message), text);
  }
});

test('unix socket: ?socket=, modular daemon when present, libvirtd otherwise, per-user session', () => {
  const none = (): boolean => false;
  assert.equal(unixSocketPath(parseLibvirtUri('qemu:///system'), {}, none), '/var/run/libvirt/libvirt-sock');
  assert.equal(unixSocketPath(parseLibvirtUri('qemu:///system'), {}, (p) => p.endsWith('virtqemud-sock')), '/var/run/libvirt/virtqemud-sock');
  assert.equal(unixSocketPath(parseLibvirtUri('test:///default'), {}, () => true), '/var/run/libvirt/libvirt-sock');
  assert.equal(unixSocketPath(parseLibvirtUri('qemu:///system?socket=/x/y'), {}, none), '/x/y');
  assert.equal(unixSocketPath(parseLibvirtUri('qemu:///session'), { XDG_RUNTIME_DIR: '/run/user/7' }, none), '/run/user/7/libvirt/libvirt-sock');
});

test('native URIs and LIBVIRT_DEFAULT_URI as virsh honours it', () => {
  assert.equal(isNativeUri(undefined), true);
  assert.equal(isNativeUri('virtmem:///system'), true);
  assert.equal(isNativeUri('qemu:///system'), false);
  assert.equal(chooseUri(undefined, { LIBVIRT_DEFAULT_URI: 'test:///default' }), 'test:///default');
  assert.equal(chooseUri('qemu:///system', { LIBVIRT_DEFAULT_URI: 'test:///default' }), 'qemu:///system');
  assert.equal(chooseUri(undefined, {}), undefined);
  assert.equal(chooseUri(undefined, { LIBVIRT_DEFAULT_URI: '' }), undefined);
});
