import { deepStrictEqual as eq, ok, throws } from "node:assert/strict";
import * as fs from "node:fs";
import { join } from "node:path";
import { LoraSchema } from "../config/training.ts";
import { AdamW } from "../engine/optim.ts";
import {
  type CheckpointContent,
  checkpointProblem,
  CHECKSUMS_FILE,
  cleanPartialCheckpoints,
  DAMAGED_FILE,
  damagedCheckpoints,
  latestCheckpoint,
  listCheckpoints,
  newestIntactCheckpoint,
  pruneCheckpoints,
  readCheckpoint,
  readTrainerState,
  sha256File,
  TRAINER_STATE_FORMAT,
  TRAINER_STATE_VERSION,
  writeCheckpoint,
  writeFinal,
} from "./checkpoint.ts";
import { modelCard } from "./model_card.ts";
import { describeFailure } from "./worker.ts";
import { readRunJson } from "./run_dir.ts";
import { parseRunConfig } from "../config/training.ts";

function content(step: number, scale: number): CheckpointContent {
  const trainable = new Map([
    ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6].map((x) => x * scale)) }],
    ["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", { shape: [4, 2], data: new Float32Array(8).fill(scale) }],
  ]);
  const opt = new AdamW(trainable, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
  opt.update(new Map([...trainable].map(([n, t]) => [n, t.data.map((x) => x + 0.5)])), 0.01);
  return {
    step,
    method: "lora",
    trainable,
    optimizer: opt.stateTensors(),
    lora: LoraSchema.parse({ r: 2, alpha: 4, targets: ["q_proj"] }),
    baseModel: "/models/x",
    modelDir: "/models/x",
    state: {
      format: TRAINER_STATE_FORMAT,
      version: TRAINER_STATE_VERSION,
      step,
      totalSteps: 10,
      epoch: step / 10,
      microBatches: step,
      rng: { seed: 1, dropoutStream: "seed,microBatch", nextMicroBatch: step },
      schedule: { kind: "cosine", peakLr: 0.01, warmupSteps: 1, totalSteps: 10 },
      method: "lora",
      baseModel: "/models/x",
      trainLoss: 1.5,
      evalLoss: null,
      logHistory: [{ step, loss: 1.5, epoch: step / 10 }],
    },
  };
}

Deno.test("checkpoints: atomic write, partial dirs ignored and cleaned, prune, exact round-trip, final/", () => {
  const run = Deno.makeTempDirSync();
  try {
    const c2 = content(2, 1);
    writeCheckpoint(run, c2);
    // a writer killed mid-way leaves only a temp dir, and a dir without trainer_state.json is incomplete
    fs.mkdirSync(join(run, "checkpoints", ".tmp-checkpoint-4-999"), { recursive: true });
    fs.mkdirSync(join(run, "checkpoints", "checkpoint-6"));
    eq(listCheckpoints(run).map((c) => c.step), [2]);
    cleanPartialCheckpoints(run);
    ok(!fs.existsSync(join(run, "checkpoints", ".tmp-checkpoint-4-999")));
    writeCheckpoint(run, content(4, 2));
    writeCheckpoint(run, content(10, 3));
    eq(latestCheckpoint(run)!.step, 10);
    pruneCheckpoints(run, 2);
    eq(listCheckpoints(run).map((c) => c.step), [4, 10]);
    const back = readCheckpoint(join(run, "checkpoints", "checkpoint-4"));
    const orig = content(4, 2);
    for (const [n, t] of orig.trainable) eq(Array.from(back.trainable.get(n)!), Array.from(t.data));
    for (const t of orig.optimizer) eq(Array.from(back.optimizer.get(t.name)!), Array.from(t.data));
    eq(back.state.step, 4);
    const ac = JSON.parse(Deno.readTextFileSync(join(run, "checkpoints", "checkpoint-4", "adapter_config.json")));
    eq([ac.peft_type, ac.r, ac.lora_alpha, ac.target_modules], ["LORA", 2, 4, ["q_proj"]]);
    const final = writeFinal(run, join(run, "checkpoints", "checkpoint-10"), "# card\n");
    ok(fs.existsSync(join(run, "checkpoints", "checkpoint-10", "checksums.json")));
    eq(fs.readdirSync(final).sort(), ["README.md", "adapter_config.json", "adapter_model.safetensors", "checkpoint.txt", "trainer_state.json"]);
    Deno.writeTextFileSync(join(run, "checkpoints", "checkpoint-10", "trainer_state.json"), JSON.stringify({ format: "other", version: 9 }));
    throws(() => readTrainerState(join(run, "checkpoints", "checkpoint-10")), /expected gemma-tuner-trainer-state version 1.*start a new run/);
  } finally {
    Deno.removeSync(run, { recursive: true });
  }
});

