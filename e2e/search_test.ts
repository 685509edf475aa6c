/// <reference lib="dom" />
/**
 * Search on the page (issue 27 point 1): the header's search (opened with
 * `/`), a word of an old message found with `--data`, out of the live log;
 * choosing the result loads older pages until its line is there, then
 * shows it, marked, with the focus on it. `cafe` finds `café` and marks it;
 * a bad query is refused beside the box; Escape closes it and gives the
 * focus back. In memory: "More" pages back, and the answer says that only
 * the recent messages were searched. Axe finds nothing, light and dark.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { focusedElement, logLines, waitForLine } from "./browser.ts";
import { assertAccessible, browserTest } from "./harness.ts";

// One data file per run of this file, removed when the run ends.
const dir = Deno.makeTempDirSync({ prefix: "chat-e2e-search-" });
globalThis.addEventListener("unload", () => {
  Deno.removeSync(dir, { recursive: true });
});

const FLOOD = { rate: 1000, burst: 1000, connectBurst: 100 };

/** The search results' texts as shown (nick, time, text), in order. */
function results(page: Page): Promise<string[]> {
  return page.$$eval(
    "#search-results li",
    (items) => items.map((li) => li.textContent ?? ""),
  );
}

/** Waits until the search's status reads something other than "Searching…". */
async function answered(page: Page): Promise<string> {
  const handle = await page.waitForFunction(() => {
    const status = document.getElementById("search-status")?.textContent ??
      "";
    const error = document.getElementById("search-error")?.textContent ?? "";
    return (error || (status !== "" && status !== "Searching…")) &&
      `${status}|${error}`;
  }, { polling: "mutation" });
  const text = String(await handle.jsonValue());
  await handle.dispose();
  return text;
}

/** Types `q` into the search box (emptied first) and presses Enter. */
async function search(page: Page, q: string): Promise<string> {
  await page.$eval("#search-input", (el) => {
    (el as HTMLInputElement).value = "";
  });
  await page.$eval("#search-status", (el) => el.textContent = "");
  await page.$eval("#search-error", (el) => el.textContent = "");
  await page.focus("#search-input");
  await page.keyboard.type(q);
  await page.keyboard.press("Enter");
  return await answered(page);
}

browserTest(
  "a search finds an old message out of the live log (cafe finds café); choosing it loads older pages and shows it marked, with the focus on it",
  async ({ url, open, visitor }) => {
    const bob = await visitor("bob");
    bob.send("Lunch at the café tomorrow?");
    for (let i = 1; i <= 300; i++) bob.send(`m${i}`);
    await bob.nextMatching(/^bob: m300$/);
    const { page } = await open(url(), undefined, { nick: "ada" });
    await waitForLine(page, "bob: m300");
    const target = "bob: Lunch at the café tomorrow?";
    const before = await logLines(page);
    assert.ok(before.length < 60, "the welcome has the live window only");
    assert.ok(!before.some((line) => line.text === target));

    // `/` from the log opens the search, its field focused.
    await page.focus("#log");
    await page.keyboard.press("/");
    assert.equal(
      await page.$eval("#search", (el) => (el as HTMLElement).hidden),
      false,
    );
    assert.equal(
      await page.$eval(
        "#search-open",
        (el) => el.getAttribute("aria-expanded"),
      ),
      "true",
    );
    assert.equal((await focusedElement(page)).id, "search-input");
    assert.equal(
      await page.$eval("#search-input", (el) => (el as HTMLInputElement).value),
      "",
    );

    assert.equal(
      await search(page, "cafe"),
      "1 found for “cafe”, newest first.|",
    );
    const found = await results(page);
    assert.equal(found.length, 1);
    assert.match(found[0], /^bob.*Lunch at the café tomorrow\?$/);
    assert.deepEqual(
      await page.$$eval(
        "#search-results mark",
        (marks) => marks.map((mark) => mark.textContent),
      ),
      ["café"],
    );

    // Chosen from the keyboard: Tab to it, Enter.
    await page.keyboard.press("Tab"); // Search
    await page.keyboard.press("Tab"); // Close
    await page.keyboard.press("Tab"); // the result
    const id = await page.$eval(
      "#search-results button",
      (el) => Number((el as HTMLElement).dataset.id),
    );
    assert.equal(
      await page.evaluate(() =>
        (document.activeElement as HTMLElement).dataset.id
      ),
      String(id),
    );
    await page.keyboard.press("Enter");
    await page.waitForFunction(
      (id: number) => {
        const li = document.querySelector(`#lines li[data-id="${id}"]`);
        return li !== null && document.activeElement === li &&
          li.classList.contains("flash");
      },
      { polling: "mutation" },
      id,
    );
    assert.equal((await focusedElement(page)).line, String(id));
    const lines = await logLines(page);
    assert.ok(lines.length > 300, `older pages loaded: ${lines.length} lines`);
    assert.equal(lines.filter((line) => line.text === target).length, 1);
    // In view: the line within the log's visible box.
    assert.ok(
      await page.$eval(`#lines li[data-id="${id}"]`, (li) => {
        const box = li.getBoundingClientRect();
        const log = document.getElementById("log")!.getBoundingClientRect();
        return box.top >= log.top && box.bottom <= log.bottom;
      }),
      "the line is scrolled into view",
    );
    assert.equal(
      await page.$eval("#search-status", (el) => el.textContent),
      "1 found for “cafe”, newest first.",
    );

    // A bad query: the server's bad_request, beside the box.
    await page.$eval("#search-results", (el) => el.replaceChildren());
    const refused = await search(page, '"cafe');
    assert.match(refused, /\|Not searched: .*quote/);
    assert.equal(
      await page.$eval("#search-error", (el) => el.getAttribute("role")),
      "alert",
    );
    // …and nothing in the log for it.
    assert.ok(
      !(await logLines(page)).some((line) => /quote/.test(line.text)),
    );

    // A search that finds: axe on the open search, light and dark.
    await search(page, "tomorrow");
    assert.equal((await results(page)).length, 1);
    await assertAccessible([page]);

    // Escape closes it; the focus goes back where it was (the log).
    await page.focus("#search-input");
    await page.keyboard.press("Escape");
    assert.equal(
      await page.$eval("#search", (el) => (el as HTMLElement).hidden),
      true,
    );
    assert.equal((await focusedElement(page)).id, "log");
    assert.equal(
      await page.$eval(
        "#search-open",
        (el) => el.getAttribute("aria-expanded"),
      ),
      "false",
    );
  },
  { ...FLOOD, data: `${dir}/chat.db`, historySize: 50 },
);

