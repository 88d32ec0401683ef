/**
 * Host side of the default guest's serial command agent: runs shell commands in the guest over
 * its second serial port, which QEMU exposes as a unix socket:
 *
 *   -chardev socket,id=agent0,path=<sock>,server=on,wait=off -serial chardev:con0 -serial chardev:agent0
 *
 * The framing is in ./agent-protocol.ts. One command runs at a time (the guest loop is serial
 * too). QEMU serves one client per chardev socket: a second GuestAgent on the same socket waits
 * in the listen queue and times out with AGENT_NOT_READY.
 */

import { randomBytes } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import {
  frameCommand,
  frameProbe,
  GUEST_READY_LINE,
  hasProbeReply,
  MAX_COMMAND_BYTES,
  MAX_REPLY_CHARS,
  parseCommandReply,
  parseMeminfo,
  type CommandReply,
  type GuestMeminfo,
} from './agent-protocol.js';
import { GuestAgentError } from './errors.js';

export type { CommandReply, GuestMeminfo } from './agent-protocol.js';

export interface AgentWaitOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Default bound for connect(): a cold boot under TCG takes ~5 s, a loaded CI host much more. */
const DEFAULT_CONNECT_TIMEOUT_MS = 60_000;
const DEFAULT_RUN_TIMEOUT_MS = 30_000;
/** First probe interval; grows by half each time up to the cap (bounds the probes queued while the guest boots). */
const PROBE_FIRST_MS = 250;
const PROBE_MAX_MS = 2_000;
const RECONNECT_MS = 100;

/** Connection lifecycle: probing until the guest first answers, then ready until closed. */
export type AgentState = 'probing' | 'ready' | 'closed';

/** Something waiting for guest output: a probe or one command. */
interface Waiter {
  /** Called with everything received since the waiter was installed; true when satisfied. */
  onData(received: string): boolean;
  onClose(err: GuestAgentError): void;
}

