/**
 * Persistent domain definitions: one JSON file per domain under `<state>/domains/`, validated
 * on the way in and on the way out, written atomically, readable only by the owner.
 */
import { readdir, readFile, unlink } from 'node:fs/promises';
import type { DomainDef } from './definition.js';
import { VirtError } from './errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../util/atomic-file.js';
import type { StatePaths } from './paths.js';
import { validateDomainDef } from './validate-def.js';

export class DefinitionStore {
  constructor(private readonly paths: StatePaths) {}

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
    let text: string;
    try {
      text = await readFile(this.paths.definition(name), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      return validateDomainDef(JSON.parse(text));
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
