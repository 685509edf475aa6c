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
  barText,
  countLines,
  focusedElement,
  lineId,
  say,
  settled,
  waitConnected,
  waitForUsers,
} from "./browser.ts";
import { assertAccessible, browserTest } from "./harness.ts";

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
    const asked = await lineId(ada.page, "bob: lunch at noon?");

    // Tab from the log to bob's message's Reply button; Enter chooses it.
    await ada.page.bringToFront();
    await ada.page.focus("#log");
    for (let i = 0; i < 10; i++) {
      await ada.page.keyboard.press("Tab");
      if ((await focusedElement(ada.page)).label === "Reply to bob") break;
    }
    assert.deepEqual(await focusedElement(ada.page), {
      tag: "BUTTON",
      id: "",
      label: "Reply to bob",
      line: String(asked),
    });
    await ada.page.keyboard.press("Enter");
    assert.equal(
      await barText(ada.page, "replying"),
      "Replying to bob: “lunch at noon?”",
    );
    assert.equal((await focusedElement(ada.page)).id, "input");
    assert.equal(await describedBy(ada.page), "send-error replying-text");
    await ada.page.keyboard.type("yes, see you");
    await ada.page.keyboard.press("Enter");

    // Sent as a reply: both tabs show the quote above it.
    const answer = await lineId(bob.page, "ada: yes, see you");
    assert.equal(await lineId(ada.page, "ada: yes, see you"), answer);
    assert.equal(await settled(ada.page), "sent");
    assert.equal(await barText(ada.page, "replying"), null);
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
    assert.equal((await focusedElement(bob.page)).line, String(asked));
    assert.equal((await focusedElement(bob.page)).tag, "LI");
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
      await barText(ada.page, "replying"),
      "Replying to bob: “lunch at noon?”",
    );
    await ada.page.keyboard.type("no quote");
    await ada.page.keyboard.press("Escape");
    assert.equal(await barText(ada.page, "replying"), null);
    assert.equal(
      await ada.page.$eval("#replying-text", (el) => el.textContent),
      "",
    );
    assert.equal(await describedBy(ada.page), "send-error");
    assert.equal((await focusedElement(ada.page)).id, "input");
    await ada.page.keyboard.press("Enter");
    const plain = await lineId(bob.page, "ada: no quote");
    assert.equal(await quoteAbove(bob.page, plain), null);
    // The × does it too.
    await ada.page.click(
      `#lines li[data-id="${answer}"] button[aria-label="Reply to ada"]`,
    );
    assert.equal(
      await barText(ada.page, "replying"),
      "Replying to ada: “yes, see you”",
    );
    await ada.page.click("#reply-cancel");
    assert.equal(await barText(ada.page, "replying"), null);

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
    await assertAccessible([ada.page, bob.page]);
  },
);

browserTest(
  "replies: a reply made while disconnected waits with its quote and goes out as a reply, once, on reconnect",
  async (ctx) => {
    const { page } = await ctx.open(ctx.url(), undefined, { nick: "ada" });
    const bob = await ctx.visitor("bob");
    bob.send("lunch?");
    const asked = await lineId(page, "bob: lunch?");
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
    assert.equal(await barText(page, "replying"), null);
    assert.equal(await page.$eval("textarea#input", (el) => el.value), "");

    await page.click("#retry");
    await waitConnected(page);
    const answer = await lineId(page, "ada: yes");
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
