import { deepStrictEqual as eq, ok } from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { downsample, MetricsReader } from "./metrics.ts";
import { encodeEvent, eventFileName, frameRecord } from "./tfevents.ts";

function tmpRun(): string {
  return fs.mkdtempSync(
    path.join(Deno.env.get("TMPDIR") ?? "/tmp", "gt-metrics-"),
  );
}

/** An event file written record by record, so tests control exactly which bytes are on disk. */
function eventFile(dir: string, secs = 1_700_000_000) {
  const file = path.join(dir, eventFileName(secs * 1000, "host", 1, 0));
  fs.writeFileSync(
    file,
    frameRecord(encodeEvent({ wallTime: secs, fileVersion: "brain.Event:2" })),
  );
  const append = (bytes: Uint8Array) => fs.appendFileSync(file, bytes);
  const rec = (step: number, values: Record<string, number>, tensor = false) =>
    frameRecord(encodeEvent({
      wallTime: secs + step,
      step,
      ...(tensor
        ? {
          tensorScalars: Object.entries(values).map(([tag, value]) => ({
            tag,
            value,
          })),
        }
        : {
          scalars: Object.entries(values).map(([tag, value]) => ({
            tag,
            value,
          })),
        }),
    }));
  return { file, append, rec };
}

Deno.test("metrics: empty → stale → fresh, and only appended bytes are read", () => {
  const dir = tmpRun();
  const m = new MetricsReader();
  eq(m.state(dir), "empty");
  eq(m.last(dir, "train/loss"), undefined);
  const f = eventFile(dir);
  for (let s = 1; s <= 100; s++) {
    f.append(
      f.rec(s, { "train/loss": 5 - s / 100, "train/learning_rate": 1e-3 }),
    );
  }
  eq(m.state(dir), "stale");
  eq(m.scalars(dir, "train/loss").length, 100);
  eq(m.state(dir), "fresh");
  const size1 = fs.statSync(f.file).size;
  eq(m.stats(dir).bytesRead, size1);

  // Reading again with nothing new costs nothing.
  m.scalars(dir, "train/loss");
  m.last(dir, "train/learning_rate");
  eq(m.stats(dir).bytesRead, size1);

  const extra = f.rec(101, { "train/loss": 3.25 });
  f.append(extra);
  eq(m.state(dir), "stale");
  eq(m.scalars(dir, "train/loss", 99), [[100, 4], [101, 3.25]]);
  eq(
    m.stats(dir).bytesRead,
    size1 + extra.length,
    "only the appended record was read",
  );
  eq(m.last(dir, "train/loss"), [101, 3.25]);
  eq(m.scalars(dir, "train/learning_rate").length, 100);
  fs.rmSync(dir, { recursive: true });
});

Deno.test("metrics: a half-written record is ignored until it is complete", () => {
  const dir = tmpRun();
  const m = new MetricsReader();
  const f = eventFile(dir);
  f.append(f.rec(1, { "train/loss": 2 }));
  const second = f.rec(2, { "train/loss": 1.5 });
  for (const cut of [5, 12, second.length - 1]) {
    const before = fs.statSync(f.file).size;
    f.append(second.subarray(0, cut));
    eq(
      m.scalars(dir, "train/loss").map((p) => p[0]),
      [1],
      `cut at ${cut}: the partial record was parsed`,
    );
    // Put the file back to the complete prefix for the next cut.
    fs.truncateSync(f.file, before);
  }
  f.append(second.subarray(0, 7));
  eq(m.scalars(dir, "train/loss").length, 1);
  f.append(second.subarray(7));
  eq(m.scalars(dir, "train/loss"), [[1, 2], [2, 1.5]]);
  fs.rmSync(dir, { recursive: true });
});

Deno.test("metrics: tensor-form scalars, resumed runs in a second file, wall-time range", () => {
  const dir = tmpRun();
  const m = new MetricsReader();
  const a = eventFile(dir, 1_700_000_000);
  for (let s = 1; s <= 10; s++) {
    a.append(a.rec(s, { "train/loss": 10 - s }, true));
  }
  eq(m.last(dir, "train/loss"), [10, 0]);
  // The run was resumed from step 6: the new file rewrites 7.. and the old tail must go.
  const b = eventFile(dir, 1_700_000_100);
  for (let s = 7; s <= 12; s++) b.append(b.rec(s, { "train/loss": 100 + s }));
  eq(m.scalars(dir, "train/loss").map((p) => p[0]), [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
  ]);
  eq(m.scalars(dir, "train/loss", 6).map((p) => p[1]), [
    107,
    108,
    109,
    110,
    111,
    112,
  ]);
  eq(m.wallRange(dir, "train/loss"), [1_700_000_001, 1_700_000_112]);
  eq(m.mean(dir, "train/loss", 2), 111.5);
  eq(m.wallTimeAt(dir, "train/loss", 9), 1_700_000_109);
  eq(m.wallTimeAt(dir, "train/loss", 99), undefined);
  eq(m.lastEvalSeconds(dir), undefined);
  // eval/loss for step 12 written 2.5 s after step 12's train scalars.
  b.append(
    frameRecord(
      encodeEvent({
        wallTime: 1_700_000_114.5,
        step: 12,
        scalars: [{ tag: "eval/loss", value: 1 }],
      }),
    ),
  );
  eq(m.lastEvalSeconds(dir), 2.5);
  fs.rmSync(dir, { recursive: true });
});

Deno.test("metrics: a damaged record stops that file with a reason instead of throwing on every poll", () => {
  const dir = tmpRun();
  const m = new MetricsReader();
  const f = eventFile(dir);
  f.append(f.rec(1, { "train/loss": 2 }));
  eq(m.scalars(dir, "train/loss").length, 1);
  const bad = f.rec(2, { "train/loss": 1 });
  bad[bad.length - 1] ^= 0xff; // data CRC no longer matches
  f.append(bad);
  eq(m.scalars(dir, "train/loss").length, 1);
  const { errors } = m.stats(dir);
  eq(errors.length, 1);
  ok(
    /bad data CRC/.test(errors[0]) && errors[0].includes(path.basename(f.file)),
    errors[0],
  );
  f.append(f.rec(3, { "train/loss": 0.5 }));
  eq(m.scalars(dir, "train/loss").length, 1);
  fs.rmSync(dir, { recursive: true });
});

Deno.test("metrics: downsample keeps at most max points, the first and the last", () => {
  const pts: [number, number][] = Array.from(
    { length: 10_001 },
    (_, i) => [i, i * 2],
  );
  const d = downsample(pts, 1000);
  ok(d.length <= 1001 && d.length >= 900, `${d.length} points`);
  eq(d[0], [0, 0]);
  eq(d.at(-1), [10_000, 20_000]);
  for (let i = 1; i < d.length; i++) {
    ok(d[i][0] > d[i - 1][0], "not increasing");
  }
  eq(downsample(pts.slice(0, 10), 1000).length, 10);
});
