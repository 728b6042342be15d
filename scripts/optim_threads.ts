// The optimizer on one thread vs two, alternated on one 64M-element tensor: `deno run -A scripts/optim_threads.ts`.
import { AdamW } from "../engine/optim.ts";
const N = 64 << 20;
const mk = () => {
  const a = new Float32Array(N);
  for (let i = 0; i < N; i += 1) a[i] = Math.sin(i) * 0.01;
  return a;
};
const pa = new Map([["w", { shape: [N], data: mk() }]]), pb = new Map([["w", { shape: [N], data: mk() }]]);
const g = new Map([["w", mk()]]);
const two = new AdamW(pa, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 }),
  one = new AdamW(pb, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 }, { parallel: false });
while (!two.parallel) await new Promise((r) => setTimeout(r, 20));
one.update(g, 1e-3);
two.update(g, 1e-3); // first touch
const row: string[] = [];
for (let k = 0; k < 3; k++) {
  let t = performance.now();
  two.update(g, 1e-3);
  const a2 = performance.now() - t;
  t = performance.now();
  one.update(g, 1e-3);
  const a1 = performance.now() - t;
  t = performance.now();
  two.gradNorm(g);
  const n2 = performance.now() - t;
  t = performance.now();
  one.gradNorm(g);
  const n1 = performance.now() - t;
  row.push(`adamw two ${a2.toFixed(0)} one ${a1.toFixed(0)} | norm two ${n2.toFixed(0)} one ${n1.toFixed(0)} | load ${Deno.loadavg()[0]}`);
}
const t = performance.now();
let s = 0;
const x = g.get("w")!;
for (let i = 0; i < N; i++) s += x[i] * x[i];
const old = performance.now() - t;
console.log(row.join("\n"), `\nold single-chain norm ${old.toFixed(0)} ms`, Object.is(pa.get("w")!.data[12345], pb.get("w")!.data[12345]));
