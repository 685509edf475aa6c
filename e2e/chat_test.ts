/// <reference lib="dom" />
/**
 * Browser tests: the real page in headless Chromium against a real server.
 *
 * Each test starts its own server on free ports and its own browser with a
 * fresh profile, and closes both in a `finally`. Where Chromium is missing
 * the tests are skipped (with a message), unless `CI` is set: then they fail.
 *
 * @module
 */

import assert from "node:assert/strict";
import { startChat } from "../main.ts";
import {
  logLines,
  myNick,
  onlineNicks,
  say,
  waitConnected,
  waitForLine,
  waitForUsers,
} from "./browser.ts";
import { assertOnce, browserTest, CHAT_OPTIONS } from "./harness.ts";

browserTest("two tabs: a message reaches both, from the sender's nick", async (
  { url, open },
) => {
  const a = await open(url());
  const b = await open(url());
  assert.notEqual(a.nick, b.nick);
  await waitForUsers(a.page, [a.nick, b.nick]);
  await waitForUsers(b.page, [a.nick, b.nick]);

  const text = "hello from tab A";
  await say(a.page, text);

  const mine = await waitForLine(a.page, `${a.nick}: ${text}`);
  const theirs = await waitForLine(b.page, `${a.nick}: ${text}`);
  assert.deepEqual(mine.nicks, [a.nick]);
  assert.deepEqual(theirs.nicks, [a.nick]);
  assert.match(mine.className, /\bmine\b/, "own message is marked as mine");
  assert.doesNotMatch(theirs.className, /\bmine\b/);
  assert.equal(await a.page.$eval("textarea#input", (el) => el.value), "");
  await assertOnce([a.page, b.page], `${a.nick}: ${text}`);
  // The own nick is shown in the header and marked in the online list.
  assert.equal(await a.page.$eval("#me", (el) => el.textContent), a.nick);
  assert.ok(
    (await a.page.$$eval(
      "#users li",
      (items) => items.map((li) => li.textContent),
    ))
      .includes(`${a.nick} (you)`),
  );
});

browserTest("closing a tab shows its leave notice in the other", async (
  { url, open },
) => {
  const a = await open(url());
  const b = await open(url());
  await waitForLine(a.page, `${b.nick} has joined.`);
  await waitForUsers(a.page, [a.nick, b.nick]);

  await b.page.close();

  await waitForLine(a.page, `${b.nick} has left.`);
  await waitForUsers(a.page, [a.nick]);
  await assertOnce([a.page], `${b.nick} has left.`);
});

browserTest("markup in a message is shown as text, never run", async (
  { url, open },
) => {
  const a = await open(url());
  // Tab B runs without the page's Content-Security-Policy, so what is tested
  // there is the page's own rendering (text nodes, never innerHTML), not the
  // CSP that would also block the inline handler.
  const b = await open(url(), (page) => page.setBypassCSP(true));
  const requests: string[] = [];
  for (const page of [a.page, b.page]) {
    page.on("request", (request) => requests.push(request.url()));
  }
  const markup = `<img src=x onerror="window.pwned=1">`;
  await say(a.page, markup);

  for (const page of [a.page, b.page]) {
    const line = await waitForLine(page, `${a.nick}: `, { contains: true });
    assert.equal(line.text, `${a.nick}: ${markup}`);
    assert.equal(await page.$$eval("#log img", (imgs) => imgs.length), 0);
    assert.equal(await page.$$eval("img", (imgs) => imgs.length), 0);
  }
  // A later message has made the round trip through both tabs: an image
  // created with the first one would have tried to load by now.
  await say(b.page, "after the markup");
  for (const page of [a.page, b.page]) {
    await waitForLine(page, `${b.nick}: after the markup`);
    assert.equal(
      await page.evaluate(() =>
        typeof (globalThis as { pwned?: unknown }).pwned
      ),
      "undefined",
    );
  }
  assert.deepEqual(requests.filter((request) => request.endsWith("/x")), []);
});

