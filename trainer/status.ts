/** Moved to trainer/run_dir.ts (issue 12); this re-export keeps branches written against the old path building. */
export * from "./run_dir.ts";
