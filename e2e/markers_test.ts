/// <reference lib="dom" />
/**
 * Browser tests of read markers on the page (issue 27 point 3): one person
 * on a laptop and a phone (two browser contexts with the same session, as
 * two devices are): each lists the person's rooms with unread and mention
 * badges (words for screen readers, "999+" past the server's count) and
 * counts them in the tab's title; reading on one (the room in front, the
 * tab focused) clears the other's badge and title; a mention or a DM in a
 * hidden tab raises a notification (with the text in the room shown, a
 * count for another room), none for a plain message or one's own; after a
 * reload, "New since you left" stands at the marker (and goes when
 * another tab reads past it); `/rooms` says the list; a link switches
 * room; axe finds nothing with the badges shown, light and dark, wide and
 * narrow; past the server's count, "999+".
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { type ChatTab, logLines, say, waitForLine } from "./browser.ts";
import { assertAccessible, browserTest } from "./harness.ts";

/** One link of the rooms list as it reads on screen and to a screen reader. */
interface RoomLink {
  room: string;
  current: boolean;
  unread: string;
  mentions: string;
  /** What a screen reader says after the room's name. */
  spoken: string;
}

/** The rooms list (`#room-list`), in order. */
function roomLinks(page: Page): Promise<RoomLink[]> {
  return page.$$eval("#room-list a", (links) =>
    links.map((a) => ({
      room: a.getAttribute("data-room") ?? "",
      current: a.getAttribute("aria-current") === "page",
      unread: a.querySelector(".badge.unread")?.textContent ?? "",
      mentions: a.querySelector(".badge.mentions")?.textContent ?? "",
      spoken: a.querySelector(".visually-hidden")?.textContent ?? "",
    })));
}

/** Waits until the rooms list reads `want`; fails with what it read. */
async function waitForRooms(page: Page, want: RoomLink[]): Promise<void> {
  try {
    await page.waitForFunction(
      (want: string) =>
        JSON.stringify(
          [...document.querySelectorAll("#room-list a")].map((a) => ({
            room: a.getAttribute("data-room") ?? "",
            current: a.getAttribute("aria-current") === "page",
            unread: a.querySelector(".badge.unread")?.textContent ?? "",
            mentions: a.querySelector(".badge.mentions")?.textContent ?? "",
            spoken: a.querySelector(".visually-hidden")?.textContent ?? "",
          })),
        ) === want,
      { polling: "mutation" },
      JSON.stringify(want),
    );
  } catch (error) {
    assert.deepEqual(await roomLinks(page), want, String(error));
  }
}

/** A room of the list with nothing unread. */
function allRead(room: string, current = false): RoomLink {
  return { room, current, unread: "", mentions: "", spoken: "" };
}

/** Waits until the tab's title is `title`; fails with what it is. */
async function waitForTitle(page: Page, title: string): Promise<void> {
  try {
    await page.waitForFunction(
      (title: string) => document.title === title,
      { polling: 50 }, // a title set in a background tab is no animation
      title,
    );
  } catch (error) {
    assert.equal(await page.title(), title, String(error));
  }
}

/**
 * A setup that makes a new browser context the same person as `tab`: its
 * session secret and name in the context's storage before the page runs,
 * as a second device of theirs has them.
 */
async function sameSession(
  tab: ChatTab,
): Promise<(page: Page) => Promise<void>> {
  const stored = await tab.page.evaluate(() => ({
    session: localStorage.getItem("deno-chat.session")!,
    nick: localStorage.getItem("deno-chat.nick")!,
  }));
  assert.ok(stored.session && stored.nick, "the laptop keeps its session");
  return async (page) => {
    await page.evaluateOnNewDocument((stored) => {
      localStorage.setItem("deno-chat.session", stored.session);
      localStorage.setItem("deno-chat.nick", stored.nick);
    }, stored);
  };
}

/**
 * Records every notification the page makes (title and body), then makes
 * it as the browser would: run in the page before its script.
 */
function recordNotifications(): void {
  const shown: { title: string; body?: string }[] = [];
  const Real = globalThis.Notification;
  class Recorded extends Real {
    static override get permission() {
      return Real.permission;
    }
    static override requestPermission() {
      return Real.requestPermission();
    }
    constructor(title: string, options: NotificationOptions = {}) {
      shown.push({ title, body: options.body });
      super(title, options);
    }
  }
  Object.assign(globalThis, {
    Notification: Recorded,
    e2eNotifications: shown,
  });
}

/** The notifications the page made so far. */
function notifications(page: Page) {
  return page.evaluate("e2eNotifications") as Promise<
    { title: string; body?: string }[]
  >;
}

/** Hides `tab`: another tab of its context comes to the front. */
async function hide(tab: ChatTab): Promise<Page> {
  const other = await tab.context.newPage();
  await other.goto("about:blank");
  await other.bringToFront();
  await tab.page.waitForFunction(
    () => document.visibilityState === "hidden",
    { polling: 50 },
  );
  return other;
}

