/// <reference lib="dom" />
/**
 * Browser tests of replies on the page (issue 26): the "Reply" button on a
 * message (by keyboard), the bar above the input and its cancelling, the
 * quote a reply shows in another tab and where it leads, a refusal in the
 * server's words, a reply that waits offline, and axe with replies on
 * screen.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import {
  countLines,
  say,
  settled,
  waitConnected,
  waitForLine,
  waitForUsers,
} from "./browser.ts";
import { axeViolations, browserTest } from "./harness.ts";

/** The id of the log line that reads `text` (its `data-id`). */
async function idOf(page: Page, text: string): Promise<number> {
  const line = await waitForLine(page, text);
  const id = await page.$$eval(
    "#lines li",
    (items, read) =>
      items.find((li) =>
        [...li.childNodes]
          .filter((node) => !["TIME", "BUTTON"].includes(node.nodeName))
          .map((node) => node.textContent).join("") === read
      )?.getAttribute("data-id"),
    line.text,
  );
  assert.ok(id, `"${text}" has an id`);
  return Number(id);
}

/** What the focused element is: its tag, accessible label, line's id. */
function focused(page: Page) {
  return page.evaluate(() => {
    const el = document.activeElement as HTMLElement | null;
    return {
      tag: el?.tagName,
      id: el?.id,
      label: el?.getAttribute("aria-label") ?? null,
      line: el?.closest("li")?.getAttribute("data-id") ?? null,
    };
  });
}

/** The bar above the input: its text, or null while it is hidden. */
function replyBar(page: Page): Promise<string | null> {
  return page.$eval(
    "#replying",
    (el) =>
      (el as HTMLElement).hidden
        ? null
        : el.querySelector("#replying-text")!.textContent,
  );
}

/** What describes the input to a screen reader (its element ids). */
function describedBy(page: Page): Promise<string | null> {
  return page.$eval("#input", (el) => el.getAttribute("aria-describedby"));
}

/** The quote shown above line `id`, as read and as its parts. */
function quoteAbove(page: Page, id: number) {
  return page.$eval(`#lines li[data-id="${id}"]`, (li) => {
    const quote = li.querySelector(":scope > .quote");
    return quote && {
      tag: quote.tagName,
      read: quote.textContent,
      from: quote.querySelector(".nick")?.textContent,
      text: quote.querySelector(".quoted")?.textContent,
      mention: li.classList.contains("mention"),
    };
  });
}

