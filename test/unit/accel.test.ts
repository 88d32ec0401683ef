/** The accelerator decision and CPU model mapping: pure parts of accel.ts and qemu-argv.ts. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { accelRequest, bootDiagnosis, chooseAccel, consoleSummary, parseAccelRequest, type KvmStatus } from '../../src/driver/native/accel.js';
import { qemuCpuModel } from '../../src/driver/native/qemu-argv.js';
import { cpuFromOption } from '../../src/cli/extra-commands.js';

const status = (over: Partial<KvmStatus>): KvmStatus => ({
  devicePresent: true, device: '/dev/kvm', usable: false, reason: 'KVM is present but did not run a probe guest',
  probedAt: null, probeMs: null, cached: false, ...over,
});

test('tcg never needs KVM; kvm and auto take KVM when the probe saw it work', () => {
  for (const kvm of [status({ usable: true }), status({}), status({ devicePresent: false })]) {
    assert.deepEqual(chooseAccel('tcg', kvm, 'd'), { accel: 'tcg', note: null });
  }
  assert.deepEqual(chooseAccel('kvm', status({ usable: true }), 'd'), { accel: 'kvm', note: null });
  assert.deepEqual(chooseAccel('auto', status({ usable: true }), 'd'), { accel: 'kvm', note: null });
});

test('kvm on a host where it does not work is refused with the probe reason', () => {
  assert.throws(() => chooseAccel('kvm', status({}), 'web'), (e: Error & { code?: string }) =>
    e.code === 'CONFIG_UNSUPPORTED' && /domain 'web' asks for KVM .*KVM is present but did not run a probe guest; use --accel tcg/.test(e.message));
  assert.throws(() => chooseAccel('kvm', status({ devicePresent: false, reason: '/dev/kvm does not exist' }), 'web'), /\/dev\/kvm does not exist/);
});

test('auto falls back to TCG, with a note only where a KVM device exists', () => {
  const r = chooseAccel('auto', status({}), 'web');
  assert.equal(r.accel, 'tcg');
  assert.match(r.note!, /^KVM not used: KVM is present but did not run a probe guest; running 'web' under TCG/);
  assert.deepEqual(chooseAccel('auto', status({ devicePresent: false }), 'web'), { accel: 'tcg', note: null });
});

test('requests: the domain first, then $VIRTMEM_ACCEL, then auto; bad values name their source', () => {
  assert.equal(accelRequest('kvm', { VIRTMEM_ACCEL: 'tcg' }), 'kvm');
  assert.equal(accelRequest(undefined, { VIRTMEM_ACCEL: 'tcg' }), 'tcg');
  assert.equal(accelRequest(undefined, {}), 'auto');
  assert.throws(() => accelRequest(undefined, { VIRTMEM_ACCEL: 'KVM' }), /\$VIRTMEM_ACCEL 'KVM' is not an accelerator/);
  assert.equal(parseAccelRequest('auto', '--accel'), 'auto');
  assert.throws(() => parseAccelRequest('', '--accel'), /--accel '' is not an accelerator/);
});

test('console summaries and boot diagnoses say what was seen', () => {
  assert.equal(consoleSummary(''), 'console empty');
  assert.equal(consoleSummary('Probing EDD (edd=off to disable)... ok\n'), "console stopped at 'Probing EDD (edd=off to disable)... ok'");
  assert.equal(consoleSummary('[    0.000000] Linux version 6.1\n[    1.5] Run /init as init process\n\n'), "console stopped at 'Run /init as init process'");
  assert.match(bootDiagnosis('Probing EDD (edd=off to disable)... ok\n', 'kvm'), /^KVM is present but did not run the guest \(console stopped at 'Probing EDD.*'\); use --accel tcg$/);
  assert.match(bootDiagnosis('', 'kvm'), /KVM is present but did not run the guest \(console empty\)/);
  assert.match(bootDiagnosis('', 'tcg'), /kernel never started/);
  assert.match(bootDiagnosis('Linux version 6.1\nRun /init\n', 'kvm'), /booted but did not answer/);
});

test('CPU models: libvirt defaults per accelerator, each mode, host-passthrough needs KVM', () => {
  assert.equal(qemuCpuModel(undefined, 'kvm'), 'host');
  assert.equal(qemuCpuModel(undefined, 'tcg'), null);
  assert.equal(qemuCpuModel({ mode: 'host-passthrough' }, 'kvm'), 'host');
  assert.throws(() => qemuCpuModel({ mode: 'host-passthrough' }, 'tcg'), /'host-passthrough' needs KVM/);
  assert.equal(qemuCpuModel({ mode: 'host-model' }, 'kvm'), 'host');
  assert.equal(qemuCpuModel({ mode: 'host-model' }, 'tcg'), 'max');
  assert.equal(qemuCpuModel({ mode: 'maximum' }, 'tcg'), 'max');
  assert.equal(qemuCpuModel({ mode: 'custom', model: 'Skylake-Client' }, 'kvm'), 'Skylake-Client');
});

test('--cpu takes libvirt modes, QEMU shorthands and model names', () => {
  assert.deepEqual(cpuFromOption('host-passthrough'), { mode: 'host-passthrough' });
  assert.deepEqual(cpuFromOption('host'), { mode: 'host-passthrough' });
  assert.deepEqual(cpuFromOption('max'), { mode: 'maximum' });
  assert.deepEqual(cpuFromOption('maximum'), { mode: 'maximum' });
  assert.deepEqual(cpuFromOption('qemu64'), { mode: 'custom', model: 'qemu64' });
});
