/** Moved to cli/flags.ts (issue 12); this re-export keeps branches written against the old path building. */
export * from "../cli/flags.ts";