browserTest("/nick renames, and the other tab's online list follows", async (
  { url, open },
) => {
  const a = await open(url());
  const b = await open(url());
  await waitForUsers(b.page, [a.nick, b.nick]);

  await say(a.page, "/nick ada_e2e");

  await waitForLine(b.page, `${a.nick} is now known as ada_e2e.`);
  await waitForUsers(b.page, ["ada_e2e", b.nick]);
  await waitForUsers(a.page, ["ada_e2e", b.nick]);
  assert.equal(await myNick(a.page), "ada_e2e");
  assert.equal(await a.page.$eval("textarea#input", (el) => el.value), "");
  assert.ok(!(await onlineNicks(b.page)).includes(a.nick));

  await say(a.page, "now with a name");
  const line = await waitForLine(b.page, "ada_e2e: now with a name");
  assert.deepEqual(line.nicks, ["ada_e2e"]);
});

browserTest("rooms from #room are isolated", async ({ url, open }) => {
  const lobby = await open(url());
  const rustA = await open(url("rust-fans"));
  const rustB = await open(url("rust-fans"));
  assert.equal(
    await rustA.page.$eval("#room", (el) => el.textContent),
    "rust-fans",
  );
  assert.equal(
    await lobby.page.$eval("#room", (el) => el.textContent),
    "lobby",
  );
  await waitForUsers(rustA.page, [rustA.nick, rustB.nick]);
  await waitForUsers(lobby.page, [lobby.nick]);

  // A lobby message, seen by its sender (so the server has sent it out)...
  await say(lobby.page, "lobby only");
  await waitForLine(lobby.page, `${lobby.nick}: lobby only`);
  // ...then a later marker in rust-fans: once it is there, the lobby message
  // would have arrived before it if rooms leaked.
  await say(rustA.page, "rust marker");
  for (const page of [rustA.page, rustB.page]) {
    await waitForLine(page, `${rustA.nick}: rust marker`);
    const texts = (await logLines(page)).map((line) => line.text);
    assert.ok(
      !texts.some((text) => text.includes("lobby only")),
      texts.join("\n"),
    );
  }
  // And the other way round.
  await say(lobby.page, "lobby marker");
  await waitForLine(lobby.page, `${lobby.nick}: lobby marker`);
  const lobbyTexts = (await logLines(lobby.page)).map((line) => line.text);
  assert.ok(!lobbyTexts.some((text) => text.includes("rust marker")));
  assert.deepEqual(await onlineNicks(lobby.page), [lobby.nick]);
});

browserTest(
  "server restart on the same ports: reconnecting, then connected, history reset noted",
  async (ctx) => {
    const a = await ctx.open(ctx.url());
    const b = await ctx.open(ctx.url());
    await waitForUsers(a.page, [a.nick, b.nick]);
    await say(a.page, "before the restart");
    await waitForLine(b.page, `${a.nick}: before the restart`);
    // Marks these documents: a reload would lose them.
    for (const page of [a.page, b.page]) {
      await page.evaluate(() => {
        (globalThis as { e2eSameDocument?: boolean }).e2eSameDocument = true;
      });
    }

    const { port, wsPort } = ctx.chat;
    await ctx.chat.shutdown();
    for (const page of [a.page, b.page]) {
      await page.waitForSelector('#state[data-state="reconnecting"]');
      assert.equal(
        await page.$eval("#state", (el) => el.textContent),
        "reconnecting…",
      );
    }
    ctx.chat = await startChat({ ...CHAT_OPTIONS, port, wsPort });
    assert.equal(ctx.chat.port, port);
    assert.equal(ctx.chat.wsPort, wsPort);

    for (const page of [a.page, b.page]) {
      await waitConnected(page);
      const notice = await waitForLine(page, "History was reset", {
        contains: true,
      });
      assert.match(notice.text, /messages may be missing/);
      assert.match(notice.className, /\berror\b/);
      assert.equal(
        await page.evaluate(() =>
          (globalThis as { e2eSameDocument?: boolean }).e2eSameDocument
        ),
        true,
        "the page was not reloaded",
      );
      // What was said before is still on screen.
      await assertOnce([page], `${a.nick}: before the restart`);
    }
    // Each tab keeps its nick, and the chat works again.
    await waitForUsers(a.page, [a.nick, b.nick]);
    await waitForUsers(b.page, [a.nick, b.nick]);
    await say(b.page, "after the restart");
    await waitForLine(a.page, `${b.nick}: after the restart`);
    await assertOnce([a.page, b.page], `${b.nick}: after the restart`);
  },
);

