/**
 * The create form's device choice: which devices work on this machine, and why the others do not
 * (engine/devices.ts probes each once per server process). The page renders a CPU-only choice and a
 * button; `/create/devices` replaces it with the probed one. The probe is asked for, not automatic:
 * starting a WebGPU adapter loads ONNX Runtime and, on a software adapter, can hold the server's
 * event loop for many seconds.
 */
import { Hono } from "hono";
import { fragment } from "./_layout.tsx";
import type { Device } from "../engine/mod.ts";

export interface DeviceChoice {
  device: Device;
  available: boolean;
  reason?: string;
}

const LABEL: Record<Device, string> = { cpu: "CPU", webgpu: "WebGPU (GPU via Vulkan/Metal/D3D12)", cuda: "CUDA (NVIDIA)" };

/** The select and, under it, why each unavailable device is unavailable. `probed` false: not checked yet. */
export function DeviceSelect(props: { choices: DeviceChoice[]; selected: Device; probed: boolean }) {
  const off = props.choices.filter((c) => !c.available);
  return (
    <div id="device-choice">
      <label for="f-device">Device</label>
      <select id="f-device" name="device" aria-describedby="device-notes err-device">
        {props.choices.map((c) => (
          <option value={c.device} selected={c.device === props.selected} disabled={!c.available}>
            {LABEL[c.device]}
            {c.available ? "" : " — not available here"}
          </option>
        ))}
      </select>
      <ul id="device-notes" class="muted small">
        {props.probed ? off.map((c) => <li data-device={c.device}>{LABEL[c.device]}: {c.reason}</li>) : null}
      </ul>
      {props.probed ? null : (
        <button type="button" hx-get={`/create/devices?selected=${props.selected}`} hx-target="#device-choice" hx-swap="outerHTML">
          Check which devices work here
        </button>
      )}
    </div>
  );
}

export function devicesRoutes(probe: () => Promise<DeviceChoice[]>) {
  const app = new Hono();
  app.get("/create/devices", async (c) => {
    const choices = await probe();
    const want = c.req.query("selected") as Device | undefined;
    const selected = choices.find((x) => x.device === want && x.available)?.device ?? "cpu";
    return fragment(c, <DeviceSelect choices={choices} selected={selected} probed />);
  });
  return app;
}
