/**
 * The Hugging Face Hub id of a local model directory, when it is one the Hub cache holds:
 * `<cache>/models--org--name/snapshots/<commit>` (engine/hub.ts publishes downloads there). Written
 * into exports (adapter_config.json's base_model_name_or_path, GGUF metadata) instead of a local path
 * that means nothing on another machine.
 */
import * as fs from "node:fs";
import * as path from "node:path";

const SNAPSHOT = /(?:^|[\\/])models--([A-Za-z0-9][A-Za-z0-9._-]*?)--([A-Za-z0-9][A-Za-z0-9._-]*)[\\/]snapshots[\\/][^\\/]+[\\/]?$/;

/** "org/name" for a snapshot folder of the HF cache (the path as given, or what its links resolve to), else null. */
export function hubIdOf(dir: string): string | null {
  if (!dir) return null;
  const direct = SNAPSHOT.exec(path.resolve(dir));
  if (direct) return `${direct[1]}/${direct[2]}`;
  try {
    const real = SNAPSHOT.exec(fs.realpathSync(dir));
    if (real) return `${real[1]}/${real[2]}`;
  } catch { /* not a local path (e.g. already a Hub id) */ }
  return null;
}
