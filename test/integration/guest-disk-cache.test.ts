/**
 * The built-in guest with a disk holds reclaimable page cache, and gives it back when shrunk:
 * the "fills page cache and goes idle" guest a memory-policy benchmark needs.
 *
 * The disk is a 1 GiB raw image holding an ext2 file system (the cloud kernel has ext4 built in,
 * which mounts ext2) with 600 MiB of non-zero data, attached read-only as vda. The guest reads
 * the file, not /dev/vda itself: a block device's own cache is dropped when its last opener
 * closes it (kill_bdev in blkdev_put) and is never placed in hot-plugged ZONE_MOVABLE memory
 * (the bdev mapping is GFP_USER), so `dd if=/dev/vda` caches at most what boot memory holds,
 * and only while something keeps the device open. A mounted file's cache is what real guests
 * hold, and it can sit in virtio-mem memory.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sandbox } from '../helpers/cli.js';
import { GuestAgent } from '../../src/guest/agent.js';
import { findDefaultGuest } from '../../src/guest/build.js';
import { skipUnlessCi } from '../helpers/skip.js';

const MiB = 1024; // KiB, the unit dommemstat speaks
const FILL_MIB = 600;

const sb = await sandbox();
const files = await mkdtemp(join(tmpdir(), 'vm-disk-'));
const agents: GuestAgent[] = [];
after(async () => {
  for (const a of agents) a.close();
  await sb.cleanup();
  await rm(files, { recursive: true, force: true });
});

const guest = await findDefaultGuest();
const mke2fs = await promisify(execFile)('mke2fs', ['-V']).then(() => true, () => false);
const skip = skipUnlessCi(!guest && 'the built-in guest is not built (virtmem guest-build)',
  guest && !guest.modules.includes('virtio_blk') && `the built-in guest in ${guest.dir} predates virtio_blk: run virtmem guest-build`,
  !mke2fs && 'mke2fs (e2fsprogs) is not installed');

/** A 1 GiB raw image: ext2 holding /fill, FILL_MIB MiB of a non-zero pattern. */
async function makeImage(): Promise<string> {
  const src = join(files, 'src');
  const image = join(files, 'cache.img');
  await mkdir(src);
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
  const fh = await open(join(src, 'fill'), 'w');
  try {
    for (let i = 0; i < FILL_MIB; i++) await fh.write(chunk);
  } finally {
    await fh.close();
  }
  await promisify(execFile)('mke2fs', ['-q', '-F', '-t', 'ext2', '-m', '0', '-d', src, image, '1G']);
  await rm(src, { recursive: true, force: true });
  return image;
}

/** dommemstat --json as name -> KiB. */
async function memstat(name: string): Promise<Map<string, number>> {
  const doc = JSON.parse(await sb.ok('dommemstat', name, '--json')) as { stats: Array<{ name: string; value: number }> };
  return new Map(doc.stats.map((s) => [s.name, s.value]));
}

/**
 * Guest statistics sampled after this call (QEMU keeps the last sample, taken every --period):
 * waits for a last_update newer than the current one. Polled, at most 30 s.
 */