/** Connection to the command agent on the default guest's ttyS1. */
export class GuestAgent {
  #socket: Socket;
  #state: AgentState = 'probing';
  #received = '';
  #waiter: Waiter | null = null;
  #queue: Promise<void> = Promise.resolve();
  #closeReason: GuestAgentError | null = null;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding('utf8'); // StringDecoder: multi-byte characters split across reads stay intact
    socket.on('data', (chunk: string) => this.#onData(chunk));
    socket.on('error', (e) => this.#shutdown(new GuestAgentError('AGENT_CLOSED', `guest agent socket failed: ${e.message}`, { cause: e })));
    socket.on('close', () => this.#shutdown(new GuestAgentError('AGENT_CLOSED', 'guest agent socket closed (did QEMU exit?)')));
  }

  /**
   * Connects to the agent socket and waits until the guest answers a probe (the guest may still
   * be booting; the socket may not exist yet while QEMU starts). Bounded by `timeoutMs`
   * (default 60 s).
   * Throws GuestAgentError: AGENT_CONNECT_FAILED, AGENT_NOT_READY, AGENT_ABORTED, AGENT_CLOSED.
   */
  static async connect(socketPath: string, opts: AgentWaitOptions = {}): Promise<GuestAgent> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const socket = await openSocket(socketPath, deadline, opts.signal);
    const agent = new GuestAgent(socket);
    try {
      await agent.#probe(deadline, timeoutMs, socketPath, opts.signal);
    } catch (e) {
      agent.close();
      throw e;
    }
    return agent;
  }

  /** Whether the agent can still run commands. */
  get state(): AgentState {
    return this.#state;
  }

  /**
   * Runs `command` with `sh` in the guest (stdin /dev/null) and resolves with its combined
   * stdout+stderr and exit status; a non-zero status is not an error. Calls are serialised; the
   * bound (default 30 s) counts from the call, queueing included. On timeout the guest goes on
   * running the command and later commands wait behind it there. Background processes should
   * redirect their output, or it may land in a later command's reply window.
   * Throws GuestAgentError: AGENT_TIMEOUT, AGENT_ABORTED, AGENT_CLOSED, AGENT_INVALID_ARG.
   */
  run(command: string, opts: AgentWaitOptions = {}): Promise<CommandReply> {
    if (command.includes('\0') || Buffer.byteLength(command) > MAX_COMMAND_BYTES) {
      return Promise.reject(new GuestAgentError('AGENT_INVALID_ARG', `guest command must be at most ${MAX_COMMAND_BYTES} bytes without NUL bytes`));
    }
    const timeoutMs = opts.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS;
    // Serialise: this call's turn comes when every earlier call has settled (however it
    // settled); the next call's turn comes when this one settles.
    const turn = this.#queue;
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    this.#queue = turn.then(() => mine);

    return new Promise<CommandReply>((resolve, reject) => {
      let settled = false;
      let waiter: Waiter | null = null;
      const settle = (err: GuestAgentError | null, reply?: CommandReply): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (waiter && this.#waiter === waiter) this.#waiter = null;
        release();
        if (err) reject(err);
        else resolve(reply as CommandReply);
      };
      const onAbort = (): void => settle(new GuestAgentError('AGENT_ABORTED', `guest command aborted: ${summarise(command)}`));
      const timer = setTimeout(
        () => settle(new GuestAgentError('AGENT_TIMEOUT', `guest command did not finish within ${timeoutMs} ms: ${summarise(command)}`)),
        timeoutMs,
      );
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });

      void turn.then(() => {
        if (settled) return;
        if (this.#state !== 'ready') {
          return settle(this.#closeReason ?? new GuestAgentError('AGENT_CLOSED', 'guest agent is closed'));
        }
        const nonce = newNonce();
        waiter = {
          onData: (received) => {
            const reply = parseCommandReply(received, nonce);
            if (reply) settle(null, reply);
            return reply !== null;
          },
          onClose: (err) => settle(err),
        };
        this.#install(waiter);
        this.#socket.write(frameCommand(command, nonce));
      });
    });
  }

  /** Closes the connection; pending and later calls fail with AGENT_CLOSED. Idempotent. */
  close(): void {
    this.#shutdown(new GuestAgentError('AGENT_CLOSED', 'guest agent closed'));
  }

