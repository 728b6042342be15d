// deno-lint-ignore-file no-explicit-any -- a diagnostic that wraps the engine's private sessions to time them
// Where a full fine-tuning step goes: `deno run -A --v8-flags=--max-old-space-size=8192 scripts/full_step_breakdown.ts [layers] [steps] [preset]`
// (PAR=0: the optimizer on one thread). Wraps the engine's sessions and phases; prints wall ms per step and the losses.
// Where a full fine-tuning step's time goes (bench shape): wraps the engine's sessions and phases.
import { TrainEngine } from "../engine/train_engine.ts";
import { benchModel } from "../engine/bench.ts";
import { presetConfig } from "../engine/init_model.ts";
import { normalizeConfig } from "../engine/gemma/config.ts";
import { AdamW } from "../engine/optim.ts";
import { rng } from "../engine/lora.ts";
const layers = Number(Deno.args[0] ?? 2), steps = Number(Deno.args[1] ?? 2);
const config = Deno.args[2] ? presetConfig(Deno.args[2], undefined).config : normalizeConfig({
  model_type: "gemma3_text",
  hidden_size: 640,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 256,
  intermediate_size: 2048,
  vocab_size: 262144,
  num_hidden_layers: layers,
  query_pre_attn_scalar: 256,
  sliding_window: 512,
}, "x");
const model = benchModel(config, "fp32");
const e = await TrainEngine.create({ model, method: "full", seed: 1, threads: 2 });
const opt = new AdamW(e.trainable, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 }, { parallel: Deno.env.get("PAR") !== "0" });
const t: Record<string, number> = {};
const add = (k: string, ms: number) => (t[k] = (t[k] ?? 0) + ms);
const P = e as any;
const wrapSession = (s: any, k: string) => {
  if (s.__w) return s;
  const r = s.run.bind(s);
  s.run = async (...a: any[]) => {
    const t0 = performance.now();
    const o = await r(...a);
    add(k, performance.now() - t0);
    return o;
  };
  s.__w = 1;
  return s;
};
const head0 = P.head.bind(e);
P.head = async (k: string) => wrapSession(await head0(k), "ort head " + k);
const body0 = P.body.bind(e);
P.body = async (tr: boolean) => {
  const b = await body0(tr);
  wrapSession(b.forward, "ort body fwd");
  b.stages.forEach((st: { session: unknown }, i: number) => wrapSession(st.session, b.stages.length > 1 ? `ort body bwd ${i}` : "ort body bwd"));
  return b;
};
const rh = P.runHead.bind(e);
P.runHead = async (...a: any[]) => {
  const t0 = performance.now();
  const o = await rh(...a);
  add("runHead total", performance.now() - t0);
  return o;
};
const next = rng(2);
const B = 4, T = 128;
const ids = Int32Array.from({ length: B * T }, () => Math.floor(next() * config.vocabSize));
const batch = { inputIds: ids, labels: ids.slice(), batchSize: B, seqLen: T };
const losses: number[] = [];
for (let s = 0; s <= steps; s++) {
  if (s === 1) { for (const k in t) delete t[k]; }
  const c0 = Deno.loadavg()[0];
  const t0 = performance.now(), u0 = process.cpuUsage();
  e.zeroGrads();
  const r = await e.forwardBackward(batch);
  const t1 = performance.now();
  add("forwardBackward", t1 - t0);
  const n = opt.gradNorm(e.grads, 1 / r.tokens);
  const t2 = performance.now();
  add("globalNorm", t2 - t1);
  opt.update(e.grads, 1e-5, 1 / r.tokens);
  add("adamw", performance.now() - t2);
  add("step", performance.now() - t0);
  const u = process.cpuUsage(u0);
  add("cpu ms", (u.user + u.system) / 1000);
  losses.push(r.lossSum / r.tokens);
  console.error(`step ${s} ${(performance.now() - t0).toFixed(0)} ms load ${c0} norm ${n}`);
}
for (const k in t) t[k] = Math.round(t[k] / steps);
console.log(JSON.stringify({ parallel: opt.parallel, layers: config.numLayers, steps, perStepMs: t, losses, load: Deno.loadavg() }));
