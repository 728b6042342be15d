/** `gemma-tuner train`: placeholder until its owner (trainer) lands the real verb. */
export function trainCommand(_args: string[]): Promise<number> {
  console.error("gemma-tuner train: not available in this build yet");
  return Promise.resolve(2);
}
