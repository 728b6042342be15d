/**
 * A local stand-in for the Hugging Face Hub's HTTP API, for tests (no network here). It serves the
 * routes @huggingface/hub and engine/hub.ts use, shaped as the Hub answers them (docs/HUB.md):
 *   GET /api/models/{repo}/revision/{rev}      model info: sha, gated, siblings, config
 *   GET /api/models/{repo}/tree/{rev}          file listing: path, size, oid, lfs {oid (sha256), size}
 *   GET /{repo}/resolve/{rev}/{file}           bytes, with ETag, X-Repo-Commit, X-Linked-Etag/-Size (LFS)
 *                                              and Range (206 + Content-Range)
 * Repos: `google/tiny-gemma` (a tiny model from init-model), `google/gated-gemma` (401 without a token,
 * 403 with one that has not accepted the licence, files with `GOOD_TOKEN`), `org/tiny-llama` (a config
 * whose model_type is llama). Anything else is 404 RepositoryNotFound. Faults for resume tests:
 * `cutOnce` ends one file's body early once; `corrupt` serves wrong bytes for one file.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { initModel } from "../engine/init_model.ts";

export const GOOD_TOKEN = "hf_test_token_that_accepted_the_licence";
const LFS = /\.(safetensors|json)$/;

interface HubFile {
  path: string;
  data: Uint8Array;
  oid: string;
  sha256?: string;
}

export interface FakeHub {
  url: string;
  sha: string;
  files: HubFile[];
  /** Every request's method, path and Range header, in order. */
  log: { method: string; path: string; range: string | null; auth: string | null }[];
  /** Ends the body of this file after `bytes` bytes, once. */
  cutOnce?: { file: string; bytes: number };
  /** Sends this file's first `bytes` bytes, then holds the rest until the client goes away or the hub closes (once): a download caught in progress. */
  stallOnce?: { file: string; bytes: number };
  /** Serves this file with its bytes changed (the size stays right, the sha256 does not). */
  corrupt?: string;
  close(): Promise<void>;
}

let modelDir: Promise<string> | undefined;
let cached: { gemma: HubFile[]; llama: HubFile[] } | undefined;

function tinyModel(): Promise<string> {
  modelDir ??= initModel({ preset: "tiny-3", out: path.join(fs.mkdtempSync("/tmp/gt-hubmodel-"), "m"), seed: 7 });
  return modelDir;
}

function gitOid(data: Uint8Array): string {
  return createHash("sha1").update(`blob ${data.length}\0`).update(data).digest("hex");
}

function hubFiles(dir: string, edit?: (name: string, text: string) => string): HubFile[] {
  return fs.readdirSync(dir).sort().map((name) => {
    // A plain Uint8Array, not the Buffer readFileSync returns: Buffer#slice is a view, not a copy, so
    // `corrupt` once flipped a byte in these shared bytes and every later hub of the module served it.
    let data = new Uint8Array(fs.readFileSync(path.join(dir, name)));
    if (edit && name.endsWith(".json") && data.length < 10_000) data = new TextEncoder().encode(edit(name, new TextDecoder().decode(data)));
    const big = LFS.test(name) && data.length > 10_000;
    return { path: name, data, oid: gitOid(data), sha256: big ? createHash("sha256").update(data).digest("hex") : undefined };
  });
}

