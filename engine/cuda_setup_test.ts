/** setup-cuda against a local HTTP server speaking NuGet V3, with a package built here. */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { deflateRawSync } from "node:zlib";
import { cudaPackage, setupCuda } from "./cuda_setup.ts";
import { CUDA_PROVIDER_FILES, prepareCudaProviders } from "./devices.ts";

function crc32(b: Uint8Array): number {
  let c = ~0;
  for (const x of b) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/** A deflate zip (what NuGet serves), written the long way so the reader is tested on real layout. */
function zip(files: { name: string; data: Uint8Array }[]): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [], central: Uint8Array[] = [];
  let offset = 0;
  for (const f of files) {
    const name = new TextEncoder().encode(f.name), body = deflateRawSync(f.data), crc = crc32(f.data);
    const h = new DataView(new ArrayBuffer(30));
    h.setUint32(0, 0x04034b50, true), h.setUint16(4, 20, true), h.setUint16(8, 8, true), h.setUint32(14, crc, true);
    h.setUint32(18, body.length, true), h.setUint32(22, f.data.length, true), h.setUint16(26, name.length, true);
    const c = new DataView(new ArrayBuffer(46));
    c.setUint32(0, 0x02014b50, true), c.setUint16(4, 20, true), c.setUint16(6, 20, true), c.setUint16(10, 8, true), c.setUint32(16, crc, true);
    c.setUint32(20, body.length, true), c.setUint32(24, f.data.length, true), c.setUint16(28, name.length, true), c.setUint32(42, offset, true);
    parts.push(new Uint8Array(h.buffer), name, body);
    central.push(new Uint8Array(c.buffer), name);
    offset += 30 + name.length + body.length;
  }
  const cdSize = central.reduce((s, x) => s + x.length, 0);
  const e = new DataView(new ArrayBuffer(22));
  e.setUint32(0, 0x06054b50, true), e.setUint16(8, files.length, true), e.setUint16(10, files.length, true);
  e.setUint32(12, cdSize, true), e.setUint32(16, offset, true);
  const all = [...parts, ...central, new Uint8Array(e.buffer)];
  const out: Uint8Array<ArrayBuffer> = new Uint8Array(all.reduce((s, x) => s + x.length, 0));
  let p = 0;
  for (const x of all) out.set(x, p), p += x.length;
  return out;
}

const pkg = cudaPackage("http://unused/");
const contents = Object.fromEntries(CUDA_PROVIDER_FILES.map((f, i) => [f, new TextEncoder().encode(`fake ${f} `.repeat(5000 + i))]));
const nupkg = zip([
  { name: "Microsoft.ML.OnnxRuntime.Gpu.Linux.nuspec", data: new TextEncoder().encode("<package/>") },
  ...Object.entries(pkg.files).map(([name, inner]) => ({ name: inner, data: contents[name] })),
]);

function feed(opts: { hash?: string; truncate?: boolean }) {
  const id = pkg.name.toLowerCase(), v = pkg.version.toLowerCase();
  const hash = opts.hash ?? createHash("sha512").update(nupkg).digest("base64");
  const server: Deno.HttpServer<Deno.NetAddr> = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req): Response => {
    const u = new URL(req.url), base: string = `http://127.0.0.1:${server.addr.port}`;
    if (u.pathname === "/v3/index.json") {
      return Response.json({ resources: [{ "@id": `${base}/flat/`, "@type": "PackageBaseAddress/3.0.0" }, { "@id": `${base}/reg/`, "@type": "RegistrationsBaseUrl/3.6.0" }] });
    }
    if (u.pathname === `/reg/${id}/${v}.json`) return Response.json({ catalogEntry: `${base}/catalog/${id}.${v}.json` });
    if (u.pathname === `/catalog/${id}.${v}.json`) return Response.json({ packageHash: hash, packageHashAlgorithm: "SHA512" });
    if (u.pathname === `/flat/${id}/${v}/${id}.${v}.nupkg`) return new Response((opts.truncate ? nupkg.slice(0, nupkg.length >> 1) : nupkg) as Uint8Array<ArrayBuffer>);
    return new Response("not found", { status: 404 });
  });
  return { server, index: `http://127.0.0.1:${server.addr.port}/v3/index.json` };
}

