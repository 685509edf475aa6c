/**
 * `deno task check` for the page's script: `deno lint` sees no file in
 * client.html, and `deno check` no script in it. This writes the script
 * out as a JavaScript file, then lints it and type-checks it (as JS with
 * `// @ts-check`, against the DOM's types, not strict) with this Deno.
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-run tools/check_page.ts
 * ```
 *
 * @module
 */

const PAGE = new URL("../client.html", import.meta.url);
/** What the written file has above the script's first line. */
const HEADER = ["// @ts-check", '/// <reference lib="dom" />'];

/** The page's one inline script, and the client.html line it starts on. */
export function pageScript(html: string): { code: string; firstLine: number } {
  const match = /<script>([\s\S]*?)<\/script>/.exec(html);
  if (!match) throw new Error("client.html has no <script>");
  const before = html.slice(0, match.index + "<script>".length);
  return { code: match[1], firstLine: before.split("\n").length };
}

async function run(args: string[], cwd: string): Promise<boolean> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  const out = decoder.decode(stdout) + decoder.decode(stderr);
  if (code !== 0) console.error(out);
  return code === 0;
}

if (import.meta.main) {
  const { code, firstLine } = pageScript(await Deno.readTextFile(PAGE));
  const dir = await Deno.makeTempDir({ prefix: "deno-chat-page-" });
  try {
    await Deno.writeTextFile(
      `${dir}/page.js`,
      [...HEADER, code].join("\n"),
    );
    await Deno.writeTextFile(
      `${dir}/deno.json`,
      JSON.stringify({
        compilerOptions: {
          lib: ["dom", "dom.iterable", "esnext"],
          checkJs: true,
          strict: false,
        },
        lint: { rules: { tags: ["recommended"] } },
      }),
    );
    const linted = await run(["lint", "page.js"], dir);
    const checked = await run(["check", "page.js"], dir);
    if (!linted || !checked) {
      const offset = firstLine - 1 - HEADER.length;
      console.error(
        `client.html's script: page.js line N is client.html line N + ${offset}`,
      );
      Deno.exit(1);
    }
    console.error("client.html's script: linted and type-checked");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