browserTest(
  "one tab's socket drops while the other talks: every message shown once",
  async ({ url, open }) => {
    const a = await open(url());
    const b = await open(url());
    await waitForUsers(b.page, [a.nick, b.nick]);
    await say(a.page, "before the drop");
    await waitForLine(b.page, `${a.nick}: before the drop`);

    // Record every state tab B goes through, so the reconnect is seen even
    // if it is quick.
    await b.page.evaluate(() => {
      const state = document.getElementById("state")!;
      const seen: string[] = [];
      (globalThis as { e2eStates?: string[] }).e2eStates = seen;
      new MutationObserver(() => seen.push(state.dataset.state ?? "")).observe(
        state,
        { attributes: true, attributeFilter: ["data-state"] },
      );
    });

    // Watch the frames tab B receives, to see what its reconnect brings.
    const cdp = await b.page.createCDPSession();
    await cdp.send("Network.enable");
    const welcomes: { gap: boolean; history: { text?: string }[] }[] = [];
    cdp.on("Network.webSocketFrameReceived", ({ response }) => {
      const frame = JSON.parse(response.payloadData);
      if (frame.type === "welcome") welcomes.push(frame);
    });

    // Tab B's socket closes (the page keeps it in a top-level `let socket`)
    // and, without waiting, tab A sends three messages: they reach the
    // server while B is away or just leaving.
    const during = [
      "during the drop 1",
      "during the drop 2",
      "during the drop 3",
    ];
    await b.page.evaluate("socket.close()");
    await a.page.evaluate((texts: string[]) => {
      const input = document.getElementById("input") as HTMLInputElement;
      const form = document.getElementById("form") as HTMLFormElement;
      for (const text of texts) {
        input.value = text;
        form.requestSubmit();
      }
    }, during);

    await b.page.waitForFunction(
      () =>
        (globalThis as { e2eStates?: string[] }).e2eStates?.at(-1) ===
          "connected",
      { polling: "mutation" },
    );
    await waitConnected(b.page);
    assert.deepEqual(
      await b.page.evaluate(() =>
        (globalThis as { e2eStates?: string[] }).e2eStates
      ),
      ["reconnecting", "connected"],
    );
    // The messages sent while B was away came with its resume, no gap.
    assert.equal(welcomes.length, 1);
    assert.equal(welcomes[0].gap, false);
    assert.deepEqual(
      welcomes[0].history.flatMap((event) => event.text ?? []),
      during,
    );
    await cdp.detach();

    await say(a.page, "after the drop");
    await waitForLine(b.page, `${a.nick}: after the drop`);
    await waitForLine(a.page, `${a.nick}: after the drop`);

    const texts = ["before the drop", ...during, "after the drop"];
    for (const text of texts) {
      await assertOnce([a.page, b.page], `${a.nick}: ${text}`);
    }
    // B resumed where it left off: its lines are in the order they were sent,
    // nothing reported missing, and it kept its nick.
    const bTexts = (await logLines(b.page)).map((line) => line.text);
    const order = texts.map((text) => bTexts.indexOf(`${a.nick}: ${text}`));
    assert.deepEqual(order, [...order].sort((x, y) => x - y));
    assert.ok(
      !bTexts.some((text) => /missed|History was reset/.test(text)),
      bTexts.join("\n"),
    );
    assert.equal(await myNick(b.page), b.nick);
    await waitForUsers(a.page, [a.nick, b.nick]);
    // B's own reconnect is silent in B: its arrival is shown once, and
    // neither its leave nor its return (nor a "Reconnected.").
    await assertOnce([b.page], `${b.nick} has joined.`);
    assert.deepEqual(
      bTexts.filter((text) =>
        text.includes(`${b.nick} has left`) || /Reconnected/.test(text)
      ),
      [],
    );
  },
);
