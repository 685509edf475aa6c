/// <reference lib="dom" />
/**
 * Browser tests of reactions on the page (issue 26): the "React" button's
 * picker by keyboard only (arrows, Escape, Enter), the chips the other tab
 * shows live with who and whether one is mine, a click on a chip adding or
 * taking back mine, the counts after a reload (the session's `me`) and after
 * a resume (`reacted`), the typed `/react`, a refusal in the server's words,
 * a deleted message's chips going with it, and axe with chips and the picker
 * open.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import {
  focusedElement,
  lineId,
  say,
  settled,
  waitConnected,
  waitForLine,
  waitForUsers,
} from "./browser.ts";
import { assertAccessible, browserTest } from "./harness.ts";

/** A chip as shown and as a screen reader gets it. */
interface Chip {
  text: string;
  pressed: string | null;
  label: string | null;
  title: string | null;
}

/** The chips under line `id`, in order. */
function chipsOf(page: Page, id: number): Promise<Chip[]> {
  return page.$$eval(
    `#lines li[data-id="${id}"] > .reactions > button`,
    (chips) =>
      chips.map((chip) => ({
        text: chip.textContent ?? "",
        pressed: chip.getAttribute("aria-pressed"),
        label: chip.getAttribute("aria-label"),
        title: chip.getAttribute("title"),
      })),
  );
}

/** Waits until the chips under line `id` read `texts` (["👍 2"]), and returns them. */
async function waitForChips(
  page: Page,
  id: number,
  texts: string[],
): Promise<Chip[]> {
  await page.waitForFunction(
    (id: number, texts: string[]) => {
      const shown = [
        ...document.querySelectorAll(
          `#lines li[data-id="${id}"] > .reactions > button`,
        ),
      ].map((chip) => chip.textContent);
      return shown.length === texts.length &&
        shown.every((text, i) => text === texts[i]);
    },
    { polling: "mutation" },
    id,
    texts,
  );
  return await chipsOf(page, id);
}

/** Waits for the reason shown beside the input, and returns it. */
async function refusal(page: Page): Promise<string> {
  const handle = await page.waitForFunction(
    () => document.getElementById("send-error")?.textContent || false,
    { polling: "mutation" },
  );
  const reason = await handle.jsonValue();
  await handle.dispose();
  return String(reason);
}

/** The picker of line `id`: whether it is open, and its items' state. */
function pickerOf(page: Page, id: number) {
  return page.$eval(`#lines li[data-id="${id}"]`, (li) => {
    const button = li.querySelector(":scope > .react-own");
    const menu = li.querySelector(":scope > #picker");
    return {
      expanded: button?.getAttribute("aria-expanded") ?? null,
      controls: button?.getAttribute("aria-controls") ?? null,
      role: menu?.getAttribute("role") ?? null,
      items: menu
        ? [...menu.children].map((item) =>
          `${item.getAttribute("role")} ${item.getAttribute("aria-label")} ${
            item.getAttribute("aria-checked")
          }`
        )
        : [],
    };
  });
}

/** Presses `key` and says which picker item (or button) has the focus. */
async function press(page: Page, key: "ArrowRight" | "ArrowLeft" | "End") {
  await page.keyboard.press(key);
  return (await focusedElement(page)).label;
}

const PICKER_ITEMS = [
  "thumbs up",
  "heart",
  "laughing",
  "celebration",
  "surprised",
  "sad",
  "thanks",
  "looking",
];

