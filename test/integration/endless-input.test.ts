/**
 * An endless input is cut at its bound while it is read (issue "Lose nothing under concurrency
 * and faults"): `define /dev/zero` and `define -` fed without end fail at once with an error
 * naming the input and the bound, define nothing, and the process stays small all along.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BIN, sandbox } from '../helpers/cli.js';

const sb = await sandbox();
after(() => sb.cleanup());

/** Far above a Node process reading 1 MiB (~60 MB here), far below what reading without a bound reaches (GBs). */
const MAX_PEAK_RSS_KIB = 200 * 1024;

interface Outcome { code: number | null; stderr: string; peakKiB: number; samples: number }

/**
 * Run `virtmem ARGS` (bin/virtmem: sh, the C front and Node exec each other in one pid) and
 * sample its peak resident size (VmHWM) every 10 ms until it exits; `feed` gets its stdin.
 */
function runSampled(args: string[], feed?: (stdin: NodeJS.WritableStream) => void): Promise<Outcome> {
  const child = spawn(BIN, ['--state-dir', sb.stateDir, ...args], { stdio: [feed ? 'pipe' : 'ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
  let peakKiB = 0;
  let samples = 0;
  const sampler = setInterval(() => {
    readFile(`/proc/${child.pid}/status`, 'utf8').then((text) => {
      const m = /^VmHWM:\s+(\d+) kB$/m.exec(text);
      if (m) { samples++; peakKiB = Math.max(peakKiB, Number(m[1])); }
    }, () => {});
  }, 10);
  if (feed) {
    child.stdin!.on('error', () => {}); // EPIPE once virtmem stops reading: expected
    feed(child.stdin!);
  }
  // A bound on the whole run, not a timing: without the bound in place it would run for minutes.
  const kill = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) => {
    child.once('exit', (code) => {
      clearInterval(sampler);
      clearTimeout(kill);
      resolve({ code, stderr, peakKiB, samples });
    });
  });
}

/** Write 64 KiB chunks for as long as the reader takes them (respecting back-pressure). */
function pumpForever(stdin: NodeJS.WritableStream): void {
  const chunk = Buffer.alloc(64 * 1024, '<');
  const pump = (): void => {
    while ((stdin as unknown as { writable: boolean }).writable) {
      if (!stdin.write(chunk)) { stdin.once('drain', pump); return; }
    }
  };
  pump();
}

async function nothingDefined(): Promise<void> {
  assert.deepEqual(await readdir(join(sb.stateDir, 'domains')).catch(() => []), []);
}

const endlessCases: Array<{ what: string; source: string; feed?: (stdin: NodeJS.WritableStream) => void }> = [
  { what: 'define /dev/zero', source: '/dev/zero' },
  { what: 'define - with an endless standard input', source: '-', feed: pumpForever },
];
for (const c of endlessCases) {
  test(`${c.what} fails at the 1 MiB bound, naming the input, defines nothing, and stays small`, async () => {
    const r = await runSampled(['define', c.source], c.feed);
    assert.equal(r.code, 1, r.stderr);
    const name = c.source === '-' ? 'standard input' : c.source;
    assert.equal(r.stderr, `error: Failed to define domain from ${c.source}\nerror: ${name} is over the 1048576-byte limit for domain XML; nothing was read past it\n`);
    assert.ok(r.samples > 0, 'the process was sampled');
    assert.ok(r.peakKiB < MAX_PEAK_RSS_KIB, `peak RSS ${r.peakKiB} KiB`);
    await nothingDefined();
  });
}

test('define - with a domain on standard input defines it', async () => {
  const xml = "<domain type='qemu'><name>fromstdin</name><memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>";
  const r = await runSampled(['define', '-'], (stdin) => { stdin.end(xml); });
  assert.equal(r.code, 0, r.stderr);
  assert.match(await sb.ok('list', '--all', '--name'), /^fromstdin$/m);
  await sb.ok('undefine', 'fromstdin');
});

test('daemon --token-file /dev/zero and --hosts /dev/zero are cut at their bounds', async () => {
  let r = await runSampled(['daemon', '--listen', 'tcp:127.0.0.1:0', '--token-file', '/dev/zero']);
  assert.equal(r.code, 1, r.stderr);
  // /dev/zero is a device everyone may read: refused for that before a byte is read.
  assert.match(r.stderr, /^error: refusing to use a token file: \/dev\/zero is readable by everyone/m);
  r = await runSampled(['daemon', '--hosts', '/dev/zero']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^error: \/dev\/zero is over the 1048576-byte limit for a hosts file/m);
  assert.ok(r.peakKiB < MAX_PEAK_RSS_KIB, `peak RSS ${r.peakKiB} KiB`);
});