export async function startFakeHub(): Promise<FakeHub> {
  const dir = await tinyModel();
  const sha = createHash("sha1").update("tiny-gemma@main").digest("hex");
  cached ??= {
    gemma: hubFiles(dir),
    llama: hubFiles(dir, (name, t) => name === "config.json" ? JSON.stringify({ ...JSON.parse(t), model_type: "llama", architectures: ["LlamaForCausalLM"] }) : t),
  };
  const { gemma, llama } = cached;
  const repos: Record<string, { files: HubFile[]; gated: boolean }> = {
    "google/tiny-gemma": { files: gemma, gated: false },
    "google/gated-gemma": { files: gemma, gated: true },
    "org/tiny-llama": { files: llama, gated: false },
  };
  const hub: FakeHub = { url: "", sha, files: gemma, log: [], close: async () => {} };
  let release = () => {};
  const released = new Promise<void>((r) => (release = r));

  const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
    new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });

  function access(repo: string, auth: string | null): Response | null {
    const r = repos[repo];
    if (!r) return json({ error: "Repository not found" }, 404, { "X-Error-Code": "RepositoryNotFound" });
    if (!r.gated) return null;
    if (!auth) {
      return json({ error: `Access to model ${repo} is restricted. You must have access to it and be authenticated to access it. Please log in.` }, 401, {
        "X-Error-Code": "GatedRepo",
      });
    }
    if (auth !== `Bearer ${GOOD_TOKEN}`) {
      return json({ error: `Access to model ${repo} is restricted and you are not in the authorized list.` }, 403, { "X-Error-Code": "GatedRepo" });
    }
    return null;
  }

  function serveFile(req: Request, repo: string, file: HubFile): Response {
    let data = file.data;
    if (hub.corrupt === file.path) (data = new Uint8Array(data)), (data[data.length >> 1] ^= 0xff);
    const etag = file.sha256 ?? file.oid;
    const headers: Record<string, string> = {
      "ETag": `"${file.oid}"`,
      "X-Repo-Commit": sha,
      "Accept-Ranges": "bytes",
      "Content-Type": "application/octet-stream",
    };
    if (file.sha256) Object.assign(headers, { "X-Linked-Etag": `"${etag}"`, "X-Linked-Size": String(data.length) });
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.get("Range") ?? "");
    let start = 0, end = data.length - 1, status = 200;
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), end) : end;
      if (start > end) return new Response(null, { status: 416, headers: { "Content-Range": `bytes */${data.length}` } });
      status = 206;
      headers["Content-Range"] = `bytes ${start}-${end}/${data.length}`;
    }
    // A copy: a body handed to Response or a stream may be detached or reused by the runtime, and the
    // file's bytes are shared by every fake hub of the test module (Uint8Array#slice copies).
    let body = data.slice(start, end + 1);
    headers["Content-Length"] = String(body.length);
    if (req.method === "HEAD") return new Response(null, { status, headers });
    const cut = hub.cutOnce;
    if (cut && cut.file === file.path && start < cut.bytes) {
      hub.cutOnce = undefined;
      body = body.subarray(0, cut.bytes - start);
      // Sends the first bytes, then fails the stream: the client sees a connection that broke off.
      const stream = new ReadableStream({
        start(c) {
          c.enqueue(body);
        },
        pull(c) {
          c.error(new Error("connection cut by the test"));
        },
      });
      return new Response(stream, { status, headers });
    }
    const stall = hub.stallOnce;
    if (stall && stall.file === file.path && start < stall.bytes) {
      hub.stallOnce = undefined;
      const head = body.subarray(0, stall.bytes - start), rest = body.subarray(stall.bytes - start);
      let sent = false;
      const stream = new ReadableStream({
        async pull(c) {
          if (!sent) return (sent = true), c.enqueue(head);
          await released;
          try {
            c.enqueue(rest);
            c.close();
          } catch { /* the client went away: the stream is cancelled */ }
        },
      });
      return new Response(stream, { status, headers });
    }
    void repo;
    return new Response(body as Uint8Array<ArrayBuffer>, { status, headers });
  }

  function handle(req: Request): Response {
    const u = new URL(req.url);
    const auth = req.headers.get("Authorization");
    hub.log.push({ method: req.method, path: u.pathname, range: req.headers.get("Range"), auth });
    let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(u.pathname);
    if (m) {
      const denied = access(m[1], auth);
      if (denied) return denied;
      const r = repos[m[1]];
      const config = JSON.parse(new TextDecoder().decode(r.files.find((f) => f.path === "config.json")!.data));
      return json({
        _id: "0".repeat(24),
        id: m[1],
        sha,
        private: false,
        gated: r.gated ? "manual" : false,
        downloads: 0,
        likes: 0,
        lastModified: "2026-01-01T00:00:00.000Z",
        pipeline_tag: "text-generation",
        siblings: r.files.map((f) => ({ rfilename: f.path })),
        config: { model_type: config.model_type, architectures: config.architectures },
      });
    }
    m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)$/.exec(u.pathname);
    if (m) {
      const denied = access(m[1], auth);
      if (denied) return denied;
      return json(
        repos[m[1]].files.map((f) => ({
          type: "file",
          path: f.path,
          size: f.data.length,
          oid: f.oid,
          ...(f.sha256 ? { lfs: { oid: f.sha256, size: f.data.length, pointerSize: 134 } } : {}),
        })),
      );
    }
    m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(u.pathname);
    if (m) {
      const denied = access(m[1], auth);
      if (denied) return denied;
      if (m[2] !== sha && m[2] !== "main") return json({ error: "Revision not found" }, 404, { "X-Error-Code": "RevisionNotFound" });
      const file = repos[m[1]].files.find((f) => f.path === decodeURIComponent(m![3]));
      if (!file) return json({ error: "Entry not found" }, 404, { "X-Error-Code": "EntryNotFound" });
      return serveFile(req, m[1], file);
    }
    return json({ error: "Not found" }, 404);
  }

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handle);
  hub.url = `http://127.0.0.1:${server.addr.port}`;
  hub.close = async () => {
    release();
    await server.shutdown();
    // The bytes are shared by every hub of the module: a test that changed them would fail later ones.
    for (const f of [...cached!.gemma, ...cached!.llama]) {
      if (gitOid(f.data) !== f.oid) throw new Error(`the fake Hub's shared bytes of ${f.path} were changed during this test`);
    }
  };
  return hub;
}
