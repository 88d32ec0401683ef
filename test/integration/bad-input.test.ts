/**
 * Bad input: every rejection names what was wrong, exits non-zero, and changes nothing on disk
 * or in a running guest (issue "virtmem core", "Bad input").
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile, mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { sandbox, parseDominfo, type RunResult } from '../helpers/cli.js';

const sb = await sandbox();
after(() => sb.cleanup());
const files = await mkdtemp(join(tmpdir(), 'vmx-'));

/** Every definition file's bytes: compared before and after each bad command. */
async function snapshot(): Promise<Map<string, string>> {
  const dir = join(sb.stateDir, 'domains');
  const m = new Map<string, string>();
  for (const f of await readdir(dir).catch(() => [] as string[])) m.set(f, await readFile(join(dir, f), 'utf8'));
  return m;
}

/** Run a command that must be refused with `message`, leaving every definition as it was. */
async function refused(args: string[], message: RegExp): Promise<RunResult> {
  const before = await snapshot();
  const r = await sb.run(...args);
  assert.notEqual(r.code, 0, `virtmem ${args.join(' ')} should fail\n${r.stdout}`);
  assert.match(r.stderr, /^error: /m);
  assert.match(r.stderr, message, `virtmem ${args.join(' ')}: ${r.stderr}`);
  assert.deepEqual(await snapshot(), before, `virtmem ${args.join(' ')} changed a definition`);
  return r;
}

before(async () => {
  await sb.ok('new', 'vm', '--memory', '1G', '--current-memory', '768M');
});

describe('sizes', () => {
  const scaled = (v: string): RegExp => new RegExp(`^error: Scaled numeric value '${v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}' for <size> option is malformed or out of range\nerror: invalid memory size`);
  const cases: Array<[string, RegExp]> = [
    ['', scaled('')],
    ['-1', scaled('-1')],
    ['1.5G', scaled('1.5G')],
    ['12XB', /Scaled numeric value '12XB'[^\n]*\nerror: .*unit/],
    ['99999999999999999999', scaled('99999999999999999999')],
    ['18014398509481984k', scaled('18014398509481984k')],
    ['0', /^error: memory in virDomainSetMemoryFlags must not be zero$/m],
    ['1M', /below the minimum/],
  ];
  for (const [size, msg] of cases) {
    test(`setmem --config '${size}'`, async () => { await refused(['setmem', 'vm', '--config', '--', size], msg); });
    test(`setmaxmem --config '${size}'`, async () => { await refused(['setmaxmem', 'vm', '--config', '--', size], msg); });
  }
  test('new --memory with a bad size defines nothing', async () => { await refused(['new', 'vm2', '--memory', '1.5G'], /invalid memory '1\.5G'/); });
});

describe('names', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /name/],
    ['../x', /\.\.\/x/],
    ['a/b', /a\/b/],
    ['x'.repeat(65), /64/],
    ['-rf', /-rf/],
    ['a b', /a b/],
  ];
  for (const [name, msg] of cases) test(`new '${name.slice(0, 20)}'`, async () => { await refused(['new', '--', name], msg); });
  test('a duplicate name is refused', async () => { await refused(['new', 'vm'], /already exists/); });
  test('a path in a lookup is just an unknown domain', async () => { await refused(['dominfo', '../domains/vm'], /failed to get domain '\.\.\/domains\/vm'/); });
});

describe('new --disk', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--disk', '/tmp/d.img,format=vmdk'], /^error: --disk: format 'vmdk' is not supported: use format=raw or format=qcow2$/m],
    [['--disk', '/tmp/d.img,readonly=maybe'], /^error: --disk: readonly='maybe' is not on\/off$/m],
    [['--disk', '/tmp/d.img,target=sda'], /^error: --disk: target 'sda' is not a virtio disk name/m],
    [['--disk', '/tmp/d.img,cache=none'], /^error: --disk: unknown setting 'cache=none'/m],
    [['--disk', ',readonly'], /^error: --disk ',readonly': the image path comes first/m],
    [['--disk', '/tmp/a.img', '--disk', '/tmp/b.img'], /^error: option --disk already seen$/m],
  ];
  for (const [args, msg] of cases) test(`new ${args.join(' ')} defines nothing`, async () => { await refused(['new', 'dk', ...args], msg); });
});

describe('states and limits on a shut-off domain', () => {
  test('setmem above the maximum', async () => { await refused(['setmem', 'vm', '2G', '--config'], /cannot set memory higher than max memory/); });
  test('setmem --live on a shut-off domain', async () => { await refused(['setmem', 'vm', '512M', '--live'], /domain is not running/); });
  test('setmem without flags means --live, as virsh: refused on a shut-off domain', async () => {
    await refused(['setmem', 'vm', '700M'], /^error: Requested operation is not valid: domain is not running\n$/);
  });
  test('setmem --current on a shut-off domain changes the config', async () => {
    await sb.ok('setmem', 'vm', '700M', '--current');
    assert.equal(parseDominfo(await sb.ok('dominfo', 'vm')).get('Used memory'), '716800 KiB');
    await sb.ok('setmem', 'vm', '768M', '--config');
  });
  test('setmaxmem below the current memory', async () => { await refused(['setmaxmem', 'vm', '512M'], /below the current memory 786432 KiB/); });
  test('--current with --live', async () => { await refused(['setmem', 'vm', '512M', '--current', '--live'], /mutually exclusive/); });
  test('shutdown / destroy of a shut-off domain', async () => {
    await refused(['shutdown', 'vm'], /domain is not running/);
    await refused(['destroy', 'vm'], /domain is not running/);
  });
  test('dommemstat of a shut-off domain', async () => { await refused(['dommemstat', 'vm'], /domain is not running/); });
});

