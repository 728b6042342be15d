/**
 * The built-in sample dataset (`"path": "sample"`): 320 short chat examples of very regular tasks
 * (capitals, word reversal, small sums, colour of things) with fixed answer templates, so even the
 * tiny random-init demo model shows a falling loss within a minute on a CPU. Generated
 * deterministically; `writeSampleJsonl` saves the same rows as a file to look at.
 */
import type { RawRow } from "./readers.ts";
import { mulberry32 } from "./batching.ts";

export const SAMPLE_PATH = "sample";

const CAPITALS: [string, string][] = [
  ["France", "Paris"], ["Germany", "Berlin"], ["Italy", "Rome"], ["Spain", "Madrid"], ["Portugal", "Lisbon"],
  ["Japan", "Tokyo"], ["China", "Beijing"], ["India", "New Delhi"], ["Egypt", "Cairo"], ["Kenya", "Nairobi"],
  ["Canada", "Ottawa"], ["Mexico", "Mexico City"], ["Brazil", "Brasilia"], ["Peru", "Lima"], ["Chile", "Santiago"],
  ["Norway", "Oslo"], ["Sweden", "Stockholm"], ["Finland", "Helsinki"], ["Poland", "Warsaw"], ["Greece", "Athens"],
  ["Austria", "Vienna"], ["Ireland", "Dublin"], ["Russia", "Moscow"], ["Turkey", "Ankara"], ["Iran", "Tehran"],
  ["Thailand", "Bangkok"], ["Vietnam", "Hanoi"], ["Australia", "Canberra"], ["Argentina", "Buenos Aires"], ["Cuba", "Havana"],
];
const WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird", "rain", "snow", "book", "lamp", "door", "road"];
const THINGS: [string, string][] = [
  ["grass", "green"], ["the sky", "blue"], ["snow", "white"], ["coal", "black"], ["a banana", "yellow"], ["a tomato", "red"],
  ["an orange", "orange"], ["a plum", "purple"], ["chocolate", "brown"], ["a lemon", "yellow"], ["blood", "red"], ["milk", "white"],
];

/** The sample conversations, always the same. */
export function sampleConversations(): { messages: { role: "system" | "user" | "assistant"; content: string }[] }[] {
  const r = mulberry32(20240601);
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  const out: { messages: { role: "system" | "user" | "assistant"; content: string }[] }[] = [];
  for (let i = 0; i < 320; i++) {
    let user: string, answer: string;
    switch (i % 4) {
      case 0: {
        const [country, capital] = pick(CAPITALS);
        user = `What is the capital of ${country}?`;
        answer = `The capital of ${country} is ${capital}.`;
        break;
      }
      case 1: {
        const n = 3 + Math.floor(r() * 3);
        const words = Array.from({ length: n }, () => pick(WORDS));
        user = `Reverse these words: ${words.join(" ")}`;
        answer = words.slice().reverse().join(" ");
        break;
      }
      case 2: {
        const a = Math.floor(r() * 10), b = Math.floor(r() * 10);
        user = `What is ${a} plus ${b}?`;
        answer = `${a} plus ${b} is ${a + b}.`;
        break;
      }
      default: {
        const [thing, colour] = pick(THINGS);
        user = `What colour is ${thing}?`;
        answer = `${thing[0].toUpperCase()}${thing.slice(1)} is ${colour}.`;
      }
    }
    const messages: { role: "system" | "user" | "assistant"; content: string }[] = [];
    if (i % 10 === 9) messages.push({ role: "system", content: "Answer in one short line." });
    messages.push({ role: "user", content: user }, { role: "assistant", content: answer });
    out.push({ messages });
  }
  return out;
}

/** The sample as rows with line numbers, as if read from its JSONL file. */
export function sampleRows(): RawRow[] {
  return sampleConversations().map((value, i) => ({ line: i + 1, value }));
}

/** Writes the sample as JSONL (for a user who wants to see or copy it). */
export function writeSampleJsonl(path: string): void {
  Deno.writeTextFileSync(path, sampleConversations().map((c) => JSON.stringify(c)).join("\n") + "\n");
}
