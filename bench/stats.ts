/**
 * Benchmark statistics and the result table. Pure: summaries of samples, ratios, formatting.
 */

/** Summary of timing samples in milliseconds (or any unit: the caller names it). */
export interface Summary {
  n: number;
  median: number;
  /** Interquartile range: the middle half of the samples lies in [p25, p75]. */
  p25: number;
  p75: number;
  min: number;
  max: number;
}

function quantile(sorted: number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** Median, quartiles and range of `samples`. @throws RangeError on no samples. */
export function summarize(samples: number[]): Summary {
  if (samples.length === 0) throw new RangeError('no samples');
  const s = [...samples].sort((a, b) => a - b);
  return { n: s.length, median: quantile(s, 0.5), p25: quantile(s, 0.25), p75: quantile(s, 0.75), min: s[0]!, max: s[s.length - 1]! };
}

/** One row of the comparison: a measurement for virtmem and for libvirt. */
export interface Row {
  section: string;
  what: string;
  unit: 'ms' | 'MiB';
  virtmem: Summary | null;
  libvirt: Summary | null;
  /** How each side was measured (what ran), shown under the table. */
  note?: string;
  /** A goal on the ratio virtmem/libvirt (medians), e.g. 1.0 for "at most as slow". */
  goal?: number;
  /** Why a row has no numbers (e.g. the feature does not exist yet). */
  pending?: string;
}

/** virtmem/libvirt of the medians, or null. */
export function ratio(row: Row): number | null {
  if (!row.virtmem || !row.libvirt || row.libvirt.median === 0) return null;
  return row.virtmem.median / row.libvirt.median;
}

function num(x: number): string {
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

/** "median (p25–p75)" */
export function cell(s: Summary | null, unit: string): string {
  if (!s) return '—';
  if (s.n === 1) return `${num(s.median)} ${unit}`;
  return `${num(s.median)} ${unit} (${num(s.p25)}–${num(s.p75)})`;
}

/** The table as Markdown (also readable as plain text). */
export function formatTable(rows: Row[]): string {
  const head = ['', 'measurement', 'virtmem', 'libvirt / virsh', 'virtmem/libvirt', 'goal'];
  const lines = [head, head.map(() => '---')];
  for (const r of rows) {
    const q = ratio(r);
    const goal = r.goal === undefined || q === null ? '' : `≤ ${r.goal}x ${q <= r.goal ? 'met' : 'NOT met'}`;
    if (r.pending) {
      lines.push([r.section, r.what, `pending: ${r.pending}`, '', '', '']);
      continue;
    }
    lines.push([r.section, r.what, cell(r.virtmem, r.unit), cell(r.libvirt, r.unit), q === null ? '—' : `${q.toFixed(2)}x`, goal]);
  }
  return lines.map((l) => `| ${l.join(' | ')} |`).join('\n') + '\n';
}

/** Run `fn` n times one after another; the wall time of each call in ms. */
export async function timed(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    out.push(performance.now() - t0);
  }
  return out;
}
