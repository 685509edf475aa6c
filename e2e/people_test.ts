/// <reference lib="dom" />
/**
 * Browser tests of what the page does with the protocol additions of issue
 * 12 (sessions, private messages, typing), end to end: they need a server
 * that supports them, and fail against one that does not.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import {
  countLines,
  logLines,
  myNick,
  onlineNicks,
  say,
  settled,
  waitConnected,
  waitForLine,
  waitForUsers,
} from "./browser.ts";
import { browserTest } from "./harness.ts";

function inputValue(page: Page): Promise<string> {
  return page.$eval("textarea#input", (el) => el.value);
}

/** The JSON frames a page sends from now on, parsed. */
async function framesSent(page: Page): Promise<{ type?: string }[]> {
  const frames: { type?: string }[] = [];
  const cdp = await page.createCDPSession();
  await cdp.send("Network.enable");
  cdp.on("Network.webSocketFrameSent", ({ response }) => {
    frames.push(JSON.parse(response.payloadData));
  });
  return frames;
}

browserTest(
  "sessions: two tabs of one person are one nick, one entry, one join; a rename in one reaches the other",
  async ({ url, open }) => {
    const bob = await open(url(), undefined, { nick: "bob" });
    const ada = await open(url(), undefined, { nick: "ada" });
    await waitForLine(bob.page, "ada has joined.");

    // A second tab of ada's: no question, the same person.
    const second = await open(url(), undefined, { context: ada.context });
    assert.equal(second.nick, "ada");
    await waitForUsers(second.page, ["ada", "bob"]);
    await waitForUsers(bob.page, ["ada", "bob"]);
    await say(bob.page, "marker");
    await waitForLine(second.page, "bob: marker");
    await waitForLine(ada.page, "bob: marker");
    assert.equal(await countLines(bob.page, "ada has joined."), 1);
    assert.deepEqual(await onlineNicks(bob.page), ["ada", "bob"]);

    // A message from one tab is "mine" in both.
    await say(ada.page, "from the first tab");
    for (const page of [ada.page, second.page]) {
      const line = await waitForLine(page, "ada: from the first tab");
      assert.match(line.className, /\bmine\b/);
    }
    assert.equal(await inputValue(ada.page), "");

    // A rename in one tab renames the person in every tab.
    await say(second.page, "/nick ada_renamed");
    for (const page of [ada.page, second.page, bob.page]) {
      await waitForLine(page, "ada is now known as ada_renamed.");
      await waitForUsers(page, ["ada_renamed", "bob"]);
    }
    assert.equal(await myNick(ada.page), "ada_renamed");
    assert.equal(await myNick(second.page), "ada_renamed");
    assert.equal(
      await ada.page.evaluate(() => localStorage.getItem("deno-chat.nick")),
      "ada_renamed",
    );

    // One tab closing is not the person leaving.
    await ada.page.close();
    await say(bob.page, "still here?");
    await waitForLine(second.page, "bob: still here?");
    assert.equal(await countLines(bob.page, "ada_renamed has left."), 0);
    assert.deepEqual(await onlineNicks(bob.page), ["ada_renamed", "bob"]);
  },
);

browserTest(
  "sessions: a dropped socket comes back silently for everyone",
  async ({ url, open }) => {
    const bob = await open(url(), undefined, { nick: "bob" });
    const ada = await open(url(), undefined, { nick: "ada" });
    await waitForUsers(bob.page, ["ada", "bob"]);
    await ada.page.evaluate("socket.close()");
    await ada.page.waitForSelector('#state[data-state="reconnecting"]');
    await waitConnected(ada.page);
    await say(ada.page, "back");
    await waitForLine(bob.page, "ada: back");
    const texts = (await logLines(bob.page)).map((line) => line.text);
    assert.deepEqual(
      texts.filter((text) => /ada (has )?(left|joined)/.test(text)),
      ["ada has joined."],
    );
  },
);

