/// <reference lib="dom" />
/**
 * Identity and moderation in the real page (headless Chromium): a
 * moderator signed in by a login token in the URL fragment deletes a
 * person's message and kicks them; that person, in another browser context,
 * sees the message gone and the kick notice, and does not reconnect.
 *
 * @module
 */

import assert from "node:assert/strict";
import { AUTH_OPTIONS, hs256 } from "../tests/auth_helpers.ts";
import { logLines, say, waitForLine } from "./browser.ts";
import { browserTest } from "./harness.ts";

browserTest(
  "a moderator deletes a message and kicks its author, who sees both",
  async ({ chat, open }) => {
    const token = await hs256({ sub: "op-1", name: "mod", roles: ["op"] });
    const mod = await open(
      `http://127.0.0.1:${chat.port}/#lobby&token=${token}`,
    );
    assert.equal(mod.nick, "mod");
    // The token left the address bar as soon as it was read.
    assert.equal(new URL(mod.page.url()).hash, "#lobby");
    const bob = await open(`http://127.0.0.1:${chat.port}/`, undefined, {
      nick: "bob",
    });
    assert.equal(bob.nick, "bob");
    // Bob's page marks the moderator's name as verified.
    const marked = await bob.page.waitForSelector(
      "#users .nick .verified-mark",
    );
    assert.equal(
      await marked!.evaluate((mark) =>
        mark.parentElement!.firstChild!.textContent
      ),
      "mod",
    );
    await marked!.dispose();

    await say(bob.page, "a rude remark");
    await waitForLine(mod.page, "bob: a rude remark");
    const id = await mod.page.$eval(
      "#log li.message:last-of-type",
      (li) => (li as HTMLElement).dataset.id,
    );
    assert.match(String(id), /^\d+$/);
    await say(mod.page, `/delete ${id}`);
    await waitForLine(bob.page, "message deleted by mod");
    await waitForLine(mod.page, "message deleted by mod");
    for (const page of [bob.page, mod.page]) {
      const texts = (await logLines(page)).map((line) => line.text);
      assert.ok(!texts.some((text) => text.includes("a rude remark")));
    }

    await say(mod.page, "/kick bob be nice");
    await waitForLine(mod.page, "bob was kicked by mod (be nice).");
    await waitForLine(bob.page, "You were kicked by mod: be nice.");
    await bob.page.waitForSelector('#state[data-state="disconnected"]');

    // A reload of the moderator's page: the deleted message does not come
    // back with the history.
    await mod.page.reload();
    await mod.page.waitForSelector('#state[data-state="connected"]');
    await waitForLine(mod.page, "bob was kicked by mod (be nice).");
    const texts = (await logLines(mod.page)).map((line) => line.text);
    assert.ok(!texts.some((text) => text.includes("a rude remark")));
  },
  AUTH_OPTIONS,
);
