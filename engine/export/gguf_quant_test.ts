/** Block formats round-trip within their resolution; layouts match ggml's for hand-checked blocks. */
import { decode, encode, GGML, type GgmlType, LAYOUT } from "./gguf_quant.ts";
import { rng } from "../lora.ts";

function gaussian(n: number, seed: number): Float32Array {
  const next = rng(seed), x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sqrt(-2 * Math.log(Math.max(next(), 1e-12))) * Math.cos(2 * Math.PI * next());
  return x;
}

function relRms(x: Float32Array, y: Float32Array): number {
  let e = 0, s = 0;
  for (let i = 0; i < x.length; i++) (e += (x[i] - y[i]) ** 2, s += x[i] ** 2);
  return Math.sqrt(e / s);
}

// Relative RMS error on N(0,1) data, about 1.5× what each format measured here (f16 2.1e-4, bf16
// 1.7e-3, q8_0 5.4e-3, q6_K 1.8e-2, q5_0 4.2e-2, q4_K 7.2e-2, q4_0 8.7e-2).
const BOUNDS: [GgmlType, number][] = [
  [GGML.F16, 3.5e-4],
  [GGML.BF16, 2.5e-3],
  [GGML.Q8_0, 8e-3],
  [GGML.Q6_K, 2.7e-2],
  [GGML.Q5_0, 6.5e-2],
  [GGML.Q4_K, 1.1e-1],
  [GGML.Q4_0, 1.3e-1],
];

Deno.test("gguf quant: every format round-trips within its resolution, sizes as ggml's blocks", () => {
  const x = gaussian(4096, 1);
  const errs: Record<string, number> = {};
  for (const [t, bound] of BOUNDS) {
    const bytes = encode(t, x);
    if (bytes.length !== (x.length / LAYOUT[t].block) * LAYOUT[t].bytes) throw new Error(`${LAYOUT[t].name}: ${bytes.length} bytes`);
    const e = relRms(x, decode(t, bytes, x.length));
    errs[LAYOUT[t].name] = e;
    if (!(e < bound)) throw new Error(`${LAYOUT[t].name}: relative RMS error ${e} exceeds ${bound}`);
  }
  // The k-quants' fitted scales and mins must beat the plain 4/5/8-bit rounding they replace.
  if (!(errs.q4_K < errs.q4_0)) throw new Error(`q4_K (${errs.q4_K}) is not better than q4_0 (${errs.q4_0})`);
  if (!(errs.q6_K < errs.q5_0)) throw new Error(`q6_K (${errs.q6_K}) is not better than q5_0 (${errs.q5_0})`);
});

Deno.test("gguf quant: q8_0 and q4_0 blocks laid out as ggml's reference quantizer writes them", () => {
  const x = new Float32Array(32).map((_, i) => i - 16); // -16 … 15
  const q8 = encode(GGML.Q8_0, x), dv = new DataView(q8.buffer);
  // d = 16/127 as f16 (0x3008 ≈ 0.12598), q = round(x·127/16).
  if (dv.getUint16(0, true) !== 0x3008) throw new Error(`q8_0 d bits ${dv.getUint16(0, true).toString(16)}`);
  if (dv.getInt8(2) !== -127 || dv.getInt8(2 + 31) !== Math.round(15 * 127 / 16)) throw new Error("q8_0 values");
  const q4 = encode(GGML.Q4_0, x), d4 = new DataView(q4.buffer);
  // The signed extreme -16 sets d = -16/-8 = 2; q = x/2 + 8: element 0 → 0, element 16 (x=0) → 8 in the high nibble.
  if (d4.getUint16(0, true) !== 0x4000) throw new Error(`q4_0 d bits ${d4.getUint16(0, true).toString(16)}`);
  if (d4.getUint8(2) !== (0 | (8 << 4))) throw new Error(`q4_0 first byte ${d4.getUint8(2)}`);
  const back = decode(GGML.Q4_0, q4, 32);
  if (back[0] !== -16 || back[16] !== 0 || back[31] !== 14) throw new Error(`q4_0 decode ${back.slice(0, 4)} … ${back[31]}`);
});

Deno.test("gguf quant: a zero block stays zero in every format", () => {
  const z = new Float32Array(256);
  for (const [t] of BOUNDS) if (decode(t, encode(t, z), 256).some((v) => v !== 0)) throw new Error(`${LAYOUT[t].name} of zeros is not zero`);
});
