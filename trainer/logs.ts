/** Log files read by byte offset: each poll reads only what was appended (never the whole file). */
import * as fs from "node:fs";

export interface LogChunk {
  text: string;
  /** Offset to ask for next time. */
  next: number;
  size: number;
}

export interface ReadLogOptions {
  /** Most bytes one call reads (default 64 KiB). */
  max?: number;
  /**
   * Also return a last line that has no newline yet. Off while the writer is alive (the line may
   * still grow); on once it has ended, so the final line shows and the reader reaches the end.
   */
  partial?: boolean;
}

const MAX_CHUNK = 64 * 1024;

/** Bytes [offset, size) of `file`, at most `max`; offset < 0 means "the tail". Cut at a line end. */
export function readLogChunk(file: string, offset: number, opts: ReadLogOptions = {}): LogChunk {
  const max = opts.max ?? MAX_CHUNK;
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch {
    return { text: "", next: Math.max(0, offset), size: 0 };
  }
  try {
    const size = fs.fstatSync(fd).size;
    let start = offset < 0 ? Math.max(0, size - max) : Math.min(offset, size);
    if (offset >= 0 && offset > size) start = 0; // truncated or replaced: start over
    const len = Math.min(max, size - start);
    const buf = new Uint8Array(len);
    const got = len ? fs.readSync(fd, buf, 0, len, start) : 0;
    let bytes = buf.subarray(0, got);
    // Keep a partial last line for the next read, unless the chunk is full without a newline.
    const atEnd = start + got >= size;
    if (!(opts.partial && atEnd)) {
      const lastNl = bytes.lastIndexOf(10);
      if (lastNl >= 0 && lastNl < bytes.length - 1) bytes = bytes.subarray(0, lastNl + 1);
      else if (lastNl < 0 && got < max) bytes = bytes.subarray(0, 0);
    }
    let text = new TextDecoder().decode(bytes);
    if (offset < 0 && start > 0) text = text.slice(text.indexOf("\n") + 1);
    return { text, next: start + bytes.length, size };
  } finally {
    fs.closeSync(fd);
  }
}

/** Lines that are real errors: "error:"/"Error:" prefixes, uncaught exceptions, panics, crashes. */
const ERROR_LINE = /^(\s*(error|Error|ERROR)\b[:\s]|\s*\w*(Error|Exception)\b: |Uncaught |thread '.*' panicked|Segmentation fault|Aborted \(core dumped\)|Killed$)/;

/** Counts error lines; the stack frames below an error ("    at f (file:1:2)") belong to it and are not counted. */
export function countErrorLines(text: string): number {
  let n = 0;
  for (const line of text.split("\n")) if (line && ERROR_LINE.test(line)) n++;
  return n;
}

/** The last `n` non-empty lines of a file (read from its tail, the unfinished last line included). */
export function tailLines(file: string, n = 20): string[] {
  const { text } = readLogChunk(file, -1, { max: 16 * 1024, partial: true });
  return text.split("\n").filter((l) => l.trim()).slice(-n);
}
