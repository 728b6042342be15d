/**
 * `/create`: choose the base model, the data and the method, see what will be trained, start.
 * Fragments: `check` (validation + model info + memory), `preview` (dataset three ways, histogram,
 * invalid rows), `estimate` (a measured probe of the real step), `start` (creates the run).
 */
import { Hono } from "hono";
import type { Context } from "hono";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { formatBytes, formatCount, formatDuration, fragment, page } from "./_layout.tsx";
import type { AppDeps } from "./deps.ts";
import { DeviceSelect } from "./devices.tsx";
import { ALL_TARGETS, DEFAULT_PRESET, formToConfig, type FormValues, presetConfig, PRESETS, scanHuggingFaceCache } from "./create_form.ts";
import { ClusterForm } from "./handoff.tsx";
import { type RunConfig, RunConfigSchema } from "../config/training.ts";
import { checkBasePrecision, resolveBasePrecision } from "../engine/quant/policy.ts";
import { describeModel, estimateRunMemory, inspectDataset, invalidRows, loadTokenizer, type ModelInfo, resolveModelPath, tokenizeExample } from "../engine/mod.ts";
import { probeStep } from "../trainer/preflight.ts";
import { receiveUpload, type Upload, UploadError } from "./_upload.ts";

const LAST_SETTINGS = "create.last";
const FIELDS = [
  "name",
  "model",
  "model_path",
  "dataset_path",
  "format",
  "validation",
  "method",
  "base_precision",
  "optimizer",
  "lora_r",
  "lora_alpha",
  "lora_dropout",
  "lora_targets",
  "maxSteps",
  "epochs",
  "batchSize",
  "gradAccum",
  "learningRate",
  "schedule",
  "warmupSteps",
  "maxLength",
  "evalEvery",
  "saveEvery",
  "seed",
  "device",
  "form",
];

async function formValues(c: Context): Promise<FormValues> {
  const body = await c.req.parseBody({ all: true });
  const out: FormValues = {};
  for (const [k, v] of Object.entries(body)) {
    if (typeof v === "string") out[k] = v;
    else if (Array.isArray(v)) out[k] = v.filter((x): x is string => typeof x === "string");
  }
  return out;
}

/**
 * What Start refuses in settings the form itself accepts: a model that does not resolve, a base
 * precision the device cannot run, a dataset that is missing or whose first rows are invalid. The check
 * fragment runs the same function, so the check and Start never disagree about the same form.
 */
async function startRefusal(
  config: RunConfig,
  f: FormValues,
  dataDir: string,
): Promise<{ info?: ModelInfo } & ({ field?: undefined; message?: undefined } | { field: string; message: string })> {
  let info: ModelInfo;
  try {
    info = describeModel(await resolveModelPath(config.model, dataDir));
  } catch (e) {
    return { field: f.model_path ? "model_path" : "model", message: (e as Error).message };
  }
  if (config.method === "lora") {
    // A base precision the chosen device cannot run is refused here, not once the run has started.
    try {
      await checkBasePrecision(config.device, resolveBasePrecision(info.config, config).precision);
    } catch (e) {
      return { info, field: "base_precision", message: (e as Error).message };
    }
  }
  try {
    if (config.dataset.path !== "sample" && !fs.existsSync(config.dataset.path)) {
      throw new RangeError(`Dataset file "${config.dataset.path}" does not exist: give the path of a JSONL, JSON, CSV or Parquet file, or upload one`);
    }
    const ins = await inspectDataset(config.dataset.path, { format: config.dataset.format, fields: config.dataset.fields, limit: 1, skipInvalid: config.dataset.skipInvalid });
    if (ins.invalid.length && !config.dataset.skipInvalid) throw invalidRows(config.dataset.path, ins.invalid, ins.total);
  } catch (e) {
    return { info, field: "dataset_path", message: (e as Error).message };
  }
  return { info };
}

function Err(props: { name: string; msg?: string; oob?: boolean }) {
  return (
    <p id={`err-${props.name}`} class="field-error" role={props.msg ? "alert" : undefined} hx-swap-oob={props.oob ? "true" : undefined}>
      {props.msg ?? ""}
    </p>
  );
}

