/**
 * Models the playground and the OpenAI endpoint can talk to: the demo model, every run's final model
 * and checkpoints. Loaded generators are kept under a memory limit (least recently used goes first)
 * and requests run one at a time with one intra-op thread, so chatting never starves a training run.
 */
import * as fs from "node:fs";
import * as path from "node:path";
// Types only: generate.ts loads ONNX Runtime, so it is imported when the first model is (serve starts without it).
import type { Generator, GeneratorModel } from "./generate.ts";
import { loadTokenizer, type Tokenizer } from "./tokenizer.ts";
import { resolveModelPath } from "./model_dir.ts";

export interface ModelEntry {
  /** "demo", or "<runId>/final", or "<runId>/checkpoint-<step>". */
  id: string;
  label: string;
  runId?: string;
  step?: number;
  kind: "base" | "final" | "checkpoint";
  /** How the run trained: a full fine-tune has no adapter to export. */
  method?: "lora" | "full";
  trainLoss?: number;
}

interface Loaded {
  gen: Generator;
  tok: Tokenizer;
  bytes: number;
  usedAt: number;
}

export interface RunModelSource {
  id: string;
  dir: string;
  baseModel: string;
  method: "lora" | "full";
  checkpoints: { step: number; dir: string }[];
  hasFinal: boolean;
  /** The step of the checkpoint final/ was copied from (final/checkpoint.txt): that checkpoint is the same model. */
  finalStep?: number;
  name: string;
  trainLoss?: number;
}

const ID = /^(demo|[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\/(final|checkpoint-\d+))$/;

export class ModelCache {
  private loaded = new Map<string, Promise<Loaded>>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(readonly dataDir: string, readonly runs: () => RunModelSource[], readonly limitBytes = 6 * 2 ** 30) {}

  list(): ModelEntry[] {
    const out: ModelEntry[] = [{ id: "demo", label: "demo (base model, untrained)", kind: "base" }];
    for (const r of this.runs()) {
      const step = r.hasFinal ? r.finalStep : undefined;
      if (r.hasFinal) {
        out.push({ id: `${r.id}/final`, label: `${r.name}: final${step ? ` (step ${step})` : ""}`, runId: r.id, step, kind: "final", method: r.method, trainLoss: r.trainLoss });
      }
      for (const c of [...r.checkpoints].reverse()) {
        if (c.step === step) continue;
        out.push({ id: `${r.id}/checkpoint-${c.step}`, label: `${r.name}: step ${c.step}`, runId: r.id, step: c.step, kind: "checkpoint", method: r.method });
      }
    }
    return out;
  }

  isLoaded(id: string): boolean {
    return this.loaded.has(id);
  }

  /** Where a model id lives: the model dir, and the adapter dir for LoRA runs. */
  async locate(id: string): Promise<{ modelDir: string; adapterDir?: string }> {
    if (!ID.test(id)) throw new RangeError(`Unknown model "${id}"`);
    if (id === "demo") return { modelDir: await resolveModelPath("demo", this.dataDir) };
    const [runId, which] = id.split("/");
    const run = this.runs().find((r) => r.id === runId);
    if (!run) throw new RangeError(`Unknown model "${id}": no run ${runId}`);
    const dir = which === "final" ? path.join(run.dir, "final") : path.join(run.dir, "checkpoints", which);
    if (!fs.existsSync(dir)) throw new RangeError(`Unknown model "${id}": ${which} does not exist`);
    if (run.method === "lora") return { modelDir: await resolveModelPath(run.baseModel, this.dataDir), adapterDir: dir };
    return { modelDir: dir };
  }

  private load(id: string): Promise<Loaded> {
    let p = this.loaded.get(id);
    if (!p) {
      p = (async () => {
        const where = await this.locate(id);
        const { Generator, loadForGeneration } = await import("./generate.ts");
        const model: GeneratorModel = await loadForGeneration(where.modelDir, where.adapterDir);
        const tok = await loadTokenizer(where.modelDir);
        let bytes = 0;
        for (const w of model.weights.values()) bytes += w.byteLength;
        return { gen: new Generator(model, { threads: 1 }), tok, bytes, usedAt: Date.now() };
      })();
      this.loaded.set(id, p);
      p.catch(() => this.loaded.delete(id));
    }
    return p;
  }

  unload(id: string): boolean {
    const p = this.loaded.get(id);
    if (!p) return false;
    this.loaded.delete(id);
    p.then((l) => l.gen.release()).catch(() => {});
    return true;
  }

  private async evict(keep: string) {
    const entries = await Promise.all([...this.loaded].map(async ([id, p]) => ({ id, l: await p.catch(() => null) })));
    let total = entries.reduce((s, e) => s + (e.l?.bytes ?? 0), 0);
    for (const e of entries.filter((e) => e.id !== keep && e.l).sort((a, b) => a.l!.usedAt - b.l!.usedAt)) {
      if (total <= this.limitBytes) break;
      this.unload(e.id);
      total -= e.l!.bytes;
    }
  }

  /** Runs `fn` with the model loaded, one request at a time. */
  use<T>(id: string, fn: (gen: Generator, tok: Tokenizer) => Promise<T>): Promise<T> {
    const run = this.queue.then(async () => {
      const l = await this.load(id);
      l.usedAt = Date.now();
      await this.evict(id);
      return await fn(l.gen, l.tok);
    });
    this.queue = run.catch(() => {});
    return run;
  }
}
