/**
 * The README's option table and `--help` say what {@linkcode OPTIONS} says:
 * an option added to the table in server/options.ts and not to the README (or changed
 * in one place only) fails here, and the failure prints the rows to paste.
 * The README's Redis commands are run as written (where redis-server is
 * installed, and always in CI).
 */

import assert from "node:assert/strict";
import {
  defaultNote,
  flagLabel,
  flagOf,
  OPTIONS,
  shownDefault,
} from "../server/options.ts";
import { haveRedis, untilRedisAnswers } from "./redis_helpers.ts";
import { freePort } from "./ws_frames.ts";
import { cli } from "./test_helpers.ts";

const README = new URL("../README.md", import.meta.url);

const HEADER = ["flag", "env", "default", "meaning"];

/** One row of the README's option table, as cells, from one option. */
function rowOf(name: string, spec: (typeof OPTIONS)[keyof typeof OPTIONS]) {
  return [
    "`" + flagLabel(name) + "`",
    "env" in spec && spec.env ? "`" + spec.env + "`" : "",
    shownDefault(name),
    spec.help,
  ].map((cell) => cell.replaceAll("|", "\\|"));
}

/** The option table the README must have, as cells, header first. */
export function expectedOptionRows(): string[][] {
  return [
    HEADER,
    ...Object.entries(OPTIONS).map(([name, spec]) => rowOf(name, spec)),
  ];
}

/** Cells as a Markdown table (`deno fmt` aligns it the same way). */
function markdownTable(rows: string[][]): string {
  const widths = rows[0].map((_, column) =>
    Math.max(3, ...rows.map((row) => row[column].length))
  );
  const line = (cells: string[]) =>
    `| ${cells.map((cell, i) => cell.padEnd(widths[i])).join(" | ")} |`;
  return [
    line(rows[0]),
    line(widths.map((width) => "-".repeat(width))),
    ...rows.slice(1).map(line),
  ].join("\n");
}

/**
 * The first table after the `## Options` heading, as cells (header first,
 * the `---` line left out). A `\|` stays inside its cell.
 */
export function readmeOptionRows(readme: string): string[][] {
  const lines = readme.split("\n");
  const heading = lines.findIndex((line) => line.trim() === "## Options");
  assert.ok(heading !== -1, "the README has an `## Options` section");
  const start = lines.findIndex((line, i) =>
    i > heading && line.startsWith("|")
  );
  assert.ok(start !== -1, "the Options section has a table");
  const rows: string[][] = [];
  for (let i = start; i < lines.length && lines[i].startsWith("|"); i++) {
    const cells = lines[i].trim().slice(1, -1).split(/(?<!\\)\|/)
      .map((cell) => cell.trim());
    if (cells.every((cell) => /^:?-+:?$/.test(cell))) continue;
    rows.push(cells);
  }
  return rows;
}

/**
 * What is wrong with the README's option table, with the expected table to
 * paste; undefined when it is right.
 */
export function optionTableProblems(readme: string): string | undefined {
  const expected = expectedOptionRows();
  const actual = readmeOptionRows(readme);
  const key = (row: string[]) => row.join(" | ");
  const whole = (rows: string[][]) => rows.map(key).join("\n");
  if (whole(expected) === whole(actual)) return undefined;
  const have = new Set(actual.map(key));
  const want = new Set(expected.map(key));
  const missing = expected.filter((row) => !have.has(key(row)));
  const extra = actual.filter((row) => !want.has(key(row)));
  return [
    "The README's option table is not what OPTIONS in server/options.ts says.",
    ...missing.map((row) => `missing or different: ${key(row)}`),
    ...extra.map((row) => `not in OPTIONS (or different): ${key(row)}`),
    ...(missing.length === 0 && extra.length === 0
      ? ["the rows are in another order than OPTIONS"]
      : []),
    "",
    "Expected (paste under `## Options`, then run `deno fmt README.md`):",
    "",
    markdownTable(expected),
  ].join("\n");
}

Deno.test("the README's option table has one row per option, as OPTIONS says, in its order", async () => {
  const problems = optionTableProblems(await Deno.readTextFile(README));
  if (problems) throw new Error(problems);
});

