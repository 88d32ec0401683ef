/**
 * Wire format between the `virtmem` front (src/cli/warm-client.c) and the warm CLI process
 * (warm-server.ts). Pure: parsing and encoding only, no I/O.
 *
 * Request, client -> server: NUL-terminated text fields
 *   "virtmem-warm 2", isTty ("0"|"1"), N, N x env ("KEY=value" set, "KEY-" unset), M, M x argv word
 * Response, server -> client: frames of 1 byte type, 4 bytes big-endian length, payload:
 *   'r' "run it yourself": the first and only frame; nothing ran (the client runs the plain CLI).
 *   's' started: the first frame of a command the server runs, payload one byte, 'r' when
 *       running the command again is harmless (it only reads, or sets a value that a second run
 *       sets again: setmem, setmaxmem, dommemstat --period) or 'w' when it is not.
 *   '1' stdout bytes, '2' stderr bytes, 'x' exit code (1 byte, last frame).
 *
 * Exactly once. The server hands 's' to the kernel (its write completed) before it starts the
 * command, so a client that reads no frame at all knows the command never started, even when
 * the warm process dies (SIGKILL, OOM) at any point. What the client does when the connection
 * ends without an 'x' frame:
 *   no frame     nothing ran: it runs the command itself;
 *   's' 'r'      a command safe to run again: it runs it itself. The client holds a command's output
 *                until 'x' arrives, so nothing was printed yet (unless the output outgrew
 *                what it holds, 1 MiB: then it was streamed, is incomplete, and the client
 *                exits 1 saying so);
 *   's' 'w'      (undefine, destroy, qemu-monitor-command) it may or may not have taken effect:
 *                it is NOT run again; the client prints what came, says so and exits 1.
 */

export const WARM_MAGIC = 'virtmem-warm 2';

/** Environment variables the CLI reads; the client sends them and hashes them into the socket name. */
export const WARM_ENV_KEYS = ['VIRTMEM_STATE_DIR', 'XDG_STATE_HOME', 'HOME', 'VIRTMEM_GUEST_DIR', 'XDG_CACHE_HOME',
  'VIRTMEM_ACCEL', 'VIRTMEM_QEMU', 'VIRTMEM_KVM_DEVICE', 'VIRTMEM_PROBE_CACHE', 'LIBVIRT_DEFAULT_URI', 'VIRTMEM_DAEMON'] as const;

/** Bound on a request's size: argv plus a few variables never come near it. */
export const MAX_REQUEST_BYTES = 1 << 20;

export interface WarmRequest {
  isTty: boolean;
  /** Value per key; undefined when the client has it unset. */
  env: Map<string, string | undefined>;
  argv: string[];
}

/** The client broke the protocol. */
export class WarmProtocolError extends Error {
  readonly code = 'WARM_PROTOCOL' as const;
  constructor(message: string) {
    super(message);
    this.name = 'WarmProtocolError';
  }
}

/**
 * Parse a request from the bytes received so far: null while incomplete.
 * @throws WarmProtocolError on a bad magic, counts or env entries, or when over MAX_REQUEST_BYTES.
 */
export function parseWarmRequest(buf: Buffer): WarmRequest | null {
  if (buf.length > MAX_REQUEST_BYTES) throw new WarmProtocolError('request too large');
  let pos = 0;
  const field = (): string | null => {
    const end = buf.indexOf(0, pos);
    if (end < 0) return null;
    const s = buf.toString('utf8', pos, end);
    pos = end + 1;
    return s;
  };
  const count = (what: string): number | null => {
    const s = field();
    if (s === null) return null;
    if (!/^[0-9]{1,6}$/.test(s)) throw new WarmProtocolError(`bad ${what} count '${s}'`);
    return Number(s);
  };
  const magic = field();
  if (magic === null) {
    // Refuse garbage as soon as it cannot become the magic any more.
    const head = buf.toString('latin1', 0, Math.min(buf.length, WARM_MAGIC.length));
    if (!WARM_MAGIC.startsWith(head)) throw new WarmProtocolError('bad magic');
    return null;
  }
  if (magic !== WARM_MAGIC) throw new WarmProtocolError(`bad magic '${magic}'`);
  const tty = field();
  if (tty === null) return null;
  if (tty !== '0' && tty !== '1') throw new WarmProtocolError(`bad tty flag '${tty}'`);
  const nEnv = count('env');
  if (nEnv === null) return null;
  const env = new Map<string, string | undefined>();
  for (let i = 0; i < nEnv; i++) {
    const e = field();
    if (e === null) return null;
    const m = /^([A-Z_][A-Z0-9_]*)([=-])/.exec(e);
    if (!m) throw new WarmProtocolError(`bad env entry '${e}'`);
    env.set(m[1]!, m[2] === '=' ? e.slice(m[0].length) : undefined);
  }
  const nArgs = count('argv');
  if (nArgs === null) return null;
  const argv: string[] = [];
  for (let i = 0; i < nArgs; i++) {
    const a = field();
    if (a === null) return null;
    argv.push(a);
  }
  if (pos !== buf.length) throw new WarmProtocolError('trailing bytes after the request');
  return { isTty: tty === '1', env, argv };
}

