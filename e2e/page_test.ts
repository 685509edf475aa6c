/// <reference lib="dom" />
/**
 * Browser tests of the page itself: the input, how lines are shown, the
 * title while away, following the bottom, the disconnect banner, rooms, the
 * first visit, layout on a phone, and accessibility (axe-core).
 *
 * They run against the server as it is. Private messages and typing are
 * shown here by handing the page the frames the protocol describes
 * (`receiveFrame`, the function its socket calls); e2e/people_test.ts
 * has them end to end once the server sends them.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { startChat } from "../main.ts";
import {
  chooseName,
  countLines,
  firstVisit,
  logLines,
  myNick,
  onlineNicks,
  say,
  settled,
  typeLines,
  waitConnected,
  waitForLine,
  waitForUsers,
} from "./browser.ts";
import { axeViolations, browserTest, CHAT_OPTIONS } from "./harness.ts";

/** The HTTP API's key in the test that publishes through it. */
const API_KEY = "e2e-api-key-0123456789abcdef0123456789";

const DESKTOP = { width: 1000, height: 640 };
const PHONE = { width: 375, height: 667 };

function inputValue(page: Page): Promise<string> {
  return page.$eval("textarea#input", (el) => el.value);
}

function sendError(page: Page): Promise<string> {
  return page.$eval("#send-error", (el) => el.textContent ?? "");
}

/** Empties the input as a person would (select all, delete). */
async function clearInput(page: Page): Promise<void> {
  await page.click("#input");
  await page.keyboard.down("Control");
  await page.keyboard.press("a");
  await page.keyboard.up("Control");
  await page.keyboard.press("Backspace");
}

/** Hands the page a frame as if its socket had received it. */
async function receive(page: Page, frame: unknown): Promise<void> {
  await page.evaluate((frame) => {
    (globalThis as unknown as { receiveFrame(frame: unknown): void })
      .receiveFrame(frame);
  }, frame);
}

/** The id after the last one the page has seen (for frames handed to it). */
async function nextId(page: Page): Promise<number> {
  return Number(await page.evaluate("lastId")) + 1;
}

async function waitForTitle(page: Page, title: string): Promise<void> {
  await page.waitForFunction(
    (title: string) => document.title === title,
    { polling: "mutation" },
    title,
  );
}

/** Waits until the log is scrolled to its bottom. */
async function waitAtBottom(page: Page): Promise<void> {
  await page.waitForFunction(() => {
    const log = document.getElementById("log")!;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 2;
  }, { polling: 50 });
}

function scrolledUpBy(page: Page): Promise<number> {
  return page.$eval(
    "#log",
    (log) => log.scrollHeight - log.scrollTop - log.clientHeight,
  );
}

async function scrollToTop(page: Page): Promise<void> {
  await page.$eval("#log", (log) => {
    log.scrollTop = 0;
  });
  await page.waitForFunction("atBottom === false", { polling: 50 });
}

browserTest(
  "the input: Shift+Enter keeps new lines, ArrowUp recalls, Tab completes nicks",
  async ({ url, open, visitor }) => {
    const bob = await visitor("bob");
    await visitor("bobby");
    const { page } = await open(url(), undefined, { nick: "ada" });
    await waitForUsers(page, ["ada", "bob", "bobby"]);

    await say(page, "two\nlines");
    assert.equal(await settled(page), "sent");
    await waitForLine(page, "ada: two\nlines");
    assert.deepEqual(
      await page.$eval("#lines li:last-child .text", (el) => ({
        whiteSpace: getComputedStyle(el).whiteSpace,
        rows: Math.round(
          el.getBoundingClientRect().height /
            parseFloat(getComputedStyle(el).lineHeight),
        ),
      })),
      { whiteSpace: "pre-wrap", rows: 2 },
    );
    // A plain-text client gets it on one line.
    await bob.nextMatching(/^ada: two lines$/);

    // ArrowUp in the empty input brings the last message back; not otherwise.
    await page.keyboard.press("ArrowUp");
    assert.equal(await inputValue(page), "two\nlines");
    await clearInput(page);
    await page.keyboard.type("x");
    await page.keyboard.press("ArrowUp");
    assert.equal(await inputValue(page), "x");
    await clearInput(page);

    // Tab completes the nicks online (not mine); again for the next one.
    await page.keyboard.type("bo");
    await page.keyboard.press("Tab");
    assert.equal(await inputValue(page), "bob: ");
    await page.keyboard.press("Tab");
    assert.equal(await inputValue(page), "bobby: ");
    await page.keyboard.press("Tab");
    assert.equal(await inputValue(page), "bob: ");
    await page.keyboard.type("hi, and BOBB");
    await page.keyboard.press("Tab");
    assert.equal(await inputValue(page), "bob: hi, and bobby ");
    await page.keyboard.press("Enter");
    assert.equal(await settled(page), "sent");
    await bob.nextMatching(/^ada: bob: hi, and bobby$/);
    // A word no nick starts with: Tab moves the focus on, as usual.
    await page.keyboard.type("zz");
    await page.keyboard.press("Tab");
    assert.equal(await inputValue(page), "zz");
    assert.equal(
      await page.evaluate(() => document.activeElement?.textContent),
      "Send",
    );
  },
);

