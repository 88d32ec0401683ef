/**
 * virsh's memory commands (memtune, numatune, update-memory-device, domstats, domdirtyrate-calc,
 * attach-device/detach-device of a DIMM) through bin/virtmem, against real virsh at the same
 * moment, on one guest definition twice: in this machine's libvirtd (virtmem over libvirt's RPC,
 * `-c qemu:///system`) and on virtmem's own driver (a sandbox). On libvirt ours and virsh's must
 * be the same bytes (exit code, stdout, stderr); the native guest's answers must be virsh's for
 * the libvirt guest where the two guests' facts are the same (limits, placement, state, sizes),
 * field for field where the guests' own numbers move (guest statistics, QEMU's RSS). Bad values
 * are refused with virsh's words on both, and nothing changes (the definitions read back the
 * same). Real guests (the built-in guest under TCG): a DIMM plugged and unplugged while they
 * run, seen online and gone in the guest's /sys/devices/system/memory through its agent; a
 * memtune hard limit changed live and seen in each guest's memory cgroup; a virtio-mem device
 * resized with update-memory-device; a dirty page rate measured.
 * Needs root, a running libvirtd and the built-in guest.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runCli, sandbox, type RunResult } from '../helpers/cli.js';
import { notRoot, skipUnlessCi, libvirtdMissing, builtInGuestMissing } from '../helpers/skip.js';
import { removeDomains, virsh, type VirshResult } from '../helpers/virsh.js';
import { until } from '../helpers/poll.js';
import { GuestAgent } from '../../src/guest/agent.js';
import { hostControllers } from '../../src/driver/memory/cgroup-hierarchy.js';
import { domainCgroupPath } from '../../src/driver/native/cgroup.js';

const U = 'qemu:///system';
const GUEST = '/var/cache/virtmem/guest';
const controllers = await hostControllers();
const skip = skipUnlessCi(libvirtdMissing(), notRoot(),
  builtInGuestMissing(), !controllers.memory && 'the host has no cgroup memory controller');

const NAME = `vmmc-${randomBytes(3).toString('hex')}`;
const MiB = 1024;
const files = await mkdtemp(join(tmpdir(), 'vm-mc-'));
const sb = await sandbox();
const agents: GuestAgent[] = [];

/** The guest both drivers get: 256 MiB boot RAM in one NUMA cell, a 256 MiB virtio-mem region, room for DIMMs, strict placement on host node 0. */
function domainXml(agentSocket: string | null): string {
  return `<domain type='qemu'>
  <name>${NAME}</name>
  <maxMemory slots='4' unit='KiB'>${2048 * MiB}</maxMemory>
  <memory unit='KiB'>${512 * MiB}</memory>
  <currentMemory unit='KiB'>${256 * MiB}</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <numatune><memory mode='strict' nodeset='0'/></numatune>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${GUEST}/vmlinuz</kernel>
    <initrd>${GUEST}/initrd.gz</initrd>
    <cmdline>console=ttyS0 memhp_default_state=online_movable panic=-1 loglevel=4</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <cpu><numa><cell id='0' cpus='0' memory='${256 * MiB}' unit='KiB'/></numa></cpu>
  <devices>
    <serial type='pty'/>
    <console type='pty'/>
${agentSocket ? `    <serial type='unix'><source mode='bind' path='${agentSocket}'/><target port='1'/></serial>\n` : ''}    <memballoon model='virtio'><stats period='1'/></memballoon>
    <memory model='virtio-mem'>
      <target><size unit='KiB'>${256 * MiB}</size><node>0</node><block unit='KiB'>2048</block><requested unit='KiB'>0</requested></target>
    </memory>
  </devices>
</domain>
`;
}

const DIMM = join(files, 'dimm.xml');
const ours = (args: string[]): Promise<RunResult> => runCli(['-c', U, ...args]);
const native = (args: string[]): Promise<RunResult> => sb.run(...args);
const triple = (r: { code: number; stdout: string; stderr: string }): [number, string, string] => [r.code, r.stdout, r.stderr];