browserTest(
  "reactions: the React picker by keyboard; the other tab's chip live with who and aria-pressed; a chip click adds mine; after a reload the counts and mine; taking it back; /react typed and refused; a deletion takes the chips; axe finds nothing",
  async ({ url, open }) => {
    const ada = await open(url(), undefined, { nick: "ada" });
    const bea = await open(url(), undefined, { nick: "bea" });
    await waitForUsers(ada.page, ["ada", "bea"]);
    await say(ada.page, "ship it?");
    assert.equal(await settled(ada.page), "sent");
    const id = await lineId(bea.page, "ada: ship it?");
    assert.equal(await lineId(ada.page, "ada: ship it?"), id);
    assert.deepEqual(await chipsOf(ada.page, id), []);

    // bea, by keyboard only: Tab from the log to the message's React button.
    await bea.page.bringToFront();
    await bea.page.focus("#log");
    for (let i = 0; i < 12; i++) {
      await bea.page.keyboard.press("Tab");
      if ((await focusedElement(bea.page)).label === "React to ada") break;
    }
    const reactButton = {
      tag: "BUTTON",
      id: "",
      label: "React to ada",
      line: String(id),
    };
    assert.deepEqual(await focusedElement(bea.page), reactButton);
    assert.deepEqual(await pickerOf(bea.page, id), {
      expanded: "false",
      controls: null,
      role: null,
      items: [],
    });

    // Enter opens the picker, a menu, its first emoji focused.
    await bea.page.keyboard.press("Enter");
    assert.deepEqual(await pickerOf(bea.page, id), {
      expanded: "true",
      controls: "picker",
      role: "menu",
      items: PICKER_ITEMS.map((name) => `menuitemcheckbox ${name} false`),
    });
    assert.deepEqual(await focusedElement(bea.page), {
      tag: "BUTTON",
      id: "",
      label: "thumbs up",
      line: String(id),
    });
    // The arrows move through it, round at either end.
    assert.equal(await press(bea.page, "ArrowRight"), "heart");
    assert.equal(await press(bea.page, "ArrowRight"), "laughing");
    assert.equal(await press(bea.page, "ArrowLeft"), "heart");
    assert.equal(await press(bea.page, "ArrowLeft"), "thumbs up");
    assert.equal(await press(bea.page, "ArrowLeft"), "looking");
    assert.equal(await press(bea.page, "ArrowRight"), "thumbs up");
    // Escape closes it, the focus back on the React button; nothing sent.
    await bea.page.keyboard.press("Escape");
    assert.deepEqual(await focusedElement(bea.page), reactButton);
    assert.equal((await pickerOf(bea.page, id)).expanded, "false");
    assert.equal(await bea.page.$("#picker"), null);

    // Again: Enter, arrows, Enter picks 👍.
    await bea.page.keyboard.press("Enter");
    assert.equal((await focusedElement(bea.page)).label, "thumbs up");
    assert.equal(await press(bea.page, "End"), "looking");
    assert.equal(await press(bea.page, "ArrowRight"), "thumbs up");
    await bea.page.keyboard.press("Enter");
    assert.deepEqual(await focusedElement(bea.page), reactButton);
    assert.equal(await bea.page.$("#picker"), null);

    // ada sees it live: 👍 1, not hers; bea's is pressed.
    assert.deepEqual(await waitForChips(ada.page, id, ["👍 1"]), [{
      text: "👍 1",
      pressed: "false",
      label: "👍, 1 reaction: bea; press to add yours",
      title: "bea",
    }]);
    assert.deepEqual(await waitForChips(bea.page, id, ["👍 1"]), [{
      text: "👍 1",
      pressed: "true",
      label: "👍, 1 reaction: bea; press to take yours back",
      title: "bea",
    }]);
    // The chips are no part of the line's text.
    await waitForLine(ada.page, "ada: ship it?");

    // ada clicks the chip: 👍 2, hers too.
    await ada.page.bringToFront();
    await ada.page.click(`#lines li[data-id="${id}"] > .reactions > button`);
    assert.deepEqual(await waitForChips(ada.page, id, ["👍 2"]), [{
      text: "👍 2",
      pressed: "true",
      label: "👍, 2 reactions: bea, ada; press to take yours back",
      title: "bea, ada",
    }]);
    assert.deepEqual(await waitForChips(bea.page, id, ["👍 2"]), [{
      text: "👍 2",
      pressed: "true",
      label: "👍, 2 reactions: bea, ada; press to take yours back",
      title: "bea, ada",
    }]);

    // bea reloads: the welcome's history brings 👍 2, hers (her session).
    await bea.page.reload();
    await waitConnected(bea.page);
    await waitForLine(bea.page, "ada: ship it?");
    assert.deepEqual(await waitForChips(bea.page, id, ["👍 2"]), [{
      text: "👍 2",
      pressed: "true",
      label: "👍, 2 reactions: bea, ada; press to take yours back",
      title: "bea, ada",
    }]);
    // Her picker knows 👍 is hers.
    await bea.page.bringToFront();
    await bea.page.click(`#lines li[data-id="${id}"] > .react-own`);
    assert.equal(
      (await pickerOf(bea.page, id)).items[0],
      "menuitemcheckbox thumbs up true",
    );
    await bea.page.keyboard.press("Escape");

    // bea takes hers back with the chip (by keyboard): ada sees 👍 1, hers.
    await bea.page.focus(`#lines li[data-id="${id}"] > .reactions > button`);
    await bea.page.keyboard.press("Enter");
    assert.deepEqual(await waitForChips(ada.page, id, ["👍 1"]), [{
      text: "👍 1",
      pressed: "true",
      label: "👍, 1 reaction: ada; press to take yours back",
      title: "ada",
    }]);
    assert.deepEqual(await waitForChips(bea.page, id, ["👍 1"]), [{
      text: "👍 1",
      pressed: "false",
      label: "👍, 1 reaction: ada; press to add yours",
      title: "ada",
    }]);
    // The chip kept the focus.
    assert.equal(
      (await focusedElement(bea.page)).label,
      "👍, 1 reaction: ada; press to add yours",
    );

    // Typed: /react ID EMOJI through the page's parser; a new key goes last.
    await say(bea.page, `/react ${id} 🎉`);
    assert.equal(await settled(bea.page), "sent");
    assert.deepEqual(
      (await waitForChips(ada.page, id, ["👍 1", "🎉 1"])).map((c) => c.label),
      [
        "👍, 1 reaction: ada; press to take yours back",
        "🎉, 1 reaction: bea; press to add yours",
      ],
    );
    // Its usage, and the server's refusals, where a send's refusal is.
    await say(bea.page, "/react ship");
    assert.equal(
      await settled(bea.page),
      "usage: /react ID EMOJI (an emoji or :short_name:; again to take it back)",
    );
    await bea.page.$eval("#input", (el) => {
      (el as HTMLTextAreaElement).value = "";
    });
    // A typed /react leaves the input at once; the refusal comes after.
    await say(bea.page, "/react 99999 👍");
    assert.equal(
      await refusal(bea.page),
      "Not reacted: no message 99999 in this room's history",
    );
    assert.equal(await bea.page.$eval("textarea#input", (el) => el.value), "");
    await say(bea.page, `/react ${id} ok`);
    assert.match(
      await refusal(bea.page),
      /^Not reacted: a reaction is one emoji or a :short_name:/,
    );

    // Chips on screen and the picker open (ada's on a phone): nothing wider
    // than the log, and nothing for axe, light or dark.
    await ada.page.bringToFront();
    await ada.page.setViewport({ width: 375, height: 667 });
    await ada.page.click(`#lines li[data-id="${id}"] > .react-own`);
    assert.equal((await pickerOf(ada.page, id)).role, "menu");
    assert.deepEqual(
      await ada.page.$eval("#log", (log) => {
        const edge = log.getBoundingClientRect().right;
        return {
          scrolls: log.scrollWidth > log.clientWidth,
          past: [...log.querySelectorAll(".reactions, .chip, #picker")]
            .filter((el) => el.getBoundingClientRect().right > edge).length,
        };
      }),
      { scrolls: false, past: 0 },
    );
    await assertAccessible([ada.page, bea.page]);
    await ada.page.keyboard.press("Escape");

    // ada deletes her message: its chips go with it, in both tabs.
    await say(ada.page, `/delete ${id}`);
    for (const { page } of [ada, bea]) {
      await page.waitForSelector(`#lines li.deleted[data-id="${id}"]`);
      assert.equal(
        await page.$$eval(`#lines li[data-id="${id}"] .chip`, (c) => c.length),
        0,
      );
    }
  },
);