Deno.test("an option with no README row fails the option-table check", async () => {
  const readme = await Deno.readTextFile(README);
  const [name] = Object.keys(OPTIONS);
  const row = readme.split("\n").find((line) =>
    line.startsWith(`| \`--${flagOf(name)} `)
  );
  assert.ok(row, `the README has a row for --${flagOf(name)}`);
  const problems = optionTableProblems(readme.replace(row + "\n", ""));
  assert.ok(problems, "a README without that row is reported");
  assert.match(
    problems,
    new RegExp(`missing or different: \`--${flagOf(name)}`),
  );
});

Deno.test("--help lists every option's flag, environment variable, default and meaning", async () => {
  const { code, stdout } = await cli(["--help"]).output();
  assert.equal(code, 0);
  const lines = new TextDecoder().decode(stdout).split("\n");
  for (const [name, spec] of Object.entries(OPTIONS)) {
    const flag = flagLabel(name);
    const line = lines.find((line) => line.trim().startsWith(flag + " "));
    assert.ok(line, `--help has a line for ${flag}`);
    assert.ok(
      line.includes(spec.help.replaceAll("`", "")),
      `--help says what ${flag} means: ${line}`,
    );
    if ("env" in spec && spec.env) {
      assert.ok(line.includes(`[${spec.env}]`), `${flag} names ${spec.env}`);
    }
    const note = defaultNote(name);
    if (note) {
      assert.ok(
        line.includes(note),
        `${flag} shows its default ${note}: ${line}`,
      );
    }
  }
});

/**
 * The README's commands that start Redis: for each `sh` block that runs
 * `redis-server`, its command lines up to and including that one (comments
 * and blank lines left out).
 */
export function readmeRedisCommands(readme: string): string[][] {
  const blocks = [...readme.matchAll(/^```sh\n([\s\S]*?)^```$/gm)]
    .map((match) => match[1].split("\n"));
  return blocks
    .map((lines) =>
      lines.slice(
        0,
        lines.findIndex((line) => line.startsWith("redis-server ")) + 1,
      )
    )
    .map((lines) => lines.filter((line) => line.trim() && !/^\s*#/.test(line)))
    .filter((lines) => lines.length > 0);
}

Deno.test({
  name:
    "the README's Redis commands run as written, keeping the append-only file in their directory",
  // In CI a missing redis-server fails the test instead of skipping it.
  ignore: !haveRedis && !Deno.env.get("CI"),
  fn: async () => {
    const blocks = readmeRedisCommands(await Deno.readTextFile(README));
    assert.ok(blocks.length > 0, "the README has a redis-server command");
    for (const commands of blocks) {
      const server = commands.at(-1)!;
      const dir = server.match(/--dir (\S+)/)?.[1];
      assert.ok(dir, `${server} keeps its files in a --dir`);
      // A relative directory: as written it works for anyone, without root,
      // and here it lands in the temporary directory.
      assert.ok(!dir.startsWith("/"), `--dir ${dir} needs no root`);
      const cwd = await Deno.makeTempDir();
      // As written, but on a free loopback port (not a real Redis's 6379),
      // in the foreground (exec: the child is redis-server, to stop it).
      const port = freePort();
      const script = [
        ...commands.slice(0, -1),
        "exec " +
        server.replace(/\s*&$/, "").replace(
          /^redis-server /,
          `redis-server --port ${port} --bind 127.0.0.1 `,
        ),
      ].join("\n");
      const child = new Deno.Command("bash", {
        args: ["-euc", script],
        cwd,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const output = child.output();
      const stop = () => {
        try {
          child.kill("SIGTERM"); // Redis stops cleanly: AOF flushed, exit 0
        } catch {
          // exited already
        }
        return output;
      };
      try {
        await untilRedisAnswers(port, child).catch(async (error) => {
          const { stdout, stderr } = await stop();
          const said = new TextDecoder().decode(stderr) +
            new TextDecoder().decode(stdout);
          throw new Error(`${commands.join("; ")}: ${error.message}\n${said}`);
        });
        const aof = await Deno.stat(`${cwd}/${dir}/appendonlydir`);
        assert.ok(aof.isDirectory, `the append-only file is in ${dir}`);
      } finally {
        await stop();
        await Deno.remove(cwd, { recursive: true });
      }
      assert.equal(
        (await child.status).code,
        0,
        "redis-server stopped cleanly",
      );
    }
  },
});
