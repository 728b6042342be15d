/**
 * engine/malloc_test.ts's subprocess: the heap behaviour limitHeapRetention changes, with glibc's own
 * malloc and free. Argument "limited" calls it first. Prints {before, after}: resident MB with 64 blocks of
 * 4 MiB alive, then after freeing every other one (the pattern of a step's buffers).
 */
import { limitHeapRetention } from "./malloc.ts";

const limited = Deno.args[0] === "limited" ? limitHeapRetention() : null;
const libc = Deno.dlopen("libc.so.6", {
  malloc: { parameters: ["usize"], result: "pointer" },
  free: { parameters: ["pointer"], result: "void" },
});
// Resident memory as the trainer reports it (trainer/worker.ts `system/rss_mb`).
const rssMb = () => Deno.memoryUsage().rss / 2 ** 20;
const touch = (p: Deno.PointerValue, n: number) => new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p!, n)).fill(1);

// A 16 MiB block, mapped and freed: without a fixed threshold this raises glibc's to 16 MiB.
const big = libc.symbols.malloc(16n << 20n);
touch(big, 16 << 20);
libc.symbols.free(big);
const blocks: Deno.PointerValue[] = [];
for (let i = 0; i < 64; i++) {
  const p = libc.symbols.malloc(4n << 20n);
  touch(p, 4 << 20);
  blocks.push(p);
}
const before = rssMb();
for (let i = 0; i < 64; i += 2) libc.symbols.free(blocks[i]);
const after = rssMb();
console.log(JSON.stringify({ limited, before, after }));
