/** The assertions every test uses (std/assert is not reachable here: JSR is not). */

/** Throws `msg` unless `cond` holds. */
export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Deep equality by JSON (the values tests compare are plain data). */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${msg ? msg + ": " : ""}expected ${e}, got ${a}`);
}

/** Throws unless `fn` throws an error whose message matches `pattern`; returns that error. */
export function assertThrows(fn: () => unknown, pattern?: RegExp, msg?: string): Error {
  try {
    fn();
  } catch (e) {
    const err = e as Error;
    if (pattern && !pattern.test(err.message)) throw new Error(`${msg ? msg + ": " : ""}error "${err.message}" does not match ${pattern}`);
    return err;
  }
  throw new Error(`${msg ? msg + ": " : ""}expected an error, got none`);
}