browserTest(
  "a refused message stays in the input with the reason beside it, until it is sent",
  async ({ url, open }) => {
    const { page } = await open(url(), undefined, { nick: "ada" });
    await say(page, "0123456789x");
    assert.equal(
      await settled(page),
      "Not sent: too long (11 characters; at most 10).",
    );
    assert.equal(await inputValue(page), "0123456789x");
    // Editing takes the reason away.
    await clearInput(page);
    assert.equal(await sendError(page), "");

    // Messages one after another until the server's rate limit refuses one
    // (one token, refilled every 2 s: a busy machine's round trips took
    // longer than the 0.5 s of a rate of 2, and nothing was refused).
    let refused: string | undefined;
    for (let i = 1; i <= 4 && refused === undefined; i++) {
      await say(page, `msg ${i}`);
      const outcome = await settled(page);
      if (outcome === "sent") {
        await waitForLine(page, `ada: msg ${i}`);
      } else {
        refused = `msg ${i}`;
        assert.equal(
          outcome,
          "Not sent: you are sending too fast. Wait a moment, then press Enter again.",
        );
      }
    }
    assert.ok(refused, "the rate limit refused a message");
    assert.equal(await inputValue(page), refused);
    assert.equal(
      await page.$eval("#send-error", (el) => (el as HTMLElement).dataset.code),
      "rate_limited",
    );
    assert.equal(
      await page.$eval("#input", (el) => el.getAttribute("aria-describedby")),
      "send-error",
    );
    assert.equal(await countLines(page, `ada: ${refused}`), 0);

    // Once the bucket has a token again, Enter sends what is still there.
    await new Promise((resolve) => setTimeout(resolve, 2100));
    await page.keyboard.press("Enter");
    assert.equal(await settled(page), "sent");
    await waitForLine(page, `ada: ${refused}`);
    assert.equal(await countLines(page, `ada: ${refused}`), 1);
    assert.equal(await sendError(page), "");
  },
  { maxMessageChars: 10, burst: 1, rate: 0.5 },
);