function Num(props: { name: string; label: string; value?: number; step?: string; min?: number; max?: number; hint?: string; disabled?: boolean }) {
  return (
    <div class="field">
      <label for={`f-${props.name}`}>{props.label}</label>
      <input
        id={`f-${props.name}`}
        name={props.name}
        type="number"
        inputmode="decimal"
        value={props.value ?? ""}
        step={props.step ?? "any"}
        min={props.min}
        max={props.max}
        disabled={props.disabled}
        aria-describedby={`err-${props.name}${props.hint ? ` hint-${props.name}` : ""}`}
      />
      {props.hint && <small class="muted hint" id={`hint-${props.name}`}>{props.hint}</small>}
      <Err name={props.name} />
    </div>
  );
}

/** A short line of help under a field. */
function Hint(props: { id: string; children: preact.ComponentChildren }) {
  return <small class="muted hint" id={`hint-${props.id}`}>{props.children}</small>;
}

/** The Start button with, beside it, why it is disabled; the check fragment replaces both (out of band) as the settings change. */
function StartRow(props: { errors?: number; oob?: boolean }) {
  const n = props.errors ?? 0;
  return (
    <p class="actions start-row" id="start-row" hx-swap-oob={props.oob ? "true" : undefined}>
      <button type="submit" class="primary" id="start" disabled={n > 0} aria-describedby="start-why">Start training</button>
      <span id="start-why" class={n ? "field-error" : "muted"} data-start-blocked={n || undefined}>
        {n ? `Fix ${n === 1 ? "the setting" : `the ${n} settings`} marked above to start.` : ""}
      </span>
    </p>
  );
}

