/**
 * Permissions that do what they say (issue "Lose nothing under concurrency and faults"):
 * a state directory others can write into and a token file everyone can read are refused; a
 * definition that is a symbolic link is reported on its own, never followed or quoted, and the
 * other domains stay usable; `daemon --socket-mode 0660 --socket-group G` lets a real member of
 * G in (and no one else), and without it the state directory is owner-only again.
 */
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { sandbox, runCli, ROOT, type RunResult } from '../helpers/cli.js';
import { startDaemon } from '../helpers/daemon.js';
import { notRoot, skipUnlessCi } from '../helpers/skip.js';

const sb = await sandbox();
after(() => sb.cleanup());

/** Run a program (argv, no shell) and collect its exit code and output; bounded. */
function run(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), { env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 99) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('a definition that is not a plain file', () => {
  test('a symlink and a torn file are named on stderr, never followed or quoted; the others are listed and usable', async () => {
    await sb.ok('new', 'good1', '--memory', '256M');
    await sb.ok('new', 'good2', '--memory', '256M');
    const domains = join(sb.stateDir, 'domains');
    await symlink('/etc/shadow', join(domains, 'bad.json'));
    await writeFile(join(domains, 'torn.json'), '{"schemaVersion": 1, "name": "torn", "SECRET-CONTENT', { mode: 0o600 });
    for (const env of [{}, { VIRTMEM_WARM: '0' }]) {
      const r = await runCli(['--state-dir', sb.stateDir, 'list', '--all'], { env });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^ -\s+good1\s+shut off$/m);
      assert.match(r.stdout, /^ -\s+good2\s+shut off$/m);
      assert.doesNotMatch(r.stdout, /bad|torn/);
      assert.equal(r.stderr,
        `warning: domain 'bad' is not listed: stored definition of 'bad' is unusable: ${join(domains, 'bad.json')} is a symbolic link, not a regular file; virtmem does not follow links or read special files in its state directory\n` +
        `warning: domain 'torn' is not listed: stored definition of 'torn' is unusable: ${join(domains, 'torn.json')} is not valid JSON\n`);
    }
    const one = await sb.run('dominfo', 'bad');
    assert.equal(one.code, 1);
    assert.match(one.stderr, /^error: stored definition of 'bad' is unusable: \S+bad\.json is a symbolic link/m);
    const torn = await sb.run('dominfo', 'torn');
    assert.doesNotMatch(torn.stderr + torn.stdout, /SECRET|schemaVersion|root:/);
    assert.match(await sb.ok('dominfo', 'good1'), /^Name:\s+good1$/m);
    const json = JSON.parse(await sb.ok('list', '--all', '--name', '--json')) as Array<{ name: string }>;
    assert.deepEqual(json.map((d) => d.name), ['good1', 'good2']);
    // Defining over the link replaces the link itself (rename), never what it points at.
    const shadowBefore = await stat('/etc/shadow');
    await sb.ok('new', 'bad', '--memory', '256M');
    assert.equal((await stat('/etc/shadow')).mtimeMs, shadowBefore.mtimeMs);
    assert.match(await sb.ok('dominfo', 'bad'), /^Name:\s+bad$/m);
    for (const n of ['good1', 'good2', 'bad']) await sb.ok('undefine', n);
    const gone = await sb.run('undefine', 'torn');
    assert.match(gone.stderr, /^error: stored definition of 'torn' is unusable/m, 'an unusable definition is not removed blindly');
    await unlink(join(domains, 'torn.json'));
  });
});

describe('a state directory others can write into', () => {
  for (const mode of [0o777, 0o770, 0o1777]) {
    test(`mode 0${mode.toString(8)} is refused by the CLI and the daemon, naming the directory and the fix`, async () => {
      const loose = await sandbox();
      try {
        await loose.ok('new', 'vm', '--memory', '256M');
        await chmod(loose.stateDir, mode);
        for (const args of [['list', '--all'], ['dominfo', 'vm'], ['setmem', 'vm', '200M', '--config']]) {
          const r = await loose.run(...args);
          assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
          assert.match(r.stderr, new RegExp(`^error: refusing to use state directory: ${loose.stateDir} is writable by (everyone|its group) \\(mode 0?${mode.toString(8)}\\).*chmod go-w ${loose.stateDir}`, 'm'));
        }
        const d = await run([join(ROOT, 'bin', 'virtmem'), '--state-dir', loose.stateDir, 'daemon']);
        assert.equal(d.code, 1);
        assert.match(d.stderr, /^error: refusing to use state directory: /m);
        await chmod(loose.stateDir, 0o700);
        assert.match(await loose.ok('dominfo', 'vm'), /^Used memory:\s+262144 KiB$/m, 'nothing changed while refused');
      } finally {
        await chmod(loose.stateDir, 0o700);
        await loose.cleanup();
      }
    });
  }
});

