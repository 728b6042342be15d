/**
 * Splits one traced graph (forward, then the backward that autodiff appended) into two graphs run as
 * separate sessions: the forward graph also outputs every value the backward consumes ("saved"
 * activations, as autograd keeps them), and the backward graph takes those as inputs.
 *
 * This is what lets something run between the two halves: the engine's LM head runs over the
 * vocabulary in chunks between the body's forward and backward, so no [P,V] tensor ever exists whole.
 */
import { type ConstTensor, Graph, type Value } from "./builder.ts";

/** The graph computing just `outputs` from g's inputs: only the nodes they need, nothing saved. */
export function pruneGraph(g: Graph, outputs: Value[]): Graph {
  return splitGraph(g, 0, [], outputs).backward;
}

export interface SplitGraph {
  forward: Graph;
  backward: Graph;
  /** Values the forward graph outputs for the backward one (same names on both sides). */
  saved: Value[];
}

/**
 * `cut` is the tape length when the forward was complete: nodes before it are forward, the rest
 * (autodiff's) backward. Each half keeps only the nodes its outputs need.
 */
export function splitGraph(
  g: Graph,
  cut: number,
  forwardOutputs: Value[],
  backwardOutputs: Value[],
  recomputeFrom: ReadonlySet<string> = new Set(),
): SplitGraph {
  const producer = new Map<number, number>();
  g.nodes.forEach((n, i) => n.outputs.forEach((v) => producer.set(v.id, i)));
  const consts = new Map<number, [Value, ConstTensor]>([...g.initializers].map(([v, t]) => [v.id, [v, t]]));

  // Forward values made only from `recomputeFrom` inputs (weights) and constants, such as a frozen
  // weight dequantized or 1 + w of a norm, are recomputed in the backward, never saved: saving would
  // copy every frozen weight out in float32.
  const inputOnly = new Set<number>();
  const inputIds = new Set(g.inputs.filter((v) => recomputeFrom.has(v.name)).map((v) => v.id));
  g.nodes.forEach((n, i) => {
    if (i >= cut) return;
    if (n.inputs.every((x) => !x || inputIds.has(x.id) || consts.has(x.id) || inputOnly.has(x.id))) { for (const y of n.outputs) inputOnly.add(y.id); }
  });

  // Backward: walk back from its outputs; other forward-made values it reads become saved.
  const bwdNodes = new Set<number>();
  const saved = new Map<number, Value>();
  const want: Value[] = [...backwardOutputs];
  while (want.length) {
    const v = want.pop()!;
    const p = producer.get(v.id);
    if (p === undefined) continue;
    if (p < cut && !inputOnly.has(v.id)) {
      saved.set(v.id, v);
      continue;
    }
    if (bwdNodes.has(p)) continue;
    bwdNodes.add(p);
    for (const x of g.nodes[p].inputs) if (x) want.push(x);
  }
  const fwdNodes = new Set<number>();
  const wantF: Value[] = [...forwardOutputs, ...saved.values()];
  while (wantF.length) {
    const v = wantF.pop()!;
    const p = producer.get(v.id);
    if (p === undefined || fwdNodes.has(p)) continue;
    if (p >= cut) throw new Error(`Forward output "${v.name}" is computed by the backward part`);
    fwdNodes.add(p);
    for (const x of g.nodes[p].inputs) if (x) wantF.push(x);
  }

  const part = (nodes: Set<number>, extraInputs: Value[], outputs: Value[]) => subgraph(g, [...nodes], extraInputs, outputs, consts);
  // Graph inputs and constants have no producer, so only node outputs are ever saved.
  const savedList = [...saved.values()];
  return {
    forward: part(fwdNodes, [], [...forwardOutputs, ...savedList.filter((v) => !forwardOutputs.includes(v))]),
    backward: part(bwdNodes, savedList, backwardOutputs),
    saved: savedList,
  };
}

/**
 * The graph of g's nodes `nodes` (tape indices, run in tape order): g's inputs and constants they read,
 * then `extraInputs` (values made outside it), computing `outputs`.
 */
