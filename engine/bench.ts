/** `gemma-tuner bench`: placeholder until its owner (engine) lands the real verb. */
export function benchCommand(_args: string[]): Promise<number> {
  console.error("gemma-tuner bench: not available in this build yet");
  return Promise.resolve(2);
}
