/**
 * TensorBoard event files: TFRecord framing with masked CRC-32C around hand-encoded `Event` protos
 * (docs/GEMMA.md §TensorBoard). The writer appends one record per call so a reader polling the file sees each
 * scalar as soon as it is written; the reader resumes from a byte offset and never consumes a record
 * that is still being written.
 */
import { hostname } from "node:os";
import { join } from "node:path";

// ---- CRC-32C (Castagnoli, reflected 0x82F63B78) ----

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C of `data`; crc32c("123456789") = 0xE3069283. */
export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TensorFlow's masked CRC: rotate right by 15 and add a constant, so a CRC of CRCs stays strong. */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

// ---- protobuf wire encoding (just what Event/Summary need) ----

class ProtoWriter {
  private parts: number[] = [];
  varint(v: number | bigint): this {
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      this.parts.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.parts.push(Number(x));
    return this;
  }
  tag(field: number, wire: number): this {
    return this.varint((field << 3) | wire);
  }
  double(field: number, v: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    this.tag(field, 1);
    this.parts.push(...b);
    return this;
  }
  float(field: number, v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.tag(field, 5);
    this.parts.push(...b);
    return this;
  }
  bytes(field: number, v: Uint8Array): this {
    this.tag(field, 2).varint(v.length);
    for (const x of v) this.parts.push(x);
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }
  finish(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

export interface EventProto {
  wallTime: number;
  step?: number;
  fileVersion?: string;
  /** Scalars in the legacy `simple_value` form (TensorBoard migrates them on read). */
  scalars?: { tag: string; value: number }[];
  /** Scalars in the TB2 tensor form (plugin "scalars", DT_FLOAT rank 0). */
  tensorScalars?: { tag: string; value: number }[];
  /** SessionLog status (1 = START): TensorBoard drops earlier events at or after this step (a resumed run). */
  sessionLog?: number;
}

/** Serialises an `Event` protobuf (fields in number order, proto3 defaults omitted). */
export function encodeEvent(e: EventProto): Uint8Array {
  const w = new ProtoWriter().double(1, e.wallTime);
  if (e.step) w.tag(2, 0).varint(e.step);
  if (e.fileVersion !== undefined) w.string(3, e.fileVersion);
  const values: Uint8Array[] = [];
  for (const s of e.scalars ?? []) values.push(new ProtoWriter().string(1, s.tag).float(2, s.value).finish());
  for (const s of e.tensorScalars ?? []) {
    const plugin = new ProtoWriter().string(1, "scalars").finish();
    const meta = new ProtoWriter().bytes(1, plugin).tag(4, 0).varint(1).finish();
    const shape = new Uint8Array(0);
    const floatVal = new Uint8Array(4);
    new DataView(floatVal.buffer).setFloat32(0, s.value, true);
    const tensor = new ProtoWriter().tag(1, 0).varint(1).bytes(2, shape).bytes(5, floatVal).finish();
    values.push(new ProtoWriter().string(1, s.tag).bytes(9, meta).bytes(8, tensor).finish());
  }
  if (values.length) {
    const summary = new ProtoWriter();
    for (const v of values) summary.bytes(1, v);
    w.bytes(5, summary.finish());
  }
  if (e.sessionLog !== undefined) w.bytes(7, new ProtoWriter().tag(1, 0).varint(e.sessionLog).finish());
  return w.finish();
}

/** One TFRecord: u64 length, masked CRC of the length, data, masked CRC of the data (all little-endian). */
export function frameRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length + 4);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  dv.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

/** `events.out.tfevents.<10-digit secs>.<host>.<pid>.<n>` as TensorBoard's own writer names it. */
export function eventFileName(now = Date.now(), host = hostname(), pid = Deno.pid, n = 0): string {
  const secs = String(Math.floor(now / 1000)).padStart(10, "0");
  return `events.out.tfevents.${secs}.${host}.${pid}.${n}`;
}

let writerCount = 0;

/** Appends scalar events to a new event file in `dir`. */
export class EventWriter {
  readonly path: string;
  private file: Deno.FsFile;

  constructor(dir: string, opts: { now?: number } = {}) {
    const now = opts.now ?? Date.now();
    this.path = join(dir, eventFileName(now, hostname(), Deno.pid, writerCount++));
    this.file = Deno.openSync(this.path, { create: true, append: true });
    this.write({ wallTime: now / 1000, fileVersion: "brain.Event:2" });
  }

  private write(e: EventProto): void {
    const rec = frameRecord(encodeEvent(e));
    let off = 0;
    while (off < rec.length) off += this.file.writeSync(rec.subarray(off));
  }

  /** Writes one event holding every scalar of `values` at `step`. Non-finite values are written as they are (NaN shows as NaN in TensorBoard). */
  scalars(step: number, values: Record<string, number>, wallTime = Date.now() / 1000): void {
    const scalars = Object.entries(values).map(([tag, value]) => ({ tag, value }));
    if (scalars.length) this.write({ wallTime, step, scalars });
  }

  /** Marks a restart at `step` (SessionLog START), so TensorBoard discards the stale tail of an interrupted run. */
  restart(step: number, wallTime = Date.now() / 1000): void {
    this.write({ wallTime, step, sessionLog: 1 });
  }

