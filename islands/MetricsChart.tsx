/**
 * A line chart (chart.js) of run scalars. Props are serialisable: either inline `series`, or a
 * `runId` whose scalars are fetched incrementally from /api/runs/:id/scalars?tag=…&after=N.
 */
import { useEffect, useRef, useState } from "preact/hooks";
import { CategoryScale, Chart, Legend, LinearScale, LineController, LineElement, PointElement, Tooltip } from "chart.js";

Chart.register(LineController, LineElement, PointElement, LinearScale, CategoryScale, Legend, Tooltip);

export interface MetricsChartProps {
  title?: string;
  runId?: string;
  /** Several runs overlaid (history comparison). */
  runIds?: string[];
  /** Legend names of the runs (run id → name); a run without one is shown by its id. */
  labels?: Record<string, string>;
  tags?: string[];
  series?: { label: string; points: [number, number][] }[];
  /** Exponential moving-average weight for train curves (0 = none). */
  smoothing?: number;
  /** Poll interval while the run is live, ms. */
  pollMs?: number;
  height?: number;
  /** Start the y axis at 0 (a learning rate or a speed; a loss keeps its own range). */
  zero?: boolean;
}

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
const MAX_POINTS = 2000;

/** Keeps at most `max` points: every k-th point plus the last. */
export function downsample(points: [number, number][], max = MAX_POINTS): [number, number][] {
  if (points.length <= max) return points;
  const k = Math.ceil(points.length / max);
  const out = points.filter((_, i) => i % k === 0);
  if (out[out.length - 1] !== points[points.length - 1]) out.push(points[points.length - 1]);
  return out;
}

/**
 * A y-axis tick as a person reads it: as many decimals as the tick spacing needs and no float noise
 * ("0.00999990" becomes "0.01" when the ticks are 0.002 apart); exponents for very small or large values.
 */
export function tickLabel(v: number, step: number): string {
  if (v === 0 || !Number.isFinite(v)) return String(v);
  const span = Math.abs(step) > 0 && Number.isFinite(step) ? Math.abs(step) : Math.abs(v) / 10;
  const mag = Math.abs(v);
  const trim = (t: string) => t.replace(/(\.\d*?)0+(e|$)/, "$1$2").replace(/\.(e|$)/, "$1");
  if (mag >= 1e-3 && mag < 1e6) return trim(v.toFixed(Math.min(8, Math.max(0, Math.ceil(-Math.log10(span) - 1e-9)))));
  const digits = Math.min(6, Math.max(1, Math.ceil(Math.log10(mag / span) - 1e-9) + 1));
  return trim(v.toExponential(digits - 1)).replace("e+", "e");
}

export function smooth(points: [number, number][], w: number): [number, number][] {
  if (!w) return points;
  let ema = points[0]?.[1] ?? 0;
  return points.map(([x, y]) => [x, ema = w * ema + (1 - w) * y]);
}

/** A scalar's name in words, for legends ("train/loss" → "training loss"). */
const TAG_NAMES: Record<string, string> = {
  "train/loss": "training loss",
  "eval/loss": "evaluation loss",
  "train/learning_rate": "learning rate",
  "train/grad_norm": "gradient norm",
  "train/tokens_per_second": "tokens per second",
  "train/step_time_ms": "step time (ms)",
  "system/rss_mb": "memory (MB)",
};

export function tagName(tag: string): string {
  const known = TAG_NAMES[tag];
  if (known) return known;
  const last = tag.split("/").at(-1) ?? tag;
  return last.replace(/_/g, " ");
}

/** The legend text of one series: the scalar in words, after the run's name when several runs share a chart. */
export function seriesLabel(tag: string, run?: string): string {
  const t = tagName(tag);
  return run ? `${run} · ${t}` : t.charAt(0).toUpperCase() + t.slice(1);
}

export default function MetricsChart(props: MetricsChartProps) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart | null>(null);
  const data = useRef(new Map<string, [number, number][]>());
  const [status, setStatus] = useState(props.runId || props.runIds ? "Waiting for the first step…" : "");

  useEffect(() => {
    const c = new Chart(canvas.current!, {
      type: "line",
      data: { datasets: [] },
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        responsive: true,
        maintainAspectRatio: false,
        scales: {
          x: { type: "linear", title: { display: true, text: "step" } },
          y: {
            type: "linear",
            beginAtZero: props.zero ?? false,
            ticks: { callback: (v, _i, ticks) => tickLabel(Number(v), ticks.length > 1 ? ticks[1].value - ticks[0].value : 0) },
          },
        },
        plugins: { legend: { display: true } },
        elements: { point: { radius: 0 } },
      },
    });
    chart.current = c;
    const labelOf = new Map<string, string>();
    const redraw = () => {
      c.data.datasets = [...data.current].map(([key, pts], i) => ({
        label: labelOf.get(key) ?? key,
        data: downsample(key.endsWith("train/loss") ? smooth(pts, props.smoothing ?? 0) : pts).map(([x, y]) => ({ x, y })),
        borderColor: COLORS[i % COLORS.length],
        borderWidth: 1.5,
      }));
      // One series: the title already names it.
      c.options.plugins!.legend!.display = c.data.datasets.length > 1;
      c.update();
    };
    for (const s of props.series ?? []) data.current.set(s.label, s.points);
    redraw();

    const runs = props.runIds ?? (props.runId ? [props.runId] : []);
    const tags = props.tags ?? ["train/loss"];
    let stopped = false;
    let timer = 0;
    const after = new Map<string, number>();
    const poll = async () => {
      let live = false;
      for (const run of runs) {
        for (const tag of tags) {
          const key = runs.length > 1 ? `${run} ${tag}` : tag;
          labelOf.set(key, seriesLabel(tag, runs.length > 1 ? props.labels?.[run] ?? run : undefined));
          const url = `/api/runs/${encodeURIComponent(run)}/scalars?tag=${encodeURIComponent(tag)}&after=${after.get(key) ?? -1}`;
          try {
            const r = await fetch(url, { headers: { Accept: "application/json" } });
            if (!r.ok) continue;
            const body = await r.json() as { points: [number, number][]; live?: boolean };
            if (body.live) live = true;
            if (body.points.length) {
              const pts = data.current.get(key) ?? [];
              pts.push(...body.points);
              data.current.set(key, pts);
              after.set(key, body.points[body.points.length - 1][0]);
            }
          } catch {
            // Network hiccup: try again on the next tick.
          }
        }
      }
      const n = [...data.current.values()].reduce((s, p) => s + p.length, 0);
      setStatus(n ? "" : live ? "Waiting for the first step…" : "No values recorded");
      redraw();
      if (!stopped && live) timer = setTimeout(poll, props.pollMs ?? 2000) as unknown as number;
    };
    if (runs.length) poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
      c.destroy();
    };
  }, []);

  // The title is the page's text (not drawn on the canvas); the waiting note sits inside the plot, not below its box.
  return (
    <figure class="chart">
      {props.title && <figcaption class="chart-title">{props.title}</figcaption>}
      <div class="chart-plot" style={{ height: `${props.height ?? 260}px` }}>
        <canvas ref={canvas} role="img" aria-label={props.title ?? "chart"}></canvas>
        {status && (
          <p class="chart-wait muted" data-chart-wait>
            {status}
          </p>
        )}
      </div>
    </figure>
  );
}
