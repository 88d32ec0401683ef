/**
 * `virtmem translate` and `virtmem memmap` on real guests, checked against what the guest
 * itself says (vmhelper's /proc/self/pagemap, /proc/kallsyms), what QEMU says (gva2gpa,
 * gpa2hva, gpa2hpa, info mtree -f, info ramblock, query-memory-devices) and the host's own
 * memory (/proc/PID/mem of QEMU at the reported host address; the tests run as root).
 *
 * vmhelper runs in the guest as `vmhelper pattern --spin`: it busy-loops in user mode, so on
 * the single vCPU `info registers` shows its CR3 whenever RIP is at its loop and CPL is 3.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sandbox } from '../helpers/cli.js';
import { findDefaultGuest } from '../../src/guest/build.js';
import { GuestAgent } from '../../src/guest/agent.js';
import { skipUnlessCi } from '../helpers/skip.js';

const sb = await sandbox();
const agents: GuestAgent[] = [];
after(async () => {
  for (const a of agents) a.close();
  await sb.cleanup();
});

const guest = await findDefaultGuest();
const skip = skipUnlessCi(!guest?.hasVmhelper && 'the built-in guest has no /bin/vmhelper (needs gcc when building it)');

const MiB = 1024 * 1024;
const PATTERN = 'VIRTMEM!VIRTMEM!';

/** CLI JSON, checked field by field. */
type Json = any; // eslint-style escape hatch: the shape is what the assertions check

const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** HMP output through the CLI, exactly as QEMU sent it. */
async function hmp(dom: string, command: string): Promise<string> {
  return (JSON.parse(await sb.ok('qemu-monitor-command', dom, '--hmp', command, '--json')) as { output: string }).output;
}

async function translateJson(...args: string[]): Promise<Json> {
  return JSON.parse(await sb.ok('translate', ...args, '--json'));
}

/** Waits (bounded) until the guest's agent answers; keeps the connection for the test. */
async function agentOf(dom: string): Promise<GuestAgent> {
  const a = await GuestAgent.connect(join(sb.stateDir, 'run', dom, 'agent.sock'), { timeoutMs: 120_000 });
  agents.push(a);
  return a;
}

interface Helper {
  va: bigint;
  gpa: bigint;
  devmem: Map<bigint, bigint>;
  spin: bigint;
}

/** Starts `vmhelper pattern --spin` in the guest and reads its addresses. */
async function startHelper(agent: GuestAgent, devmem: bigint[] = []): Promise<Helper> {
  const args = devmem.map((pa) => `--devmem ${hex(pa)}`).join(' ');
  const r = await agent.run(
    `/bin/vmhelper pattern ${args} --spin >/tmp/p.out 2>&1 & i=0; ` +
      'while ! grep -q spin= /tmp/p.out && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; cat /tmp/p.out',
    { timeoutMs: 90_000 },
  );
  const m = /^va=0x([0-9a-f]+) gpa=0x([0-9a-f]+) pid=\d+$/m.exec(r.output);
  const spin = /^spin=0x([0-9a-f]+)$/m.exec(r.output);
  assert.ok(m && spin, `vmhelper printed no addresses: ${r.output}`);
  const dm = new Map<bigint, bigint>();
  for (const d of r.output.matchAll(/^devmem_va=0x([0-9a-f]+) pa=0x([0-9a-f]+)$/gm)) dm.set(BigInt(`0x${d[2]}`), BigInt(`0x${d[1]}`));
  return { va: BigInt(`0x${m[1]}`), gpa: BigInt(`0x${m[2]}`), devmem: dm, spin: BigInt(`0x${spin[1]}`) };
}

/**
 * The CR3 of the spinning helper: sample the single vCPU until it is in user mode at the
 * helper's loop (bounded; it is there most of the time).
 */
async function helperCr3(dom: string, h: Helper): Promise<bigint> {
  for (let i = 0; i < 100; i++) {
    const regs = await hmp(dom, 'info registers');
    const rip = BigInt(`0x${/RIP=([0-9a-f]+)/.exec(regs)![1]}`);
    if (/CPL=3/.test(regs) && rip >= h.spin && rip < h.spin + 64n) return BigInt(`0x${/CR3=([0-9a-f]+)/.exec(regs)![1]}`);
  }
  throw new Error('the vCPU never showed the spinning helper in 100 samples');
}

