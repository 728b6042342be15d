/**
 * Low-precision frozen base: the stored blocks round-trip within half a step, and the engine trains
 * LoRA on them exactly as a float32 engine would on the dequantized weights (forward, loss and the
 * backward's dX = dY·W), for every generation.
 */
import { TrainEngine } from "../train_engine.ts";
import { randomWeights, tinyConfig } from "../gemma/testing.ts";
import { paramSpecs } from "../gemma/params.ts";
import { floatToBf16 } from "../safetensors.ts";
import { BLOCK, dequantize, quantize } from "./blocks.ts";
import { freezeWeights } from "./base.ts";
import { bf16ToF32 } from "./blocks.ts";

const TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

Deno.test("blocks: int8/int4 round-trip within half a quantization step per block; bf16 rounds to nearest", () => {
  const rows = 3, cols = 80; // 80 = 2.5 blocks: a partial last block
  const w = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 13)));
  for (const [p, qmax] of [["int8", 127], ["int4", 7]] as const) {
    const t = quantize(w, [rows, cols], p);
    const d = dequantize(t);
    for (let i = 0; i < w.length; i++) {
      const r = Math.floor(i / cols), b = Math.floor((i % cols) / BLOCK);
      const start = r * cols + b * BLOCK;
      let amax = 0;
      for (let k = start; k < Math.min(start + BLOCK, (r + 1) * cols); k++) amax = Math.max(amax, Math.abs(w[k]));
      const step = amax / qmax;
      if (Math.abs(d[i] - w[i]) > step / 2 + 1e-6) throw new Error(`${p}: element ${i} off by ${Math.abs(d[i] - w[i])}, half step ${step / 2}`);
    }
  }
  const b = dequantize(quantize(w, [rows, cols], "bf16"));
  for (let i = 0; i < w.length; i++) {
    const want = bf16ToF32(Uint16Array.of(floatToBf16(w[i])))[0];
    if (b[i] !== want) throw new Error(`bf16 element ${i}: ${b[i]} vs ${want}`);
  }
});

/** The float32 weights a frozen base computes with: dequantized projections, bf16-rounded table. */
function dequantizedCopy(c: ReturnType<typeof tinyConfig>, w: Map<string, Float32Array>, p: "bf16" | "int8" | "int4") {
  const out = new Map<string, Float32Array>();
  for (const s of paramSpecs(c)) {
    const x = w.get(s.name)!;
    out.set(s.name, s.kind === "norm" ? x : s.kind === "embedding" ? dequantize(quantize(x, s.shape, "bf16")) : dequantize(quantize(x, s.shape, p)));
  }
  return out;
}

for (const gen of [1, 2, 3] as const) {
  for (const p of ["bf16", "int8", "int4"] as const) {
    Deno.test(`Gemma ${gen}, ${p} base: LoRA loss and gradients equal a float32 engine on the dequantized weights`, async () => {
      const c = tinyConfig(gen, true);
      const w = randomWeights(c, 7 + gen, 0.2);
      const ref = dequantizedCopy(c, w, p);
      const frozen = freezeWeights(c, new Map(w), p);
      const spec = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: TARGETS };
      const T = 8;
      const ids = Int32Array.from([2, 17, 5, 33, 40, 8, 8, 21, 2, 30, 31, 32, 9, 1, 0, 0]);
      const labels = ids.map((v, i) => (i % T < 2 ? -100 : v));
      const batch = { inputIds: ids, labels, batchSize: 2, seqLen: T };
      const engines = [];
      for (const model of [frozen, { config: c, weights: ref }]) {
        const e = await TrainEngine.create({ model, method: "lora", lora: spec, seed: 3, headChunkElements: 16 * 20 });
        for (const [k, t] of e.trainable) if (k.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = Math.sin(i + k.length) * 0.1));
        e.zeroGrads();
        engines.push({ e, r: await e.forwardBackward(batch) });
      }
      const [q, f] = engines;
      if (Math.abs(q.r.lossSum - f.r.lossSum) > 1e-4 * Math.abs(f.r.lossSum)) throw new Error(`loss ${q.r.lossSum} vs ${f.r.lossSum}`);
      let worst = 0, scale = 0;
      for (const [k, g] of f.e.grads) {
        const h = q.e.grads.get(k)!;
        for (let i = 0; i < g.length; i++) (worst = Math.max(worst, Math.abs(g[i] - h[i]))), (scale = Math.max(scale, Math.abs(g[i])));
      }
      if (scale === 0) throw new Error("all gradients are zero");
      if (worst > 1e-4 * scale) throw new Error(`LoRA gradients differ by ${worst} (largest ${scale})`);
      // The quantized weights really differ from float32 (else this test could not see a wrong kernel).
      const plain = await TrainEngine.create({ model: { config: c, weights: w }, method: "lora", lora: spec, seed: 3 });
      const e0 = await plain.evaluate(batch);
      if (p !== "bf16" && Math.abs(e0.lossSum - f.r.lossSum) < 1e-6) throw new Error("quantization changed nothing");
      for (const x of [q.e, f.e, plain]) x.release();
    });
  }
}

