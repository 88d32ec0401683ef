import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildQemuArgv } from '../../src/driver/native/qemu-argv.js';
import { StatePaths } from '../../src/driver/native/paths.js';
import type { DomainDef } from '../../src/domain/definition.js';

const base: DomainDef = {
  schemaVersion: 1, name: 'vm1', uuid: '6b0b2a3e-6d2c-4c39-9b1c-1f0e5e6f7a80', vcpus: 2,
  memory: { maxKiB: 1048576, currentKiB: 524288 }, memoryDevices: [], os: {}, disks: [],
  balloon: { model: 'virtio', statsPeriodS: 5, autodeflate: true, freePageReporting: true },
};
const paths = new StatePaths('/s').run('vm1');
const argvOf = (def: DomainDef): string[] => buildQemuArgv({ def, paths, accel: 'tcg', kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0' });
const after = (argv: string[], opt: string): string[] => argv.flatMap((a, i) => (a === opt ? [argv[i + 1]!] : []));

test('memory is given to QEMU in KiB, boot RAM = <memory>', () => {
  assert.deepEqual(after(argvOf(base), '-m'), ['size=1048576k']);
});

test('accel, cpus, kernel, monitors', () => {
  const argv = argvOf(base);
  assert.deepEqual(after(argv, '-machine'), ['pc,accel=tcg']);
  assert.deepEqual(after(argv, '-smp'), ['2']);
  assert.deepEqual(after(argv, '-kernel'), ['/k']);
  assert.deepEqual(after(argv, '-append'), ['console=ttyS0']);
  assert.deepEqual(after(argv, '-mon'), ['chardev=qmp,mode=control', 'chardev=qmpwatch,mode=control']);
});

test('balloon options follow the definition; none means no device', () => {
  assert.deepEqual(after(argvOf(base), '-device'), ['virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on']);
  const off = argvOf({ ...base, balloon: { ...base.balloon, autodeflate: false, freePageReporting: false } });
  assert.deepEqual(after(off, '-device'), ['virtio-balloon-pci,id=balloon0,deflate-on-oom=off,free-page-reporting=off']);
  assert.deepEqual(after(argvOf({ ...base, balloon: { ...base.balloon, model: 'none' } }), '-device'), []);
});

test('virtio-mem: boot RAM excludes the device region, maxmem is the ceiling', () => {
  const def: DomainDef = {
    ...base,
    memory: { maxKiB: 524288 + 2097152, currentKiB: 524288 + 262144, hotplug: { ceilingKiB: 4194304, slots: 4 } },
    memoryDevices: [{ model: 'virtio-mem', sizeKiB: 2097152, blockKiB: 2048, requestedKiB: 262144 }],
  };
  const argv = argvOf(def);
  assert.deepEqual(after(argv, '-m'), ['size=524288k,slots=4,maxmem=4194304k']);
  // Hot-plug implies one guest NUMA node holding boot RAM, on the command line as libvirt puts it.
  assert.deepEqual(after(argv, '-numa'), ['node,nodeid=0,cpus=0-1,memdev=ram-node0']);
  assert.deepEqual(after(argv, '-object').map((o) => JSON.parse(o)), [
    { 'qom-type': 'memory-backend-ram', id: 'ram-node0', size: 524288 * 1024 },
    { 'qom-type': 'memory-backend-ram', id: 'mem-vmem0', reserve: false, size: 2097152 * 1024 },
  ]);
  assert.ok(after(argv, '-device').includes(JSON.stringify({ driver: 'virtio-mem-pci', node: 0, 'block-size': 2048 * 1024, 'requested-size': 262144 * 1024, memdev: 'mem-vmem0', id: 'vmem0' })));
});

test('commas in paths are escaped for QEMU option syntax', () => {
  const argv = buildQemuArgv({ def: { ...base, disks: [{ path: '/img/a,b.raw', format: 'raw', target: 'vda', bus: 'virtio', readonly: true }] }, paths, accel: 'kvm', kernel: '/k' });
  assert.ok(argv.includes('driver=file,node-name=file0,filename=/img/a,,b.raw,read-only=on'));
  assert.deepEqual(after(argv, '-machine'), ['pc,accel=kvm']);
});

test('no shell anywhere: every element is its own argv word', () => {
  const argv = argvOf({ ...base, name: 'a;rm' });
  assert.ok(argv.includes('guest=a;rm,debug-threads=on'));
});
