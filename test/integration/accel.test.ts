/**
 * The accelerator choice, honest on every host: KVM only when a probe guest has run under it.
 * On a host whose KVM is present but runs no guest (made here with a fake device and a QEMU
 * wrapper, see helpers/fake-kvm.ts; the real /dev/kvm is left alone), `auto` falls back to TCG
 * with one line saying why, `type='kvm'` / `--accel kvm` is refused and nothing changes, and
 * `type='qemu'` runs TCG. On this real host, `capabilities` says what the probe found, and a
 * guest's <cpu> reaches QEMU and comes back out of dumpxml in a form libvirt accepts.
 */
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { access, constants, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sandbox, type Sandbox } from '../helpers/cli.js';
import { fakeBrokenKvm } from '../helpers/fake-kvm.js';

const run = promisify(execFile);
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const fake = await fakeBrokenKvm();
const broken: Sandbox = await sandbox({ env: { ...process.env, ...fake.env } });
const real: Sandbox = await sandbox();
after(async () => {
  await broken.cleanup();
  await real.cleanup();
  await rm(fake.dir, { recursive: true, force: true });
});

const qemuOf = async (sb: Sandbox): Promise<string[]> => readdir(join(sb.stateDir, 'run')).catch(() => []);
const xmlDomain = (name: string, type: string, extra = ''): string => `<domain type='${type}'>
  <name>${name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>${extra}
  <devices><memballoon model='virtio'/></devices>
</domain>
`;

describe('a host whose KVM is present but runs no guest', () => {
  test('capabilities: the device opens, the probe guest made no progress, auto picks TCG', async () => {
    const caps = JSON.parse(await broken.ok('capabilities', '--json')) as Json;
    assert.equal(caps.kvm.devicePresent, true);
    assert.equal(caps.kvm.usable, false);
    assert.match(caps.kvm.reason, /KVM is present but did not run a probe guest: no progress within \d+ s \(console empty\)/);
    assert.equal(caps.accel.autoPicks, 'tcg');
    const text = await broken.ok('capabilities');
    assert.match(text, /^KVM works: +no: KVM is present but did not run a probe guest/m);
    assert.match(text, /^Auto picks: +tcg$/m);
  });

  test("--accel kvm is refused at start with the reason, and nothing changes", async () => {
    await broken.ok('new', 'needkvm', '--memory', '256M', '--accel', 'kvm');
    const r = await broken.run('start', 'needkvm');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: Failed to start domain 'needkvm'\nerror: unsupported configuration: domain 'needkvm' asks for KVM .* but KVM does not work on this host: KVM is present but did not run a probe guest.*; use --accel tcg/);
    assert.equal(await broken.ok('domstate', 'needkvm'), 'shut off\n\n');
    assert.deepEqual((await qemuOf(broken)).filter((n) => n === 'needkvm'), [], 'no run directory: QEMU never started');
    assert.match(await broken.ok('dumpxml', 'needkvm'), /^<domain type='kvm'>/);
  });

  test("<domain type='kvm'> is refused the same way; type='qemu' runs under TCG", async () => {
    const kvmXml = join(broken.stateDir, 'kvm.xml');
    await writeFile(kvmXml, xmlDomain('xmlkvm', 'kvm'));
    await broken.ok('define', kvmXml);
    const r = await broken.run('start', 'xmlkvm');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /asks for KVM \(<domain type='kvm'>, --accel kvm\) but KVM does not work on this host/);
    assert.equal(await broken.ok('domstate', 'xmlkvm'), 'shut off\n\n');

    const tcgXml = join(broken.stateDir, 'tcg.xml');
    await writeFile(tcgXml, xmlDomain('xmltcg', 'qemu'));
    await broken.ok('define', tcgXml);
    const s = await broken.run('start', 'xmltcg');
    assert.equal(s.code, 0, s.stderr);
    assert.equal(s.stderr, '', 'type=qemu asks for TCG: nothing to explain');
    const info = JSON.parse(await broken.ok('dominfo', 'xmltcg', '--json')) as Json;
    assert.equal(info.accel, 'tcg');
    assert.equal(info.cpuModel, null, "QEMU's default CPU model under TCG, as libvirt");
    assert.match(await broken.ok('dumpxml', 'xmltcg'), /^<domain type='qemu' id='\d+'>/);
    await broken.ok('destroy', 'xmltcg');
  });

  test('auto starts under TCG with one line that says why', async () => {
    await broken.ok('new', 'autovm', '--memory', '256M');
    const r = await broken.run('start', 'autovm');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "Domain 'autovm' started\n\n");
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^warning: KVM not used: KVM is present but did not run a probe guest: .*; running 'autovm' under TCG \(software emulation\)/);
    const info = JSON.parse(await broken.ok('dominfo', 'autovm', '--json')) as Json;
    assert.equal(info.accel, 'tcg');
    assert.match(info.accelNote, /KVM not used/);
    assert.match(await broken.ok('dumpxml', 'autovm'), /^<domain type='qemu' id='\d+'>/);
    await broken.ok('destroy', 'autovm');
  });

  test('host-passthrough needs KVM: refused under the TCG fallback, nothing started', async () => {
    await broken.ok('new', 'hostcpu', '--memory', '256M', '--cpu', 'host-passthrough');
    const r = await broken.run('start', 'hostcpu');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /CPU mode 'host-passthrough' needs KVM/);
    assert.equal(await broken.ok('domstate', 'hostcpu'), 'shut off\n\n');
  });

  test('$VIRTMEM_ACCEL=tcg skips the probe; a bad value is refused by name', async () => {
    const env = { ...process.env, ...fake.env, VIRTMEM_ACCEL: 'tcg' };
    const sb = await sandbox({ env });
    try {
      await sb.ok('new', 'envtcg', '--memory', '256M');
      const r = await sb.run('start', 'envtcg');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '');
      const bad = await sandbox({ env: { ...env, VIRTMEM_ACCEL: 'fast' } });
      try {
        await bad.ok('new', 'envbad', '--memory', '256M');
        const b = await bad.run('start', 'envbad');
        assert.equal(b.code, 1);
        assert.match(b.stderr, /\$VIRTMEM_ACCEL 'fast' is not an accelerator \(expected auto, kvm or tcg\)/);
      } finally {
        await bad.cleanup();
      }
    } finally {
      await sb.cleanup();
    }
  });

  test('bad --accel and --cpu values are refused and define nothing', async () => {
    const a = await broken.run('new', 'badaccel', '--accel', 'hvf');
    assert.equal(a.code, 1);
    assert.match(a.stderr, /--accel 'hvf' is not an accelerator/);
    const c = await broken.run('new', 'badcpu', '--cpu', 'Sky lake;rm');
    assert.equal(c.code, 1);
    assert.match(c.stderr, /cpu\.model: 'Sky lake;rm' is not a CPU model name/);
    const list = await broken.ok('list', '--all', '--name');
    assert.doesNotMatch(list, /badaccel|badcpu/);
  });
});

