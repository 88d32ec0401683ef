/**
 * A libvirt RPC client over one byte stream: calls matched to replies by serial, each with a
 * timeout and an AbortSignal; keepalive (answering the daemon's pings, sending our own and
 * failing the connection when the peer goes quiet); domain events on the same connection.
 * Every pending call settles exactly once: with its reply, its error, or a typed LibvirtError
 * when the connection dies.
 */
import type { Duplex } from 'node:stream';
import { FrameDecoder, LEN_BYTES, MESSAGE_MAX_BYTES, MessageStatus, MessageType, encodePacket, writeHeader, type Packet } from './framing.js';
import { LibvirtError } from './errors.js';
import {
  AuthType, EventId, FEATURE_PROGRAM_KEEPALIVE, KEEPALIVE_PROGRAM, KEEPALIVE_VERSION, KeepaliveProc, Proc,
  QEMU_PROGRAM, REMOTE_PROGRAM, REMOTE_VERSION, STRING_MAX, decodeDomainEvent, readError, type DomainEvent,
} from './protocol.js';
import { XdrReader, XdrWriter } from './xdr.js';
import { openTransport } from './transport.js';
import { parseLibvirtUri, type LibvirtUri } from './uri.js';

export interface CallOptions {
  /** Bound on waiting for the reply; default the client's callTimeoutMs. */
  timeoutMs?: number;
  signal?: AbortSignal | undefined;
}

export interface ClientOptions {
  /** Default bound on each call (default 60 s). */
  callTimeoutMs?: number;
  /** Send a ping after this much silence from the peer (default 5 s; 0 disables). */
  keepaliveIntervalMs?: number;
  /** Fail the connection after this many unanswered pings (default 5, as libvirt). */
  keepaliveCount?: number;
}

export type ClientState = 'open' | 'closing' | 'closed';

/**
 * One event id's registration on the connection, shared by everyone who asked for it: libvirt
 * tracks one callback per event id and connection and refuses a second ("event callback
 * already tracked"), so its own client counts registrations too (remote_driver.c) and sends
 * the RPC for the first only.
 */
interface EventRegistration {
  eventId: number;
  users: number;
  /** libvirt's callback id, once it answered. */
  id: number | null;
  ready: Promise<number>;
}

interface Pending {
  proc: number;
  prog: number;
  /** Date.now() after which the call fails with a timeout. */
  deadline: number;
  timeoutMs: number;
  resolve(payload: Buffer): void;
  reject(err: LibvirtError): void;
}

export class LibvirtClient {
  private state: ClientState = 'open';
  private serial = 0;
  private readonly pending = new Map<number, Pending>();
  private readonly decoder = new FrameDecoder();
  private readonly eventListeners = new Set<(e: DomainEvent) => void>();
  private readonly closeListeners = new Set<(err: LibvirtError) => void>();
  private readonly registrations = new Map<number, EventRegistration>();
  /** Deregistrations under way, by event id: a new registration waits for them (libvirt runs a client's calls in parallel). */
  private readonly leaving = new Map<number, Promise<void>>();
  private readonly callTimeoutMs: number;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private deadlineTimer: NodeJS.Timeout | null = null;
  private deadlineAt = 0;
  private lastHeardAt = Date.now();
  private unanswered = 0;
  private closeError: LibvirtError | null = null;
  /** Event procedures seen that virtmem does not decode (diagnostics). */
  readonly unknownEvents = new Map<number, number>();

  constructor(private readonly stream: Duplex, opts: ClientOptions = {}) {
    this.callTimeoutMs = opts.callTimeoutMs ?? 60_000;
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('error', (e: Error) => this.fail(new LibvirtError('closed', `connection to libvirt failed: ${e.message}`, { cause: e })));
    stream.on('close', () => this.fail(new LibvirtError('closed', 'connection to libvirt closed')));
    const interval = opts.keepaliveIntervalMs ?? 5_000;
    const count = opts.keepaliveCount ?? 5;
    if (interval > 0) {
      this.keepaliveTimer = setInterval(() => this.keepaliveTick(interval, count), interval);
      this.keepaliveTimer.unref();
    }
  }

