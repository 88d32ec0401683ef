/**
 * A CLI process that stays: runs the CLI's `main(argv)` (what bin/virtmem and its warm process
 * run) for each request line on stdin and answers on stdout, so a test can make several
 * processes race on the same guests without paying Node's start-up per command. Started by
 * cli-workers.ts; requests run concurrently, as in the warm process.
 *
 *   in:  {"id": 1, "argv": ["--state-dir", "/tmp/x", "setmem", "vm", "300M", "--config"], "offsetMs": 2}
 *   out: {"id": 1, "code": 0, "stdout": "...", "stderr": "...", "startNs": "...", "endNs": "..."}
 *
 * startNs/endNs are CLOCK_MONOTONIC (process.hrtime), one clock for every process on the host.
 * `offsetMs` starts the command that much later: a race test shifts one command of a pair
 * against the other to meet both orders (it is where the race starts, not a wait for anything).
 */
import { createInterface } from 'node:readline';
import { main } from '../../src/cli/main.js';

interface Request { id: number; argv: string[]; offsetMs?: number }

async function serve(req: Request): Promise<void> {
  if (req.offsetMs) await new Promise((resolve) => setTimeout(resolve, req.offsetMs));
  let stdout = '';
  let stderr = '';
  const startNs = process.hrtime.bigint();
  const code = await main(req.argv, { out: (s) => { stdout += s; }, err: (s) => { stderr += s; }, isTty: false });
  const endNs = process.hrtime.bigint();
  process.stdout.write(JSON.stringify({ id: req.id, code, stdout, stderr, startNs: String(startNs), endNs: String(endNs) }) + '\n');
}

// Serves only when cli-workers.ts started it: run any other way (a test runner that takes every
// file under test/ for a test, say) it would wait on stdin for ever.
if (process.env.VIRTMEM_CLI_WORKER !== '1') {
  process.stderr.write('cli-worker.js is started by cli-workers.ts (VIRTMEM_CLI_WORKER=1), not run on its own\n');
  process.exit(0);
}
createInterface({ input: process.stdin }).on('line', (line) => { void serve(JSON.parse(line) as Request); });
