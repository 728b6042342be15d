/** `gemma-tuner init-model`: placeholder until its owner (engine) lands the real verb. */
export function initModelCommand(_args: string[]): Promise<number> {
  console.error("gemma-tuner init-model: not available in this build yet");
  return Promise.resolve(2);
}