browserTest(
  "lines: safe links, one nick per group, mentions marked, bidi isolated, private messages and typing",
  async ({ url, open, visitor }) => {
    const { page } = await open(url(), undefined, { nick: "ada" });
    const bob = await visitor("bob");
    const cy = await visitor("cy");
    const said: [typeof bob, string][] = [
      [
        bob,
        "see https://example.com/a?b=1&c=2. or (https://deno.com/x_(y)) ok",
      ],
      [bob, "javascript:alert(1) data:text/html,hi ftp://x.test"],
      [bob, "hey ada, look: adam and ada_2 are not you"],
      [cy, "مرحبا ada"],
      [bob, "back to bob"],
    ];
    for (const [peer, text] of said) {
      peer.send(text);
      await waitForLine(page, `${peer.nick}: ${text}`);
    }

    const messages = await page.$$eval(
      "#lines li.message",
      (items) =>
        items.map((li) => {
          const nick = li.querySelector(".nick")!;
          const text = li.querySelector(".text") as HTMLElement;
          return {
            text: text.textContent,
            group: li.classList.contains("cont") ? "continued" : "new",
            nickShown: nick.getBoundingClientRect().width > 1,
            nickTag: nick.tagName,
            dir: text.dir,
            mention: li.classList.contains("mention"),
            marks: [...li.querySelectorAll("mark")].map((m) => m.textContent),
            links: [...li.querySelectorAll("a")].map((a) => ({
              href: a.href,
              text: a.textContent,
              rel: a.rel,
              target: a.target,
            })),
          };
        }),
    );
    const plain = {
      nickTag: "BDI",
      dir: "auto",
      mention: false,
      marks: [],
      links: [],
    };
    const safe = { rel: "noopener noreferrer", target: "_blank" };
    assert.deepEqual(messages, [
      {
        ...plain,
        text: said[0][1],
        group: "new",
        nickShown: true,
        links: [
          {
            href: "https://example.com/a?b=1&c=2",
            text: "https://example.com/a?b=1&c=2",
            ...safe,
          },
          {
            href: "https://deno.com/x_(y)",
            text: "https://deno.com/x_(y)",
            ...safe,
          },
        ],
      },
      { ...plain, text: said[1][1], group: "continued", nickShown: false },
      {
        ...plain,
        text: said[2][1],
        group: "continued",
        nickShown: false,
        mention: true,
        marks: ["ada"],
      },
      {
        ...plain,
        text: said[3][1],
        group: "new",
        nickShown: true,
        mention: true,
        marks: ["ada"],
      },
      { ...plain, text: said[4][1], group: "new", nickShown: true },
    ]);
    // Grouped lines still read "bob: …" to a screen reader.
    const texts = (await logLines(page)).map((line) => line.text);
    for (const [peer, text] of said) {
      assert.ok(texts.includes(`${peer.nick}: ${text}`));
    }

    // Someone typing is shown, and cleared by their message.
    await receive(page, { type: "typing", nick: "bob" });
    await receive(page, { type: "typing", nick: "cy" });
    assert.equal(
      await page.$eval("#typing", (el) => el.textContent),
      "bob and cy are typing…",
    );
    bob.send("done typing");
    await waitForLine(page, "bob: done typing");
    assert.equal(
      await page.$eval("#typing", (el) => el.textContent),
      "cy is typing…",
    );

    // More than 5 minutes after the last line: the nick is shown again.
    // (Frames handed to the page from here on: their ids are past the
    // server's, so nothing more may come from it.)
    const id = await nextId(page);
    const later = Date.now() + 6 * 60_000;
    await receive(page, [
      { type: "message", id, ts: later, from: "bob", text: "much later" },
      {
        type: "message",
        id: id + 1,
        ts: later + 60_000,
        from: "bob",
        text: "a minute on",
      },
    ]);
    assert.deepEqual(
      await page.$$eval(
        "#lines li.message",
        (items) => items.slice(-2).map((li) => li.classList.contains("cont")),
      ),
      [false, true],
    );

    // A private message stands out; "reply" and a click on a nick start
    // a private reply.
    await receive(page, {
      type: "dm",
      id: await nextId(page),
      ts: Date.now(),
      from: "bob",
      to: "ada",
      text: "psst https://deno.com",
    });
    const dm = await waitForLine(
      page,
      "bob → ada (private): psst https://deno.com",
    );
    assert.match(dm.className, /\bdm\b/);
    assert.deepEqual(dm.nicks, ["bob", "ada"]);
    await page.click("#lines li.dm .reply");
    assert.equal(await inputValue(page), "/msg bob ");
    await page.click("#lines li.mention:not(.cont) .nick");
    assert.equal(await inputValue(page), "/msg cy ");
    await page.click("#users .who");
    assert.equal(await inputValue(page), "/msg bob ");
  },
);

/** Records notifications instead of showing them; permission on request. */
function fakeNotifications(): void {
  const shown: { title: string; body?: string }[] = [];
  class FakeNotification {
    static permission = "default";
    static requestPermission(): Promise<string> {
      FakeNotification.permission = "granted";
      return Promise.resolve("granted");
    }
    onclick: unknown = null;
    constructor(title: string, options: { body?: string } = {}) {
      shown.push({ title, body: options.body });
    }
    close(): void {}
  }
  Object.assign(globalThis, {
    Notification: FakeNotification,
    e2eNotifications: shown,
  });
}

