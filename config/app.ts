/**
 * App settings: the one place that reads the environment. Every other module gets what it needs
 * from here (data dir, host/port, token, device).
 */
import * as os from "node:os";
import * as path from "node:path";
import { z } from "zod";
import { formatIssues } from "./training.ts";

export const VERSION = "0.1.0";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);

export function isLoopback(host: string): boolean {
  return LOOPBACK.has(host) || host.startsWith("127.");
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** --data, else $GEMMA_TUNER_HOME, else the platform's data directory. */
export function resolveDataDir(flag?: string): string {
  if (flag) return path.resolve(flag);
  const home = env("GEMMA_TUNER_HOME");
  if (home) return path.resolve(home);
  return platformDataDir();
}

export function platformDataDir(platform = Deno.build.os): string {
  const userHome = env("HOME") ?? env("USERPROFILE") ?? os.homedir();
  if (platform === "darwin") return path.join(userHome, "Library", "Application Support", "gemma-tuner");
  if (platform === "windows") return path.join(env("APPDATA") ?? path.join(userHome, "AppData", "Roaming"), "gemma-tuner");
  return path.join(env("XDG_DATA_HOME") ?? path.join(userHome, ".local", "share"), "gemma-tuner");
}

/** Hugging Face cache directories to scan for models ($HF_HOME/hub, else ~/.cache/huggingface/hub). */
export function huggingFaceCacheDirs(): string[] {
  const dirs: string[] = [];
  const hfHome = env("HF_HOME");
  if (env("HF_HUB_CACHE")) dirs.push(env("HF_HUB_CACHE")!);
  if (hfHome) dirs.push(path.join(hfHome, "hub"));
  dirs.push(path.join(env("HOME") ?? os.homedir(), ".cache", "huggingface", "hub"));
  return [...new Set(dirs)];
}

export const AppSettingsSchema = z.object({
  host: z.string().min(1).max(255),
  port: z.number().int().min(0).max(65535),
  dataDir: z.string().min(1),
  token: z.string().min(16, "the token must be at least 16 characters").max(512).optional(),
  open: z.boolean(),
  /** Upload size limit in bytes. */
  maxUploadBytes: z.number().int().positive(),
  /** Seconds between SIGTERM and SIGKILL when aborting a run. */
  abortGraceSeconds: z.number().positive(),
}).superRefine((s, ctx) => {
  if (!isLoopback(s.host) && !s.token) {
    ctx.addIssue({
      code: "custom",
      path: ["token"],
      message: `binding ${s.host} (not loopback) requires --token (or GEMMA_TUNER_TOKEN): anyone who can reach the port could otherwise train and read your data`,
    });
  }
});

export type AppSettings = z.infer<typeof AppSettingsSchema>;

export interface ServeFlags {
  host?: string;
  port?: number;
  data?: string;
  token?: string;
  open?: boolean;
}

/** Builds validated settings from flags and the environment; throws RangeError naming each field. */
export function loadAppSettings(f: ServeFlags): AppSettings {
  const r = AppSettingsSchema.safeParse({
    host: f.host ?? "127.0.0.1",
    port: f.port ?? 8080,
    dataDir: resolveDataDir(f.data),
    token: f.token ?? env("GEMMA_TUNER_TOKEN"),
    open: f.open ?? false,
    maxUploadBytes: Number(env("GEMMA_TUNER_MAX_UPLOAD_MB") ?? 200) * 1024 * 1024,
    abortGraceSeconds: Number(env("GEMMA_TUNER_ABORT_GRACE_S") ?? 30),
  });
  if (!r.success) throw new RangeError(formatIssues(r.error));
  return r.data;
}

/** True when running as a `deno compile` binary. */
export function isCompiled(): boolean {
  return !path.basename(Deno.execPath()).startsWith("deno");
}

/**
 * The command line that re-invokes this program with `args`: the compiled executable itself, or
 * `deno run -A main.ts` in development.
 */
export function selfCommand(args: string[]): { cmd: string; args: string[] } {
  if (isCompiled()) return { cmd: Deno.execPath(), args };
  const main = new URL("../main.ts", import.meta.url).pathname;
  const config = new URL("../deno.json", import.meta.url).pathname;
  return { cmd: Deno.execPath(), args: ["run", "-A", "--config", config, "--v8-flags=--max-old-space-size=8192", main, ...args] };
}

/** The full path of an executable `name` on PATH (`pathEnv`, default $PATH), or null. */
export function findOnPath(name: string, pathEnv = env("PATH") ?? ""): string | null {
  const exts = Deno.build.os === "windows" ? ["", ".exe", ".cmd", ".bat"] : [""];
  for (const dir of pathEnv.split(path.delimiter)) {
    if (!dir) continue;
    for (const ext of exts) {
      const file = path.join(dir, name + ext);
      try {
        const st = Deno.statSync(file);
        if (st.isFile && (Deno.build.os === "windows" || ((st.mode ?? 0) & 0o111) !== 0)) return file;
      } catch { /* not here */ }
    }
  }
  return null;
}

/** Where Hub downloads come from and go: $HF_ENDPOINT, $HF_TOKEN (else the token file `hf auth login` writes), the cache. */
export function hubSettings(): { endpoint: string; token?: string; cacheDir: string } {
  const hfHome = env("HF_HOME") ?? path.join(env("HOME") ?? os.homedir(), ".cache", "huggingface");
  let token = env("HF_TOKEN");
  if (!token) {
    try {
      token = Deno.readTextFileSync(env("HF_TOKEN_PATH") ?? path.join(hfHome, "token")).trim() || undefined;
    } catch { /* no saved token */ }
  }
  return { endpoint: env("HF_ENDPOINT") ?? "https://huggingface.co", token, cacheDir: huggingFaceCacheDirs()[0] };
}
