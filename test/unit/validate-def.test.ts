import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { DomainDef } from '../../src/domain/definition.js';
import { VirtError } from '../../src/domain/errors.js';
import {
  DefValidationError,
  MAX_VCPUS,
  MIN_MEMORY_KIB,
  defaultBalloon,
  validateDomainDef,
} from '../../src/domain/validate-def.js';

const GiB = 1024 * 1024;

function baseDef(): DomainDef {
  return {
    schemaVersion: 1,
    name: 'vm1',
    uuid: '6b1e3c1a-2f0b-4e2a-9d3c-1234567890ab',
    vcpus: 2,
    memory: { maxKiB: GiB, currentKiB: GiB },
    memoryDevices: [],
    os: {},
    disks: [],
    balloon: defaultBalloon(),
  };
}

function hotplugDef(): DomainDef {
  const def = baseDef();
  def.memory = { maxKiB: 3 * GiB, currentKiB: 2 * GiB, hotplug: { ceilingKiB: 8 * GiB, slots: 4 } };
  def.memoryDevices = [
    { model: 'virtio-mem', sizeKiB: GiB, blockKiB: 2048, requestedKiB: 512 * 1024 },
    { model: 'dimm', sizeKiB: GiB },
  ];
  return def;
}

/** A deep copy of baseDef() (or `from`) changed by `edit`, as untyped JSON. */
function mutate(edit: (d: any) => void, from: DomainDef = baseDef()): unknown {
  const d = JSON.parse(JSON.stringify(from));
  edit(d);
  return d;
}

function assertRejected(def: unknown, path: string, reason: string, limit?: boolean): void {
  assert.throws(
    () => validateDomainDef(def),
    (err: unknown) => {
      assert.ok(err instanceof DefValidationError, `expected DefValidationError, got ${String(err)}`);
      assert.ok(err instanceof VirtError);
      assert.equal(err.code, 'INVALID_ARG');
      assert.equal(err.path, path);
      assert.ok(err.reason.includes(reason), `'${err.reason}' should mention '${reason}'`);
      assert.ok(err.message.includes(path));
      if (limit !== undefined) assert.equal(err.limit, limit, 'limit flag');
      return true;
    },
  );
}

describe('defaultBalloon', () => {
  it('is virtio, stats every 5 s, autodeflate and free page reporting on', () => {
    assert.deepEqual(defaultBalloon(), { model: 'virtio', statsPeriodS: 5, autodeflate: true, freePageReporting: true });
  });
  it('returns a fresh object each time', () => {
    const a = defaultBalloon();
    a.statsPeriodS = 0;
    assert.equal(defaultBalloon().statsPeriodS, 5);
  });
});

describe('validateDomainDef accepts', () => {
  it('a minimal definition, returning an equal copy', () => {
    const def = baseDef();
    const out = validateDomainDef(def);
    assert.deepEqual(out, def);
    assert.notEqual(out, def);
    assert.notEqual(out.memory, def.memory);
  });
  it('a full definition with hot-plug, devices, disks and optional fields', () => {
    const def: DomainDef = {
      ...hotplugDef(),
      title: 'Test guest',
      description: 'multi\nline\tdescription',
      emulator: '/usr/bin/qemu-system-x86_64',
      os: { kernel: '/boot/vmlinuz', initrd: '/boot/initrd', cmdline: 'console=ttyS0', machine: 'q35' },
      disks: [
        { path: '/img/a.qcow2', format: 'qcow2', target: 'vda', bus: 'virtio', readonly: false },
        { path: '/img/b.raw', format: 'raw', target: 'sdb', bus: 'sata', readonly: true },
      ],
    };
    assert.deepEqual(validateDomainDef(def), def);
  });
  it('JSON text round trip', () => {
    const def = hotplugDef();
    assert.deepEqual(validateDomainDef(JSON.parse(JSON.stringify(def))), def);
  });
  it('optional fields set to undefined, dropping them', () => {
    const def = { ...baseDef(), title: undefined, os: { kernel: undefined } };
    const out = validateDomainDef(def);
    assert.equal('title' in out, false);
    assert.deepEqual(out.os, {});
  });
  it('exactly the minimum memory and the vCPU bounds', () => {
    validateDomainDef(mutate((d) => { d.memory = { maxKiB: MIN_MEMORY_KIB, currentKiB: MIN_MEMORY_KIB }; }));
    validateDomainDef(mutate((d) => { d.vcpus = 1; }));
    validateDomainDef(mutate((d) => { d.vcpus = MAX_VCPUS; }));
  });
  it("balloon model 'none' with everything off", () => {
    validateDomainDef(mutate((d) => { d.balloon = { model: 'none', statsPeriodS: 0, autodeflate: false, freePageReporting: false }; }));
  });
  it("balloon model 'none' with leftover settings, turning them off", () => {
    const out = validateDomainDef(mutate((d) => { d.balloon.model = 'none'; }));
    assert.deepEqual(out.balloon, { model: 'none', statsPeriodS: 0, autodeflate: false, freePageReporting: false });
  });
  it('a virtio-mem device with nothing requested and a ceiling equal to maxKiB', () => {
    validateDomainDef(mutate((d) => {
      d.memory.hotplug.ceilingKiB = d.memory.maxKiB;
      d.memoryDevices[0].requestedKiB = 0;
    }, hotplugDef()));
  });
});

