/** Log files read by byte offset: each poll reads only what was appended (never the whole file). */
import * as fs from "node:fs";

export interface LogChunk {
  text: string;
  /** Offset to ask for next time. */
  next: number;
  size: number;
}

const MAX_CHUNK = 64 * 1024;

/** Bytes [offset, size) of `file`, at most `max`; offset < 0 means "the tail". Cut at a line end. */
export function readLogChunk(file: string, offset: number, max = MAX_CHUNK): LogChunk {
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
    // Keep a partial last line for the next read, unless the chunk is full without one.
    const lastNl = bytes.lastIndexOf(10);
    if (lastNl >= 0 && lastNl < bytes.length - 1) bytes = bytes.subarray(0, lastNl + 1);
    let text = new TextDecoder().decode(bytes);
    if (offset < 0 && start > 0) text = text.slice(text.indexOf("\n") + 1);
    return { text, next: start + bytes.length, size };
  } finally {
    fs.closeSync(fd);
  }
}

/** Lines that are real errors: "error:"/"Error:" prefixes, uncaught exceptions, stack headers, panics. */
const ERROR_LINE = /^(\s*(error|Error|ERROR)\b[:\s]|Uncaught |thread '.*' panicked|Segmentation fault|Aborted \(core dumped\)|\s*at .+:\d+:\d+\)?$)/;

export function countErrorLines(text: string): number {
  let n = 0;
  for (const line of text.split("\n")) if (line && ERROR_LINE.test(line) && !/^\s*at /.test(line)) n++;
  return n;
}

/** The last `n` non-empty lines of a file (read from its tail). */
export function tailLines(file: string, n = 20): string[] {
  const { text } = readLogChunk(file, -1, 16 * 1024);
  return text.split("\n").filter((l) => l.trim()).slice(-n);
}
