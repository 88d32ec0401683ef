/**
 * The `virtmem` command line: global options, dispatch, and the one place where errors become
 * virsh-style `error: ...` lines and exit codes.
 */
import { VirtError, type HypervisorDriver } from '../driver/api.js';
import { chooseUri, isNativeUri, openDriver, stateDirectory } from '../driver/connect.js';
import { GuestError } from '../guest/errors.js';
import { InputError } from '../util/bounded-read.js';
import { checkPrivateDir, LoosePermissionsError } from '../util/private-files.js';
import { parseArgs, UsageError } from './args.js';
import { COMMANDS, type Command } from './commands.js';
import { EXTRA_COMMANDS } from './extra-commands.js';
import { INSPECT_COMMANDS } from './inspect-commands.js';
import { POLICY_COMMANDS } from './policy-commands.js';
import { DAEMON_COMMANDS } from './daemon-command.js';
import { NODE_COMMANDS } from './node-commands.js';
import { MEMORY_COMMANDS } from './memory-commands.js';

/** Commands a running virtmemd answers for virtmem's own guests (from its held monitors and live model). */
const DAEMON_SERVED = new Set(['dominfo', 'list', 'setmem', 'dommemstat', 'policy']);
/** Commands that work on libvirt connections too: virsh's, and the policy settings (kept in the domain's metadata). */
const ON_LIBVIRT = new Set([...COMMANDS, ...NODE_COMMANDS, ...MEMORY_COMMANDS, ...POLICY_COMMANDS]);

const ALL: Command[] = [...COMMANDS, ...NODE_COMMANDS, ...MEMORY_COMMANDS, ...EXTRA_COMMANDS, ...INSPECT_COMMANDS, ...POLICY_COMMANDS, ...DAEMON_COMMANDS];

function usage(): string {
  const w = Math.max(...ALL.map((c) => c.name.length));
  return [
    'usage: virtmem [--state-dir DIR] [-c URI] COMMAND [ARGS...] [--json]',
    '',
    'Commands (virsh names, arguments and units; sizes are KiB unless suffixed: k, M, G, T, KB, MB, ...):',
    ...ALL.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
    '',
  ].join('\n');
}

/** Exit code for an error; virsh uses 1 for every failure. */
function describeError(err: unknown): { message: string; code: string; libvirt?: { code: number; domain: number | null } } {
  // --json keeps libvirt's own error number and domain (virErrorNumber, virErrorDomain) for scripts.
  const lv = err as { libvirtCode?: number | null; libvirtDomain?: number | null };
  if (err instanceof VirtError && typeof lv.libvirtCode === 'number') return { message: err.message, code: err.code, libvirt: { code: lv.libvirtCode, domain: lv.libvirtDomain ?? null } };
  if (err instanceof VirtError) return { message: err.message, code: err.code };
  if (err instanceof UsageError) return { message: err.message, code: err.code };
  if (err instanceof GuestError) return { message: err.message, code: err.code };
  if (err instanceof InputError) return { message: err.message, code: err.code };
  if (err instanceof LoosePermissionsError) return { message: err.message, code: err.code };
  const e = err as NodeJS.ErrnoException;
  return { message: `internal error: ${e?.message ?? String(err)}`, code: 'INTERNAL' };
}

/**
 * Run the CLI with `argv` (without node and script). Returns the exit code; never throws.
 */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  /** Whether stderr is a terminal (progress bars). */
  isTty: boolean;
}

const processIo: CliIo = {
  out: (s) => { process.stdout.write(s); },
  err: (s) => { process.stderr.write(s); },
  isTty: !!process.stderr.isTTY,
};

export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  let stateDir: string | undefined;
  let uriGiven: string | undefined;
  let i = 0;
  for (; i < argv.length; i++) {
    const w = argv[i]!;
    if (w === '--state-dir') { stateDir = argv[++i]; continue; }
    if (w === '-c' || w === '--connect') {
      uriGiven = argv[++i] ?? '';
      continue;
    }
    if (w === '-h' || w === '--help') { io.out(usage()); return 0; }
    if (w === '-v' || w === '--version') { io.out('0.1.0\n'); return 0; }
    break;
  }
  const name = argv[i];
  if (!name || name === 'help') { io.out(usage()); return name ? 0 : 1; }
  const cmd = ALL.find((c) => c.name === name);
  if (!cmd) { io.err(`error: unknown command: '${name}'\n`); return 1; }
  const words = argv.slice(i + 1);
  let args;
  try {
    args = parseArgs(words, cmd, cmd.name);
  } catch (err) {
    io.err(`error: ${describeError(err).message}\n`);
    return 1;
  }
  const json = args.flags.has('json');
  // -c, else $LIBVIRT_DEFAULT_URI as virsh; none or virtmem:///... is virtmem's own driver.
  const uri = chooseUri(uriGiven);
  const native = isNativeUri(uri);
  if (!native && !ON_LIBVIRT.has(cmd)) {
    io.err(`error: this function is not supported by the connection driver: '${cmd.name}' works on virtmem's own guests only (virtmem:///system), not on '${uri}'\n`);
    return 1;
  }
  let driver: HypervisorDriver;
  try {
    // On virtmem's own guests, dominfo, list, plain setmem, dommemstat and policy show go through
    // virtmemd when it runs (same output).
    driver = openDriver({ uri, stateDir, viaDaemon: native && DAEMON_SERVED.has(cmd.name) && process.env.VIRTMEM_DAEMON !== '0' });
  } catch (err) {
    io.err(`error: failed to connect to the hypervisor\nerror: ${describeError(err).message}\n`);
    return 1;
  }
  try {
    // A state directory others can write into is refused before anything is read from it.
    if (native) await checkPrivateDir(stateDirectory(stateDir));
    await cmd.run({ driver, native, stateDir, args, json, out: io.out, err: io.err, isTty: io.isTty });
    return 0;
  } catch (err) {
    if ((err as { kind?: string }).kind === 'connect' && err instanceof VirtError) {
      // virsh: two lines, nothing on stdout.
      io.err(`error: failed to connect to the hypervisor\nerror: ${err.message}\n`);
      return 1;
    }
    const d = describeError(err);
    const first = cmd.failPrefix && !(err instanceof UsageError) && d.code !== 'NO_DOMAIN' ? cmd.failPrefix(args, d.code) : null;
    const prefix = first ? `error: ${first}\n` : '';
    io.err(`${prefix}error: ${d.message}\n`);
    // virsh ends every command that ran, failed or not, with an empty line on stdout.
    io.out(json ? JSON.stringify({ error: d }, null, 2) + '\n' : '\n');
    return 1;
  } finally {
    await driver.close().catch(() => {});
  }
}
