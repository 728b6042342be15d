/**
 * Reads entries out of a zip file on disk (a NuGet .nupkg is one) without loading the archive: the
 * central directory is parsed from the file's end, and each wanted entry is streamed through zlib's
 * raw inflate into its own file. Stored (0) and deflated (8) entries; no zip64 (archives < 4 GiB).
 * Format: PKWARE APPNOTE.TXT §4.3 (local header, central directory, end of central directory record).
 */
import * as fs from "node:fs";
import * as zlib from "node:zlib";
import { pipeline } from "node:stream/promises";

export interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
  localHeaderOffset: number;
}

function readAt(fd: number, offset: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  const n = fs.readSync(fd, buf, 0, length, offset);
  return buf.subarray(0, n);
}

/** The central directory of the zip at `path`. */
export function listZip(path: string): ZipEntry[] {
  const fd = fs.openSync(path, "r");
  try {
    const size = fs.fstatSync(fd).size;
    const tailLen = Math.min(size, 22 + 65535);
    const tail = readAt(fd, size - tailLen, tailLen);
    const dv = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) {
      if (dv.getUint32(i, true) === 0x06054b50) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw new SyntaxError(`Cannot read "${path}": not a zip file (no end of central directory record)`);
    const count = dv.getUint16(eocd + 10, true);
    const cdSize = dv.getUint32(eocd + 12, true);
    const cdOffset = dv.getUint32(eocd + 16, true);
    if (cdOffset === 0xffffffff || count === 0xffff) throw new RangeError(`Cannot read "${path}": zip64 archives are not supported`);
    const cd = readAt(fd, cdOffset, cdSize);
    const c = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
    const entries: ZipEntry[] = [];
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (c.getUint32(p, true) !== 0x02014b50) throw new SyntaxError(`Cannot read "${path}": central directory entry ${i} is damaged`);
      const nameLen = c.getUint16(p + 28, true), extraLen = c.getUint16(p + 30, true), commentLen = c.getUint16(p + 32, true);
      entries.push({
        method: c.getUint16(p + 10, true),
        crc32: c.getUint32(p + 16, true),
        compressedSize: c.getUint32(p + 20, true),
        size: c.getUint32(p + 24, true),
        localHeaderOffset: c.getUint32(p + 42, true),
        name: new TextDecoder().decode(cd.subarray(p + 46, p + 46 + nameLen)),
      });
      p += 46 + nameLen + extraLen + commentLen;
    }
    return entries;
  } finally {
    fs.closeSync(fd);
  }
}

/** Streams one entry of the zip at `zipPath` into `dest`; checks its size (the archive as a whole is verified by its caller). */
export async function extractEntry(zipPath: string, entry: ZipEntry, dest: string): Promise<void> {
  const fd = fs.openSync(zipPath, "r");
  let dataStart: number;
  try {
    const h = readAt(fd, entry.localHeaderOffset, 30);
    const dv = new DataView(h.buffer, h.byteOffset, h.byteLength);
    if (h.length < 30 || dv.getUint32(0, true) !== 0x04034b50) throw new SyntaxError(`Cannot read "${zipPath}": local header of "${entry.name}" is damaged`);
    dataStart = entry.localHeaderOffset + 30 + dv.getUint16(26, true) + dv.getUint16(28, true);
  } finally {
    fs.closeSync(fd);
  }
  if (entry.method !== 0 && entry.method !== 8) throw new RangeError(`Cannot extract "${entry.name}" from "${zipPath}": compression method ${entry.method} is not supported`);
  if (entry.compressedSize === 0) {
    fs.writeFileSync(dest, new Uint8Array(0));
  } else {
    const src = fs.createReadStream(zipPath, { start: dataStart, end: dataStart + entry.compressedSize - 1 });
    const out = fs.createWriteStream(dest);
    if (entry.method === 8) await pipeline(src, zlib.createInflateRaw(), out);
    else await pipeline(src, out);
  }
  const written = fs.statSync(dest).size;
  if (written !== entry.size) throw new SyntaxError(`"${entry.name}" in "${zipPath}" extracted to ${written} bytes, expected ${entry.size}`);
}