browserTest(
  "away: unread and mention counts in the title, a notification if allowed, reset on return",
  async ({ url, open, visitor }) => {
    const a = await open(
      url(),
      async (page) => {
        await page.evaluateOnNewDocument(fakeNotifications);
      },
      {
        nick: "ada",
      },
    );
    const bob = await visitor("bob");
    await waitForUsers(a.page, ["ada", "bob"]);
    assert.equal(await a.page.title(), "#lobby — deno-chat");

    // The bell asks once, then goes.
    assert.equal(
      await a.page.$eval("#notify", (el) => (el as HTMLElement).hidden),
      false,
    );
    await a.page.click("#notify");
    await a.page.waitForFunction(
      () => document.getElementById("notify")!.hidden,
      { polling: 50 },
    );

    // While the page is in front, nothing is unread.
    bob.send("while you look");
    await waitForLine(a.page, "bob: while you look");
    assert.equal(await a.page.title(), "#lobby — deno-chat");

    // Another tab of the same person in front: this one is hidden.
    const other = await a.context.newPage();
    await other.goto("about:blank");
    await other.bringToFront();
    assert.equal(
      await a.page.evaluate(() => document.visibilityState),
      "hidden",
    );
    bob.send("hello");
    await waitForTitle(a.page, "(1) #lobby — deno-chat");
    bob.send("still there?");
    await waitForTitle(a.page, "(2) #lobby — deno-chat");
    bob.send("ada: ping");
    await waitForTitle(a.page, "(1•) #lobby — deno-chat");
    assert.deepEqual(
      await a.page.evaluate("e2eNotifications"),
      [{ title: "bob in #lobby", body: "ada: ping" }],
    );

    await a.page.bringToFront();
    await waitForTitle(a.page, "#lobby — deno-chat");
    await other.close();
  },
);

browserTest(
  "the log follows the bottom through resizes; scrolled up it shows 'N new ↓'; my own message scrolls down",
  async ({ url, open, visitor }) => {
    const { page } = await open(url(), undefined, { nick: "ada" });
    const bob = await visitor("bob");
    for (let i = 1; i <= 40; i++) bob.send(`line ${i}`);
    await waitForLine(page, "bob: line 40");
    await waitAtBottom(page);

    // The window shrinks; the input grows to three lines.
    await page.setViewport({ width: 520, height: 320 });
    await waitAtBottom(page);
    const inputHeight = () => page.$eval("#input", (el) => el.clientHeight);
    const oneLine = await inputHeight();
    await page.click("#input");
    await typeLines(page, "one\ntwo\nthree");
    assert.ok(await inputHeight() > 2 * oneLine, "the input grew");
    await waitAtBottom(page);
    await clearInput(page);
    await waitAtBottom(page);

    // Scrolled up: new lines are counted, not scrolled to, resize or not.
    await scrollToTop(page);
    for (const text of ["new 1", "new 2", "new 3"]) bob.send(text);
    await waitForLine(page, "bob: new 3");
    await page.waitForFunction(
      () => {
        const more = document.getElementById("more")!;
        return !more.hidden && more.textContent === "3 new ↓";
      },
      { polling: "mutation" },
    );
    await page.setViewport({ width: 560, height: 360 });
    await page.waitForFunction(() => new Promise(requestAnimationFrame));
    assert.equal(await page.$eval("#log", (log) => log.scrollTop), 0);
    assert.ok(await scrolledUpBy(page) > 100);

    await page.click("#more");
    await waitAtBottom(page);
    assert.equal(
      await page.$eval("#more", (el) => (el as HTMLElement).hidden),
      true,
    );

    // My own message brings me down, wherever I was.
    await scrollToTop(page);
    await say(page, "mine");
    await waitForLine(page, "ada: mine");
    await waitAtBottom(page);
  },
  { burst: 100 },
);

browserTest(
  "joins and leaves close together are one line",
  async ({ url, open, visitor }) => {
    const { page } = await open(url(), undefined, { nick: "ada" });
    const people = [];
    for (const nick of ["bob", "cy", "dan", "eve", "fay"]) {
      people.push(await visitor(nick));
    }
    const joined = await waitForLine(page, "bob, cy and 3 others joined.");
    assert.deepEqual(joined.nicks, ["bob", "cy"]);
    assert.equal(
      await page.$eval("#lines .others", (el) => (el as HTMLElement).title),
      "dan, eve, fay",
    );
    await waitForUsers(page, ["ada", "bob", "cy", "dan", "eve", "fay"]);

    people[0].send("hi all");
    await waitForLine(page, "bob: hi all");
    await people[1].close();
    await people[2].close();
    await waitForLine(page, "cy and dan left.");
    await visitor("gus");
    await waitForLine(page, "cy and dan left; gus has joined.");
    // Someone already in the line starts the next one.
    await visitor("cy");
    await waitForLine(page, "cy has joined.");
    await waitForUsers(page, ["ada", "bob", "cy", "eve", "fay", "gus"]);
    assert.deepEqual(
      (await logLines(page)).map((line) => line.text),
      [
        "ada has joined.",
        "bob, cy and 3 others joined.",
        "bob: hi all",
        "cy and dan left; gus has joined.",
        "cy has joined.",
      ],
    );
  },
);

