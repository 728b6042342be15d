/**
 * Gemma 4 26B-A4B's mixture of experts beside the dense MLP (docs/GEMMA4.md §MoE). Legend as in
 * model.ts; E = experts, K = experts per token, Ie = expert width, M_e = tokens routed to expert e.
 *
 * r [N,H] (the stream after the attention add) → router: z = rms(r)·scale·H^-½, p = softmax(z·Wᵀ)
 * [N,E]; the top K of p renormalised to sum 1, times per_expert_scale; experts on
 * pre_feedforward_layernorm_2(r): down(gelu(gate) ⊙ up) with gate|up = the halves of gate_up_proj;
 * their weighted sum through post_feedforward_layernorm_2.
 *
 * Only the routed experts run, on only their tokens (N·K token-expert products, not N·E). Per layer
 * the routing is a stable partition of each expert's column of the top-K mask: routed tokens first,
 * in token order (CumSum ranks, one ScatterElements). Per expert e, a Slice of that list gives its
 * M_e tokens (a data-dependent dimension), a Slice of [e] of length min(M_e, 1) picks its weights (so an
 * expert without tokens copies and multiplies nothing, as in decoding, where most experts are idle),
 * and its weighted output is scatter-added back to those tokens. Indices are int32 and every op has
 * a kernel on ORT's WebGPU provider (no NonZero, no int64 arithmetic; docs/DEVICES.md). The top-K
 * selection carries no gradient, as in transformers (top-k under no_grad); gradients flow through
 * the routing weights and through the experts' inputs (the experts themselves are frozen).
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
  const i32 = (xs: number[]) => g.constant(Int32Array.from(xs), [xs.length], "int32");

  // Router.
  const z = o.scale(g, o.mul(g, rmsNorm(g, r, null, c.rmsNormEps), w("router.scale")), f(H ** -0.5)); // [N,H]
  const probs = o.softmax(g, frozenMatMul(ctx, z, `${p}.router.proj.weight`, [E, H]), -1); // [N,E]
  const [kth] = g.node("TopK", [probs, g.ints([K])], [{ shape: [N, K], dtype: probs.dtype }, { shape: [N, K], dtype: "int64" }], { axis: -1, largest: 1, sorted: 1 });
  const last = o.split(g, kth, [K - 1, 1], 1)[1]; // [N,1] the K-th largest
  const picked = g.node("GreaterOrEqual", [probs, last], [{ shape: [N, E], dtype: "bool" }])[0];
  const routed = o.cast(g, picked, g.float); // [N,E] 1 where token n goes to expert e
  const sel = o.mul(g, probs, routed); // [N,E], zero off the top K
  const weights = o.mul(g, o.div(g, sel, o.reduceSum(g, sel, [1], true)), w("router.per_expert_scale")); // [N,E]

  // Routing: column e of `order` lists expert e's tokens first (in token order), then the others.
  const cumsum = (x: Value) => g.node("CumSum", [x, g.constant(Int32Array.of(0), [], "int32")], [{ shape: x.shape, dtype: x.dtype }], { exclusive: 1 })[0];
  const ones = o.expand(g, g.scalar(1), [N, E]);
  const count = o.reduceSum(g, routed, [0], true); // [1,E] M_e
  const rankRouted = cumsum(routed); // [N,E] among expert e's tokens
  const rankOther = o.add(g, count, cumsum(o.sub(g, ones, routed)));
  const dest = o.cast(g, g.node("Where", [picked, rankRouted, rankOther], [{ shape: [N, E], dtype: g.float }])[0], "int32");
  const tokenIndex = cumsum(ones); // [N,E] n
  const order = g.node("ScatterElements", [o.zeros(g, [N, E]), dest, tokenIndex], [{ shape: [N, E], dtype: g.float }], { axis: 0 })[0];
  const orderT = o.transpose(g, order, [1, 0]); // [E,N]
  const countI = o.cast(g, o.reshape(g, count, [E]), "int32");
  const usedI = o.cast(g, o.reshape(g, g.node("Clip", [count, g.scalar(0), g.scalar(1)], [{ shape: [1, E], dtype: g.float }])[0], [E]), "int32"); // min(M_e, 1)

  const x2 = rmsNorm(g, r, w("pre_feedforward_layernorm_2.weight"), c.rmsNormEps, c.normOffset);
  const gateUp = w("experts.gate_up_proj"), down = w("experts.down_proj"); // [E,2Ie,H], [E,H,Ie]
  let acc = o.zeros(g, [H, N]); // Σ over experts, transposed: each expert adds columns
  for (let e = 0; e < E; e++) {
    const M = `moe${i}_${e}`, L = `moe${i}_${e}_used`;
    const ends = o.concat(g, [i32([e + 1]), o.gather(g, countI, i32([e]))], 0);
    const row = g.node("Slice", [orderT, i32([e, 0]), ends, i32([0, 1])], [{ shape: [1, M], dtype: g.float }])[0];
    const tok = o.cast(g, o.reshape(g, row, [M]), "int32"); // [M_e] expert e's tokens
    g.defineDim(M, tok, 0);
    const expert = g.node("Slice", [i32([e]), i32([0]), o.gather(g, usedI, i32([e])), i32([0])], [{ shape: [L], dtype: "int32" }])[0]; // [] or [e]
    g.defineDim(L, expert, 0);
    const xT = o.transpose(g, o.gather(g, x2, tok), [1, 0]); // [H,M_e]
    const gu = o.matmul(g, o.gather(g, gateUp, expert), xT); // [L,2Ie,M_e]
    const [gate, up] = o.split(g, gu, [Ie, Ie], 1);
    const y = o.reduceSum(g, o.matmul(g, o.gather(g, down, expert), o.mul(g, geluTanh(g, gate), up)), [0], false); // [H,M_e]
    // The routing weight of each of its tokens: their rows of `weights`, column e (a one-hot product).
    const onehot = g.constant(Array.from({ length: E }, (_, k) => (k === e ? 1 : 0)), [E, 1]);
    const wt = o.transpose(g, o.matmul(g, o.gather(g, weights, tok), onehot), [1, 0]); // [1,M_e]
    acc = o.scatterElementsAdd(g, acc, o.expand(g, o.reshape(g, tok, [1, M]), [H, M]), o.mul(g, y, wt), 1);
  }
  const mixed = o.transpose(g, acc, [1, 0]); // [N,H]
  return rmsNorm(g, mixed, w("post_feedforward_layernorm_2.weight"), c.rmsNormEps, c.normOffset);
}
