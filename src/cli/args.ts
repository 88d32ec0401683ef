/**
 * virsh-style argument parsing, pure. A command declares its positional arguments (each may
 * also be given as `--NAME VALUE`, as virsh allows), boolean flags and value options. Anything
 * else is an error naming the offending word.
 */

export interface CommandSyntax {
  /** Positional names in order; a trailing name ending in '...' takes the rest of the words. */
  positionals: string[];
  /** How many positionals are required. */
  required: number;
  flags?: string[];
  options?: string[];
  /** Option aliases, e.g. { cmd: 'command' }: `--cmd` is a marker for the rest positional. */
  restMarkers?: string[];
  /**
   * Positionals virsh declares as numbers (VSH_OT_INT): its messages name them `--NAME` and
   * `<number>` ("requires --pagecount option", "expected syntax: --cellno <number>").
   */
  numeric?: string[];
}

export interface ParsedArgs {
  positional: Record<string, string>;
  rest: string[];
  flags: Set<string>;
  options: Map<string, string>;
}

/** A usage error: the CLI prints it as `error: ...` and exits 1. */
export class UsageError extends Error {
  readonly code = 'USAGE' as const;
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * Parse `words` (after the command name) against `syntax`.
 * @throws UsageError for unknown options, an option given twice, missing values or arguments,
 *   extra arguments.
 */
export function parseArgs(words: string[], syntax: CommandSyntax, commandName: string): ParsedArgs {
  const flags = new Set<string>();
  const options = new Map<string, string>();
  const positional: Record<string, string> = {};
  const rest: string[] = [];
  const posNames = syntax.positionals.map((p) => p.replace(/\.\.\.$/, ''));
  const restName = syntax.positionals.find((p) => p.endsWith('...'))?.slice(0, -3);
  const flagSet = new Set([...(syntax.flags ?? []), 'json']);
  const optSet = new Set(syntax.options ?? []);
  const queue: string[] = [];
  let onlyPositional = false;

  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (onlyPositional || !w.startsWith('--') || w === '--') {
      if (w === '--' && !onlyPositional) { onlyPositional = true; continue; }
      queue.push(w);
      continue;
    }
    let name = w.slice(2);
    let inline: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) { inline = name.slice(eq + 1); name = name.slice(0, eq); }
    if (syntax.restMarkers?.includes(name)) {
      // virsh's `qemu-monitor-command DOM --hmp --cmd info balloon`: the rest is the command.
      if (inline !== undefined) queue.push(inline);
      onlyPositional = true;
      continue;
    }
    if (flagSet.has(name)) {
      if (inline !== undefined) throw new UsageError(`command '${commandName}' option --${name} takes no value`);
      if (flags.has(name)) throw new UsageError(`option --${name} already seen`);
      flags.add(name);
      continue;
    }
    const takesValue = optSet.has(name) || (posNames.includes(name) && name !== restName);
    if (!takesValue) throw new UsageError(`command '${commandName}' doesn't support option --${name}`);
    // As virsh: a second value would silently replace the first (e.g. a second --disk).
    if (options.has(name) || positional[name] !== undefined) throw new UsageError(`option --${name} already seen`);
    const value = inline ?? words[++i];
    if (value === undefined) throw new UsageError(`expected syntax: --${name} <${syntax.numeric?.includes(name) ? 'number' : 'string'}>`);
    if (optSet.has(name)) options.set(name, value);
    else positional[name] = value;
  }

  for (const name of posNames) {
    if (name === restName) {
      rest.push(...queue.splice(0));
      break;
    }
    if (positional[name] !== undefined) continue;
    const v = queue.shift();
    if (v === undefined) break;
    positional[name] = v;
  }
  if (queue.length) throw new UsageError(`unexpected data '${queue[0]}'`);
  // virsh names every missing argument, one line each.
  const missing = posNames.slice(0, syntax.required).filter((name) => (name === restName ? rest.length === 0 : positional[name] === undefined));
  if (missing.length) {
    throw new UsageError(missing.map((name) => `command '${commandName}' requires ${syntax.numeric?.includes(name) ? `--${name}` : `<${name}>`} option`).join('\nerror: '));
  }
  return { positional, rest, flags, options };
}