browserTest(
  "in memory: /search WORDS opens the search with them, More pages back, and the answer says only the recent messages were searched",
  async ({ url, open, visitor }) => {
    const bob = await visitor("bob");
    for (let i = 1; i <= 25; i++) bob.send(`tea ${i}`);
    await bob.nextMatching(/^bob: tea 25$/);
    const { page } = await open(url(), undefined, { nick: "ada" });
    await waitForLine(page, "bob: tea 25");

    await page.click("#input");
    await page.keyboard.type("/search tea");
    await page.keyboard.press("Enter");
    const window =
      ". Searched only the recent messages this server keeps (older ones are not searched).";
    assert.equal(
      await answered(page),
      `20 found for “tea”, newest first${window}|`,
    );
    assert.equal(
      await page.$eval("#search-input", (el) => (el as HTMLInputElement).value),
      "tea",
    );
    assert.equal(
      await page.$eval("#input", (el) => (el as HTMLInputElement).value),
      "",
    );
    let shown = await results(page);
    assert.match(shown[0], /tea 25$/);
    assert.match(shown[19], /tea 6$/);

    await page.$eval("#search-status", (el) => el.textContent = "");
    await page.click("#search-more");
    assert.equal(
      await answered(page),
      `25 found for “tea”, newest first${window}|`,
    );
    shown = await results(page);
    assert.equal(shown.length, 25);
    assert.match(shown[24], /tea 1$/);
    assert.equal(
      await page.$eval("#search-more", (el) => (el as HTMLElement).hidden),
      true,
    );

    // A result whose line is in the log: shown at once, focused.
    await page.click("#search-results li:nth-child(25) button");
    await page.waitForFunction(
      () =>
        (document.activeElement as HTMLElement | null)?.matches(
          "#lines li.flash",
        ) ?? false,
      { polling: "mutation" },
    );
    assert.equal(
      (await logLines(page)).find((line) => line.className.includes("flash"))
        ?.text,
      "bob: tea 1",
    );
    await assertAccessible([page]);
  },
  { ...FLOOD, historySize: 100 },
);

browserTest(
  "a result further back than 20 pages of older messages is not chased: the page says so, having loaded 20 pages",
  async ({ url, open, visitor }) => {
    const bob = await visitor("bob");
    bob.send("the oldest gossip");
    for (let i = 1; i <= 2100; i++) bob.send(`m${i}`);
    await bob.nextMatching(/^bob: m2100$/);
    const { page } = await open(url(), undefined, { nick: "ada" });
    await waitForLine(page, "bob: m2100");
    await page.click("#search-open");
    assert.equal(
      await search(page, "gossip"),
      "1 found for “gossip”, newest first.|",
    );
    await page.click("#search-results button");
    const handle = await page.waitForFunction(
      () => document.getElementById("search-error")?.textContent,
      { polling: "mutation", timeout: 60_000 },
    );
    assert.equal(
      await handle.jsonValue(),
      "That message is too far back to show here (more than 20 pages of older messages).",
    );
    await handle.dispose();
    const messages = (await logLines(page)).filter((line) =>
      line.text.startsWith("bob: m")
    );
    // The live window of 50 (one is bob's join), then 20 pages of 100.
    assert.equal(messages.length, 49 + 20 * 100);
    assert.equal(
      await page.evaluate("olderState") as string,
      "idle",
      "nothing more asked for",
    );
  },
  { ...FLOOD, rate: 5000, burst: 5000, data: `${dir}/far.db`, historySize: 50 },
);