describe('a host with no KVM device', () => {
  test('auto runs TCG without a word; kvm is refused naming the missing device', async () => {
    const dir = join(fake.dir, 'nokvm');
    const sb = await sandbox({ env: { ...process.env, VIRTMEM_KVM_DEVICE: join(dir, 'kvm'), VIRTMEM_PROBE_CACHE: join(dir, 'probe.json') } });
    try {
      const caps = JSON.parse(await sb.ok('capabilities', '--json')) as Json;
      assert.equal(caps.kvm.devicePresent, false);
      assert.match(caps.kvm.reason, /kvm does not exist \(no hardware virtualization, or the kvm module is not loaded\)/);
      await sb.ok('new', 'plain', '--memory', '256M');
      const r = await sb.run('start', 'plain');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '', 'nothing to explain: there is no KVM');
      assert.equal((JSON.parse(await sb.ok('dominfo', 'plain', '--json')) as Json).accel, 'tcg');
      await sb.ok('destroy', 'plain');
      await sb.ok('new', 'kvmonly', '--memory', '256M', '--accel', 'kvm');
      const k = await sb.run('start', 'kvmonly');
      assert.equal(k.code, 1);
      assert.match(k.stderr, /KVM does not work on this host: .*kvm does not exist/);
    } finally {
      await sb.cleanup();
    }
  });
});

describe('this host as it is', () => {
  test('capabilities agrees with the KVM device and never claims KVM without a probe guest', async () => {
    const caps = JSON.parse(await real.ok('capabilities', '--json')) as Json;
    const present = await access('/dev/kvm', constants.R_OK | constants.W_OK).then(() => true, () => false);
    assert.equal(caps.kvm.devicePresent, present);
    if (caps.kvm.usable) assert.match(caps.kvm.reason, /a probe guest booted under KVM/);
    assert.equal(caps.accel.autoPicks, caps.kvm.usable ? 'kvm' : 'tcg');
    assert.match(caps.emulator.version, /QEMU emulator version/);
  });

  test('a custom CPU model reaches QEMU and round-trips through dumpxml, which libvirt accepts', async () => {
    await real.ok('new', 'cpuvm', '--memory', '256M', '--cpu', 'qemu64', '--accel', 'tcg');
    await real.ok('start', 'cpuvm');
    const info = JSON.parse(await real.ok('dominfo', 'cpuvm', '--json')) as Json;
    assert.equal(info.accel, 'tcg');
    assert.equal(info.cpuModel, 'qemu64');
    const cpus = await real.ok('qemu-monitor-command', 'cpuvm', '{"execute":"query-cpu-model-expansion","arguments":{"type":"static","model":{"name":"qemu64"}}}');
    assert.match(cpus, /"return"/);
    const xml = await real.ok('dumpxml', 'cpuvm');
    assert.match(xml, /<cpu mode='custom' match='exact'>\n\s*<model fallback='forbid'>qemu64<\/model>\n\s*<\/cpu>/);
    const f = join(real.stateDir, 'cpu.xml');
    await writeFile(f, xml);
    const v = await run('virt-xml-validate', [f, 'domain']).catch((e: { stdout: string; stderr: string }) => e);
    assert.match(`${v.stdout}${v.stderr}`, /validates/);
    await real.ok('destroy', 'cpuvm');
    // Define from our own output: the same CPU and accelerator come back.
    await real.ok('undefine', 'cpuvm');
    await real.ok('define', f);
    const again = await real.ok('dumpxml', 'cpuvm', '--inactive');
    assert.match(again, /^<domain type='qemu'>/);
    assert.match(again, /<model fallback='forbid'>qemu64<\/model>/);
  });
});
