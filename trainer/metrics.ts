/**
 * MetricsReader: incremental reading of a run's TensorBoard event files. Per file it remembers the
 * byte offset after the last complete record and parses only what was appended; series are kept in
 * memory per run. Cache state: fresh (nothing new on disk), stale (files changed since the last read,
 * refreshed on access), empty (no events yet).
 */
import * as fs from "node:fs";
import { listEventFiles, parseEventRecords } from "./tfevents.ts";

export type CacheState = "fresh" | "stale" | "empty";

interface RunCache {
  files: Map<string, { offset: number; mtimeMs: number; size: number }>;
  series: Map<string, [number, number][]>;
  wallTimes: Map<string, [number, number][]>;
  /** Bytes read from disk so far (what "O(new bytes)" is measured by). */
  bytesRead: number;
  /** Why a file stopped being read (a damaged record), by file. */
  errors: Map<string, string>;
}

export class MetricsReader {
  private runs = new Map<string, RunCache>();

  private cache(runDir: string): RunCache {
    let c = this.runs.get(runDir);
    if (!c) this.runs.set(runDir, c = { files: new Map(), series: new Map(), wallTimes: new Map(), bytesRead: 0, errors: new Map() });
    return c;
  }

  /** Whether the cache matches the files on disk, without reading them. */
  state(runDir: string): CacheState {
    const files = listEventFiles(runDir);
    if (files.length === 0) return "empty";
    const c = this.cache(runDir);
    for (const f of files) {
      const known = c.files.get(f);
      let st: fs.Stats;
      try {
        st = fs.statSync(f);
      } catch {
        continue;
      }
      if (!known || known.size !== st.size || known.mtimeMs !== st.mtimeMs) return "stale";
    }
    return "fresh";
  }

  /** Reads whatever was appended since the last call. Cost: O(new bytes). */
  refresh(runDir: string): CacheState {
    const state = this.state(runDir);
    if (state !== "stale") return state;
    const c = this.cache(runDir);
    for (const f of listEventFiles(runDir)) {
      const known = c.files.get(f) ?? { offset: 0, mtimeMs: 0, size: 0 };
      const st = fs.statSync(f);
      if (st.size === known.size && st.mtimeMs === known.mtimeMs) continue;
      if (st.size < known.offset) {
        // Replaced file: start over for it.
        known.offset = 0;
      }
      if (c.errors.has(f)) {
        // A damaged file is not read again (TensorBoard stops at the same place).
        c.files.set(f, { offset: known.offset, mtimeMs: st.mtimeMs, size: st.size });
        continue;
      }
      const fd = fs.openSync(f, "r");
      try {
        const len = st.size - known.offset;
        const buf = new Uint8Array(len);
        const got = fs.readSync(fd, buf, 0, len, known.offset);
        c.bytesRead += got;
        let parsed: ReturnType<typeof parseEventRecords>;
        try {
          parsed = parseEventRecords(buf.subarray(0, got), 0, f);
        } catch (e) {
          c.errors.set(f, `${(e as Error).message} (after byte ${known.offset}); later records of this file are not shown`);
          c.files.set(f, { offset: known.offset, mtimeMs: st.mtimeMs, size: st.size });
          continue;
        }
        const { scalars, offset } = parsed;
        for (const s of scalars) {
          let arr = c.series.get(s.tag);
          if (!arr) c.series.set(s.tag, arr = []);
          // A resumed run rewrites steps after its checkpoint: drop the overwritten tail.
          while (arr.length && arr[arr.length - 1][0] >= s.step) arr.pop();
          arr.push([s.step, s.value]);
          let wt = c.wallTimes.get(s.tag);
          if (!wt) c.wallTimes.set(s.tag, wt = []);
          while (wt.length && wt[wt.length - 1][0] >= s.step) wt.pop();
          wt.push([s.step, s.wallTime]);
        }
        c.files.set(f, { offset: known.offset + offset, mtimeMs: st.mtimeMs, size: st.size });
      } finally {
        fs.closeSync(fd);
      }
    }
    return "fresh";
  }