/** A kernel symbol's address from the guest's /proc/kallsyms. */
async function kernelSymbol(agent: GuestAgent, name: string): Promise<bigint> {
  const r = await agent.run(`grep -w ${name} /proc/kallsyms`);
  const m = /^([0-9a-f]{16}) [dDtTbBrR] /m.exec(r.output);
  assert.ok(m, `no ${name} in kallsyms: ${r.output}`);
  return BigInt(`0x${m[1]}`);
}

/** The kernel's direct-map base, read through the translation of its own variable. */
async function pageOffsetBase(dom: string, agent: GuestAgent): Promise<bigint> {
  const t = await translateJson(dom, hex(await kernelSymbol(agent, 'page_offset_base')));
  assert.equal(t.mapped, true);
  return Buffer.from(t.target.bytes, 'hex').readBigUInt64LE(0);
}

/** QEMU's own answer to gva2gpa (walks with the vCPU's current CR3). */
async function qemuGva2gpa(dom: string, gva: bigint): Promise<string> {
  return (await hmp(dom, `gva2gpa ${hex(gva)}`)).trim();
}

async function readHostMemory(pid: number, hva: string, length: number): Promise<string> {
  const fh = await open(`/proc/${pid}/mem`, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, Number(BigInt(hva)));
    return buf.toString('latin1');
  } finally {
    await fh.close();
  }
}

/** The "memory" address space's flat view, parsed here independently of src/inspect. */
function flatView(text: string): Array<{ start: string; end: string; type: string; name: string }> {
  const out = [];
  let inView = false;
  for (const line of text.replace(/\r/g, '').split('\n')) {
    if (line.startsWith('FlatView')) inView = false;
    if (/^ AS "memory"/.test(line)) inView = true;
    const m = /^\s+([0-9a-f]{16})-([0-9a-f]{16}) \(prio -?\d+, ([a-z/]+)\): (\S+)/.exec(line);
    if (inView && m) out.push({ start: hex(BigInt(`0x${m[1]}`)), end: hex(BigInt(`0x${m[2]}`)), type: m[3]!, name: m[4]! });
  }
  return out;
}

/** memmap agrees with `info mtree -f` and `info ramblock`, and with gpa2hva for every RAM range. */
async function assertMemmapAgrees(dom: string, map: Json): Promise<void> {
  const listed = map.regions.filter((r: Json) => r.kind !== 'hole');
  assert.deepEqual(listed.map((r: Json) => ({ start: r.start, end: r.end, type: r.qemuType, name: r.name })), flatView(await hmp(dom, 'info mtree -f')));
  for (let i = 1; i < map.regions.length; i++) {
    assert.equal(BigInt(map.regions[i].start), BigInt(map.regions[i - 1].end) + 1n, 'holes fill every gap');
  }
  const blocks = (await hmp(dom, 'info ramblock')).replace(/\r/g, '').split('\n')
    .map((l) => /^\s*(\S+)\s+\d+ \w+\s+0x[0-9a-f]+ 0x([0-9a-f]+) 0x([0-9a-f]+)/.exec(l))
    .filter((m) => m !== null)
    .map((m) => ({ name: m[1], usedBytes: Number(BigInt(`0x${m[2]}`)), maxBytes: Number(BigInt(`0x${m[3]}`)) }));
  assert.deepEqual(map.ramBlocks.map((b: Json) => ({ name: b.name, usedBytes: b.usedBytes, maxBytes: b.maxBytes })), blocks);
  for (const r of listed.filter((x: Json) => x.kind === 'ram' || x.kind === 'rom')) {
    const qemu = /is (0x[0-9a-f]+)/.exec(await hmp(dom, `gpa2hva ${r.start}`))?.[1];
    assert.equal(r.hva, qemu, `HVA of ${r.name} at ${r.start}`);
    assert.ok(r.residentBytes >= 0 && r.residentBytes <= r.sizeBytes);
  }
}

