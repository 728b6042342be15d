/** The create form's fields as a browser posts them, shared by the tests that drive /create through app.request(). */

/** A valid LoRA run of the demo model on the sample dataset, 5 steps. */
export const CREATE_FORM = {
  name: "t",
  model: "demo",
  dataset_path: "sample",
  format: "auto",
  validation: "0.1",
  method: "lora",
  lora_r: "8",
  lora_alpha: "16",
  lora_dropout: "0",
  lora_targets: ["q_proj", "v_proj"],
  until: "steps",
  maxSteps: "5",
  batchSize: "2",
  gradAccum: "1",
  learningRate: "0.01",
  schedule: "cosine",
  warmupSteps: "1",
  maxLength: "128",
  evalEvery: "5",
  saveEvery: "5",
  seed: "1",
};

/** `values` as multipart form data; a list becomes repeated fields (checkboxes). */
export function formData(values: Record<string, string | string[]>): FormData {
  const f = new FormData();
  for (const [k, v] of Object.entries(values)) for (const x of Array.isArray(v) ? v : [v]) f.append(k, x);
  return f;
}

/** `values` urlencoded, as htmx's hx-include posts them; a list becomes repeated fields. */
export function formParams(values: Record<string, string | string[]>): URLSearchParams {
  const f = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) for (const x of Array.isArray(v) ? v : [v]) f.append(k, x);
  return f;
}
