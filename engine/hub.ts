/**
 * Models from the Hugging Face Hub, into the standard HF cache layout so every other tool reuses them
 * (docs/HUB.md): `<cache>/models--org--name/{blobs/<etag>, snapshots/<commit>/<file> → ../../blobs/<etag>,
 * refs/<revision>}`. @huggingface/hub does the API calls (model info, file listing); the bytes are
 * fetched here because this needs what its helpers do not offer together: Range resume of a
 * `blobs/<etag>.incomplete`, progress, cancel, and verification of size and sha256 (LFS) or git oid.
 *
 * Nothing half-written is ever visible: refusals (unknown repo, gated, not a Gemma, disk too small)
 * happen before any write; a blob is renamed into place only once verified; the snapshot folder is
 * built aside and renamed once every blob is there. A broken connection leaves only the
 * `.incomplete` file that the next try resumes from (as huggingface_hub does); cancel removes it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { HubApiError, listFiles, modelInfo } from "@huggingface/hub";
import { normalizeConfig } from "./gemma/config.ts";

export type HubErrorKind = "not-found" | "gated" | "not-gemma" | "disk-full" | "verify" | "cancelled" | "network";

/** A refusal or failure a person can act on; `kind` lets the UI and CLI choose how to show it. */
export class HubError extends Error {
  constructor(readonly kind: HubErrorKind, message: string) {
    super(message);
    this.name = "HubError";
  }
}

export interface HubFile {
  path: string;
  size: number;
  /** The blob name: sha256 for LFS files, the git blob oid otherwise (what the Hub's ETag carries). */
  etag: string;
  sha256?: string;
}

export interface RepoPlan {
  repo: string;
  revision: string;
  sha: string;
  gated: boolean;
  files: HubFile[];
  totalBytes: number;
  /** Bytes still to fetch (files not already in the cache). */
  neededBytes: number;
  modelType: string;
  repoDir: string;
}

export interface HubOptions {
  repo: string;
  revision?: string;
  token?: string;
  endpoint: string;
  cacheDir: string;
  signal?: AbortSignal;
  onProgress?: (p: { file: string; doneBytes: number; totalBytes: number }) => void;
  /** Free bytes where `dir` lives (tests pass a small number to check the refusal). */
  freeBytes?: (dir: string) => number;
  /** Also take a repo that holds a PEFT adapter (adapter_config.json, no config.json): what `import --repo` downloads. */
  allowAdapter?: boolean;
}

const REPO = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;
// Other formats of the same weights: not needed to train or chat here.
const SKIP = /(\.(bin|pth|pt|gguf|onnx|onnx_data|msgpack|h5|ot|tflite)|^original\/.*)$/;
const MARGIN = 16 * 1024 * 1024;

export function repoFolder(cacheDir: string, repo: string): string {
  return path.join(cacheDir, `models--${repo.replace("/", "--")}`);
}

/** The Hub's answer as a HubError in plain words (the gated case says what to do on the website). */
function explain(e: unknown, o: HubOptions): Error {
  if (e instanceof HubError) return e;
  if (e instanceof HubApiError) {
    const page = `${o.endpoint.replace(/\/$/, "")}/${o.repo}`;
    if (e.statusCode === 404) {
      return new HubError(
        "not-found",
        `No model "${o.repo}"${o.revision ? ` at revision "${o.revision}"` : ""} on ${o.endpoint}: check the spelling (ORG/NAME, as in the model page's address)`,
      );
    }
    if (e.statusCode === 401) {
      return new HubError(
        "gated",
        `${o.repo} is gated or private: the Hub wants to know who you are. Sign in on ${page}, accept the licence there ` +
          `(one click, "Acknowledge license"), create a read token under Settings → Access Tokens, and give it with --token or HF_TOKEN (in the app: the Token field).`,
      );
    }
    if (e.statusCode === 403) {
      return new HubError(
        "gated",
        `Your token cannot read ${o.repo}: its licence has not been accepted for this account (or the request is pending). ` +
          `Open ${page} signed in as the token's owner, accept the licence, wait for access to be granted, then try again.`,
      );
    }
    return new HubError("network", `The Hub answered ${e.statusCode} for ${o.repo}: ${e.message}`);
  }
  if ((e as Error)?.name === "AbortError") return new HubError("cancelled", `Download of ${o.repo} cancelled`);
  if (e instanceof TypeError) return new HubError("network", `Cannot reach ${o.endpoint} (${e.message}); check the network or HF_ENDPOINT`);
  return e as Error;
}

function authHeaders(token?: string): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function resolveUrl(o: HubOptions, rev: string, file: string): string {
  return `${o.endpoint.replace(/\/$/, "")}/${o.repo}/resolve/${encodeURIComponent(rev)}/${file.split("/").map(encodeURIComponent).join("/")}`;
}

