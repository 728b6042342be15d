/**
 * An independent plain-TypeScript float64 Gemma forward, written straight from docs/GEMMA.md §Forward with
 * loops. For tests only: the ONNX graph is checked against it.
 */
import type { GemmaConfig } from "./config.ts";

type W = Map<string, ArrayLike<number>>;

export interface ReferenceLora {
  scaling: number;
  /** PEFT names → A [r,in] / B [out,r]. */
  tensors: Map<string, ArrayLike<number>>;
  r: number;
}

function get(w: W, name: string): ArrayLike<number> {
  const t = w.get(name);
  if (!t) throw new Error(`reference: missing weight ${name}`);
  return t;
}

/** y[M,out] = x[M,in] · Wᵀ (+ LoRA). */
function linear(
  x: Float64Array,
  M: number,
  inF: number,
  W: ArrayLike<number>,
  outF: number,
  lora?: { A: ArrayLike<number>; B: ArrayLike<number>; r: number; s: number },
): Float64Array {
  const y = new Float64Array(M * outF);
  for (let m = 0; m < M; m++) {
    for (let o = 0; o < outF; o++) {
      let acc = 0;
      for (let i = 0; i < inF; i++) acc += x[m * inF + i] * W[o * inF + i];
      y[m * outF + o] = acc;
    }
    if (lora) {
      const a = new Float64Array(lora.r);
      for (let k = 0; k < lora.r; k++) {
        let acc = 0;
        for (let i = 0; i < inF; i++) acc += x[m * inF + i] * lora.A[k * inF + i];
        a[k] = acc;
      }
      for (let o = 0; o < outF; o++) {
        let acc = 0;
        for (let k = 0; k < lora.r; k++) acc += lora.B[o * lora.r + k] * a[k];
        y[m * outF + o] += lora.s * acc;
      }
    }
  }
  return y;
}

function rmsNorm(x: Float64Array, rows: number, dim: number, w: ArrayLike<number>, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[r * dim + i] = x[r * dim + i] * inv * (1 + w[i]);
  }
  return y;
}

const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