Deno.test("checkpoint checksums: a truncated and a same-size corrupted checkpoint are found, marked, skipped and rewritten", () => {
  const run = Deno.makeTempDirSync();
  try {
    for (const step of [2, 4, 6]) writeCheckpoint(run, content(step, step));
    const dir = (step: number) => join(run, "checkpoints", `checkpoint-${step}`);
    const sums = JSON.parse(Deno.readTextFileSync(join(dir(6), CHECKSUMS_FILE)));
    eq(Object.keys(sums.files).sort(), ["adapter_config.json", "adapter_model.safetensors", "optimizer.safetensors", "trainer_state.json"]);
    eq(sums.files["optimizer.safetensors"].sha256, sha256File(join(dir(6), "optimizer.safetensors")));
    eq(checkpointProblem(dir(6), { full: true }), null);

    // Newest truncated: the cheap check (every poll) already leaves it out of the list.
    const opt6 = join(dir(6), "optimizer.safetensors");
    const size6 = fs.statSync(opt6).size;
    fs.truncateSync(opt6, size6 - 10);
    eq(listCheckpoints(run).map((c) => c.step), [2, 4]);
    eq(latestCheckpoint(run)?.step, 4);
    eq(damagedCheckpoints(run).map((d) => [d.step, d.damaged]), [[6, `optimizer.safetensors is ${size6 - 10} bytes; ${size6} were written (truncated)`]]);

    // Same size, bytes flipped in the next one: only the full check (resume) sees it.
    const ad4 = join(dir(4), "adapter_model.safetensors");
    const bytes = fs.readFileSync(ad4);
    bytes[bytes.length - 3] ^= 0xff;
    fs.writeFileSync(ad4, bytes);
    eq(checkpointProblem(dir(4)), null);
    ok(/^adapter_model\.safetensors does not match its checksum/.test(checkpointProblem(dir(4), { full: true }) ?? ""));

    const notes: string[] = [];
    eq(newestIntactCheckpoint(run, (n) => notes.push(n))?.step, 2);
    eq(notes.length, 3, notes.join("\n"));
    ok(notes[0].startsWith("Checkpoint checkpoint-6 is damaged: optimizer.safetensors is") && notes[0].includes("(truncated)"), notes[0]);
    ok(notes[1].startsWith("Checkpoint checkpoint-4 is damaged: adapter_model.safetensors does not match its checksum"), notes[1]);
    eq(notes[2], "Resuming from checkpoint-2 instead of the damaged checkpoint-6, checkpoint-4");
    // Marked: the UI no longer offers step 4 either, and the marker says why.
    eq(listCheckpoints(run).map((c) => c.step), [2]);
    ok(Deno.readTextFileSync(join(dir(4), DAMAGED_FILE)).includes("does not match its checksum"));
    // Training past step 4 again writes a fresh checkpoint-4 over the damaged one.
    writeCheckpoint(run, content(4, 4));
    eq(checkpointProblem(dir(4), { full: true }), null);
    eq(listCheckpoints(run).map((c) => c.step), [2, 4]);
    // Pruning keeps the damaged newest (the evidence) and drops damaged ones older than those kept.
    pruneCheckpoints(run, 1);
    eq(listCheckpoints(run).map((c) => c.step), [4]);
    eq(damagedCheckpoints(run).map((d) => d.step), [6]);
    // None intact: say so and start from step 0.
    fs.truncateSync(join(dir(4), "trainer_state.json"), 5);
    const none: string[] = [];
    eq(newestIntactCheckpoint(run, (n) => none.push(n)), null);
    eq(none.at(-1), "No intact checkpoint (checkpoint-6, checkpoint-4 damaged): starting from step 0");
  } finally {
    Deno.removeSync(run, { recursive: true });
  }
});

Deno.test("run.json in both shapes, failure messages, model card", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const cfg = { name: "x", dataset: { path: "sample" }, maxSteps: 3 };
    Deno.writeTextFileSync(join(dir, "run.json"), JSON.stringify({ id: "r1", createdAt: "t", config: cfg, modelInfo: { layers: 2 } }));
    eq([readRunJson(dir).id, readRunJson(dir).config.maxSteps], ["r1", 3]);
    Deno.writeTextFileSync(join(dir, "run.json"), JSON.stringify({ ...cfg, id: "r2", modelInfo: { layers: 2 }, datasetInfo: {}, modelDir: "/m" }));
    eq([readRunJson(dir).id, readRunJson(dir).config.name], ["r2", "x"]);
    Deno.writeTextFileSync(join(dir, "run.json"), JSON.stringify({ ...cfg, batchSize: 0 }));
    throws(() => readRunJson(dir), /run\.json[\s\S]*batchSize/);
    Deno.removeSync(join(dir, "run.json"));
    throws(() => readRunJson(dir), /run\.json is missing/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  ok(describeFailure(new Error("std::bad_alloc")).includes("smaller batchSize"));
  eq(describeFailure(new RangeError("Step 3: the loss is NaN")), "Step 3: the loss is NaN");
  const card = modelCard({
    runId: "r",
    config: parseRunConfig({ name: "demo-run", dataset: { path: "d.jsonl" }, maxSteps: 5 }),
    baseModel: "/m",
    dataset: { format: "messages", train: 9, validation: 1, invalid: 2, truncated: 0 },
    step: 5,
    totalSteps: 5,
    epoch: 1,
    trainLoss: 1.23456,
    evalLoss: null,
    parameters: { total: 1000, trainable: 10 },
    finishedAt: "now",
    state: "completed",
  });
  ok(card.startsWith('---\nbase_model: "/m"\nlibrary_name: peft'));
  ok(card.includes("| train (last step) | 1.2346 |") && card.includes("| eval | n/a |") && card.includes("2 rows skipped as invalid"));
});
