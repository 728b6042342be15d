/** engine/bench.ts: the host named in every result. */
import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { hostCpu } from "./bench.ts";

Deno.test("bench names the host's processor: model name with family and model from /proc/cpuinfo", () => {
  const cpuinfo = [
    "processor\t: 0",
    "vendor_id\t: AuthenticAMD",
    "cpu family\t: 25",
    "model\t\t: 17",
    "model name\t: AMD EPYC",
    "stepping\t: 1",
    "",
    "processor\t: 1",
    "cpu family\t: 25",
    "model\t\t: 17",
    "model name\t: AMD EPYC",
  ].join("\n");
  eq(hostCpu(cpuinfo), "AMD EPYC (family 25, model 17)");
  // Without /proc/cpuinfo (macOS, Windows): the runtime's model string, never empty.
  const fallback = hostCpu(null);
  ok(fallback.length > 0 && !fallback.includes("family"), fallback);
});
