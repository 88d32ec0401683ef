/**
 * libvirt's bitmap syntax for CPU and NUMA node lists ("0-3,^2,8": ranges, single ids, and
 * exclusions applied left to right, as virBitmapParse reads them) and its canonical form
 * (ascending, ranges merged: "0-1,3,8", as virBitmapFormat prints them). Pure.
 */

/** Largest id accepted in a list: far above any real node or vCPU number, small enough to expand. */
export const MAX_SET_ID = 65_535;

/**
 * The ids a bitmap names, ascending and unique; null when the text is not a bitmap (empty,
 * a malformed part, a range running backwards, an id above MAX_SET_ID).
 */
export function parseIdSet(text: string): number[] | null {
  const on = new Set<number>();
  const t = text.trim();
  if (t === '') return null;
  for (const raw of t.split(',')) {
    const m = /^(\^)?(\d{1,6})(?:-(\d{1,6}))?$/.exec(raw.trim());
    if (m === null) return null;
    const lo = Number(m[2]);
    const hi = m[3] === undefined ? lo : Number(m[3]);
    if (hi < lo || hi > MAX_SET_ID) return null;
    for (let i = lo; i <= hi; i++) {
      if (m[1] === undefined) on.add(i);
      else on.delete(i);
    }
  }
  return [...on].sort((a, b) => a - b);
}

/** Ascending unique ids in libvirt's canonical form: [0,1,2,5] -> "0-2,5". */
export function formatIdSet(ids: readonly number[]): string {
  const sorted = [...new Set(ids)].sort((a, b) => a - b);
  const ranges: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    ranges.push(i === j ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return ranges.join(',');
}
