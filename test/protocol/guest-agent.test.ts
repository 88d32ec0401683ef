/**
 * GuestAgent against a scripted fake guest on a real unix socket: the faults a real guest will
 * not produce on demand (lost probes, replies split at every byte, stray output, late answers,
 * a peer that vanishes mid-command). The real guest is exercised in guest-boot.test.ts.
 */

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { GuestAgent, readGuestMeminfo } from '../../src/guest/agent.js';
import { GuestAgentError } from '../../src/guest/errors.js';

type Reply =
  | { output: string; exitCode?: number; delayMs?: number; byteByByte?: boolean; noiseBefore?: string; noiseAfter?: string; crlf?: boolean }
  | 'close'
  /** Begin the reply and never end it (`yes` in the guest). */
  | 'endless';

interface FakeGuestOptions {
  /** Probes to ignore before answering (input lost while the guest boots). */
  dropProbes?: number;
  /** Sent right after the connection is accepted. */
  greeting?: string;
  /** Never answer probes. */
  mute?: boolean;
  handle?: (command: string) => Reply;
}

interface FakeGuest {
  path: string;
  /** Log of what the fake saw and did, in order. */
  events: string[];
  listen(): Promise<void>;
  close(): Promise<void>;
}

const PROBE_RE = /^echo "@@VM-DONE:""([0-9a-f]+):0@@"$/;
const COMMAND_RE = /^echo "@@VM-BEGIN:""([0-9a-f]+)@@"; \(eval "\$\(echo ([A-Za-z0-9+/=]*) \| base64 -d\)"\); echo "@@VM-DONE:""\1:\$\?@@"$/;

let dir: string;
let counter = 0;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'virtmem-agent-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A fake guest agent speaking the ttyS1 protocol of guest/init, one line at a time, in order. */
function fakeGuest(opts: FakeGuestOptions): FakeGuest {
  const path = join(dir, `agent-${counter++}.sock`);
  const events: string[] = [];
  const sockets = new Set<Socket>();
  let server: Server | null = null;
  let probes = 0;

  const serve = (sock: Socket): void => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    sock.setEncoding('utf8');
    if (opts.greeting) sock.write(opts.greeting);
    let buf = '';
    let chain = Promise.resolve();
    sock.on('data', (c: string) => {
      buf += c;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        chain = chain.then(() => answer(sock, line));
      }
    });
  };

  const answer = async (sock: Socket, line: string): Promise<void> => {
    if (line === '') return;
    const probe = PROBE_RE.exec(line);
    if (probe) {
      events.push('probe');
      if (opts.mute || probes++ < (opts.dropProbes ?? 0)) return;
      sock.write(`@@VM-DONE:${probe[1]}:0@@\n`);
      return;
    }
    const cmd = COMMAND_RE.exec(line);
    assert.ok(cmd?.[1] !== undefined && cmd[2] !== undefined, `fake guest got an unframed line: ${line}`);
    const command = Buffer.from(cmd[2], 'base64').toString('utf8');
    events.push(`recv ${command}`);
    const r = opts.handle?.(command) ?? { output: '' };
    if (r === 'close') {
      sock.destroy();
      return;
    }
    if (r === 'endless') {
      sock.write(`@@VM-BEGIN:${cmd[1]}@@\n`);
      const chunk = 'y\n'.repeat(32 * 1024);
      while (!sock.destroyed) {
        if (!sock.write(chunk)) await new Promise((res) => { sock.once('drain', res); sock.once('close', res); });
      }
      events.push(`cut ${command}`);
      return;
    }
    if (r.delayMs) await new Promise((res) => setTimeout(res, r.delayMs));
    const nl = r.crlf ? '\r\n' : '\n';
    const text = `${r.noiseBefore ?? ''}@@VM-BEGIN:${cmd[1]}@@${nl}${r.output}@@VM-DONE:${cmd[1]}:${r.exitCode ?? 0}@@${nl}${r.noiseAfter ?? ''}`;
    if (r.byteByByte) {
      for (const byte of Buffer.from(text)) {
        if (sock.destroyed) return;
        sock.write(Buffer.of(byte));
        await new Promise((res) => setImmediate(res));
      }
    } else if (!sock.destroyed) {
      sock.write(text);
    }
    events.push(`done ${command}`);
  };

  return {
    path,
    events,
    listen: () =>
      new Promise<void>((resolve, reject) => {
        server = createServer(serve);
        server.once('error', reject);
        server.listen(path, () => resolve());
      }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        if (server) server.close(() => resolve());
        else resolve();
      }),
  };
}

