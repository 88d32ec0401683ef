/**
 * The pure parts of the default-guest build and the agent framing, plus the cache lookup on a
 * temp directory. No apt, no QEMU: these run in milliseconds.
 */

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { frameCommand, frameProbe, hasProbeReply, parseCommandReply, parseMeminfo } from '../../src/guest/agent-protocol.js';
import { buildDefaultGuest, DEFAULT_GUEST_CMDLINE, defaultGuestDir, defaultGuestSourcesDigest, findDefaultGuest, pickKernelPackage } from '../../src/guest/build.js';
import { elfIsStatic, elfSection, parseModinfo } from '../../src/guest/elf.js';
import { GuestBuildError } from '../../src/guest/errors.js';
import { DEFAULT_GUEST_MODULES, defaultGuestDiskProblem, parseDepends, parseModulesBuiltin, planModules, type ModuleFile } from '../../src/guest/kernel-modules.js';
import { parseGuestManifest, serialiseGuestManifest, type GuestManifest } from '../../src/guest/manifest.js';

test('pickKernelPackage takes the versioned cloud kernel from apt-cache depends output', () => {
  const out = 'linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n';
  assert.equal(pickKernelPackage(out), 'linux-image-6.1.0-56-cloud-amd64');
  assert.equal(pickKernelPackage('linux-image-cloud-amd64\n |Depends: linux-image-6.12.9-cloud-amd64\n'), 'linux-image-6.12.9-cloud-amd64');
  assert.equal(pickKernelPackage('linux-image-cloud-amd64\n  Depends: <linux-image-6.1.0-56-cloud-amd64>\n'), null);
  assert.equal(pickKernelPackage('linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-amd64\n'), null);
  assert.equal(pickKernelPackage(''), null);
});

