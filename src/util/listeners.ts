/**
 * A set of listeners for one kind of change: each is called in turn, and one that throws does
 * not keep the others from hearing it (its failure is its own).
 */
export class Listeners<T> {
  readonly #set = new Set<(value: T) => void>();

  /** Adds a listener; the returned function removes it again. */
  add(listener: (value: T) => void): () => void {
    this.#set.add(listener);
    return () => { this.#set.delete(listener); };
  }

  emit(value: T): void {
    for (const l of this.#set) {
      try { l(value); } catch { /* a listener's failure is its own */ }
    }
  }
}
