/**
 * A YAML emitter for the job bundles' configs (engine/handoff/bundle.ts). Axolotl and SkyPilot read
 * their YAML with PyYAML, which follows YAML 1.1: `yes`/`no`/`on`/`off` are booleans there and a float
 * needs a dot (`2e-4` is a string, `2.0e-4` a float). So every string that is not a plain word is
 * double-quoted (JSON's escapes are valid YAML), and numbers are written in a form both YAML 1.1 and
 * 1.2 read as the same number. Only plain data: objects, arrays, strings, finite numbers, booleans, null.
 */

export type YamlValue = string | number | boolean | null | YamlValue[] | { [key: string]: YamlValue | undefined };

/** Words YAML 1.1 or 1.2 would read as something other than a string. */
const RESERVED = /^(y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|null|Null|NULL|~)$/;
const PLAIN = /^[A-Za-z_][A-Za-z0-9_./-]*$/;

/** A string as YAML: bare when it is a plain word, else JSON-quoted. */
export function yamlString(s: string): string {
  return PLAIN.test(s) && !RESERVED.test(s) ? s : JSON.stringify(s);
}

/** A number both YAML 1.1 (PyYAML) and 1.2 read back exactly. */
export function yamlNumber(n: number): string {
  if (!Number.isFinite(n)) throw new RangeError(`Cannot write ${n} to YAML: only finite numbers are supported`);
  if (Number.isInteger(n) && Math.abs(n) < 1e21) return String(n);
  const s = String(n);
  if (!/e/i.test(s)) return s;
  // JS writes 2e-4 or 1.5e+21; PyYAML needs a dot in the mantissa and a sign in the exponent.
  const [m, e] = s.toLowerCase().split("e");
  const mant = m.includes(".") ? m : `${m}.0`;
  const exp = e.startsWith("-") || e.startsWith("+") ? e : `+${e}`;
  return `${mant}e${exp}`;
}

/**
 * A multi-line string as a literal block (`|` keeps one final newline, `|-` none), indented under
 * its key; strings a block cannot hold exactly (leading space, several final newlines, a `\r`, trailing
 * spaces on a line) stay JSON-quoted.
 */
function block(s: string, indent: string): string {
  const body = s.endsWith("\n") ? s.slice(0, -1) : s;
  // Control characters (other than \t and \n) have no literal form in a block scalar.
  // deno-lint-ignore no-control-regex
  if (/^[ \t]|\r|\n$|[ \t]\n|[ \t]$/.test(body) || /[\u0000-\u0008\u000b-\u001f\u007f]/.test(body)) return JSON.stringify(s);
  const pad = indent + "  ";
  return (s.endsWith("\n") ? "|" : "|-") + body.split("\n").map((l) => (l ? `\n${pad}${l}` : "\n")).join("");
}

function scalar(v: YamlValue, indent = ""): string | null {
  if (v === null) return "null";
  if (typeof v === "string" && v.includes("\n")) return block(v, indent);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") return yamlNumber(v);
  if (typeof v === "string") return yamlString(v);
  if (Array.isArray(v) && v.length === 0) return "[]";
  if (!Array.isArray(v) && typeof v === "object" && Object.values(v).every((x) => x === undefined)) return "{}";
  return null;
}

function key(k: string): string {
  return yamlString(k);
}

function lines(v: YamlValue, indent: string): string[] {
  const out: string[] = [];
  if (Array.isArray(v)) {
    for (const item of v) {
      const s = scalar(item, indent + "  ");
      if (s !== null) out.push(`${indent}- ${s}`);
      else {
        // A nested block under "- ": its first line shares the dash, the rest align with it.
        const inner = lines(item, indent + "  ");
        out.push(`${indent}- ${inner[0].slice(indent.length + 2)}`, ...inner.slice(1));
      }
    }
    return out;
  }
  if (v === null || typeof v !== "object") throw new TypeError("lines() takes an object or array");
  for (const [k, val] of Object.entries(v)) {
    if (val === undefined) continue;
    const s = scalar(val, indent);
    if (s !== null) out.push(`${indent}${key(k)}: ${s}`);
    else out.push(`${indent}${key(k)}:`, ...lines(val, indent + "  "));
  }
  return out;
}

/** The document for an object (keys in insertion order; undefined values left out), with optional `# ` header lines. */
export function toYaml(doc: { [key: string]: YamlValue | undefined }, header: string[] = []): string {
  return [...header.map((h) => `# ${h}`.trimEnd()), ...lines(doc, "")].join("\n") + "\n";
}
