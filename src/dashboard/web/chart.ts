/**
 * A guest's memory over time as a stacked uPlot chart: the boot RAM the guest has, the
 * virtio-mem memory plugged and the boot RAM the balloon holds back are stacked (their sum is
 * all the RAM QEMU has given the guest), with what the guest uses and QEMU's resident size on
 * the host drawn as lines over them. uPlot does not stack by itself: the stacked series are
 * given cumulative values and filled between with bands, and the legend shows the raw values.
 */
import type UPlot from 'uplot';
import { formatBytes, formatBytesShort, formatClock } from './format.js';
import { chartColumns, type GuestSample } from './model.js';

export type { GuestSample };

export type SeriesKey = 'boot' | 'virtio-mem' | 'balloon-held' | 'guest-used' | 'host-rss';

interface SeriesSpec {
  key: SeriesKey;
  label: string;
  color: string;
  fill?: string;
  stacked: boolean;
  dash?: number[];
  field: keyof GuestSample;
}

const SERIES: readonly SeriesSpec[] = [
  { key: 'boot', label: 'Boot RAM (in guest)', color: '#2f6db5', fill: 'rgba(47,109,181,0.35)', stacked: true, field: 'bootInGuestBytes' },
  { key: 'virtio-mem', label: 'virtio-mem plugged', color: '#2a9d6f', fill: 'rgba(42,157,111,0.35)', stacked: true, field: 'virtioMemBytes' },
  { key: 'balloon-held', label: 'Balloon-held', color: '#a8a8a8', fill: 'rgba(150,150,150,0.25)', stacked: true, field: 'balloonHeldBytes' },
  { key: 'guest-used', label: 'Guest used', color: '#d08a16', stacked: false, field: 'guestUsedBytes' },
  { key: 'host-rss', label: 'Host RSS (QEMU)', color: '#c0392b', stacked: false, dash: [6, 4], field: 'hostRssBytes' },
];

/** Time-axis steps in whole seconds (samples come every ~2 s; sub-second ticks would repeat labels). */
const TIME_INCRS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600];

/** Y-axis steps: powers of two from 16 MiB, so ticks read 256 MiB, 512 MiB, 1 GiB. */
const BYTE_INCRS = Array.from({ length: 14 }, (_, i) => 16 * 1024 ** 2 * 2 ** i);

/** How many samples a chart keeps (10 minutes at one sample every 2 s). */
const MAX_POINTS = 300;

export class GuestChart {
  private readonly samples: GuestSample[] = [];
  private readonly plot: UPlot;
  private readonly legend: HTMLElement;
  private cursorIdx: number | null = null;