function subgraph(g: Graph, nodes: number[], extraInputs: Value[], outputs: Value[], consts: Map<number, [Value, ConstTensor]>): Graph {
  const sub = new Graph(g.float);
  const used = new Set<number>();
  for (const i of [...nodes].sort((a, b) => a - b)) {
    const n = g.nodes[i];
    sub.nodes.push(n);
    for (const x of n.inputs) if (x) used.add(x.id);
  }
  for (const v of outputs) used.add(v.id);
  for (const v of g.inputs) if (used.has(v.id)) sub.inputs.push(v);
  sub.inputs.push(...extraInputs);
  for (const id of used) {
    const c = consts.get(id);
    if (c) sub.initializers.set(c[0], c[1]);
  }
  sub.outputs.push(...outputs);
  return sub;
}

export interface Stage {
  graph: Graph;
  /** Values this stage takes from earlier stages (by name; they are among the earlier stages' outputs). */
  carried: string[];
}

/**
 * Cuts the part of `g` that computes `outputs` into sequential stages, run one after another as separate
 * sessions: stage k holds the needed nodes with tape index in [cuts[k-1], cuts[k]) (stage 0 from 0, the last
 * to the end). Each stage outputs the graph outputs it computes and the values later stages read; it takes
 * g's inputs it reads and the values it reads from earlier stages. An output's Identity (Graph.output)
 * goes with the value it renames, so a result is not carried through the stages after it.
 *
 * Why: ORT's session creation grows faster than linearly with a graph's node count (gemma-3-270m's
 * 18-layer backward, 8334 nodes: 7.5–9.8 s; 4 layers, 1810 nodes: 0.3 s; notes/PERF.md), so several
 * small sessions are created in a fraction of the time of one big one, and they compute the same values.
 */
export function stageSplit(g: Graph, outputs: Value[], cuts: number[]): Stage[] {
  const producer = new Map<number, number>();
  g.nodes.forEach((n, i) => n.outputs.forEach((v) => producer.set(v.id, i)));
  const consts = new Map<number, [Value, ConstTensor]>([...g.initializers].map(([v, t]) => [v.id, [v, t]]));
  const needed = new Set<number>();
  const want: Value[] = [...outputs];
  while (want.length) {
    const p = producer.get(want.pop()!.id);
    if (p === undefined || needed.has(p)) continue;
    needed.add(p);
    for (const x of g.nodes[p].inputs) if (x) want.push(x);
  }
  const bounds = [...cuts].sort((a, b) => a - b);
  const stageOfIndex = (i: number) => bounds.filter((c) => c <= i).length;
  const outIds = new Set(outputs.map((v) => v.id));
  const stageOf = new Map<number, number>();
  for (const i of [...needed].sort((a, b) => a - b)) {
    const n = g.nodes[i];
    const src = n.op === "Identity" && n.outputs.some((v) => outIds.has(v.id)) && n.inputs[0] ? producer.get(n.inputs[0].id) : undefined;
    stageOf.set(i, src !== undefined ? stageOf.get(src)! : stageOfIndex(i));
  }
  const count = Math.max(...stageOf.values()) + 1;
  // Where each value made by a node is read: the stages of its readers.
  const readBy = new Map<number, Set<number>>();
  for (const i of needed) for (const x of g.nodes[i].inputs) if (x) (readBy.get(x.id) ?? readBy.set(x.id, new Set()).get(x.id)!).add(stageOf.get(i)!);
  const stages: Stage[] = [];
  for (let k = 0; k < count; k++) {
    const nodes = [...needed].filter((i) => stageOf.get(i) === k).sort((a, b) => a - b);
    if (!nodes.length) continue;
    // Values read here that an earlier stage made (graph inputs and constants have no producer).
    const carried = new Map<number, Value>();
    for (const i of nodes) {
      for (const x of g.nodes[i].inputs) if (x && producer.has(x.id) && stageOf.get(producer.get(x.id)!)! < k) carried.set(x.id, x);
    }
    const outs = nodes.flatMap((i) => g.nodes[i].outputs.filter((y) => outIds.has(y.id) || [...(readBy.get(y.id) ?? [])].some((s) => s > k)));
    stages.push({ graph: subgraph(g, nodes, [...carried.values()], outs, consts), carried: [...carried.values()].map((v) => v.name) });
  }
  return stages;
}