describe('translate and memmap on the built-in guest', { skip }, () => {
  let agent: GuestAgent;
  let h: Helper;
  let cr3: bigint;
  let qemuPid: number;

  before(async () => {
    await sb.ok('new', 'ins', '--memory', '512M', '--cpu', 'maximum'); // LA57: 5-level paging
    await sb.ok('start', 'ins');
    agent = await agentOf('ins');
    // 0x30000000: an unused hole of a 512 MiB guest; 0xfed00000: the HPET.
    h = await startHelper(agent, [0x3000_0000n, 0xfed0_0000n]);
    cr3 = await helperCr3('ins', h);
  });

  test('a user buffer: same GPA as the guest\'s pagemap, the pattern at the HVA, the HPA QEMU reports', async () => {
    const t = await translateJson('ins', hex(h.va), '--cr3', hex(cr3));
    qemuPid = t.qemuPid;
    assert.equal(t.mapped, true);
    assert.equal(t.gpa, hex(h.gpa));
    assert.equal(t.walk.mode, '5-level');
    assert.deepEqual(t.walk.steps.map((s: Json) => s.level), ['PML5', 'PML4', 'PDPT', 'PD', 'PT']);
    assert.equal(t.walk.pageSizeBytes, 4096);
    assert.deepEqual(t.walk.access, { writable: true, user: true, executable: false });
    assert.equal(t.readVia, 'proc-mem');
    assert.equal(t.target.region.name, 'pc.ram');
    assert.equal(Buffer.from(t.target.bytes, 'hex').toString('latin1'), PATTERN);
    assert.equal(await readHostMemory(t.qemuPid, t.hva, 16), PATTERN, 'the pattern is at the HVA in the QEMU process');
    assert.equal(/is (0x[0-9a-f]+)/.exec(await hmp('ins', `gpa2hva ${t.gpa}`))?.[1], t.hva);
    assert.equal(/is (0x[0-9a-f]+)/.exec(await hmp('ins', `gpa2hpa ${t.gpa}`))?.[1], t.hpa, 'HPA equals QEMU\'s gpa2hpa');
  });

  test('read through the monitor instead: the same walk', async () => {
    const direct = await translateJson('ins', hex(h.va), '--cr3', hex(cr3));
    const viaMonitor = await translateJson('ins', hex(h.va), '--cr3', hex(cr3), '--via', 'monitor');
    assert.equal(viaMonitor.readVia, 'monitor');
    assert.deepEqual(viaMonitor.walk, direct.walk);
    assert.equal(viaMonitor.target.bytes, direct.target.bytes);
  });

  test('readable output: the chain from top to bottom', async () => {
    const text = await sb.ok('translate', 'ins', hex(h.va), '--cr3', hex(cr3));
    const at = (s: string): number => text.indexOf(s);
    for (const s of ['Page-table walk', 'PML5', 'PML4', 'PDPT', ' PD ', ' PT ', '  GVA ', '  GPA ', '  in  region pc.ram', '  HVA ', '  HPA ', PATTERN]) {
      assert.ok(at(s) >= 0, `'${s}' in:\n${text}`);
    }
    assert.ok(at('PML5') < at(' PT ') && at(' PT ') < at('  GVA ') && at('  GVA ') < at('  GPA ') && at('  GPA ') < at('  HVA ') && at('  HVA ') < at('  HPA '));
    assert.match(text, new RegExp(`GPA 0x0*${h.gpa.toString(16)}  4 KiB page`));
  });

  test('kernel direct-map addresses: the same buffer, and huge pages shown', async () => {
    const pob = await pageOffsetBase('ins', agent);
    // The kernel half is the same in every process: the vCPU's own CR3 serves.
    const buffer = await translateJson('ins', hex(pob + h.gpa));
    assert.equal(buffer.cr3Source, 'vcpu');
    assert.equal(buffer.gpa, hex(h.gpa));
    assert.equal(Buffer.from(buffer.target.bytes, 'hex').toString('latin1'), PATTERN);
    assert.deepEqual(buffer.walk.access, { writable: true, user: false, executable: false });
    assert.equal(await qemuGva2gpa('ins', pob + h.gpa), `gpa: ${buffer.gpa}`, 'QEMU\'s own walk agrees');
    // Most of the direct map uses 2 MiB (or 1 GiB) pages; the kernel splits some into 4 KiB
    // pages (around reserved ranges, e.g. the top of a 512 MiB guest), so look at several.
    let huge: Json = null;
    for (const offset of [h.gpa, 0x1000_0000n, 0x0800_0000n, 0x0400_0000n, 0x1800_0000n]) {
      const t = await translateJson('ins', hex(pob + offset));
      assert.equal(t.gpa, hex(offset), `direct map + ${hex(offset)}`);
      assert.equal(await qemuGva2gpa('ins', pob + offset), `gpa: ${t.gpa}`);
      if (t.walk.pageSizeBytes >= 2 * MiB) {
        huge = t;
        break;
      }
    }
    assert.ok(huge, 'some direct-map address is in a huge page');
    const leaf = huge.walk.steps[huge.walk.steps.length - 1];
    assert.ok(leaf.flags.hugePage && (leaf.level === 'PD' || leaf.level === 'PDPT'));
    assert.equal(BigInt(huge.walk.page) % BigInt(huge.walk.pageSizeBytes), 0n, 'the frame is aligned to its size');
    const text = await sb.ok('translate', 'ins', huge.gva);
    assert.match(text, /huge-page/);
    assert.match(text, /(2 MiB|1 GiB) page at/);
  });

  test('kernel text agrees with QEMU\'s gva2gpa', async () => {
    const sym = await kernelSymbol(agent, 'page_offset_base');
    const t = await translateJson('ins', hex(sym));
    assert.equal(await qemuGva2gpa('ins', sym), `gpa: ${t.gpa}`);
  });

  test('an unmapped address: where the walk stopped', async () => {
    const r = await sb.run('translate', 'ins', '0x1000', '--cr3', hex(cr3), '--json');
    assert.equal(r.code, 0, r.stderr);
    const t = JSON.parse(r.stdout) as Json;
    assert.equal(t.mapped, false);
    assert.equal(t.walk.outcome, 'not-present');
    assert.ok(['PML5', 'PML4', 'PDPT', 'PD', 'PT'].includes(t.walk.stoppedAt));
    assert.equal(t.walk.steps[t.walk.steps.length - 1].flags.present, false);
    assert.equal(await qemuGva2gpa('ins', 0x1000n), 'Unmapped');
    const text = await sb.ok('translate', 'ins', '0x1000', '--cr3', hex(cr3));
    assert.match(text, new RegExp(`0x1000 is not mapped: the ${t.walk.stoppedAt} entry \\(index \\d+\\) is not present`));
  });

  test('non-canonical addresses; 57-bit addresses are canonical with LA57', async () => {
    const t = await translateJson('ins', '0x0100000000000000');
    assert.equal(t.walk.outcome, 'non-canonical');
    assert.equal(t.walk.virtualAddressBits, 57);
    assert.equal(t.walk.steps.length, 0);
    assert.match(await sb.ok('translate', 'ins', '0x0100000000000000'), /not a canonical address under 5-level paging/);
    // Non-canonical with 4-level paging, but a valid (unmapped) user address with 5-level.
    assert.equal((await translateJson('ins', '0x0000800000000000', '--cr3', hex(cr3))).walk.outcome, 'not-present');
  });

  test('addresses outside guest RAM: a mapped hole, a mapped device, a page table in a hole', async () => {
    const hole = await translateJson('ins', hex(h.devmem.get(0x3000_0000n)!), '--cr3', hex(cr3));
    assert.equal(hole.mapped, true);
    assert.equal(hole.gpa, '0x30000000');
    assert.equal(hole.target.region.kind, 'hole');
    assert.equal(hole.hva, null);
    assert.equal(hole.hpa, null);
    assert.match(hole.target.notMemory, /not guest RAM.*hole/);
    const hpet = await translateJson('ins', hex(h.devmem.get(0xfed0_0000n)!), '--cr3', hex(cr3));
    assert.equal(hpet.gpa, '0xfed00000');
    assert.deepEqual([hpet.target.region.kind, hpet.target.region.name], ['device', 'hpet']);
    assert.equal(hpet.target.bytes, null, 'device memory is not read');
    assert.match(await sb.ok('translate', 'ins', hex(h.devmem.get(0xfed0_0000n)!), '--cr3', hex(cr3)), /device region "hpet"/);
    const table = await translateJson('ins', '0x1000', '--cr3', '0x40000000');
    assert.equal(table.walk.outcome, 'table-unreadable');
    assert.equal(table.walk.stoppedAt, 'PML5');
    assert.match(table.walk.reason, /0x40000000 is not guest RAM.*hole/);
  });

  test('bad input is refused with a reason', async () => {
    const bad = await sb.run('translate', 'ins', 'xyz');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid address 'xyz'/);
    const big = await sb.run('translate', 'ins', '0x1ffffffffffffffff');
    assert.equal(big.code, 1);
    assert.match(big.stderr, /at most 64 bits/);
    const cpu = await sb.run('translate', 'ins', '0x1000', '--cpu', '3');
    assert.equal(cpu.code, 1);
    assert.match(cpu.stderr, /vCPU 3 does not exist/);
    const via = await sb.run('translate', 'ins', '0x1000', '--via', 'ssh');
    assert.equal(via.code, 1);
    assert.match(via.stderr, /invalid --via/);
    await sb.ok('new', 'off', '--memory', '256M');
    const off = await sb.run('memmap', 'off');
    assert.equal(off.code, 1);
    assert.match(off.stderr, /domain is not running/);
    const none = await sb.run('translate', 'nosuch', '0x1000');
    assert.equal(none.code, 1);
    assert.match(none.stderr, /failed to get domain 'nosuch'/);
  });

  test('memmap agrees with info mtree -f and info ramblock', async () => {
    const map = JSON.parse(await sb.ok('memmap', 'ins', '--json')) as Json;
    assert.equal(map.qemuPid, qemuPid);
    await assertMemmapAgrees('ins', map);
    const main = map.regions.find((r: Json) => r.name === 'pc.ram' && r.start === '0x100000');
    assert.ok(main.residentBytes > 0, 'a booted guest has touched some RAM');
    assert.deepEqual(map.memoryDevices, []);
    const text = await sb.ok('memmap', 'ins');
    assert.match(text, /0x0000000000100000 +0x000000001fffffff +511 MiB +ram +pc\.ram @0x100000/);
    assert.match(text, /hole/);
    assert.match(text, /device \(i\/o\) +hpet/);
  });
});

