/**
 * Hub downloads against the local stand-in Hub (tests/_hub.ts): the HF cache layout, resume after a
 * broken connection, verification, and every refusal leaving nothing in the cache.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { downloadRepo, HubError, type HubOptions, planDownload, repoFolder } from "./hub.ts";
import { describeModel } from "./model_dir.ts";
import { type FakeHub, GOOD_TOKEN, startFakeHub } from "../tests/_hub.ts";
import { assert } from "../tests/_assert.ts";

async function withHub(fn: (hub: FakeHub, o: (repo: string, extra?: Partial<HubOptions>) => HubOptions, cache: string) => Promise<void>) {
  const hub = await startFakeHub();
  const cache = fs.mkdtempSync("/tmp/gt-hfcache-");
  try {
    await fn(hub, (repo, extra) => ({ repo, endpoint: hub.url, cacheDir: cache, ...extra }), cache);
  } finally {
    await hub.close();
  }
}

async function refusal(p: Promise<unknown>): Promise<HubError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof HubError) return e;
    throw e;
  }
  throw new Error("expected a refusal");
}

/** Every path under `dir` (empty when it does not exist). */
function tree(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).map(String) : [];
}

const sha256 = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");

const test = (name: string, fn: () => Promise<void>) => Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });

test("hub: a repo lands in the HF cache layout (blobs, snapshots/<sha> links, refs/main) and loads", () =>
  withHub(async (hub, o, cache) => {
    const seen: number[] = [];
    const r = await downloadRepo(o("google/tiny-gemma", { onProgress: (p) => seen.push(p.doneBytes) }));
    const repoDir = repoFolder(cache, "google/tiny-gemma");
    assert(r.dir === path.join(repoDir, "snapshots", hub.sha), r.dir);
    assert(fs.readFileSync(path.join(repoDir, "refs", "main"), "utf8") === hub.sha, "refs/main does not hold the commit");
    for (const f of hub.files) {
      const link = path.join(r.dir, f.path);
      assert(fs.lstatSync(link).isSymbolicLink(), `${f.path} is not a link into blobs/`);
      assert(fs.readlinkSync(link) === `../../blobs/${f.sha256 ?? f.oid}`, `${f.path} → ${fs.readlinkSync(link)}`);
      assert(fs.statSync(link).size === f.data.length, `${f.path} has the wrong size`);
    }
    const st = hub.files.find((f) => f.path === "model.safetensors")!;
    assert(sha256(path.join(r.dir, "model.safetensors")) === st.sha256, "model.safetensors sha256 differs");
    assert(describeModel(r.dir).generation === 3, "the downloaded model does not load");
    assert(seen.length > 1 && seen.at(-1) === r.totalBytes, `progress ended at ${seen.at(-1)} of ${r.totalBytes}`);
    // A second download finds everything in place and fetches no file again.
    const before = hub.log.filter((l) => l.path.includes("/resolve/")).length;
    await downloadRepo(o("google/tiny-gemma"));
    const again = hub.log.filter((l) => l.path.includes("/resolve/")).length - before;
    assert(again === 1, `a complete cache fetched ${again} files again (only config.json is read to check the model)`);
  }));

test("hub: a connection cut mid-file leaves only blobs/*.incomplete; the next download resumes with Range", () =>
  withHub(async (hub, o, cache) => {
    const st = hub.files.find((f) => f.path === "model.safetensors")!;
    hub.cutOnce = { file: "model.safetensors", bytes: 5_000_000 };
    const e = await refusal(downloadRepo(o("google/tiny-gemma")));
    assert(e.kind === "network" && e.message.includes("resumes"), e.message);
    const repoDir = repoFolder(cache, "google/tiny-gemma");
    assert(!fs.existsSync(path.join(repoDir, "snapshots", hub.sha)), "a snapshot was published for an incomplete download");
    const part = path.join(repoDir, "blobs", `${st.sha256}.incomplete`);
    assert(fs.existsSync(part) && fs.statSync(part).size >= 5_000_000, "the partial file is gone");
    const r = await downloadRepo(o("google/tiny-gemma"));
    const ranged = hub.log.filter((l) => l.path.endsWith("/model.safetensors") && l.range?.startsWith("bytes=5"));
    assert(ranged.length === 1, `no resumed request: ${JSON.stringify(hub.log.filter((l) => l.path.endsWith(".safetensors")))}`);
    assert(sha256(path.join(r.dir, "model.safetensors")) === st.sha256, "the resumed file differs");
  }));

