/**
 * Our XDR decoding checked against libvirt's own C client on the same daemon answers: the Python
 * binding (python3-libvirt, the C library underneath) and our client make the same failing
 * calls, and every field of libvirt's error record must agree — code, domain, message, level,
 * str1..3, int1..2. A layout mistake that our own encoder would mirror cannot hide here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { LibvirtClient } from '../../src/libvirt/client.js';
import { LibvirtError } from '../../src/libvirt/errors.js';
import { LibvirtDriver } from '../../src/driver/libvirt/driver.js';
import { Proc, STRING_MAX, uuidBytes } from '../../src/libvirt/protocol.js';
import { skipUnlessCi, notRoot } from '../helpers/skip.js';

const SOCK = '/var/run/libvirt/libvirt-sock';
const PY = '/usr/bin/python3';
const hasBinding = existsSync(PY) && spawnSync(PY, ['-c', 'import libvirt'], { stdio: 'ignore' }).status === 0;
const skip = skipUnlessCi(!hasBinding && 'python3-libvirt not installed', !existsSync(SOCK) && `libvirtd is not running (${SOCK} missing)`, notRoot());

/** libvirt's Python binding running `script`, asynchronously (the test holds connections meanwhile). */
function python(script: string, ...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(PY, ['-c', script, ...args], { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ status: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 99) : 0, stdout, stderr });
    });
  });
}

const PY_ERRORS = `
import json, libvirt, sys
libvirt.registerErrorHandler(lambda *a: None, None)
uri, name, uuid = sys.argv[1:4]
c = libvirt.open(uri)
out = []
for f in (lambda: c.lookupByName(name), lambda: c.lookupByUUIDString(uuid), lambda: c.defineXML('<domain type="qemu"><name>x</name></domain>')):
    try:
        f(); out.append(None)
    except libvirt.libvirtError as e:
        out.append({'code': e.get_error_code(), 'domain': e.get_error_domain(), 'message': e.get_error_message(), 'level': e.get_error_level(),
                    'str1': e.get_str1(), 'str2': e.get_str2(), 'str3': e.get_str3(), 'int1': e.get_int1(), 'int2': e.get_int2()})
print(json.dumps(out))
`;

test('error records decode field for field as libvirt\'s C client decodes them', { skip, timeout: 60_000 }, async () => {
  const name = `nosuch-${randomUUID().slice(0, 8)}`;
  const uuid = randomUUID();
  for (const uri of ['qemu:///system']) {
    const py = await python(PY_ERRORS, uri, name, uuid);
    assert.equal(py.status, 0, py.stderr);
    const theirs = JSON.parse(py.stdout) as Array<Record<string, unknown> | null>;
    const c = await LibvirtClient.connect(uri, { keepaliveIntervalMs: 0 });
    const ours: Array<Record<string, unknown> | null> = [];
    for (const call of [
      () => c.call(Proc.DOMAIN_LOOKUP_BY_NAME, (w) => w.string(name, STRING_MAX)),
      () => c.call(Proc.DOMAIN_LOOKUP_BY_UUID, (w) => w.fixedOpaque(uuidBytes(uuid)!, 16)),
      () => c.call(Proc.DOMAIN_DEFINE_XML, (w) => w.string('<domain type="qemu"><name>x</name></domain>', STRING_MAX)),
    ]) {
      try {
        await call();
        ours.push(null);
      } catch (e) {
        assert.ok(e instanceof LibvirtError && e.kind === 'remote', String(e));
        ours.push({ code: e.libvirtCode, domain: e.libvirtDomain, message: e.message, ...e.detail });
      }
    }
    await c.close();
    assert.ok(theirs.every((t) => t !== null), 'every call fails for libvirt\'s own client too');
    assert.deepEqual(ours, theirs, uri);
  }
});

const PY_DOMAIN = `
import json, libvirt, sys
c = libvirt.open(sys.argv[1]); d = c.lookupByName(sys.argv[2])
st, reason = d.state()
print(json.dumps({'info': d.info(), 'state': [st, reason], 'persistent': d.isPersistent(), 'autostart': d.autostart(), 'os': d.OSType(),
  'managedSave': d.hasManagedSaveImage(0), 'xml': d.XMLDesc(0), 'inactiveXml': d.XMLDesc(2), 'secmodel': c.getSecurityModel(), 'uuid': d.UUIDString()}))
`;

test('a domain\'s info, state, flags, XML and the host security model decode as libvirt\'s C client decodes them', { skip, timeout: 60_000 }, async () => {
  const name = `vmcc-${randomUUID().slice(0, 8)}`;
  const drv = new LibvirtDriver('qemu:///system', { keepaliveIntervalMs: 0 });
  try {
    await drv.defineXml(`<domain type='qemu'><name>${name}</name><memory unit='KiB'>393216</memory><currentMemory unit='KiB'>262144</currentMemory><vcpu>2</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>`);
    const py = await python(PY_DOMAIN, 'qemu:///system', name);
    assert.equal(py.status, 0, py.stderr);
    const t = JSON.parse(py.stdout) as { info: number[]; state: number[]; persistent: number; autostart: number; os: string; managedSave: number; xml: string; inactiveXml: string; secmodel: string[]; uuid: string };
    const info = await drv.info(name);
    assert.deepEqual(
      [info.uuid, info.maxMemoryKiB, info.usedMemoryKiB, info.vcpus, info.persistent, info.autostart, info.osType, info.managedSave, info.security?.model ?? '', info.security?.doi ?? ''],
      [t.uuid, t.info[1], t.info[2], t.info[3], t.persistent === 1, t.autostart === 1, t.os, t.managedSave === 1, t.secmodel[0], t.secmodel[1]]);
    // virDomainShutoffReason in virsh's words.
    const SHUTOFF = ['unknown', 'shutdown', 'destroyed', 'crashed', 'migrated', 'saved', 'failed', 'from snapshot', 'daemon'];
    assert.equal(t.state[0], 5, 'libvirt says shut off too');
    assert.deepEqual(await drv.state(name), { state: 'shutoff', reason: SHUTOFF[t.state[1]!] });
    assert.equal(await drv.dumpXml(name), t.xml);
    assert.equal(await drv.dumpXml(name, { inactive: true }), t.inactiveXml);
  } finally {
    await drv.undefine(name).catch(() => undefined);
    await drv.close();
  }
});
