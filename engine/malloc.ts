/**
 * glibc's malloc keeps freed memory unless told otherwise (docs/ORT.md §Feeds and outputs). Its mmap threshold is
 * dynamic: once a large block it had mapped is freed, blocks up to that size (up to 32 MiB) come from the
 * heap instead, and a freed heap block below a live one cannot go back to the system. A training step
 * allocates and frees many such buffers (ONNX Runtime's intermediates and outputs, the LM head's chunks, the
 * dequantized frozen weights), so the heap only grows: gemma-3-1b LoRA on an int4 base peaked at 2247 MB
 * this way and at 1364 MB with the threshold fixed at 1 MiB (notes/PERF.md "Memory the heap kept").
 *
 * `limitHeapRetention` fixes the threshold with `mallopt(M_MMAP_THRESHOLD, 1 MiB)`, which also stops the
 * dynamic adjustment: every block of 1 MiB or more is mapped on its own and unmapped when freed. It needs
 * the FFI permission and glibc (Linux); elsewhere it does nothing and says why. Where the environment
 * already sets glibc's MALLOC_MMAP_THRESHOLD_, that setting stands.
 */

/** glibc's `M_MMAP_THRESHOLD` parameter of `mallopt` (malloc.h). */
const M_MMAP_THRESHOLD = -3;

/** glibc's environment variable for the same setting. */
const ENV = "MALLOC_MMAP_THRESHOLD_";

/** Blocks of this many bytes and more are mapped on their own (and returned to the system when freed). */
export const MMAP_THRESHOLD = 1 << 20;

export type HeapRetention = { limited: true } | { limited: false; reason: string };

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