browserTest(
  "private messages: /msg reaches only the two, stands out, and is answered with reply",
  async ({ url, open, visitor }) => {
    const ada = await open(url(), undefined, { nick: "ada" });
    const bob = await open(url(), undefined, { nick: "bob" });
    const cy = await visitor("cy");
    await waitForUsers(ada.page, ["ada", "bob", "cy"]);

    await say(ada.page, "/msg bob psst: lunch?");
    assert.equal(await settled(ada.page), "sent");
    for (const page of [ada.page, bob.page]) {
      const line = await waitForLine(page, "ada → bob (private): psst: lunch?");
      assert.match(line.className, /\bdm\b/);
    }
    // The reply button fills the input; the answer comes back to ada.
    await bob.page.click("#lines li.dm .reply");
    assert.equal(await inputValue(bob.page), "/msg ada ");
    await bob.page.keyboard.type("yes!");
    await bob.page.keyboard.press("Enter");
    assert.equal(await settled(bob.page), "sent");
    await waitForLine(ada.page, "bob → ada (private): yes!");

    // cy saw neither: by the public marker after them, they would have come.
    await say(ada.page, "public marker");
    await cy.nextMatching(/^ada: public marker$/);
    const seenByCy: string[] = [];
    while (cy.pending > 0) seenByCy.push(await cy.next());
    assert.ok(
      !seenByCy.some((line) => /psst|yes!/.test(line)),
      seenByCy.join("\n"),
    );

    // To someone who is not here: refused, kept, with the server's reason.
    await say(ada.page, "/msg nobody hello?");
    const reason = await settled(ada.page);
    assert.match(reason, /^Not sent: /);
    assert.equal(
      await ada.page.$eval(
        "#send-error",
        (el) => (el as HTMLElement).dataset.code,
      ),
      "no_such_nick",
    );
    assert.equal(await inputValue(ada.page), "/msg nobody hello?");
  },
);

browserTest(
  "typing: at most one frame every 2 s; the others see it until the message, or for about 4 s",
  async ({ url, open }) => {
    const ada = await open(url(), undefined, { nick: "ada" });
    const bob = await open(url(), undefined, { nick: "bob" });
    await waitForUsers(ada.page, ["ada", "bob"]);
    const sent = await framesSent(ada.page);

    // Typing for about 3 s: two typing frames at most.
    await ada.page.bringToFront();
    await ada.page.click("#input");
    await ada.page.keyboard.type("typing slowly here", { delay: 170 });
    await bob.page.waitForFunction(
      () => document.getElementById("typing")?.textContent === "ada is typing…",
      { polling: "mutation" },
    );
    const typing = sent.filter((frame) => frame.type === "typing").length;
    assert.ok(typing >= 1 && typing <= 2, `${typing} typing frames`);

    // The message clears it at once.
    await ada.page.keyboard.press("Enter");
    await waitForLine(bob.page, "ada: typing slowly here");
    assert.equal(await bob.page.$eval("#typing", (el) => el.textContent), "");

    // Without a message it goes by itself. (First 2 s from the last typing
    // frame: the server passes on at most one per 2 s.)
    await new Promise((resolve) => setTimeout(resolve, 2100));
    await ada.page.keyboard.type("x");
    await bob.page.waitForFunction(
      () => document.getElementById("typing")?.textContent === "ada is typing…",
      { polling: "mutation" },
    );
    const shown = Date.now();
    await bob.page.waitForFunction(
      () => document.getElementById("typing")?.textContent === "",
      { polling: "mutation", timeout: 6000 },
    );
    const after = Date.now() - shown;
    assert.ok(after > 3000 && after < 5500, `cleared after ${after} ms`);
  },
);

browserTest(
  "sessions: a DM sent while away comes back by resume, and a reload makes no leave or join",
  async ({ url, open, visitor }) => {
    const ada = await open(url(), undefined, { nick: "ada" });
    const bob = await open(url(), undefined, { nick: "bob" });
    const cy = await visitor("cy");
    await waitForUsers(ada.page, ["ada", "bob", "cy"]);

    // bob's network goes: the page cannot reconnect until it is back.
    await bob.page.setOfflineMode(true);
    await bob.page.evaluate("socket.close()");
    await bob.page.waitForSelector('#state[data-state="reconnecting"]');
    await say(ada.page, "/msg bob while you were away");
    await waitForLine(ada.page, "ada → bob (private): while you were away");
    assert.equal(
      await bob.page.$eval("#state", (el) => (el as HTMLElement).dataset.state),
      "reconnecting",
      "bob was away when the DM was sent",
    );
    await bob.page.setOfflineMode(false);
    await bob.page.click("#retry").catch(() => {}); // or wait for its countdown
    await waitConnected(bob.page);
    await waitForLine(bob.page, "ada → bob (private): while you were away");

    // A reload: the same person, no leave, no join.
    await bob.page.reload();
    await waitConnected(bob.page);
    await say(ada.page, "after the reload");
    await waitForLine(bob.page, "ada: after the reload");
    // ada's log names bob in one join line (maybe with cy's) and no leave.
    const texts = (await logLines(ada.page)).map((line) => line.text)
      .filter((text) => /\bbob\b.*\b(left|joined)\./.test(text));
    assert.equal(texts.length, 1, texts.join("\n"));
    assert.match(texts[0], /joined\.$/);
    assert.doesNotMatch(texts[0], /left/);
    // cy never saw the DM, live or otherwise.
    await cy.nextMatching(/^ada: after the reload$/);
    const seenByCy: string[] = [];
    while (cy.pending > 0) seenByCy.push(await cy.next());
    assert.ok(!seenByCy.some((line) => /away/.test(line)), seenByCy.join("\n"));
  },
);