function Form(props: { cfg: RunConfig; cached: { label: string; dir: string }[]; preset?: string }) {
  const { cfg } = props;
  const custom = cfg.model !== "demo" && !props.cached.some((m) => m.dir === cfg.model);
  const trigger = "change delay:300ms from:#create-form, load";
  return (
    <form id="create-form" hx-post="/create/start" hx-target="#start-result">
      <div hx-post="/create/fragments/check" hx-trigger={trigger} hx-include="#create-form" hx-target="#check" hx-sync="this:replace" data-superseded-by="#create-form"></div>
      <section class="panel" aria-labelledby="h-presets">
        <h2 id="h-presets">Presets</h2>
        <p class="actions presets">
          {Object.entries(PRESETS).map(([k, p]) => (
            <a class="button preset" href={`/create?preset=${k}`} data-preset={k} aria-current={props.preset === k ? "true" : undefined} title={p.description}>
              {p.label}
            </a>
          ))}
        </p>
        <p class="muted" data-preset-note>
          {props.preset && PRESETS[props.preset]
            ? (
              <>
                <strong>{PRESETS[props.preset].label}:</strong> {PRESETS[props.preset].description} Choosing another preset keeps your model, run name and dataset.
              </>
            )
            : "Your last settings. Choose a preset to start from one; it keeps your model, run name and dataset."}
        </p>
      </section>
      <section class="panel" aria-labelledby="h-model">
        <h2 id="h-model">1. Base model</h2>
        <label for="f-model">Model</label>
        <select id="f-model" name="model">
          <option value="demo" selected={cfg.model === "demo"}>demo: a tiny random Gemma 3 (built in); it learns your data's pattern, not language</option>
          {props.cached.map((m) => <option value={m.dir} selected={cfg.model === m.dir}>{m.label}</option>)}
        </select>
        <p class="muted">
          The demo model needs no download. <a href="/hub">Download from the Hub…</a> (a Gemma model from huggingface.co into the cache; it is listed here once downloaded)
        </p>
        <label for="f-model_path">…or a local Hugging Face model directory</label>
        <input id="f-model_path" name="model_path" type="text" size={60} placeholder="/path/to/gemma-3-270m" value={custom ? cfg.model : ""} aria-describedby="err-model_path" />
        <Err name="model_path" />
        <Err name="model" />
        <label for="f-name">Run name</label>
        <input id="f-name" name="name" type="text" value={cfg.name} maxLength={100} aria-describedby="err-name hint-name" />
        <Hint id="name">The run's folder and its models are named after it, with the date and time added.</Hint>
        <Err name="name" />
      </section>
      <section class="panel" aria-labelledby="h-data">
        <h2 id="h-data">2. Dataset</h2>
        <label for="f-dataset_path">
          Dataset: <code>sample</code>, a path, or upload a file below
        </label>
        <input id="f-dataset_path" name="dataset_path" type="text" size={60} value={cfg.dataset.path} aria-describedby="err-dataset_path" />
        <Hint id="dataset_path">
          <code>sample</code> is 50 questions with one short answer each (examples/sample.jsonl). A path is read on this machine.
        </Hint>
        <Err name="dataset_path" />
        <label for="f-upload">Upload (JSONL, JSON, CSV or Parquet)</label>
        <input id="f-upload" name="file" type="file" accept=".jsonl,.json,.csv,.parquet" form="upload-form" />
        <button type="submit" form="upload-form">Upload</button>
        <div id="upload-result" aria-live="polite"></div>
        <label for="f-format">Format</label>
        <select id="f-format" name="format">
          {["auto", "messages", "prompt_completion", "alpaca", "text"].map((f) => <option value={f} selected={cfg.dataset.format === f}>{f}</option>)}
        </select>
        <Hint id="format">auto picks the format from the rows' fields (the preview says which and why).</Hint>
        <Err name="format" />
        <Num
          name="validation"
          label="Validation fraction"
          value={cfg.dataset.validation}
          min={0}
          max={0.5}
          hint="Share of rows held out to measure the eval loss (0 to 0.5; 0: train on all)."
        />
        <label>
          <input type="checkbox" name="skip_invalid" checked={cfg.dataset.skipInvalid} /> Skip invalid rows (train on the rest; otherwise a file with unusable rows is refused)
        </label>
        <PreviewBox />
      </section>
      <section class="panel" aria-labelledby="h-method">
        <h2 id="h-method">3. Method and settings</h2>
        <fieldset>
          <legend>Method</legend>
          <Hint id="method">LoRA trains a small adapter beside frozen weights; full fine-tuning changes every weight and needs several times the memory.</Hint>
          <label>
            <input type="radio" name="method" value="lora" checked={cfg.method === "lora"} /> LoRA (small adapter, little memory)
          </label>
          <label>
            <input type="radio" name="method" value="full" checked={cfg.method === "full"} /> Full fine-tuning (every weight)
          </label>
          <Err name="method" />
        </fieldset>
        <DeviceSelect
          choices={[{ device: "cpu", available: true }, { device: "webgpu", available: false }, { device: "cuda", available: false }]}
          selected={cfg.device}
          probed={false}
        />
        <Err name="device" />
        <label class="lora-only">
          Base weights (LoRA){" "}
          <select name="base_precision" aria-describedby="err-base_precision">
            <option value="" selected={!cfg.basePrecision}>default for the model's size (see Model)</option>
            {(["fp32", "bf16", "int8", "int4"] as const).map((p) => <option value={p} selected={cfg.basePrecision === p}>{p}</option>)}
          </select>
        </label>
        <Err name="base_precision" />
        <label>
          Optimizer{" "}
          <select name="optimizer" aria-describedby="hint-optimizer err-optimizer">
            <option value="adamw" selected={cfg.optimizer === "adamw"}>AdamW (float32 moments)</option>
            <option value="adamw-8bit" selected={cfg.optimizer === "adamw-8bit"}>AdamW 8-bit (blockwise moments)</option>
          </select>
        </label>
        <Hint id="optimizer">
          8-bit AdamW stores its two moments in a byte each instead of four (6 bytes less per trained weight): full fine-tuning of a larger model fits in less memory, with a loss
          curve that follows float32 AdamW's closely.
        </Hint>
        <Err name="optimizer" />
        <div class="grid lora-only">
          <Num name="lora_r" label="LoRA rank r" value={cfg.lora.r} min={1} step="1" hint="Size of the adapter: 8–32 is usual; higher learns more and takes more memory." />
          <Num name="lora_alpha" label="LoRA alpha" value={cfg.lora.alpha} min={0} hint="Scale of the adapter's update (often 2 × r)." />
          <Num
            name="lora_dropout"
            label="LoRA dropout"
            value={cfg.lora.dropout}
            min={0}
            max={0.9}
            hint="Randomly drops adapter inputs while training (0 to 0.9); helps small datasets."
          />
        </div>
        <label class="lora-only">
          <input type="checkbox" name="lora_rslora" checked={cfg.lora.rslora} /> rsLoRA (scale α/√r)
        </label>
        <fieldset class="lora-only">
          <legend>LoRA target modules</legend>
          <Hint id="lora_targets">The layers that get an adapter: attention (q, k, v, o) and the MLP (gate, up, down).</Hint>
          {ALL_TARGETS.map((t) => (
            <label class="inline">
              <input type="checkbox" name="lora_targets" value={t} checked={cfg.lora.targets.includes(t)} /> {t}
            </label>
          ))}
          <Err name="lora_targets" />
        </fieldset>
        <fieldset>
          <legend>Length of training</legend>
          <Hint id="until">A number of steps, or of passes over the dataset (epochs): only the chosen one is used.</Hint>
          <label>
            <input type="radio" name="until" value="steps" checked={cfg.epochs === undefined} /> Steps
          </label>
          <label>
            <input type="radio" name="until" value="epochs" checked={cfg.epochs !== undefined} /> Epochs
          </label>
        </fieldset>
        <div class="grid">
          <Num
            name="maxSteps"
            label="Max steps"
            value={cfg.maxSteps}
            min={1}
            step="1"
            disabled={cfg.epochs !== undefined}
            hint="Optimizer steps to train (with Steps chosen above)."
          />
          <Num name="epochs" label="Epochs" value={cfg.epochs} min={0} disabled={cfg.epochs === undefined} hint="Passes over the training rows (with Epochs chosen above)." />
          <Num name="batchSize" label="Batch size" value={cfg.batchSize} min={1} step="1" hint="Rows per step; more uses more memory." />
          <Num
            name="gradAccum"
            label="Gradient accumulation"
            value={cfg.gradAccum}
            min={1}
            step="1"
            hint="Steps of gradients summed before each update: a larger batch in the same memory."
          />
          <Num
            name="learningRate"
            label="Learning rate"
            value={cfg.learningRate}
            min={0}
            hint="Size of each update: about 1e-4 to 2e-4 for LoRA, 1e-5 to 2e-5 for full fine-tuning of a real model."
          />
          <div class="field">
            <label for="f-schedule">Schedule</label>
            <select id="f-schedule" name="schedule">
              {["cosine", "linear", "constant"].map((s) => <option value={s} selected={cfg.schedule === s}>{s}</option>)}
            </select>
            <Hint id="schedule">How the learning rate falls after the warmup.</Hint>
            <Err name="schedule" />
          </div>
          <Num name="warmupSteps" label="Warmup steps" value={cfg.warmupSteps} min={0} step="1" hint="Steps over which the learning rate rises from 0." />
          <Num name="maxLength" label="Max length (tokens)" value={cfg.maxLength} min={8} step="1" hint="Longer rows are cut (the preview counts them); memory grows with it." />
          <Num
            name="evalEvery"
            label="Eval every (steps)"
            value={cfg.evalEvery}
            min={0}
            step="1"
            hint="Measure the eval loss every N steps (0: never; needs a validation fraction)."
          />
          <Num
            name="saveEvery"
            label="Save every (steps)"
            value={cfg.saveEvery}
            min={0}
            step="1"
            hint="Keep a checkpoint every N steps to resume from or try (0: only at the end)."
          />
          <Num name="seed" label="Seed" value={cfg.seed} min={0} step="1" hint="The same seed and settings train the same model." />
        </div>
      </section>
      <section class="panel" aria-labelledby="h-check">
        <h2 id="h-check">4. What will be trained</h2>
        <div id="check" aria-live="polite"></div>
        <p>
          <button type="button" hx-post="/create/fragments/estimate" hx-include="#create-form" hx-target="#estimate" hx-indicator="#estimate-busy">
            Estimate time (measures a few real steps)
          </button>
          <span id="estimate-busy" class="htmx-indicator muted">measuring…</span>
        </p>
        <div id="estimate" aria-live="polite"></div>
      </section>
      <StartRow />
      <Err name="form" />
      <div id="start-result" aria-live="polite"></div>
    </form>
  );
}

