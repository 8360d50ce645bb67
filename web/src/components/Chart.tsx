/**
 * A line chart of daily values, one series per name, drawn by uPlot (canvas). uPlot fits the console's
 * Content-Security-Policy (style-src 'self'): its stylesheet is bundled into our CSS file and it sets
 * element styles through the CSSOM (element.style), never through style attributes or <style> tags.
 * The figure carries a text summary for screen readers, and the numbers are in a table beside it.
 */
import { useEffect, useRef } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export const PALETTE = ['#2563eb', '#db2777', '#16a34a', '#ea580c', '#7c3aed', '#0891b2', '#ca8a04', '#4b5563'];

export interface DailySeries {
  label: string;
  values: number[];
}

export function DailyChart(props: { title: string; days: string[]; series: DailySeries[]; format: (n: number) => string }) {
  const box = useRef<HTMLDivElement>(null);
  const { days, series, format, title } = props;
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const xs = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
    const data: uPlot.AlignedData = [xs, ...series.map((s) => s.values)];
    const opts: uPlot.Options = {
      width: Math.max(300, el.clientWidth || 800),
      height: 220,
      title,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      // One tick per day (at most ~12 labels), labelled MM-DD: hours mean nothing for daily totals.
      axes: [
        {
          splits: () => xs.filter((_, i) => i % Math.ceil(xs.length / 12) === 0),
          values: (_u, ticks) => ticks.map((v) => new Date(v * 1000).toISOString().slice(5, 10)),
        },
        { values: (_u, ticks) => ticks.map((v) => format(v)), size: 70 },
      ],
      series: [
        { label: 'Day', value: (_u, v) => (v === null ? '—' : new Date(v * 1000).toISOString().slice(0, 10)) },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: PALETTE[i % PALETTE.length] ?? '#2563eb',
          width: 2,
          points: { show: true, size: 6 },
          value: (_u: uPlot, v: number | null) => (v === null ? '—' : format(v)),
        })),
      ],
    };
    const chart = new uPlot(opts, data, el);
    const ro = new ResizeObserver(() => chart.setSize({ width: Math.max(300, el.clientWidth), height: 220 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      chart.destroy();
    };
  }, [days, series, format, title]);
  const total = series.reduce((a, s) => a + s.values.reduce((x, y) => x + y, 0), 0);
  return (
    <div
      className="chart"
      ref={box}
      role="img"
      aria-label={`${title}: ${format(total)} over ${days.length} days, by ${series.map((s) => s.label).join(', ')}`}
    />
  );
}
