/**
 * Per-call speed of the API through virtmemd against libvirt's own C client, and `setmem --wait`
 * from the CLI against libvirt's API path, on identical guests in one run (issue "One memory
 * brain for every guest", its fast-path goals):
 *
 *   npm run bench -- api [--calls N] [--rounds N] [--warmup N] [--settle-ms N]
 *
 * Two TCG guests of the built-in guest with the same shape (512 MiB boot RAM, a 1.5 GiB
 * virtio-mem region, statistics every second): one virtmem runs itself (native), one the
 * machine's libvirtd runs (qemu:///system), defined from the native guest's own `dumpxml`. One
 * virtmemd serves both (`--hosts` names qemu:///system, policy off). Then, interleaved round by
 * round, each side with one long-lived client making sequential calls:
 *
 *  - virtmemd, native guest: `GET /api/v1/domains/N/info`, `PUT /api/v1/domains/N/memory`
 *    (a balloon change, no wait) against libvirt's Python binding (its C library) on the
 *    libvirt guest: `dom.info()`, `dom.setMemoryFlags(size, AFFECT_LIVE)`;
 *  - virtmemd, libvirt guest (`/api/v1/hosts/qemu%3A%2F%2F%2Fsystem/domains/L/...`) against
 *    the same Python calls;
 *  - each of those through both of virtmemd's transports: its RPC socket (virtmemd-rpc.sock,
 *    one DaemonRpcClient connection: the goal rows) and HTTP on virtmemd.sock (keep-alive);
 *  - the floor of any live setmem: QEMU's own `balloon` command, one QMP round trip on the
 *    native guest's monitor from this process (before the daemon starts);
 *  - a balloon change of 64 MiB (down, then back up) until the guest has it: `PUT .../memory`
 *    with `waitMs` on the RPC socket (native and libvirt guest) against libvirt's API path in
 *    one Python process: setMemoryFlags, then its memory statistics every 10 ms until the
 *    balloon's "actual" is there;
 *  - grow by 1 GiB until the guest has it: `virtmem setmem N +1G --wait` (the CLI as a user
 *    runs it, the daemon up) against libvirt's API path in one Python process: update-device
 *    with the new requested size, then polling the live XML until <current> is there.
 *
 * Every timed series comes after `--warmup` untimed calls of the same kind on the same client,
 * on both sides (default 100): the rows compare long-lived clients in their steady state, not a
 * JIT compiling its first few hundred calls (the first round of a run without it was up to 3x
 * slower than the others on virtmem's side). And every series, on both sides, starts after a
 * pause of `--settle-ms` (default 500): a setmem series leaves its guest's vCPU giving back or
 * taking pages for a while, which under TCG takes a core from the next series. Without the
 * pause the Python side always started calm (its interpreter and connection take ~100 ms to
 * start) and virtmem's series right after a burst.
 *
 * Ratios are virtmem/libvirt medians; the goals are the issue's. Results in
 * bench/results/latest-api.md and a JSON file with every sample.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { summarize, timed, type Summary } from './stats.js';
import { startBenchDaemon } from './daemon.js';
import { daemonRequest, type DaemonTarget } from '../src/driver/remote/http-client.js';
import { DaemonRpcClient } from '../src/driver/remote/rpc-client.js';
import { QmpClient, setBalloon } from '../src/qmp/index.js';
import { NativeDriver } from '../src/driver/native/driver.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'virtmem');
const URI = 'qemu:///system';
const MiB = 1024;
const log = (s: string): void => { process.stderr.write(`[api-bench] ${s}\n`); };

/** The Python side: one connection, `calls` sequential calls of each kind, per-call ms as JSON. */
const PY_CALLS = `
import json, sys, time, libvirt
uri, name, calls, a, b, warm, settle = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]) / 1000
c = libvirt.open(uri); d = c.lookupByName(name)
time.sleep(settle)
for i in range(warm): d.info()
info = []
for i in range(calls):
    t = time.perf_counter(); d.info(); info.append((time.perf_counter() - t) * 1000)
time.sleep(settle)
for i in range(warm): d.setMemoryFlags(a if i % 2 == 0 else b, libvirt.VIR_DOMAIN_AFFECT_LIVE)
setmem = []
for i in range(calls):
    t = time.perf_counter(); d.setMemoryFlags(a if i % 2 == 0 else b, libvirt.VIR_DOMAIN_AFFECT_LIVE); setmem.append((time.perf_counter() - t) * 1000)
print(json.dumps({'info': info, 'setmem': setmem}))
`;