  #install(w: Waiter): void {
    this.#received = ''; // nothing received before this command was sent can belong to it
    this.#waiter = w;
  }

  #onData(chunk: string): void {
    const w = this.#waiter;
    if (!w) return; // idle: stray output (background processes, late probe answers) is dropped
    this.#received += chunk;
    if (this.#received.length > MAX_REPLY_CHARS) {
      // Bounded while reading. The stream cannot be resynchronised while the guest still
      // sends this reply, so the connection goes: the pending call and later ones fail.
      this.#shutdown(new GuestAgentError('AGENT_REPLY_TOO_LARGE', `the guest agent sent more than ${MAX_REPLY_CHARS} characters without finishing its reply; connection closed`));
      return;
    }
    if (w.onData(this.#received) && this.#waiter === w) {
      this.#waiter = null;
      this.#received = '';
    }
  }

  #shutdown(err: GuestAgentError): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#closeReason = err;
    const w = this.#waiter;
    this.#waiter = null;
    this.#socket.destroy();
    w?.onClose(err);
  }

  /** Sends probes with back-off until one is answered, the deadline passes or the socket closes. */
  #probe(deadline: number, timeoutMs: number, socketPath: string, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const nonces = new Set<string>();
      let interval = PROBE_FIRST_MS;
      let probeTimer: NodeJS.Timeout | undefined;
      let settled = false;
      const settle = (err: GuestAgentError | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(probeTimer);
        clearTimeout(deadlineTimer);
        signal?.removeEventListener('abort', onAbort);
        if (this.#waiter === waiter) this.#waiter = null;
        this.#received = '';
        if (err) reject(err);
        else {
          this.#state = 'ready';
          resolve();
        }
      };
      const sendProbe = (): void => {
        clearTimeout(probeTimer);
        if (settled || this.#state === 'closed') return;
        const nonce = newNonce();
        nonces.add(nonce);
        this.#socket.write(frameProbe(nonce));
        probeTimer = setTimeout(sendProbe, Math.min(interval, Math.max(0, deadline - Date.now())));
        interval = Math.min(PROBE_MAX_MS, Math.round(interval * 1.5));
      };
      let readySeenAt = -1;
      const waiter: Waiter = {
        onData: (received) => {
          if (hasProbeReply(received, nonces)) {
            settle(null);
            return true;
          }
          // The agent loop just started: probes sent before may have been lost, send one now.
          const at = received.indexOf(GUEST_READY_LINE, readySeenAt + 1);
          if (at >= 0) {
            readySeenAt = at;
            sendProbe();
          }
          return false;
        },
        onClose: (err) => settle(err),
      };
      const onAbort = (): void => settle(new GuestAgentError('AGENT_ABORTED', 'waiting for the guest agent was aborted'));
      const deadlineTimer = setTimeout(
        () =>
          settle(
            new GuestAgentError(
              'AGENT_NOT_READY',
              `guest agent on ${socketPath} did not answer within ${timeoutMs} ms; check the guest's console log (did it boot? is ttyS1 the second -serial?) and that no other client holds the socket`,
            ),
          ),
        Math.max(0, deadline - Date.now()),
      );
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#received = '';
      this.#waiter = waiter;
      sendProbe();
    });
  }
}

/**
 * Reads /proc/meminfo in the guest.
 * Throws GuestAgentError: AGENT_BAD_OUTPUT (no MemTotal/MemFree/MemAvailable), or what run() throws.
 */
export async function readGuestMeminfo(agent: GuestAgent, opts: AgentWaitOptions = {}): Promise<GuestMeminfo> {
  const { output, exitCode } = await agent.run('cat /proc/meminfo', opts);
  const f = parseMeminfo(output);
  const memTotalKiB = f.get('MemTotal');
  const memFreeKiB = f.get('MemFree');
  const memAvailableKiB = f.get('MemAvailable');
  if (exitCode !== 0 || memTotalKiB === undefined || memFreeKiB === undefined || memAvailableKiB === undefined) {
    throw new GuestAgentError('AGENT_BAD_OUTPUT', `guest /proc/meminfo lacks MemTotal/MemFree/MemAvailable (exit ${exitCode}): ${summarise(output)}`);
  }
  return { memTotalKiB, memFreeKiB, memAvailableKiB };
}

/** Opens the unix socket, retrying while it does not exist yet or refuses (QEMU starting up). */
async function openSocket(path: string, deadline: number, signal: AbortSignal | undefined): Promise<Socket> {
  for (;;) {
    if (signal?.aborted) throw new GuestAgentError('AGENT_ABORTED', 'connecting to the guest agent was aborted');
    try {
      return await connectOnce(path, Math.max(1, deadline - Date.now()));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const retriable = code === 'ENOENT' || code === 'ECONNREFUSED';
      if (!retriable || Date.now() + RECONNECT_MS >= deadline) {
        throw new GuestAgentError('AGENT_CONNECT_FAILED', `cannot connect to the guest agent socket ${path}: ${(e as Error).message}; is QEMU running with that -chardev?`, { cause: e });
      }
      await delay(RECONNECT_MS, signal);
    }
  }
}

function connectOnce(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const s = createConnection(path);
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      s.destroy();
      reject(e);
    });
  });
}

function delay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

function newNonce(): string {
  return randomBytes(8).toString('hex');
}

function summarise(text: string): string {
  const one = text.replace(/\s+/g, ' ').trim();
  return one.length > 120 ? `${one.slice(0, 117)}...` : one;
}
