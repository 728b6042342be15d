/**
 * A multipart/form-data upload streamed straight to disk: the body is read chunk by chunk, the one file
 * field is written to `<dest>.part` as it arrives and renamed to `<dest>` once the closing boundary is
 * seen. Memory stays at a chunk plus a boundary's length whatever the file's size (reading the body
 * whole, then as FormData, then as an ArrayBuffer took about seven times the file). Over the limit,
 * a broken body or a full disk: the part file is removed and nothing is left behind.
 */
import * as fs from "node:fs";

export class UploadError extends Error {
  constructor(readonly status: 400 | 413 | 507, message: string) {
    super(message);
  }
}

export interface UploadOptions {
  /** The form field that carries the file. */
  field: string;
  /** The most bytes the file may have. */
  limit: number;
  /** Where to keep the file, given the name the browser sent; throws an UploadError to refuse it. */
  destFor: (filename: string) => string;
}

export interface Upload {
  filename: string;
  path: string;
  bytes: number;
}

/** Room for the other fields, the part headers and the boundaries beside the file itself. */
const FORM_OVERHEAD = 64 * 1024;
const MAX_PART_HEADERS = 16 * 1024;

function boundaryOf(contentType: string): string {
  const m = /boundary=(?:"([^"]{1,200})"|([^\s;]{1,200}))/i.exec(contentType);
  if (!/^\s*multipart\/form-data\b/i.test(contentType) || !m) throw new UploadError(400, "The upload must be sent as multipart/form-data (a form with a file field)");
  return m[1] ?? m[2];
}

/** First index of `needle` in `hay` at or after `from`, or -1. */
function indexOf(hay: Uint8Array, needle: Uint8Array, from = 0): number {
  const first = needle[0];
  for (let i = hay.indexOf(first, from); i >= 0 && i <= hay.length - needle.length; i = hay.indexOf(first, i + 1)) {
    let j = 1;
    while (j < needle.length && hay[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

/**
 * Joins the unparsed bytes `a` and the next chunk `b` in one buffer reused from read to read: a fresh
 * array per chunk made the server's peak RSS swing by up to 88 MB over a 160 MB upload while V8 had not
 * yet collected them. `a` is either a fresh copy or the front of that buffer (the parser keeps
 * only `slice` copies across reads), so copying it to the front is safe.
 */
function joiner(): (a: Uint8Array, b: Uint8Array) => Uint8Array {
  let scratch = new Uint8Array(0);
  return (a, b) => {
    if (a.length === 0) return b;
    const n = a.length + b.length;
    if (scratch.length < n) {
      const grown = new Uint8Array(Math.max(n, 2 * scratch.length));
      grown.set(a);
      scratch = grown;
    } else scratch.set(a);
    scratch.set(b, a.length);
    return scratch.subarray(0, n);
  };
}

function dispositionOf(headers: string): { name?: string; filename?: string } {
  const line = headers.split("\r\n").find((l) => /^content-disposition:/i.test(l)) ?? "";
  const name = /\bname="([^"]*)"/i.exec(line)?.[1];
  const filename = /\bfilename="([^"]*)"/i.exec(line)?.[1];
  return { name, filename };
}

/**
 * Reads `req`'s multipart body and saves the file in `opts.field`. Resolves with where it went;
 * rejects with an UploadError (400 bad form or no file, 413 over the limit, 507 cannot write).
 */
