/// <reference lib="dom" />
/**
 * `deno task screenshot`: a short conversation in headless Chromium, saved as
 *
 * - `e2e/screenshots/desktop.png`: ada's tab, desktop size, light theme;
 * - `e2e/screenshots/phone.png`: sam's tab at 375×667, dark theme;
 * - `e2e/screenshots/two-tabs.png`: both tabs side by side (the README's).
 *
 * Starts its own server on free loopback ports. The conversation has grouped
 * messages, a link, a mention, a line break, an action, a join burst and a
 * leave from two plain-text clients, a private message and a typing line;
 * the tabs came in through #rust-fans, where a visitor has since said
 * things (a mention of each), so the rooms list shows badges.
 * Where the server does not support private messages or typing yet (it
 * answers `bad_request`), the page is handed the event the server would
 * send, so the pictures show the design either way.
 *
 * @module
 */

import type { Page } from "puppeteer-core";
import { startChat } from "../main.ts";
import {
  launchBrowser,
  lineId,
  openChat,
  say,
  waitForLine,
  waitForUsers,
} from "./browser.ts";

const DIR = new URL("./screenshots/", import.meta.url);
const DESKTOP = { width: 900, height: 560 };
const PHONE = { width: 375, height: 667 };
/** One tab's size in the side-by-side picture. */
const TAB = { width: 680, height: 460 };
const SCALE = 2;

/** Who says what, in order: [tab, text]. */
const CONVERSATION: ["ada" | "sam", string][] = [
  ["ada", "hi sam! the chat server is live"],
  ["sam", "works here. no build step at all?"],
  ["ada", "none: one main.ts and one page"],
  ["ada", "the runtime: https://deno.com (2.9.6)"],
  ["sam", "/me opens a second tab"],
];

/** The line a sent text shows as in the log. */
function shownAs(nick: string, text: string): string {
  return text.startsWith("/me ")
    ? `* ${nick} ${text.slice(4)}`
    : `${nick}: ${text}`;
}

async function shot(page: Page): Promise<Uint8Array> {
  await page.bringToFront();
  return await page.screenshot({ type: "png" });
}

