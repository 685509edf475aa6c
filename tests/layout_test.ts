/**
 * The layout's rules, checked over every folder: main.ts is the service and
 * nothing it grows beside it imports it back, statically or by a late
 * `import()`; no modules import each other in a circle; every module is
 * reachable from a program that runs (main.ts, the terminal client, the
 * token tool), so nothing lies about unused; and `deno task check` and
 * `deno task compile` name every folder and late-loaded store.
 *
 * @module
 */

import assert from "node:assert/strict";

/** The repository (this file is in `tests/`). */
const ROOT = new URL("..", import.meta.url);

/** Folders of tests and tools: not the program, so not held to its rules. */
const NOT_PROGRAM = ["tests/", "bench/", "e2e/", "tools/"];

/** Every .ts file, as a path from the repository (`server/auth.ts`). */
function walk(dir = ""): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync(new URL(dir || ".", ROOT))) {
    const path = dir + entry.name;
    if (entry.name.startsWith(".") || entry.name === "node_modules") continue;
    if (entry.isDirectory) found.push(...walk(path + "/"));
    else if (entry.name.endsWith(".ts")) found.push(path);
  }
  return found.sort();
}

const FILES = walk();

/**
 * The program's modules: every .ts outside the test and tool folders, but
 * tests (a module's `x_test.ts` sits beside it).
 */
const MODULES = FILES.filter((path) =>
  !path.endsWith("_test.ts") &&
  !NOT_PROGRAM.some((folder) => path.startsWith(folder))
);

/**
 * What a file may load: every relative `.ts` path quoted in it, resolved
 * from its folder, whether in an `import`, an `import()`, or a constant a
 * late import reads (server/open_store.ts names its stores' files that
 * way).
 */
function edges(path: string): string[] {
  const url = new URL(path, ROOT);
  const text = Deno.readTextFileSync(url);
  const targets = [...text.matchAll(/["'](\.{1,2}\/[\w./-]+\.ts)["']/g)]
    .map((match) => new URL(match[1], url).href.slice(ROOT.href.length));
  return [...new Set(targets)].filter((target) => FILES.includes(target));
}

Deno.test("the layout test sees the modules in every folder", () => {
  for (
    const path of [
      "main.ts",
      "server/options.ts",
      "stores/rooms.ts",
      "wire/protocol.ts",
      "clients/chat_client.ts",
    ]
  ) {
    assert.ok(MODULES.includes(path), `${path} is one of the modules`);
  }
  assert.ok(FILES.includes("tests/test_helpers.ts"));
  assert.ok(!MODULES.includes("tests/test_helpers.ts"));
  assert.ok(!MODULES.includes("wire/protocol_test.ts"));
  // Paths resolve from the importing file's folder, `./` and `../` alike.
  assert.ok(edges("stores/redis_store.ts").includes("stores/rooms.ts"));
  assert.ok(edges("stores/redis_store.ts").includes("wire/protocol.ts"));
});

Deno.test("the top level is the design card: main.ts and its test are its only .ts", () => {
  assert.deepEqual(
    FILES.filter((path) => !path.includes("/")),
    ["main.ts", "main_test.ts"],
  );
});

Deno.test("no module imports main.ts, statically or late", () => {
  const importers = MODULES.filter((path) =>
    path !== "main.ts" && edges(path).includes("main.ts")
  );
  assert.deepEqual(importers, []);
});

Deno.test("no modules import each other in a circle", () => {
  const done = new Set<string>();
  const visit = (path: string, trail: string[]) => {
    assert.ok(
      !trail.includes(path),
      `a cycle: ${[...trail, path].join(" → ")}`,
    );
    if (done.has(path)) return;
    for (const next of edges(path)) visit(next, [...trail, path]);
    done.add(path);
  };
  // Tests and tools too: a helper that imported a test back would be a knot.
  for (const path of FILES) visit(path, []);
  // The stores are loaded late, and only by server/open_store.ts.
  const opener = "server/open_store.ts";
  assert.ok(edges(opener).includes("stores/redis_store.ts"));
  assert.ok(edges(opener).includes("stores/sqlite_store.ts"));
  const loaders = MODULES.filter((path) =>
    edges(path).some((target) =>
      target === "stores/redis_store.ts" || target === "stores/sqlite_store.ts"
    )
  );
  assert.deepEqual(loaders, [opener]);
});

Deno.test("every module is reachable from a program that runs", () => {
  // The programs: main.ts, and what runs on its own (`import.meta.main`).
  const programs = MODULES.filter((path) =>
    /^if \(import\.meta\.main\)/m.test(
      Deno.readTextFileSync(new URL(path, ROOT)),
    )
  );
  assert.deepEqual(programs, [
    "clients/chat_client.ts",
    "clients/token.ts",
    "main.ts",
  ]);
  const reached = new Set<string>();
  const reach = (path: string) => {
    if (reached.has(path)) return;
    reached.add(path);
    edges(path).forEach(reach);
  };
  programs.forEach(reach);
  assert.deepEqual(MODULES.filter((path) => !reached.has(path)), []);
});

Deno.test("deno task check covers every folder, and compile includes the late-loaded stores", async () => {
  const { tasks } = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", ROOT)),
  );
  const checked = new Set(
    [...tasks.check.matchAll(/(?:^|\s)((?:[\w-]+\/)?)\*\.ts/g)]
      .map((match) => match[1]),
  );
  const folders = new Set(
    FILES.map((path) => path.slice(0, path.lastIndexOf("/") + 1)),
  );
  assert.deepEqual(
    [...folders].filter((folder) => !checked.has(folder)),
    [],
    "deno task check's `deno check` names every folder with .ts files",
  );
  for (const late of ["stores/redis_store.ts", "stores/sqlite_store.ts"]) {
    assert.ok(
      tasks.compile.includes(`--include ${late}`),
      `deno task compile includes ${late}`,
    );
  }
});
