/** `gemma-tuner export`: placeholder until its owner (inference) lands the real verb. */
export function exportCommand(_args: string[]): Promise<number> {
  console.error("gemma-tuner export: not available in this build yet");
  return Promise.resolve(2);
}