Deno.test("the body's backward recomputes dequantized weights instead of saving float32 copies", async () => {
  const { buildBody } = await import("../gemma/staged.ts");
  const c = tinyConfig(3);
  const spec = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: TARGETS };
  for (const p of ["bf16", "int8", "int4"] as const) {
    const b = buildBody(c, { batch: 1, seq: 4, positions: 16, method: "lora", lora: spec, activations: "save", basePrecision: p });
    if (b.saved.length === 0) throw new Error("nothing saved: the split did not happen");
    const dequantized = b.saved.filter((n) => /^(DequantizeLinear|Cast|BitShift|BitwiseAnd)/.test(n));
    if (dequantized.length) throw new Error(`${p}: the forward saves dequantized weights ${dequantized}`);
    // Layer 1's q_proj carries d hs back to layer 0's LoRA tensors: the backward reads it as stored.
    const w = "model.layers.1.self_attn.q_proj.weight";
    if (!b.backwardInputs.includes(w)) throw new Error(`${p}: the backward does not read the stored ${w}`);
    if (p === "bf16" && !b.backwardInputs.includes("bf16_lut")) throw new Error("bf16: the backward has no LUT input");
    if (p !== "bf16" && !b.backwardInputs.includes(`${w}.scales`)) throw new Error(`${p}: the backward has no scales input`);
  }
});

Deno.test("frozen products: the forward runs from the stored form, the backward dequantizes W again after dY (exact for the blocks)", async () => {
  const { Graph } = await import("../onnx/builder.ts");
  const { gradientsFromSeeds } = await import("../onnx/autodiff.ts");
  const { FrozenInputs, frozenFeeds } = await import("./graph.ts");
  const { createSession, tensor } = await import("../session.ts");
  const M = 3, OUT = 8, IN = 64;
  const w = Float32Array.from({ length: OUT * IN }, (_, i) => Math.sin(i * 0.37) * 0.1);
  const x = Float32Array.from({ length: M * IN }, (_, i) => Math.cos(i * 0.11));
  const dy = Float32Array.from({ length: M * OUT }, (_, i) => Math.sin(i * 0.7));
  for (const p of ["bf16", "int8", "int4"] as const) {
    const g = new Graph();
    const xv = g.input("x", [M, IN]), dv = g.input("dy", [M, OUT]);
    const y = new FrozenInputs(g, p).matmul(xv, "w", [OUT, IN]);
    const cut = g.nodes.length;
    const dx = gradientsFromSeeds(g, new Map([[y, dv]]), [xv]).get(xv)!;
    g.output(y, "y");
    g.output(dx, "dx");
    const fwd = g.nodes.slice(0, cut), bwd = g.nodes.slice(cut);
    if (p !== "bf16" && (fwd.filter((n) => n.op === "MatMulNBits").length !== 1 || fwd.some((n) => n.op === "DequantizeLinear"))) {
      throw new Error(`${p}: the forward should be one MatMulNBits on the blocks, got ${fwd.map((n) => n.op)}`);
    }
    // int8/int4: the backward's W is made in the backward, read once, and downstream of dY (so it
    // cannot run early). bf16 keeps one dequantized W for both products (rematerializing it raised
    // gemma-3-1b's peak; engine/quant/graph.ts), so its backward makes none.
    const deq = bwd.find((n) => n.op === (p === "bf16" ? "Gather" : "DequantizeLinear"));
    if (p === "bf16") {
      if (deq) throw new Error(`bf16: the backward dequantizes W again: ${bwd.map((n) => n.op)}`);
    } else {
      if (!deq) throw new Error(`${p}: the backward does not dequantize W again: ${bwd.map((n) => n.op)}`);
      const W = deq.outputs[0];
      const readers = g.nodes.filter((n) => n.inputs.includes(W));
      if (readers.length !== 1) throw new Error(`${p}: the backward's W has ${readers.length} readers`);
      const upstream = new Set<number>([dv.id]);
      for (const n of g.nodes) if (n.inputs.some((v) => v && upstream.has(v.id))) n.outputs.forEach((v) => upstream.add(v.id));
      if (!upstream.has(W.id)) throw new Error(`${p}: the backward's W does not wait on dY`);
    }
    const t = quantize(w, [OUT, IN], p), Wd = dequantize(t);
    const s = await createSession(g.toBytes());
    const out = await s.run({ x: tensor("float32", x, [M, IN]), dy: tensor("float32", dy, [M, OUT]), ...frozenFeeds("w", t) });
    await s.release();
    const yo = out.y.data as Float32Array, dxo = out.dx.data as Float32Array;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < OUT; j++) {
        let a = 0;
        for (let k = 0; k < IN; k++) a += x[i * IN + k] * Wd[j * IN + k];
        if (Math.abs(a - yo[i * OUT + j]) > 1e-5 * (1 + Math.abs(a))) throw new Error(`${p}: y[${i},${j}] ${yo[i * OUT + j]} vs ${a}`);
      }
      for (let k = 0; k < IN; k++) {
        let a = 0;
        for (let j = 0; j < OUT; j++) a += dy[i * OUT + j] * Wd[j * IN + k];
        if (Math.abs(a - dxo[i * IN + k]) > 1e-5 * (1 + Math.abs(a))) throw new Error(`${p}: dx[${i},${k}] ${dxo[i * IN + k]} vs ${a}`);
      }
    }
  }
});