/** The repo's commit, files and what is left to fetch; refuses a non-Gemma model before any write. */
export async function planDownload(o: HubOptions): Promise<RepoPlan> {
  if (!REPO.test(o.repo)) throw new HubError("not-found", `"${o.repo}" is not a model name: write it as ORG/NAME, e.g. google/gemma-3-270m-it`);
  const revision = o.revision || "main";
  const creds = { hubUrl: o.endpoint.replace(/\/$/, ""), accessToken: o.token, fetch: (u: RequestInfo | URL, i?: RequestInit) => fetch(u, { ...i, signal: o.signal }) };
  try {
    const info = await modelInfo({ name: o.repo, revision, additionalFields: ["sha"], ...creds });
    const sha = String((info as { sha?: string }).sha ?? "");
    if (!/^[0-9a-f]{40}$/.test(sha)) throw new HubError("network", `The Hub gave no commit for ${o.repo}@${revision}`);
    const files: HubFile[] = [];
    for await (const f of listFiles({ repo: o.repo, revision: sha, recursive: true, ...creds })) {
      if (f.type !== "file" || SKIP.test(f.path)) continue;
      files.push({ path: f.path, size: f.size, etag: f.lfs?.oid ?? f.oid ?? "", sha256: f.lfs?.oid });
    }
    const adapterOnly = o.allowAdapter && !files.some((f) => f.path === "config.json") && files.some((f) => f.path === "adapter_config.json");
    if (!adapterOnly && !files.some((f) => f.path === "config.json")) {
      throw new HubError("not-gemma", `${o.repo} has no config.json: it is not a Transformers model gemma-tuner can train`);
    }
    const cfg = await fetch(resolveUrl(o, sha, adapterOnly ? "adapter_config.json" : "config.json"), { headers: authHeaders(o.token), signal: o.signal });
    if (!cfg.ok) throw new HubError("network", `Cannot read ${o.repo}/config.json: the Hub answered ${cfg.status}`);
    const raw = await cfg.json();
    if (!adapterOnly) {
      try {
        normalizeConfig(raw, `${o.repo}/config.json`);
      } catch (e) {
        throw new HubError("not-gemma", `${o.repo} is not a Gemma model gemma-tuner can train (${(e as Error).message})`);
      }
    }
    const repoDir = repoFolder(o.cacheDir, o.repo);
    const have = (f: HubFile) => fs.existsSync(path.join(repoDir, "blobs", f.etag));
    const partial = (f: HubFile) => fs.statSync(path.join(repoDir, "blobs", `${f.etag}.incomplete`), { throwIfNoEntry: false })?.size ?? 0;
    const neededBytes = files.filter((f) => !have(f)).reduce((s, f) => s + f.size - Math.min(partial(f), f.size), 0);
    const totalBytes = files.reduce((s, f) => s + f.size, 0);
    return { repo: o.repo, revision, sha, gated: Boolean(info.gated), files, totalBytes, neededBytes, modelType: adapterOnly ? "peft-adapter" : String(raw.model_type), repoDir };
  } catch (e) {
    throw explain(e, o);
  }
}

/** Free bytes on the disk that holds `dir` (its nearest existing ancestor). */
export function freeBytesAt(dir: string): number {
  let d = path.resolve(dir);
  while (!fs.existsSync(d) && path.dirname(d) !== d) d = path.dirname(d);
  const s = fs.statfsSync(d);
  return s.bavail * s.bsize;
}

/** Downloads the plan's files (resuming partial ones), verifies each, then publishes the snapshot. */
export async function downloadRepo(o: HubOptions, plan?: RepoPlan): Promise<RepoPlan & { dir: string }> {
  plan ??= await planDownload(o);
  ensureSpace(o, plan);
  const blobs = path.join(plan.repoDir, "blobs");
  fs.mkdirSync(blobs, { recursive: true });
  let done = plan.totalBytes - plan.neededBytes;
  for (const f of plan.files) {
    await fetchBlob(o, plan, f, (n) => {
      done += n;
      o.onProgress?.({ file: f.path, doneBytes: done, totalBytes: plan!.totalBytes });
    });
  }
  return { ...plan, dir: publishSnapshot(plan) };
}

/** Refuses (disk-full) when the cache's disk has less free space than the bytes still to fetch plus a margin. */
export function ensureSpace(o: Pick<HubOptions, "repo" | "cacheDir" | "freeBytes">, plan: Pick<RepoPlan, "neededBytes">): void {
  const free = (o.freeBytes ?? freeBytesAt)(o.cacheDir);
  if (plan.neededBytes + MARGIN > free) {
    throw new HubError(
      "disk-full",
      `${o.repo} needs ${mb(plan.neededBytes)} more in ${o.cacheDir} but only ${mb(free)} is free: free some space or point HF_HUB_CACHE at a larger disk`,
    );
  }
}

