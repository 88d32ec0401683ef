/**
 * The CLI survives its warm process dying (issue "Lose nothing under concurrency and faults"):
 * killed (SIGKILL) before it started a command, the caller runs the command itself; killed
 * mid-way, a command that printed nothing yet is run again when a second run is harmless (it
 * reads, or sets an absolute value: setmem), and undefine is never run a second time (the caller
 * is told it may or may not have taken effect). Commands on
 * definitions, through bin/virtmem as users run it.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BIN, ROOT, sandbox, type RunResult } from '../helpers/cli.js';
import { until } from '../helpers/poll.js';

// This test's own warm process: the environment is hashed into the warm socket's name, so a
// variable only this test sets gives it a process no other test (running at the same time)
// talks to, and the killer below kills only that one.
const ISOLATE = { XDG_STATE_HOME: `/nonexistent/virtmem-warm-kill-${process.pid}` };
const sb = await sandbox({ env: ISOLATE });
after(() => sb.cleanup());

const INDETERMINATE = /^error: the virtmem warm process died while running the command, which may or may not have taken effect; it was not run again: check before repeating it \(see \S+\.log\)$/m;

let buildId = '';

/** Pids of this build's warm CLI processes started for this test's environment. */
async function warmPids(): Promise<number[]> {
  const pids: number[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(p)) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (!cmd.includes('warm-server.js') || !cmd.includes(`/cli-${buildId}-`)) continue;
    const env = (await readFile(`/proc/${p}/environ`, 'utf8').catch(() => '')).split('\0');
    if (env.includes(`XDG_STATE_HOME=${ISOLATE.XDG_STATE_HOME}`)) pids.push(Number(p));
  }
  return pids;
}

const killAll = (pids: number[], sig: NodeJS.Signals): void => {
  for (const pid of pids) { try { process.kill(pid, sig); } catch { /* gone already */ } }
};

/** The warm process answers (its socket accepts): the next short command goes through it. */
async function warmUp(): Promise<number[]> {
  await sb.ok('list', '--all');
  return until('a warm CLI process of this build', warmPids, (p) => p.length > 0, () => {}, 60_000);
}

/** `virtmem ARGS` as a user runs it, started now; resolves with its result. */
function start(...args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(BIN, ['--state-dir', sb.stateDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...ISOLATE } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    const bound = setTimeout(() => child.kill('SIGKILL'), 180_000);
    child.once('close', (code) => { clearTimeout(bound); resolve({ code: code ?? 99, stdout, stderr }); });
  });
}

/** The boot memory a definition holds, read from its file (not through the CLI under test). */
async function currentKiB(name: string): Promise<number | null> {
  const text = await readFile(join(sb.stateDir, 'domains', `${name}.json`), 'utf8').catch(() => null);
  return text === null ? null : (JSON.parse(text) as { memory: { currentKiB: number } }).memory.currentKiB;
}
const defined = async (name: string): Promise<boolean> => (await currentKiB(name)) !== null;

before(async () => {
  buildId = (await readFile(join(ROOT, 'dist', 'warm-id'), 'utf8')).trim();
  const names = [...['a0', 'a1', 'b0', 'b1'], ...Array.from({ length: 40 }, (_, i) => `u${i}`), 'stopped-r', 'stopped-w'];
  for (let i = 0; i < names.length; i += 4) {
    await Promise.all(names.slice(i, i + 4).map((n) => sb.ok('new', n, '--memory', '512M')));
  }
});

