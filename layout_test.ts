/**
 * The layout's one rule, checked: main.ts is the service and nothing it
 * grows beside it imports it back, statically or by a late `import()`, and
 * no modules import each other in a circle.
 *
 * @module
 */

import assert from "node:assert/strict";

const here = new URL(".", import.meta.url);

/** The program's modules: every .ts at the top but tests and test helpers. */
const MODULES = [...Deno.readDirSync(here)]
  .map((entry) => entry.name)
  .filter((name) =>
    name.endsWith(".ts") && !name.endsWith("_test.ts") &&
    !name.endsWith("_helpers.ts")
  )
  .sort();

/**
 * What a module may load: every `"./x.ts"` in it, whether in an `import`,
 * an `import()`, or a constant a late import reads (main.ts names its
 * stores' files that way).
 */
function edges(name: string): string[] {
  const text = Deno.readTextFileSync(new URL(name, here));
  return [
    ...new Set([...text.matchAll(/"\.\/([a-z_]+\.ts)"/g)].map((m) => m[1])),
  ]
    .filter((target) => MODULES.includes(target));
}

Deno.test("no module imports main.ts, statically or late", () => {
  const importers = MODULES.filter((name) =>
    name !== "main.ts" && edges(name).includes("main.ts")
  );
  assert.deepEqual(importers, []);
});

Deno.test("no modules import each other in a circle", () => {
  const done = new Set<string>();
  const visit = (name: string, path: string[]) => {
    assert.ok(!path.includes(name), `a cycle: ${[...path, name].join(" → ")}`);
    if (done.has(name)) return;
    for (const next of edges(name)) visit(next, [...path, name]);
    done.add(name);
  };
  for (const name of MODULES) visit(name, []);
  // The stores are loaded late, and only by main.ts.
  assert.ok(edges("main.ts").includes("redis_store.ts"));
  assert.ok(edges("main.ts").includes("sqlite_store.ts"));
});