/** The banner's text and countdown, or undefined while it is hidden. */
function banner(page: Page): Promise<string[] | undefined> {
  return page.$eval(
    "#banner",
    (el) =>
      (el as HTMLElement).hidden ? undefined : [
        document.getElementById("banner-text")!.textContent ?? "",
        document.getElementById("countdown")!.textContent ?? "",
      ],
  );
}

browserTest(
  "disconnected: a banner with the reason, a countdown and Retry now",
  async (ctx) => {
    const a = await ctx.open(ctx.url(), undefined, { nick: "ada" });
    assert.equal(await banner(a.page), undefined);
    // The next retry is far off, as after many failed attempts.
    await a.page.evaluate("attempt = 5");
    const { port, wsPort } = ctx.chat;
    await ctx.chat.shutdown();
    await a.page.waitForSelector("#banner:not([hidden])");
    const [text, countdown] = (await banner(a.page))!;
    assert.equal(text, "Server restarting…");
    assert.match(countdown, /^Retrying in ([5-9]|10) s\.$/);
    assert.deepEqual(await axeViolations(a.page), []);

    // Back, with a small frame limit this time; Retry now does not wait.
    ctx.chat = await startChat({
      ...CHAT_OPTIONS,
      port,
      wsPort,
      maxFrameBytes: 200,
    });
    const clicked = Date.now();
    await a.page.click("#retry");
    await waitConnected(a.page);
    assert.ok(Date.now() - clicked < 3000, "reconnected at once");
    assert.equal(await banner(a.page), undefined);
    assert.equal(await myNick(a.page), "ada");

    // Closed by the server for a frame too big: the banner says why.
    await a.page.evaluate("attempt = 5");
    await a.page.evaluate(() => {
      const input = document.getElementById("input") as HTMLTextAreaElement;
      input.value = "x".repeat(300);
      (document.getElementById("form") as HTMLFormElement).requestSubmit();
    });
    await a.page.waitForSelector("#banner:not([hidden])");
    assert.equal((await banner(a.page))![0], "Disconnected: frame too big.");
    await waitForLine(a.page, "Disconnected: frame too big.");
    // What was not taken is still in the input.
    assert.equal(await inputValue(a.page), "x".repeat(300));
    await a.page.click("#retry");
    await waitConnected(a.page);
    assert.equal(await banner(a.page), undefined);
  },
);

browserTest(
  "/join switches room (hash, header, title); a refused room shows an error and no stale list",
  async ({ url, open, visitor }) => {
    await visitor("bob");
    await visitor("cy", "rust-fans");
    const { page } = await open(url(), undefined, { nick: "ada" });
    await waitForUsers(page, ["ada", "bob"]);

    await say(page, "/join rust-fans");
    await waitForUsers(page, ["ada", "cy"]);
    assert.deepEqual(
      await page.evaluate(() => [
        location.hash,
        document.getElementById("room")!.textContent,
        document.title,
      ]),
      ["#rust-fans", "rust-fans", "#rust-fans — deno-chat"],
    );
    assert.equal(await inputValue(page), "");
    assert.ok(
      !(await logLines(page)).some((line) => line.nicks.includes("bob")),
      "nothing from the lobby is left",
    );

    // Both rooms the server allows exist: a third is refused.
    await say(page, "/join full");
    await page.waitForSelector("#banner:not([hidden])");
    assert.equal(
      (await banner(page))![0],
      "Could not join #full: the server refused the connection or cannot be reached.",
    );
    assert.deepEqual(await onlineNicks(page), []);
    assert.equal(await page.$eval("#count", (el) => el.textContent), "0");
    assert.equal(await page.title(), "#full — deno-chat");

    // Not a room name: not even tried, and the command stays.
    await say(page, "/join Bad!");
    assert.equal(
      await settled(page),
      '"Bad!" is not a room name: use 1-32 of a-z, 0-9, - and _.',
    );
    assert.equal(await inputValue(page), "/join Bad!");
    assert.equal(await page.evaluate(() => location.hash), "#full");

    await clearInput(page);
    await say(page, "/join lobby");
    await waitConnected(page);
    await waitForUsers(page, ["ada", "bob"]);
    assert.equal(await banner(page), undefined);
  },
  { maxRooms: 2 },
);

