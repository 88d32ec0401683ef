/** What the libvirt driver reads from libvirt's domain XML, and the virtio-mem update document. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { memoryLayoutFromXml, sizeKiB, virtioMemUpdateXml } from '../../src/driver/libvirt/domain-xml.js';
import { element, parseXmlTree } from '../../src/domain/xml-tree.js';
import { VirtError } from '../../src/domain/errors.js';

const LIVE = `<domain type='qemu' id='3'>
  <name>web</name>
  <maxMemory slots='2' unit='KiB'>2097152</maxMemory>
  <memory unit='KiB'>1835008</memory>
  <currentMemory unit='KiB'>614400</currentMemory>
  <devices>
    <memballoon model='virtio'><stats period='5'/><alias name='balloon0'/></memballoon>
    <memory model='dimm'><target><size unit='MiB'>256</size><node>0</node></target></memory>
    <memory model='virtio-mem'>
      <target>
        <size unit='GiB'>1</size>
        <node>0</node>
        <block unit='KiB'>2048</block>
        <requested unit='KiB'>352256</requested>
        <current unit='KiB'>350208</current>
      </target>
      <alias name='virtiomem0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </memory>
  </devices>
</domain>`;

test('memory layout: boot RAM, DIMMs, virtio-mem with live sizes, stats period, units', () => {
  const l = memoryLayoutFromXml(LIVE);
  assert.equal(l.name, 'web');
  assert.equal(l.memoryKiB, 1835008);
  assert.equal(l.currentMemoryKiB, 614400);
  assert.equal(l.dimmKiB, 262144);
  assert.equal(l.bootKiB, 1835008 - 262144 - 1048576);
  assert.equal(l.statsPeriodS, 5);
  assert.equal(l.virtioMem.length, 1);
  const v = l.virtioMem[0]!;
  assert.deepEqual([v.alias, v.sizeKiB, v.blockKiB, v.requestedKiB, v.currentKiB], ['virtiomem0', 1048576, 2048, 352256, 350208]);
});

test('inactive XML: no <current> means the requested size; no balloon stats means period 0', () => {
  const l = memoryLayoutFromXml(LIVE.replace(/<current [^>]*>[^<]*<\/current>/, '').replace(/<stats period='5'\/>/, ''));
  assert.equal(l.virtioMem[0]!.currentKiB, 352256);
  assert.equal(l.statsPeriodS, 0);
});

test('the update-device document: same device, new <requested> in KiB, no output-only <current>', () => {
  const l = memoryLayoutFromXml(LIVE);
  const doc = parseXmlTree(virtioMemUpdateXml(l.virtioMem[0]!, 524288));
  const target = doc.children.find((c) => c.name === 'target')!;
  assert.equal(doc.attrs.model, 'virtio-mem');
  assert.deepEqual(target.children.map((c) => c.name), ['size', 'node', 'block', 'requested']);
  const req = target.children.find((c) => c.name === 'requested')!;
  assert.deepEqual([req.attrs.unit, req.text], ['KiB', '524288']);
  assert.equal(doc.children.find((c) => c.name === 'alias')!.attrs.name, 'virtiomem0');
  assert.ok(doc.children.some((c) => c.name === 'address'), 'the address stays: libvirt compares it');
  // The original is untouched.
  assert.equal(l.virtioMem[0]!.requestedKiB, 352256);
  assert.match(virtioMemUpdateXml(l.virtioMem[0]!, 0), /<requested unit="KiB">0<\/requested>|<requested unit='KiB'>0<\/requested>/);
});

test('sizes in every libvirt unit; unreadable sizes and non-domain documents are XML errors', () => {
  const el = (unit: string | undefined, text: string) => element('size', { unit }, [], text);
  assert.equal(sizeKiB(el(undefined, '1024'), 'x'), 1024);
  assert.equal(sizeKiB(el('b', '1048576'), 'x'), 1024);
  assert.equal(sizeKiB(el('MiB', '2'), 'x'), 2048);
  assert.equal(sizeKiB(el('G', '1'), 'x'), 1048576);
  assert.equal(sizeKiB(el('MB', '1'), 'x'), 977);
  assert.throws(() => sizeKiB(el('XB', '1'), 'x'), (e: unknown) => e instanceof VirtError && e.code === 'XML_ERROR');
  assert.throws(() => sizeKiB(el('KiB', 'lots'), 'x'), VirtError);
  assert.throws(() => memoryLayoutFromXml('<network/>'), /expected a <domain> document/);
});