describe('memmap and translate with virtio-mem', { skip }, () => {
  const xml = `<domain type='qemu'>
  <name>vmem</name>
  <memory unit='MiB'>1536</memory>
  <currentMemory unit='MiB'>512</currentMemory>
  <maxMemory slots='4' unit='GiB'>4</maxMemory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <cpu><numa><cell id='0' cpus='0' memory='512' unit='MiB'/></numa></cpu>
  <devices>
    <memory model='virtio-mem'><target><size unit='GiB'>1</size><block unit='MiB'>2</block><requested unit='MiB'>0</requested></target></memory>
  </devices>
</domain>
`;
  let agent: GuestAgent;

  before(async () => {
    const file = join(sb.stateDir, 'vmem.xml');
    await writeFile(file, xml);
    await sb.ok('define', file);
    await sb.ok('start', 'vmem');
    agent = await agentOf('vmem');
  });

  test('the virtio-mem region, before and after a plug', async () => {
    const before = JSON.parse(await sb.ok('memmap', 'vmem', '--json')) as Json;
    await assertMemmapAgrees('vmem', before);
    assert.deepEqual(before.memoryDevices.map((d: Json) => [d.model, d.id, d.regionBytes, d.pluggedBytes]), [['virtio-mem', 'vmem0', 1024 * MiB, 0]]);
    const region = before.regions.find((r: Json) => r.memoryDevice);
    assert.deepEqual([region.start, region.end, region.kind, region.ramBlock], ['0x100000000', '0x13fffffff', 'ram', '0000:00:03.0/mem-vmem0']);

    await sb.ok('qemu-monitor-command', 'vmem', '{"execute":"qom-set","arguments":{"path":"/machine/peripheral/vmem0","property":"requested-size","value":268435456}}');
    let plugged = 0;
    for (let i = 0; i < 200 && plugged !== 256 * MiB; i++) {
      const r = JSON.parse(await sb.ok('qemu-monitor-command', 'vmem', '{"execute":"query-memory-devices"}')) as Json;
      plugged = r.return[0].data.size;
    }
    assert.equal(plugged, 256 * MiB, 'the guest plugged 256 MiB');

    const after = JSON.parse(await sb.ok('memmap', 'vmem', '--json')) as Json;
    await assertMemmapAgrees('vmem', after);
    assert.deepEqual(after.memoryDevices.map((d: Json) => [d.pluggedBytes, d.requestedBytes, d.blockSizeBytes]), [[256 * MiB, 256 * MiB, 2 * MiB]]);
    const text = await sb.ok('memmap', 'vmem');
    assert.match(text, /virtio-mem vmem0 at 0x100000000-0x13fffffff: 256 MiB of 1 GiB plugged \(requested 256 MiB, blocks of 2 MiB\)/);
    assert.match(text, /mem-vmem0 \(virtio-mem vmem0\)/);
  });

  test('a direct-map address of plugged memory lands in the virtio-mem region', async () => {
    const pob = await pageOffsetBase('vmem', agent);
    const t = await translateJson('vmem', hex(pob + 0x1_0000_0000n));
    assert.equal(t.gpa, '0x100000000');
    assert.equal(t.target.region.memoryDevice.model, 'virtio-mem');
    assert.equal(t.target.ramBlockOffset, '0x0');
    assert.equal(/is (0x[0-9a-f]+)/.exec(await hmp('vmem', 'gpa2hva 0x100000000'))?.[1], t.hva);
    assert.equal(await qemuGva2gpa('vmem', pob + 0x1_0000_0000n), 'gpa: 0x100000000');
  });
});