  /** Points with step > after, for one tag. */
  scalars(runDir: string, tag: string, after = -Infinity): [number, number][] {
    this.refresh(runDir);
    const arr = this.cache(runDir).series.get(tag) ?? [];
    // Binary search for the first step > after.
    let lo = 0, hi = arr.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (arr[mid][0] <= after) lo = mid + 1;
      else hi = mid;
    }
    return arr.slice(lo);
  }

  tags(runDir: string): string[] {
    this.refresh(runDir);
    return [...this.cache(runDir).series.keys()];
  }

  /** The last value of a tag, or undefined. */
  last(runDir: string, tag: string): [number, number] | undefined {
    this.refresh(runDir);
    return this.cache(runDir).series.get(tag)?.at(-1);
  }

  /** First and last wall time (seconds) of a tag. */
  wallRange(runDir: string, tag: string): [number, number] | undefined {
    this.refresh(runDir);
    const wt = this.cache(runDir).wallTimes.get(tag);
    return wt?.length ? [wt[0][1], wt[wt.length - 1][1]] : undefined;
  }

  /** Wall time (seconds) at which `tag` was written for `step`, if it was. */
  wallTimeAt(runDir: string, tag: string, step: number): number | undefined {
    this.refresh(runDir);
    const wt = this.cache(runDir).wallTimes.get(tag) ?? [];
    let lo = 0, hi = wt.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (wt[mid][0] < step) lo = mid + 1;
      else hi = mid;
    }
    return wt[lo]?.[0] === step ? wt[lo][1] : undefined;
  }

  /**
   * Seconds the latest evaluation took: the trainer writes a step's train scalars, then evaluates,
   * then writes eval/loss for the same step, so the gap between the two wall times is the eval.
   */
  lastEvalSeconds(runDir: string): number | undefined {
    this.refresh(runDir);
    const ev = this.cache(runDir).wallTimes.get("eval/loss")?.at(-1);
    if (!ev) return undefined;
    const train = this.wallTimeAt(runDir, "train/loss", ev[0]);
    return train !== undefined && ev[1] >= train ? ev[1] - train : undefined;
  }

  /** Mean of a tag over its last n points. */
  mean(runDir: string, tag: string, n = 20): number | undefined {
    this.refresh(runDir);
    const arr = this.cache(runDir).series.get(tag);
    if (!arr?.length) return undefined;
    const tail = arr.slice(-n);
    return tail.reduce((s, p) => s + p[1], 0) / tail.length;
  }

  /** Bytes read so far for a run and the files that could not be read further. */
  stats(runDir: string): { bytesRead: number; errors: string[] } {
    const c = this.cache(runDir);
    return { bytesRead: c.bytesRead, errors: [...c.errors.values()] };
  }

  forget(runDir: string): void {
    this.runs.delete(runDir);
  }
}

/** Downsamples to at most `max` points (every k-th plus the last). */
export function downsample(points: [number, number][], max: number): [number, number][] {
  if (points.length <= max) return points;
  const k = Math.ceil(points.length / max);
  const out = points.filter((_, i) => i % k === 0);
  if (out.at(-1) !== points.at(-1)) out.push(points.at(-1)!);
  return out;
}

/** One run's metrics, read through the shared reader: what the routes see (no run directory to pass). */
export class RunMetrics {
  constructor(private readonly reader: MetricsReader, readonly runDir: string) {}
  state(): CacheState {
    return this.reader.state(this.runDir);
  }
  scalars(tag: string, after?: number): [number, number][] {
    return this.reader.scalars(this.runDir, tag, after);
  }
  last(tag: string): [number, number] | undefined {
    return this.reader.last(this.runDir, tag);
  }
  mean(tag: string, n?: number): number | undefined {
    return this.reader.mean(this.runDir, tag, n);
  }
  wallRange(tag: string): [number, number] | undefined {
    return this.reader.wallRange(this.runDir, tag);
  }
  lastEvalSeconds(): number | undefined {
    return this.reader.lastEvalSeconds(this.runDir);
  }
  stats(): { bytesRead: number; errors: string[] } {
    return this.reader.stats(this.runDir);
  }
}
