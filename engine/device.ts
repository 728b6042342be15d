/**
 * The devices a session can run on, and the error for one that is not available. Kept apart from
 * session.ts so that parsing a --device flag does not load ONNX Runtime.
 */

export type Device = "cpu" | "webgpu" | "cuda";
export const DEVICES: Device[] = ["cpu", "webgpu", "cuda"];

/** A device that cannot be used here; the message names it and what it needs (no silent CPU fall back). */
export class DeviceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DeviceError";
  }
}
