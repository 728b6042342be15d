/**
 * `setup-cuda`: fetches ORT's CUDA provider libraries into the providers folder (engine/devices.ts),
 * from the same NuGet package onnxruntime-node's own install script uses. The feed, package name and
 * version are read from onnxruntime-node's install metadata, so they follow the pinned ORT;
 * `$GEMMA_TUNER_NUGET_INDEX` (or `index`) points at a mirror.
 *
 * NuGet V3 (docs/DEVICES.md): the service index lists resources by @type; the registration leaf
 * `<RegistrationsBaseUrl><id>/<version>.json` gives `packageContent` (the .nupkg URL) and
 * `catalogEntry`, whose `packageHash` is the base64 SHA-512 of the .nupkg. The download is verified
 * against it before anything is extracted; partial files are removed on any failure.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import meta from "onnxruntime-node/script/install-metadata.js";
import { CUDA_PROVIDER_FILES } from "./devices.ts";
import { extractEntry, listZip } from "./zip_read.ts";

interface OrtInstallMetadata {
  manifests: Record<string, Record<string, { package: string; path: string }>>;
  packages: Record<string, { name: string; versions: { feed: string; version: string }[] }>;
  feeds: Record<string, { type: string; index: string }>;
}

export interface CudaPackage {
  name: string;
  version: string;
  index: string;
  /** file name → path inside the package */
  files: Record<string, string>;
}

/** The package that holds the CUDA providers for linux-x64, from onnxruntime-node's metadata. */
export function cudaPackage(indexOverride?: string): CudaPackage {
  const m = meta as unknown as OrtInstallMetadata;
  const manifest = m.manifests["linux/x64:cuda12"];
  if (!manifest) throw new RangeError("onnxruntime-node's install metadata names no linux-x64 CUDA package");
  const files: Record<string, string> = {};
  let pkgKey = "";
  for (const [file, e] of Object.entries(manifest)) {
    const name = path.basename(file);
    if (!CUDA_PROVIDER_FILES.includes(name)) continue; // TensorRT's provider is not used
    files[name] = e.path;
    pkgKey = e.package;
  }
  const pkg = m.packages[pkgKey];
  const v = pkg.versions[0];
  const index = indexOverride ?? Deno.env.get("GEMMA_TUNER_NUGET_INDEX") ?? m.feeds[v.feed].index;
  return { name: pkg.name, version: v.version, index, files };
}

async function getJson(url: string, what: string): Promise<Record<string, unknown>> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`Cannot reach ${url} (${what}): ${(e as Error).message}. Check the network, or set GEMMA_TUNER_NUGET_INDEX to a reachable NuGet feed`);
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`${url} (${what}) answered HTTP ${res.status}`);
  }
  return await res.json() as Record<string, unknown>;
}

function resource(index: Record<string, unknown>, prefix: string, url: string): string {
  const r = (index.resources as { "@id": string; "@type": string }[] | undefined)?.find((x) => x["@type"].startsWith(prefix));
  if (!r) throw new Error(`The NuGet index ${url} lists no ${prefix} resource`);
  return r["@id"].endsWith("/") ? r["@id"] : `${r["@id"]}/`;
}

export interface SetupResult {
  dir: string;
  package: string;
  version: string;
  sha512: string;
  files: string[];
  bytes: number;
}

/** Downloads, verifies and extracts the CUDA providers into `dir`. */
export async function setupCuda(dir: string, opts: { index?: string; onProgress?: (done: number, total: number) => void } = {}): Promise<SetupResult> {
  const pkg = cudaPackage(opts.index);
  const id = pkg.name.toLowerCase(), version = pkg.version.toLowerCase();
  const index = await getJson(pkg.index, "NuGet service index");
  const leafUrl = `${resource(index, "RegistrationsBaseUrl", pkg.index)}${id}/${version}.json`;
  const leaf = await getJson(leafUrl, `registration of ${pkg.name} ${pkg.version}`);
  const catalog = typeof leaf.catalogEntry === "string" ? await getJson(leaf.catalogEntry, "catalog entry") : leaf.catalogEntry as Record<string, unknown>;
  const expected = String(catalog?.packageHash ?? "");
  const algorithm = String(catalog?.packageHashAlgorithm ?? "");
  if (!expected || algorithm.toUpperCase() !== "SHA512") throw new Error(`${leafUrl}: the catalog entry has no SHA512 packageHash to verify the download against`);
  const contentUrl = typeof leaf.packageContent === "string" ? leaf.packageContent : `${resource(index, "PackageBaseAddress", pkg.index)}${id}/${version}/${id}.${version}.nupkg`;

  fs.mkdirSync(dir, { recursive: true });
  const partial = path.join(dir, `.${id}.${version}.nupkg.partial`);
  const extracted: string[] = [];
  try {
    const res = await fetch(contentUrl);
    if (!res.ok || !res.body) throw new Error(`${contentUrl} answered HTTP ${res.status}`);
    const total = Number(res.headers.get("content-length") ?? 0);
    const hash = createHash("sha512");
    const fd = fs.openSync(partial, "w");
    let done = 0;
    try {
      for await (const chunk of res.body) {
        hash.update(chunk);
        fs.writeSync(fd, chunk);
        done += chunk.length;
        opts.onProgress?.(done, total);
      }
    } finally {
      fs.closeSync(fd);
    }
    const got = hash.digest("base64");
    if (got !== expected) {
      throw new Error(`${contentUrl}: SHA-512 of the download is ${got}, the feed says ${expected}; nothing was installed (a proxy or mirror changed the file?)`);
    }
    const entries = listZip(partial);
    for (const [name, inner] of Object.entries(pkg.files)) {
      const e = entries.find((x) => x.name === inner);
      if (!e) throw new Error(`${pkg.name} ${pkg.version} has no ${inner}`);
      const tmp = path.join(dir, `.${name}.partial`);
      extracted.push(tmp);
      await extractEntry(partial, e, tmp);
    }
    for (const name of Object.keys(pkg.files)) fs.renameSync(path.join(dir, `.${name}.partial`), path.join(dir, name));
    const result = { dir, package: pkg.name, version: pkg.version, sha512: got, files: Object.keys(pkg.files), bytes: done };
    fs.writeFileSync(path.join(dir, "SOURCE.json"), JSON.stringify({ ...result, url: contentUrl }, null, 2));
    return result;
  } finally {
    for (const f of [partial, ...extracted]) fs.rmSync(f, { force: true });
  }
}
