/**
 * The one timeout setting of the tests. Every test and browser timeout is a base value here times
 * `$GT_TEST_TIMEOUT_SCALE` (default 1): on a loaded machine, `GT_TEST_TIMEOUT_SCALE=3 deno task test`
 * stretches them all together. Waits poll for their condition; these limits only decide when a
 * condition that never comes is reported as a failure.
 */
const raw = Deno.env.get("GT_TEST_TIMEOUT_SCALE");
const scale = raw === undefined ? 1 : Number(raw);
if (!Number.isFinite(scale) || scale <= 0) throw new RangeError(`GT_TEST_TIMEOUT_SCALE must be a positive number, got "${raw}"`);

/** `baseMs` scaled by the setting. */
export function timeout(baseMs: number): number {
  return Math.round(baseMs * scale);
}

export const TIMEOUTS = {
  /** An HTTP request or a page of the app answering. */
  request: timeout(30_000),
  /** A child process starting (deno run compiles the module graph first) or a CLI verb finishing. */
  process: timeout(120_000),
  /** A browser navigation or protocol call. */
  browser: timeout(120_000),
  /** A real training run of the demo model reaching a state. */
  training: timeout(600_000),
};

/** Polls `cond` every `everyMs` until it is truthy, or throws naming `what` after `limitMs`. */
export async function waitFor<T>(what: string, cond: () => T | Promise<T>, limitMs = TIMEOUTS.request, everyMs = 50): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${limitMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
