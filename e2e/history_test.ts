/// <reference lib="dom" />
/**
 * Reading back in the page (issue 19): scrolling to the top, the "Load
 * older messages" button, or typing `/more`, loads the room's older
 * messages from the `--data` store above the ones shown, without moving
 * what the reader sees, until "This is the beginning of #room".
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { logLines, say, waitForLine } from "./browser.ts";
import { browserTest } from "./harness.ts";

// One data file per run of this file, removed when the run ends.
const dir = Deno.makeTempDirSync({ prefix: "chat-e2e-data-" });
globalThis.addEventListener("unload", () => {
  Deno.removeSync(dir, { recursive: true });
});

const MESSAGES = 500;

/** Where the page stands on older messages ("idle", "loading", "done"). */
function olderState(page: Page): Promise<string> {
  return page.evaluate("olderState") as Promise<string>;
}

/**
 * Scrolls the log to its top (which asks for older messages) and returns
 * the first line's distance from the log's top edge, marking that line.
 */
function scrollToTopAndMark(page: Page): Promise<number> {
  return page.$eval("#log", (log) => {
    log.scrollTop = 0;
    const first = document.querySelector("#lines li") as HTMLElement;
    first.dataset.anchor = "yes";
    return first.getBoundingClientRect().top - log.getBoundingClientRect().top;
  });
}

/** The marked line's distance from the log's top edge now; unmarks it. */
function anchorOffset(page: Page): Promise<number> {
  return page.$eval("#log", (log) => {
    const anchor = document.querySelector("[data-anchor]") as HTMLElement;
    delete anchor.dataset.anchor;
    return anchor.getBoundingClientRect().top -
      log.getBoundingClientRect().top;
  });
}

/** How many lines the log has. */
function lineCount(page: Page): Promise<number> {
  return page.$$eval("#lines li", (items) => items.length);
}

browserTest(
  "scrolling up in a room of 500 messages loads them all, in order, without the view jumping; then the beginning shows",
  async ({ url, open, visitor }) => {
    const bob = await visitor("bob");
    for (let i = 1; i <= MESSAGES; i++) bob.send(`m${i}`);
    await bob.nextMatching(new RegExp(`^bob: m${MESSAGES}$`));
    const { page } = await open(url(), undefined, { nick: "ada" });
    await waitForLine(page, `bob: m${MESSAGES}`);
    assert.ok(await lineCount(page) < 60, "the welcome has the live window");
    assert.equal(await olderState(page), "idle");
    assert.equal(
      await page.$eval("#beginning", (el) => (el as HTMLElement).hidden),
      true,
    );

    // The button, from the keyboard: focus it and press Enter.
    let lines = await lineCount(page);
    await page.focus("#older");
    await page.keyboard.press("Enter");
    await page.waitForFunction(
      (lines: number) =>
        document.querySelectorAll("#lines li").length > lines &&
        (globalThis as unknown as { olderState: string }).olderState !==
          "loading",
      { polling: "mutation" },
      lines,
    );

    // Typed, as in the terminal client: `/more` loads the next page too.
    lines = await lineCount(page);
    await say(page, "/more");
    await page.waitForFunction(
      (lines: number) =>
        document.querySelectorAll("#lines li").length > lines &&
        (globalThis as unknown as { olderState: string }).olderState !==
          "loading",
      { polling: "mutation" },
      lines,
    );

    // Then scrolling: each time to the top, until the beginning.
    let loads = 2;
    while (await olderState(page) !== "done") {
      lines = await lineCount(page);
      const before = await scrollToTopAndMark(page);
      await page.waitForFunction(
        (lines: number) =>
          document.querySelectorAll("#lines li").length > lines &&
          (globalThis as unknown as { olderState: string }).olderState !==
            "loading",
        { polling: "mutation" },
        lines,
      );
      const after = await anchorOffset(page);
      assert.ok(
        Math.abs(after - before) <= 1,
        `the line at the top stays where it was (${before} px, then ${after} px)`,
      );
      loads++;
    }
    assert.ok(loads >= 5, `${loads} loads of 100 for ~450 messages`);

    const texts = (await logLines(page)).map((line) => line.text);
    const messages = texts.filter((text) => text.startsWith("bob: m"));
    assert.deepEqual(
      messages,
      Array.from({ length: MESSAGES }, (_, i) => `bob: m${i + 1}`),
      "every message once, in order",
    );
    assert.equal(texts[0], "bob has joined.");
    assert.equal(
      await page.$eval("#beginning", (el) => el.textContent),
      "This is the beginning of #lobby.",
    );
    assert.equal(
      await page.$eval("#beginning", (el) => (el as HTMLElement).hidden),
      false,
    );
    assert.equal(
      await page.$eval("#older", (el) => (el as HTMLElement).hidden),
      true,
    );
  },
  {
    data: `${dir}/chat.db`,
    historySize: 50,
    rate: 1000,
    burst: 1000,
    connectBurst: 100,
  },
);
