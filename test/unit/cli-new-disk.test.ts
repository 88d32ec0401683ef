/** `virtmem new --disk PATH[,format=raw|qcow2][,readonly][,target=vdX]`: the option's parser. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { UsageError } from '../../src/cli/args.js';
import { diskFromOption } from '../../src/cli/extra-commands.js';

test('a bare path is a writable virtio vda; the format follows a .qcow2 name', () => {
  assert.deepEqual(diskFromOption('/img/a.raw'), { path: '/img/a.raw', format: 'raw', target: 'vda', bus: 'virtio', readonly: false });
  assert.equal(diskFromOption('/img/a.qcow2').format, 'qcow2');
  assert.equal(diskFromOption('rel/a.img').path, resolve('rel/a.img'));
});

test('settings: format, readonly (bare or on/off), target; path= and ,, as in virt-install', () => {
  assert.deepEqual(diskFromOption('/img/a.img,format=qcow2,readonly,target=vdb'), { path: '/img/a.img', format: 'qcow2', target: 'vdb', bus: 'virtio', readonly: true });
  assert.equal(diskFromOption('/img/a.qcow2,format=raw').format, 'raw');
  assert.equal(diskFromOption('/img/a,readonly=on').readonly, true);
  assert.equal(diskFromOption('/img/a,readonly=off').readonly, false);
  assert.equal(diskFromOption('path=/img/a,readonly').path, '/img/a');
  assert.equal(diskFromOption('/img/a,,b,readonly').path, '/img/a,b');
  assert.equal(diskFromOption('/img/a,,,readonly').path, '/img/a,');
});

test('bad values are refused naming --disk', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /--disk '': the image path comes first/],
    [',readonly', /the image path comes first/],
    ['readonly', /the image path comes first/],
    ['format=raw', /the image path comes first/],
    ['/img/a,format=vmdk', /--disk: format 'vmdk' is not supported: use format=raw or format=qcow2/],
    ['/img/a,format', /--disk: format '' is not supported/],
    ['/img/a,readonly=maybe', /--disk: readonly='maybe' is not on\/off/],
    ['/img/a,target=sda', /--disk: target 'sda' is not a virtio disk name/],
    ['/img/a,bus=ide', /--disk: unknown setting 'bus=ide'/],
    ['/img/a,', /--disk: unknown setting ''/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => diskFromOption(text), (e: unknown) => e instanceof UsageError && message.test(e.message), text);
  }
});

test('a device node is a host block device', () => {
  assert.deepEqual(diskFromOption('/dev/loop3,target=vdb'), { path: '/dev/loop3', type: 'block', format: 'raw', target: 'vdb', bus: 'virtio', readonly: false });
});