Deno.test("a bf16 checkpoint's tied embedding stays in its file: the same LoRA step as the table held in memory; an untied lm_head is refused", async () => {
  const fs = await import("node:fs");
  const path = await import("node:path");
  const { initModel } = await import("../init_model.ts");
  const { loadModel } = await import("../model_dir.ts");
  const { listCheckpoint, readTensorF32, writeSafetensors } = await import("../safetensors.ts");
  const { loadFrozen } = await import("./base.ts");
  const { EmbeddingTable } = await import("./table.ts");
  const tmp = fs.mkdtempSync("/tmp/gt-table-file-");
  try {
    const dir = await initModel({ preset: "tiny-3", out: path.join(tmp, "m"), seed: 4, embedStd: 0.5 });
    // Every tensor as bf16, as released checkpoints store them.
    const file = path.join(dir, "model.safetensors");
    const tensors = [...listCheckpoint(dir).values()].map((e) => ({ name: e.name, dtype: "BF16" as const, shape: e.shape, data: readTensorF32(e) }));
    writeSafetensors(file, tensors);
    const fromDisk = loadFrozen(dir, "int8");
    const E = fromDisk.base.embedding, c = fromDisk.config;
    if (!E.inFile) throw new Error("the bf16 embedding was read into memory");
    const held = freezeWeights(c, (await loadModel(dir)).weights, "int8");
    if (held.base.embedding.inFile) throw new Error("the reference table is not in memory");
    const bits = held.base.embedding.allBits();
    for (const i of [0, 1, bits.length >> 1, bits.length - 1]) if (E.bitsAt(i) !== bits[i]) throw new Error(`element ${i} differs`);
    const spec = { r: 4, alpha: 8, dropout: 0, rslora: false, targets: TARGETS };
    const ids = Int32Array.from([2, 17, 5, 33, 40, 8, 8, 21, 2, 30, 31, 32, 9, 1, 0, 0]);
    const batch = { inputIds: ids, labels: ids.map((v, i) => (i % 8 < 2 ? -100 : v)), batchSize: 2, seqLen: 8 };
    const runs = [];
    for (const model of [fromDisk, held]) {
      // Small head chunks: several chunk reads from the file per pass.
      const e = await TrainEngine.create({ model, method: "lora", lora: spec, seed: 3, headChunkElements: 16 * 20 });
      for (const [k, t] of e.trainable) if (k.includes("lora_B")) t.data.forEach((_, i) => (t.data[i] = Math.sin(i + k.length) * 0.1));
      e.zeroGrads();
      runs.push({ e, r: await e.forwardBackward(batch) });
    }
    const [d, m] = runs;
    if (d.r.lossSum !== m.r.lossSum) throw new Error(`loss ${d.r.lossSum} vs ${m.r.lossSum}`);
    for (const [k, g] of m.e.grads) {
      const h = d.e.grads.get(k)!;
      if (g.some((x, i) => x !== h[i])) throw new Error(`gradient ${k} differs`);
      if (k.includes("lora_A") && !g.some((x) => x !== 0)) throw new Error(`gradient ${k} is zero`);
    }
    for (const x of runs) x.e.release();
    if (!(EmbeddingTable.fromBf16(bits, c.vocabSize, c.hiddenSize).bitsAt(3) === bits[3])) throw new Error("bitsAt of a held table");
    // A checkpoint with an lm_head.weight equal to the embedding loads; a different one is refused.
    const emb = tensors.find((t) => t.name.endsWith("embed_tokens.weight"))!;
    writeSafetensors(file, [...tensors, { ...emb, name: "lm_head.weight" }]);
    loadFrozen(dir, "int8");
    writeSafetensors(file, [...tensors, { ...emb, name: "lm_head.weight", data: emb.data.map((x) => x * 2) }]);
    let refused = "";
    try {
      loadFrozen(dir, "int8");
    } catch (e) {
      refused = (e as Error).message;
    }
    if (!refused.includes("untied")) throw new Error(`an untied head was not refused: ${refused}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