/** Ours on libvirt is virsh's, byte for byte; the native guest's answer is virsh's too, after `fix` (default: as it is). */
async function same(args: string[], fix: (text: string) => string = (t) => t): Promise<VirshResult> {
  const theirs = await virsh(U, ...args);
  // `fix` applies to both comparisons: statistics move between virsh's call and ours.
  const o = await ours(args);
  assert.deepEqual([o.code, fix(o.stdout), o.stderr], [theirs.code, fix(theirs.stdout), theirs.stderr], `libvirt: ${args.join(' ')}`);
  const n = await native(args);
  assert.deepEqual([n.code, fix(n.stdout), n.stderr], [theirs.code, fix(theirs.stdout), theirs.stderr], `native: ${args.join(' ')}`);
  return theirs;
}

/**
 * A change that must happen once (attach, detach): made on the libvirt guest by `who` (ours or
 * virsh) and on the native guest by virtmem; both print the same bytes.
 */
async function change(args: string[], who: 'ours' | 'virsh'): Promise<RunResult> {
  const onLibvirt = who === 'ours' ? await ours(args) : await virsh(U, ...args);
  const n = await native(args);
  assert.deepEqual(triple(n), triple(onLibvirt), `${who} on libvirt vs native: ${args.join(' ')}`);
  return n;
}

/** Fields of domstats records with the values that move with the guest (its statistics, QEMU's RSS, times) masked. */
function statsShape(text: string): string {
  return text.replace(/^( {2}balloon\.(?:swap_in|swap_out|major_fault|minor_fault|unused|available|usable|last-update|disk_caches|rss)=)\d+$/gm, '$1#')
    .replace(/^( {2}dirtyrate\.(?:calc_start_time|megabytes_per_second)=)\d+$/gm, '$1#');
}
/** libvirt's device XML carries a guest address (PCI or DIMM slot) virtmem does not keep. */
const noAddress = (text: string): string => text.replace(/^ *<address [^>]*\/>\n/gm, '');

async function definitions(): Promise<[string, string]> {
  return [(await virsh(U, 'dumpxml', '--inactive', NAME)).stdout, await sb.ok('dumpxml', '--inactive', NAME)];
}

/** The guest's memory blocks online and its MemTotal (KiB), through its agent. */
async function guestMemory(agent: GuestAgent): Promise<{ online: number; memTotalKiB: number }> {
  const r = await agent.run('grep -l online /sys/devices/system/memory/memory*/state | wc -l; grep MemTotal /proc/meminfo');
  const [online, total] = r.output.trim().split('\n');
  return { online: Number(online), memTotalKiB: Number(/(\d+) kB/.exec(total ?? '')?.[1]) };
}

after(async () => {
  for (const a of agents) a.close();
  await sb.run('destroy', NAME);
  await sb.cleanup();
  await removeDomains(U, [NAME]);
  await rm(files, { recursive: true, force: true });
});

test('test:///default: domstats (every group libvirt\u2019s test driver has), memtune and numatune print what virsh prints', { skip: skipUnlessCi(libvirtdMissing(), notRoot()) }, async () => {
  const T = 'test:///default';
  for (const args of [['domstats'], ['domstats', '--state', '--balloon'], ['domstats', '--raw', 'test'], ['domstats', '--list-inactive'], ['domstats', '--vm', 'test'],
    ['domstats', '--enforce', '--vm', 'test'], ['memtune', 'test'], ['numatune', 'test'], ['numatune', 'test', '--config'], ['domdirtyrate-calc', 'test'],
    ['update-memory-device', 'test', '--print-xml'], ['domstats', 'nosuch']]) {
    const theirs = await virsh(T, ...args);
    assert.deepEqual(triple(await runCli(['-c', T, ...args])), triple(theirs), args.join(' '));
  }
});