test('planModules orders dependencies first, skips built-ins, reports missing', () => {
  const f = (depends: string[]): ModuleFile => ({ path: '/x.ko', depends });
  const files = new Map<string, ModuleFile>([
    ['virtio_ring', f([])],
    ['virtio', f(['virtio_ring'])],
    ['virtio_pci_legacy_dev', f([])],
    ['virtio_pci_modern_dev', f([])],
    ['virtio_pci', f(['virtio_ring', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio'])],
    ['virtio_balloon', f(['virtio', 'virtio_ring'])],
    ['virtio_mem', f(['virtio', 'virtio_ring'])],
    // As `modinfo -F depends` shows in linux-image-6.1.0-57-cloud-amd64 (CONFIG_VIRTIO_BLK=m).
    ['virtio_blk', f(['virtio', 'virtio_ring'])],
    ['evdev', f([])],
  ]);
  // Asked for in reverse: dependencies must still come first.
  const plan = planModules(['virtio_mem', 'virtio_pci', 'virtio-balloon', 'evdev', 'button', 'nope'], new Set(['button']), files);
  const order = plan.load.map((m) => m.name);
  assert.deepEqual(order, ['virtio_ring', 'virtio', 'virtio_mem', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'virtio_balloon', 'evdev']);
  assert.deepEqual(plan.builtin, ['button']);
  assert.deepEqual(plan.missing, ['nope']);
  // The default list as the facts give it is already in dependency order.
  const all = planModules(DEFAULT_GUEST_MODULES, new Set(['button']), files);
  assert.deepEqual(all.load.map((m) => m.name), DEFAULT_GUEST_MODULES.filter((m) => m !== 'button'));
});

test('defaultGuestDiskProblem: the default guest sees virtio disks, and only with virtio_blk', () => {
  const vda = { target: 'vda', bus: 'virtio' };
  assert.equal(defaultGuestDiskProblem(DEFAULT_GUEST_MODULES, []), null);
  assert.equal(defaultGuestDiskProblem(DEFAULT_GUEST_MODULES, [vda, { target: 'vdb', bus: 'virtio' }]), null);
  assert.equal(defaultGuestDiskProblem(['virtio', 'virtio_blk'], [vda]), null, 'built in counts as well as loaded');
  assert.deepEqual(defaultGuestDiskProblem(['virtio', 'virtio_mem'], [vda]), { target: 'vda', reason: 'module' });
  assert.deepEqual(defaultGuestDiskProblem(DEFAULT_GUEST_MODULES, [vda, { target: 'sda', bus: 'sata' }]), { target: 'sda', reason: 'bus' });
  assert.equal(defaultGuestDiskProblem(['virtio'], []), null, 'a guest without virtio_blk is fine without disks');
});

test('parseModulesBuiltin and parseDepends normalise names', () => {
  const b = parseModulesBuiltin('kernel/drivers/virtio/virtio.ko\nkernel/drivers/char/hw_random/virtio-rng.ko\n\n');
  assert.deepEqual([...b], ['virtio', 'virtio_rng']);
  assert.deepEqual(parseDepends(['virtio_ring,virtio-pci,', '']), ['virtio_ring', 'virtio_pci']);
  assert.deepEqual(parseDepends(undefined), []);
});

/** A minimal ELF64 LE relocatable with a .modinfo and a .shstrtab section. */
function fakeModule(modinfo: string): Buffer {
  const data = Buffer.from(modinfo, 'latin1');
  const shstr = Buffer.from('\0.modinfo\0.shstrtab\0', 'latin1');
  const dataOff = 64;
  const strOff = dataOff + data.length;
  const shOff = strOff + shstr.length;
  const buf = Buffer.alloc(shOff + 3 * 64);
  buf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  buf.writeBigUInt64LE(BigInt(shOff), 0x28);
  buf.writeUInt16LE(64, 0x3a);
  buf.writeUInt16LE(3, 0x3c);
  buf.writeUInt16LE(2, 0x3e);
  data.copy(buf, dataOff);
  shstr.copy(buf, strOff);
  const sh = (i: number, name: number, off: number, size: number): void => {
    buf.writeUInt32LE(name, shOff + i * 64);
    buf.writeBigUInt64LE(BigInt(off), shOff + i * 64 + 0x18);
    buf.writeBigUInt64LE(BigInt(size), shOff + i * 64 + 0x20);
  };
  sh(1, 1, dataOff, data.length);
  sh(2, 10, strOff, shstr.length);
  return buf;
}

test('parseModinfo reads depends= from a .modinfo section', () => {
  const ko = fakeModule('license=GPL\0depends=virtio,virtio_ring\0alias=a\0alias=b\0');
  const info = parseModinfo(ko);
  assert.deepEqual(info?.get('depends'), ['virtio,virtio_ring']);
  assert.deepEqual(info?.get('alias'), ['a', 'b']);
  assert.equal(elfSection(ko, '.nothing'), null);
  assert.equal(parseModinfo(Buffer.from('not an elf file at all, clearly not one, no no no no no no no no')), null);
  assert.equal(parseModinfo(ko.subarray(0, 70)), null); // truncated: null, not a throw
});

test('elfIsStatic tells static busybox from a dynamic binary', async () => {
  assert.equal(elfIsStatic(await readFile(process.execPath)), false); // node is dynamically linked
  const busybox = await readFile('/bin/busybox').catch(() => null);
  if (busybox) assert.equal(typeof elfIsStatic(busybox), 'boolean');
  assert.equal(elfIsStatic(Buffer.from('#!/bin/sh\n')), null);
});

test('frameCommand/parseCommandReply: round trip, split at every byte boundary', () => {
  const nonce = '0123456789abcdef';
  const command = 'echo "a\'b" &\nexit 3';
  const line = frameCommand(command, nonce);
  assert.ok(line.endsWith('\n') && line.indexOf('\n') === line.length - 1, 'one line');
  const b64 = /echo ([A-Za-z0-9+/=]+) \| base64 -d/.exec(line)?.[1];
  assert.equal(Buffer.from(b64 ?? '', 'base64').toString('utf8'), command);
  // The sent text must never look like a reply (it may be echoed back while the tty is set up).
  assert.equal(parseCommandReply(line, nonce), null);
  assert.equal(hasProbeReply(frameProbe(nonce), new Set([nonce])), false);

  const reply = `junk\r\n@@VM-BEGIN:${nonce}@@\r\nout\r\nput\n@@VM-DONE:${nonce}:42@@\r\nmore`;
  for (let i = 0; i < reply.length; i++) {
    const partial = parseCommandReply(reply.slice(0, i), nonce);
    const complete = i >= reply.indexOf(`:42@@`) + 5;
    assert.equal(partial !== null, complete, `prefix of ${i} chars`);
  }
  assert.deepEqual(parseCommandReply(reply, nonce), { output: 'out\nput\n', exitCode: 42 });
  assert.equal(parseCommandReply(reply, 'ffffffffffffffff'), null);
  assert.equal(hasProbeReply(`@@VM-DONE:${nonce}:0@@\n`, new Set(['aa', nonce])), true);
});

test('parseMeminfo reads kB fields and unit-less counters', () => {
  const f = parseMeminfo('MemTotal:         480284 kB\nHugePages_Total:       0\nbogus line\nNr(x):  5 kB\n');
  assert.equal(f.get('MemTotal'), 480284);
  assert.equal(f.get('HugePages_Total'), 0);
  assert.equal(f.get('Nr(x)'), 5);
  assert.equal(f.size, 3);
});

test('defaultGuestDir honours VIRTMEM_GUEST_DIR, else root cache or XDG cache', () => {
  const saved = { d: process.env.VIRTMEM_GUEST_DIR, x: process.env.XDG_CACHE_HOME };
  try {
    process.env.VIRTMEM_GUEST_DIR = '/somewhere/guest';
    assert.equal(defaultGuestDir(), '/somewhere/guest');
    delete process.env.VIRTMEM_GUEST_DIR;
    process.env.XDG_CACHE_HOME = '/xdg';
    const expected = process.getuid?.() === 0 ? '/var/cache/virtmem/guest' : '/xdg/virtmem/guest';
    assert.equal(defaultGuestDir(), expected);
  } finally {
    if (saved.d === undefined) delete process.env.VIRTMEM_GUEST_DIR;
    else process.env.VIRTMEM_GUEST_DIR = saved.d;
    if (saved.x === undefined) delete process.env.XDG_CACHE_HOME;
    else process.env.XDG_CACHE_HOME = saved.x;
  }
});

test('findDefaultGuest: null unless guest.json is valid and names existing files; build reuses it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'virtmem-guest-cache-'));
  try {
    assert.equal(await findDefaultGuest(dir), null);
    const m: GuestManifest = {
      formatVersion: 1,
      kernelFile: 'vmlinuz',
      initrdFile: 'initrd.gz',
      cmdline: DEFAULT_GUEST_CMDLINE,
      kernelVersion: '6.1.0-56-cloud-amd64',
      kernelPackage: 'linux-image-6.1.0-56-cloud-amd64',
      kernelPackageVersion: '6.1.192-2',
      modules: ['virtio'],
      builtinModules: [],
      hasVmhelper: true,
      builtAt: '2026-11-27T00:00:00.000Z',
      sourcesDigest: await defaultGuestSourcesDigest(),
    };
    assert.deepEqual(parseGuestManifest(serialiseGuestManifest(m)), m);
    const { sourcesDigest: _, ...older } = m;
    assert.deepEqual(parseGuestManifest(serialiseGuestManifest(older)), older, 'a manifest from before the digest still parses');
    await writeFile(join(dir, 'guest.json'), serialiseGuestManifest(m));
    assert.equal(await findDefaultGuest(dir), null, 'files missing');
    await writeFile(join(dir, 'vmlinuz'), 'k');
    await writeFile(join(dir, 'initrd.gz'), 'i');
    const g = await findDefaultGuest(dir);
    assert.deepEqual(g, {
      dir,
      kernelPath: join(dir, 'vmlinuz'),
      initrdPath: join(dir, 'initrd.gz'),
      cmdline: DEFAULT_GUEST_CMDLINE,
      kernelVersion: '6.1.0-56-cloud-amd64',
      builtAt: '2026-11-27T00:00:00.000Z',
      hasVmhelper: true,
      sourcesDigest: m.sourcesDigest,
      modules: ['virtio'],
    });
    // Idempotent: a complete guest built from these sources is returned as is, no apt, no rebuild.
    assert.match(m.sourcesDigest!, /^[0-9a-f]{64}$/);
    assert.deepEqual(await buildDefaultGuest({ dir }), g);

    await writeFile(join(dir, 'guest.json'), '{"formatVersion":1,');
    assert.equal(await findDefaultGuest(dir), null, 'truncated json');
    await writeFile(join(dir, 'guest.json'), JSON.stringify({ ...m, kernelFile: '../../etc/passwd' }));
    assert.equal(await findDefaultGuest(dir), null, 'path outside the dir');
    await writeFile(join(dir, 'guest.json'), JSON.stringify({ ...m, formatVersion: 2 }));
    assert.equal(await findDefaultGuest(dir), null, 'unknown format');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a cached guest built with an older module list (no virtio_blk) is rebuilt, not reused', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'virtmem-guest-stale-'));
  const savedPath = process.env.PATH;
  try {
    const olderModules = DEFAULT_GUEST_MODULES.filter((m) => m !== 'virtio_blk');
    assert.notDeepEqual(olderModules, DEFAULT_GUEST_MODULES);
    const stale: GuestManifest = {
      formatVersion: 1,
      kernelFile: 'vmlinuz',
      initrdFile: 'initrd.gz',
      cmdline: DEFAULT_GUEST_CMDLINE,
      kernelVersion: '6.1.0-57-cloud-amd64',
      kernelPackage: 'linux-image-6.1.0-57-cloud-amd64',
      kernelPackageVersion: '6.1.192-3',
      modules: olderModules,
      builtinModules: [],
      hasVmhelper: true,
      builtAt: '2026-12-03T09:10:21.334Z',
      sourcesDigest: await defaultGuestSourcesDigest(olderModules),
    };
    assert.notEqual(stale.sourcesDigest, await defaultGuestSourcesDigest());
    await writeFile(join(dir, 'guest.json'), serialiseGuestManifest(stale));
    await writeFile(join(dir, 'vmlinuz'), 'k');
    await writeFile(join(dir, 'initrd.gz'), 'i');
    // Still a guest (domains defined on it keep starting) ...
    assert.deepEqual((await findDefaultGuest(dir))?.modules, olderModules);
    // ... but guest-build goes to rebuild it: with no apt on PATH that is the failure we see.
    process.env.PATH = join(dir, 'empty');
    const log: string[] = [];
    await assert.rejects(buildDefaultGuest({ dir, log: (l) => log.push(l) }), (e: unknown) => e instanceof GuestBuildError && e.code === 'GUEST_TOOL_MISSING');
    assert.match(log.join('\n'), /built from other sources .*: rebuilding/);
  } finally {
    process.env.PATH = savedPath;
    await rm(dir, { recursive: true, force: true });
  }
});

test('build failures are typed: empty apt lists -> GUEST_APT_FAILED (says apt-get update), no apt -> GUEST_TOOL_MISSING', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'virtmem-guest-fail-'));
  const savedPath = process.env.PATH;
  try {
    const bin = join(dir, 'bin');
    await mkdir(bin);
    // What apt-cache does with empty lists: "E: No packages found", status 100.
    await writeFile(join(bin, 'apt-cache'), '#!/bin/sh\necho "E: No packages found" >&2\nexit 100\n', { mode: 0o755 });
    process.env.PATH = bin;
    await assert.rejects(buildDefaultGuest({ dir: join(dir, 'guest'), force: true }), (e: unknown) => {
      assert.ok(e instanceof GuestBuildError);
      assert.equal(e.code, 'GUEST_APT_FAILED');
      assert.match(e.message, /apt-get update/);
      return true;
    });
    process.env.PATH = join(dir, 'empty');
    await assert.rejects(buildDefaultGuest({ dir: join(dir, 'guest'), force: true }), (e: unknown) => {
      assert.ok(e instanceof GuestBuildError);
      assert.equal(e.code, 'GUEST_TOOL_MISSING');
      assert.match(e.message, /apt-cache is not installed/);
      return true;
    });
    await assert.rejects(buildDefaultGuest({ dir: join(dir, 'guest'), force: true, signal: AbortSignal.abort() }), (e: unknown) => {
      assert.ok(e instanceof GuestBuildError);
      assert.equal(e.code, 'GUEST_BUILD_ABORTED');
      return true;
    });
    assert.equal(await findDefaultGuest(join(dir, 'guest')), null, 'a failed build leaves no guest.json');
  } finally {
    process.env.PATH = savedPath;
    await rm(dir, { recursive: true, force: true });
  }
});