/**
 * libvirt's API path for a balloon change a caller waits for: setMemoryFlags, then its memory
 * statistics (libvirt asks QEMU's balloon each time) every 10 ms until "actual" is the target.
 * Sizes alternate; a pause before each change lets the guest settle.
 */
const PY_BALLOON_WAIT = `
import json, sys, time, libvirt
uri, name, n, a, b, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]) / 1000
c = libvirt.open(uri); d = c.lookupByName(name)
out = []
for i in range(n):
    kib = a if i % 2 == 0 else b
    time.sleep(pause)
    t = time.perf_counter()
    d.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    while d.memoryStats().get('actual') != kib:
        if time.perf_counter() - t > 60: raise SystemExit('not reached in 60 s')
        time.sleep(0.01)
    out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out))
`;

/** libvirt's API path for a virtio-mem grow: update-device, then poll the live XML until the guest has it. */
const PY_GROW = `
import json, re, sys, time, libvirt
uri, name, kib = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = libvirt.open(uri); d = c.lookupByName(name)
xml = d.XMLDesc(0)
dev = re.search(r"<memory model='virtio-mem'>.*?</memory>", xml, re.S).group(0)
dev = re.sub(r"<current unit='KiB'>\\d+</current>\\s*", '', dev)
dev = re.sub(r"<requested unit='KiB'>\\d+</requested>", "<requested unit='KiB'>%d</requested>" % kib, dev)
t = time.perf_counter()
d.updateDeviceFlags(dev, libvirt.VIR_DOMAIN_AFFECT_LIVE)
while True:
    m = re.search(r"<current unit='KiB'>(\\d+)</current>", d.XMLDesc(0))
    if m and int(m.group(1)) == kib: break
    if time.perf_counter() - t > 120: raise SystemExit('not reached in 120 s')
    time.sleep(0.02)
print(json.dumps({'ms': (time.perf_counter() - t) * 1000}))
`;

