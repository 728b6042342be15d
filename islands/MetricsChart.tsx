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

export function smooth(points: [number, number][], w: number): [number, number][] {
  if (!w) return points;
  let ema = points[0]?.[1] ?? 0;
  return points.map(([x, y]) => [x, ema = w * ema + (1 - w) * y]);
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
        scales: { x: { type: "linear", title: { display: true, text: "step" } }, y: { type: "linear" } },
        plugins: { legend: { display: true }, title: { display: !!props.title, text: props.title } },
        elements: { point: { radius: 0 } },
      },
    });
    chart.current = c;
    const redraw = () => {
      c.data.datasets = [...data.current].map(([label, pts], i) => ({
        label,
        data: downsample(label.endsWith("train/loss") ? smooth(pts, props.smoothing ?? 0) : pts).map(([x, y]) => ({ x, y })),
        borderColor: COLORS[i % COLORS.length],
        borderWidth: 1.5,
      }));
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
          const key = runs.length > 1 ? `${props.labels?.[run] ?? run} ${tag}` : tag;
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
      setStatus(n ? "" : "Waiting for the first step…");
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

  return (
    <figure class="chart" style={{ height: `${props.height ?? 260}px` }}>
      <canvas ref={canvas} role="img" aria-label={props.title ?? "chart"}></canvas>
      {status && <figcaption class="muted">{status}</figcaption>}
    </figure>
  );
}
