/**
 * engine/malloc.ts: with the mmap threshold fixed, freed large blocks leave the process; without it glibc
 * keeps them (the same program, both ways, each in its own process since the setting is process-wide).
 */
import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";

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
