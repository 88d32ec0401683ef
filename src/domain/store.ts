/**
 * Persistent domain definitions: one JSON file per domain under `<state>/domains/`, validated
 * on the way in and on the way out, written atomically, readable only by the owner.
 */
import { lstat, readdir, unlink } from 'node:fs/promises';
import type { DomainDef } from './definition.js';
import { VirtError } from './errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../util/atomic-file.js';
import { DefValidationError, validateDomainDef } from './validate-def.js';
import { InputError, readFileBounded } from '../util/bounded-read.js';

/** Where the store keeps its files. */
export interface StoreLayout {
  readonly domainsDir: string;
  /** The file of one definition (the name is already validated). */
  definition(name: string): string;
}

/** A definition is a few KiB of JSON; a stored file larger than this is not one. */
export const MAX_DEFINITION_BYTES = 1024 * 1024;

/** A definition file that cannot be used, and why. */
export interface UnreadableDefinition {
  name: string;
  file: string;
  error: VirtError;
}

/** The error for the stored definition of `name`; `what` names the file and never quotes it. */
function unusable(name: string, what: string, cause: unknown): VirtError {
  return new VirtError('INTERNAL', `stored definition of '${name}' is unusable: ${what}`, { cause });
}

export class DefinitionStore {
  /**
   * Validated definitions by name, with the identity of the file they came from. Every write
   * is an atomic rename (a new inode), so inode + mtime + size identify a version; a
   * long-lived process (the daemon, the warm CLI) then pays one stat instead of read + parse +
   * validate per lookup.
   */
  readonly #cache = new Map<string, { key: string; def: DomainDef }>();
  /** Names and uuids as of the directory version `key` (every write renames into it). */
  #summaries: { key: string; rows: Array<{ name: string; uuid: string }> } | null = null;

  constructor(private readonly paths: StoreLayout) {}

  static readonly #shared = new Map<string, DefinitionStore>();

  /**
   * The store of a state directory, one per process: a long-lived process (the warm CLI, the
   * daemon) keeps its cache from one command to the next instead of reading every file again.
   */
  static for(paths: StoreLayout): DefinitionStore {
    let s = DefinitionStore.#shared.get(paths.domainsDir);
    if (!s) { s = new DefinitionStore(paths); DefinitionStore.#shared.set(paths.domainsDir, s); }
    return s;
  }

  /** Names of all defined domains, sorted. */
  async names(): Promise<string[]> {
    let entries: string[];
    try {
      entries = await readdir(this.paths.domainsDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return entries.filter((f) => f.endsWith('.json') && !f.startsWith('.')).map((f) => f.slice(0, -5)).sort();
  }

  /** Whether a file stands under `name`'s definition, usable or not (a link is not followed). */
  async exists(name: string): Promise<boolean> {
    try {
      await lstat(this.paths.definition(name));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /**
   * The definition of `name`, or null if there is none. The file is read without following a
   * symbolic link and bounded in size; an error about it names the file and what is wrong with
   * it, never its content (a link could point anywhere, e.g. at /etc/shadow).
   * @throws VirtError INTERNAL when the stored file is unreadable or invalid (it is never
   *   silently ignored here; `scan` sets such a definition aside and goes on with the others).
   */
  async get(name: string): Promise<DomainDef | null> {
    const file = this.paths.definition(name);
    let text: string;
    let key: string;
    try {
      const st = await lstat(file, { bigint: true });
      key = `${st.ino}:${st.mtimeNs}:${st.size}`;
      const hit = this.#cache.get(name);
      if (hit && hit.key === key) return structuredClone(hit.def);
      text = (await readFileBounded(file, MAX_DEFINITION_BYTES, { what: 'a stored definition', ownFile: true })).toString('utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') { this.#cache.delete(name); return null; }
      this.#cache.delete(name);
      throw unusable(name, err instanceof InputError ? err.message : `${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`, err);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      // JSON.parse quotes the text it choked on: say only that it is not JSON (and keep its
      // error out of the chain too).
      throw unusable(name, `${file} is not valid JSON`, undefined);
    }
    try {
      const def = validateDomainDef(parsed);
      this.#cache.set(name, { key, def: structuredClone(def) });
      return def;
    } catch (err) {
      // The field, not its value: the value is the file's content.
      throw unusable(name, `${file} ${err instanceof DefValidationError ? `has an invalid ${err.path}` : 'is not a valid definition'}`, undefined);
    }
  }

  /**
   * Every definition that reads, and the ones that do not, each with its reason: one bad file
   * (a link, a torn copy, a hand edit) leaves the others usable, as libvirt loads the
   * definitions it can and logs the rest.
   */
  async scan(): Promise<{ defs: DomainDef[]; unreadable: UnreadableDefinition[] }> {
    const defs: DomainDef[] = [];
    const unreadable: UnreadableDefinition[] = [];
    await Promise.all((await this.names()).map(async (name) => {
      try {
        const def = await this.get(name);
        if (def) defs.push(def);
      } catch (err) {
        unreadable.push({ name, file: this.paths.definition(name), error: err as VirtError });
      }
    }));
    defs.sort((a, b) => a.name.localeCompare(b.name));
    unreadable.sort((a, b) => a.name.localeCompare(b.name));
    return { defs, unreadable };
  }

  /**
   * Name and uuid of every definition that reads, for a listing. Every write of the store is a
   * rename into its directory, which changes the directory's mtime: while it has not changed,
   * the last answer stands, without a look at each file.
   */
  async summaries(): Promise<Array<{ name: string; uuid: string }>> {
    const st = await lstat(this.paths.domainsDir, { bigint: true }).catch(() => null);
    if (!st) return [];
    const key = `${st.ino}:${st.mtimeNs}`;
    if (this.#summaries?.key === key) return this.#summaries.rows;
    const rows = (await this.scan()).defs.map((d) => ({ name: d.name, uuid: d.uuid }));
    this.#summaries = { key, rows };
    return rows;
  }

  /** All definitions that read (see `scan` for the ones that do not). */
  async all(): Promise<DomainDef[]> {
    return (await this.scan()).defs;
  }

  /** Validate and write a definition atomically. Caller holds the domain lock. */
  async save(def: DomainDef): Promise<void> {
    const valid = validateDomainDef(def);
    await ensurePrivateDir(this.paths.domainsDir);
    await writeFileAtomic(this.paths.definition(valid.name), JSON.stringify(valid, null, 2) + '\n');
  }

  /** Remove a definition. Caller holds the domain lock. */
  async remove(name: string): Promise<void> {
    await unlink(this.paths.definition(name));
  }
}