describe('validateDomainDef rejects', () => {
  const cases: Array<[string, unknown, string, string, boolean?]> = [
    ['a non-object', 'vm1', '(root)', 'expected an object'],
    ['an array', [], '(root)', 'expected an object'],
    ['null', null, '(root)', 'expected an object'],
    ['an unknown top-level field', mutate((d) => { d.colour = 'red'; }), 'colour', 'unknown field'],
    ['an unknown nested field', mutate((d) => { d.memory.maxMiB = 1; }), 'memory.maxMiB', 'unknown field'],
    ['an unknown balloon field', mutate((d) => { d.balloon.period = 1; }), 'balloon.period', 'unknown field'],
    ['a missing field', mutate((d) => { delete d.vcpus; }), 'vcpus', 'missing'],
    ['a missing nested field', mutate((d) => { delete d.balloon.model; }), 'balloon.model', 'missing'],
    ['another schema version', mutate((d) => { d.schemaVersion = 2; }), 'schemaVersion', 'unsupported schema version 2'],
    ['a bad name', mutate((d) => { d.name = '../x'; }), 'name', "'/'"],
    ['a non-string name', mutate((d) => { d.name = 7; }), 'name', 'expected a string'],
    ['an upper-case uuid', mutate((d) => { d.uuid = d.uuid.toUpperCase(); }), 'uuid', 'lower-case'],
    ['a bare-hex uuid', mutate((d) => { d.uuid = d.uuid.replace(/-/g, ''); }), 'uuid', 'lower-case'],
    ['vcpus 0', mutate((d) => { d.vcpus = 0; }), 'vcpus', 'below the minimum of 1', true],
    ['vcpus 256', mutate((d) => { d.vcpus = 256; }), 'vcpus', 'above the maximum of 255', true],
    ['fractional vcpus', mutate((d) => { d.vcpus = 1.5; }), 'vcpus', 'expected an integer'],
    ['string vcpus', mutate((d) => { d.vcpus = '2'; }), 'vcpus', 'expected an integer'],
    ['NaN memory', mutate((d) => { d.memory.maxKiB = NaN; }), 'memory.maxKiB', 'expected an integer'],
    ['unsafe-integer memory', mutate((d) => { d.memory.maxKiB = 2 ** 60; }), 'memory.maxKiB', 'expected an integer'],
    ['memory below 64 MiB', mutate((d) => { d.memory = { maxKiB: 65535, currentKiB: 65535 }; }), 'memory.maxKiB', 'below the minimum of 64 MiB', true],
    ['currentKiB below 64 MiB', mutate((d) => { d.memory.currentKiB = 1024; }), 'memory.currentKiB', 'below the minimum of 64 MiB', true],
    ['currentKiB above maxKiB', mutate((d) => { d.memory.currentKiB = 2 * GiB; }), 'memory.currentKiB', 'exceeds memory.maxKiB'],
    ['memory devices without hotplug', mutate((d) => { delete d.memory.hotplug; }, hotplugDef()), 'memoryDevices', 'need memory hot-plug'],
    ['a ceiling below maxKiB', mutate((d) => { d.memory.hotplug.ceilingKiB = 2 * GiB; }, hotplugDef()), 'memory.hotplug.ceilingKiB', 'below memory.maxKiB'],
    ['zero slots', mutate((d) => { d.memory.hotplug.slots = 0; }, hotplugDef()), 'memory.hotplug.slots', 'below the minimum of 1'],
    ['257 slots', mutate((d) => { d.memory.hotplug.slots = 257; }, hotplugDef()), 'memory.hotplug.slots', 'above the maximum of 256'],
    ['fewer slots than devices', mutate((d) => { d.memory.hotplug.slots = 1; }, hotplugDef()), 'memory.hotplug.slots', 'cannot hold 2 memory devices'],
    ['devices leaving too little boot RAM', mutate((d) => { d.memory.maxKiB = 2 * GiB + 1024; d.memory.currentKiB = 2 * GiB; }, hotplugDef()), 'memory.maxKiB', 'boot RAM', true],
    ['devices larger than maxKiB', mutate((d) => { d.memory.maxKiB = GiB; d.memory.currentKiB = GiB; }, hotplugDef()), 'memory.maxKiB', 'boot RAM', false],
    ['an unknown memory model', mutate((d) => { d.memoryDevices[0].model = 'sgx-epc'; }, hotplugDef()), 'memoryDevices[0].model', "got 'sgx-epc'"],
    ['a dimm with virtio-mem fields', mutate((d) => { d.memoryDevices[1].blockKiB = 2048; }, hotplugDef()), 'memoryDevices[1].blockKiB', 'unknown field'],
    ['a virtio-mem without block', mutate((d) => { delete d.memoryDevices[0].blockKiB; }, hotplugDef()), 'memoryDevices[0].blockKiB', 'missing'],
    ['a virtio-mem block below 2 MiB', mutate((d) => { d.memoryDevices[0].blockKiB = 1024; }, hotplugDef()), 'memoryDevices[0].blockKiB', 'below the minimum of 2 MiB'],
    ['a virtio-mem block not a power of two', mutate((d) => { d.memoryDevices[0].blockKiB = 3072; }, hotplugDef()), 'memoryDevices[0].blockKiB', 'power of two'],
    ['a virtio-mem size not a block multiple', mutate((d) => { d.memoryDevices[0].sizeKiB = GiB + 1024; d.memory.maxKiB += 1024; }, hotplugDef()), 'memoryDevices[0].sizeKiB', 'multiple of the block size'],
    ['a virtio-mem request not a block multiple', mutate((d) => { d.memoryDevices[0].requestedKiB = 1024; }, hotplugDef()), 'memoryDevices[0].requestedKiB', 'multiple of the block size'],
    ['a virtio-mem request above its size', mutate((d) => { d.memoryDevices[0].requestedKiB = 2 * GiB; }, hotplugDef()), 'memoryDevices[0].requestedKiB', 'above the maximum of 1 GiB'],
    ['a negative virtio-mem request', mutate((d) => { d.memoryDevices[0].requestedKiB = -2048; }, hotplugDef()), 'memoryDevices[0].requestedKiB', 'below the minimum'],
    ['memoryDevices not an array', mutate((d) => { d.memoryDevices = {}; }), 'memoryDevices', 'expected an array'],
    ['an initrd without kernel', mutate((d) => { d.os = { initrd: '/boot/initrd' }; }), 'os.initrd', 'needs os.kernel'],
    ['a relative kernel path', mutate((d) => { d.os = { kernel: 'vmlinuz' }; }), 'os.kernel', 'not an absolute path'],
    ['an unknown machine', mutate((d) => { d.os = { machine: 'microvm' }; }), 'os.machine', "'microvm' is not supported", true],
    ['a multi-line cmdline', mutate((d) => { d.os = { kernel: '/k', cmdline: 'a\nb' }; }), 'os.cmdline', 'single line'],
    ['a control character in the title', mutate((d) => { d.title = 'a\u0001b'; }), 'title', 'control'],
    ['a multi-line title', mutate((d) => { d.title = 'a\nb'; }), 'title', 'single line'],
    ['a lone surrogate in the description', mutate((d) => { d.description = 'a\ud800b'; }), 'description', 'invalid characters'],
    ['a relative emulator', mutate((d) => { d.emulator = 'qemu-system-x86_64'; }), 'emulator', 'not an absolute path'],
    ['a disk with a bad target', mutate((d) => { d.disks = [{ path: '/a', format: 'raw', target: 'xvda', bus: 'virtio', readonly: false }]; }), 'disks[0].target', 'device name'],
    ['a disk with a bad format', mutate((d) => { d.disks = [{ path: '/a', format: 'vmdk', target: 'vda', bus: 'virtio', readonly: false }]; }), 'disks[0].format', "'vmdk' is not supported"],
    ['a disk with a bad bus', mutate((d) => { d.disks = [{ path: '/a', format: 'raw', target: 'vda', bus: 'usb', readonly: false }]; }), 'disks[0].bus', "'usb'"],
    ['a disk with string readonly', mutate((d) => { d.disks = [{ path: '/a', format: 'raw', target: 'vda', bus: 'virtio', readonly: 'no' }]; }), 'disks[0].readonly', 'true or false'],
    ['duplicate disk targets', mutate((d) => {
      const disk = { path: '/a', format: 'raw', target: 'vda', bus: 'virtio', readonly: false };
      d.disks = [disk, { ...disk, path: '/b' }];
    }), 'disks[1].target', 'already used by disks[0]'],
    ['an unknown balloon model', mutate((d) => { d.balloon.model = 'xen'; }), 'balloon.model', "'xen'"],
    ['a negative stats period', mutate((d) => { d.balloon.statsPeriodS = -1; }), 'balloon.statsPeriodS', 'below the minimum of 0'],
  ];
  for (const [what, def, path, reason, limit] of cases) {
    it(`${what} (${path})`, () => assertRejected(def, path, reason, limit));
  }
});

