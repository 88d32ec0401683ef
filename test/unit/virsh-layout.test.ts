/**
 * Our formatters against real virsh 9.0 output recorded on this machine
 * (test/fixtures/virsh/record.sh): same bytes for the same domain data.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../helpers/cli.js';
import { formatDominfo, formatList, formatMemStats, stateText, stateWithReason } from '../../src/cli/format.js';
import type { DomainInfo, DomainSummary } from '../../src/driver/api.js';

const fixture = (name: string): string => readFileSync(join(ROOT, 'test', 'fixtures', 'virsh', 'cases', name), 'utf8');
const uuid = '6f1c2a9e-5b7d-4c3e-9a10-000000000001';
const row = (id: number | null, name: string, state: DomainSummary['state']): DomainSummary =>
  ({ id, name, uuid, state, reason: 'unknown', persistent: true });

test('list --all: empty, one shut off, columns widened by a long name, running first', () => {
  assert.equal(formatList([]), fixture('001-list-all-empty.stdout'));
  assert.equal(formatList([row(null, 'vm1', 'shutoff')]), fixture('007-list-all-one-shutoff.stdout'));
  assert.equal(formatList([row(null, 'a-much-longer-domain-name', 'shutoff'), row(null, 'vm1', 'shutoff'), row(null, 'vm2g', 'shutoff')]),
    fixture('114-list-all-three-shutoff.stdout'));
  assert.equal(formatList([row(2, 'vm1', 'running'), row(null, 'a-much-longer-domain-name', 'shutoff'), row(null, 'vm2g', 'shutoff')]),
    fixture('117-list-all-one-running.stdout'));
});

test('list --name', () => {
  assert.equal(formatList([row(null, 'vm1', 'shutoff')], { name: true }), fixture('008-list-all-name-one-shutoff.stdout'));
  assert.equal(formatList([], { name: true }), fixture('002-list-all-name-empty.stdout'));
});

const info = (over: Partial<DomainInfo>): DomainInfo => ({
  id: null, name: 'vm1', uuid, state: 'shutoff', reason: 'unknown', persistent: true, osType: 'hvm', vcpus: 1,
  cpuTimeS: null, maxMemoryKiB: 1048576, usedMemoryKiB: 1048576, autostart: false, accel: null, cpuModel: null, accelNote: null,
  memory: { bootKiB: 1048576, balloonKiB: 1048576, dimmKiB: 0, pluggedKiB: 0, hotplugSizeKiB: 0 }, ...over,
});

test('dominfo, shut off and running', () => {
  assert.equal(formatDominfo(info({})), fixture('010-dominfo-shutoff-name.stdout'));
  assert.equal(formatDominfo(info({ id: 2, state: 'running', reason: 'booted', cpuTimeS: 4.3, accel: 'tcg' })), fixture('122-dominfo-running-name.stdout'));
});

test('dominfo of a hot-plug guest adds where the memory is, after virsh\'s lines', () => {
  const text = formatDominfo(info({ maxMemoryKiB: 4194304, usedMemoryKiB: 2097152, memory: { bootKiB: 524288, balloonKiB: 524288, dimmKiB: 0, pluggedKiB: 1572864, hotplugSizeKiB: 3670016 } }));
  assert.ok(text.startsWith(fixture('010-dominfo-shutoff-name.stdout').replace('Max memory:     1048576', 'Max memory:     4194304').replace('Used memory:    1048576', 'Used memory:    2097152').slice(0, -1)));
  assert.match(text, /\nBoot memory:    524288 KiB \(balloon 524288 KiB\)\nHot-plugged:    1572864 KiB of 3670016 KiB \(virtio-mem\)\n\n$/);
});

test('domstate with and without --reason', () => {
  assert.equal(stateWithReason('shutoff', 'unknown') + '\n\n', fixture('014-domstate-reason-shutoff-never-started.stdout'));
  assert.equal(stateWithReason('running', 'booted') + '\n\n', fixture('126-domstate-reason-running.stdout'));
  assert.equal(stateText('running') + '\n\n', fixture('125-domstate-running.stdout'));
});

test('dommemstat: virsh names and order', () => {
  const expected = fixture('130-dommemstat-running.stdout');
  const stats = expected.trim().split('\n').map((l) => { const [name, v] = l.split(' '); return { name: name!, value: Number(v) }; });
  assert.equal(formatMemStats({ stats, periodS: 5 }), expected);
});