  close(): void {
    try {
      this.file.close();
    } catch { /* already closed */ }
  }
}

// ---- reader ----

export interface ScalarEvent {
  tag: string;
  step: number;
  wallTime: number;
  value: number;
}

class ProtoReader {
  pos = 0;
  constructor(readonly b: Uint8Array, readonly dv = new DataView(b.buffer, b.byteOffset, b.byteLength)) {}
  get done(): boolean {
    return this.pos >= this.b.length;
  }
  varint(): bigint {
    let result = 0n, shift = 0n;
    for (;;) {
      if (this.pos >= this.b.length) throw new SyntaxError("truncated varint");
      const byte = this.b[this.pos++];
      result |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return result;
      shift += 7n;
    }
  }
  /** Returns [field, wire] of the next key. */
  key(): [number, number] {
    const k = Number(this.varint());
    return [k >>> 3, k & 7];
  }
  bytes(): Uint8Array {
    const n = Number(this.varint());
    if (this.pos + n > this.b.length) throw new SyntaxError("truncated length-delimited field");
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  double(): number {
    const v = this.dv.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }
  float(): number {
    const v = this.dv.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw new SyntaxError(`unsupported wire type ${wire}`);
  }
}

function decodeTensorFloat(b: Uint8Array): number | undefined {
  const r = new ProtoReader(b);
  let value: number | undefined;
  let dtype = 0;
  while (!r.done) {
    const [f, w] = r.key();
    if (f === 1 && w === 0) dtype = Number(r.varint());
    else if (f === 5 && w === 2) {
      const packed = r.bytes();
      if (packed.length >= 4) value = new DataView(packed.buffer, packed.byteOffset).getFloat32(0, true);
    } else if (f === 5 && w === 5) value = r.float();
    else if (f === 6 && w === 2) {
      const packed = r.bytes();
      if (packed.length >= 8) value = new DataView(packed.buffer, packed.byteOffset).getFloat64(0, true);
    } else if (f === 4 && w === 2) {
      const c = r.bytes();
      const dv = new DataView(c.buffer, c.byteOffset, c.byteLength);
      if (dtype === 1 && c.length >= 4) value = dv.getFloat32(0, true);
      else if (dtype === 2 && c.length >= 8) value = dv.getFloat64(0, true);
    } else r.skip(w);
  }
  return value;
}

/** Decodes the scalars of one serialised `Event` (simple_value and tensor forms). */
export function decodeEvent(b: Uint8Array): { wallTime: number; step: number; fileVersion?: string; scalars: { tag: string; value: number }[] } {
  const r = new ProtoReader(b);
  let wallTime = 0, step = 0;
  let fileVersion: string | undefined;
  const scalars: { tag: string; value: number }[] = [];
  while (!r.done) {
    const [f, w] = r.key();
    if (f === 1 && w === 1) wallTime = r.double();
    else if (f === 2 && w === 0) step = Number(BigInt.asIntN(64, r.varint()));
    else if (f === 3 && w === 2) fileVersion = new TextDecoder().decode(r.bytes());
    else if (f === 5 && w === 2) {
      const s = new ProtoReader(r.bytes());
      while (!s.done) {
        const [sf, sw] = s.key();
        if (sf !== 1 || sw !== 2) {
          s.skip(sw);
          continue;
        }
        const v = new ProtoReader(s.bytes());
        let tag = "";
        let value: number | undefined;
        while (!v.done) {
          const [vf, vw] = v.key();
          if (vf === 1 && vw === 2) tag = new TextDecoder().decode(v.bytes());
          else if (vf === 2 && vw === 5) value = v.float();
          else if (vf === 8 && vw === 2) value = decodeTensorFloat(v.bytes());
          else v.skip(vw);
        }
        if (value !== undefined) scalars.push({ tag, value });
      }
    } else r.skip(w);
  }
  return { wallTime, step, fileVersion, scalars };
}

/**
 * Reads complete records of `bytes` starting at `offset`; returns the scalars and the offset after the
 * last complete record (a half-written tail is left for the next call). A CRC mismatch throws a
 * SyntaxError naming `source` and the byte offset.
 */
export function parseEventRecords(bytes: Uint8Array, offset = 0, source = "event file"): { scalars: ScalarEvent[]; offset: number } {
  const scalars: ScalarEvent[] = [];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = offset;
  while (pos + 12 <= bytes.length) {
    const len = Number(dv.getBigUint64(pos, true));
    if (dv.getUint32(pos + 8, true) !== maskedCrc32c(bytes.subarray(pos, pos + 8))) {
      throw new SyntaxError(`Cannot read "${source}": bad length CRC at byte ${pos}`);
    }
    if (pos + 12 + len + 4 > bytes.length) break;
    const data = bytes.subarray(pos + 12, pos + 12 + len);
    if (dv.getUint32(pos + 12 + len, true) !== maskedCrc32c(data)) {
      throw new SyntaxError(`Cannot read "${source}": bad data CRC in the record at byte ${pos}`);
    }
    const e = decodeEvent(data);
    for (const s of e.scalars) scalars.push({ tag: s.tag, step: e.step, wallTime: e.wallTime, value: s.value });
    pos += 12 + len + 4;
  }
  return { scalars, offset: pos };
}

/** Reads every scalar of the event file at `path` from `offset` on. */
export function readEventFile(path: string, offset = 0): { scalars: ScalarEvent[]; offset: number } {
  return parseEventRecords(Deno.readFileSync(path), offset, path);
}

/** The event files in `dir`, oldest first (a resumed run adds a new file beside the old ones). */
export function listEventFiles(dir: string): string[] {
  const names: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) if (e.isFile && e.name.includes("tfevents")) names.push(e.name);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  const secs = (n: string) => Number(n.split(".")[3]) || 0;
  return names.sort((a, b) => secs(a) - secs(b) || a.localeCompare(b)).map((n) => join(dir, n));
}
