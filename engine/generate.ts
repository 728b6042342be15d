/** `gemma-tuner generate`: placeholder until its owner (inference) lands the real verb. */
export function generateCommand(_args: string[]): Promise<number> {
  console.error("gemma-tuner generate: not available in this build yet");
  return Promise.resolve(2);
}
