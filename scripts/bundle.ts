/** Bundles islands/_client.ts (htmx + preact islands + chart.js) into static/app.js with `deno bundle`. */
const root = new URL("..", import.meta.url).pathname;
const out = `${root}static/app.js`;
const cmd = new Deno.Command(Deno.execPath(), {
  args: ["bundle", "--quiet", "--check", "--platform", "browser", "--minify", "--config", `${root}deno.json`, "-o", out, `${root}islands/_client.ts`],
  stdout: "inherit",
  stderr: "inherit",
});
const { code } = await cmd.output();
if (code !== 0) {
  console.error("bundle: deno bundle failed");
  Deno.exit(code);
}
const size = (await Deno.stat(out)).size;
console.log(`bundle: wrote static/app.js (${(size / 1024).toFixed(0)} KB)`);