test('killed before it started the commands: each caller runs its command itself, once', async () => {
  const pids = await warmUp();
  // Stopped, the warm process accepts connections (the kernel's backlog) but reads nothing:
  // the requests are in, no 's' frame can come out.
  killAll(pids, 'SIGSTOP');
  const pending = [start('dominfo', 'stopped-r'), start('undefine', 'stopped-w'), start('setmem', 'a0', '300M', '--config'), start('list', '--all')];
  // Wait until all four are connected and waiting on the stopped process, then kill it.
  await until('four clients waiting on the stopped warm process', async () => {
    const text = await readFile('/proc/net/unix', 'utf8');
    return text.split('\n').filter((l) => l.includes(`/cli-${buildId}-`)).length;
  }, (n) => n >= 5, () => {}, 30_000); // the listening socket and four connections
  killAll(pids, 'SIGKILL');
  const [info, undef, setmem, list] = await Promise.all(pending);
  assert.equal(info!.code, 0, info!.stderr);
  assert.match(info!.stdout, /^Name:\s+stopped-r$/m);
  assert.equal(undef!.code, 0, undef!.stderr);
  assert.equal(undef!.stdout, "Domain 'stopped-w' has been undefined\n\n", 'undefined once: a second run would say the domain does not exist');
  assert.equal(await defined('stopped-w'), false);
  assert.equal(setmem!.code, 0, setmem!.stderr);
  assert.equal(await currentKiB('a0'), 300 * 1024);
  assert.equal(list!.code, 0, list!.stderr);
  assert.match(list!.stdout, /^ -\s+stopped-r\s+shut off$/m);
});

test('killed again and again while commands run: no reader and no setmem fails, no undefine runs twice', async () => {
  const counts = { kills: 0, killsInFlight: 0, commands: 0, readOnly: 0, changes: 0, ok: 0, indeterminate: 0 };
  const failures: string[] = [];
  let inFlight = 0;
  let running = true;
  const undefs = Array.from({ length: 40 }, (_, i) => `u${i}`);

  // The killer: whenever a warm process of this build lives, kill it 50-400 ms later.
  const killer = (async () => {
    while (running) {
      const pids = await warmPids();
      if (pids.length === 0) { await new Promise((r) => setTimeout(r, 20)); continue; }
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 350));
      if (!running) break;
      if (inFlight > 0) counts.killsInFlight++;
      counts.kills++;
      killAll(pids, 'SIGKILL');
    }
  })();

  /** One caller: its own domains, so what each change did can be checked after it. */
  const runner = async (own: string[], steps: number): Promise<void> => {
    for (let i = 0; i < steps; i++) {
      const dom = own[i % own.length]!;
      const pick = Math.random();
      let args: string[];
      if (pick < 0.55) args = [['list', '--all'], ['dominfo', dom], ['domstate', dom], ['dumpxml', dom]][i % 4]!;
      else if (pick < 0.8 || undefs.length === 0) args = ['setmem', dom, `${256 + 32 * (i % 8)}M`, '--config'];
      else args = ['undefine', undefs.shift()!];
      const change = args[0] === 'setmem' || args[0] === 'undefine';
      inFlight++;
      const r = await start(...args);
      inFlight--;
      counts.commands++;
      if (change) counts.changes++; else counts.readOnly++;
      const what = `virtmem ${args.join(' ')}`;
      if (r.code === 0) {
        counts.ok++;
        if (args[0] === 'setmem') assert.equal(await currentKiB(dom), Number.parseInt(args[2]!, 10) * 1024, what);
        if (args[0] === 'undefine') {
          assert.equal(r.stdout, `Domain '${args[1]}' has been undefined\n\n`, what);
          assert.equal(await defined(args[1]!), false, what);
        }
        if (args[0] === 'list') assert.match(r.stdout, /^ Id\s+Name\s+State$/m, what);
        if (args[0] === 'dominfo') assert.match(r.stdout, new RegExp(`^Name:\\s+${dom}$`, 'm'), what);
        continue;
      }
      if (args[0] === 'undefine' && INDETERMINATE.test(r.stderr) && r.stdout === '') {
        // Killed after it started: it ran or it did not, and it was not run again.
        counts.indeterminate++;
        continue;
      }
      failures.push(`${what} -> exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    }
  };

  try {
    await Promise.all([runner(['a0', 'a1'], 70), runner(['b0', 'b1'], 70)]);
  } finally {
    running = false;
    await killer;
  }
  const report = `warm process kills ${counts.kills} (${counts.killsInFlight} with a command in flight); commands ${counts.commands} ` +
    `(read-only ${counts.readOnly}, changes ${counts.changes}); succeeded ${counts.ok}; changes cut after they started (not re-run) ${counts.indeterminate}; other failures ${failures.length}`;
  console.log(`warm-kill: ${report}`);
  assert.deepEqual(failures, [], report);
  assert.ok(counts.kills >= 5, `the warm process was killed often enough to test something: ${report}`);
  assert.equal(counts.ok + counts.indeterminate, counts.commands);
});