  /** Builds the chart in `host` (which must be in the document) with the legend below it. */
  constructor(host: HTMLElement, private readonly testId: string) {
    const plotBox = document.createElement('div');
    plotBox.className = 'plot';
    // The canvas says nothing to a screen reader; the legend table next to it has the numbers.
    plotBox.setAttribute('role', 'img');
    plotBox.setAttribute('aria-label', 'memory over time; the legend lists the values');
    this.legend = document.createElement('table');
    this.legend.className = 'legend';
    this.legend.dataset.testid = `${testId}-legend`;
    this.legend.setAttribute('aria-label', 'memory now');
    host.append(plotBox, this.legend);
    this.buildLegend();
    const opts: UPlot.Options = {
      width: Math.max(320, plotBox.clientWidth || 600),
      height: 220,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(max, 64 * 1024 ** 2) * 1.08] } },
      axes: [
        { stroke: '#5b6470', grid: { stroke: '#eceff3' }, space: 90, incrs: TIME_INCRS_S, values: (_u, ticks) => ticks.map((v) => formatClock(v)) },
        { stroke: '#5b6470', grid: { stroke: '#eceff3' }, size: 70, incrs: BYTE_INCRS, values: (_u, ticks) => ticks.map((v) => formatBytesShort(v)) },
      ],
      series: [
        {},
        ...SERIES.map((s): UPlot.Series => ({
          label: s.label, stroke: s.color, width: s.stacked ? 1 : 2, ...(s.fill ? { fill: s.fill } : {}), ...(s.dash ? { dash: s.dash } : {}),
          points: { show: false },
        })),
      ],
      // Each stacked band is filled down to the one below it, not to the axis.
      bands: SERIES.flatMap((s, i) => (s.stacked && i > 0 ? [{ series: [i + 1, i] as [number, number], fill: s.fill! }] : [])),
      hooks: {
        setCursor: [(u) => { this.cursorIdx = u.cursor.idx ?? null; this.updateLegend(); }],
      },
    };
    // With bands, a stacked series' own fill would cover the ones below; only the bottom one fills to 0.
    SERIES.forEach((s, i) => { if (s.stacked && i > 0) delete (opts.series[i + 1] as { fill?: unknown }).fill; });
    this.plot = new uPlot(opts, [[], ...SERIES.map(() => [])] as unknown as UPlot.AlignedData, plotBox);
    new ResizeObserver(() => {
      const w = plotBox.clientWidth;
      if (w > 0 && Math.abs(w - this.plot.width) > 2) this.plot.setSize({ width: w, height: 220 });
    }).observe(plotBox);
  }

  /** Adds a sample (samples arrive in time order; one at the same second replaces the last). */
  push(sample: GuestSample): void {
    const last = this.samples[this.samples.length - 1];
    if (last && Math.floor(last.tS) === Math.floor(sample.tS)) this.samples[this.samples.length - 1] = sample;
    else this.samples.push(sample);
    if (this.samples.length > MAX_POINTS) this.samples.splice(0, this.samples.length - MAX_POINTS);
    this.redraw();
  }

  /** Adds older samples (the daemon's history) before the ones the chart already has. */
  prefill(older: readonly GuestSample[]): void {
    const first = this.samples[0]?.tS ?? Infinity;
    const add = older.filter((x) => x.tS < first - 0.5).sort((a, b) => a.tS - b.tS);
    if (add.length === 0) return;
    this.samples.unshift(...add);
    if (this.samples.length > MAX_POINTS) this.samples.splice(0, this.samples.length - MAX_POINTS);
    this.redraw();
  }

  private redraw(): void {
    const columns = chartColumns(this.samples, SERIES.map((x) => x.field));
    this.plot.setData([this.samples.map((x) => x.tS), ...columns] as unknown as UPlot.AlignedData);
    this.updateLegend();
  }

  /** The latest sample, if any. */
  latest(): GuestSample | undefined {
    return this.samples[this.samples.length - 1];
  }

  private buildLegend(): void {
    const body = document.createElement('tbody');
    for (const s of SERIES) {
      const tr = document.createElement('tr');
      tr.dataset.testid = `${this.testId}-legend-${s.key}`;
      const sw = document.createElement('td');
      const swatch = document.createElement('span');
      swatch.className = `swatch${s.stacked ? '' : ' line'}${s.dash ? ' dashed' : ''}`;
      swatch.style.setProperty('--c', s.color);
      sw.append(swatch);
      const name = document.createElement('td');
      name.textContent = s.label;
      const val = document.createElement('td');
      val.className = 'num';
      val.textContent = '—';
      tr.append(sw, name, val);
      body.append(tr);
    }
    this.legend.append(body);
  }

  /** Legend values at the cursor, or the latest ones when the cursor is off the chart. */
  private updateLegend(): void {
    const idx = this.cursorIdx ?? this.samples.length - 1;
    const sample = this.samples[idx];
    const rows = this.legend.querySelectorAll('tr');
    SERIES.forEach((s, i) => {
      const row = rows[i];
      if (!row) return;
      const v = sample ? sample[s.field] : null;
      row.dataset.bytes = v === null ? '' : String(v);
      row.lastElementChild!.textContent = formatBytes(v);
    });
    this.legend.dataset.at = sample ? formatClock(sample.tS) : '';
  }
}