describe('validateDomainDef: accelerator and CPU model', () => {
  const reject = (edit: (d: any) => void, path: string, reason: RegExp): void => { // eslint-disable-line @typescript-eslint/no-explicit-any
    assert.throws(() => validateDomainDef(mutate(edit)), (e: unknown) =>
      e instanceof DefValidationError && e.path === path && reason.test(e.reason));
  };
  it('accepts each accelerator and CPU mode', () => {
    for (const accel of ['kvm', 'tcg'] as const) assert.equal(validateDomainDef({ ...baseDef(), accel }).accel, accel);
    for (const mode of ['host-passthrough', 'host-model', 'maximum'] as const) {
      assert.deepEqual(validateDomainDef({ ...baseDef(), cpu: { mode } }).cpu, { mode });
    }
    assert.deepEqual(validateDomainDef({ ...baseDef(), cpu: { mode: 'custom', model: 'Skylake-Client-v4' } }).cpu, { mode: 'custom', model: 'Skylake-Client-v4' });
  });
  it('rejects unknown accelerators and modes, a custom CPU without a model, a model elsewhere, bad names', () => {
    reject((d) => { d.accel = 'auto'; }, 'accel', /'auto' is not supported \(expected one of kvm, tcg\)/);
    reject((d) => { d.cpu = { mode: 'passthrough' }; }, 'cpu.mode', /'passthrough' is not supported/);
    reject((d) => { d.cpu = { mode: 'custom' }; }, 'cpu.model', /needs a CPU model name/);
    reject((d) => { d.cpu = { mode: 'maximum', model: 'qemu64' }; }, 'cpu.model', /only with mode 'custom'/);
    reject((d) => { d.cpu = { mode: 'custom', model: '-cpu' }; }, 'cpu.model', /not a CPU model name/);
    reject((d) => { d.cpu = { mode: 'custom', model: 'a,b=c' }; }, 'cpu.model', /not a CPU model name/);
    reject((d) => { d.cpu = { mode: 'maximum', features: [] }; }, 'cpu.features', /unknown field/);
  });
});
