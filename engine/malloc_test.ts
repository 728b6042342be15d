/**
 * engine/malloc.ts: with the mmap threshold fixed, freed large blocks leave the process; without it glibc
 * keeps them (the same program, both ways, each in its own process since the setting is process-wide).
 */
import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { heapModeFor } from "./malloc.ts";

async function probe(mode: "limited" | "default", env: Record<string, string> = {}): Promise<{ limited: unknown; before: number; after: number }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fileURLToPath(new URL("./malloc_probe.ts", import.meta.url)), mode],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  ok(out.success, `malloc_probe.ts ${mode} failed: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(text.trim().split("\n").pop()!);
}

Deno.test({
  name: "limitHeapRetention: half of 64 freed 4 MiB blocks go back to the system, where glibc's default keeps them",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const fixed = await probe("limited");
    ok((fixed.limited as { limited: boolean }).limited, `mallopt was not applied: ${JSON.stringify(fixed.limited)}`);
    // 32 blocks of 4 MiB freed: 128 MB returned (some slack for the runtime's own allocations meanwhile).
    ok(fixed.before - fixed.after >= 100, `limited: ${fixed.before.toFixed(0)} → ${fixed.after.toFixed(0)} MB, expected about 128 MB returned`);
    const plain = await probe("default");
    ok(
      plain.before - plain.after < 50,
      `default: ${plain.before.toFixed(0)} → ${plain.after.toFixed(0)} MB; glibc returned the heap blocks, so this test no longer shows the setting matters`,
    );
  },
});

Deno.test({
  name: "limitHeapRetention leaves glibc's MALLOC_MMAP_THRESHOLD_ alone where the environment sets it",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    // A threshold above the blocks' size: glibc's own variable keeps them in the heap, as the user asked.
    const r = await probe("limited", { MALLOC_MMAP_THRESHOLD_: String(32 << 20) });
    eq(r.limited, { limited: false, reason: "MALLOC_MMAP_THRESHOLD_ is set" });
    ok(r.before - r.after < 50, `${r.before.toFixed(0)} → ${r.after.toFixed(0)} MB: the blocks left the heap although the variable asked to keep them`);
  },
});

Deno.test("heapModeFor: lean only where the estimate at glibc's retention would not fit; GEMMA_TUNER_HEAP decides where set", () => {
  const MB = 2 ** 20;
  // 2 × 4000 MB = 8000 MB against 80 % of 10000 MB: fits; 2 × 4100 = 8200 > 8000: lean.
  eq(heapModeFor(4000 * MB, 10000 * MB, undefined).mode, "default");
  const lean = heapModeFor(4100 * MB, 10000 * MB, undefined);
  eq(lean, { mode: "lean", reason: "the estimate 4100 MB × 2 (glibc's retention) is above 80 % of the 10000 MB available" });
  eq(heapModeFor(4100 * MB, 10000 * MB, ""), lean);
  eq(heapModeFor(1 * MB, 10000 * MB, "lean"), { mode: "lean", reason: "GEMMA_TUNER_HEAP=lean" });
  eq(heapModeFor(9000 * MB, 10000 * MB, "default"), { mode: "default", reason: "GEMMA_TUNER_HEAP=default" });
  let err: unknown = null;
  try {
    heapModeFor(1, 1, "fast");
  } catch (e) {
    err = e;
  }
  ok(err instanceof RangeError && err.message.startsWith('GEMMA_TUNER_HEAP=fast: use "lean"'), String(err));
});
