/// <reference lib="dom" />
/**
 * Browser tests of edits on the page (issue 26): ArrowUp in the empty input
 * edits my last message (a bar says so; Escape cancels), the other tab
 * changes the line in place and marks it "(edited)", before and after a
 * reload; the "Edit" button by keyboard; the typed `/edit ID TEXT`;
 * refusals in the server's words; axe with an edited message on screen.
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
  waitForLine,
  waitForUsers,
} from "./browser.ts";
import { assertAccessible, browserTest } from "./harness.ts";

/** Line `id` as read (no time, no buttons), and its "(edited)" title. */
function lineOf(page: Page, id: number) {
  return page.$eval(`#lines li[data-id="${id}"]`, (li) => ({
    read: [...li.childNodes]
      .filter((node) => !["TIME", "BUTTON"].includes(node.nodeName))
      .map((node) => node.textContent).join(""),
    edited: li.querySelector(":scope > .edited")?.getAttribute("title") ??
      null,
  }));
}

/** The input's text, what describes it, and whether it has the focus. */
function inputState(page: Page) {
  return page.$eval("textarea#input", (el) => ({
    value: (el as HTMLTextAreaElement).value,
    describedBy: el.getAttribute("aria-describedby"),
    focused: document.activeElement === el,
  }));
}

/** "Edited " and the time in the page's locale: the mark's title. */
const EDITED_TITLE = /^Edited \S.*\d/;

browserTest(
  "edits: ArrowUp in the empty input edits my last message; the other tab shows it in place with (edited), also after a reload; Escape cancels; axe finds nothing",
  async ({ url, open, visitor }) => {
    const ada = await open(url(), undefined, { nick: "ada" });
    const bob = await open(url(), undefined, { nick: "bob" });
    await waitForUsers(ada.page, ["ada", "bob"]);
    const cy = await visitor("cy");
    await say(ada.page, "first");
    assert.equal(await settled(ada.page), "sent");
    await say(ada.page, "lunch at noon?");
    assert.equal(await settled(ada.page), "sent");
    const lunch = await lineId(bob.page, "ada: lunch at noon?");
    // Someone else's line after it: ArrowUp still takes ada's last.
    await say(bob.page, "maybe");
    await waitForLine(ada.page, "bob: maybe");

    // ArrowUp in the empty input: the last message of mine, to edit.
    await ada.page.bringToFront();
    await ada.page.click("#input");
    await ada.page.keyboard.press("ArrowUp");
    assert.equal(await barText(ada.page, "editing"), "Editing your message");
    assert.deepEqual(await inputState(ada.page), {
      value: "lunch at noon?",
      describedBy: "send-error editing-text",
      focused: true,
    });
    // Escape gives it up: the empty input, no bar, as before.
    await ada.page.keyboard.press("Escape");
    assert.equal(await barText(ada.page, "editing"), null);
    assert.deepEqual(await inputState(ada.page), {
      value: "",
      describedBy: "send-error",
      focused: true,
    });

    // Again, the text changed, Enter: an edit, not a new message.
    await ada.page.keyboard.press("ArrowUp");
    assert.equal(await barText(ada.page, "editing"), "Editing your message");
    await ada.page.keyboard.press("Backspace");
    await ada.page.keyboard.type(" or one?");
    await ada.page.keyboard.press("Enter");
    assert.equal(await settled(ada.page), "sent");
    assert.equal(await barText(ada.page, "editing"), null);
    assert.equal((await inputState(ada.page)).describedBy, "send-error");
    assert.equal(
      await cy.nextMatching(/^\* ada edited: /),
      "* ada edited: lunch at noon or one?",
    );
    for (const { page } of [bob, ada]) {
      await waitForLine(page, "ada: lunch at noon or one? (edited)");
      const line = await lineOf(page, lunch);
      assert.equal(line.read, "ada: lunch at noon or one? (edited)");
      assert.match(line.edited ?? "", EDITED_TITLE);
      // In place: no line with the old text, none added for the edit.
      assert.equal(await countLines(page, "ada: lunch at noon?"), 0);
      assert.equal(
        await countLines(page, "ada: lunch at noon or one? (edited)"),
        1,
      );
    }
    // Only the edited one is marked.
    assert.equal(
      (await lineOf(bob.page, await lineId(bob.page, "ada: first"))).edited,
      null,
    );

    // After a reload the page gets it from the server as edited.
    await bob.page.reload();
    await waitConnected(bob.page);
    await waitForLine(bob.page, "ada: lunch at noon or one? (edited)");
    const reloaded = await lineOf(bob.page, lunch);
    assert.equal(reloaded.read, "ada: lunch at noon or one? (edited)");
    assert.match(reloaded.edited ?? "", EDITED_TITLE);
    assert.equal(await countLines(bob.page, "ada: lunch at noon?"), 0);

    // The "Edit" button on my line, by keyboard; bob's lines have none.
    assert.equal(
      await bob.page.$$eval(
        `#lines li[data-id="${lunch}"] button[aria-label="Edit your message"]`,
        (buttons) => buttons.length,
      ),
      0,
    );
    const first = await lineId(ada.page, "ada: first");
    await ada.page.bringToFront();
    await ada.page.focus("#log");
    for (let i = 0; i < 12; i++) {
      await ada.page.keyboard.press("Tab");
      if ((await focusedElement(ada.page)).label === "Edit your message") break;
    }
    assert.deepEqual(await focusedElement(ada.page), {
      tag: "BUTTON",
      id: "",
      label: "Edit your message",
      line: String(first),
    });
    await ada.page.keyboard.press("Enter");
    assert.equal(await barText(ada.page, "editing"), "Editing your message");
    assert.deepEqual(await inputState(ada.page), {
      value: "first",
      describedBy: "send-error editing-text",
      focused: true,
    });
    // While editing, the input is the text as it is: "/me" is no command.
    await ada.page.keyboard.type(" /me");
    await ada.page.keyboard.press("Enter");
    assert.equal(await settled(ada.page), "sent");
    await waitForLine(bob.page, "ada: first /me (edited)");
    assert.equal(
      (await lineOf(bob.page, first)).read,
      "ada: first /me (edited)",
    );

    // The typed form still works.
    await say(ada.page, `/edit ${lunch} lunch at one`);
    assert.equal(await settled(ada.page), "sent");
    await waitForLine(bob.page, "ada: lunch at one (edited)");
    assert.equal(
      (await lineOf(bob.page, lunch)).read,
      "ada: lunch at one (edited)",
    );

    // Not hers: the server's reason beside the input, which keeps the text.
    const maybe = await lineId(ada.page, "bob: maybe");
    await say(ada.page, `/edit ${maybe} definitely`);
    assert.equal(
      await settled(ada.page),
      "Not edited: only its author may edit a message",
    );
    assert.equal(
      (await inputState(ada.page)).value,
      `/edit ${maybe} definitely`,
    );
    assert.equal((await lineOf(bob.page, maybe)).read, "bob: maybe");

    // An edited message on screen and the edit bar open: nothing for axe,
    // light or dark.
    await ada.page.click("#input");
    await ada.page.keyboard.down("Control");
    await ada.page.keyboard.press("a");
    await ada.page.keyboard.up("Control");
    await ada.page.keyboard.press("Backspace");
    await ada.page.keyboard.press("ArrowUp");
    assert.equal(await barText(ada.page, "editing"), "Editing your message");
    await assertAccessible([ada.page, bob.page]);
  },
);