async function withFake(opts: FakeGuestOptions, body: (g: FakeGuest) => Promise<void>): Promise<void> {
  const g = fakeGuest(opts);
  await g.listen();
  try {
    await body(g);
  } finally {
    await g.close();
  }
}

async function rejectsWithCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof GuestAgentError, `not a GuestAgentError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

test('connect keeps probing through lost probes and boot noise, then runs commands', async () => {
  await withFake(
    { dropProbes: 2, greeting: 'noise from boot\nVIRTMEM-GUEST-READY\n', handle: (c) => ({ output: `ran ${c}\n` }) },
    async (g) => {
      const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
      try {
        assert.equal(agent.state, 'ready');
        assert.ok(g.events.filter((e) => e === 'probe').length >= 3);
        assert.deepEqual(await agent.run('echo "it\'s" && uname -r'), { output: 'ran echo "it\'s" && uname -r\n', exitCode: 0 });
      } finally {
        agent.close();
      }
    },
  );
});

test('a reply split at every byte, with multi-byte UTF-8 and CRLF, is reassembled', async () => {
  await withFake({ handle: () => ({ output: 'grüße €\r\nline2\r\n', exitCode: 3, byteByByte: true, crlf: true }) }, async (g) => {
    const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
    try {
      assert.deepEqual(await agent.run('x'), { output: 'grüße €\nline2\n', exitCode: 3 });
    } finally {
      agent.close();
    }
  });
});

test('output outside the command markers is not part of the reply', async () => {
  await withFake({ handle: () => ({ output: 'mine\n', noiseBefore: 'late background line\n', noiseAfter: 'trailing\n' }) }, async (g) => {
    const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
    try {
      assert.equal((await agent.run('a')).output, 'mine\n');
      assert.equal((await agent.run('b')).output, 'mine\n');
    } finally {
      agent.close();
    }
  });
});

test('concurrent run() calls reach the guest one at a time, in call order', async () => {
  await withFake({ handle: (c) => ({ output: `${c}\n`, delayMs: c === 'first' ? 150 : 0 }) }, async (g) => {
    const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
    try {
      const [a, b, c] = await Promise.all([agent.run('first'), agent.run('second'), agent.run('third')]);
      assert.deepEqual([a.output, b.output, c.output], ['first\n', 'second\n', 'third\n']);
      assert.deepEqual(
        g.events.filter((e) => e !== 'probe'),
        ['recv first', 'done first', 'recv second', 'done second', 'recv third', 'done third'],
      );
    } finally {
      agent.close();
    }
  });
});

test('a timed-out command fails with AGENT_TIMEOUT; its late answer does not leak into the next', async () => {
  await withFake({ handle: (c) => (c === 'slow' ? { output: 'slow answer\n', delayMs: 300 } : { output: 'fast answer\n' }) }, async (g) => {
    const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
    try {
      await rejectsWithCode(agent.run('slow', { timeoutMs: 50 }), 'AGENT_TIMEOUT');
      assert.deepEqual(await agent.run('fast'), { output: 'fast answer\n', exitCode: 0 });
    } finally {
      agent.close();
    }
  });
});

test('abort before and during a command fails with AGENT_ABORTED', async () => {
  await withFake({ handle: () => ({ output: 'x\n', delayMs: 500 }) }, async (g) => {
    const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
    try {
      await rejectsWithCode(agent.run('a', { signal: AbortSignal.abort() }), 'AGENT_ABORTED');
      const ac = new AbortController();
      const p = agent.run('b', { signal: ac.signal });
      setTimeout(() => ac.abort(), 20);
      await rejectsWithCode(p, 'AGENT_ABORTED');
    } finally {
      agent.close();
    }
  });
});

test('the guest side closing mid-command fails it and every later call with AGENT_CLOSED', async () => {
  await withFake({ handle: (c) => (c === 'die' ? 'close' : { output: 'ok\n' }) }, async (g) => {
    const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
    const pending = agent.run('die');
    const queued = agent.run('after');
    await rejectsWithCode(pending, 'AGENT_CLOSED');
    await rejectsWithCode(queued, 'AGENT_CLOSED');
    await rejectsWithCode(agent.run('later'), 'AGENT_CLOSED');
    assert.equal(agent.state, 'closed');
  });
});

test('a reply without end is cut at MAX_REPLY_CHARS: the command and later ones fail, the connection closes', async () => {
  await withFake({ handle: (c) => (c === 'yes' ? 'endless' : { output: 'ok\n' }) }, async (g) => {
    const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
    await rejectsWithCode(agent.run('yes', { timeoutMs: 60_000 }), 'AGENT_REPLY_TOO_LARGE');
    assert.equal(agent.state, 'closed');
    await rejectsWithCode(agent.run('after'), 'AGENT_REPLY_TOO_LARGE');
  });
});

test('close() fails the pending command with AGENT_CLOSED', async () => {
  await withFake({ handle: () => ({ output: 'x\n', delayMs: 1000 }) }, async (g) => {
    const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
    const p = agent.run('x');
    agent.close();
    await rejectsWithCode(p, 'AGENT_CLOSED');
  });
});

test('connect: no socket -> AGENT_CONNECT_FAILED, silent guest -> AGENT_NOT_READY, both bounded', async () => {
  const t0 = Date.now();
  await rejectsWithCode(GuestAgent.connect(join(dir, 'nothing-here.sock'), { timeoutMs: 300 }), 'AGENT_CONNECT_FAILED');
  await withFake({ mute: true }, async (g) => {
    await rejectsWithCode(GuestAgent.connect(g.path, { timeoutMs: 600 }), 'AGENT_NOT_READY');
  });
  assert.ok(Date.now() - t0 < 5_000);
});

test('connect waits for a socket that QEMU has not created yet', async () => {
  const g = fakeGuest({ handle: () => ({ output: 'hello\n' }) });
  const connecting = GuestAgent.connect(g.path, { timeoutMs: 10_000 });
  await new Promise((r) => setTimeout(r, 300));
  await g.listen();
  try {
    const agent = await connecting;
    assert.equal((await agent.run('x')).output, 'hello\n');
    agent.close();
  } finally {
    await g.close();
  }
});

test('commands with NUL bytes are refused with AGENT_INVALID_ARG', async () => {
  await withFake({}, async (g) => {
    const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
    try {
      await rejectsWithCode(agent.run('a\0b'), 'AGENT_INVALID_ARG');
    } finally {
      agent.close();
    }
  });
});

test('readGuestMeminfo parses /proc/meminfo and rejects output without the fields', async () => {
  const meminfo = 'MemTotal:         480284 kB\nMemFree:          450052 kB\nMemAvailable:     449784 kB\nHugePages_Total:       0\n';
  await withFake({ handle: (c) => ({ output: c === 'cat /proc/meminfo' ? meminfo : '' }) }, async (g) => {
    const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
    try {
      assert.deepEqual(await readGuestMeminfo(agent), { memTotalKiB: 480284, memFreeKiB: 450052, memAvailableKiB: 449784 });
    } finally {
      agent.close();
    }
  });
  await withFake({ handle: () => ({ output: 'cat: /proc/meminfo: No such file\n', exitCode: 1 }) }, async (g) => {
    const agent = await GuestAgent.connect(g.path, { timeoutMs: 10_000 });
    try {
      await rejectsWithCode(readGuestMeminfo(agent), 'AGENT_BAD_OUTPUT');
    } finally {
      agent.close();
    }
  });
});
