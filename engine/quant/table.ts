/**
 * The tied embedding table [V,H] in its stored dtype (docs/QUANT.md): float32 when the whole model is
 * float32 (full fine-tuning trains it), otherwise bf16 bits, never a whole float32 copy. A bf16 table
 * that a checkpoint stores as bf16 stays in its file and is read with pread (rows for the body, chunks for
 * the head), so the process never holds it: the OS page cache does, and can drop it. The body reads
 * rows (gathered here in JS); the LM head reads chunks of rows, each converted into one of two reused
 * float32 buffers right before its session run (the run copies nothing back, so a buffer is free again
 * as soon as the run returns).
 */
import * as fs from "node:fs";
import { bf16ToF32 } from "./blocks.ts";

/** A bf16 table left in a file (a checkpoint's tensor): rows are read with pread when needed. */
interface FileRows {
  fd: number;
  offset: number;
  file: string;
}

export class EmbeddingTable {
  private buffers: Float32Array[] = [];
  private next = 0;

  private scratch: Uint16Array | null = null;
  /** The bf16 rows of the last chunk read from the file (reused: chunks are converted at once). */
  private chunkBits: Uint16Array | null = null;

  private constructor(
    readonly vocab: number,
    readonly hidden: number,
    readonly f32: Float32Array | null,
    readonly bits: Uint16Array | null,
    private readonly rows: FileRows | null = null,
  ) {}

  /**
   * A bf16 table [vocab, hidden] stored at `offset` of `file`, read by rows and never held in memory
   * (the tied embedding: 604 MB at gemma-3-1b, 1.8 GB at Gemma 2 9B; Gemma 4's per-layer table: 4.7 GB
   * for E2B). The file is opened once and kept open.
   */
  static fromFile(file: string, offset: number, vocab: number, hidden: number): EmbeddingTable {
    const size = fs.statSync(file).size;
    if (offset + vocab * hidden * 2 > size) throw new RangeError(`"${file}" is too short for a bf16 table [${vocab},${hidden}] at byte ${offset}`);
    return new EmbeddingTable(vocab, hidden, null, null, { fd: fs.openSync(file, "r"), offset, file });
  }

  /** Whether the table stays in its file (rows read on demand). */
  get inFile(): boolean {
    return this.rows !== null;
  }

  /** The whole table's bf16 bits: the held ones, or read from the file (the KV-cache decoder feeds it whole). */
  allBits(): Uint16Array {
    if (this.bits) return this.bits;
    if (!this.rows) throw new RangeError("a float32 table has no bf16 bits");
    return this.read(0, this.vocab, new Uint16Array(this.vocab * this.hidden));
  }

  private read(start: number, rows: number, into: Uint16Array): Uint16Array {
    const r = this.rows!, bytes = rows * this.hidden * 2;
    const view = new Uint8Array(into.buffer, into.byteOffset, bytes);
    for (let done = 0; done < bytes;) {
      const n = fs.readSync(r.fd, view, done, Math.min(bytes - done, 1 << 30), r.offset + start * this.hidden * 2 + done);
      if (n <= 0) throw new RangeError(`Cannot read rows ${start}…${start + rows - 1} of the table in "${r.file}": the file is truncated`);
      done += n;
    }
    return into;
  }

  static fromF32(data: Float32Array, vocab: number, hidden: number): EmbeddingTable {
    if (data.length !== vocab * hidden) throw new RangeError(`Embedding has ${data.length} values, expected [${vocab},${hidden}]`);
    return new EmbeddingTable(vocab, hidden, data, null);
  }

  static fromBf16(bits: Uint16Array, vocab: number, hidden: number): EmbeddingTable {
    if (bits.length !== vocab * hidden) throw new RangeError(`Embedding has ${bits.length} values, expected [${vocab},${hidden}]`);
    return new EmbeddingTable(vocab, hidden, null, bits);
  }

  get dtype(): "fp32" | "bf16" {
    return this.f32 ? "fp32" : "bf16";
  }

  get bytes(): number {
    return this.rows ? this.vocab * this.hidden * 2 : (this.f32 ?? this.bits!).byteLength;
  }

  /** The bf16 bits of element i (row-major); a float32 table's value rounded to bf16 is not offered. */
  bitsAt(i: number): number {
    if (this.bits) return this.bits[i];
    if (!this.rows) throw new RangeError("a float32 table has no bf16 bits");
    // The row scratch is reused: the tied-head check calls this a thousand times per load.
    const one = this.scratch ??= new Uint16Array(this.hidden), r = this.rows;
    if (fs.readSync(r.fd, new Uint8Array(one.buffer, 0, 2), 0, 2, r.offset + i * 2) !== 2) throw new RangeError(`Cannot read the table in "${r.file}": the file is truncated`);
    return one[0];
  }

  /** Row v as float32 into out at offset `at`. */
  row(v: number, out: Float32Array, at = 0): void {
    const H = this.hidden;
    if (this.f32) out.set(this.f32.subarray(v * H, (v + 1) * H), at);
    else if (this.rows) bf16ToF32(this.read(v, 1, this.scratch ??= new Uint16Array(H)), out.subarray(at, at + H));
    else bf16ToF32(this.bits!.subarray(v * H, (v + 1) * H), out.subarray(at, at + H));
  }

  /** Rows [start, start+rows) as float32: a view of a float32 table, else a reused converted buffer. */
  chunk(start: number, rows: number): Float32Array {
    const H = this.hidden;
    if (this.f32) return this.f32.subarray(start * H, (start + rows) * H);
    // Two buffers alternate so a caller may hold the previous chunk while converting the next.
    const k = this.next++ % 2;
    if (!this.buffers[k] || this.buffers[k].length < rows * H) this.buffers[k] = new Float32Array(rows * H);
    if (this.rows && (!this.chunkBits || this.chunkBits.length < rows * H)) this.chunkBits = new Uint16Array(rows * H);
    const bits = this.rows ? this.read(start, rows, this.chunkBits!.subarray(0, rows * H)) : this.bits!.subarray(start * H, (start + rows) * H);
    return bf16ToF32(bits, this.buffers[k].subarray(0, rows * H));
  }
}