Deno.test("setup-cuda downloads the NuGet package, verifies its SHA-512 and extracts the provider libraries", async () => {
  const { server, index } = feed({});
  const dir = Deno.makeTempDirSync();
  try {
    let progress = 0;
    const r = await setupCuda(dir, { index, onProgress: (d) => (progress = d) });
    if (progress !== nupkg.length || r.bytes !== nupkg.length) throw new Error(`progress ${progress}, bytes ${r.bytes}, package ${nupkg.length}`);
    for (const f of CUDA_PROVIDER_FILES) {
      const got = fs.readFileSync(path.join(dir, f));
      if (Buffer.compare(got, contents[f]) !== 0) throw new Error(`${f} extracted wrong (${got.length} bytes)`);
    }
    const left = fs.readdirSync(dir).sort();
    if (left.join(",") !== [...CUDA_PROVIDER_FILES, "SOURCE.json"].sort().join(",")) throw new Error(`left in the folder: ${left}`);
    // The folder now satisfies the CUDA check and links into ORT's folder (a temp one here).
    const ortDir = Deno.makeTempDirSync();
    fs.writeFileSync(path.join(ortDir, "libonnxruntime.so.1"), "");
    prepareCudaProviders(dir, ortDir);
    prepareCudaProviders(dir, ortDir); // idempotent
    for (const f of CUDA_PROVIDER_FILES) {
      if (fs.readlinkSync(path.join(ortDir, f)) !== path.join(dir, f)) throw new Error(`${f} not linked`);
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("setup-cuda refuses a download whose SHA-512 differs and leaves nothing behind", async () => {
  for (const bad of [{ hash: createHash("sha512").update("other").digest("base64") }, { truncate: true }]) {
    const { server, index } = feed(bad);
    const dir = Deno.makeTempDirSync();
    try {
      let msg = "";
      await setupCuda(dir, { index }).catch((e) => (msg = e.message));
      if (!/SHA-512 of the download is .* the feed says/.test(msg)) throw new Error(`unclear error: ${msg}`);
      const left = fs.readdirSync(dir);
      if (left.length) throw new Error(`left behind: ${left}`);
    } finally {
      await server.shutdown();
    }
  }
});

Deno.test("setup-cuda names an unreachable feed and what to set", async () => {
  const dir = Deno.makeTempDirSync();
  let msg = "";
  await setupCuda(dir, { index: "http://127.0.0.1:9/v3/index.json" }).catch((e) => (msg = e.message));
  if (!msg.includes("127.0.0.1:9") || !msg.includes("GEMMA_TUNER_NUGET_INDEX")) throw new Error(`unclear error: ${msg}`);
});

Deno.test("missing CUDA providers: the error names the files, the folder and the command that fixes it", () => {
  const dir = Deno.makeTempDirSync();
  let msg = "";
  try {
    prepareCudaProviders(dir, "/nonexistent");
  } catch (e) {
    msg = (e as Error).message;
  }
  for (const want of [...CUDA_PROVIDER_FILES, dir, "gemma-tuner setup-cuda", "--ort-providers", "--device cpu"]) {
    if (!msg.includes(want)) throw new Error(`error lacks "${want}": ${msg}`);
  }
});

Deno.test("a provider file installed by onnxruntime-node itself is never replaced by a link", () => {
  const dir = Deno.makeTempDirSync(), ortDir = Deno.makeTempDirSync();
  for (const f of CUDA_PROVIDER_FILES) fs.writeFileSync(path.join(dir, f), "ours");
  fs.writeFileSync(path.join(ortDir, CUDA_PROVIDER_FILES[0]), "theirs");
  prepareCudaProviders(dir, ortDir);
  if (fs.readFileSync(path.join(ortDir, CUDA_PROVIDER_FILES[0]), "utf8") !== "theirs") throw new Error("replaced a real file");
  if (fs.readlinkSync(path.join(ortDir, CUDA_PROVIDER_FILES[1])) !== path.join(dir, CUDA_PROVIDER_FILES[1])) throw new Error("second file not linked");
});

async function cli(args: string[], env: Record<string, string> = {}) {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", main, ...args], env, stdout: "piped", stderr: "piped" }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("CLI: setup-cuda --index fills --ort-providers; --device cuda without them names the files and the fix", async () => {
  const { server, index } = feed({});
  const dir = path.join(Deno.makeTempDirSync(), "providers");
  try {
    const r = await cli(["setup-cuda", "--ort-providers", dir, "--index", index]);
    if (r.code !== 0) throw new Error(`setup-cuda failed: ${r.stderr}`);
    const line = JSON.parse(r.stdout.trim());
    if (line.dir !== dir || line.files.length !== CUDA_PROVIDER_FILES.length) throw new Error(`unexpected JSON line ${r.stdout}`);
    for (const f of CUDA_PROVIDER_FILES) if (!fs.existsSync(path.join(dir, f))) throw new Error(`${f} not installed`);
  } finally {
    await server.shutdown();
  }
  const empty = Deno.makeTempDirSync(), model = path.join(Deno.makeTempDirSync(), "tiny");
  const init = await cli(["init-model", "--generation", "1", "--preset", "tiny", "--out", model]);
  if (init.code !== 0) throw new Error(`init-model failed: ${init.stderr}`);
  const r = await cli(["score", "--model", model, "--ids", "2,3", "--device", "cuda", "--ort-providers", empty]);
  const msg = r.stderr;
  if (r.code === 0) throw new Error("score on a missing CUDA provider succeeded");
  for (const want of [...CUDA_PROVIDER_FILES, empty, "setup-cuda"]) if (!msg.includes(want)) throw new Error(`error lacks "${want}": ${msg}`);
});