function PreviewBox(props: { oob?: boolean }) {
  return (
    <div
      id="preview"
      hx-post="/create/fragments/preview"
      hx-target="this"
      hx-swap-oob={props.oob ? "true" : undefined}
      hx-trigger="load, change from:#f-dataset_path, change from:#f-format, change from:#f-maxLength, change from:.map-field"
      hx-include="#create-form"
      aria-live="polite"
    >
      <p class="muted">Loading the preview…</p>
    </div>
  );
}

function ModelPanel(props: { info: ModelInfo; cfg: RunConfig }) {
  const { info, cfg } = props;
  const mem = estimateRunMemory(info.config, cfg);
  const precision = resolveBasePrecision(info.config, cfg);
  const total = os.totalmem();
  return (
    <div class="kpi">
      {cfg.model === "demo" && (
        <p data-demo-note>
          The demo model is a tiny random-init Gemma 3 with the real tokenizer: tuned, it repeats the pattern of your data (the Quick demo teaches it the sample's answers), but it
          knows no language.
        </p>
      )}
      <dl>
        <dt>Generation</dt>
        <dd>Gemma {info.generation} ({info.modelType})</dd>
        <dt>Architecture</dt>
        <dd>{info.architecture}</dd>
        <dt>Layers</dt>
        <dd>{info.layers}</dd>
        <dt>Parameters</dt>
        <dd>{formatCount(info.parameters)}{info.multimodal ? " (text decoder)" : ""}</dd>
        {info.otherTensors > 0 && (
          <>
            <dt>Kept as is</dt>
            <dd>{info.otherTensors} vision/audio tensors ({formatBytes(info.otherBytes)})</dd>
          </>
        )}
        <dt>Stored dtype</dt>
        <dd>{info.storedDtype}</dd>
        <dt>Size on disk</dt>
        <dd>{formatBytes(info.sizeBytes)}</dd>
        {cfg.method === "lora" && (
          <>
            <dt>Base weights (LoRA)</dt>
            <dd data-base-precision={precision.precision}>{precision.reason}</dd>
          </>
        )}
        <dt>Memory for {cfg.method === "lora" ? "LoRA" : "full fine-tuning"}</dt>
        <dd data-memory={mem.totalBytes}>
          {formatBytes(mem.totalBytes)} (weights {formatBytes(mem.weightsBytes)}, optimizer {formatBytes(mem.optimizerBytes)}, activations {formatBytes(mem.activationBytes)})
        </dd>
      </dl>
      {info.notes.map((n) => <p class="muted" data-model-note>{n}</p>)}
      {mem.totalBytes > total * 0.8 && (
        <p class="field-error" role="alert">
          This needs about {formatBytes(mem.totalBytes)} but the machine has {formatBytes(total)}: lower the batch size or max length, or use LoRA
          {cfg.method === "full" && cfg.optimizer === "adamw" ? " or the 8-bit AdamW optimizer" : ""}.
        </p>
      )}
    </div>
  );
}

export function createRoutes(deps: AppDeps) {
  const app = new Hono();
  const dataDir = deps.settings.dataDir;

  app.get("/create", (c) => {
    const asked = c.req.query("preset");
    let preset: string | undefined = asked && PRESETS[asked] ? asked : undefined;
    let cfg = presetConfig(preset ?? DEFAULT_PRESET);
    if (!preset) {
      preset = DEFAULT_PRESET;
      const last = deps.service.setting(LAST_SETTINGS);
      if (last) {
        // Remembered by an older version, or edited by hand: used only if it is still a valid config.
        try {
          const r = RunConfigSchema.safeParse(JSON.parse(last));
          if (r.success) [cfg, preset] = [r.data, undefined];
        } catch { /* not JSON: keep the preset */ }
      }
    } else {
      // A preset chosen on this page carries what the person had chosen (islands/_form.ts adds it to the link).
      const keep = { name: c.req.query("name")?.trim(), model: c.req.query("model")?.trim(), dataset: c.req.query("dataset")?.trim() };
      const r = RunConfigSchema.safeParse({
        ...cfg,
        ...(keep.name ? { name: keep.name } : {}),
        ...(keep.model ? { model: keep.model } : {}),
        dataset: { ...cfg.dataset, ...(keep.dataset ? { path: keep.dataset } : {}) },
      });
      if (r.success) cfg = r.data;
    }
    return page(
      c,
      "Fine-tune a model",
      <>
        <h1>Fine-tune a model</h1>
        <p class="muted">Pick a base model and your data, choose how to train, check what it will cost, then start.</p>
        <form id="upload-form" hx-post="/create/upload" hx-encoding="multipart/form-data" hx-target="#upload-result"></form>
        <Form cfg={cfg} cached={scanHuggingFaceCache()} preset={preset} />
        <ClusterForm />
      </>,
    );
  });

  app.post("/create/fragments/check", async (c) => {
    const f = await formValues(c);
    const { config, errors } = formToConfig(f);
    let info: ModelInfo | undefined;
    if (config) {
      // What Start would refuse, said here too: a check answered after a refused Start repeats the refusal.
      const refused = await startRefusal(config, f, dataDir);
      if (refused.field) errors[refused.field] = refused.message;
      info = refused.info;
    } else {
      try {
        info = describeModel(await resolveModelPath(String(f.model_path || f.model || "demo"), dataDir));
      } catch (e) {
        errors[f.model_path ? "model_path" : "model"] = (e as Error).message;
      }
    }
    const oob = FIELDS.map((k) => <Err name={k} msg={errors[k]} oob />);
    const n = Object.keys(errors).length;
    return fragment(
      c,
      <>
        {n > 0 && <p class="field-error" role="alert" data-errors={n}>{n} setting{n === 1 ? "" : "s"} to fix before starting (see the messages next to the fields).</p>}
        {info && config && <ModelPanel info={info} cfg={config} />}
        {oob}
        <StartRow errors={n} oob />
      </>,
    );
  });

  app.post("/create/fragments/preview", async (c) => {
    const f = await formValues(c);
    const datasetPath = String(f.dataset_path || "sample");
    const maxLength = Number(f.maxLength) > 0 ? Number(f.maxLength) : 512;
    const fields: Record<string, string> = {};
    for (const [k, v] of Object.entries(f)) if (k.startsWith("map_") && v) fields[k.slice(4)] = String(v);
    try {
      const modelDir = await resolveModelPath(String(f.model_path || f.model || "demo"), dataDir);
      const format = String(f.format || "auto") as "auto";
      const tok = await loadTokenizer(modelDir);
      const skipInvalid = f.skip_invalid === "on";
      const ins = await inspectDataset(datasetPath, { format, fields: Object.keys(fields).length ? fields : undefined, limit: 2000, chat: tok.chat, skipInvalid });
      const lengths: number[] = [];
      let truncated = 0;
      const shown = ins.examples.slice(0, 3).map((e) => ({ line: e.line, t: tokenizeExample(e.segments, tok, { maxLength }) }));
      for (const e of ins.examples) {
        const t = tokenizeExample(e.segments, tok, {});
        lengths.push(t.ids.length);
        if (t.ids.length > maxLength) truncated++;
      }
      const maxLen = Math.max(...lengths, 1);
      const bins = 12, width = Math.ceil(maxLen / bins) || 1;
      const hist = Array(bins).fill(0);
      for (const l of lengths) hist[Math.min(bins - 1, Math.floor(l / width))]++;
      const peak = Math.max(...hist, 1);
      const columns = ins.columns;
      return fragment(
        c,
        <div data-preview="ok">
          <p>
            <strong>{ins.total}</strong> rows, <strong>{ins.valid}</strong> usable, format <strong data-format={ins.format}>{ins.format}</strong> ({ins.chosenBecause}).{" "}
            {truncated > 0
              ? <span class="field-error">{truncated} of the first {lengths.length} rows are longer than max length {maxLength} and will be truncated.</span>
              : <span>No row is longer than max length {maxLength}.</span>}
          </p>
          {columns.length > 0 && ins.fileKind !== "sample" && (
            <details>
              <summary>Map fields (columns found: {columns.join(", ")})</summary>
              {["messages", "prompt", "completion", "instruction", "input", "output", "text"].map((k) => (
                <label>
                  {k} ←{" "}
                  <select name={`map_${k}`} class="map-field" form="create-form">
                    <option value="">(same name)</option>
                    {columns.map((col) => <option value={col} selected={fields[k] === col}>{col}</option>)}
                  </select>
                </label>
              ))}
            </details>
          )}
          <h3>Token lengths</h3>
          <div class="hist" role="img" aria-label={`Histogram of token lengths, longest ${maxLen}`}>
            {hist.map((h, i) => (
              <div class="bar" title={`${i * width}–${(i + 1) * width - 1} tokens: ${h} rows`}>
                <span style={{ height: `${Math.round((h / peak) * 100)}%` }}></span>
                <small>{i * width}</small>
              </div>
            ))}
          </div>
          {shown.map(({ line, t }) => {
            const ex = ins.examples.find((e) => e.line === line)!;
            const row = ins.rows.find((r) => r.line === line);
            return (
              <article class="example">
                <h3>Row at line {line}</h3>
                <details>
                  <summary>Raw</summary>
                  <pre>{JSON.stringify(row?.value ?? {}, null, 2)}</pre>
                </details>
                <details>
                  <summary>Rendered Gemma {tok.chat.generation} chat text</summary>
                  <pre>{ex.segments.map((s) => s.text).join("")}</pre>
                </details>
                <p class="muted">Tokens ({t.ids.length}, {t.trainedTokens} trained, highlighted):</p>
                <p class="tokens">
                  {t.tokens.map((k) => <span class={k.trained ? "tok trained" : "tok"} title={`id ${k.id}`}>{k.text}</span>)}
                </p>
              </article>
            );
          })}
          {ins.invalid.length > 0 && (
            <>
              <h3 class="field-error" data-invalid={ins.invalid.length}>
                {ins.invalid.length} invalid row{ins.invalid.length === 1 ? "" : "s"}{" "}
                {skipInvalid ? "(skipped)" : "(training refuses this file unless “Skip invalid rows” is ticked)"}
              </h3>
              <table>
                <thead>
                  <tr>
                    <th scope="col">Line</th>
                    <th scope="col">Field</th>
                    <th scope="col">Reason</th>
                  </tr>
                </thead>
                <tbody>
                  {ins.invalid.slice(0, 200).map((i) => (
                    <tr>
                      <td>{i.line}</td>
                      <td>{i.field}</td>
                      <td>{i.reason}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )}
        </div>,
      );
    } catch (e) {
      return fragment(c, <p class="field-error" role="alert" data-preview="error">{(e as Error).message}</p>);
    }
  });

  app.post("/create/fragments/estimate", async (c) => {
    const f = await formValues(c);
    const { config, errors } = formToConfig(f);
    if (!config) return fragment(c, <p class="field-error">Fix the settings first: {Object.entries(errors).map(([k, v]) => `${k}: ${v}`).join("; ")}</p>);
    try {
      const est = await probeStep(config, dataDir);
      return fragment(
        c,
        <div class="kpi" data-estimate="ok">
          <dl>
            <dt>Training examples</dt>
            <dd>{est.trainExamples}</dd>
            <dt>Tokens per epoch</dt>
            <dd>{formatCount(est.tokensPerEpoch)}</dd>
            <dt>Steps</dt>
            <dd>{est.steps}</dd>
            <dt>Measured step</dt>
            <dd>{est.stepMs.toFixed(0)} ms, optimizer {est.optimizerMs.toFixed(0)} ms of it ({est.probeSteps} probe steps on this machine)</dd>
            <dt>Estimated time</dt>
            <dd data-eta={est.totalMs}>{formatDuration(est.totalMs)}</dd>
          </dl>
        </div>,
      );
    } catch (e) {
      return fragment(c, <p class="field-error" role="alert">{(e as Error).message}</p>);
    }
  });

  app.post("/create/start", async (c) => {
    const f = await formValues(c);
    const { config, errors } = formToConfig(f);
    if (!config) {
      return fragment(
        c,
        <>
          {FIELDS.map((k) => <Err name={k} msg={errors[k]} oob />)}
          <p class="field-error" role="alert">Fix the marked settings before starting.</p>
        </>,
        422,
      );
    }
    // Each refusal is shown beside the field it concerns and, in short, beside the Start button.
    const refuse = (field: string, message: string) =>
      fragment(
        c,
        <>
          <Err name={field} msg={message} oob />
          <p class="field-error" role="alert">Not started: {message}</p>
        </>,
        422,
      );
    const refused = await startRefusal(config, f, dataDir);
    if (refused.field) return refuse(refused.field, refused.message);
    deps.service.saveSetting(LAST_SETTINGS, JSON.stringify(config));
    const { id } = deps.service.create(config);
    c.header("HX-Redirect", `/runs/${encodeURIComponent(id)}`);
    return fragment(
      c,
      <p>
        Created <a href={`/runs/${encodeURIComponent(id)}`}>{id}</a>.
      </p>,
      201,
    );
  });

  app.post("/create/upload", async (c) => {
    const limit = deps.settings.maxUploadBytes;
    const len = Number(c.req.header("Content-Length") ?? 0);
    if (len > limit + 64 * 1024) {
      return fragment(
        c,
        <p class="field-error" role="alert">
          The upload is {formatBytes(len)}; the limit is {formatBytes(limit)}. Use a local path instead, or raise the limit (GEMMA_TUNER_MAX_UPLOAD_MB).
        </p>,
        413,
      );
    }
    // Streamed to disk as it arrives, with a running count: a client without Content-Length cannot
    // exceed the limit either, and the server holds a chunk at a time, not the file.
    const dir = path.join(dataDir, "datasets");
    let up: Upload;
    try {
      fs.mkdirSync(dir, { recursive: true });
      up = await receiveUpload(c.req.raw, {
        field: "file",
        limit,
        destFor: (name) => {
          const ext = path.extname(name).toLowerCase();
          if (![".jsonl", ".json", ".csv", ".parquet"].includes(ext)) throw new UploadError(400, `"${name.slice(0, 200)}" is not a JSONL, JSON, CSV or Parquet file.`);
          const safe = path.basename(name).replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80);
          return path.join(dir, `${Date.now()}-${safe}`);
        },
      });
    } catch (e) {
      if (!(e instanceof UploadError)) throw e;
      const msg = e.status === 413
        ? `The upload is over the ${formatBytes(limit)} limit; nothing was kept. Use a local path instead, or raise the limit (GEMMA_TUNER_MAX_UPLOAD_MB).`
        : e.message;
      return fragment(c, <p class="field-error" role="alert">{msg}</p>, e.status);
    }
    const file = { name: up.filename, size: up.bytes };
    const dest = up.path;
    return fragment(
      c,
      <>
        <p>Uploaded {file.name} ({formatBytes(file.size)}).</p>
        <input id="f-dataset_path" name="dataset_path" type="text" size={60} value={dest} hx-swap-oob="true" aria-describedby="err-dataset_path" form="create-form" />
        <PreviewBox oob />
      </>,
    );
  });

  return app;
}
