/**
 * `virtmem daemon --hosts FILE` (issue 11): a second libvirtd on 127.0.0.1 TCP (its own mount
 * namespace) with a paused TCG domain, and this machine's test:///default, watched side by side:
 * GET /api/v1/hosts (checked against docs/openapi.json), /metrics with the host label, a bad
 * hosts file refused naming the line, and a remote libvirtd that stops answering, comes back,
 * and goes away, while the daemon keeps answering.
 * Needs root and a running libvirtd (CI: scripts/setup.sh --dev starts one).
 */
import { libvirtGuestXml } from '../helpers/libvirt-guest.js';
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { runCli, sandbox } from '../helpers/cli.js';
import { startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { startRemoteLibvirtd, type RemoteLibvirtd } from '../helpers/remote-libvirtd.js';
import { assertConforms } from '../helpers/openapi.js';
import { browserMissing, launchBrowser } from '../helpers/browser.js';
import { daemonRequest, closeDaemonClients } from '../../src/driver/remote/http-client.js';
import { skipUnlessCi, notRoot, libvirtdMissing, builtInGuestMissing } from '../helpers/skip.js';
import { virsh } from '../helpers/virsh.js';
import { until as pollUntil } from '../helpers/poll.js';

const skip = skipUnlessCi(libvirtdMissing(), notRoot(),
  builtInGuestMissing());

const NAME = 'hosts-remote-guest';

/** Polls `fn` until it returns true; bounded. */
async function until(what: string, fn: () => Promise<boolean>): Promise<void> {
  await pollUntil(what, fn, (v) => v);
}

interface HostDoc { uri: string; state: string; reason: string | null; lastUpdateS: number | null; domains: Array<Record<string, any>> }

const sb = await sandbox();
let d: RunningDaemon | null = null;
let remote: RemoteLibvirtd | null = null;
after(async () => {
  closeDaemonClients();
  await d?.stop();
  if (remote) {
    await virsh(remote.uri, 'destroy', NAME);
    await virsh(remote.uri, 'undefine', NAME);
    try { process.kill(remote.pid, 'SIGCONT'); } catch { /* gone */ }
    await remote.stop();
  }
  await sb.cleanup();
});

test('a bad hosts file is refused naming the line, and nothing starts', { skip, timeout: 60_000 }, async () => {
  const file = join(sb.stateDir, 'bad-hosts');
  await writeFile(file, '# hosts\ntest:///default\n\nqemu+bogus://10.0.0.1/system\n');
  const r = await runCli(['--state-dir', sb.stateDir, 'daemon', '--hosts', file], { timeoutMs: 30_000 });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /invalid hosts file: .*bad-hosts line 4: unsupported transport 'bogus'/);
  assert.ok(!existsSync(join(sb.stateDir, 'virtmemd.sock')), 'no socket: the daemon did not start');
  await writeFile(file, 'test:///default\nvirtmem:///system\n');
  const native = await runCli(['--state-dir', sb.stateDir, 'daemon', '--hosts', file], { timeoutMs: 30_000 });
  assert.equal(native.code, 1);
  assert.match(native.stderr, /line 2: 'virtmem:\/\/\/system' is virtmem's own driver/);
});

test('daemon --hosts: a remote libvirtd and test:///default side by side in /api/v1/hosts and /metrics; a host going away turns down', { skip, timeout: 600_000 }, async () => {
  remote = await startRemoteLibvirtd();
  const xml = join(sb.stateDir, 'guest.xml');
  await writeFile(xml, libvirtGuestXml(NAME, { memoryKiB: 262144, currentKiB: 196608 }));
  const def = await virsh(remote.uri, 'define', xml);
  assert.equal(def.code, 0, def.stderr);
  const started = await virsh(remote.uri, 'start', '--paused', NAME);
  assert.equal(started.code, 0, started.stderr);

  const hostsFile = join(sb.stateDir, 'hosts');
  await writeFile(hostsFile, `# two hosts\n${remote.uri}\n  test:///default  # this machine's test driver\n`);
  const token = randomBytes(24).toString('hex');
  const tokenFile = join(sb.stateDir, 'token');
  await writeFile(tokenFile, token + '\n', { mode: 0o600 });
  d = await startDaemon(sb.stateDir, ['--hosts', hostsFile, '--listen', 'tcp:127.0.0.1:0', '--token-file', tokenFile]);
  assert.match(d.stderr(), /watching 2 libvirt host\(s\)/);
  const target = { socketPath: d.socketPath };
  const hosts = async (): Promise<HostDoc[]> => {
    const r = await daemonRequest(target, 'GET', '/api/v1/hosts');
    assertConforms('GET', '/hosts', r.status, r.body);
    assert.equal(r.status, 200);
    return (r.body as { hosts: HostDoc[] }).hosts;
  };

  await until('both hosts up', async () => (await hosts()).every((h) => h.state === 'up'));
  const [rh, th] = await hosts();
  assert.equal(rh!.uri, remote.uri);
  assert.equal(th!.uri, 'test:///default');
  assert.equal(rh!.reason, null);
  assert.ok(typeof rh!.lastUpdateS === 'number' && rh!.lastUpdateS > 0);
  const rd = rh!.domains.find((x) => x.name === NAME);
  assert.ok(rd, `the remote domain is listed: ${JSON.stringify(rh!.domains)}`);
  assert.equal(rd.state, 'paused');
  assert.equal(rd.maxMemoryBytes, 262144 * 1024);
  // A paused guest has not driven its balloon yet: whatever it is, it is what virsh reports.
  const used = Number(/^Used memory: +([0-9]+) KiB$/m.exec((await virsh(remote.uri, 'dominfo', NAME)).stdout)?.[1]);
  assert.ok(used > 0, 'virsh dominfo has Used memory');
  assert.equal(rd.currentMemoryBytes, used * 1024);
  assert.equal(rd.balloonActualBytes, used * 1024);
  // The remote domain is not on this machine's libvirt, and test:///default's 'test' is not remote.
  assert.ok(!th!.domains.some((x) => x.name === NAME));
  const td = th!.domains.find((x) => x.name === 'test');
  assert.ok(td, 'test:///default lists its domain');
  assert.ok(typeof td.currentMemoryBytes === 'number' && td.currentMemoryBytes > 0, 'memory from dominfo where bulk stats have none');

  const metrics = async (): Promise<string> => {
    const r = await daemonRequest(target, 'GET', '/metrics');
    assert.equal(r.status, 200);
    return String(r.body);
  };
  const text = await metrics();
  const esc = remote.uri.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  assert.match(text, new RegExp(`^virtmem_host_up\\{host="${esc}"\\} 1$`, 'm'));
  assert.match(text, /^virtmem_host_up\{host="test:\/\/\/default"\} 1$/m);
  assert.match(text, new RegExp(`^virtmem_host_domain_memory_bytes\\{host="${esc}",domain="${NAME}",kind="balloon_actual"\\} ${used * 1024}$`, 'm'));
  assert.match(text, new RegExp(`^virtmem_host_domain_memory_bytes\\{host="${esc}",domain="${NAME}",kind="max"\\} ${262144 * 1024}$`, 'm'));
  assert.match(text, /^# TYPE virtmem_host_domain_memory_bytes gauge$/m);

  // The dashboard shows each host's group with its guests' cards (same refresh loop; a guest of
  // the host with index N has the hooks NAME@N).
  const noBrowser = skipUnlessCi(await browserMissing());
  if (!noBrowser) {
    assert.ok(d.port, 'the daemon listens on TCP');
    const browser = await launchBrowser();
    try {
      const page = browser.page;
      await page.goto(`http://127.0.0.1:${d.port}/?token=${token}`, { timeout: 60_000 });
      const card = page.getByTestId('libvirt-host-0').getByTestId(`guest-${NAME}@0`);
      await card.waitFor({ timeout: 60_000 });
      assert.equal(await page.getByTestId('libvirt-host-0').getAttribute('data-uri'), remote.uri);
      assert.equal(await page.getByTestId('libvirt-host-state-0').textContent(), 'up');
      assert.equal(await page.getByTestId(`total-${NAME}@0`).getAttribute('data-bytes'), String(used * 1024));
      assert.equal(await page.getByTestId(`state-${NAME}@0`).textContent(), 'paused');
      assert.ok(await page.getByTestId('libvirt-host-1').getByTestId('guest-test@1').isVisible(), 'test:///default with its domain beside it');
      assert.deepEqual(browser.problems, []);
    } finally {
      await browser.close();
    }
  }

  // The remote libvirtd stops answering: its host turns down with a reason, the other stays up,
  // and the daemon keeps answering meanwhile.
  process.kill(remote.pid, 'SIGSTOP');
  try {
    await until('the remote host down', async () => (await hosts())[0]!.state === 'down');
    const [down, other] = await hosts();
    assert.ok(down!.reason && down!.reason.length > 0, 'a reason');
    assert.equal(other!.state, 'up');
    assert.equal((await daemonRequest(target, 'GET', '/api/v1/host')).status, 200);
    assert.match(await metrics(), new RegExp(`^virtmem_host_up\\{host="${esc}"\\} 0$`, 'm'));
  } finally {
    process.kill(remote.pid, 'SIGCONT');
  }
  // It answers again: reconnected, up, with its domain.
  await until('the remote host up again', async () => {
    const h = (await hosts())[0]!;
    return h.state === 'up' && h.domains.some((x) => x.name === NAME);
  });

  // The remote libvirtd goes away for good (its guest first: it would outlive libvirtd).
  assert.equal((await virsh(remote.uri, 'destroy', NAME)).code, 0);
  assert.equal((await virsh(remote.uri, 'undefine', NAME)).code, 0);
  const r = remote;
  remote = null;
  await r.stop();
  await until('the remote host down after libvirtd stopped', async () => (await hosts())[0]!.state === 'down');
  const [gone] = await hosts();
  assert.match(gone!.reason!, /./);
  assert.equal((await daemonRequest(target, 'GET', '/api/v1/stats')).status, 200, 'the daemon keeps answering');
  assert.equal(await d.stop(), 0);
  d = null;
});