describe('KPTI: a process\'s user CR3 (guest booted with pti=on)', { skip }, () => {
  test('a kernel address is walked in the kernel copy of the page tables, and the output says so', async () => {
    await sb.ok('new', 'pti', '--memory', '512M', '--kernel', guest!.kernelPath, '--initrd', guest!.initrdPath, '--cmdline', `${guest!.cmdline} pti=on`);
    await sb.ok('start', 'pti');
    const agent = await agentOf('pti');
    assert.match((await agent.run('dmesg | grep "page tables isolation"')).output, /enabled/);
    const h = await startHelper(agent);
    const userCr3 = await helperCr3('pti', h);
    assert.equal(userCr3 & 0x1000n, 0x1000n, 'with KPTI, user mode runs on the user copy (CR3 bit 12)');
    const user = await translateJson('pti', hex(h.va), '--cr3', hex(userCr3));
    assert.equal(user.gpa, hex(h.gpa), 'user addresses translate in the user copy');
    assert.deepEqual(user.notes, []);
    const sym = hex(await kernelSymbol(agent, 'page_offset_base'));
    const viaUser = await translateJson('pti', sym, '--cr3', hex(userCr3));
    const viaKernel = await translateJson('pti', sym, '--cr3', hex(userCr3 & ~0x1000n));
    assert.equal(viaUser.mapped, true);
    assert.equal(viaUser.gpa, viaKernel.gpa);
    assert.equal(viaUser.walk.rootTable, hex(userCr3 & ~0x1000n));
    assert.match(viaUser.notes.join(' '), /KPTI/);
    assert.match(await sb.ok('translate', 'pti', sym, '--cr3', hex(userCr3)), /Note: .*KPTI.*kernel copy 4 KiB below/);
  });
});
