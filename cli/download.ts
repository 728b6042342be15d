/**
 * `gemma-tuner download`: a Gemma model from the Hugging Face Hub into the HF cache (engine/hub.ts),
 * with a progress line on stderr and one JSON line on stdout: {"repo","revision","sha","dir","files","bytes"}.
 * Ctrl-C cancels (the partial file is removed); a broken connection is resumed by running it again.
 */
import { defineVerb } from "./verb.ts";
import { hubSettings } from "../config/app.ts";
import { downloadRepo, HubError } from "../engine/hub.ts";

export const downloadVerb = defineVerb({
  name: "download",
  usage: "gemma-tuner download --repo ORG/NAME [--revision R] [--token T] [--cache-dir DIR]   (honours HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE)",
  flags: {
    repo: { kind: "string", help: "model repository, e.g. google/gemma-3-270m-it", metavar: "ORG/NAME" },
    revision: { kind: "string", help: "branch, tag or commit (default main)" },
    token: { kind: "string", help: "Hub access token for gated models (default $HF_TOKEN)" },
    "cache-dir": { kind: "string", help: "HF cache folder (default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)", metavar: "DIR" },
  },
  required: ["repo"],
  async run(f) {
    const hub = hubSettings();
    const ctl = new AbortController();
    const cancel = () => ctl.abort();
    try {
      Deno.addSignalListener("SIGINT", cancel);
    } catch { /* not supported on this platform */ }
    let last = 0;
    const enc = new TextEncoder();
    try {
      const r = await downloadRepo({
        repo: f.repo,
        revision: f.revision,
        token: f.token ?? hub.token,
        endpoint: hub.endpoint,
        cacheDir: f["cache-dir"] ?? hub.cacheDir,
        signal: ctl.signal,
        onProgress: (p) => {
          const now = Date.now();
          if (now - last < 250 && p.doneBytes < p.totalBytes) return;
          last = now;
          const pct = p.totalBytes ? (100 * p.doneBytes) / p.totalBytes : 100;
          Deno.stderr.writeSync(enc.encode(`\r${pct.toFixed(1).padStart(5)}%  ${(p.doneBytes / 1048576).toFixed(1)} / ${(p.totalBytes / 1048576).toFixed(1)} MB  ${p.file}\x1b[K`));
        },
      });
      if (last) Deno.stderr.writeSync(enc.encode("\n"));
      console.log(JSON.stringify({ repo: r.repo, revision: r.revision, sha: r.sha, dir: r.dir, files: r.files.length, bytes: r.totalBytes }));
      return 0;
    } catch (e) {
      if (last) Deno.stderr.writeSync(enc.encode("\n"));
      if (e instanceof HubError) {
        console.error(`gemma-tuner download: ${e.message}`);
        return 1;
      }
      throw e;
    } finally {
      try {
        Deno.removeSignalListener("SIGINT", cancel);
      } catch { /* as above */ }
    }
  },
});