browserTest(
  "first visit: a name is asked first (a random one offered), then kept with a session secret; the phone header stays one line",
  async ({ browser, url, visitor }) => {
    const room = "a-very-long-room-name-0123456789";
    await visitor("bob", room);
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.setViewport(PHONE);
    const cdp = await page.createCDPSession();
    await cdp.send("Network.enable");
    const sockets = new Map<string, { url?: string; protocols?: string }>();
    const socket = (id: string) =>
      sockets.get(id) ?? sockets.set(id, {}).get(id)!;
    cdp.on("Network.webSocketCreated", ({ requestId, url }) => {
      socket(requestId).url = url;
    });
    cdp.on("Network.webSocketWillSendHandshakeRequest", (event) => {
      socket(event.requestId).protocols = Object.entries(event.request.headers)
        .find(([name]) => name.toLowerCase() === "sec-websocket-protocol")
        ?.[1] as string | undefined;
    });
    await page.goto(url(room));

    assert.equal(await firstVisit(page), true);
    assert.match(
      await page.$eval("#name-input", (el) => (el as HTMLInputElement).value),
      /^[a-z]+-\d{3}$/,
    );
    assert.equal(
      await page.evaluate(() => document.activeElement?.id),
      "name-input",
    );
    assert.equal(
      await page.$eval("#state", (el) => el.textContent),
      "choose a name…",
    );
    assert.deepEqual(await axeViolations(page), []);
    assert.equal(sockets.size, 0, "no connection before a name");

    await chooseName(page, "no spaces");
    assert.equal(
      await page.$eval("#name-error", (el) => el.textContent),
      'Use letters, digits, "_" and "-" only.',
    );
    const nick = "a_very_long_nickname_x24";
    await chooseName(page, nick);
    await waitConnected(page);
    assert.equal(await myNick(page), nick);
    const stored = await page.evaluate(() => ({
      nick: localStorage.getItem("deno-chat.nick"),
      session: localStorage.getItem("deno-chat.session") ?? "",
    }));
    assert.equal(stored.nick, nick);
    assert.match(stored.session, /^[A-Za-z0-9_-]{43}$/);
    // The secret goes as a subprotocol, never in the URL (after the one
    // that asks to be told a refusal in a close frame).
    assert.equal(sockets.size, 1);
    const [handshake] = sockets.values();
    assert.equal(
      handshake.protocols,
      `chat.v1.json, chat.refusals-by-close, chat.session.${stored.session}`,
    );
    assert.ok(handshake.url?.includes(`/${room}?nick=${nick}`));
    assert.ok(!handshake.url?.includes(stored.session));
    await waitForUsers(page, [nick, "bob"]);

    // The phone header is one line; the long names in it are cut with "…".
    const header = await page.$eval("header", (header) => {
      // Items on one line share their middle (they are centred).
      const middles = [...header.children]
        .filter((el) => !(el as HTMLElement).hidden)
        .map((el) => {
          const { top, bottom } = el.getBoundingClientRect();
          return Math.round((top + bottom) / 4);
        });
      const cut = (el: Element) =>
        el.scrollWidth > el.clientWidth &&
        getComputedStyle(el).textOverflow === "ellipsis";
      return {
        lines: new Set(middles).size,
        overflows: header.scrollWidth > header.clientWidth,
        roomCut: cut(header.querySelector("h1")!),
        nickCut: cut(document.getElementById("me")!),
      };
    });
    assert.deepEqual(header, {
      lines: 1,
      overflows: false,
      roomCut: true,
      nickCut: true,
    });
    // In the log the name is shown whole, on one line: nicks are short
    // enough for a phone, and a cut one could read as another.
    assert.deepEqual(
      await page.$$eval(
        "#lines .nick",
        (nicks) =>
          nicks.filter((el) => el.textContent === "a_very_long_nickname_x24")
            .map((el) => {
              const range = document.createRange();
              range.selectNodeContents(el);
              return range.getClientRects().length === 1 &&
                range.getBoundingClientRect().right <= innerWidth;
            }),
      ),
      [true],
    );
    assert.deepEqual(await axeViolations(page), []);

    // The next visit asks nothing and asks the server for the same name.
    await page.close();
    const again = await context.newPage();
    const cdpAgain = await again.createCDPSession();
    await cdpAgain.send("Network.enable");
    const urls: string[] = [];
    cdpAgain.on("Network.webSocketCreated", ({ url }) => urls.push(url));
    await again.goto(url(room));
    assert.equal(await firstVisit(again), false);
    assert.equal(urls.length, 1);
    assert.equal(new URL(urls[0]).searchParams.get("nick"), nick);
  },
  // Its tab closes and bob hears the leave: past a short grace period.
  { sessionGrace: 1 },
);

