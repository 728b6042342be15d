/**
 * One graph per model: the body and head graphs built with symbolic dims (one session each) give the
 * same outputs and gradients as graphs built for each static shape, on every generation's stress
 * checkpoint, for two different [batch, seq] shapes run through the same session.
 */
import type * as ortTypes from "onnxruntime-node";
import { type BodyGraphs, buildBody, buildHeadChunk, EMBED } from "./staged.ts";
import { attentionMask, ropeTables } from "./model.ts";
import { paramSpecs } from "./params.ts";
import { randomWeights, tinyConfig } from "./testing.ts";
import { initLora } from "../lora.ts";
import { createSession, tensor } from "../session.ts";
import { TrainEngine } from "../train_engine.ts";
import type { GemmaConfig } from "./config.ts";

const SPEC = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] };
/** [batch, seq, labelled positions] — two shapes, the second with padding-free rows of another length. */
const SHAPES = [[1, 10, 9], [3, 6, 11]] as const;

interface Sessions {
  graphs: BodyGraphs;
  forward: ortTypes.InferenceSession;
  backward: ortTypes.InferenceSession;
}

async function sessions(graphs: BodyGraphs): Promise<Sessions> {
  return { graphs, forward: await createSession(graphs.forward), backward: await createSession(graphs.backward!) };
}

function feedsFor(c: GemmaConfig, weights: Map<string, Float32Array>, B: number, T: number, P: number, seed: number) {
  const H = c.hiddenSize, N = B * T;
  const f: Record<string, ortTypes.Tensor> = {};
  const wave = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + k) * 0.5);
  f.embeds = tensor("float32", wave(N * H, seed), [N, H]);
  f.sel = tensor("int64", BigInt64Array.from({ length: P }, (_, i) => BigInt((i * 5 + seed) % N)), [P]);
  f.tw = tensor("float32", Float32Array.from({ length: P }, (_, i) => (i % 4 === 3 ? 0 : 1)), [P]);
  f.d_hs = tensor("float32", wave(P * H, seed + 1), [P, H]);
  for (const type of new Set(c.layerTypes)) {
    const { cos, sin } = ropeTables(c, type, T);
    f[`rope_cos_${type}`] = tensor("float32", Float32Array.from(cos), [T, c.headDim]);
    f[`rope_sin_${type}`] = tensor("float32", Float32Array.from(sin), [T, c.headDim]);
    f[`mask_${type}`] = tensor("float32", Float32Array.from(attentionMask(c, type, T)), [T, T]);
  }
  for (const s of paramSpecs(c)) if (s.name !== EMBED) f[s.name] = tensor("float32", weights.get(s.name)!, s.shape);
  for (const [name, t] of initLora(c, SPEC, 3)) {
    // B non-zero so the LoRA gradients of A are too.
    if (name.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = Math.cos(i * 0.7 + name.length) * 0.2));
    f[name] = tensor("float32", t.data, t.shape);
  }
  return f;
}

async function runBody(s: Sessions, feeds: Record<string, ortTypes.Tensor>): Promise<Map<string, Float32Array>> {
  const pick = (names: string[], extra: Record<string, ortTypes.Tensor>) => Object.fromEntries(names.map((n) => [n, extra[n] ?? feeds[n]]));
  const fwd = await s.forward.run(pick(s.graphs.forwardInputs, {}));
  const bwd = await s.backward.run(pick(s.graphs.backwardInputs, fwd as Record<string, ortTypes.Tensor>));
  const out = new Map<string, Float32Array>([["hs", fwd.hs.data as Float32Array]]);
  for (const name of s.graphs.trainable) out.set(`grad.${name}`, bwd[`grad.${name}`].data as Float32Array);
  return out;
}

function assertSame(label: string, a: Map<string, Float32Array>, b: Map<string, Float32Array>, minNonZero = 1) {
  if (a.size !== b.size) throw new Error(`${label}: ${a.size} outputs vs ${b.size}`);
  let nonZero = 0;
  for (const [name, x] of a) {
    const y = b.get(name);
    if (!y || y.length !== x.length) throw new Error(`${label}: ${name} has ${y?.length} values, static graph ${x.length}`);
    let scale = 0, worst = 0;
    for (let i = 0; i < x.length; i++) {
      scale = Math.max(scale, Math.abs(x[i]));
      worst = Math.max(worst, Math.abs(x[i] - y[i]));
    }
    if (scale > 0) nonZero++;
    if (worst > 1e-5 * Math.max(scale, 1e-3)) throw new Error(`${label}: ${name} differs by ${worst} (scale ${scale})`);
  }
  if (nonZero < minNonZero) throw new Error(`${label}: only ${nonZero} non-zero outputs; the comparison would not catch a difference`);
}