/** Logits [T*V] for one sequence. */
export function referenceForward(c: GemmaConfig, w: W, ids: number[], opts: { lora?: ReferenceLora } = {}): Float64Array {
  const T = ids.length, H = c.hiddenSize, D = c.headDim, nH = c.numHeads, nKv = c.numKvHeads, I = c.intermediateSize;
  const E = get(w, "model.embed_tokens.weight");
  let h: Float64Array = new Float64Array(T * H);
  const scale = Math.sqrt(H);
  ids.forEach((id, t) => {
    for (let i = 0; i < H; i++) h[t * H + i] = E[id * H + i] * scale;
  });
  const lin = (x: Float64Array, M: number, layer: number, name: string, inF: number, outF: number) => {
    const group = ["gate_proj", "up_proj", "down_proj"].includes(name) ? "mlp" : "self_attn";
    const path = `model.layers.${layer}.${group}.${name}`;
    const A = opts.lora?.tensors.get(`base_model.model.${path}.lora_A.weight`);
    const lora = A && opts.lora ? { A, B: opts.lora.tensors.get(`base_model.model.${path}.lora_B.weight`)!, r: opts.lora.r, s: opts.lora.scaling } : undefined;
    return linear(x, M, inF, get(w, `${path}.weight`), outF, lora);
  };
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    const type = c.layerTypes[l];
    const xn = rmsNorm(h, T, H, get(w, `${p}.input_layernorm.weight`), c.rmsNormEps);
    let q = lin(xn, T, l, "q_proj", H, nH * D);
    let k = lin(xn, T, l, "k_proj", H, nKv * D);
    const v = lin(xn, T, l, "v_proj", H, nKv * D);
    if (c.generation === 3) {
      q = rmsNorm(q, T * nH, D, get(w, `${p}.self_attn.q_norm.weight`), c.rmsNormEps);
      k = rmsNorm(k, T * nKv, D, get(w, `${p}.self_attn.k_norm.weight`), c.rmsNormEps);
    }
    const base = type === "full" ? c.ropeThetaFull : c.ropeThetaSliding;
    const factor = type === "full" ? c.ropeScalingFull : 1;
    const ropeInPlace = (x: Float64Array, heads: number) => {
      for (let t = 0; t < T; t++) {
        for (let hh = 0; hh < heads; hh++) {
          const off = (t * heads + hh) * D;
          for (let j = 0; j < D / 2; j++) {
            const ang = (t * (1 / base ** ((2 * j) / D))) / factor;
            const a = x[off + j], b = x[off + j + D / 2];
            x[off + j] = a * Math.cos(ang) - b * Math.sin(ang);
            x[off + j + D / 2] = b * Math.cos(ang) + a * Math.sin(ang);
          }
        }
      }
    };
    ropeInPlace(q, nH);
    ropeInPlace(k, nKv);
    const s = (c.generation === 1 ? D : c.queryPreAttnScalar) ** -0.5;
    const W = type === "sliding" && c.slidingWindow ? c.slidingWindow : Infinity;
    const attnOut = new Float64Array(T * nH * D);
    for (let hh = 0; hh < nH; hh++) {
      const kv = Math.floor(hh / (nH / nKv));
      for (let tq = 0; tq < T; tq++) {
        const scores: number[] = [];
        for (let tk = 0; tk <= tq; tk++) {
          if (tq - tk >= W) {
            scores.push(-Infinity);
            continue;
          }
          let dot = 0;
          for (let j = 0; j < D; j++) dot += q[(tq * nH + hh) * D + j] * k[(tk * nKv + kv) * D + j];
          let sc = dot * s;
          if (c.attnSoftcap) sc = c.attnSoftcap * Math.tanh(sc / c.attnSoftcap);
          scores.push(sc);
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
    let a = lin(attnOut, T, l, "o_proj", nH * D, H);
    if (c.generation >= 2) a = rmsNorm(a, T, H, get(w, `${p}.post_attention_layernorm.weight`), c.rmsNormEps);
    h = h.map((x, i) => x + a[i]);
    const mIn = rmsNorm(h, T, H, get(w, `${p}.${c.generation >= 2 ? "pre_feedforward_layernorm" : "post_attention_layernorm"}.weight`), c.rmsNormEps);
    const gate = lin(mIn, T, l, "gate_proj", H, I);
    const up = lin(mIn, T, l, "up_proj", H, I);
    const act = gate.map((x, i) => gelu(x) * up[i]);
    let m = lin(act, T, l, "down_proj", I, H);
    if (c.generation >= 2) m = rmsNorm(m, T, H, get(w, `${p}.post_feedforward_layernorm.weight`), c.rmsNormEps);
    h = h.map((x, i) => x + m[i]);
  }
  h = rmsNorm(h, T, H, get(w, "model.norm.weight"), c.rmsNormEps);
  const V = c.vocabSize;
  const logits = new Float64Array(T * V);
  for (let t = 0; t < T; t++) {
    for (let vv = 0; vv < V; vv++) {
      let acc = 0;
      for (let i = 0; i < H; i++) acc += h[t * H + i] * E[vv * H + i];
      if (c.finalSoftcap) acc = c.finalSoftcap * Math.tanh(acc / c.finalSoftcap);
      logits[t * V + vv] = acc;
    }
  }
  return logits;
}

/** token_nll[i] = −log p(ids[i+1] | ids[..i]). */
export function referenceTokenNll(c: GemmaConfig, w: W, ids: number[], opts: { lora?: ReferenceLora } = {}): number[] {
  const logits = referenceForward(c, w, ids, opts);
  const V = c.vocabSize;
  const out: number[] = [];
  for (let t = 0; t + 1 < ids.length; t++) {
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, logits[t * V + v]);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(logits[t * V + v] - mx);
    out.push(-(logits[t * V + ids[t + 1]] - mx - Math.log(s)));
  }
  return out;
}