browserTest(
  "accessibility: axe finds nothing in light and dark, desktop and phone, with messages, private messages and system lines",
  async ({ url, open, visitor }) => {
    const { page } = await open(url(), undefined, { nick: "ada" });
    const bob = await visitor("bob");
    const cy = await visitor("cy");
    bob.send("hi ada, the docs: https://deno.com");
    bob.send("a second line from bob");
    cy.send("/me waves");
    await waitForLine(page, "* cy waves");
    await say(page, "hello both\nand a new line");
    await waitForLine(page, "ada: hello both\nand a new line");
    await cy.close();
    await waitForLine(page, "cy has left.");
    await receive(page, [
      {
        type: "dm",
        id: await nextId(page),
        ts: Date.now(),
        from: "bob",
        to: "ada",
        text: "psst: lunch?",
      },
      {
        type: "dm",
        id: await nextId(page) + 1,
        ts: Date.now(),
        from: "ada",
        to: "bob",
        text: "yes!",
      },
    ]);
    await page.evaluate(() =>
      (globalThis as unknown as { system(text: string, kind: string): void })
        .system("Some messages were missed while you were away.", "error")
    );
    // A reason beside the input.
    await say(page, "/nick not a nick!");
    assert.match(await settled(page), /^Not sent: /);

    for (const theme of ["light", "dark"]) {
      for (const [size, viewport] of [["desktop", DESKTOP], ["phone", PHONE]]) {
        await page.emulateMediaFeatures([
          { name: "prefers-color-scheme", value: theme as string },
        ]);
        await page.setViewport(viewport as typeof DESKTOP);
        await receive(page, { type: "typing", nick: "bob" });
        const violations = await axeViolations(page);
        assert.deepEqual(
          violations,
          [],
          `${theme} ${size}:\n${JSON.stringify(violations, null, 1)}`,
        );
      }
    }
  },
);

browserTest(
  "/quit leaves the room (announced once) and stays out; /join comes back",
  async ({ url, open, visitor }) => {
    const bob = await visitor("bob");
    const { page } = await open(url(), undefined, { nick: "ada" });
    await waitForUsers(page, ["ada", "bob"]);
    await say(page, "/quit");
    await waitForLine(
      page,
      "You left #lobby. Reload the page, or /join a room, to come back.",
      { contains: true },
    );
    await bob.nextMatching(/^ \.\.\.\. ada has left\.$/);
    assert.equal(
      await page.$eval("#state", (el) => (el as HTMLElement).dataset.state),
      "disconnected",
    );
    assert.equal(
      await countLines(page, "Unknown command /quit (try /help)."),
      0,
    );
    await say(page, "/join lobby");
    await bob.nextMatching(/^ \.\.\.\. ada has joined\.$/);
    await waitForUsers(page, ["ada", "bob"]);
  },
);

browserTest(
  "a publish from the HTTP API shows up on the page as a message from the app",
  async ({ chat, url, open }) => {
    const { page } = await open(url("ci"), undefined, { nick: "ada" });
    await waitForUsers(page, ["ada"]);
    const response = await fetch(`http://127.0.0.1:${chat.port}/api/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}` },
      body: JSON.stringify({ room: "ci", text: "Build #512 passed" }),
    });
    assert.equal(response.status, 200);
    const { result } = await response.json();
    const line = await waitForLine(page, "app: Build #512 passed");
    assert.equal(line.text, "app: Build #512 passed");
    assert.equal(
      await page.$eval(
        "#lines li:last-child",
        (li) => (li as HTMLElement).dataset.id,
      ),
      String(result.id),
    );
  },
  { apiKey: API_KEY },
);
