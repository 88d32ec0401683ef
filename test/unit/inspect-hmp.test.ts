/**
 * Parsers of QEMU monitor text, against output recorded from QEMU 7.2 on this machine
 * (test/fixtures/inspect/record.sh): registers, flat memory view, RAM blocks, address answers.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { VirtError } from '../../src/domain/errors.js';
import { parseRegisters } from '../../src/inspect/hmp-registers.js';
import { parseFlatView } from '../../src/inspect/hmp-mtree.js';
import { parseRamBlocks, ramBlockOfRegion } from '../../src/inspect/hmp-ramblock.js';
import { parseGva2gpa, parseHostAddress, parseXp } from '../../src/inspect/hmp-answers.js';
import { pagingMode } from '../../src/inspect/paging.js';

const FIXTURES = new URL('../../../test/fixtures/inspect/', import.meta.url);
const fixture = (name: string): string => readFileSync(new URL(name, FIXTURES), 'utf8');
const isVirtError = (code: string) => (e: unknown): boolean => e instanceof VirtError && e.code === code;

describe('info registers -a', () => {
  it('an idle vCPU in the kernel', () => {
    const [cpu, ...rest] = parseRegisters(fixture('plain-registers-idle.txt'));
    assert.equal(rest.length, 0);
    assert.ok(cpu);
    assert.equal(cpu.cpu, 0);
    assert.equal(cpu.cpl, 0);
    assert.equal(cpu.halted, true);
    assert.equal(cpu.rip >> 63n, 1n, 'kernel address');
    assert.equal(cpu.cr0, 0x80050033n);
    assert.equal(cpu.cr4, 0x751eb0n);
    assert.equal(cpu.efer, 0xd01n);
    assert.equal(cpu.cr3 & 0xfffn, 0n);
    assert.ok(cpu.gsBase > 0n);
    assert.equal(pagingMode(cpu), '5-level');
  });
  it('a vCPU running vmhelper in user mode', () => {
    const [cpu] = parseRegisters(fixture('plain-registers-user.txt'));
    assert.equal(cpu?.cpl, 3);
    assert.equal(cpu?.halted, false);
    assert.equal(cpu?.rip, 0x401c20n);
    assert.equal(cpu?.rsp, 0x7fff3c86c008n);
    assert.equal(cpu?.gsBase, 0n);
  });
  it('two vCPUs', () => {
    const cpus = parseRegisters(fixture('smp-registers.txt'));
    assert.deepEqual(cpus.map((c) => c.cpu), [0, 1]);
    assert.ok(cpus.every((c) => c.cr3 > 0n && pagingMode(c) === '5-level'));
  });
  it('LF line ends parse the same', () => {
    assert.deepEqual(parseRegisters(fixture('smp-registers.txt').replace(/\r/g, '')), parseRegisters(fixture('smp-registers.txt')));
  });
  it('32-bit names (EIP, ESP) are read too', () => {
    const [cpu] = parseRegisters('CPU#0\nEAX=00000000 EIP=000fff00 ESP=00006f00 CPL=0 HLT=0\nCR0=00000011 CR2=00000000 CR3=00000000 CR4=00000000\n');
    assert.equal(cpu?.rip, 0xfff00n);
    assert.equal(cpu?.efer, 0n);
    assert.equal(pagingMode(cpu!), 'off');
  });
  it('other text is refused', () => {
    assert.throws(() => parseRegisters('unknown command: info registerz\r\n'), isVirtError('OPERATION_FAILED'));
    assert.throws(() => parseRegisters('CPU#0\nRAX=0\n'), isVirtError('OPERATION_FAILED'));
  });
});

describe('info mtree -f', () => {
  it('the guest-physical view of a plain guest', () => {
    const r = parseFlatView(fixture('plain-mtree-f.txt'));
    assert.deepEqual(r.slice(0, 5).map((x) => [x.start, x.end, x.type, x.region, x.offset]), [
      [0x0n, 0xc2fffn, 'ram', 'pc.ram', 0n],
      [0xc3000n, 0xe7fffn, 'rom', 'pc.ram', 0xc3000n],
      [0xe8000n, 0xeffffn, 'ram', 'pc.ram', 0xe8000n],
      [0xf0000n, 0xfffffn, 'rom', 'pc.ram', 0xf0000n],
      [0x100000n, 0x1fffffffn, 'ram', 'pc.ram', 0x100000n],
    ]);
    const last = r[r.length - 1]!;
    assert.deepEqual([last.start, last.end, last.type, last.region], [0xfffc0000n, 0xffffffffn, 'rom', 'pc.bios']);
    const apic = r.find((x) => x.region === 'apic-msi');
    assert.equal(apic?.priority, 4096);
    assert.equal(apic?.type, 'i/o');
    assert.ok(r.every((x, i) => i === 0 || x.start > r[i - 1]!.end), 'sorted, disjoint');
  });
  it('finds the "memory" view when it is not the first (virtio-mem guest)', () => {
    const r = parseFlatView(fixture('vmem-mtree-f.txt'));
    const vm = r.find((x) => x.region === 'mem-vmem0');
    assert.deepEqual([vm?.start, vm?.end, vm?.type], [0x100000000n, 0x13fffffffn, 'ram']);
    assert.ok(!r.some((x) => x.region === 'dma-chan'), 'the I/O port view is not mixed in');
  });
  it('other address spaces can be asked for', () => {
    assert.ok(parseFlatView(fixture('plain-mtree-f.txt'), 'I/O').some((x) => x.region === 'serial'));
  });
  it('a missing view is an error', () => {
    assert.throws(() => parseFlatView(fixture('plain-mtree-f.txt'), 'nope'), isVirtError('OPERATION_FAILED'));
  });
  it('nv- prefix, names with spaces', () => {
    const [r] = parseFlatView('FlatView #0\n AS "memory", root: system\n  0000000000001000-0000000000001fff (prio 0, nv-ram): my region @0000000000000010\n');
    assert.deepEqual([r?.nonVolatile, r?.type, r?.region, r?.offset], [true, 'ram', 'my region', 0x10n]);
  });
});

describe('info ramblock', () => {
  it('plain guest', () => {
    const b = parseRamBlocks(fixture('plain-ramblock.txt'));
    assert.deepEqual(b.map((x) => x.name), ['pc.ram', '/rom@etc/acpi/tables', 'pc.bios', 'pc.rom', '/rom@etc/table-loader', '/rom@etc/acpi/rsdp']);
    assert.deepEqual(b[0], { name: 'pc.ram', pageSizeBytes: 4096, ramAddr: 0n, usedBytes: 512 * 1024 * 1024, maxBytes: 512 * 1024 * 1024 });
    assert.equal(b[1]?.usedBytes, 0x20000);
    assert.equal(b[1]?.maxBytes, 0x200000);
  });
  it('virtio-mem guest: a device-owned block carries the device path', () => {
    const b = parseRamBlocks(fixture('vmem-ramblock.txt'));
    assert.equal(b[0]?.name, '0000:00:03.0/mem-vmem0');
    assert.equal(ramBlockOfRegion(b, 'mem-vmem0')?.name, '0000:00:03.0/mem-vmem0');
    assert.equal(ramBlockOfRegion(b, 'pc.ram')?.ramAddr, 0x40000000n);
    assert.equal(ramBlockOfRegion(b, 'vmem0'), undefined);
  });
  it('huge page sizes', () => {
    const [b] = parseRamBlocks('              Block Name    PSize              Offset               Used              Total\n                  pc.ram    2 MiB  0x0000000000000000 0x0000000020000000 0x0000000020000000\n');
    assert.equal(b?.pageSizeBytes, 2 * 1024 * 1024);
  });
  it('other text is refused', () => {
    assert.throws(() => parseRamBlocks('unknown command\r\n'), isVirtError('OPERATION_FAILED'));
  });
});

describe('address answers', () => {
  it('gpa2hva', () => {
    const lines = fixture('plain-gpa2hva.txt').split('\n').filter((l) => l.trim());
    const answers = lines.map(parseHostAddress);
    assert.equal(answers.length, 4);
    const [a0, , a2, bios] = answers;
    assert.ok(a0 && 'address' in a0 && a2 && 'address' in a2);
    assert.equal(a0.region, 'pc.ram');
    assert.equal(a2.address - a0.address, 0x100000n, 'one mapping: host offsets follow guest offsets');
    assert.equal(bios && 'region' in bios && bios.region, 'pc.bios');
  });
  it('gpa2hva reasons', () => {
    assert.deepEqual(parseHostAddress(fixture('plain-gpa2hva-hole.txt')), { reason: 'No memory is mapped at address 0x20000000' });
    assert.deepEqual(parseHostAddress(fixture('plain-gpa2hva-device.txt')), { reason: 'Memory at address 0xfec00000 is not RAM' });
  });
  it('gpa2hpa', () => {
    const a = parseHostAddress(fixture('plain-gpa2hpa.txt'));
    assert.ok('address' in a && a.address > 0n && a.region === 'pc.ram');
  });
  it('gva2gpa', () => {
    const m = parseGva2gpa(fixture('plain-gva2gpa-mapped.txt'));
    assert.ok('address' in m && m.address > 0n);
    assert.deepEqual(parseGva2gpa(fixture('plain-gva2gpa-unmapped.txt')), { reason: 'Unmapped' });
  });
  it('xp: 64-bit words and bytes give the same little-endian bytes', () => {
    const g = parseXp(fixture('plain-xp-gx.txt'), 'g', 32);
    const b = parseXp(fixture('plain-xp-bx.txt'), 'b', 12);
    assert.deepEqual([...g.subarray(0, 12)], [...b]);
    assert.equal(Buffer.from(g).readBigUInt64LE(0) & 1n, 1n, 'the first top-level entry is present');
  });
  it('xp: a short dump is an error', () => {
    assert.throws(() => parseXp(fixture('plain-xp-gx.txt'), 'g', 64), isVirtError('OPERATION_FAILED'));
  });
});