describe('unknown domains and double operations', () => {
  for (const cmd of [['dominfo'], ['start'], ['setmem', '1G'], ['setmaxmem', '1G'], ['dumpxml'], ['undefine'], ['domstate'], ['shutdown'], ['destroy']]) {
    test(`${cmd[0]} of an unknown domain`, async () => {
      const r = await refused([cmd[0]!, 'nosuch', ...cmd.slice(1)], /error: failed to get domain 'nosuch'/);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line, as virsh');
    });
  }
  test('undefine twice', async () => {
    await sb.ok('new', 'gone');
    await sb.ok('undefine', 'gone');
    await refused(['undefine', 'gone'], /failed to get domain 'gone'/);
  });
  test('unknown command and option', async () => {
    await refused(['frobnicate'], /unknown command: 'frobnicate'/);
    await refused(['dominfo', 'vm', '--bogus'], /doesn't support option --bogus/);
  });
});

describe('XML', () => {
  const define = async (name: string, body: string, msg: RegExp): Promise<void> => {
    const f = join(files, name);
    await writeFile(f, body);
    await refused(['define', f], msg);
  };
  test('malformed', () => define('bad.xml', '<domain type="qemu"><name>x</name>', /malformed XML at line 1/));
  test('billion laughs', () => define('laughs.xml', `<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<domain type='qemu'><name>&lol2;</name><memory>1048576</memory></domain>`, /DOCTYPE|entit/i));
  test('external entity', () => define('xxe.xml', `<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><domain type='qemu'><name>&x;</name></domain>`, /DOCTYPE|entit/i));
  test('huge document', () => define('huge.xml', `<domain type='qemu'><name>h</name><description>${'x'.repeat(2 << 20)}</description></domain>`, /over the 1048576-byte limit/));
  test('not a domain', () => define('net.xml', `<network><name>n</name></network>`, /domain/));
  test('a name with a path in it', () => define('path.xml', `<domain type='qemu'><name>../x</name><memory unit='MiB'>512</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>`, /\.\.\/x/));
  // Whether guest RAM goes into QEMU's core dumps is a memory fact virtmem does not hold: refused naming it.
  test('memory semantics virtmem cannot honour', () => define('dumpcore.xml', `<domain type='qemu'><name>dc</name><memory unit='MiB' dumpCore='off'>512</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>`, /dumpCore/));
  test('a file that does not exist', async () => { await refused(['define', join(files, 'nope.xml')], /nope\.xml/); });
});

describe('host problems', () => {
  test('a disk the built-in guest cannot see: start refuses it, naming the disk and the fix', async () => {
    // A guest cached before virtio_blk was added (the refusal comes before QEMU would read the files).
    const dir = join(files, 'old-guest');
    await mkdir(dir);
    await writeFile(join(dir, 'vmlinuz'), 'k');
    await writeFile(join(dir, 'initrd.gz'), 'i');
    await writeFile(join(dir, 'guest.json'), JSON.stringify({
      formatVersion: 1, kernelFile: 'vmlinuz', initrdFile: 'initrd.gz', cmdline: 'console=ttyS0',
      kernelVersion: '6.1.0-57-cloud-amd64', kernelPackage: 'linux-image-6.1.0-57-cloud-amd64', kernelPackageVersion: '6.1.192-3',
      modules: ['virtio_ring', 'virtio', 'virtio_pci', 'virtio_balloon', 'virtio_mem'], builtinModules: [], hasVmhelper: false, builtAt: '2026-12-03T09:10:21.334Z',
    }));
    const old = await sandbox({ env: { VIRTMEM_GUEST_DIR: dir } });
    try {
      await old.ok('new', 'vd', '--accel', 'tcg', '--disk', join(files, 'd.img'));
      let r = await old.run('start', 'vd');
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^error: disk vda: the built-in guest in \S+old-guest was built without virtio_blk and would not see it; run `virtmem guest-build` to rebuild it$/m);
      const xml = join(files, 'sata.xml');
      await writeFile(xml, `<domain type='qemu'><name>sd</name><memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'><source file='${join(files, 'd.img')}'/><target dev='sda' bus='sata'/></disk></devices></domain>`);
      await old.ok('define', xml);
      r = await old.run('start', 'sd');
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^error: disk sda: the built-in guest drives virtio disks only; use bus 'virtio'/m);
      assert.equal((await old.ok('domstate', 'vd')).trim(), 'shut off');
      assert.equal((await old.ok('domstate', 'sd')).trim(), 'shut off');
    } finally {
      await old.cleanup();
    }
  });

  test('QEMU binary missing: start fails clearly, the domain stays shut off', async () => {
    const f = join(files, 'noqemu.xml');
    await writeFile(f, `<domain type='qemu'><name>noqemu</name><memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices><emulator>/nonexistent/qemu-system-x86_64</emulator></devices></domain>`);
    await sb.ok('define', f);
    await refused(['start', 'noqemu'], /Cannot find QEMU binary \/nonexistent\/qemu-system-x86_64/);
    assert.equal((await sb.ok('domstate', 'noqemu')).trim(), 'shut off');
  });
});