browserTest(
  "edits: with editing off (--edit-window 0) my lines have no Edit button and ArrowUp does not edit; a typed /edit gets the server's reason, the message unchanged",
  async ({ url, open, visitor }) => {
    const { page } = await open(url(), undefined, { nick: "ada" });
    const bob = await visitor("bob");
    await say(page, "typo");
    assert.equal(await settled(page), "sent");
    const id = await lineId(page, "ada: typo");
    assert.equal(
      await page.$$eval("#lines li > .edit-own", (buttons) => buttons.length),
      0,
      "the welcome said editing is off",
    );
    // ArrowUp only brings back what was sent, to send again.
    await page.keyboard.press("ArrowUp");
    assert.equal(await barText(page, "editing"), null);
    assert.equal((await inputState(page)).value, "typo");
    await page.evaluate("setInput('')");
    await say(page, `/edit ${id} typos`);
    assert.equal(
      await settled(page),
      "Not edited: messages cannot be edited here",
    );
    assert.deepEqual(await lineOf(page, id), {
      read: "ada: typo",
      edited: null,
    });
    await page.evaluate("setInput('')");
    await say(page, "next");
    assert.equal(await settled(page), "sent");
    assert.equal(await bob.nextMatching(/^ada: /), "ada: typo");
    assert.equal(await bob.nextMatching(/^ada: /), "ada: next");
  },
  { editWindow: 0 },
);

browserTest(
  "edits: an edit made while disconnected waits in the outbox and goes out, once, on reconnect",
  async (ctx) => {
    const { page } = await ctx.open(ctx.url(), undefined, { nick: "ada" });
    const bob = await ctx.visitor("bob");
    await say(page, "typo");
    assert.equal(await settled(page), "sent");
    const id = await lineId(page, "ada: typo");
    assert.equal(await bob.nextMatching(/^ada: /), "ada: typo");
    // The next retry is far off, as after many failed attempts.
    await page.evaluate("attempt = 5");
    await page.evaluate("socket.close()");
    await page.waitForSelector('#state[data-state="reconnecting"]');

    await page.keyboard.press("ArrowUp");
    await page.keyboard.type("s");
    await page.keyboard.press("Enter");
    // Waiting, shown as an edit; the bar and the input are free.
    await page.waitForSelector("#outbox li");
    assert.deepEqual(
      await page.$$eval("#outbox li", (items) =>
        items.map((li) => ({
          tag: li.querySelector(".tag")?.textContent,
          text: li.querySelector(".text")?.textContent,
        }))),
      [{ tag: " (edit)", text: "typos" }],
    );
    assert.equal(await barText(page, "editing"), null);
    assert.equal((await inputState(page)).value, "");

    await page.click("#retry");
    await waitConnected(page);
    assert.equal(
      await bob.nextMatching(/^\* ada edited: /),
      "* ada edited: typos",
    );
    await waitForLine(page, "ada: typos (edited)");
    assert.equal((await lineOf(page, id)).read, "ada: typos (edited)");
    await page.waitForFunction(() =>
      document.querySelectorAll("#outbox li").length === 0
    );
    // Once: the next of ada's lines is the next message.
    await say(page, "marker");
    assert.equal(await bob.nextMatching(/^(ada: |\* ada )/), "ada: marker");
  },
);
