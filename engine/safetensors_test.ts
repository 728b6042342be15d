/** safetensors: F32/BF16/F16 by header dtype, 8-byte aligned header with format pt, sharded index. */
import * as fs from "node:fs";
import * as path from "node:path";
import { floatToBf16, listCheckpoint, readHeader, readTensorF32, writeSafetensors } from "./safetensors.ts";

Deno.test("write then read F32, BF16 and F16; header aligned to 8 with format pt", () => {
  const dir = fs.mkdtempSync("/tmp/gt-st-");
  const file = path.join(dir, "model.safetensors");
  const data = Float32Array.from([1, -2.5, 0.1, 3e-5, 65504, -0]);
  writeSafetensors(file, [
    { name: "a", dtype: "F32", shape: [6], data },
    { name: "b", dtype: "BF16", shape: [2, 3], data },
    { name: "c", dtype: "F16", shape: [3, 2], data },
  ]);
  const bytes = fs.readFileSync(file);
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  if (n % 8 !== 0) throw new Error(`header length ${n} is not a multiple of 8`);
  const { entries, metadata } = readHeader(file);
  if (metadata.format !== "pt") throw new Error("no format pt");
  const [a, b, c] = entries.map(readTensorF32);
  for (let i = 0; i < 6; i++) {
    if (a[i] !== data[i]) throw new Error(`F32 ${i}`);
    if (Math.abs(b[i] - data[i]) > Math.abs(data[i]) / 128 + 1e-30) throw new Error(`BF16 ${i}: ${b[i]} vs ${data[i]}`);
    if (Math.abs(c[i] - data[i]) > Math.abs(data[i]) / 1024 + 1e-7) throw new Error(`F16 ${i}: ${c[i]} vs ${data[i]}`);
  }
  // Round-to-nearest-even: 1 + 2^-8 is exactly halfway between bf16 1 and 1+2^-7, so it rounds to 1.
  if (floatToBf16(1 + 2 ** -8) !== 0x3f80) throw new Error("bf16 rounding is not to nearest even");
});

Deno.test("sharded checkpoints via model.safetensors.index.json; a missing shard is named", () => {
  const dir = fs.mkdtempSync("/tmp/gt-st-");
  writeSafetensors(path.join(dir, "model-00001-of-00002.safetensors"), [{ name: "x", dtype: "F32", shape: [2], data: Float32Array.from([1, 2]) }]);
  writeSafetensors(path.join(dir, "model-00002-of-00002.safetensors"), [{ name: "y", dtype: "BF16", shape: [1], data: Float32Array.from([3]) }]);
  fs.writeFileSync(
    path.join(dir, "model.safetensors.index.json"),
    JSON.stringify({ metadata: { total_size: 10 }, weight_map: { x: "model-00001-of-00002.safetensors", y: "model-00002-of-00002.safetensors" } }),
  );
  const all = listCheckpoint(dir);
  if (readTensorF32(all.get("y")!)[0] !== 3 || readTensorF32(all.get("x")!)[1] !== 2) throw new Error("shards not read");
  fs.unlinkSync(path.join(dir, "model-00002-of-00002.safetensors"));
  let msg = "";
  try {
    listCheckpoint(dir);
  } catch (e) {
    msg = (e as Error).message;
  }
  if (!msg.includes("model-00002-of-00002.safetensors")) throw new Error(`missing shard not named: ${msg}`);
});
