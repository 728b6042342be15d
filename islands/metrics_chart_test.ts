import { deepStrictEqual as eq } from "node:assert/strict";
import { tickLabel } from "./MetricsChart.tsx";

Deno.test("chart ticks: decimals follow the tick spacing, float noise is gone, tiny and huge values use exponents", () => {
  // A learning-rate axis from 0 to 0.01 in steps of 0.002, as chart.js computes it (with float noise).
  eq([0, 0.002, 0.004, 0.006000000000000001, 0.008, 0.009999900000000001].map((v) => tickLabel(v, 0.002)), ["0", "0.002", "0.004", "0.006", "0.008", "0.01"]);
  // A tight range keeps the digits that tell the ticks apart.
  eq([0.00999, 0.009995, 0.01].map((v) => tickLabel(v, 0.000005)), ["0.00999", "0.009995", "0.01"]);
  eq([1.5, 2, 2.5].map((v) => tickLabel(v, 0.5)), ["1.5", "2", "2.5"]);
  eq([1000, 2000].map((v) => tickLabel(v, 1000)), ["1000", "2000"]);
  eq(tickLabel(0.00002, 0.00001), "2e-5");
  eq(tickLabel(0.000025, 0.000005), "2.5e-5");
  eq(tickLabel(3_000_000, 1_000_000), "3e6");
  eq(tickLabel(-0.5, 0.25), "-0.5");
});