browserTest(
  "reactions: a tab that was away learns on resuming what changed on the messages it shows (`reacted`)",
  async (ctx) => {
    const { page } = await ctx.open(ctx.url(), undefined, { nick: "bea" });
    const ada = await ctx.visitor("ada");
    ada.send("vote");
    const vote = await lineId(page, "ada: vote");
    ada.send(`/react ${vote} 👍`);
    await waitForChips(page, vote, ["👍 1"]);

    // bea's connection drops; the next retry is far off.
    await page.evaluate("attempt = 5");
    await page.evaluate("socket.close()");
    await page.waitForSelector('#state[data-state="reconnecting"]');
    // Meanwhile ada takes 👍 back and adds 🎉.
    ada.send(`/react ${vote} 👍`);
    assert.equal(
      await ada.nextMatching(/took back 👍/),
      `* ada took back 👍 from #${vote}`,
    );
    ada.send(`/react ${vote} 🎉`);
    assert.equal(
      await ada.nextMatching(/reacted 🎉/),
      `* ada reacted 🎉 to #${vote}`,
    );
    assert.deepEqual(
      (await chipsOf(page, vote)).map((c) => c.text),
      ["👍 1"],
    );

    await page.click("#retry");
    await waitConnected(page);
    assert.deepEqual(await waitForChips(page, vote, ["🎉 1"]), [{
      text: "🎉 1",
      pressed: "false",
      label: "🎉, 1 reaction: ada; press to add yours",
      title: "ada",
    }]);
  },
);
