/**
 * The warm CLI process: keeps the CLI loaded and runs the short commands of many `virtmem`
 * invocations, so they do not pay Node's start-up each time (see warm-client.c, which starts
 * this process on first use and talks to it). Each request runs `main(argv, io)` exactly as the
 * plain CLI would, with its output sent back in frames (warm-protocol.ts). Commands it does not
 * serve are answered with "run it yourself".
 *
 *   node dist/src/cli/warm-server.js --socket PATH [--idle-s N]
 *
 * Exits after `--idle-s` (default 60) seconds without requests, removing its socket.
 */
import { createConnection, createServer, type Socket } from 'node:net';
import { readdirSync, statSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main, type CliIo } from './main.js';
import { encodeWarmFrame, parseWarmRequest, warmRerunnable, warmServes, WarmProtocolError } from './warm-protocol.js';

const DEFAULT_IDLE_S = 60;

/** Set once something went wrong: the log is then kept when the process exits. */
let troubled = false;

function log(msg: string): void {
  process.stderr.write(`${new Date().toISOString()} virtmem warm[${process.pid}]: ${msg}\n`);
}

/** True when a live process already answers on `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/** dist/src: the compiled code this process runs. */
const CODE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Modification time of every compiled module, to notice a rebuild (also a bare `tsc`). */
function codeStamp(): string {
  const parts: string[] = [];
  for (const f of readdirSync(CODE_DIR, { recursive: true, encoding: 'utf8' }).sort()) {
    if (f.endsWith('.js')) parts.push(`${f}:${statSync(join(CODE_DIR, f)).mtimeMs}`);
  }
  return parts.join('\n');
}

const startStamp = codeStamp();

/** Bound on receiving a whole request: the client writes it in one go right after connecting. */
const REQUEST_TIMEOUT_MS = 10_000;

/** Write `frame` and resolve once the kernel has it (true), or false when the client is gone. */
function sendNow(sock: Socket, frame: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    if (sock.destroyed) { resolve(false); return; }
    sock.write(frame, (err) => resolve(!err));
  });
}

async function serveOne(sock: Socket, stale: () => boolean): Promise<void> {
  let buf = Buffer.alloc(0);
  const req = await new Promise<ReturnType<typeof parseWarmRequest> | 'bad'>((resolve) => {
    const timer = setTimeout(() => {
      troubled = true;
      log(`no complete request within ${REQUEST_TIMEOUT_MS} ms`);
      resolve(null);
    }, REQUEST_TIMEOUT_MS);
    const done = (r: ReturnType<typeof parseWarmRequest> | 'bad'): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      resolve(r);
    };
    const onData = (chunk: Buffer): void => {
      // parseWarmRequest refuses more than MAX_REQUEST_BYTES: the buffer is bounded.
      buf = Buffer.concat([buf, chunk]);
      try {
        const r = parseWarmRequest(buf);
        if (r) done(r);
      } catch (err) {
        troubled = true;
        log(`bad request: ${(err as WarmProtocolError).message}`);
        done('bad');
      }
    };
    sock.on('data', onData);
    sock.once('close', () => done(null));
  });
  if (!req) { sock.destroy(); return; }
  // Nothing ran yet: a request we cannot take (or read) is one the caller runs itself. After a
  // rebuild this process holds old code: the caller runs the new one, and we leave.
  if (req === 'bad' || stale() || !warmServes(req.argv, req.env, process.env)) {
    // Closed once the answer is out: a client still sending (a request without end) is cut.
    sock.end(encodeWarmFrame('r'), () => sock.destroy());
    return;
  }
  // 's' reaches the kernel before the command starts (warm-protocol.ts, "Exactly once"): a
  // client that never sees it runs the command itself, so nothing may run before it is out. A
  // client gone by now never learns of the command either: it is not run.
  if (!(await sendNow(sock, encodeWarmFrame('s', warmRerunnable(req.argv) ? 'r' : 'w')))) { sock.destroy(); return; }
  // A client that goes away later (Ctrl-C) does not stop the command: warm commands are short
  // and bounded; their output is dropped.
  const send = (frame: Buffer): void => { if (!sock.destroyed) sock.write(frame); };
  const io: CliIo = {
    out: (s) => send(encodeWarmFrame('1', s)),
    err: (s) => send(encodeWarmFrame('2', s)),
    isTty: req.isTty,
  };
  const code = await main(req.argv, io);
  if (!sock.destroyed) sock.end(encodeWarmFrame('x', Buffer.from([code & 0xff])));
}

async function run(argv: string[]): Promise<void> {
  const socketPath = argv[argv.indexOf('--socket') + 1];
  const idleIdx = argv.indexOf('--idle-s');
  const idleMs = (idleIdx >= 0 ? Number(argv[idleIdx + 1]) : DEFAULT_IDLE_S) * 1000;
  if (argv.indexOf('--socket') < 0 || !socketPath || !Number.isFinite(idleMs) || idleMs <= 0) {
    process.stderr.write('usage: warm-server --socket PATH [--idle-s N]\n');
    process.exitCode = 2;
    return;
  }
  if (await answers(socketPath)) return; // another one won the race to start
  await unlink(socketPath).catch(() => {});

  let active = 0;
  let idle: NodeJS.Timeout | undefined;
  const server = createServer((sock) => {
    active++;
    clearTimeout(idle);
    sock.on('error', () => {}); // the client went away; nothing to tell it
    serveOne(sock, () => {
      if (codeStamp() === startStamp) return false;
      stop('the code was rebuilt');
      return true;
    })
      .catch((err: unknown) => { troubled = true; log(`request failed: ${(err as Error)?.stack ?? String(err)}`); sock.destroy(); })
      .finally(() => { if (--active === 0) armIdle(); });
  });
  let stopped = false;
  const stop = (why: string): void => {
    if (stopped) return;
    stopped = true;
    clearTimeout(idle);
    log(`exiting: ${why}`);
    server.close();
    // Remove the socket unless a successor already listens on a new file at the same path; the
    // log (the client points it at `<socket>.log`) is kept only when something went wrong.
    void answers(socketPath).then((taken) => (taken ? undefined : unlink(socketPath).catch(() => {})));
    if (!troubled) void unlink(`${socketPath}.log`).catch(() => {});
  };
  const armIdle = (): void => {
    clearTimeout(idle);
    if (stopped) return;
    idle = setTimeout(() => stop('idle'), idleMs);
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => { server.off('error', reject); resolve(); });
  });
  log(`listening on ${socketPath}`);
  armIdle();
}

run(process.argv.slice(2)).catch((err: unknown) => {
  log(`failed: ${(err as Error)?.stack ?? String(err)}`);
  process.exitCode = 1;
});