describe('virsh memory commands, on libvirt and on virtmem\u2019s own driver', { skip, timeout: 900_000 }, () => {
  const agentSocket = join(files, 'agent.sock');
  before(async () => {
    await writeFile(join(files, 'libvirt.xml'), domainXml(agentSocket));
    await writeFile(join(files, 'native.xml'), domainXml(null));
    await writeFile(DIMM, "<memory model='dimm'>\n  <target><size unit='MiB'>128</size><node>0</node></target>\n</memory>\n");
    assert.equal((await virsh(U, 'define', join(files, 'libvirt.xml'))).code, 0);
    await sb.ok('define', join(files, 'native.xml'));
  });

  test('shut off: memtune, numatune, domstats and update-memory-device --print-xml print what virsh prints', async () => {
    for (const args of [['memtune', NAME], ['memtune', NAME, '--config'], ['memtune', NAME, '--current'], ['numatune', NAME], ['numatune', NAME, '--config'],
      ['domstats', '--state', '--balloon', NAME], ['domstats', '--balloon', NAME], ['domstats', '--state', NAME], ['domstats', '--state', '--list-inactive', NAME]]) {
      await same(args);
    }
    await same(['update-memory-device', NAME, '--print-xml'], noAddress);
    await same(['update-memory-device', NAME, '--print-xml', '--requested-size', '64M', '--config'], noAddress);
    await same(['update-memory-device', '--domain', NAME, '--print-xml', '--node', '0'], noAddress);
    const j = JSON.parse((await native(['memtune', NAME, '--json'])).stdout) as { parameters: Record<string, number | null> };
    assert.deepEqual(j.parameters, { hard_limit: null, soft_limit: null, swap_hard_limit: null });
    const s = JSON.parse((await ours(['domstats', '--balloon', NAME, '--json'])).stdout) as { domains: Array<{ name: string; stats: Record<string, number> }> };
    assert.deepEqual(s.domains, [{ name: NAME, stats: { 'balloon.current': 256 * MiB, 'balloon.maximum': 512 * MiB } }]);
  });

  test('bad values are refused in virsh\u2019s words and change nothing', async () => {
    const [libvirtBefore, nativeBefore] = await definitions();
    for (const args of [
      ['memtune', NAME, '--hard-limit', 'x'], ['memtune', NAME, '--hard-limit', '1Q'], ['memtune', NAME, '--soft-limit', '99999999999999999999'],
      ['memtune', NAME, '--min-guarantee', '1G'], ['memtune', NAME, '--live'], ['memtune', NAME, '--current', '--live'],
      ['memtune', NAME, '--hard-limit', '2G', '--swap-hard-limit', '1G', '--config'],
      ['numatune', NAME, '--mode', 'bogus'], ['numatune', NAME, '--mode', '7', '--config'], ['numatune', NAME, '--nodeset', 'x', '--config'],
      ['numatune', NAME, '--nodeset', '0,^0', '--config'], ['numatune', NAME, '--live'],
      ['update-memory-device', NAME, '--requested-size', '3M'], ['update-memory-device', NAME, '--requested-size', '1G'],
      ['update-memory-device', NAME, '--node', '1'], ['update-memory-device', NAME, '--alias', 'foo', '--node', '0'], ['update-memory-device', NAME, '--node', 'x'],
      ['update-memory-device', NAME, '--requested-size', '2Q'],
      ['domdirtyrate-calc', NAME], ['domdirtyrate-calc', NAME, '--seconds', '0'], ['domdirtyrate-calc', NAME, '--seconds', 'x'], ['domdirtyrate-calc', NAME, '--mode', 'bogus'],
      ['attach-device', NAME, DIMM], ['attach-device', NAME, join(files, 'nosuch.xml'), '--config'], ['attach-device', NAME, DIMM, '--current', '--live'],
      ['attach-device', NAME, DIMM, '--persistent', '--current'], ['detach-device', NAME, DIMM, '--config'],
      ['domstats', '--balloon', 'nosuch-domain'], ['memtune', 'nosuch-domain'],
    ]) {
      await same(args);
    }
    assert.deepEqual(await definitions(), [libvirtBefore, nativeBefore], 'neither definition changed');
  });

  test('config changes read back as virsh reads them, and go back', async () => {
    await same(['memtune', NAME, '--config', '--hard-limit', '2G', '--soft-limit', '1048576']);
    await same(['memtune', NAME, '--config']);
    await same(['memtune', NAME, '--config', '--hard-limit', '-1', '--soft-limit', '-1']);
    await same(['numatune', NAME, '--config', '--mode', 'preferred']);
    await same(['numatune', NAME, '--config']);
    await same(['numatune', NAME, '--config', '--mode', '0']);
    await same(['update-memory-device', NAME, '--config', '--requested-size', '64M']);
    await same(['update-memory-device', NAME, '--config', '--print-xml'], noAddress);
    // One difference on purpose: virtmem's current memory is what the guest boots with, the
    // requested virtio-mem included (its plan derives the request from it); libvirt's
    // <currentMemory> stays the balloon's. The maximum is the same.
    const theirs = await virsh(U, 'domstats', '--balloon', NAME);
    assert.deepEqual(triple(await ours(['domstats', '--balloon', NAME])), triple(theirs));
    assert.equal((await native(['domstats', '--balloon', NAME])).stdout, theirs.stdout.replace(`balloon.current=${256 * MiB}`, `balloon.current=${320 * MiB}`));
    await same(['update-memory-device', NAME, '--config', '--requested-size', '0']);
    await same(['domstats', '--balloon', NAME]);
    await change(['attach-device', NAME, DIMM, '--config'], 'virsh');
    await same(['domstats', '--balloon', NAME]);
    await same(['update-memory-device', NAME, '--print-xml', '--config'], noAddress);
    await same(['update-memory-device', NAME, '--print-xml', '--config', '--node', '0'], noAddress);
    await change(['detach-device', NAME, DIMM, '--config'], 'ours');
    await same(['domstats', '--balloon', NAME]);
  });

  describe('running', () => {
    let nativeAgent: GuestAgent;
    let libvirtAgent: GuestAgent;
    before(async () => {
      assert.equal((await virsh(U, 'start', NAME)).code, 0);
      await sb.ok('start', NAME);
      nativeAgent = await GuestAgent.connect(join(sb.stateDir, 'run', NAME, 'agent.sock'), { timeoutMs: 180_000 });
      agents.push(nativeAgent);
      libvirtAgent = await GuestAgent.connect(agentSocket, { timeoutMs: 180_000 });
      agents.push(libvirtAgent);
    });

    test('memtune, numatune and domstats of the running guests', async () => {
      for (const args of [['memtune', NAME], ['numatune', NAME], ['numatune', NAME, '--live'], ['domstats', '--state', NAME], ['domstats', '--state', '--list-running']]) {
        if (args.includes('--list-running')) {
          // Every running guest of each host: the same record for ours.
          const theirs = await virsh(U, ...args);
          assert.match(theirs.stdout, new RegExp(`Domain: '${NAME}'\\n {2}state\\.state=1\\n {2}state\\.reason=1\\n`));
          assert.match((await native(args)).stdout, new RegExp(`^Domain: '${NAME}'\\n {2}state\\.state=1\\n {2}state\\.reason=1\\n\\n$`));
          continue;
        }
        await same(args);
      }
      // Both guests report statistics every second: the same fields in the same order, the same sizes.
      await until('both guests reported their statistics', async () => [(await virsh(U, 'domstats', '--balloon', NAME)).stdout, (await native(['domstats', '--balloon', NAME])).stdout],
        (pair) => pair.every((t) => t.includes('balloon.last-update=')), () => {}, 180_000);
      const theirs = await virsh(U, 'domstats', '--balloon', '--state', NAME);
      assert.equal(statsShape((await ours(['domstats', '--balloon', '--state', NAME])).stdout), statsShape(theirs.stdout));
      assert.equal(statsShape((await native(['domstats', '--balloon', '--state', NAME])).stdout), statsShape(theirs.stdout));
      for (const args of [['numatune', NAME, '--nodeset', '0'], ['numatune', NAME, '--mode', 'interleave'], ['numatune', NAME, '--mode', 'strict', '--nodeset', '0-1'],
        ['domdirtyrate-calc', NAME, '--mode', 'dirty-ring']]) {
        await same(args);
      }
      // dirty-bitmap under TCG: QEMU 7.2 dies of it (libvirt passes it on); virtmem refuses it, naming why.
      const bitmap = await native(['domdirtyrate-calc', NAME, '--mode', 'dirty-bitmap']);
      assert.deepEqual([bitmap.code, bitmap.stderr], [1, "error: Operation not supported: dirty-bitmap calculation mode needs KVM's dirty page log; this guest runs under TCG (QEMU aborts on it there): use page-sampling\n"]);
      assert.match((await native(['domstate', NAME])).stdout, /^running/);
    });

    test('a memtune hard limit changed live is in each guest\u2019s memory cgroup, and memtune and dominfo show it', async () => {
      const c = controllers.memory!;
      const limitFile = c.version === 1 ? 'memory.limit_in_bytes' : 'memory.max';
      const nativeDir = join(c.root, domainCgroupPath(sb.stateDir, NAME));
      const libvirtPid = (await readFile(`/run/libvirt/qemu/${NAME}.pid`, 'utf8')).trim();
      const cg = (await readFile(`/proc/${libvirtPid}/cgroup`, 'utf8')).split('\n').find((l) => (c.version === 1 ? /^\d+:[^:]*\bmemory\b[^:]*:/.test(l) : l.startsWith('0::')))!;
      const libvirtDir = join(c.root, cg.slice(cg.indexOf(':', cg.indexOf(':') + 1) + 1));
      try {
        await same(['memtune', NAME, '--hard-limit', '1500M']);
        // Pages the guests touch from now on are charged to the cgroups whatever the kernel moved.
        for (const a of [nativeAgent, libvirtAgent]) assert.equal((await a.run('head -c 33554432 /dev/zero > /touch; rm /touch')).exitCode, 0);
        assert.equal((await readFile(join(nativeDir, limitFile), 'utf8')).trim(), String(1500 * 1024 * 1024));
        assert.equal((await readFile(join(libvirtDir, limitFile), 'utf8')).trim(), String(1500 * 1024 * 1024));
        await same(['memtune', NAME]);
        await same(['memtune', NAME, '--config']); // the definition keeps its own (none)
        for (const run of [native, ours]) {
          const line = /^Memory cgroup: +(.*)$/m.exec((await run(['dominfo', NAME])).stdout)?.[1];
          assert.match(line ?? '', /^usage \d+ KiB, hard limit 1536000 KiB$/, `${run === native ? 'native' : 'libvirt'} dominfo`);
        }
        const info = JSON.parse((await native(['dominfo', NAME, '--json'])).stdout) as { hostMemory: { cgroup: { hardLimitKiB: number; usageKiB: number } } };
        assert.equal(info.hostMemory.cgroup.hardLimitKiB, 1536000);
        assert.ok(info.hostMemory.cgroup.usageKiB > 0, 'QEMU is charged to it');
      } finally {
        await same(['memtune', NAME, '--hard-limit', '-1']);
      }
      assert.ok(Number((await readFile(join(nativeDir, limitFile), 'utf8')).trim()) > 2 ** 60 || (await readFile(join(nativeDir, limitFile), 'utf8')).trim() === 'max');
    });

    test('update-memory-device resizes the virtio-mem device live, as virsh does', async () => {
      await same(['update-memory-device', NAME, '--requested-size', '64M']);
      for (const run of [ours, native]) {
        await until('the guest plugged 64 MiB', () => run(['domstats', '--balloon', NAME]), (r) => /balloon\.current=327680$/m.test(r.stdout), () => {}, 60_000);
      }
      await same(['update-memory-device', NAME, '--requested-size', '0', '--live']);
      for (const run of [ours, native]) {
        await until('the guest unplugged it', () => run(['domstats', '--balloon', NAME]), (r) => /balloon\.current=262144$/m.test(r.stdout), () => {}, 60_000);
      }
    });

    test('domdirtyrate-calc measures, and domstats --dirtyrate reports it as virsh does', async () => {
      // A measurement runs once at a time: virsh starts the libvirt guest's, virtmem the native one's, then ours the libvirt guest's next one.
      const first = await change(['domdirtyrate-calc', NAME, '--seconds', '1'], 'virsh');
      assert.equal(first.stdout, "Start to calculate domain's memory dirty rate successfully.\n\n");
      const measured = (run: (a: string[]) => Promise<RunResult>): Promise<RunResult> =>
        until('the measurement ended', () => run(['domstats', '--dirtyrate', NAME]), (r) => /dirtyrate\.calc_status=2$/m.test(r.stdout), () => {}, 60_000);
      await measured(ours);
      await measured(native);
      assert.deepEqual(triple(await ours(['domdirtyrate-calc', NAME, '--seconds', '1'])), triple(first));
      await measured(ours);
      const theirs = await virsh(U, 'domstats', '--dirtyrate', NAME);
      assert.match(theirs.stdout, /^ {2}dirtyrate\.calc_period=1\n {2}dirtyrate\.calc_mode=page-sampling\n {2}dirtyrate\.megabytes_per_second=\d+$/m);
      assert.equal(statsShape((await ours(['domstats', '--dirtyrate', NAME])).stdout), statsShape(theirs.stdout));
      assert.equal(statsShape((await native(['domstats', '--dirtyrate', NAME])).stdout), statsShape(theirs.stdout));
    });

    test('a DIMM plugged while the guests run comes online in them, and unplugged goes away again', async () => {
      const before0 = await Promise.all([guestMemory(nativeAgent), guestMemory(libvirtAgent)]);
      const attached = await change(['attach-device', NAME, DIMM, '--live'], 'ours');
      assert.equal(attached.stdout, 'Device attached successfully\n\n');
      for (const [agent, was] of [[nativeAgent, before0[0]], [libvirtAgent, before0[1]]] as const) {
        // 128 MiB is one memory block on x86_64: onlined movable by the guest as it arrives.
        await until('the DIMM is online in the guest', () => guestMemory(agent), (m) => m.online === was.online + 1 && m.memTotalKiB === was.memTotalKiB + 128 * MiB, () => {}, 60_000);
      }
      await same(['domstats', '--balloon', NAME], (t) => statsShape(t));
      assert.match((await native(['dominfo', NAME])).stdout, /^DIMMs: +131072 KiB$/m);
      assert.match((await ours(['dominfo', NAME])).stdout, /^DIMMs: +131072 KiB$/m);
      assert.match((await native(['dominfo', NAME])).stdout, /^Used memory: +393216 KiB$/m);
      await same(['update-memory-device', NAME, '--print-xml']); // now two devices: virsh's refusal
      // The guest must offline the block before QEMU lets the DIMM go: detach waits for that.
      const detached = await change(['detach-device', NAME, DIMM, '--live'], 'virsh');
      assert.equal(detached.stdout, 'Device detached successfully\n\n');
      for (const [agent, was] of [[nativeAgent, before0[0]], [libvirtAgent, before0[1]]] as const) {
        await until('the DIMM is gone from the guest', () => guestMemory(agent), (m) => m.online === was.online && m.memTotalKiB === was.memTotalKiB, () => {}, 60_000);
      }
      await until('libvirt dropped the DIMM', async () => (await virsh(U, 'dumpxml', NAME)).stdout, (x) => !x.includes("<memory model='dimm'>"), () => {}, 60_000);
      assert.doesNotMatch((await native(['dominfo', NAME])).stdout, /^DIMMs:/m);
      await same(['domstats', '--balloon', NAME], (t) => statsShape(t));
    });
  });
});