/** Gated, unknown, non-Gemma and too-big repos: refusals in plain words, nothing written; a token opens the gated one. */
const gatedCase = () =>
  withHub(async (_hub, o, cache) => {
    let e = await refusal(downloadRepo(o("google/gated-gemma")));
    assert(e.kind === "gated" && /token/i.test(e.message) && /licen[cs]e/i.test(e.message) && e.message.includes("HF_TOKEN"), e.message);
    e = await refusal(downloadRepo(o("google/gated-gemma", { token: "hf_someone_else" })));
    assert(e.kind === "gated" && /accept the licence/.test(e.message), e.message);
    e = await refusal(downloadRepo(o("google/no-such-model")));
    assert(e.kind === "not-found" && e.message.includes("google/no-such-model"), e.message);
    e = await refusal(downloadRepo(o("not a repo")));
    assert(e.kind === "not-found" && e.message.includes("ORG/NAME"), e.message);
    e = await refusal(downloadRepo(o("org/tiny-llama")));
    assert(e.kind === "not-gemma" && e.message.includes("llama"), e.message);
    e = await refusal(downloadRepo(o("google/tiny-gemma", { freeBytes: () => 10_000_000 })));
    assert(e.kind === "disk-full" && /needs .* MB more .* only 9\.5 MB is free/.test(e.message), e.message);
    assert(tree(cache).length === 0, `the cache is not empty: ${tree(cache)}`);
    // With the right token the gated repo downloads.
    const r = await downloadRepo(o("google/gated-gemma", { token: GOOD_TOKEN }));
    assert(fs.existsSync(path.join(r.dir, "config.json")), "gated download with a token failed");
  });

/** A file served with one byte flipped fails sha256, is removed, and no snapshot is published. */
const corruptCase = () =>
  withHub(async (hub, o, cache) => {
    hub.corrupt = "model.safetensors";
    const e = await refusal(downloadRepo(o("google/tiny-gemma")));
    assert(e.kind === "verify" && e.message.includes("model.safetensors") && e.message.includes("sha256"), e.message);
    const left = tree(repoFolder(cache, "google/tiny-gemma"));
    assert(!left.some((p) => p.startsWith("snapshots/") || p.endsWith(".incomplete")), `left behind: ${left}`);
  });

test("hub: bytes that fail sha256 are removed and nothing is published", corruptCase);

test("hub: gated repos explain the token and the licence; unknown, non-Gemma and too-big repos write nothing", gatedCase);

// The corrupt case once flipped a byte in the bytes every fake hub of the module shares (a Buffer's
// slice is a view, not a copy), so a download after it failed sha256: order must not matter.
test("hub: the corrupt-bytes and gated cases pass in either order (fake hubs share no state)", async () => {
  await gatedCase();
  await corruptCase();
  await gatedCase();
});

test("hub: cancel stops the download and removes the partial file", () =>
  withHub(async (_hub, o, cache) => {
    const ctl = new AbortController();
    const e = await refusal(downloadRepo(o("google/tiny-gemma", { signal: ctl.signal, onProgress: (p) => p.doneBytes > 2_000_000 && ctl.abort() })));
    assert(e.kind === "cancelled", e.message);
    const left = tree(repoFolder(cache, "google/tiny-gemma"));
    assert(!left.some((p) => p.startsWith("snapshots/") || p.endsWith(".incomplete")), `left behind: ${left}`);
  }));

test("hub: the plan lists files, sizes and what is left to fetch", () =>
  withHub(async (hub, o) => {
    const plan = await planDownload(o("google/tiny-gemma"));
    assert(plan.sha === hub.sha && plan.modelType === "gemma3_text", JSON.stringify(plan).slice(0, 200));
    assert(plan.files.length === hub.files.length && plan.neededBytes === plan.totalBytes, "plan sizes");
  }));