async function freshMemstat(name: string): Promise<Map<string, number>> {
  const seen = (await memstat(name)).get('last_update') ?? 0;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const s = await memstat(name);
    if ((s.get('last_update') ?? 0) > seen) return s;
    if (Date.now() > deadline) assert.fail(`no new guest statistics after last_update ${seen} within 30 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const kib = (s: Map<string, number>, key: string): number => {
  const v = s.get(key);
  assert.ok(v !== undefined, `dommemstat has no ${key}`);
  return v;
};

describe('a built-in guest with a read-only disk', { skip }, () => {
  let a: GuestAgent;
  before(async () => {
    const image = await makeImage();
    assert.equal((await stat(image)).size, 1024 * 1024 * 1024);
    await sb.ok('new', 'cache', '--memory', '512M', '--max-memory', '2G', '--accel', 'tcg', '--disk', `${image},format=raw,readonly`);
    await sb.ok('start', 'cache');
    await sb.ok('dommemstat', 'cache', '--period', '1');
    a = await GuestAgent.connect(join(sb.stateDir, 'run', 'cache', 'agent.sock'), { timeoutMs: 90_000 });
    agents.push(a);
    assert.equal(await sb.ok('setmem', 'cache', '1536M', '--wait', '--timeout', '120'), "Domain 'cache' reached 1572864 KiB\n\n");
  });
  after(async () => { await sb.run('destroy', 'cache'); });

  test('the guest sees vda read-only, 1 GiB, with the file system on it', async () => {
    const r = await a.run('cat /sys/block/vda/ro /sys/block/vda/size && mkdir -p /mnt && mount -o ro /dev/vda /mnt && ls -l /mnt/fill');
    assert.equal(r.exitCode, 0, r.output);
    const [ro, sectors, listing] = r.output.trim().split('\n');
    assert.equal(ro, '1');
    assert.equal(Number(sectors) * 512, 1024 * 1024 * 1024);
    assert.match(listing!, new RegExp(`\\s${FILL_MIB * 1024 * 1024}\\s`));
    const write = await a.run('touch /mnt/x');
    assert.notEqual(write.exitCode, 0, 'a read-only disk refuses writes');
  });

  test('reading 600 MiB fills the page cache, and cache still counts as usable', async () => {
    const before = await freshMemstat('cache');
    const started = Date.now();
    const r = await a.run(`dd if=/mnt/fill of=/dev/null bs=1M count=${FILL_MIB} 2>&1`, { timeoutMs: 300_000 });
    console.log(`dd of ${FILL_MIB} MiB in the guest: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    assert.equal(r.exitCode, 0, r.output);
    assert.match(r.output, new RegExp(`^${FILL_MIB}\\+0 records in$`, 'm'));
    const filled = await freshMemstat('cache');
    console.log(`disk_caches ${kib(before, 'disk_caches')} -> ${kib(filled, 'disk_caches')} KiB, usable ${kib(before, 'usable')} -> ${kib(filled, 'usable')} KiB, unused ${kib(before, 'unused')} -> ${kib(filled, 'unused')} KiB`);
    assert.ok(kib(filled, 'disk_caches') - kib(before, 'disk_caches') >= 500 * MiB, 'disk_caches grew by at least 500 MiB');
    assert.ok(kib(filled, 'unused') < kib(before, 'unused') - 500 * MiB, 'the cache took free memory');
    // MemAvailable counts clean page cache: the guest is not short of memory.
    assert.ok(kib(filled, 'usable') >= kib(before, 'usable') - 64 * MiB, 'usable stays high');
    assert.ok(kib(filled, 'usable') >= 1200 * MiB);
  });

  test('setmem 700M --wait: the guest drops cache to give the memory back, no OOM', async () => {
    const filled = await memstat('cache');
    assert.equal(await sb.ok('setmem', 'cache', '700M', '--wait', '--timeout', '180'), "Domain 'cache' reached 716800 KiB\n\n");
    const shrunk = await freshMemstat('cache');
    console.log(`after setmem 700M: disk_caches ${kib(shrunk, 'disk_caches')} KiB, usable ${kib(shrunk, 'usable')} KiB, available ${kib(shrunk, 'available')} KiB`);
    assert.ok(kib(shrunk, 'available') <= 716800, 'the guest has at most 700 MiB');
    assert.ok(kib(shrunk, 'disk_caches') < kib(filled, 'disk_caches') - 200 * MiB, 'disk_caches fell');
    const oom = await a.run("dmesg | grep -c 'Out of memory'");
    assert.equal(oom.output.trim(), '0', 'no OOM kill in the guest');
    const alive = await a.run('cat /proc/meminfo | head -1');
    assert.equal(alive.exitCode, 0);
  });
});

describe('the built-in guest defined from XML with a <disk>', { skip }, () => {
  test('define + start: the guest sees the disk as vda', async () => {
    const image = join(files, 'small.img');
    await writeFile(image, '');
    await truncate(image, 64 * 1024 * 1024);
    const xml = join(files, 'xd.xml');
    await writeFile(xml, `<domain type='qemu'>
  <name>xd</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <source file='${image}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
`);
    await sb.ok('define', xml);
    assert.match(await sb.ok('dumpxml', 'xd'), /<disk type='file' device='disk'>\s*<driver name='qemu' type='raw'\/>\s*<source file='[^']+small\.img'\/>\s*<target dev='vda' bus='virtio'\/>\s*<\/disk>/);
    await sb.ok('start', 'xd');
    const x = await GuestAgent.connect(join(sb.stateDir, 'run', 'xd', 'agent.sock'), { timeoutMs: 90_000 });
    agents.push(x);
    const r = await x.run('cat /sys/block/vda/ro /sys/block/vda/size');
    assert.equal(r.output, `0\n${(64 * 1024 * 1024) / 512}\n`);
    await sb.ok('destroy', 'xd');
  });
});