browserTest(
  "replies: Reply by keyboard quotes a message; the other tab shows the quote, which leads to the original; Escape cancels; a refusal is the server's; axe finds nothing",
  async ({ url, open }) => {
    const ada = await open(url(), undefined, { nick: "ada" });
    const bob = await open(url(), undefined, { nick: "bob" });
    await waitForUsers(ada.page, ["ada", "bob"]);
    await say(bob.page, "lunch at noon?");
    const asked = await idOf(ada.page, "bob: lunch at noon?");

    // Tab from the log to bob's message's Reply button; Enter chooses it.
    await ada.page.bringToFront();
    await ada.page.focus("#log");
    for (let i = 0; i < 10; i++) {
      await ada.page.keyboard.press("Tab");
      if ((await focused(ada.page)).label === "Reply to bob") break;
    }
    assert.deepEqual(await focused(ada.page), {
      tag: "BUTTON",
      id: "",
      label: "Reply to bob",
      line: String(asked),
    });
    await ada.page.keyboard.press("Enter");
    assert.equal(
      await replyBar(ada.page),
      "Replying to bob: “lunch at noon?”",
    );
    assert.equal((await focused(ada.page)).id, "input");
    assert.equal(await describedBy(ada.page), "send-error replying-text");
    await ada.page.keyboard.type("yes, see you");
    await ada.page.keyboard.press("Enter");

    // Sent as a reply: both tabs show the quote above it.
    const answer = await idOf(bob.page, "ada: yes, see you");
    assert.equal(await idOf(ada.page, "ada: yes, see you"), answer);
    assert.equal(await settled(ada.page), "sent");
    assert.equal(await replyBar(ada.page), null);
    for (const { page } of [ada, bob]) {
      assert.deepEqual(await quoteAbove(page, answer), {
        tag: "BUTTON",
        read: "In reply to bob: lunch at noon?",
        from: "bob",
        text: "lunch at noon?",
        // A reply to bob's message is a mention for bob.
        mention: page === bob.page,
      });
    }

    // Activating the quote brings the original into view, marked, focused.
    await bob.page.bringToFront();
    await bob.page.focus(`#lines li[data-id="${answer}"] > .quote`);
    await bob.page.keyboard.press("Enter");
    await bob.page.waitForSelector(`#lines li[data-id="${asked}"].flash`);
    assert.equal((await focused(bob.page)).line, String(asked));
    assert.equal((await focused(bob.page)).tag, "LI");
    // For a moment.
    await bob.page.waitForFunction(
      (id) => !document.querySelector(`#lines li[data-id="${id}"].flash`),
      {},
      asked,
    );

    // Escape cancels a reply; the text typed stays and goes as a message.
    await ada.page.bringToFront();
    await ada.page.click(
      `#lines li[data-id="${asked}"] button[aria-label="Reply to bob"]`,
    );
    assert.equal(
      await replyBar(ada.page),
      "Replying to bob: “lunch at noon?”",
    );
    await ada.page.keyboard.type("no quote");
    await ada.page.keyboard.press("Escape");
    assert.equal(await replyBar(ada.page), null);
    assert.equal(
      await ada.page.$eval("#replying-text", (el) => el.textContent),
      "",
    );
    assert.equal(await describedBy(ada.page), "send-error");
    assert.equal((await focused(ada.page)).id, "input");
    await ada.page.keyboard.press("Enter");
    const plain = await idOf(bob.page, "ada: no quote");
    assert.equal(await quoteAbove(bob.page, plain), null);
    // The × does it too.
    await ada.page.click(
      `#lines li[data-id="${answer}"] button[aria-label="Reply to ada"]`,
    );
    assert.equal(await replyBar(ada.page), "Replying to ada: “yes, see you”");
    await ada.page.click("#reply-cancel");
    assert.equal(await replyBar(ada.page), null);

    // A reply to no message the room keeps: the server's reason.
    await say(ada.page, "/reply 99999 anyone?");
    assert.equal(
      await settled(ada.page),
      "Not sent: no message 99999 to reply to in this room's history",
    );
    assert.equal(
      await ada.page.$eval("textarea#input", (el) => el.value),
      "/reply 99999 anyone?",
    );

    // Replies on screen and the bar open: nothing for axe, light or dark.
    await ada.page.click(
      `#lines li[data-id="${answer}"] button[aria-label="Reply to ada"]`,
    );
    for (const theme of ["light", "dark"]) {
      for (const { page } of [ada, bob]) {
        await page.emulateMediaFeatures([
          { name: "prefers-color-scheme", value: theme },
        ]);
        const violations = await axeViolations(page);
        assert.deepEqual(
          violations,
          [],
          `${theme}:\n${JSON.stringify(violations, null, 1)}`,
        );
      }
    }
  },
);

browserTest(
  "replies: a reply made while disconnected waits with its quote and goes out as a reply, once, on reconnect",
  async (ctx) => {
    const { page } = await ctx.open(ctx.url(), undefined, { nick: "ada" });
    const bob = await ctx.visitor("bob");
    bob.send("lunch?");
    const asked = await idOf(page, "bob: lunch?");
    await page.click(
      `#lines li[data-id="${asked}"] button[aria-label="Reply to bob"]`,
    );
    // The next retry is far off, as after many failed attempts.
    await page.evaluate("attempt = 5");
    await page.evaluate("socket.close()");
    await page.waitForSelector('#state[data-state="reconnecting"]');

    await page.keyboard.type("yes");
    await page.keyboard.press("Enter");
    // Waiting, shown with what it answers; the bar and the input are free.
    await page.waitForSelector("#outbox li");
    assert.deepEqual(
      await page.$$eval("#outbox li", (items) =>
        items.map((li) => ({
          quote: li.querySelector(":scope > .quote")?.textContent,
          text: li.querySelector(".text")?.textContent,
        }))),
      [{ quote: "In reply to bob: lunch?", text: "yes" }],
    );
    assert.equal(await replyBar(page), null);
    assert.equal(await page.$eval("textarea#input", (el) => el.value), "");

    await page.click("#retry");
    await waitConnected(page);
    const answer = await idOf(page, "ada: yes");
    assert.equal(
      await bob.nextMatching(/^ada: /),
      'ada: ↪ bob: "lunch?" yes',
    );
    assert.deepEqual(await quoteAbove(page, answer), {
      tag: "BUTTON",
      read: "In reply to bob: lunch?",
      from: "bob",
      text: "lunch?",
      mention: false,
    });
    await page.waitForFunction(() =>
      document.querySelectorAll("#outbox li").length === 0
    );
    await say(page, "marker");
    assert.equal(await bob.nextMatching(/^ada: /), "ada: marker");
    assert.equal(await countLines(page, "ada: yes"), 1);
  },
);
