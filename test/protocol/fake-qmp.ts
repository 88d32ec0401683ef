/**
 * A scripted fake QMP server on a unix socket, for faults a real QEMU will not produce on demand
 * (garbage, split frames, disconnect mid-reply, silence). Deliberately independent of
 * src/qmp/framing.ts so a framing bug cannot hide itself.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Rejects if `p` does not settle within `ms`; the timer never outlives the wait. */
export async function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`test wait timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export const GREETING = {
  QMP: { version: { qemu: { micro: 0, minor: 2, major: 7 }, package: 'fake' }, capabilities: ['oob'] },
};

export interface ReceivedCommand {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: unknown;
}

/** One accepted client connection, driven by the test. */
export class FakePeer {
  readonly socket: net.Socket;
  /** Resolves when the client's side has gone away. */
  readonly gone: Promise<void>;
  #buffer = '';
  #commands: ReceivedCommand[] = [];
  #waiters: Array<(cmd: ReceivedCommand) => void> = [];
  #sawEnd = false;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.#buffer += text;
      let nl: number;
      while ((nl = this.#buffer.indexOf('\n')) !== -1) {
        const line = this.#buffer.slice(0, nl).trim();
        this.#buffer = this.#buffer.slice(nl + 1);
        if (line === '') continue;
        const cmd = JSON.parse(line) as ReceivedCommand;
        const waiter = this.#waiters.shift();
        if (waiter) waiter(cmd);
        else this.#commands.push(cmd);
      }
    });
    socket.on('error', () => {}); // the client may reset the connection; tests look at `gone`
    socket.on('end', () => (this.#sawEnd = true));
    this.gone = new Promise((resolve) => socket.on('close', () => resolve()));
  }

  /** True if the client half-closed politely (FIN) rather than just vanishing. */
  get sawEnd(): boolean {
    return this.#sawEnd;
  }

  /** Sends a JSON object as one CRLF-terminated line. */
  send(msg: unknown): void {
    this.socket.write(`${JSON.stringify(msg)}\r\n`);
  }

  /** Sends raw bytes, for garbage and split frames. */
  sendRaw(data: string | Buffer): void {
    this.socket.write(data);
  }

  greet(): void {
    this.send(GREETING);
  }

  /** Next command from the client, bounded. */
  nextCommand(timeoutMs = 2_000): Promise<ReceivedCommand> {
    const queued = this.#commands.shift();
    if (queued) return Promise.resolve(queued);
    let waiter: ((cmd: ReceivedCommand) => void) | undefined;
    const next = new Promise<ReceivedCommand>((resolve) => { waiter = resolve; this.#waiters.push(resolve); });
    // A wait that timed out takes no later command with it.
    return bounded(next, timeoutMs, 'command from client').catch((err: unknown) => {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
      throw err;
    });
  }

  /** Commands received but not yet taken with nextCommand. */
  get queuedCommands(): number {
    return this.#commands.length;
  }

  reply(cmd: ReceivedCommand, value: unknown = {}): void {
    this.send({ return: value, id: cmd.id });
  }

  replyError(cmd: ReceivedCommand, errorClass: string, desc: string): void {
    this.send({ id: cmd.id, error: { class: errorClass, desc } });
  }

  event(name: string, data?: Record<string, unknown>): void {
    this.send({ timestamp: { seconds: 1700000000, microseconds: 1 }, event: name, ...(data ? { data } : {}) });
  }

  /** Greeting plus a successful qmp_capabilities exchange. */
  async handshake(): Promise<void> {
    this.greet();
    const cmd = await this.nextCommand();
    if (cmd.execute !== 'qmp_capabilities') throw new Error(`expected qmp_capabilities, got ${cmd.execute}`);
    this.reply(cmd);
  }

  /** Hard close, like QEMU dying. */
  destroy(): void {
    this.socket.destroy();
  }
}

/** A unix-socket server in a fresh temp dir; hands out accepted connections in order. */
export class FakeQmpServer {
  readonly socketPath: string;
  readonly #dir: string;
  readonly #server: net.Server;
  #peers: FakePeer[] = [];
  #all: FakePeer[] = [];
  #waiters: Array<(peer: FakePeer) => void> = [];

  private constructor(dir: string, server: net.Server) {
    this.#dir = dir;
    this.socketPath = path.join(dir, 'qmp.sock');
    this.#server = server;
    server.on('connection', (socket) => {
      const peer = new FakePeer(socket);
      this.#all.push(peer);
      const waiter = this.#waiters.shift();
      if (waiter) waiter(peer);
      else this.#peers.push(peer);
    });
  }

  static async start(): Promise<FakeQmpServer> {
    const dir = await mkdtemp(path.join(tmpdir(), 'virtmem-fake-qmp-'));
    const fake = new FakeQmpServer(dir, net.createServer());
    await new Promise<void>((resolve, reject) => {
      fake.#server.once('error', reject);
      fake.#server.listen(fake.socketPath, () => resolve());
    });
    return fake;
  }

  /** The next accepted connection, bounded. */
  nextPeer(timeoutMs = 2_000): Promise<FakePeer> {
    const queued = this.#peers.shift();
    if (queued) return Promise.resolve(queued);
    return bounded(new Promise((resolve) => this.#waiters.push(resolve)), timeoutMs, 'client connection');
  }

  /** Destroys every connection, stops listening, removes the temp dir. */
  async close(): Promise<void> {
    for (const peer of this.#all) peer.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await rm(this.#dir, { recursive: true, force: true });
  }
}
