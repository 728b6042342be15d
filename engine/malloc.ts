/**
 * glibc's malloc keeps freed memory unless told otherwise (docs/ORT.md §Feeds and outputs). Its mmap threshold is
 * dynamic: once a large block it had mapped is freed, blocks up to that size (up to 32 MiB) come from the
 * heap instead, and a freed heap block below a live one cannot go back to the system. A training step
 * allocates and frees many such buffers (ONNX Runtime's intermediates and outputs, the LM head's chunks, the
 * dequantized frozen weights), so the heap only grows: gemma-3-1b LoRA on an int4 base peaked at 2247 MB
 * this way and at 1364 MB with the threshold fixed at 1 MiB (notes/PERF.md "Memory the heap kept").
 *
 * `limitHeapRetention` fixes the threshold with `mallopt(M_MMAP_THRESHOLD, 1 MiB)`, which also stops the
 * dynamic adjustment: every block of 1 MiB or more is mapped on its own and unmapped when freed. That
 * costs speed at real sizes: on a 2-core Zen 5 host, gemma-3-270m LoRA at 4 × 256 stepped 27 % slower
 * and its first step took 34 s instead of 10–13 s; a real 270m run's first step came 16 s after `train`
 * started instead of 10.7 s (notes/PERF.md "The fixed mmap threshold at real sizes"). So it is not the
 * default: `heapModeFor` turns it on for a run whose estimated memory, at the retention glibc's default
 * showed, would not fit the memory the run can have (`availableMemoryBytes`); GEMMA_TUNER_HEAP=lean|default
 * decides instead.
 * It needs the FFI permission and glibc (Linux); elsewhere it does nothing and says why. Where the
 * environment already sets glibc's MALLOC_MMAP_THRESHOLD_, that setting stands.
 */

/** glibc's `M_MMAP_THRESHOLD` parameter of `mallopt` (malloc.h). */
const M_MMAP_THRESHOLD = -3;

/** glibc's environment variable for the same setting. */
const ENV = "MALLOC_MMAP_THRESHOLD_";

/** Blocks of this many bytes and more are mapped on their own (and returned to the system when freed). */
export const MMAP_THRESHOLD = 1 << 20;

export type HeapRetention = { limited: true } | { limited: false; reason: string };

/** The environment variable that decides the heap mode instead of the estimate. */
export const HEAP_ENV = "GEMMA_TUNER_HEAP";

/**
 * Peak RSS with glibc's default over the peak with the threshold fixed, as measured at 4 × 256: 1.56–1.73
 * (gemma-3-1b int4/int8, gemma-3-270m int8) and 2.1 (gemma-3-270m bf16) in notes/PERF.md; the memory
 * estimate counts what is alive, which the fixed threshold's peak follows.
 */
export const DEFAULT_RETENTION = 2;

/** Of the memory available, the share a run may plan to use before the heap is kept lean. */
export const AVAILABLE_SHARE = 0.8;

export interface HeapDecision {
  mode: "lean" | "default";
  /** Why, in the words the run's log shows. */
  reason: string;
}

/**
 * The heap mode for a run: GEMMA_TUNER_HEAP (`lean` or `default`) where set (`env`), else lean when the
 * run's estimated memory times DEFAULT_RETENTION exceeds AVAILABLE_SHARE of the available memory.
 * Throws RangeError naming the variable for any other value.
 */
export function heapModeFor(estimateBytes: number, availableBytes: number, env: string | undefined): HeapDecision {
  const mb = (b: number) => `${Math.round(b / 2 ** 20)} MB`;
  if (env !== undefined && env !== "") {
    if (env !== "lean" && env !== "default") {
      throw new RangeError(`${HEAP_ENV}=${env}: use "lean" (freed buffers go back to the system at once: lower peak, slower steps) or "default" (glibc's own behaviour)`);
    }
    return { mode: env, reason: `${HEAP_ENV}=${env}` };
  }
  const need = estimateBytes * DEFAULT_RETENTION, room = availableBytes * AVAILABLE_SHARE;
  return need > room
    ? {
      mode: "lean",
      reason: `the estimate ${mb(estimateBytes)} × ${DEFAULT_RETENTION} (glibc's retention) is above ${AVAILABLE_SHARE * 100} % of the ${mb(availableBytes)} available`,
    }
    : { mode: "default", reason: `the estimate ${mb(estimateBytes)} × ${DEFAULT_RETENTION} fits ${AVAILABLE_SHARE * 100} % of the ${mb(availableBytes)} available` };
}

/**
 * Memory a run in this process can have, in bytes: what the system could still give it (MemAvailable on
 * Linux) plus what the process already holds. The trainer asks after loading the model, and the estimate
 * it compares against counts the loaded weights too.
 */
export function availableMemoryBytes(): number {
  return Deno.systemMemoryInfo().available + Deno.memoryUsage().rss;
}

let done: HeapRetention | null = null;

/** Sets glibc's mmap threshold once per process (later calls return the first result). */
export function limitHeapRetention(): HeapRetention {
  if (done) return done;
  done = apply();
  return done;
}

/** What `limitHeapRetention` did in this process, or null if nothing called it. */
export function heapRetention(): HeapRetention | null {
  return done;
}

function apply(): HeapRetention {
  if (Deno.build.os !== "linux") return { limited: false, reason: `not glibc (${Deno.build.os})` };
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return { limited: false, reason: "no FFI permission" };
  // glibc's own variable, read at process start, is the user's choice (for example a large value: fewer
  // fresh mappings, a faster step at small shapes, a higher peak); it wins over ours.
  if (Deno.permissions.querySync({ name: "env", variable: ENV }).state === "granted" && Deno.env.get(ENV) !== undefined) {
    return { limited: false, reason: `${ENV} is set` };
  }
  let lib: Deno.DynamicLibrary<{ mallopt: { parameters: ["i32", "i32"]; result: "i32" } }>;
  try {
    lib = Deno.dlopen("libc.so.6", { mallopt: { parameters: ["i32", "i32"], result: "i32" } });
  } catch (e) {
    // musl (Alpine) has no libc.so.6 and no mallopt.
    return { limited: false, reason: `no glibc: ${(e as Error).message}` };
  }
  // mallopt returns 1 on success. The setting is process-wide, so the library handle is not needed again.
  const ok = lib.symbols.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) === 1;
  return ok ? { limited: true } : { limited: false, reason: "mallopt refused M_MMAP_THRESHOLD" };
}
