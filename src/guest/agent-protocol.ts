/**
 * Wire format of the default guest's serial command agent (guest/init, ttyS1): pure functions,
 * no I/O.
 *
 * The guest runs every line it reads with `sh -c` and sends back whatever that prints. The host
 * frames each command itself:
 *
 *   echo "@@VM-BEGIN:"<nonce>"@@"; (eval "$(echo <base64 of command> | base64 -d)"); echo "@@VM-DONE:"<nonce>":$?@@"
 *
 * - base64 keeps quotes, newlines and `&` in the command from breaking the single line, and
 *   the command text from ever looking like a marker.
 * - The subshell makes `exit N` end only the command, so the DONE marker still comes.
 * - Output is what lies between the BEGIN and DONE markers of the same nonce, so stray output
 *   (late answers to an earlier command that timed out, background processes) is not mixed in.
 * - The sent text splits each marker with `""`, so if the line is ever echoed back (the port
 *   is not yet in -echo mode while the agent starts) the echo does not match a marker.
 */

/** Printed by guest/init on ttyS0 and ttyS1 when the guest (resp. the agent) is up. */
export const GUEST_READY_LINE = 'VIRTMEM-GUEST-READY';

/** Commands longer than this are refused: `sh -c` takes one argument of at most 128 KiB. */
export const MAX_COMMAND_BYTES = 64 * 1024;

/**
 * Most characters the host holds for one reply (or while probing). The agent answers with
 * /proc files and short command output; a guest that prints without end (`yes`, `cat
 * /dev/zero`) must not grow the host process without limit.
 */
export const MAX_REPLY_CHARS = 8 * 1024 * 1024;

/** The line (with its newline) that runs `command` in the guest, framed by markers for `nonce`. */
export function frameCommand(command: string, nonce: string): string {
  const b64 = Buffer.from(command, 'utf8').toString('base64');
  return `echo "@@VM-BEGIN:""${nonce}@@"; (eval "$(echo ${b64} | base64 -d)"); echo "@@VM-DONE:""${nonce}:$?@@"\n`;
}

/**
 * A probe line: answers with a DONE marker only. It starts with a newline so that a partial line
 * left in the guest's tty buffer by input sent during boot is terminated first.
 */
export function frameProbe(nonce: string): string {
  return `\necho "@@VM-DONE:""${nonce}:0@@"\n`;
}

export interface CommandReply {
  /** Everything the command printed (stdout and stderr interleaved), `\r` removed. */
  output: string;
  exitCode: number;
}

const DONE_RE = /@@VM-DONE:([0-9a-f]+):(\d+)@@/g;

/**
 * The reply to the command with `nonce` if `received` holds all of it, else null.
 * `received` is everything read since the command was sent.
 */
export function parseCommandReply(received: string, nonce: string): CommandReply | null {
  const doneMarker = `@@VM-DONE:${nonce}:`;
  const doneAt = received.indexOf(doneMarker);
  if (doneAt < 0) return null;
  const m = /^(\d+)@@/.exec(received.slice(doneAt + doneMarker.length));
  if (!m?.[1]) return null; // marker split across reads: wait for the rest
  const beginMarker = `@@VM-BEGIN:${nonce}@@`;
  const beginAt = received.lastIndexOf(beginMarker, doneAt);
  const output = received.slice(beginAt < 0 ? 0 : beginAt + beginMarker.length, doneAt).replace(/\r/g, '');
  // The BEGIN marker's own line end is not output.
  return { output: output.startsWith('\n') ? output.slice(1) : output, exitCode: Number(m[1]) };
}

/** Whether `received` holds a DONE marker for any of `nonces` (answers to probes). */
export function hasProbeReply(received: string, nonces: ReadonlySet<string>): boolean {
  for (const m of received.matchAll(DONE_RE)) {
    if (m[1] !== undefined && nonces.has(m[1])) return true;
  }
  return false;
}

/** Guest memory figures from /proc/meminfo, in KiB (the file's "kB" is KiB). */
export interface GuestMeminfo {
  memTotalKiB: number;
  memFreeKiB: number;
  memAvailableKiB: number;
}

/** Parses /proc/meminfo into name -> KiB; lines that do not parse are skipped. */
export function parseMeminfo(text: string): Map<string, number> {
  const fields = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z0-9_()]+):\s+(\d+)(?:\s+kB)?\s*$/.exec(line.trim());
    if (m?.[1] && m[2]) fields.set(m[1], Number(m[2]));
  }
  return fields;
}