for (const gen of [1, 2, 3] as const) {
  for (const method of ["lora", "full"] as const) {
    Deno.test(`Gemma ${gen} ${method}: one symbolic body session equals the per-shape graphs at two shapes`, async () => {
      const c = tinyConfig(gen, true);
      const w = randomWeights(c, 60 + gen, 0.2);
      const opts = { method, lora: method === "lora" ? SPEC : undefined, activations: "save" as const };
      const symbolic = await sessions(buildBody(c, { batch: "batch", seq: "seq", positions: "positions", ...opts }));
      for (const [B, T, P] of SHAPES) {
        const feeds = feedsFor(c, w, B, T, P, B + T);
        const fixed = await sessions(buildBody(c, { batch: B, seq: T, positions: P, ...opts }));
        assertSame(`Gemma ${gen} ${method} [${B},${T}] P ${P}`, await runBody(fixed, feeds), await runBody(symbolic, feeds), method === "lora" ? 20 : 30);
        await fixed.forward.release(), await fixed.backward.release();
      }
      await symbolic.forward.release(), await symbolic.backward.release();
    });
  }
}

Deno.test("LM-head chunks: one symbolic session per kind equals static ones at two [P, rows]", async () => {
  const c = tinyConfig(2, true); // final soft-cap on
  const H = c.hiddenSize;
  for (const kind of ["stats", "online", "grad"] as const) {
    const sym = await createSession(buildHeadChunk(c, { positions: "positions", rows: "rows", kind }));
    for (const [P, R] of [[5, 12], [9, 7]]) {
      const fixed = await createSession(buildHeadChunk(c, { positions: P, rows: R, kind }));
      const feeds: Record<string, ortTypes.Tensor> = {
        hs: tensor("float32", Float32Array.from({ length: P * H }, (_, i) => Math.sin(i * 0.3)), [P, H]),
        emb: tensor("float32", Float32Array.from({ length: R * H }, (_, i) => Math.cos(i * 0.11)), [R, H]),
        tloc: tensor("int64", BigInt64Array.from({ length: P }, (_, i) => BigInt(i % R)), [P, 1]),
        tin: tensor("float32", Float32Array.from({ length: P }, (_, i) => i % 2), [P, 1]),
      };
      if (kind === "grad") {
        feeds.lse = tensor("float32", new Float32Array(P).fill(3), [P, 1]);
        feeds.tw = tensor("float32", new Float32Array(P).fill(1), [P, 1]);
      }
      const a = await fixed.run(feeds), b = await sym.run(feeds);
      const toMap = (o: Record<string, ortTypes.Tensor>) => new Map(Object.entries(o).map(([k, t]) => [k, t.data as Float32Array]));
      assertSame(`head ${kind} [${P},${R}]`, toMap(a), toMap(b), 2);
      await fixed.release();
    }
    await sym.release();
  }
});

Deno.test("the engine compiles one training body and one head per kind for batches of different shapes", async () => {
  const c = tinyConfig(3, true);
  const e = await TrainEngine.create({ model: { config: c, weights: randomWeights(c, 5, 0.2) }, method: "lora", lora: SPEC, seed: 1, headChunkElements: 40 });
  const ids = (n: number) => Int32Array.from({ length: n }, (_, i) => 2 + ((i * 7) % 40));
  await e.forwardBackward({ inputIds: ids(10), labels: ids(10), batchSize: 1, seqLen: 10 });
  await e.forwardBackward({ inputIds: ids(18), labels: ids(18), batchSize: 3, seqLen: 6 });
  await e.evaluate({ inputIds: ids(12), labels: ids(12), batchSize: 2, seqLen: 6 });
  await e.evaluate({ inputIds: ids(7), labels: ids(7), batchSize: 1, seqLen: 7 });
  const built = e.compiled();
  if (built.join() !== "body:eval,body:train,head:online,head:stats") throw new Error(`compiled graphs: ${built.join()}`);
  e.release();
});