/** The laptop on #lobby and the phone on #rust-fans: one person, ada. */
async function laptopAndPhone(
  open: (
    url: string,
    setup?: (page: Page) => Promise<void>,
    options?: { nick?: string },
  ) => Promise<ChatTab>,
  url: (room?: string) => string,
  phoneSetup?: (page: Page) => Promise<void>,
): Promise<{ laptop: ChatTab; phone: ChatTab }> {
  const laptop = await open(url(), undefined, { nick: "ada" });
  const session = await sameSession(laptop);
  const phone = await open(url("rust-fans"), async (page) => {
    await session(page);
    await phoneSetup?.(page);
  });
  assert.equal(phone.nick, "ada", "the phone is ada too");
  // Each has read where it came in: both rooms are ada's, on both.
  for (const tab of [laptop, phone]) {
    const here = tab === laptop ? "lobby" : "rust-fans";
    await waitForRooms(tab.page, [
      allRead("lobby", here === "lobby"),
      allRead("rust-fans", here === "rust-fans"),
    ]);
  }
  return { laptop, phone };
}

browserTest(
  "read markers: the laptop's and the phone's rooms lists and titles count what is unread; reading on the laptop clears the phone's badge and title; /rooms says the list; axe finds nothing",
  async ({ url, open, visitor }) => {
    const { laptop, phone } = await laptopAndPhone(open, url);
    const bob = await visitor("bob");
    await waitForLine(laptop.page, "bob has joined.");

    // The laptop's tab is behind another: its lobby is not looked at.
    const blank = await hide(laptop);
    bob.send("lunch at noon?");
    const oneUnread = {
      room: "lobby",
      unread: "1",
      mentions: "",
      spoken: "(1 unread)",
    };
    await waitForRooms(phone.page, [
      { ...oneUnread, current: false },
      allRead("rust-fans", true),
    ]);
    await waitForTitle(phone.page, "(1) #rust-fans — deno-chat");
    await waitForLine(laptop.page, "bob: lunch at noon?");
    await waitForRooms(laptop.page, [
      { ...oneUnread, current: true },
      allRead("rust-fans"),
    ]);
    await waitForTitle(laptop.page, "(1) #lobby — deno-chat");

    // A mention: a badge of its own, first in the title.
    bob.send("ada: are you there?");
    const mentioned = {
      room: "lobby",
      current: false,
      unread: "2",
      mentions: "@1",
      spoken: "(2 unread, 1 mention)",
    };
    await waitForRooms(phone.page, [mentioned, allRead("rust-fans", true)]);
    await waitForTitle(phone.page, "(1•) #rust-fans — deno-chat");
    // The link's name, as a screen reader says it.
    const tree = await phone.page.accessibility.snapshot();
    const nav = tree?.children?.find((node) =>
      node.role === "navigation" && node.name === "Your rooms"
    );
    assert.ok(nav, "a navigation named Your rooms");
    assert.ok(
      JSON.stringify(nav).includes('"name":"#lobby (2 unread, 1 mention)"'),
      JSON.stringify(nav),
    );
    // The badges shown, light and dark, wide and narrow: nothing for axe.
    await assertAccessible([phone.page]);
    await phone.page.setViewport({ width: 390, height: 700 });
    await assertAccessible([phone.page]);
    await phone.page.setViewport({ width: 800, height: 600 });

    // The laptop comes to the front: its lobby is read, on both.
    await laptop.page.bringToFront();
    await waitForRooms(phone.page, [
      allRead("lobby"),
      allRead("rust-fans", true),
    ]);
    await waitForTitle(phone.page, "#rust-fans — deno-chat");
    await waitForRooms(laptop.page, [
      allRead("lobby", true),
      allRead("rust-fans"),
    ]);
    await waitForTitle(laptop.page, "#lobby — deno-chat");
    await blank.close();

    // /rooms: the list in the log.
    await say(laptop.page, "/rooms");
    await waitForLine(
      laptop.page,
      "Your rooms: #lobby (all read), #rust-fans (all read).",
    );
    // A link switches room as the address does.
    await laptop.page.click('#room-list a[data-room="rust-fans"]');
    await laptop.page.waitForFunction(
      () => document.getElementById("room")?.textContent === "rust-fans",
      { polling: "mutation" },
    );
    await waitForRooms(laptop.page, [
      allRead("lobby"),
      allRead("rust-fans", true),
    ]);
    assert.equal(new URL(laptop.page.url()).hash, "#rust-fans");
  },
);

