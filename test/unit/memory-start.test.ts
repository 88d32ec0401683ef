/**
 * What start decides about the host before QEMU runs: hugetlbfs mounts by page size, the huge
 * pages a plan preallocates and whether the pools hold them (naming how many are missing), the
 * host nodes a plan names; and the domain's cgroup: which files get which values, cgroup v1 and
 * v2, in a safe order, and QEMU put into it before it runs.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DomainDef } from '../../src/domain/definition.js';
import { VirtError } from '../../src/domain/errors.js';
import { defaultBalloon } from '../../src/domain/validate-def.js';
import { defaultHugepageKiB, hugetlbfsMounts, pageSizeOptionKiB } from '../../src/driver/native/host/hugetlbfs.js';
import { chooseAutoNodes, hostNodesNamed, hugepageDemand, hugepageShortfall, withAutoPlacement, type FreeHugepages } from '../../src/driver/native/memory-start.js';
import { planMemoryLayout } from '../../src/driver/native/qemu-memory.js';
import {
  chooseControllers, cpusetWrites, domainCgroupPath, memtuneWrites, parseCgroupMounts, spawnIntoCgroups,
} from '../../src/driver/native/cgroup.js';
import { applyMemtuneChange } from '../../src/driver/native/memtune.js';

const MiB = 1024;
const GiB = 1024 * MiB;

const base = (): DomainDef => ({
  schemaVersion: 1, name: 'h', uuid: '0b5c5a0e-6a0f-4d7b-8e7e-2f1f4c3b2a19', vcpus: 2,
  memory: { maxKiB: GiB, currentKiB: GiB }, memoryDevices: [], os: {}, disks: [], balloon: defaultBalloon(),
});

describe('hugetlbfs mounts', () => {
  const mounts = [
    'sysfs /sys sysfs rw,nosuid 0 0',
    'hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0',
    'hugetlbfs /mnt/huge\\0401G hugetlbfs rw,relatime,pagesize=1024M 0 0',
    'hugetlbfs /mnt/ro hugetlbfs ro,relatime,pagesize=2M 0 0',
    'none /run/hp hugetlbfs rw,relatime 0 0',
  ].join('\n');
  it('finds writable mounts by page size (the first of each), the default size for no pagesize=', () => {
    assert.deepEqual([...hugetlbfsMounts(mounts, 2048)], [[2048, '/dev/hugepages'], [1048576, '/mnt/huge 1G']]);
    assert.deepEqual([...hugetlbfsMounts(mounts.split('\n').slice(4).join('\n'), 2048)], [[2048, '/run/hp']]);
  });
  it('reads page size options and the default size', () => {
    assert.deepEqual(['2M', '1G', '1024M', '64k', '5', 'x'].map(pageSizeOptionKiB), [2048, 1048576, 1048576, 64, 5, null]);
    assert.equal(defaultHugepageKiB('MemTotal: 1 kB\nHugepagesize:       2048 kB\n'), 2048);
    assert.equal(defaultHugepageKiB(''), null);
  });
});

describe('huge pages a start needs, and whether the pools have them', () => {
  const free = (hostWide: number, perNode: number[] = [hostWide]): FreeHugepages => ({
    sizesKiB: [2048, 1048576],
    hostWide: new Map([[2048, hostWide], [1048576, 0]]),
    perNode: new Map([[2048, new Map(perNode.map((n, i) => [i, n]))], [1048576, new Map()]]),
  });
  const hugeDef = (): DomainDef => ({ ...base(), memoryBacking: { hugepages: [{ sizeKiB: 2048 }] } });
  const demand = (def: DomainDef) => hugepageDemand(planMemoryLayout(def, { defaultHugepageKiB: 2048 }));

  it('counts the pages of every preallocated huge page backend', () => {
    assert.deepEqual(demand(hugeDef()), [{ pageSizeKiB: 2048, hostNodes: null, pages: 512 }]);
    assert.deepEqual(demand(base()), []);
  });
  it('counts what a huge page virtio-mem has plugged at start, not its whole region', () => {
    const def: DomainDef = {
      ...hugeDef(), memory: { maxKiB: 3 * GiB, currentKiB: 3 * GiB, hotplug: { ceilingKiB: 4 * GiB, slots: 2 } },
      memoryDevices: [{ model: 'virtio-mem', sizeKiB: 2 * GiB, blockKiB: 2048, requestedKiB: 256 * MiB }],
    };
    assert.deepEqual(demand(def), [{ pageSizeKiB: 2048, hostNodes: null, pages: 512 + 128 }]);
  });
  it('confines strictly bound backends to their nodes; preferred ones take any node\u2019s', () => {
    const bound = demand({ ...hugeDef(), numatune: { memory: { mode: 'strict', hostNodes: [1] } } });
    assert.deepEqual(bound, [{ pageSizeKiB: 2048, hostNodes: [1], pages: 512 }]);
    assert.deepEqual(demand({ ...hugeDef(), numatune: { memory: { mode: 'preferred', hostNodes: [1] } } }), [{ pageSizeKiB: 2048, hostNodes: null, pages: 512 }]);
    assert.equal(hugepageShortfall(bound, free(600, [600, 0])),
      'not enough free 2048 KiB huge pages on host NUMA node 1: the guest needs 512, 0 are free (512 missing); reserve them first, e.g. virtmem allocpages 2048 512 --cellno 1 --add');
    assert.equal(hugepageShortfall(bound, free(600, [88, 512])), null);
  });
  it('says how many pages are missing, or that the host lacks the size', () => {
    assert.equal(hugepageShortfall(demand(hugeDef()), free(512)), null);
    assert.equal(hugepageShortfall(demand(hugeDef()), free(100)),
      'not enough free 2048 KiB huge pages: the guest needs 512, 100 are free (412 missing); reserve them first, e.g. virtmem allocpages 2048 412 --add');
    assert.match(hugepageShortfall([{ pageSizeKiB: 5120, hostNodes: null, pages: 1 }], free(0)) ?? '', /^the host has no 5120 KiB huge pages \(its huge page sizes: 2048 KiB, 1048576 KiB\)$/);
  });
  it('lists the host nodes a plan names, restrictive ones too', () => {
    const def: DomainDef = { ...base(), numa: { cells: [{ cpus: [0], memoryKiB: 512 * MiB }, { cpus: [1], memoryKiB: 512 * MiB }] },
      numatune: { memory: { mode: 'restrictive', hostNodes: [0, 2] }, memnodes: [{ cell: 1, mode: 'restrictive', hostNodes: [3] }] } };
    assert.deepEqual(hostNodesNamed(planMemoryLayout(def, { defaultHugepageKiB: 2048 })), [0, 2, 3]);
  });
});

describe("automatic host NUMA placement (placement='auto')", () => {
  it('gets the fewest host nodes, most free memory first, that hold the whole guest; all nodes when none do', () => {
    const free = new Map([[0, 4 * GiB], [1, 16 * GiB], [2, 8 * GiB]]);
    assert.deepEqual(chooseAutoNodes(free, 2 * GiB), [1]);
    assert.deepEqual(chooseAutoNodes(free, 20 * GiB), [1, 2]);
    assert.deepEqual(chooseAutoNodes(free, 64 * GiB), [0, 1, 2]);
    assert.deepEqual(chooseAutoNodes(new Map([[0, MiB]]), GiB), [0]);
  });
  it('binds the backends to the chosen nodes in the mode asked for; the definition keeps auto', () => {
    const def: DomainDef = { ...base(), numatune: { memory: { mode: 'interleave', placement: 'auto' } } };
    const placed = withAutoPlacement(def, [1, 3]);
    assert.deepEqual(placed.numatune, { memory: { mode: 'interleave', hostNodes: [1, 3] } });
    assert.deepEqual(def.numatune, { memory: { mode: 'interleave', placement: 'auto' } });
    const ram = planMemoryLayout(placed, { defaultHugepageKiB: 2048 }).ram[0]!;
    assert.deepEqual([ram.hostNodes, ram.policy], [[1, 3], 'interleave']);
    const plain = base();
    assert.equal(withAutoPlacement(plain, [0]), plain, 'no automatic placement: unchanged');
    assert.equal(withAutoPlacement(def, undefined), def, 'nothing chosen: unchanged');
  });
});

describe('the domain cgroup', () => {
  const v1Mounts = parseCgroupMounts([
    'tmpfs /sys/fs/cgroup tmpfs rw 0 0',
    'cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0',
    'cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0',
    'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0',
  ].join('\n'));
  it('uses v1 controllers where the host binds them there, else v2 where the unified hierarchy offers them', () => {
    assert.deepEqual(chooseControllers(v1Mounts, ['hugetlb']), {
      memory: { version: 1, root: '/sys/fs/cgroup/memory' }, cpuset: { version: 1, root: '/sys/fs/cgroup/cpuset' },
    });
    const v2 = parseCgroupMounts('cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0');
    assert.deepEqual(chooseControllers(v2, ['cpuset', 'cpu', 'io', 'memory', 'pids']), {
      memory: { version: 2, root: '/sys/fs/cgroup' }, cpuset: { version: 2, root: '/sys/fs/cgroup' },
    });
    assert.deepEqual(chooseControllers(v2, ['pids']), {});
  });
  it('names the cgroup after the domain, and after the state directory unless it is the system one', () => {
    assert.equal(domainCgroupPath('/var/lib/virtmem', 'web'), 'virtmem/web');
    assert.match(domainCgroupPath('/tmp/vm-x', 'web'), /^virtmem\/web@[0-9a-f]{8}$/);
    assert.notEqual(domainCgroupPath('/tmp/vm-x', 'web'), domainCgroupPath('/tmp/vm-y', 'web'));
  });
  it('v1: limit, memsw and soft limit in bytes, memsw raised before the limit passes it', () => {
    const t = { hardLimitKiB: 512000, softLimitKiB: 0, swapHardLimitKiB: 1024000 };
    assert.deepEqual(memtuneWrites(1, t, { swap: true }, null), [
      { file: 'memory.limit_in_bytes', value: String(512000 * 1024) },
      { file: 'memory.memsw.limit_in_bytes', value: String(1024000 * 1024) },
      { file: 'memory.soft_limit_in_bytes', value: '0' },
    ]);
    assert.deepEqual(memtuneWrites(1, t, { swap: true }, 256 * 1024 * 1024).map((w) => w.file), ['memory.memsw.limit_in_bytes', 'memory.limit_in_bytes', 'memory.soft_limit_in_bytes']);
    assert.deepEqual(memtuneWrites(1, { hardLimitKiB: GiB }, { swap: false }), [
      { file: 'memory.limit_in_bytes', value: String(GiB * 1024) }, { file: 'memory.soft_limit_in_bytes', value: '-1' },
    ]);
  });
  it('v2: max, high, swap.max as the swap beyond hard_limit, min', () => {
    assert.deepEqual(memtuneWrites(2, { hardLimitKiB: GiB, softLimitKiB: 768 * MiB, swapHardLimitKiB: 3 * GiB / 2, minGuaranteeKiB: 256 * MiB }, { swap: true }), [
      { file: 'memory.max', value: String(GiB * 1024) },
      { file: 'memory.high', value: String(768 * MiB * 1024) },
      { file: 'memory.swap.max', value: String(GiB / 2 * 1024) },
      { file: 'memory.min', value: String(256 * MiB * 1024) },
    ]);
    assert.deepEqual(memtuneWrites(2, {}, { swap: true }).map((w) => w.value), ['max', 'max', 'max', '0']);
  });
  it('refuses min_guarantee on v1 and a swap limit without swap accounting', () => {
    assert.throws(() => memtuneWrites(1, { minGuaranteeKiB: 1 }, { swap: true }), (e: unknown) => e instanceof VirtError && e.code === 'CONFIG_UNSUPPORTED' && /cgroup v2/.test(e.message));
    assert.throws(() => memtuneWrites(1, { swapHardLimitKiB: GiB }, { swap: false }), (e: unknown) => e instanceof VirtError && e.code === 'NO_SUPPORT' && /swapaccount=1/.test(e.message));
  });
  it('restrictive placement: cpuset.mems (v1 sets the CPUs first)', () => {
    assert.deepEqual(cpusetWrites(1, [0, 1, 3], '0-1'), [{ file: 'cpuset.cpus', value: '0-1' }, { file: 'cpuset.mems', value: '0-1,3' }]);
    assert.deepEqual(cpusetWrites(2, [0], '0-1'), [{ file: 'cpuset.mems', value: '0' }]);
  });
  it('a memtune change keeps what it does not name, removes what it sets to null, and is checked', () => {
    assert.deepEqual(applyMemtuneChange({ hardLimitKiB: GiB, softLimitKiB: 1 }, { softLimitKiB: null, swapHardLimitKiB: 2 * GiB }), { hardLimitKiB: GiB, swapHardLimitKiB: 2 * GiB });
    assert.equal(applyMemtuneChange({ hardLimitKiB: GiB }, { hardLimitKiB: null }), undefined);
    assert.throws(() => applyMemtuneChange({ swapHardLimitKiB: GiB }, { hardLimitKiB: 2 * GiB }), /must be lower than or equal to swap_hard_limit/);
  });
  it('QEMU joins the cgroups before it runs: a fixed script, the files and argv as its arguments', () => {
    assert.deepEqual(spawnIntoCgroups([], '/usr/bin/qemu', ['-m', '1']), { file: '/usr/bin/qemu', args: ['-m', '1'] });
    const dir = mkdtempSync(join(tmpdir(), 'virtmem-cg-'));
    try {
      const procs = [join(dir, 'a procs'), join(dir, '--x')];
      for (const p of procs) writeFileSync(p, '');
      // /bin/sh -c 'echo "$$ $*"' stands in for QEMU: same pid, the argv untouched.
      const { file, args } = spawnIntoCgroups(procs, '/bin/sh', ['-c', 'echo "$$ $*"', 'qemu', '-name', 'a;b', '--', '$(x)']);
      const r = spawnSync(file, args, { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      const [pid, ...rest] = r.stdout.trim().split(' ');
      assert.equal(rest.join(' '), '-name a;b -- $(x)');
      for (const p of procs) assert.equal(readFileSync(p, 'utf8').trim(), pid);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
