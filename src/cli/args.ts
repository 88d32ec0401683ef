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
      flags.add(name);
      continue;
    }
    const takesValue = optSet.has(name) || (posNames.includes(name) && name !== restName);
    if (!takesValue) throw new UsageError(`command '${commandName}' doesn't support option --${name}`);
    // As virsh: a second value would silently replace the first (e.g. a second --disk).
    if (options.has(name) || positional[name] !== undefined) throw new UsageError(`option --${name} already seen`);
    const value = inline ?? words[++i];
    if (value === undefined) throw new UsageError(`expected syntax: --${name} <string>`);
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
  for (const name of posNames.slice(0, syntax.required)) {
    if (name === restName ? rest.length === 0 : positional[name] === undefined) {
      throw new UsageError(`command '${commandName}' requires <${name}> option`);
    }
  }
  return { positional, rest, flags, options };
}
