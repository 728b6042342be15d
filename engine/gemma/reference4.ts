/**
 * An independent plain-TypeScript float64 Gemma 4 text forward, written from docs/GEMMA4.md §Forward
 * with loops (per-layer geometry, K=V, KV sharing, v-norm, plain-weight norms, proportional RoPE,
 * PLE, MoE by explicit top-k sorting, layer_scalar, final soft-cap). For tests only: the ONNX graphs
 * are checked against it.
 */
import type { GemmaConfig } from "./config.ts";
import type { ReferenceLora } from "./reference.ts";

type W = Map<string, ArrayLike<number>>;

function get(w: W, name: string): ArrayLike<number> {
  const t = w.get(name);
  if (!t) throw new Error(`reference4: missing weight ${name}`);
  return t;
}

/** y[M,out] = x[M,in] · Wᵀ, W row-major [out,in] starting at `off`. */
function matT(x: Float64Array, M: number, inF: number, W: ArrayLike<number>, outF: number, off = 0): Float64Array {
  const y = new Float64Array(M * outF);
  for (let m = 0; m < M; m++) {
    for (let o = 0; o < outF; o++) {
      let acc = 0;
      for (let i = 0; i < inF; i++) acc += x[m * inF + i] * W[off + o * inF + i];
      y[m * outF + o] = acc;
    }
  }
  return y;
}

/** Plain-weight RMSNorm (w null: weightless) over rows of `dim`. */
function norm(x: Float64Array, dim: number, w: ArrayLike<number> | null, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / dim; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[r * dim + i] = x[r * dim + i] * inv * (w ? w[i] : 1);
  }
  return y;
}

const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

/** Logits [T*V] for one sequence. */
export function reference4Forward(c: GemmaConfig, w: W, ids: number[], opts: { lora?: ReferenceLora } = {}): Float64Array {
  const T = ids.length, H = c.hiddenSize, nH = c.numHeads, L = c.numLayers, eps = c.rmsNormEps;
  const lin = (x: Float64Array, M: number, path: string, inF: number, outF: number) => {
    const y = matT(x, M, inF, get(w, `${path}.weight`), outF);
    const A = opts.lora?.tensors.get(`base_model.model.${path}.lora_A.weight`);
    if (A && opts.lora) {
      const a = matT(x, M, inF, A, opts.lora.r);
      const b = matT(a, M, opts.lora.r, opts.lora.tensors.get(`base_model.model.${path}.lora_B.weight`)!, outF);
      for (let i = 0; i < y.length; i++) y[i] += opts.lora.scaling * b[i];
    }
    return y;
  };
  const E = get(w, "model.embed_tokens.weight");
  let h: Float64Array = new Float64Array(T * H);
  ids.forEach((id, t) => {
    for (let i = 0; i < H; i++) h[t * H + i] = E[id * H + i] * Math.sqrt(H);
  });

  // Per-layer embeddings: P[t][l] (Dp each).
  let P: Float64Array | null = null;
  if (c.ple) {
    const Dp = c.ple.dim, table = get(w, "model.embed_tokens_per_layer.weight");
    const proj = matT(h, T, H, get(w, "model.per_layer_model_projection.weight"), L * Dp).map((x) => x / Math.sqrt(H));
    const normed = norm(proj, Dp, get(w, "model.per_layer_projection_norm.weight"), eps);
    P = new Float64Array(T * L * Dp);
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < L * Dp; j++) P[t * L * Dp + j] = (normed[t * L * Dp + j] + table[ids[t] * L * Dp + j] * Math.sqrt(Dp)) / Math.SQRT2;
    }
  }

  const kvs = new Map<number, { k: Float64Array; v: Float64Array }>(); // [T, nKv, D] after norm/RoPE
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    const spec = c.layers[l];
    const D = spec.headDim, nKv = spec.kvHeads;
    const full = spec.type === "full";
    const theta = full ? c.ropeThetaFull : c.ropeThetaSliding;
    const rotated = full ? Math.floor((c.ropePartialFull * D) / 2) : D / 2;
    const rope = (x: Float64Array, heads: number) => {
      for (let t = 0; t < T; t++) {
        for (let hh = 0; hh < heads; hh++) {
          const off = (t * heads + hh) * D;
          // Pairs (j, j + D/2); only the first `rotated` frequencies turn, exponents over the whole D.
          for (let j = 0; j < rotated; j++) {
            const ang = (t / theta ** ((2 * j) / D)) / (full ? c.ropeScalingFull : 1);
            const a = x[off + j], b = x[off + j + D / 2];
            x[off + j] = a * Math.cos(ang) - b * Math.sin(ang);
            x[off + j + D / 2] = b * Math.cos(ang) + a * Math.sin(ang);
          }
        }
      }
    };
    const xn = norm(h, H, get(w, `${p}.input_layernorm.weight`), eps);
    const q = norm(lin(xn, T, `${p}.self_attn.q_proj`, H, nH * D), D, get(w, `${p}.self_attn.q_norm.weight`), eps);
    rope(q, nH);
    if (spec.kvSource === l) {
      const kRaw = lin(xn, T, `${p}.self_attn.k_proj`, H, nKv * D);
      const vRaw = spec.kEqV ? kRaw : lin(xn, T, `${p}.self_attn.v_proj`, H, nKv * D);
      const k = norm(kRaw, D, get(w, `${p}.self_attn.k_norm.weight`), eps);
      rope(k, nKv);
      kvs.set(l, { k, v: c.vNorm ? norm(vRaw, D, null, eps) : vRaw });
    }
    const { k, v } = kvs.get(spec.kvSource)!;
    const W = !full && c.slidingWindow ? c.slidingWindow : Infinity;
    const attnOut = new Float64Array(T * nH * D);
    for (let hh = 0; hh < nH; hh++) {
      const kv = Math.floor(hh / (nH / nKv));
      for (let tq = 0; tq < T; tq++) {
        const scores: number[] = [];
        for (let tk = 0; tk <= tq; tk++) {
          let dot = 0;
          for (let j = 0; j < D; j++) dot += q[(tq * nH + hh) * D + j] * k[(tk * nKv + kv) * D + j];
          scores.push(tq - tk >= W ? -Infinity : dot * c.queryPreAttnScalar ** -0.5);
        }
        const mx = Math.max(...scores);
        const ex = scores.map((x) => Math.exp(x - mx));
        const sum = ex.reduce((a, b) => a + b, 0);
        for (let j = 0; j < D; j++) {
          let acc = 0;
          for (let tk = 0; tk <= tq; tk++) acc += (ex[tk] / sum) * v[(tk * nKv + kv) * D + j];
          attnOut[(tq * nH + hh) * D + j] = acc;
        }
      }
    }
    const a = norm(lin(attnOut, T, `${p}.self_attn.o_proj`, nH * D, H), H, get(w, `${p}.post_attention_layernorm.weight`), eps);
    const r = h.map((x, i) => x + a[i]);

    const I = spec.intermediate;
    const mIn = norm(r, H, get(w, `${p}.pre_feedforward_layernorm.weight`), eps);
    const gate = lin(mIn, T, `${p}.mlp.gate_proj`, H, I), up = lin(mIn, T, `${p}.mlp.up_proj`, H, I);
    let m = lin(gate.map((x, i) => gelu(x) * up[i]), T, `${p}.mlp.down_proj`, I, H);
    if (c.moe) m = addMoe(c, w, l, r, norm(m, H, get(w, `${p}.post_feedforward_layernorm_1.weight`), eps));
    const mo = norm(m, H, get(w, `${p}.post_feedforward_layernorm.weight`), eps);
    h = r.map((x, i) => x + mo[i]);

    if (P && c.ple) {
      const Dp = c.ple.dim;
      const g = matT(h, T, H, get(w, `${p}.per_layer_input_gate.weight`), Dp);
      for (let t = 0; t < T; t++) for (let j = 0; j < Dp; j++) g[t * Dp + j] = gelu(g[t * Dp + j]) * P[(t * L + l) * Dp + j];
      const y = norm(matT(g, T, Dp, get(w, `${p}.per_layer_projection.weight`), H), H, get(w, `${p}.post_per_layer_input_norm.weight`), eps);
      h = h.map((x, i) => x + y[i]);
    }
    const s = get(w, `${p}.layer_scalar`)[0];
    h = h.map((x) => x * s);
  }
  h = norm(h, H, get(w, "model.norm.weight"), eps);
  const V = c.vocabSize;
  const logits = matT(h, T, H, E, V);
  if (c.finalSoftcap) { for (let i = 0; i < logits.length; i++) logits[i] = c.finalSoftcap * Math.tanh(logits[i] / c.finalSoftcap); }
  return logits;
}

