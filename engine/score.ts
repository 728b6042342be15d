/** `gemma-tuner score`: placeholder until its owner (engine) lands the real verb. */
export function scoreCommand(_args: string[]): Promise<number> {
  console.error("gemma-tuner score: not available in this build yet");
  return Promise.resolve(2);
}
