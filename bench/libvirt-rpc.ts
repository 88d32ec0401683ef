/**
 * virtmem's libvirt RPC client against libvirt's own C client, same run, same daemon
 * (qemu:///system on this machine):
 *  - per call: one REMOTE_PROC_DOMAIN_GET_INFO, sequential, in one process — our client vs the
 *    Python binding (libvirt's C client underneath); and lookup + state (what `virsh domstate`
 *    does) vs `virsh` running the same commands in one process;
 *  - 200 guests, list + info of each: LibvirtDriver.list() + info() for all vs one `virsh`
 *    process running `list --all` and 200 `dominfo` commands (and the Python binding).
 * Guests are defined (not started) for the run and undefined afterwards.
 *   node dist/bench/libvirt-rpc.js [--calls N] [--rounds N] [--guests N]
 */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LibvirtDriver } from '../src/driver/libvirt/driver.js';
import { Proc, readDomain, writeDomain } from '../src/libvirt/protocol.js';
import { XdrReader } from '../src/libvirt/xdr.js';
import { summarize, type Summary } from './stats.js';

const URI = 'qemu:///system';
const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const CALLS = arg('calls', 1000);
const ROUNDS = arg('rounds', 5);
const GUESTS = arg('guests', 200);
const PREFIX = 'vmbench-rpc-';

const xml = (name: string): string => `<domain type='qemu'><name>${name}</name><uuid>${randomUUID()}</uuid><memory unit='KiB'>131072</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>`;

function python(code: string, ...args: string[]): number {
  const r = spawnSync('/usr/bin/python3', ['-c', code, ...args], { encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  return Number(r.stdout.trim());
}

function virshScript(lines: string[]): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('virsh', ['-c', URI], { input: lines.join('\n') + '\n', encoding: 'utf8', timeout: 600_000, maxBuffer: 64 << 20, env: { ...process.env, LC_ALL: 'C' } });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`virsh failed: ${r.stderr}`);
  return ms;
}

const PY_INFO = `
import libvirt, sys, time
n = int(sys.argv[1]); c = libvirt.open(sys.argv[2]); d = c.lookupByName(sys.argv[3])
d.info()
t = time.perf_counter()
for _ in range(n): d.info()
print((time.perf_counter() - t) * 1000 / n)
`;
const PY_LIST_INFO = `
import libvirt, sys, time
t = time.perf_counter()
c = libvirt.open(sys.argv[1])
for d in c.listAllDomains(0):
    d.info(); d.state(); d.isPersistent(); d.autostart(); d.OSType(); d.XMLDesc(0)
print((time.perf_counter() - t) * 1000)
`;

async function main(): Promise<void> {
  const drv = new LibvirtDriver(URI, { keepaliveIntervalMs: 0 });
  const c = await drv.connection();
  const names = Array.from({ length: GUESTS }, (_, i) => `${PREFIX}${String(i).padStart(3, '0')}`);
  await Promise.all(names.map((n) => drv.defineXml(xml(n))));
  const samples: Record<string, number[]> = {};
  const add = (k: string, v: number): void => { (samples[k] ??= []).push(v); };
  try {
    const dom = readDomain(new XdrReader(await c.call(Proc.DOMAIN_LOOKUP_BY_NAME, (w) => w.string(names[0]!))));
    for (let round = 0; round < ROUNDS; round++) {
      // One GET_INFO per call, sequential.
      let t0 = process.hrtime.bigint();
      for (let i = 0; i < CALLS; i++) await c.call(Proc.DOMAIN_GET_INFO, (w) => writeDomain(w, dom));
      add('getinfo-virtmem', Number(process.hrtime.bigint() - t0) / 1e6 / CALLS);
      add('getinfo-python', python(PY_INFO, String(CALLS), URI, names[0]!));
      // lookup + state, as `virsh domstate NAME` (virsh in one process; the first command's
      // connect is inside virsh's time, so it runs one extra command and we subtract nothing).
      t0 = process.hrtime.bigint();
      for (let i = 0; i < CALLS; i++) await drv.state(names[0]!);
      add('domstate-virtmem', Number(process.hrtime.bigint() - t0) / 1e6 / CALLS);
      add('domstate-virsh', virshScript(Array.from({ length: CALLS }, () => `domstate ${names[0]}`)) / CALLS);
      // 200 guests: list + info of each.
      t0 = process.hrtime.bigint();
      const d2 = new LibvirtDriver(URI, { keepaliveIntervalMs: 0 });
      const rows = await d2.list();
      await Promise.all(rows.map((r) => d2.info(r.uuid)));
      await d2.close();
      add('listinfo-virtmem', Number(process.hrtime.bigint() - t0) / 1e6);
      add('listinfo-virsh', virshScript(['list --all', ...names.map((n) => `dominfo ${n}`)]));
      add('listinfo-python', python(PY_LIST_INFO, URI));
    }
  } finally {
    await Promise.all(names.map((n) => drv.undefine(n).catch(() => undefined)));
    await drv.close();
  }
  const s = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summarize(v)])) as Record<string, Summary>;
  const f = (x: Summary, digits = 3): string => `${x.median.toFixed(digits)} (${x.p25.toFixed(digits)}–${x.p75.toFixed(digits)})`;
  const ratio = (a: string, b: string): string => (s[a]!.median / s[b]!.median).toFixed(2);
  const lines = [
    `# libvirt RPC: virtmem's client vs libvirt's own (${new Date().toISOString()})`,
    '',
    `qemu:///system, libvirt 9.0; ${ROUNDS} rounds interleaved; ${CALLS} sequential calls per sample; ${GUESTS} defined guests. Median (p25–p75).`,
    '',
    '| measurement | virtmem | libvirt C client | ratio | goal |',
    '|---|---|---|---|---|',
    `| one DOMAIN_GET_INFO call, ms (vs Python binding) | ${f(s['getinfo-virtmem']!)} | ${f(s['getinfo-python']!)} | ${ratio('getinfo-virtmem', 'getinfo-python')} | ≤ 1.0 |`,
    `| lookup + state (\`domstate\`), ms per command (vs virsh, one process) | ${f(s['domstate-virtmem']!)} | ${f(s['domstate-virsh']!)} | ${ratio('domstate-virtmem', 'domstate-virsh')} | ≤ 1.0 |`,
    `| ${GUESTS} guests: list + info of each, ms (vs virsh list + dominfo ×${GUESTS}, one process) | ${f(s['listinfo-virtmem']!, 1)} | ${f(s['listinfo-virsh']!, 1)} | ${ratio('listinfo-virtmem', 'listinfo-virsh')} | ≤ 0.5 |`,
    `| ${GUESTS} guests: list + info of each, ms (vs Python binding, same six calls per guest) | ${f(s['listinfo-virtmem']!, 1)} | ${f(s['listinfo-python']!, 1)} | ${ratio('listinfo-virtmem', 'listinfo-python')} | — |`,
    '',
    'virtmem\'s info of each guest is what `virtmem dominfo` needs: lookup, info, state, persistent, autostart, OS type, managed save, security model and label, and the XML (for virtio-mem), pipelined per guest and across guests on one connection. virsh and Python wait for each reply before sending the next call.',
    '',
  ];
  const text = lines.join('\n');
  process.stdout.write(text);
  writeFileSync(join(process.cwd(), 'bench', 'results', 'latest-libvirt-rpc.md'), text);
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
