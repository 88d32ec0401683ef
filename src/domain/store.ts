/**
 * Persistent domain definitions: one JSON file per domain under `<state>/domains/`, validated
 * on the way in and on the way out, written atomically, readable only by the owner.
 */
import { readdir, readFile, stat, unlink } from 'node:fs/promises';
import type { DomainDef } from './definition.js';
import { VirtError } from './errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../util/atomic-file.js';
import { validateDomainDef } from './validate-def.js';

/** Where the store keeps its files. */
export interface StoreLayout {
  readonly domainsDir: string;
  /** The file of one definition (the name is already validated). */
  definition(name: string): string;
}

export class DefinitionStore {
  /**
   * Validated definitions by name, with the identity of the file they came from. Every write
   * is an atomic rename (a new inode), so inode + mtime + size identify a version; a
   * long-lived process (the daemon, the warm CLI) then pays one stat instead of read + parse +
   * validate per lookup.
   */
  readonly #cache = new Map<string, { key: string; def: DomainDef }>();

  constructor(private readonly paths: StoreLayout) {}

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

  /**
   * The definition of `name`, or null if there is none.
   * @throws VirtError INTERNAL when the stored file is corrupt (it is never silently ignored).
   */
  async get(name: string): Promise<DomainDef | null> {
    const file = this.paths.definition(name);
    let text: string;
    let key: string;
    try {
      const st = await stat(file, { bigint: true });
      key = `${st.ino}:${st.mtimeNs}:${st.size}`;
      const hit = this.#cache.get(name);
      if (hit && hit.key === key) return structuredClone(hit.def);
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') { this.#cache.delete(name); return null; }
      throw err;
    }
    try {
      const def = validateDomainDef(JSON.parse(text));
      this.#cache.set(name, { key, def: structuredClone(def) });
      return def;
    } catch (err) {
      throw new VirtError('INTERNAL', `stored definition of '${name}' is corrupt (${this.paths.definition(name)}): ${(err as Error).message}`, { cause: err });
    }
  }

  /** All definitions. */
  async all(): Promise<DomainDef[]> {
    const defs = await Promise.all((await this.names()).map((n) => this.get(n)));
    return defs.filter((d): d is DomainDef => d !== null);
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