  /**
   * Connect to the daemon behind `uri` and open it: authenticate (none/polkit), enable
   * keepalive, CONNECT_OPEN. Bounded by `timeoutMs` (default 30 s) as a whole.
   */
  static async connect(uri: string | LibvirtUri, opts: ClientOptions & { timeoutMs?: number; signal?: AbortSignal; readOnly?: boolean } = {}): Promise<LibvirtClient> {
    const u = typeof uri === 'string' ? parseLibvirtUri(uri) : uri;
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    const stream = await openTransport(u, { timeoutMs, signal: opts.signal });
    const c = new LibvirtClient(stream, opts);
    const left = (): CallOptions => ({ timeoutMs: Math.max(1, deadline - Date.now()), signal: opts.signal });
    try {
      const types = new XdrReader(await c.call(Proc.AUTH_LIST, null, left())).array((r) => r.int(), 20);
      if (types.length && !types.includes(AuthType.NONE)) {
        if (types.includes(AuthType.POLKIT)) {
          await c.call(Proc.AUTH_POLKIT, null, left());
        } else {
          throw new LibvirtError('connect', `the daemon at '${u.text}' requires SASL authentication, which virtmem does not implement`);
        }
      }
      await c.call(Proc.CONNECT_OPEN, (w) => w.optional(u.openName, (x, s) => x.string(s, STRING_MAX)).uint(opts.readOnly ? 1 : 0), left());
      // Tells the daemon we answer keepalive pings, so it drops us if we vanish; a daemon without
      // keepalive still answers calls, and our own pings then only catch a quiet peer.
      await c.call(Proc.CONNECT_SUPPORTS_FEATURE, (w) => w.int(FEATURE_PROGRAM_KEEPALIVE), left());
      return c;
    } catch (e) {
      c.destroy();
      // Whatever ended the handshake (the daemon said no, the ssh helper died, silence), the
      // connection was never open: a connect error, as virsh reports it.
      if (e instanceof LibvirtError && e.kind !== 'connect' && e.kind !== 'aborted') {
        throw new LibvirtError('connect', e.message, { cause: e });
      }
      throw e;
    }
  }

  get connectionState(): ClientState {
    return this.state;
  }

  /** Call a REMOTE program procedure; resolves with the reply payload. */
  call(proc: number, args: ((w: XdrWriter) => void) | null, opts: CallOptions = {}): Promise<Buffer> {
    return this.callProgram(REMOTE_PROGRAM, REMOTE_VERSION, proc, args, opts);
  }

  /** Call a procedure of any program (QEMU's monitor passthrough is program 0x20008087). */
  callProgram(prog: number, vers: number, proc: number, args: ((w: XdrWriter) => void) | null, opts: CallOptions = {}): Promise<Buffer> {
    if (this.state !== 'open') return Promise.reject(this.closeError ?? new LibvirtError('closed', 'the libvirt connection is closed'));
    const signal = opts.signal;
    if (signal?.aborted) return Promise.reject(new LibvirtError('aborted', `call ${procName(prog, proc)} aborted`));
    this.serial = (this.serial + 1) >>> 0;
    const serial = this.serial;
    // Header and payload written into one buffer: room for the header first, filled in after.
    const w = new XdrWriter(512);
    for (let i = 0; i < 7; i++) w.uint(0);
    args?.(w);
    const packet = w.finish();
    if (packet.length - LEN_BYTES > MESSAGE_MAX_BYTES) {
      return Promise.reject(new LibvirtError('protocol', `call ${procName(prog, proc)} is ${packet.length} bytes, over libvirt's limit`));
    }
    writeHeader(packet, { prog, vers, proc, type: MessageType.CALL, serial, status: MessageStatus.OK });
    const timeoutMs = opts.timeoutMs ?? this.callTimeoutMs;
    return new Promise<Buffer>((resolve, reject) => {
      let onAbort: (() => void) | null = null;
      const entry: Pending = {
        proc, prog, deadline: Date.now() + timeoutMs, timeoutMs,
        resolve: (p) => { this.pending.delete(serial); if (onAbort) signal!.removeEventListener('abort', onAbort); resolve(p); },
        reject: (e) => { this.pending.delete(serial); if (onAbort) signal!.removeEventListener('abort', onAbort); reject(e); },
      };
      if (signal) {
        onAbort = (): void => entry.reject(new LibvirtError('aborted', `call ${procName(prog, proc)} aborted`));
        signal.addEventListener('abort', onAbort, { once: true });
      }
      this.pending.set(serial, entry);
      this.armDeadlines(timeoutMs);
      this.stream.write(packet);
    });
  }

  /**
   * Call timeouts share one timer (a timer per call costs more than the call itself on a local
   * socket): it fires at the earliest deadline and rejects every call past its own.
   */
  private armDeadlines(timeoutMs: number): void {
    const due = Date.now() + timeoutMs;
    if (this.deadlineTimer && this.deadlineAt <= due) return;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineAt = due;
    this.deadlineTimer = setTimeout(() => this.expire(), Math.max(1, due - Date.now()));
  }