browserTest(
  "notifications: in the phone's hidden tab a mention and a DM notify with their text, a mention in another room with its count; a plain message and ada's own do not",
  async ({ url, open, visitor }) => {
    const { laptop, phone } = await laptopAndPhone(
      open,
      url,
      async (page) => {
        await page.evaluateOnNewDocument(recordNotifications);
      },
    );
    const origin = new URL(url()).origin;
    await phone.context.setPermission(origin, {
      permission: { name: "notifications" },
      state: "granted",
    });
    const bob = await visitor("bob");
    const cy = await visitor("cy", "rust-fans");
    await waitForLine(phone.page, "cy has joined.");
    await hide(phone);

    cy.send("@ada look at this");
    cy.send("/msg ada psst");
    cy.send("just chatting");
    await waitForLine(phone.page, "cy: just chatting");
    // ada's own message, from the laptop, in the phone's room (where the
    // laptop reads all that came).
    await laptop.page.evaluate(() => location.hash = "rust-fans");
    await laptop.page.waitForFunction(
      () => document.getElementById("room")?.textContent === "rust-fans",
      { polling: "mutation" },
    );
    await say(laptop.page, "ada: a note to myself");
    await waitForLine(phone.page, "ada: ada: a note to myself");
    await waitForRooms(phone.page, [
      allRead("lobby"),
      allRead("rust-fans", true),
    ]);
    // A mention in the lobby, where neither tab is.
    await hide(laptop);
    bob.send("ada, the lobby needs you");
    await waitForRooms(phone.page, [
      {
        room: "lobby",
        current: false,
        unread: "1",
        mentions: "@1",
        spoken: "(1 unread, 1 mention)",
      },
      allRead("rust-fans", true),
    ]);
    assert.deepEqual(await notifications(phone.page), [
      { title: "cy in #rust-fans", body: "@ada look at this" },
      { title: "cy (private)", body: "psst" },
      { title: "You were mentioned in #lobby", body: "1 mention unread" },
    ]);
  },
);

browserTest(
  "after a reload 'New since you left' stands after the last message read; none once all is read; read on another tab, it goes",
  async ({ url, open, visitor }) => {
    const ada = await open(url(), undefined, { nick: "ada" });
    const bob = await visitor("bob");
    bob.send("first");
    await waitForLine(ada.page, "bob: first");
    await waitForRooms(ada.page, [allRead("lobby", true)]);
    const blank = await hide(ada);
    bob.send("second");
    bob.send("third");
    await waitForTitle(ada.page, "(2) #lobby — deno-chat");

    await ada.page.reload();
    await waitForLine(ada.page, "bob: third");
    const texts = (await logLines(ada.page)).map((line) => line.text);
    assert.deepEqual(texts.slice(-4), [
      "bob: first",
      "New since you left",
      "bob: second",
      "bob: third",
    ]);
    assert.equal(await ada.page.title(), "(2) #lobby — deno-chat");

    // Read (in front): the title clears, the divider stays where it was.
    await ada.page.bringToFront();
    await waitForTitle(ada.page, "#lobby — deno-chat");
    await blank.close();
    assert.deepEqual(
      (await logLines(ada.page)).map((line) => line.text).slice(-4),
      ["bob: first", "New since you left", "bob: second", "bob: third"],
    );
    await ada.page.reload();
    await waitForLine(ada.page, "bob: third");
    await waitForRooms(ada.page, [allRead("lobby", true)]);
    assert.equal(await dividers(ada.page), 0);

    // Hidden again, two more; after a reload the divider is before them.
    const blank2 = await hide(ada);
    bob.send("fourth");
    bob.send("fifth");
    await waitForTitle(ada.page, "(2) #lobby — deno-chat");
    await ada.page.reload();
    await waitForLine(ada.page, "bob: fifth");
    assert.deepEqual(
      (await logLines(ada.page)).map((line) => line.text).slice(-3),
      ["New since you left", "bob: fourth", "bob: fifth"],
    );
    // Another tab of ada's reads them: this one's divider and count go.
    const tab = await open(url(), undefined, { context: ada.context });
    await tab.page.bringToFront();
    await waitForTitle(ada.page, "#lobby — deno-chat");
    await ada.page.waitForFunction(
      () => !document.querySelector("#lines li.new-divider"),
      { polling: "mutation" },
    );
    await blank2.close();
  },
);

/** How many "New since you left" lines the log has. */
async function dividers(page: Page): Promise<number> {
  return (await logLines(page)).filter((line) =>
    line.text === "New since you left"
  ).length;
}

browserTest(
  "past the server's count a badge and the title say 999+",
  async ({ url, open, visitor }) => {
    const { laptop, phone } = await laptopAndPhone(open, url);
    const bob = await visitor("bob");
    await hide(laptop);
    for (let i = 1; i <= 1000; i++) bob.send(`line ${i}`);
    await waitForRooms(phone.page, [
      {
        room: "lobby",
        current: false,
        unread: "999+",
        mentions: "",
        spoken: "(999+ unread)",
      },
      allRead("rust-fans", true),
    ]);
    await waitForTitle(phone.page, "(999+) #rust-fans — deno-chat");
  },
  // Room for 1,000 messages sent at once, all kept and counted.
  { historySize: 1100, rate: 5000, burst: 5000 },
);