/** Encode a request (the C client does the same; used by tests). */
export function encodeWarmRequest(req: WarmRequest): Buffer {
  const fields = [WARM_MAGIC, req.isTty ? '1' : '0', String(req.env.size)];
  for (const [k, v] of req.env) fields.push(v === undefined ? `${k}-` : `${k}=${v}`);
  fields.push(String(req.argv.length), ...req.argv);
  return Buffer.from(fields.map((f) => `${f}\0`).join(''), 'utf8');
}

export type WarmFrameType = '1' | '2' | 'x' | 'r' | 's';

/** One response frame. */
export function encodeWarmFrame(type: WarmFrameType, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

export interface WarmFrame {
  type: string;
  payload: Buffer;
}

/** Split complete frames off `buf` (used by tests and by a TypeScript client). */
export function decodeWarmFrames(buf: Buffer): { frames: WarmFrame[]; rest: Buffer } {
  const frames: WarmFrame[] = [];
  let pos = 0;
  while (buf.length - pos >= 5) {
    const len = buf.readUInt32BE(pos + 1);
    if (buf.length - pos - 5 < len) break;
    frames.push({ type: buf.toString('latin1', pos, pos + 1), payload: buf.subarray(pos + 5, pos + 5 + len) });
    pos += 5 + len;
  }
  return { frames, rest: buf.subarray(pos) };
}

/** Commands the warm process runs: quick ones that read no files named relative to the caller. */
const WARM_COMMANDS = new Set([
  'list', 'dominfo', 'domstate', 'dommemstat', 'setmem', 'setmaxmem', 'dumpxml', 'undefine', 'destroy',
  'qemu-monitor-command', 'help',
]);

/**
 * Of those, the ones a second run cannot make do anything twice: they only read, or they set an
 * absolute value (virsh's sizes and periods are never relative), so a second run leaves what the
 * first left, as a late run would. undefine and destroy are not among them (a second run finds
 * the domain gone and fails), nor a monitor command (it can do anything).
 */
const RERUNNABLE_COMMANDS = new Set(['list', 'dominfo', 'domstate', 'dommemstat', 'dumpxml', 'help', 'setmem', 'setmaxmem']);

/** Whether `args` holds the option `--name`, as `--name V` or `--name=V`. */
const hasOption = (args: string[], name: string): boolean => args.some((w) => w === `--${name}` || w.startsWith(`--${name}=`));

/**
 * The command word of `argv` after the global options (undefined for none: usage), and its
 * arguments; null when a global option makes the request unfit for the warm process (a
 * relative or missing --state-dir: the warm process's working directory is not the caller's).
 */
function splitCommand(argv: string[]): { cmd: string | undefined; args: string[] } | null {
  let i = 0;
  for (; i < argv.length; i++) {
    const w = argv[i]!;
    if (w === '--state-dir') {
      if (!(argv[i + 1] ?? '').startsWith('/')) return null;
      i++;
      continue;
    }
    if (w === '-c' || w === '--connect') { i++; continue; }
    if (w.startsWith('-')) continue; // -h, --version: answered at once
    break;
  }
  return { cmd: argv[i], args: argv.slice(i + 1) };
}

/**
 * Whether the warm process may run `argv` for a client with `clientEnv`, or the client must run
 * it itself. The warm process holds one environment and runs many requests at once in one
 * working directory, so it takes only commands whose outcome does not depend on the caller's
 * working directory or on variables other than WARM_ENV_KEYS, and that do not wait on a guest
 * (start, shutdown, setmem --wait stay in their own process, where Ctrl-C stops them).
 */
export function warmServes(argv: string[], clientEnv: Map<string, string | undefined>, ownEnv: NodeJS.ProcessEnv): boolean {
  for (const key of WARM_ENV_KEYS) {
    if (clientEnv.get(key) !== ownEnv[key]) return false;
  }
  const stateEnv = ownEnv.VIRTMEM_STATE_DIR;
  if (stateEnv !== undefined && stateEnv !== '' && !stateEnv.startsWith('/')) return false;
  const c = splitCommand(argv);
  if (!c) return false;
  if (c.cmd === undefined) return true; // usage
  if (!WARM_COMMANDS.has(c.cmd)) return false;
  // Waiting on the guest is long by nature and must stop with the caller's Ctrl-C.
  if (c.cmd === 'setmem' && (hasOption(c.args, 'wait') || hasOption(c.args, 'timeout'))) return false;
  return true;
}

/**
 * Whether running `argv` a second time, after the warm process died mid-way (before any output),
 * cannot do anything twice: it only reads, or it sets an absolute value.
 */
export function warmRerunnable(argv: string[]): boolean {
  const c = splitCommand(argv);
  if (!c) return false;
  if (c.cmd === undefined) return true;
  return RERUNNABLE_COMMANDS.has(c.cmd);
}