function python(code: string, ...args: string[]): Record<string, unknown> {
  const r = spawnSync('/usr/bin/python3', ['-c', code, ...args], { encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

function virsh(...args: string[]): string {
  const r = spawnSync('virsh', ['-c', URI, ...args], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`virsh ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function cli(stateDir: string, ...args: string[]): Promise<{ code: number; ms: number; out: string }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(BIN, ['--state-dir', stateDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { out += c; });
    child.once('close', (code) => resolve({ code: code ?? 99, ms: performance.now() - t0, out }));
  });
}

async function ok(t: DaemonTarget, method: string, path: string, body?: unknown): Promise<unknown> {
  const r = await daemonRequest(t, method, path, body === undefined ? {} : { body });
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${r.text}`);
  return r.body;
}

async function until(what: string, fn: () => Promise<boolean>, timeoutMs = 240_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export async function runApiBench(argv: string[]): Promise<void> {
  const opt = (k: string, d: number): number => { const i = argv.indexOf(k); return i >= 0 ? Number(argv[i + 1]) : d; };
  const calls = opt('--calls', 300);
  const rounds = opt('--rounds', 5);
  const warmup = opt('--warmup', 100);
  const settleMs = opt('--settle-ms', 500);
  /** A pause of `settleMs`, `warmup` untimed calls, then `calls` timed ones (per-call ms). */
  const series = async (fn: (i: number) => Promise<unknown>): Promise<number[]> => {
    await new Promise((r) => setTimeout(r, settleMs));
    for (let i = 0; i < warmup; i++) await fn(i);
    return timed(calls, fn);
  };
  const stateDir = await mkdtemp(join(tmpdir(), 'vm-api-'));
  const tag = `vmapi${process.pid}`;
  const N = `${tag}-n`;
  const L = `${tag}-l`;
  const drv = new NativeDriver({ stateDir });
  let daemon: Awaited<ReturnType<typeof startBenchDaemon>> | null = null;
  const samples: Record<string, number[]> = {};
  const add = (k: string, v: number[]): void => { (samples[k] ??= []).push(...v); };
  try {
    log(`guests ${N} (native) and ${L} (libvirt), 512 MiB + 1.5 GiB virtio-mem`);
    const made = await cli(stateDir, 'new', N, '--memory', '512M', '--max-memory', '2G', '--accel', 'tcg');
    if (made.code !== 0) throw new Error(made.out);
    // The libvirt guest is the native one's own definition, as libvirt takes it.
    const xml = (await drv.dumpXml(N, { inactive: true }))
      .replace(`<name>${N}</name>`, `<name>${L}</name>`)
      .replace(/<uuid>[^<]+<\/uuid>/, `<uuid>${randomUUID()}</uuid>`);
    const xmlFile = join(stateDir, 'l.xml');
    await writeFile(xmlFile, xml);
    virsh('define', xmlFile);
    await cli(stateDir, 'start', N);
    virsh('start', L);
    await cli(stateDir, 'dommemstat', N, '--period', '1', '--live');
    virsh('dommemstat', L, '--period', '1', '--live');
    await until('both guests report statistics', async () => /^usable /m.test((await cli(stateDir, 'dommemstat', N)).out) && /^usable /m.test(virsh('dommemstat', L)));
    // The floor: QEMU's balloon command itself, on the guest's short-call monitor, nobody else on it.
    const qmp = await QmpClient.connect(join(stateDir, 'run', N, 'qmp.sock'));
    try {
      for (let r = 0; r < rounds; r++) add('qmp-balloon', await series((i) => setBalloon(qmp, [500, 510][i % 2]! * MiB * 1024)));
    } finally {
      await qmp.close();
    }
    const hosts = join(stateDir, 'hosts');
    await writeFile(hosts, `${URI}\n`);
    daemon = await startBenchDaemon(stateDir, ['--hosts', hosts, '--policy', 'off']);
    const t = daemon.target;
    const H = encodeURIComponent(URI);
    await until('the daemon watches both', async () => {
      const s = await ok(t, 'GET', '/api/v1/stats') as { guests: Array<{ name: string; monitor: string }> };
      return [N, L].every((n) => s.guests.some((g) => g.name === n && g.monitor === 'connected'));
    });
    const sizes = [500 * MiB, 510 * MiB];
    const rpc = new DaemonRpcClient(join(stateDir, 'virtmemd-rpc.sock'));
    const rpcOk = async (method: 'GET' | 'PUT', path: string, body?: unknown): Promise<unknown> => {
      const a = await rpc.call(method, path, body);
      if (a.status >= 300) throw new Error(`${method} ${path}: ${a.status} ${a.text}`);
      return a.body;
    };
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}, load ${loadavg()[0]!.toFixed(2)}`);
      const nPath = `/api/v1/domains/${N}`;
      const lPath = `/api/v1/hosts/${H}/domains/${L}`;
      add('native-info', await series(() => ok(t, 'GET', `${nPath}/info`)));
      add('native-setmem', await series((i) => ok(t, 'PUT', `${nPath}/memory`, { targetBytes: sizes[i % 2]! * 1024 })));
      add('libvirt-info', await series(() => ok(t, 'GET', `${lPath}/info`)));
      add('libvirt-setmem', await series((i) => ok(t, 'PUT', `${lPath}/memory`, { targetBytes: sizes[i % 2]! * 1024 })));
      const rn = `/api/v1/domains/${N}`;
      const rl = `/api/v1/hosts/${H}/domains/${L}`;
      add('native-info-rpc', await series(() => rpcOk('GET', `${rn}/info`)));
      add('native-setmem-rpc', await series((i) => rpcOk('PUT', `${rn}/memory`, { targetBytes: sizes[i % 2]! * 1024 })));
      add('libvirt-info-rpc', await series(() => rpcOk('GET', `${rl}/info`)));
      add('libvirt-setmem-rpc', await series((i) => rpcOk('PUT', `${rl}/memory`, { targetBytes: sizes[i % 2]! * 1024 })));
      const py = python(PY_CALLS, URI, L, String(calls), String(sizes[0]), String(sizes[1]), String(warmup), String(settleMs)) as { info: number[]; setmem: number[] };
      add('python-info', py.info);
      add('python-setmem', py.setmem);
    }
    // A balloon change waited for, 64 MiB down and back up, each after a pause.
    const waits = rounds * 2;
    const waitSizes = [448 * MiB, 512 * MiB];
    const waited = async (path: string, i: number): Promise<number> => {
      await new Promise((r) => setTimeout(r, 1_500));
      const t0 = performance.now();
      const a = await rpc.call('PUT', path, { targetBytes: waitSizes[i % 2]! * 1024, waitMs: 60_000 }, 90_000);
      const ms = performance.now() - t0;
      if (a.status !== 200 || (a.body as { operation?: { state?: string } }).operation?.state !== 'succeeded') throw new Error(`PUT ${path} --wait: ${a.status} ${a.text}`);
      return ms;
    };
    for (let i = 0; i < waits; i++) add('native-balloon-wait', [await waited(`/api/v1/domains/${N}/memory`, i)]);
    for (let i = 0; i < waits; i++) add('libvirt-balloon-wait', [await waited(`/api/v1/hosts/${H}/domains/${L}/memory`, i)]);
    add('python-balloon-wait', python(PY_BALLOON_WAIT, URI, L, String(waits), String(waitSizes[0]), String(waitSizes[1]), '1500') as unknown as number[]);
    rpc.close();
    // Back to the boot size before growing.
    await cli(stateDir, 'setmem', N, '512M', '--wait');
    virsh('setmem', L, '512M', '--live');
    for (let r = 0; r < rounds; r++) {
      const grow = await cli(stateDir, 'setmem', N, '1536M', '--wait');
      if (grow.code !== 0) throw new Error(`setmem --wait: ${grow.out}`);
      add('cli-grow', [grow.ms]);
      add('libvirt-grow', [(python(PY_GROW, URI, L, String(1024 * MiB)) as { ms: number }).ms]);
      const back = await cli(stateDir, 'setmem', N, '512M', '--wait', '--force');
      if (back.code !== 0) throw new Error(`setmem back: ${back.out}`);
      python(PY_GROW, URI, L, '0');
    }
  } finally {
    await daemon?.stop();
    spawnSync('virsh', ['-c', URI, 'destroy', L], { stdio: 'ignore' });
    spawnSync('virsh', ['-c', URI, 'undefine', L], { stdio: 'ignore' });
    await drv.destroy(N).catch(() => undefined);
    await rm(stateDir, { recursive: true, force: true });
  }
  const s = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summarize(v)])) as Record<string, Summary>;
  const f = (x: Summary): string => `${x.median.toFixed(3)} (${x.p25.toFixed(3)}–${x.p75.toFixed(3)})`;
  const row = (what: string, a: string, b: string, goal: string): string => `| ${what} | ${f(s[a]!)} | ${f(s[b]!)} | ${(s[a]!.median / s[b]!.median).toFixed(2)} | ${goal} |`;
  const lines = [
    `# API per call through virtmemd vs libvirt's C client (${new Date().toISOString()})`,
    '',
    `Identical TCG guests (512 MiB + 1.5 GiB virtio-mem); ${rounds} rounds interleaved, ${calls} sequential calls per kind per round after a pause of ${settleMs} ms and ${warmup} untimed ones (each side); ms, median (p25–p75). Load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}.`,
    '',
    '| measurement | virtmem | libvirt (Python binding) | ratio | goal |',
    '|---|---|---|---|---|',
    row('native guest, RPC socket: `GET .../info` vs `dom.info()`', 'native-info-rpc', 'python-info', '≤ 0.5'),
    row('native guest, RPC socket: live setmem `PUT .../memory` vs `dom.setMemoryFlags(AFFECT_LIVE)`', 'native-setmem-rpc', 'python-setmem', '≤ 0.5'),
    row('libvirt guest through virtmemd, RPC socket: `GET /hosts/H/.../info` vs `dom.info()`', 'libvirt-info-rpc', 'python-info', '≤ 1.0'),
    row('libvirt guest through virtmemd, RPC socket: live setmem vs `dom.setMemoryFlags(AFFECT_LIVE)`', 'libvirt-setmem-rpc', 'python-setmem', '≤ 1.0'),
    row('native guest, HTTP: `GET .../info` vs `dom.info()`', 'native-info', 'python-info', '(HTTP)'),
    row('native guest, HTTP: live setmem vs `dom.setMemoryFlags(AFFECT_LIVE)`', 'native-setmem', 'python-setmem', '(HTTP)'),
    row('libvirt guest through virtmemd, HTTP: info vs `dom.info()`', 'libvirt-info', 'python-info', '(HTTP)'),
    row('libvirt guest through virtmemd, HTTP: live setmem vs `dom.setMemoryFlags(AFFECT_LIVE)`', 'libvirt-setmem', 'python-setmem', '(HTTP)'),
    row('the floor: QEMU\'s `balloon` on the native guest\'s monitor (one QMP round trip, this process) vs `dom.setMemoryFlags(AFFECT_LIVE)`', 'qmp-balloon', 'python-setmem', '(floor)'),
    row('native guest: a 64 MiB balloon change until the guest has it, RPC `PUT .../memory` with waitMs vs setMemoryFlags + memoryStats every 10 ms (Python)', 'native-balloon-wait', 'python-balloon-wait', '(no goal)'),
    row('libvirt guest through virtmemd: the same', 'libvirt-balloon-wait', 'python-balloon-wait', '(no goal)'),
    row('grow by 1 GiB until the guest has it: CLI `setmem --wait` vs update-device + polling (Python)', 'cli-grow', 'libvirt-grow', '≤ 1.1'),
    '',
  ];
  const text = lines.join('\n');
  process.stdout.write(text + '\n');
  const dir = join(ROOT, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'latest-api.md'), text + '\n');
  await writeFile(join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}-api.json`), JSON.stringify(samples) + '\n');
}