describe('a token file', () => {
  test('readable by everyone is refused; group-readable (a scraper\'s group) is taken', async () => {
    const file = join(sb.stateDir, 'token');
    await writeFile(file, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o644 });
    await chmod(file, 0o644);
    const r = await run([join(ROOT, 'bin', 'virtmem'), '--state-dir', sb.stateDir, 'daemon', '--listen', 'tcp:127.0.0.1:0', '--token-file', file]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `error: refusing to use a token file: ${file} is readable by everyone (mode 0644); run \`chmod o-rwx ${file}\`\n`);
    await chmod(file, 0o640);
    const d = await startDaemon(sb.stateDir, ['--listen', 'tcp:127.0.0.1:0', '--token-file', file]);
    assert.ok(d.port);
    await d.stop();
  });
});

describe('daemon --socket-mode 0660', () => {
  const skip = skipUnlessCi(notRoot());
  const tag = randomBytes(3).toString('hex');
  const group = `vmsock${tag}`;
  const member = `vmmem${tag}`;
  const outsider = `vmout${tag}`;

  /** As `user`: GET /api/v1/domains on the daemon's socket; the status, or the connect error's code. */
  const ask = async (user: string, socketPath: string): Promise<string> => {
    const script = `const s = require('node:net').createConnection(process.argv[1]);
s.on('error', (e) => { console.log(e.code); process.exit(0); });
s.on('connect', () => s.write('GET /api/v1/domains HTTP/1.1\\r\\nhost: localhost\\r\\nconnection: close\\r\\n\\r\\n'));
let t = ''; s.setEncoding('utf8').on('data', (c) => { t += c; }); s.on('end', () => console.log(t.split(' ')[1]));`;
    const r = await run(['runuser', '-u', user, '--', process.execPath, '-e', script, socketPath]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };

  test('a member of the socket\'s group gets in, through the state directory; others do not', { skip }, async () => {
    for (const argv of [['groupadd', group], ['useradd', '-M', '-N', '-g', group, '-s', '/usr/sbin/nologin', member], ['useradd', '-M', '-N', '-s', '/usr/sbin/nologin', outsider]]) {
      const r = await run(argv);
      assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
    }
    try {
      await sb.ok('new', 'shared', '--memory', '256M');
      let d = await startDaemon(sb.stateDir, ['--socket-mode', '0660', '--socket-group', group]);
      try {
        const gid = Number((await run(['getent', 'group', group])).stdout.split(':')[2]);
        const sock = await stat(d.socketPath);
        assert.equal(sock.mode & 0o777, 0o660);
        assert.equal(sock.gid, gid);
        const dir = await stat(sb.stateDir);
        assert.equal(dir.mode & 0o777, 0o710, 'the group may pass through the state directory, not list it');
        assert.equal(dir.gid, gid);
        assert.equal(await ask(member, d.socketPath), '200');
        assert.equal(await ask(outsider, d.socketPath), 'EACCES');
        // The member uses the CLI as documented: it goes through the daemon.
        const cli = await run(['runuser', '-u', member, '--', join(ROOT, 'bin', 'virtmem'), '--state-dir', sb.stateDir, 'list', '--all'], { ...process.env, VIRTMEM_WARM: '0' });
        assert.equal(cli.code, 0, cli.stderr);
        assert.match(cli.stdout, /^ -\s+shared\s+shut off$/m);
        // What else is in the state directory stays out of the member's reach.
        const peek = await run(['runuser', '-u', member, '--', 'ls', join(sb.stateDir, 'domains')]);
        assert.notEqual(peek.code, 0, 'domains/ is owner-only');
      } finally {
        await d.stop();
      }
      // Without --socket-mode the state directory is owner-only again.
      d = await startDaemon(sb.stateDir, []);
      try {
        assert.equal((await stat(sb.stateDir)).mode & 0o777, 0o700);
        assert.equal((await stat(d.socketPath)).mode & 0o777, 0o600);
        assert.equal(await ask(member, d.socketPath), 'EACCES');
      } finally {
        await d.stop();
      }
      await sb.ok('undefine', 'shared');
    } finally {
      await run(['userdel', member]);
      await run(['userdel', outsider]);
      await run(['groupdel', group]);
    }
  });

  test('--socket-group without --socket-mode 0660, and an unknown group, are refused', async () => {
    let r = await sb.run('daemon', '--socket-group', 'root');
    assert.match(r.stderr, /^error: --socket-group needs --socket-mode 0660$/m);
    r = await sb.run('daemon', '--socket-mode', '0660', '--socket-group', `nosuch${tag}`);
    assert.match(r.stderr, new RegExp(`^error: invalid --socket-group 'nosuch${tag}': no such group$`, 'm'));
  });
});