const chat = await startChat({
  port: 0,
  wsPort: 0,
  hostname: "127.0.0.1",
  quiet: true,
  logSink: () => {},
});
const browser = await launchBrowser({ ...DESKTOP, deviceScaleFactor: SCALE });
const visitors: WebSocket[] = [];
let dee: WebSocket | undefined;
try {
  const url = `http://127.0.0.1:${chat.port}/`;
  const tabs: Record<string, Page> = {};
  // dee keeps #rust-fans going (in memory an empty room starts over, and
  // the markers in it go).
  const rustFans = new WebSocket(
    `ws://127.0.0.1:${chat.wsPort}/rust-fans?nick=dee`,
  );
  dee = rustFans;
  await new Promise((resolve) => rustFans.onopen = resolve);
  for (const [nick, theme] of [["ada", "light"], ["sam", "dark"]]) {
    // Through #rust-fans (read there, so it is in their rooms) to the lobby.
    const { page } = await openChat(
      browser.browser,
      `${url}#rust-fans`,
      async (page) => {
        await page.emulateMediaFeatures([
          { name: "prefers-color-scheme", value: theme },
        ]);
      },
      { nick },
    );
    await page.waitForSelector('#room-list a[data-room="rust-fans"]');
    await page.evaluate(() => location.hash = "lobby");
    await page.waitForSelector('#room-list a[data-room="lobby"]');
    tabs[nick] = page;
  }
  const pages = Object.values(tabs);
  for (const page of pages) await waitForUsers(page, ["ada", "sam"]);
  for (const [nick, text] of CONVERSATION) {
    await say(tabs[nick], text);
    for (const page of pages) await waitForLine(page, shownAs(nick, text));
  }

  // Reactions on ada's first message, and a reply to it.
  const first = await lineId(tabs.ada, shownAs("ada", CONVERSATION[0][1]));
  for (const [nick, key] of [["sam", "👍"], ["ada", "🎉"], ["sam", "🎉"]]) {
    await say(tabs[nick], `/react ${first} ${key}`);
  }
  for (const page of pages) {
    await page.waitForFunction(
      (id: number) =>
        [...document.querySelectorAll(`li[data-id="${id}"] .reactions button`)]
          .map((chip) => chip.textContent?.replace(/\s+/g, " ").trim())
          .join(",") === "👍 1,🎉 2",
      { polling: "mutation" },
      first,
    );
  }
  await say(tabs.sam, `/reply ${first} congrats!`);
  for (const page of pages) {
    await waitForLine(page, "congrats!", { contains: true });
  }

  // Two plain-text visitors come in together (one line), one leaves again.
  for (const nick of ["bob", "cy"]) {
    const socket = new WebSocket(`ws://127.0.0.1:${chat.wsPort}/?nick=${nick}`);
    await new Promise((resolve) => socket.onopen = resolve);
    visitors.push(socket);
  }
  for (const page of pages) await waitForLine(page, "bob and cy joined.");
  visitors[0].send("ada: does it keep new lines?");
  await waitForLine(tabs.ada, "bob: ada: does it keep new lines?");
  await say(tabs.sam, "it does:\nline one\nline two");
  for (const page of pages) {
    await waitForLine(page, "sam: it does:\nline one\nline two");
  }
  visitors.pop()!.close();
  for (const page of pages) await waitForLine(page, "cy has left.");

  // A private message: sent for real, or shown as the server would send it.
  const dm = "psst: lunch at 1?";
  await say(tabs.ada, `/msg sam ${dm}`);
  const dmLine = `ada → sam (private): ${dm}`;
  const answer = await tabs.ada.waitForFunction(
    (line: string): string | false => {
      const error = document.getElementById("send-error");
      if (error?.dataset.code === "bad_request") return "refused";
      return [...document.querySelectorAll("#log li")].some((li) =>
        li.textContent?.includes(line)
      ) && "shown";
    },
    { polling: "mutation" },
    dmLine,
  );
  const supported = await answer.jsonValue() === "shown";
  await answer.dispose();
  if (!supported) {
    for (const page of pages) {
      await page.evaluate((text: string) => {
        const event = {
          type: "dm",
          ts: Date.now(),
          from: "ada",
          to: "sam",
          text,
        };
        (globalThis as unknown as { show(e: unknown, live: boolean): void })
          .show(event, false);
      }, dm);
    }
    await tabs.ada.evaluate(() => {
      const input = document.getElementById("input") as HTMLTextAreaElement;
      input.value = "";
      document.getElementById("send-error")!.textContent = "";
    });
  }
  for (const page of pages) await waitForLine(page, dmLine, { contains: true });

  // Meanwhile in #rust-fans: badges in both rooms lists.
  for (const text of ["@sam the build is green", "ada: and the docs?", "ok"]) {
    rustFans.send(text);
  }
  for (const page of pages) {
    await page.waitForSelector(
      '#room-list a[data-room="rust-fans"] .badge.mentions',
    );
  }

  // sam starts a reply: ada sees "sam is typing…".
  await tabs.sam.bringToFront();
  await tabs.sam.click("#input");
  await tabs.sam.keyboard.type("sounds good");
  const typing = await tabs.ada.waitForFunction(
    () => document.getElementById("typing")?.textContent !== "",
    { polling: "mutation", timeout: 1000 },
  ).then(() => true, () => false);
  if (!typing) {
    await tabs.ada.evaluate(() =>
      (globalThis as unknown as { receiveEvent(e: unknown): void })
        .receiveEvent({ type: "typing", nick: "sam" })
    );
  }

  await Deno.mkdir(DIR, { recursive: true });
  const write = async (name: string, png: Uint8Array) => {
    const file = new URL(name, DIR);
    await Deno.writeFile(file, png);
    console.log(`wrote ${file.pathname} (${png.byteLength} bytes)`);
  };
  await write("desktop.png", await shot(tabs.ada));
  await tabs.sam.setViewport({ ...PHONE, deviceScaleFactor: SCALE });
  await write("phone.png", await shot(tabs.sam));

  // Both tabs side by side, in the light theme.
  const images: string[] = [];
  for (const page of pages) {
    await page.emulateMediaFeatures([
      { name: "prefers-color-scheme", value: "light" },
    ]);
    await page.setViewport({ ...TAB, deviceScaleFactor: SCALE });
    images.push(
      `data:image/png;base64,${await page.screenshot({ encoding: "base64" })}`,
    );
  }
  const layout = await browser.browser.newPage();
  const gap = 16;
  await layout.setViewport({
    width: 2 * TAB.width + 3 * gap,
    height: TAB.height + 2 * gap,
    deviceScaleFactor: SCALE,
  });
  await layout.setContent(`<!doctype html>
    <style>
      body { margin: 0; padding: ${gap}px; display: flex; gap: ${gap}px;
        background: #d9dce3; }
      img { width: ${TAB.width}px; height: ${TAB.height}px; display: block;
        border-radius: 8px; box-shadow: 0 2px 10px rgb(0 0 0 / 0.25); }
    </style>
    ${images.map((src) => `<img src="${src}" alt="">`).join("")}`);
  await layout.waitForFunction(() =>
    [...document.images].every((img) => img.complete && img.naturalWidth > 0)
  );
  await write("two-tabs.png", await layout.screenshot({ type: "png" }));
} finally {
  for (const socket of visitors) socket.close();
  dee?.close();
  await browser.close();
  await chat.shutdown();
}
