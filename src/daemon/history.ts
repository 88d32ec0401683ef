/**
 * A fixed-size ring buffer of memory samples per guest: the daemon's short memory of the past,
 * for the history endpoint and the dashboard's chart. Pure.
 */

/** One sample; guest statistics are absent until the guest reported them. */
export interface HistorySample {
  tS: number;
  totalBytes: number;
  balloonBytes: number;
  pluggedBytes: number;
  usableBytes?: number;
  availableBytes?: number;
  rssBytes?: number;
}

export class HistoryRing {
  readonly capacity: number;
  #items: HistorySample[] = [];
  #next = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`history capacity must be a positive integer, got ${capacity}`);
    this.capacity = capacity;
  }

  push(s: HistorySample): void {
    if (this.#items.length < this.capacity) this.#items.push(s);
    else this.#items[this.#next] = s;
    this.#next = (this.#next + 1) % this.capacity;
  }

  /** Samples oldest first, optionally only those newer than `sinceS`. */
  samples(sinceS = -Infinity): HistorySample[] {
    const ordered = this.#items.length < this.capacity
      ? this.#items.slice()
      : [...this.#items.slice(this.#next), ...this.#items.slice(0, this.#next)];
    return ordered.filter((s) => s.tS > sinceS);
  }

  get size(): number {
    return this.#items.length;
  }
}
