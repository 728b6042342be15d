/**
 * Dashboard load vs training speed: trains the same run twice on the demo model, once with no
 * viewers and once with 20 simulated dashboard tabs polling every second (control, KPI, logs and
 * scalars, like the page does), and reports the step-time slowdown and the server's memory over time.
 *
 *   deno run -A scripts/bench_load.ts [--steps 150] [--tabs 20]
 *
 * With --chat: the server's responsiveness during generation instead. 30 clients poll /healthz (each
 * every --every ms) while one 64-token chat with the demo model runs, first cold (the demo model created,
 * model load, graph building, generation) then warm, after 5 s of the same polling with no chat as the
 * baseline; one JSON line per phase with /healthz p50/p95/max.
 *
 *   deno run -A scripts/bench_load.ts --chat [--clients 30] [--tokens 64] [--every 100]
 */
import * as fs from "node:fs";
import { loadAppSettings } from "../config/app.ts";
import { startServer } from "../routes/server.ts";

const args = Object.fromEntries(Deno.args.map((a, i, all) => [a.replace(/^--/, ""), all[i + 1]]).filter(([k]) => !k.match(/^\d/)));
const STEPS = Number(args.steps ?? 150), TABS = Number(args.tabs ?? 20);
const dataDir = fs.mkdtempSync("/tmp/gt-benchload-");
const server = await startServer(loadAppSettings({ host: "127.0.0.1", port: 0, data: dataDir }));
const base = `http://127.0.0.1:${server.port}`;

if (Deno.args.includes("--chat")) {
  const CLIENTS = Number(args.clients ?? 30), TOKENS = Number(args.tokens ?? 64), EVERY = Number(args.every ?? 100);
  const q = (s: number[], f: number) => +s[Math.min(s.length - 1, Math.floor(f * s.length))].toFixed(1);
  for (const phase of ["idle", "cold", "warm"]) {
    let done = false;
    const ms: number[] = [];
    const client = async () => {
      while (!done) {
        const t = performance.now();
        await (await fetch(`${base}/healthz`)).text();
        ms.push(performance.now() - t);
        await new Promise((r) => setTimeout(r, EVERY));
      }
    };
    const t0 = performance.now();
    const clients = Array.from({ length: CLIENTS }, client);
    if (phase === "idle") {
      // The baseline: the same polling for 5 s with no chat.
      await new Promise((r) => setTimeout(r, 5000));
      done = true;
      await Promise.all(clients);
      const sorted = ms.sort((a, b) => a - b);
      console.log(
        JSON.stringify({
          phase,
          clients: CLIENTS,
          every_ms: EVERY,
          healthz_polls: sorted.length,
          healthz_p50_ms: q(sorted, 0.5),
          healthz_p95_ms: q(sorted, 0.95),
          healthz_max_ms: +sorted.at(-1)!.toFixed(1),
        }),
      );
      continue;
    }
    const r = await fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "Tell me a long story about a lighthouse." }], temperature: 0, max_tokens: TOKENS }),
    });
    const j = await r.json();
    const chatMs = performance.now() - t0;
    done = true;
    await Promise.all(clients);
    if (!r.ok) throw new Error(`the chat failed: ${JSON.stringify(j)}`);
    const sorted = ms.sort((a, b) => a - b);
    console.log(JSON.stringify({
      phase,
      clients: CLIENTS,
      every_ms: EVERY,
      chat_ms: Math.round(chatMs),
      completion_tokens: j.usage.completion_tokens,
      tokens_per_second: +j.tokens_per_second.toFixed(1),
      healthz_polls: sorted.length,
      healthz_p50_ms: q(sorted, 0.5),
      healthz_p95_ms: q(sorted, 0.95),
      healthz_max_ms: +sorted.at(-1)!.toFixed(1),
    }));
  }
  await server.shutdown();
  fs.rmSync(dataDir, { recursive: true, force: true });
  Deno.exit(0);
}

async function run(name: string, tabs: number) {
  const r = await fetch(`${base}/api/runs`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name, model: "demo", dataset: { path: "sample" }, maxSteps: STEPS, batchSize: 4, learningRate: 0.005, evalEvery: 0, saveEvery: 0, maxLength: 64 }),
  });
  const { id } = await r.json();
  let stop = false;
  const rss: number[] = [];
  const offsets = Array(tabs).fill(0);
  const after = Array(tabs).fill(-1);
  const tab = async (k: number) => {
    while (!stop) {
      const t = Date.now();
      for (const url of [`/runs/${id}/fragments/control`, `/runs/${id}/fragments/kpi`, `/runs/${id}/fragments/logs?out=${offsets[k]}&err=0&errors=0`]) {
        await (await fetch(base + url)).text();
      }
      const s = await (await fetch(`${base}/api/runs/${id}/scalars?tag=train/loss&after=${after[k]}`)).json();
      if (s.points?.length) after[k] = s.points.at(-1)[0];
      await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - t))));
    }
  };
  const tabsDone = Array.from({ length: tabs }, (_, k) => tab(k));
  while (true) {
    const st = await (await fetch(`${base}/api/runs/${id}`)).json();
    rss.push(Deno.memoryUsage().rss / 2 ** 20);
    if (["completed", "failed", "aborted"].includes(st.status.state)) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  stop = true;
  await Promise.all(tabsDone);
  const pts = (await (await fetch(`${base}/api/runs/${id}/scalars?tag=train/step_time_ms`)).json()).points as [number, number][];
  // Skip the first steps (graph building, warm-up).
  const steady = pts.slice(5).map((p) => p[1]).sort((a, b) => a - b);
  return { meanStepMs: steady[Math.floor(steady.length / 2)], rssMb: rss };
}

// quiet, busy, quiet, busy: the machine's drift hits both sides alike.
const q1 = await run("quiet", 0), b1 = await run("busy", TABS), q2 = await run("quiet", 0), b2 = await run("busy", TABS);
const quiet = { meanStepMs: (q1.meanStepMs + q2.meanStepMs) / 2 };
const busy = { meanStepMs: (b1.meanStepMs + b2.meanStepMs) / 2, rssMb: [...b1.rssMb, ...b2.rssMb] };
console.log(JSON.stringify({
  steps: STEPS,
  tabs: TABS,
  median_step_ms_no_viewers: +quiet.meanStepMs.toFixed(1),
  median_step_ms_with_viewers: +busy.meanStepMs.toFixed(1),
  slowdown_percent: +((busy.meanStepMs / quiet.meanStepMs - 1) * 100).toFixed(1),
  server_rss_mb_start: +busy.rssMb[0].toFixed(0),
  server_rss_mb_end: +busy.rssMb.at(-1)!.toFixed(0),
  server_rss_mb_max: +Math.max(...busy.rssMb).toFixed(0),
}));
await server.shutdown();
fs.rmSync(dataDir, { recursive: true, force: true });
