/**
 * libvirt domain XML in and out through the CLI: a libvirt-style document defines a domain,
 * `dumpxml` writes XML that libvirt's own schema accepts, running and shut off, and that
 * virtmem reads back to the same definition.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sandbox, parseDominfo } from '../helpers/cli.js';

const run = promisify(execFile);
const sb = await sandbox();
after(() => sb.cleanup());
const dir = await mkdtemp(join(tmpdir(), 'vmxml-'));

/** libvirt's own schema check (libvirt-clients); the suite installs it (setup.sh --dev). */
async function libvirtAccepts(xml: string, name: string): Promise<void> {
  const f = join(dir, name);
  await writeFile(f, xml);
  const r = await run('virt-xml-validate', [f, 'domain']).catch((e: { stdout: string; stderr: string }) => e);
  assert.match(`${r.stdout}${r.stderr}`, /validates/, `virt-xml-validate rejected ${name}:\n${r.stderr}\n${xml}`);
}

const input = `<domain type='qemu'>
  <name>fromxml</name>
  <uuid>0b9d3f5e-1111-4222-8333-944455556666</uuid>
  <memory unit='GiB'>1</memory>
  <currentMemory unit='MiB'>768</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='network'><source network='default'/></interface>
    <graphics type='vnc'/>
    <memballoon model='virtio'><stats period='3'/></memballoon>
  </devices>
</domain>
`;

test('define libvirt XML, warn about what is ignored, dump it back', async () => {
  const f = join(dir, 'in.xml');
  await writeFile(f, input);
  const r = await sb.run('define', f);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `Domain 'fromxml' defined from ${f}\n\n`);
  assert.match(r.stderr, /warning: .*interface/);
  assert.match(r.stderr, /warning: .*graphics/);
  const info = parseDominfo(await sb.ok('dominfo', 'fromxml'));
  assert.equal(info.get('UUID'), '0b9d3f5e-1111-4222-8333-944455556666');
  assert.equal(info.get('Max memory'), '1048576 KiB');
  assert.equal(info.get('Used memory'), '786432 KiB');

  const xml = await sb.ok('dumpxml', 'fromxml');
  assert.match(xml, /<memory unit='KiB'>1048576<\/memory>/);
  assert.match(xml, /<currentMemory unit='KiB'>786432<\/currentMemory>/);
  assert.match(xml, /<stats period='3'\/>/);
  assert.match(xml, /^<domain type='qemu'>/, "type='qemu' is TCG, and stays so");
  assert.match(xml, /<cpu mode='custom' match='exact'>\n\s*<model fallback='forbid'>qemu64<\/model>/);
  assert.match(xml, /<kernel>/, 'the built-in guest kernel is filled in so libvirt could boot it');
  await libvirtAccepts(xml, 'shutoff.xml');

  // Redefining from our own output is a no-op redefinition (same name and uuid).
  const again = join(dir, 'again.xml');
  await writeFile(again, xml);
  await sb.ok('define', again);
  assert.equal(await sb.ok('dumpxml', 'fromxml'), xml);
});

test('dumpxml of a running domain shows its id and live balloon, and libvirt accepts it', async () => {
  await sb.ok('start', 'fromxml');
  const xml = await sb.ok('dumpxml', 'fromxml');
  assert.match(xml, /<domain type='qemu' id='\d+'>/);
  assert.match(xml, /<model fallback='forbid'>qemu64<\/model>/);
  assert.equal(JSON.parse(await sb.ok('dominfo', 'fromxml', '--json')).cpuModel, 'qemu64');
  await libvirtAccepts(xml, 'running.xml');
  const inactive = await sb.ok('dumpxml', 'fromxml', '--inactive');
  assert.doesNotMatch(inactive, / id='/);
  await sb.ok('destroy', 'fromxml');
});
