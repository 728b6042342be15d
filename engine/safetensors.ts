/**
 * safetensors read and write (docs/GEMMA.md §safetensors): 8-byte little-endian header length, JSON header,
 * then one contiguous byte buffer. Dtypes come from the header, never from torch_dtype.
 */
import * as fs from "node:fs";
import * as path from "node:path";

export type StDtype = "F32" | "F16" | "BF16" | "F64" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const BYTES: Record<string, number> = { F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export interface TensorEntry {
  name: string;
  dtype: StDtype;
  shape: number[];
  file: string;
  /** Absolute byte offset of the tensor's data in `file`. */
  dataOffset: number;
  byteLength: number;
}

export class SafetensorsError extends SyntaxError {
  constructor(message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

/** Reads and validates a safetensors header. */
export function readHeader(file: string): { entries: TensorEntry[]; metadata: Record<string, string> } {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (e) {
    throw new SafetensorsError(`Cannot load "${file}": ${(e as Error).message}`);
  }
  try {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < 8) throw new SafetensorsError(`Cannot load "${file}": file is ${fileSize} bytes, too short for a safetensors header`);
    const lenBuf = new Uint8Array(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const n = Number(new DataView(lenBuf.buffer).getBigUint64(0, true));
    if (n > 100_000_000 || 8 + n > fileSize) {
      throw new SafetensorsError(`Cannot load "${file}": header length ${n} exceeds file size ${fileSize} (truncated or not a safetensors file)`);
    }
    const hbuf = new Uint8Array(n);
    fs.readSync(fd, hbuf, 0, n, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(hbuf));
    } catch (e) {
      throw new SafetensorsError(`Cannot load "${file}": header is not valid JSON (${(e as Error).message})`);
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      throw new SafetensorsError(`Cannot load "${file}": header is not a JSON object`);
    }
    const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
    const base = 8 + n;
    const entries: TensorEntry[] = [];
    for (const [name, v] of Object.entries(header)) {
      if (name === "__metadata__") continue;
      const t = v as { dtype?: string; shape?: number[]; data_offsets?: number[] };
      if (!t || typeof t.dtype !== "string" || !Array.isArray(t.shape) || !Array.isArray(t.data_offsets)) {
        throw new SafetensorsError(`Cannot load "${file}": tensor "${name}" lacks dtype, shape or data_offsets`);
      }
      const bytes = BYTES[t.dtype];
      if (!bytes) throw new SafetensorsError(`Cannot load "${file}": tensor "${name}" has unsupported dtype ${t.dtype}`);
      const [b, e] = t.data_offsets;
      const count = t.shape.reduce((s, d) => s * d, 1);
      if (e - b !== count * bytes) {
        throw new SafetensorsError(`Cannot load "${file}": tensor "${name}" has ${e - b} bytes but shape [${t.shape}] ${t.dtype} needs ${count * bytes}`);
      }
      if (base + e > fileSize) {
        throw new SafetensorsError(`Cannot load "${file}": tensor "${name}" ends at byte ${base + e} past the end of the file (${fileSize} bytes; truncated?)`);
      }
      entries.push({ name, dtype: t.dtype as StDtype, shape: t.shape, file, dataOffset: base + b, byteLength: e - b });
    }
    return { entries, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

/** All tensors of a checkpoint directory: `model.safetensors`, or the shards of `model.safetensors.index.json`. */
export function listCheckpoint(dir: string): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  const index = path.join(dir, "model.safetensors.index.json");
  let files: string[];
  if (fs.existsSync(index)) {
    let map: Record<string, string>;
    try {
      map = JSON.parse(fs.readFileSync(index, "utf8")).weight_map;
    } catch (e) {
      throw new SafetensorsError(`Cannot load "${index}": ${(e as Error).message}`);
    }
    if (!map || typeof map !== "object") throw new SafetensorsError(`Cannot load "${index}": no "weight_map" object`);
    files = [...new Set(Object.values(map))];
    for (const f of files) {
      if (!fs.existsSync(path.join(dir, f))) throw new SafetensorsError(`Cannot load "${index}": shard "${f}" is missing from ${dir}`);
    }
  } else if (fs.existsSync(path.join(dir, "model.safetensors"))) {
    files = ["model.safetensors"];
  } else {
    throw new SafetensorsError(`Cannot load "${dir}": no model.safetensors or model.safetensors.index.json`);
  }
  for (const f of files) for (const e of readHeader(path.join(dir, f)).entries) out.set(e.name, e);
  return out;
}

/** Reads one tensor as float32, converting BF16/F16/F64. */
export function readTensorF32(e: TensorEntry): Float32Array {
  const fd = fs.openSync(e.file, "r");
  try {
    const raw = new Uint8Array(e.byteLength);
    const got = fs.readSync(fd, raw, 0, e.byteLength, e.dataOffset);
    if (got !== e.byteLength) throw new SafetensorsError(`Cannot load "${e.file}": tensor "${e.name}" is truncated`);
    return toF32(raw, e.dtype, e);
  } finally {
    fs.closeSync(fd);
  }
}

function toF32(raw: Uint8Array, dtype: StDtype, e: TensorEntry): Float32Array {
  const n = raw.byteLength / BYTES[dtype];
  if (dtype === "F32") return new Float32Array(raw.buffer, raw.byteOffset, n);
  const out = new Float32Array(n);
  if (dtype === "BF16") {
    const u16 = new Uint16Array(raw.buffer, raw.byteOffset, n);
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u32[i] = u16[i] << 16;
    return out;
  }
  if (dtype === "F16") {
    const u16 = new Uint16Array(raw.buffer, raw.byteOffset, n);
    for (let i = 0; i < n; i++) out[i] = halfToFloat(u16[i]);
    return out;
  }
  if (dtype === "F64") {
    const f64 = new Float64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    for (let i = 0; i < n; i++) out[i] = f64[i];
    return out;
  }
  throw new SafetensorsError(`Cannot load "${e.file}": tensor "${e.name}" has dtype ${dtype}, expected a float type`);
}

export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const ex = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (ex === 0) return s * m * 2 ** -24;
  if (ex === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (ex - 15);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → bfloat16 bits with round-to-nearest-even (NaN stays NaN). */
export function floatToBf16(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 → IEEE half bits, round-to-nearest-even. */
export function floatToHalf(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const s = (b >>> 16) & 0x8000;
  const e = ((b >>> 23) & 0xff) - 127 + 15;
  let m = b & 0x7fffff;
  if (((b >>> 23) & 0xff) === 0xff) return s | 0x7c00 | (m ? 0x200 : 0);
  if (e >= 31) return s | 0x7c00;
  if (e <= 0) {
    if (e < -10) return s;
    m |= 0x800000;
    const shift = 14 - e;
    let r = m >> shift;
    const rem = m & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return s | r;
  }
  let r = (e << 10) | (m >> 13);
  const rem = m & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) r++;
  return s | r;
}

export type TensorToWrite = {
  name: string;
  dtype: "F32" | "BF16" | "F16";
  shape: number[];
  data: Float32Array;
} | {
  /** Bytes as they are (e.g. 8-bit optimizer moments). */
  name: string;
  dtype: "U8";
  shape: number[];
  data: Uint8Array;
} | {
  /** Bytes copied as they are (e.g. a multimodal checkpoint's vision tower in a merged export). */
  name: string;
  dtype: StDtype;
  shape: number[];
  raw: () => Uint8Array;
};

/** The stored bytes of one tensor, unconverted. */
export function readTensorBytes(e: TensorEntry): Uint8Array {
  const fd = fs.openSync(e.file, "r");
  try {
    const raw = new Uint8Array(e.byteLength);
    if (fs.readSync(fd, raw, 0, e.byteLength, e.dataOffset) !== e.byteLength) throw new SafetensorsError(`Cannot load "${e.file}": tensor "${e.name}" is truncated`);
    return raw;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes a safetensors file: header padded with spaces to a multiple of 8, `{"format":"pt"}`
 * metadata, tensors in the order given. Written to a temp file and renamed into place.
 */
export function writeSafetensors(file: string, tensors: TensorToWrite[], metadata: Record<string, string> = { format: "pt" }): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const count = t.shape.reduce((s, d) => s * d, 1);
    if ("raw" in t) {
      const len = count * BYTES[t.dtype];
      header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + len] };
      offset += len;
      continue;
    }
    if (count !== t.data.length) throw new RangeError(`Cannot write "${t.name}": shape [${t.shape}] needs ${count} values, got ${t.data.length}`);
    const len = count * BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + len] };
    offset += len;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (new TextEncoder().encode(json).length % 8)) % 8);
  const hbytes = new TextEncoder().encode(json);
  const tmp = `${file}.tmp-${Deno.pid}`;
  const fd = fs.openSync(tmp, "w");
  try {
    const lenBuf = new Uint8Array(8);
    new DataView(lenBuf.buffer).setBigUint64(0, BigInt(hbytes.length), true);
    fs.writeSync(fd, lenBuf);
    fs.writeSync(fd, hbytes);
    for (const t of tensors) {
      if ("raw" in t) {
        const bytes = t.raw();
        const want = t.shape.reduce((s, d) => s * d, 1) * BYTES[t.dtype];
        if (bytes.byteLength !== want) throw new RangeError(`Cannot write "${t.name}": shape [${t.shape}] ${t.dtype} needs ${want} bytes, got ${bytes.byteLength}`);
        fs.writeSync(fd, bytes);
        continue;
      }
      if (t.dtype === "F32" || t.dtype === "U8") {
        fs.writeSync(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
        continue;
      }
      const conv = t.dtype === "BF16" ? floatToBf16 : floatToHalf;
      const CH = 1 << 20;
      for (let s = 0; s < t.data.length; s += CH) {
        const part = t.data.subarray(s, s + CH);
        const u16 = new Uint16Array(part.length);
        for (let i = 0; i < part.length; i++) u16[i] = conv(part[i]);
        fs.writeSync(fd, new Uint8Array(u16.buffer));
      }
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}
