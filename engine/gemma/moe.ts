/**
 * Gemma 4 26B-A4B's mixture of experts beside the dense MLP (docs/GEMMA4.md §MoE). Legend as in
 * model.ts; E = experts, K = experts per token, Ie = expert width.
 *
 * r [N,H] (the stream after the attention add) → router: z = rms(r)·scale·H^-½, p = softmax(z·Wᵀ)
 * [N,E]; the top K of p renormalised to sum 1, times per_expert_scale; experts on
 * pre_feedforward_layernorm_2(r): down(gelu(gate) ⊙ up) with gate|up = the halves of gate_up_proj;
 * their weighted sum through post_feedforward_layernorm_2.
 *
 * Every expert runs on every token and unselected ones get weight 0 (a dense formulation: the same
 * values and gradients as routing, E/K times the expert compute; fine for tests and small models,
 * not for the real 128-expert shape). The selection is a mask compared against the K-th largest
 * probability; it carries no gradient, as in transformers (top-k under no_grad).
 */
import type { Value } from "../onnx/builder.ts";
import * as o from "../onnx/ops.ts";
import { type Ctx, frozenMatMul, geluTanh, rmsNorm } from "./model.ts";

/** The experts' contribution m2 [N,H] of layer i, already through post_feedforward_layernorm_2. */
export function moeBlock(ctx: Ctx, r: Value, i: number): Value {
  const { g, c } = ctx;
  const { experts: E, topK: K, intermediate: Ie } = c.moe!;
  const N = ctx.N, H = c.hiddenSize;
  const p = `model.layers.${i}`;
  const w = (name: string) => ctx.w.get(`${p}.${name}`)!;
  const f = (x: number) => (g.float === "float32" ? Math.fround(x) : x);

  // Router.
  const z = o.scale(g, o.mul(g, rmsNorm(g, r, null, c.rmsNormEps), w("router.scale")), f(H ** -0.5)); // [N,H]
  const probs = o.softmax(g, frozenMatMul(ctx, z, `${p}.router.proj.weight`, [E, H]), -1); // [N,E]
  const [kth] = g.node("TopK", [probs, g.ints([K])], [{ shape: [N, K], dtype: probs.dtype }, { shape: [N, K], dtype: "int64" }], { axis: -1, largest: 1, sorted: 1 });
  const last = o.split(g, kth, [K - 1, 1], 1)[1]; // [N,1] the K-th largest
  const picked = g.node("GreaterOrEqual", [probs, last], [{ shape: [N, E], dtype: "bool" }])[0];
  const sel = o.mul(g, probs, o.cast(g, picked, g.float)); // [N,E], zero off the top K
  const weights = o.mul(g, o.div(g, sel, o.reduceSum(g, sel, [1], true)), w("router.per_expert_scale")); // [N,E]

  // Experts, all at once: [N,H] × [E,H,2Ie] → [E,N,2Ie].
  const x2 = rmsNorm(g, r, w("pre_feedforward_layernorm_2.weight"), c.rmsNormEps, c.normOffset);
  const gu = o.matmul(g, x2, o.transpose(g, w("experts.gate_up_proj"), [0, 2, 1]));
  const [gate, up] = o.split(g, gu, [Ie, Ie], 2);
  const y = o.matmul(g, o.mul(g, geluTanh(g, gate), up), o.transpose(g, w("experts.down_proj"), [0, 2, 1])); // [E,N,H]
  const mixed = o.reduceSum(g, o.mul(g, y, o.reshape(g, o.transpose(g, weights, [1, 0]), [E, N, 1])), [0], false); // [N,H]
  return rmsNorm(g, mixed, w("post_feedforward_layernorm_2.weight"), c.rmsNormEps, c.normOffset);
}
