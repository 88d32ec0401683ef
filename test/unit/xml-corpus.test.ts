import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { blockers, classify, namedElement, report } from '../../bench/xml-corpus.js';

/** A domain with `top` at the top level and `devices` inside <devices>. */
function doc({ top = '', devices = '' } = {}): string {
  return `<domain type='qemu'>
  <name>corpus</name>
  <memory unit='KiB'>1048576</memory>
  ${top}
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>${devices}</devices>
</domain>`;
}

describe('xml-corpus bench: classification', () => {
  it('names the refused element without its varying values', () => {
    assert.equal(namedElement("<vcpu current='2'>: vCPU hot-plug is not supported"), "vcpu current='N'");
    assert.equal(namedElement("<devices/memory model='nvdimm'>: persistent memory"), "devices/memory model='nvdimm'");
    assert.equal(namedElement('<memoryBacking/hugepages>: virtmem backs guest RAM'), 'memoryBacking/hugepages');
  });

  it('classifies a plain domain as equal and a refused one by element, with all its blockers', () => {
    assert.equal(classify(doc({ devices: "<memballoon model='virtio'/>" })).kind, 'equal');
    const refused = classify(doc({
      top: "<launchSecurity type='sev'/><memoryBacking><hugepages/></memoryBacking>",
      devices: "<disk type='vhostuser' device='disk'><source type='unix' path='/tmp/s'/><target dev='vda' bus='virtio'/></disk><memballoon model='virtio'/>",
    }));
    assert.equal(refused.kind, 'refused');
    if (refused.kind !== 'refused') return;
    assert.equal(refused.element, 'launchSecurity');
    assert.deepEqual(refused.blockers, ['launchSecurity', "devices/disk type='vhostuser'", '(parsed)']);
    assert.deepEqual(blockers(doc()), ['(parsed)']);
  });

  it('reports a wrong input by its differences and refusals grouped by element', () => {
    const text = report([
      { input: 'a', outcome: { kind: 'equal', warnings: 0 } },
      { input: 'b', outcome: { kind: 'wrong', against: 'virtmem-xml', differences: [{ fact: 'memory', kind: 'different', expected: '1', actual: '2' }] } },
      { input: 'c', outcome: { kind: 'refused', code: 'CONFIG_UNSUPPORTED', element: 'numatune', error: '<numatune>: no', blockers: ['numatune', '(parsed)'] } },
      { input: 'd', outcome: { kind: 'libvirt-refused', error: 'error: bad' } },
    ], false);
    assert.match(text, /total inputs\s+\|\s+4 \|/);
    assert.match(text, /accepted by libvirt\s+\|\s+3 \|/);
    assert.match(text, /WRONG \(must be 0\)\s+\|\s+1 \|/);
    assert.match(text, /different memory \(libvirt: 1, virtmem: 2\)/);
    assert.match(text, /1 {2}<numatune>/);
  });
});
