/**
 * The tied embedding table [V,H] in its stored dtype (docs/QUANT.md): float32 when the whole model is
 * float32 (full fine-tuning trains it), otherwise bf16 bits, never a whole float32 copy. The body reads
 * rows (gathered here in JS); the LM head reads chunks of rows, each converted into one of two reused
 * float32 buffers right before its session run (the run copies nothing back, so a buffer is free again
 * as soon as the run returns).
 */
import { bf16ToF32 } from "./blocks.ts";

export class EmbeddingTable {
  private buffers: Float32Array[] = [];
  private next = 0;

  private constructor(readonly vocab: number, readonly hidden: number, readonly f32: Float32Array | null, readonly bits: Uint16Array | null) {}

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
    return (this.f32 ?? this.bits!).byteLength;
  }

  /** Row v as float32 into out at offset `at`. */
  row(v: number, out: Float32Array, at = 0): void {
    const H = this.hidden;
    if (this.f32) out.set(this.f32.subarray(v * H, (v + 1) * H), at);
    else bf16ToF32(this.bits!.subarray(v * H, (v + 1) * H), out.subarray(at, at + H));
  }

  /** Rows [start, start+rows) as float32: a view of a float32 table, else a reused converted buffer. */
  chunk(start: number, rows: number): Float32Array {
    const H = this.hidden;
    if (this.f32) return this.f32.subarray(start * H, (start + rows) * H);
    // Two buffers alternate so a caller may hold the previous chunk while converting the next.
    const k = this.next++ % 2;
    if (!this.buffers[k] || this.buffers[k].length < rows * H) this.buffers[k] = new Float32Array(rows * H);
    return bf16ToF32(this.bits!.subarray(start * H, (start + rows) * H), this.buffers[k].subarray(0, rows * H));
  }
}