export async function receiveUpload(req: Request, opts: UploadOptions): Promise<Upload> {
  const boundary = boundaryOf(req.headers.get("Content-Type") ?? "");
  const enc = new TextEncoder();
  // Every delimiter but the first follows a CRLF; starting the buffer with one makes them all alike.
  const delim = enc.encode(`\r\n--${boundary}`);
  const reader = req.body?.getReader();
  if (!reader) throw new UploadError(400, "Choose a file to upload.");
  let buf: Uint8Array = enc.encode("\r\n");
  const join = joiner();
  let total = 0;
  let state: "preamble" | "after-delim" | "headers" | "body" | "done" = "preamble";
  let out: { fd: number; part: string; dest: string; filename: string; bytes: number } | null = null;
  let saved: Upload | null = null;
  let inFile = false;

  const write = (bytes: Uint8Array) => {
    if (!inFile || !out || bytes.length === 0) return;
    out.bytes += bytes.length;
    if (out.bytes > opts.limit) throw new UploadError(413, `The upload is over the ${opts.limit}-byte limit`);
    try {
      for (let off = 0; off < bytes.length;) off += fs.writeSync(out.fd, bytes, off, bytes.length - off);
    } catch (e) {
      throw new UploadError(507, `Could not save the upload to "${out.part}": ${(e as Error).message}`);
    }
  };
  const discard = () => {
    if (!out) return;
    try {
      fs.closeSync(out.fd);
    } catch { /* closed already */ }
    fs.rmSync(out.part, { force: true });
    out = null;
  };

  try {
    for (;;) {
      // Parse what is buffered as far as it goes, then read more.
      let progressed = true;
      while (progressed && state !== "done") {
        progressed = false;
        if (state === "preamble" || state === "body") {
          const at = indexOf(buf, delim);
          if (at < 0) {
            // Keep a tail that could be the start of a delimiter; the rest is file content (or preamble).
            const keep = Math.min(buf.length, delim.length - 1);
            if (state === "body") write(buf.subarray(0, buf.length - keep));
            buf = buf.slice(buf.length - keep);
            break;
          }
          if (state === "body") {
            write(buf.subarray(0, at));
            if (inFile && out) {
              fs.closeSync(out.fd);
              fs.renameSync(out.part, out.dest);
              saved = { filename: out.filename, path: out.dest, bytes: out.bytes };
              out = null;
              inFile = false;
            }
          }
          buf = buf.slice(at + delim.length);
          state = "after-delim";
          progressed = true;
        } else if (state === "after-delim") {
          if (buf.length < 2) break;
          if (buf[0] === 0x2d && buf[1] === 0x2d) {
            state = "done";
          } else if (buf[0] === 0x0d && buf[1] === 0x0a) {
            buf = buf.slice(2);
            state = "headers";
          } else throw new UploadError(400, "The upload's form data is malformed (bad boundary)");
          progressed = true;
        } else if (state === "headers") {
          const end = indexOf(buf, enc.encode("\r\n\r\n"));
          if (end < 0) {
            if (buf.length > MAX_PART_HEADERS) throw new UploadError(400, "The upload's form data is malformed (part headers too long)");
            break;
          }
          const { name, filename } = dispositionOf(new TextDecoder().decode(buf.subarray(0, end)));
          buf = buf.slice(end + 4);
          inFile = name === opts.field && filename !== undefined && filename !== "" && !saved;
          if (inFile) {
            const dest = opts.destFor(filename!);
            const part = `${dest}.part`;
            let fd: number;
            try {
              fd = fs.openSync(part, "wx");
            } catch (e) {
              throw new UploadError(507, `Could not save the upload to "${part}": ${(e as Error).message}`);
            }
            out = { fd, part, dest, filename: filename!, bytes: 0 };
          }
          state = "body";
          progressed = true;
        }
      }
      if (state === "done") break;
      const { value, done } = await reader.read();
      if (done) throw new UploadError(400, "The upload ended before its form data did (the connection was cut?); nothing was saved");
      total += value.length;
      if (total > opts.limit + FORM_OVERHEAD) throw new UploadError(413, `The upload is over the ${opts.limit}-byte limit`);
      buf = join(buf, value);
    }
  } catch (e) {
    discard();
    if (saved) fs.rmSync(saved.path, { force: true });
    await reader.cancel().catch(() => {});
    throw e;
  }
  await reader.cancel().catch(() => {});
  if (!saved || saved.bytes === 0) {
    if (saved) fs.rmSync(saved.path, { force: true });
    throw new UploadError(400, "Choose a file to upload.");
  }
  return saved;
}
