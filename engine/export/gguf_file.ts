/**
 * The GGUF v3 container (docs/GGUF.md §1): a header, typed metadata key/values, tensor infos, then
 * the tensor data, each tensor at an offset aligned to `general.alignment` (32). Tensors are
 * produced one at a time by a callback, so a file larger than memory is never held whole.
 */
import * as fs from "node:fs";

/** GGUF metadata value types (gguf.md "gguf_metadata_value_type"). */
const T = { U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9, U64: 10, I64: 11, F64: 12 } as const;

/** A metadata value with its GGUF type made explicit where a JS number would be ambiguous. */
export type MetaValue =
  | { u32: number }
  | { i32: number }
  | { f32: number }
  | { bool: boolean }
  | { str: string }
  | { strs: string[] }
  | { f32s: Float32Array | number[] }
  | { i32s: Int32Array | number[] }
  | { bools: boolean[] };

export interface TensorInfo {
  name: string;
  /** ggml dims, fastest-varying first: a row-major [out, in] matrix is [in, out]. */
  ne: number[];
  /** ggml_type id (engine/export/gguf_quant.ts GGML). */
  type: number;
  byteLength: number;
}

export const ALIGNMENT = 32;

const enc = new TextEncoder();

/** Grows a byte buffer while the header is encoded. */
class Bytes {
  private buf = new Uint8Array(1 << 16);
  private dv = new DataView(this.buf.buffer);
  length = 0;
  private room(n: number) {
    if (this.length + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.dv = new DataView(next.buffer);
  }
  u8(v: number) {
    this.room(1);
    this.dv.setUint8(this.length++, v);
  }
  u32(v: number) {
    this.room(4);
    this.dv.setUint32(this.length, v, true);
    this.length += 4;
  }
  i32(v: number) {
    this.room(4);
    this.dv.setInt32(this.length, v, true);
    this.length += 4;
  }
  f32(v: number) {
    this.room(4);
    this.dv.setFloat32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number) {
    this.room(8);
    this.dv.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  str(s: string) {
    const b = enc.encode(s);
    this.u64(b.length);
    this.room(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  pad(to: number) {
    while (this.length % to) this.u8(0);
  }
  bytes() {
    return this.buf.subarray(0, this.length);
  }
}

function writeValue(b: Bytes, v: MetaValue) {
  if ("u32" in v) (b.u32(T.U32), b.u32(v.u32));
  else if ("i32" in v) (b.u32(T.I32), b.i32(v.i32));
  else if ("f32" in v) (b.u32(T.F32), b.f32(v.f32));
  else if ("bool" in v) (b.u32(T.BOOL), b.u8(v.bool ? 1 : 0));
  else if ("str" in v) (b.u32(T.STRING), b.str(v.str));
  else {
    b.u32(T.ARRAY);
    if ("strs" in v) (b.u32(T.STRING), b.u64(v.strs.length), v.strs.forEach((s) => b.str(s)));
    else if ("f32s" in v) (b.u32(T.F32), b.u64(v.f32s.length), v.f32s.forEach((x) => b.f32(x)));
    else if ("i32s" in v) (b.u32(T.I32), b.u64(v.i32s.length), v.i32s.forEach((x) => b.i32(x)));
    else (b.u32(T.BOOL), b.u64(v.bools.length), v.bools.forEach((x) => b.u8(x ? 1 : 0)));
  }
}

/** Encodes everything before the data section (padded to the alignment) and each tensor's offset. */
export function encodeHeader(meta: [string, MetaValue][], tensors: TensorInfo[]): { header: Uint8Array; offsets: number[]; dataBytes: number } {
  const b = new Bytes();
  b.u32(0x46554747); // "GGUF" little-endian
  b.u32(3);
  b.u64(tensors.length);
  b.u64(meta.length);
  for (const [k, v] of meta) (b.str(k), writeValue(b, v));
  const offsets: number[] = [];
  let off = 0;
  for (const t of tensors) {
    b.str(t.name);
    b.u32(t.ne.length);
    for (const d of t.ne) b.u64(d);
    b.u32(t.type);
    b.u64(off);
    offsets.push(off);
    off += Math.ceil(t.byteLength / ALIGNMENT) * ALIGNMENT;
  }
  b.pad(ALIGNMENT);
  return { header: b.bytes(), offsets, dataBytes: off };
}

/**
 * Writes a GGUF file: `data(i)` returns tensor i's bytes (exactly tensors[i].byteLength). Written to
 * `<file>.partial` and renamed, so an interrupted export never leaves a file that looks complete.
 */
export function writeGguf(
  file: string,
  meta: [string, MetaValue][],
  tensors: TensorInfo[],
  data: (i: number) => Uint8Array,
  onProgress?: (done: number, total: number) => void,
): number {
  const { header, dataBytes } = encodeHeader(meta, tensors);
  const total = header.length + dataBytes;
  const tmp = `${file}.partial`;
  const fd = fs.openSync(tmp, "w");
  try {
    fs.writeSync(fd, header);
    let done = header.length;
    const zeros = new Uint8Array(ALIGNMENT);
    tensors.forEach((t, i) => {
      const bytes = data(i);
      if (bytes.length !== t.byteLength) throw new RangeError(`GGUF tensor "${t.name}": ${bytes.length} bytes produced, ${t.byteLength} declared`);
      fs.writeSync(fd, bytes);
      const pad = Math.ceil(t.byteLength / ALIGNMENT) * ALIGNMENT - t.byteLength;
      if (pad) fs.writeSync(fd, zeros, 0, pad);
      done += bytes.length + pad;
      onProgress?.(done, total);
    });
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  return total;
}