/** m1 (already normed) + post_feedforward_layernorm_2(Σ over the top-k experts, routed on r). */
function addMoe(c: GemmaConfig, w: W, l: number, r: Float64Array, m1: Float64Array): Float64Array {
  const { experts: E, topK: K, intermediate: I } = c.moe!;
  const H = c.hiddenSize, T = r.length / H, eps = c.rmsNormEps, p = `model.layers.${l}`;
  const scale = get(w, `${p}.router.scale`), pes = get(w, `${p}.router.per_expert_scale`);
  const z = norm(r, H, null, eps).map((x, i) => (x * scale[i % H]) / Math.sqrt(H));
  const logits = matT(z, T, H, get(w, `${p}.router.proj.weight`), E);
  const x2 = norm(r, H, get(w, `${p}.pre_feedforward_layernorm_2.weight`), eps);
  const gu = get(w, `${p}.experts.gate_up_proj`), down = get(w, `${p}.experts.down_proj`);
  const out = new Float64Array(T * H);
  for (let t = 0; t < T; t++) {
    const row = Array.from(logits.subarray(t * E, (t + 1) * E));
    const mx = Math.max(...row);
    const pr = row.map((x) => Math.exp(x - mx));
    const sum = pr.reduce((a, b) => a + b, 0);
    const top = pr.map((x, e) => ({ p: x / sum, e })).sort((a, b) => b.p - a.p).slice(0, K);
    const tot = top.reduce((a, b) => a + b.p, 0);
    const xt = x2.subarray(t * H, (t + 1) * H);
    for (const { p: pe, e } of top) {
      const weight = (pe / tot) * pes[e];
      const g = matT(xt, 1, H, gu, 2 * I, e * 2 * I * H); // [2I]: gate then up
      const act = new Float64Array(I);
      for (let j = 0; j < I; j++) act[j] = gelu(g[j]) * g[I + j];
      const y = matT(act, 1, I, down, H, e * H * I);
      for (let j = 0; j < H; j++) out[t * H + j] += weight * y[j];
    }
  }
  const m2 = norm(out, H, get(w, `${p}.post_feedforward_layernorm_2.weight`), eps);
  return m1.map((x, i) => x + m2[i]);
}
