/** Number formatting for the dashboard. Pure. */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1610612736 -> "1.5 GiB"; null -> "—". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return '—';
  let v = Math.abs(bytes);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
  const digits = u === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${bytes < 0 ? '-' : ''}${v.toFixed(digits)} ${UNITS[u]}`;
}

/** Axis ticks: the same units, shorter. */
export function formatBytesShort(bytes: number): string {
  return formatBytes(bytes).replace(/\.0+ /, ' ');
}

/** A size typed in the form ("1.5", unit "GiB") -> bytes, or an explanation of what is wrong. */
export function parseSizeInput(text: string, unit: string): { bytes: number } | { error: string } {
  const mult: Record<string, number> = { MiB: 1024 ** 2, GiB: 1024 ** 3 };
  const m = mult[unit];
  if (m === undefined) return { error: `unknown unit '${unit}'` };
  const t = text.trim();
  if (!/^\d+(\.\d+)?$/.test(t)) return { error: `'${text}' is not a size: type a number such as 768 or 1.5` };
  const bytes = Math.round(Number(t) * m);
  if (bytes <= 0) return { error: 'the size must be above zero' };
  return { bytes };
}

/** A percentage with one decimal. */
export function formatPercent(v: number | null | undefined): string {
  return v === null || v === undefined || !Number.isFinite(v) ? '—' : `${v.toFixed(v < 10 ? 2 : 1)} %`;
}

/** Clock time of a Unix timestamp in seconds, HH:MM:SS local. */
export function formatClock(tS: number): string {
  const d = new Date(tS * 1000);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

/** How long ago, from an age in seconds: "just now", "4 s ago", "3 min ago", "2 h ago", "5 d ago". */
export function formatAgo(ageS: number): string {
  if (!Number.isFinite(ageS) || ageS < 1) return 'just now';
  if (ageS < 60) return `${Math.floor(ageS)} s ago`;
  if (ageS < 3600) return `${Math.floor(ageS / 60)} min ago`;
  if (ageS < 86_400) return `${Math.floor(ageS / 3600)} h ago`;
  return `${Math.floor(ageS / 86_400)} d ago`;
}