function mb(n: number): string {
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

async function fetchBlob(o: HubOptions, plan: RepoPlan, f: HubFile, progress: (n: number) => void): Promise<void> {
  const blob = path.join(plan.repoDir, "blobs", f.etag);
  if (fs.existsSync(blob)) return;
  const part = `${blob}.incomplete`;
  let have = fs.statSync(part, { throwIfNoEntry: false })?.size ?? 0;
  if (have > f.size) fs.rmSync(part), (have = 0);
  if (have < f.size) {
    let res: Response;
    try {
      res = await fetch(resolveUrl(o, plan.sha, f.path), { headers: { ...authHeaders(o.token), ...(have ? { Range: `bytes=${have}-` } : {}) }, signal: o.signal });
    } catch (e) {
      throw cleanup(explain(e, o), part);
    }
    if (!res.ok) throw new HubError("network", `Cannot download ${o.repo}/${f.path}: the Hub answered ${res.status}`);
    // A server that ignores Range sends the whole file again: start over rather than append it.
    const fd = fs.openSync(part, have && res.status === 206 ? "a" : "w");
    try {
      for await (const chunk of res.body!) {
        fs.writeSync(fd, chunk);
        progress(chunk.length);
      }
    } catch (e) {
      const err = (e as { code?: string }).code === "ENOSPC"
        ? new HubError("disk-full", `The disk filled up while writing ${f.path}; the partial file was removed: free some space and download again`)
        : explain(e, o);
      if (err instanceof HubError && err.kind === "network") err.message += ` (${f.path} stopped; downloading again resumes it)`;
      throw cleanup(err, part, fd);
    }
    fs.closeSync(fd);
  }
  await verify(part, f, o.repo);
  fs.renameSync(part, blob);
}

/** Removes the partial file when it should not be resumed (cancel, disk full, bad bytes). */
function cleanup(e: Error, part: string, fd?: number): Error {
  if (fd !== undefined) fs.closeSync(fd);
  if (e instanceof HubError && e.kind !== "network") fs.rmSync(part, { force: true });
  else if (!(e instanceof HubError)) fs.rmSync(part, { force: true });
  return e;
}

/** Hashes in 4 MB reads, each awaited, so a multi-GB weights file does not stall the app's event loop. */
async function verify(file: string, f: HubFile, repo: string): Promise<void> {
  const size = fs.statSync(file).size;
  const bad = (why: string) => {
    fs.rmSync(file, { force: true });
    return new HubError("verify", `${repo}/${f.path} failed verification (${why}); the file was removed: download again`);
  };
  if (size !== f.size) throw bad(`${size} bytes, the Hub lists ${f.size}`);
  const h = f.sha256 ? createHash("sha256") : createHash("sha1").update(`blob ${size}\0`);
  const fh = await fs.promises.open(file, "r");
  try {
    const buf = new Uint8Array(4 << 20);
    for (let n; (n = (await fh.read(buf, 0, buf.length, null)).bytesRead) > 0;) h.update(buf.subarray(0, n));
  } finally {
    await fh.close();
  }
  const got = h.digest("hex");
  if (got !== f.etag) throw bad(`${f.sha256 ? "sha256" : "git oid"} ${got.slice(0, 12)}…, expected ${f.etag.slice(0, 12)}…`);
}

/** snapshots/<sha>/<file> → ../../blobs/<etag>, built aside and renamed; refs/<revision> → sha. */
function publishSnapshot(plan: RepoPlan): string {
  const snaps = path.join(plan.repoDir, "snapshots");
  const dir = path.join(snaps, plan.sha);
  const tmp = fs.existsSync(dir) ? dir : path.join(snaps, `.tmp-${plan.sha}-${Deno.pid}`);
  for (const f of plan.files) {
    const link = path.join(tmp, f.path);
    if (fs.existsSync(link)) continue;
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.symlinkSync(path.relative(path.dirname(link), path.join(plan.repoDir, "blobs", f.etag)), link);
  }
  if (tmp !== dir) fs.renameSync(tmp, dir);
  if (plan.revision !== plan.sha) {
    const ref = path.join(plan.repoDir, "refs", plan.revision);
    fs.mkdirSync(path.dirname(ref), { recursive: true });
    fs.writeFileSync(`${ref}.tmp`, plan.sha);
    fs.renameSync(`${ref}.tmp`, ref);
  }
  return dir;
}
