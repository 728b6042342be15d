import { deepStrictEqual as assertEquals, throws } from "node:assert/strict";
import { crc32c, decodeEvent, encodeEvent, eventFileName, EventWriter, frameRecord, listEventFiles, maskedCrc32c, parseEventRecords, readEventFile } from "./tfevents.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (s: string) => Uint8Array.from(s.match(/../g)!.map((h) => parseInt(h, 16)));

Deno.test("crc32c check value and mask", () => {
  assertEquals(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  // masked CRC of the length bytes of the first test vector (docs/GEMMA.md §TensorBoard)
  assertEquals(maskedCrc32c(unhex("1800000000000000")).toString(16), "224b7fa3");
});

Deno.test("file_version event matches the reference bytes (docs/GEMMA.md §TensorBoard)", () => {
  const payload = encodeEvent({ wallTime: 1700000000.0, fileVersion: "brain.Event:2" });
  assertEquals(hex(payload), "0900000040fc54d9411a0d627261696e2e4576656e743a32");
  assertEquals(
    hex(frameRecord(payload)),
    "1800000000000000" + "a37f4b22" + "0900000040fc54d9411a0d627261696e2e4576656e743a32" + "eced8f9d",
  );
});

Deno.test("simple_value scalar event matches the reference bytes (docs/GEMMA.md §TensorBoard)", () => {
  const payload = encodeEvent({ wallTime: 1700000001.5, step: 10, scalars: [{ tag: "train/loss", value: 2.5 }] });
  const p = "0900006040fc54d941100a2a130a110a0a747261696e2f6c6f73731500002040";
  assertEquals(hex(payload), p);
  assertEquals(hex(frameRecord(payload)), "2000000000000000" + "29eda950" + p + "7f61544f");
});

Deno.test("tensor-form scalar event decodes to the same value", () => {
  const p = "0900006040fc54d941100a2a290a270a0a747261696e2f6c6f73734a0d0a090a077363616c6172732001420a080112002a0400002040";
  const e = decodeEvent(unhex(p));
  assertEquals(e.step, 10);
  assertEquals(e.wallTime, 1700000001.5);
  assertEquals(e.scalars, [{ tag: "train/loss", value: 2.5 }]);
  assertEquals(hex(frameRecord(unhex(p))), "3600000000000000" + "4f578cef" + p + "3b7d7fd5");
  const ours = encodeEvent({ wallTime: 1700000001.5, step: 10, tensorScalars: [{ tag: "train/loss", value: 2.5 }] });
  assertEquals(hex(ours), p);
});

Deno.test("writer and incremental reader round-trip, half-written tail left for later", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const w = new EventWriter(dir, { now: 1700000000000 });
    assertEquals(w.path.split("/").pop()!.startsWith("events.out.tfevents.1700000000."), true);
    w.scalars(1, { "train/loss": 3.25, "train/learning_rate": 1e-4 });
    w.scalars(2, { "train/loss": 2.75 });
    const first = readEventFile(w.path);
    assertEquals(first.scalars.map((s) => [s.tag, s.step, s.value]), [
      ["train/loss", 1, 3.25],
      ["train/learning_rate", 1, Math.fround(1e-4)],
      ["train/loss", 2, 2.75],
    ]);
    w.scalars(3, { "eval/loss": 2.5 });
    w.close();
    const bytes = Deno.readFileSync(w.path);
    const partial = parseEventRecords(bytes.subarray(0, bytes.length - 3), first.offset);
    assertEquals(partial.scalars.length, 0);
    assertEquals(partial.offset, first.offset);
    const rest = parseEventRecords(bytes, first.offset);
    assertEquals(rest.scalars.map((s) => [s.tag, s.step, s.value]), [["eval/loss", 3, 2.5]]);
    assertEquals(rest.offset, bytes.length);
    bytes[bytes.length - 1] ^= 0xff;
    throws(() => parseEventRecords(bytes, first.offset, "x"), /bad data CRC/);
    assertEquals(listEventFiles(dir), [w.path]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("event file name has 10-digit seconds, host, pid, n", () => {
  assertEquals(eventFileName(5_000, "h", 7, 2), "events.out.tfevents.0000000005.h.7.2");
});