  private expire(): void {
    this.deadlineTimer = null;
    const now = Date.now();
    let next = Infinity;
    for (const p of [...this.pending.values()]) {
      if (p.deadline <= now) p.reject(new LibvirtError('timeout', `no reply to ${procName(p.prog, p.proc)} within ${p.timeoutMs} ms`));
      else next = Math.min(next, p.deadline);
    }
    if (next !== Infinity && this.state === 'open') this.armDeadlines(next - now);
  }

  /** Listen for decoded domain events (after registering them with `registerEvent`). */
  onEvent(fn: (e: DomainEvent) => void): () => void {
    this.eventListeners.add(fn);
    return () => this.eventListeners.delete(fn);
  }

  /** Called once when the connection dies (not after an orderly close). */
  onClose(fn: (err: LibvirtError) => void): () => void {
    this.closeListeners.add(fn);
    return () => this.closeListeners.delete(fn);
  }

  /**
   * Subscribe to one event type for all domains; returns libvirt's callback id. Callers of the
   * same event type share one registration (see EventRegistration); each must deregister once.
   * `opts.signal` ends only this caller's wait; the registration is sent with `opts.timeoutMs`.
   * @throws LibvirtError as call(); 'aborted' when `opts.signal` fires first.
   */
  async registerEvent(eventId: number, opts: CallOptions = {}): Promise<number> {
    const aborted = (): LibvirtError => new LibvirtError('aborted', `call ${procName(REMOTE_PROGRAM, Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY)} aborted`);
    const signal = opts.signal;
    if (signal?.aborted) throw aborted();
    let reg = this.registrations.get(eventId);
    while (!reg && this.leaving.has(eventId)) {
      await this.leaving.get(eventId);
      reg = this.registrations.get(eventId);
    }
    if (!reg) {
      const r: EventRegistration = { eventId, users: 0, id: null, ready: Promise.resolve(0) };
      r.ready = this.call(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY, (w) => w.int(eventId).int(0), { timeoutMs: opts.timeoutMs }).then((p) => {
        r.id = new XdrReader(p).int();
        // Everyone who asked gave up meanwhile: nobody will deregister it.
        if (r.users === 0) this.release(r);
        return r.id;
      }, (err: unknown) => {
        if (this.registrations.get(eventId) === r) this.registrations.delete(eventId);
        throw err;
      });
      this.registrations.set(eventId, r);
      reg = r;
    }
    const shared = reg;
    shared.users++;
    let onAbort: (() => void) | null = null;
    try {
      return await (signal ? Promise.race([shared.ready, new Promise<never>((_, reject) => {
        onAbort = (): void => reject(aborted());
        signal.addEventListener('abort', onAbort, { once: true });
      })]) : shared.ready);
    } catch (err) {
      shared.users--;
      if (shared.users === 0 && shared.id !== null) this.release(shared);
      throw err;
    } finally {
      if (onAbort) signal!.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Ends one caller's subscription (a callback id from registerEvent): libvirt is told when the
   * last caller of that event type has ended its own.
   * @throws LibvirtError as call()
   */
  async deregisterEvent(callbackId: number, opts: CallOptions = {}): Promise<void> {
    const reg = [...this.registrations.values()].find((r) => r.id === callbackId);
    if (!reg) {
      await this.call(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY, (w) => w.int(callbackId), opts);
      return;
    }
    if (--reg.users > 0) return;
    this.registrations.delete(reg.eventId);
    await this.unregister(reg.eventId, callbackId, opts);
  }

  /** Drops a registration nobody uses any more (in the background: its callers have moved on). */
  private release(r: EventRegistration): void {
    if (this.registrations.get(r.eventId) === r) this.registrations.delete(r.eventId);
    if (r.id !== null) void this.unregister(r.eventId, r.id, {}).catch(() => undefined);
  }

  /** Tells libvirt to drop callback `callbackId`, noted under `leaving` until it has answered. */
  private unregister(eventId: number, callbackId: number, opts: CallOptions): Promise<void> {
    const done = this.call(Proc.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY, (w) => w.int(callbackId), opts).then(() => undefined);
    const settled: Promise<void> = done.catch(() => undefined).finally(() => { if (this.leaving.get(eventId) === settled) this.leaving.delete(eventId); });
    this.leaving.set(eventId, settled);
    return done;
  }

  /** Orderly close: CONNECT_CLOSE (bounded), then end the stream. Pending calls fail 'closed'. */
  async close(timeoutMs = 2_000): Promise<void> {
    if (this.state !== 'open') return;
    try {
      await this.call(Proc.CONNECT_CLOSE, null, { timeoutMs });
    } catch { /* the daemon may already be gone; closing anyway */ }
    this.state = 'closing';
    this.shutdown(new LibvirtError('closed', 'the libvirt connection was closed'), false);
    this.stream.end();
    this.stream.destroy();
  }

  /** Tear down at once; pending calls fail with `err`. */
  destroy(err: LibvirtError = new LibvirtError('closed', 'the libvirt connection was closed')): void {
    if (this.state === 'closed') return;
    this.shutdown(err, false);
    this.stream.destroy();
  }

  private fail(err: LibvirtError): void {
    if (this.state === 'closed') return;
    this.shutdown(err, true);
    this.stream.destroy();
  }

  private shutdown(err: LibvirtError, notify: boolean): void {
    this.state = 'closed';
    this.closeError = err;
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = null;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = null;
    for (const p of [...this.pending.values()]) p.reject(err);
    this.pending.clear();
    if (notify) for (const fn of this.closeListeners) fn(err);
  }

  private keepaliveTick(intervalMs: number, count: number): void {
    if (this.state !== 'open') return;
    if (Date.now() - this.lastHeardAt < intervalMs) { this.unanswered = 0; return; }
    if (this.unanswered >= count) {
      this.fail(new LibvirtError('keepalive', `the libvirt daemon did not answer ${count} keepalive pings in ${Math.round((count * intervalMs) / 1000)} s; connection closed`));
      return;
    }
    this.unanswered++;
    this.stream.write(encodePacket({ prog: KEEPALIVE_PROGRAM, vers: KEEPALIVE_VERSION, proc: KeepaliveProc.PING, type: MessageType.MESSAGE, serial: 0, status: MessageStatus.OK }));
  }

  private onData(chunk: Buffer): void {
    this.lastHeardAt = Date.now();
    this.unanswered = 0;
    let packets: Packet[];
    try {
      packets = this.decoder.push(chunk);
    } catch (e) {
      this.fail(new LibvirtError('protocol', `libvirt sent a malformed packet: ${(e as Error).message}`, { cause: e }));
      return;
    }
    for (const p of packets) {
      if (this.state === 'closed') return;
      this.onPacket(p);
    }
  }

  private onPacket(p: Packet): void {
    const h = p.header;
    if (h.prog === KEEPALIVE_PROGRAM) {
      if (h.proc === KeepaliveProc.PING) {
        this.stream.write(encodePacket({ prog: KEEPALIVE_PROGRAM, vers: KEEPALIVE_VERSION, proc: KeepaliveProc.PONG, type: MessageType.MESSAGE, serial: 0, status: MessageStatus.OK }));
      }
      return;
    }
    if (h.type === MessageType.MESSAGE && h.prog === REMOTE_PROGRAM) {
      let ev: DomainEvent | null;
      try {
        ev = decodeDomainEvent(h.proc, p.payload);
      } catch (e) {
        this.fail(new LibvirtError('protocol', `undecodable event ${h.proc}: ${(e as Error).message}`, { cause: e }));
        return;
      }
      if (!ev) { this.unknownEvents.set(h.proc, (this.unknownEvents.get(h.proc) ?? 0) + 1); return; }
      for (const fn of this.eventListeners) fn(ev);
      return;
    }
    if (h.type !== MessageType.REPLY) return; // streams are not used; ignore
    const pend = this.pending.get(h.serial);
    if (!pend) return; // a reply to a call that already timed out or was aborted
    if (pend.prog !== h.prog || pend.proc !== h.proc) {
      // Decoding it as the answer to our call would read one type as another.
      this.fail(new LibvirtError('protocol', `the reply with serial ${h.serial} is for ${procName(h.prog, h.proc)}, but that serial called ${procName(pend.prog, pend.proc)}`));
      return;
    }
    if (h.status === MessageStatus.OK) { pend.resolve(p.payload); return; }
    if (h.status === MessageStatus.ERROR) {
      try {
        pend.reject(LibvirtError.fromWire(readError(new XdrReader(p.payload))));
      } catch (e) {
        this.fail(new LibvirtError('protocol', `undecodable error reply to ${procName(h.prog, h.proc)}: ${(e as Error).message}`, { cause: e }));
      }
      return;
    }
    this.fail(new LibvirtError('protocol', `reply to ${procName(h.prog, h.proc)} has status ${h.status}`));
  }
}

function procName(prog: number, proc: number): string {
  if (prog === QEMU_PROGRAM) return `QEMU procedure ${proc}`;
  const name = Object.entries(Proc).find(([, n]) => n === proc)?.[0];
  return name ? `REMOTE_PROC_${name}` : `procedure ${proc}`;
}

export { EventId };
