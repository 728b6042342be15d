import { deepStrictEqual as eq, ok, rejects } from "node:assert/strict";
import { parseRunConfig } from "../config/training.ts";
import { collate } from "../engine/data/mod.ts";
import { createTrainer, prepareRun, totalSteps, trainStep } from "./prepare.ts";
import { probeStep } from "./preflight.ts";
import { prepareData, prepareHere } from "./data_worker.ts";
import { resolveModelPath } from "../engine/model_dir.ts";

const DATA = Deno.makeTempDirSync({ prefix: "gt-prepare-" });
const cfgOf = (extra: Record<string, unknown> = {}) =>
  parseRunConfig({ name: "prep", model: "demo", dataset: { path: "sample" }, batchSize: 4, maxLength: 64, threads: 1, seed: 3, ...extra });

Deno.test({
  name: "prepareRun + trainStep: the worker's step updates the weights; a batch with no trained tokens is refused",
  sanitizeResources: false,
  async fn() {
    const cfg = cfgOf({ epochs: 2, gradAccum: 2 });
    const prep = await prepareRun(cfg, DATA);
    eq(prep.totalSteps, totalSteps(cfg, prep.plan));
    eq(prep.totalSteps, Math.ceil(2 * prep.plan.perEpoch / 2));
    eq(prep.schedule.totalSteps, prep.totalSteps);
    const { engine, optimizer } = await createTrainer(prep);
    try {
      const batchOf = (k: number) => collate(prep.plan.micro(k).indices.map((i) => prep.data.train[i]), prep.padId, cfg.maxLength);
      const before = new Map([...engine.trainable].map(([n, t]) => [n, t.data.slice()]));
      const t = { engine, optimizer, cfg, schedule: prep.schedule };
      // Step 1 (lr > 0 after one warmup step): every trainable tensor moves, B included.
      await trainStep(t, 0, batchOf);
      const s = await trainStep(t, 1, batchOf);
      ok(Number.isFinite(s.loss) && s.loss > 0, `loss ${s.loss}`);
      ok(s.tokens > 0 && s.lr > 0 && s.gradNorm > 0, JSON.stringify(s));
      ok(s.forwardBackwardMs > 0 && s.optimizerMs > 0, JSON.stringify(s));
      eq(optimizer.step, 2);
      const moved = [...engine.trainable].filter(([n, p]) => p.data.some((v, i) => v !== before.get(n)![i])).length;
      eq(moved, engine.trainable.size);
      const empty = batchOf(0);
      empty.labels.fill(-100);
      await rejects(trainStep(t, 2, () => empty), (e: Error) => e instanceof RangeError && /Step 3: the batch has no trained tokens/.test(e.message));
    } finally {
      engine.release();
    }
  },
});

Deno.test({
  name: "probeStep times forward+backward per micro-batch and the optimizer once a step (full fine-tuning)",
  sanitizeResources: false,
  async fn() {
    const cfg = cfgOf({ method: "full", gradAccum: 3, maxSteps: 7 });
    const est = await probeStep(cfg, DATA, 1);
    eq(est.steps, 7);
    eq(est.probeSteps, 1);
    ok(est.optimizerMs > 0, `optimizer not timed: ${JSON.stringify(est)}`);
    ok(est.stepMs > est.optimizerMs, JSON.stringify(est));
    ok(Math.abs(est.totalMs - est.stepMs * 7) < 1e-6);
    ok(est.trainExamples > 0 && est.tokensPerEpoch > 0);
  },
});

Deno.test({
  name: "prepareData: the worker thread tokenizes as this thread does, and its errors keep their class and message",
  sanitizeResources: false,
  async fn() {
    const modelDir = await resolveModelPath("demo", DATA);
    const r = { modelDir, dataset: cfgOf({ maxSteps: 1 }).dataset, maxLength: 64, seed: 3 };
    const [there, here] = await Promise.all([prepareData(r), prepareHere(r)]);
    ok(there.data.train.length > 0);
    eq(there, here);
    // A model folder without its tokenizer: the loader's RangeError, through the worker.
    const bare = Deno.makeTempDirSync({ dir: DATA });
    await rejects(prepareData({ ...r, modelDir: bare }), (e: Error) => e instanceof RangeError && e.message.includes(`"${bare}/tokenizer.json" is missing`));
    // A dataset file that does not exist: named in the error, as on this thread.
    const missing = { ...r, dataset: { ...r.dataset, path: `${DATA}/nope.jsonl` } };
    const want = await prepareHere(missing).then(() => null, (e: Error) => e);
    ok(want && want.message.includes("nope.jsonl"), String(want));
    await rejects(prepareData(missing), (e: Error) => e.constructor === want!.constructor && e.message === want!.message);
  },
});

globalThis.addEventListener("unload", () => Deno.removeSync(DATA, { recursive: true }));
