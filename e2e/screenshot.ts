/// <reference lib="dom" />
/**
 * `deno task screenshot`: two tabs having a short conversation, side by side,
 * saved to `e2e/screenshots/two-tabs.png` (the picture in the README).
 *
 * Starts its own server on free loopback ports, drives two tabs of headless
 * Chromium, screenshots each, and lays the two shots out on a third page.
 *
 * @module
 */

import type { Page } from "puppeteer-core";
import { startChat } from "../main.ts";
import {
  launchBrowser,
  openChat,
  say,
  waitForLine,
  waitForUsers,
} from "./browser.ts";

const OUT = new URL("./screenshots/two-tabs.png", import.meta.url);
/** One tab's size in CSS pixels; wide enough for the online list beside. */
const TAB = { width: 680, height: 420 };
const SCALE = 2;

/** Who says what, in order: [tab, text]. */
const CONVERSATION: ["ada" | "sam", string][] = [
  ["ada", "hi sam! the chat server is live"],
  ["sam", "works here. no build step at all?"],
  ["ada", "none: one main.ts and one page"],
  ["sam", "/me opens a second tab"],
  ["sam", "both tabs update at once. ship it"],
];

/** The line a sent text shows as in the log. */
function shownAs(nick: string, text: string): string {
  return text.startsWith("/me ")
    ? `* ${nick} ${text.slice(4)}`
    : `${nick}: ${text}`;
}

async function shot(page: Page): Promise<string> {
  await page.bringToFront();
  const png = await page.screenshot({ encoding: "base64", type: "png" });
  return `data:image/png;base64,${png}`;
}

const chat = await startChat({
  port: 0,
  wsPort: 0,
  hostname: "127.0.0.1",
  quiet: true,
  logSink: () => {},
});
const browser = await launchBrowser({ ...TAB, deviceScaleFactor: SCALE });
try {
  const url = `http://127.0.0.1:${chat.port}/`;
  const tabs: Record<string, Page> = {};
  for (const nick of ["ada", "sam"]) {
    const { page } = await openChat(browser.browser, url, async (page) => {
      await page.emulateMediaFeatures([
        { name: "prefers-color-scheme", value: "light" },
      ]);
      // The nick this tab asks for, as if it had been chosen before.
      await page.evaluateOnNewDocument((nick: string) => {
        sessionStorage.setItem("deno-chat.nick", nick);
      }, nick);
    });
    tabs[nick] = page;
  }
  for (const page of Object.values(tabs)) {
    await waitForUsers(page, ["ada", "sam"]);
  }
  for (const [nick, text] of CONVERSATION) {
    await say(tabs[nick], text);
    for (const page of Object.values(tabs)) {
      await waitForLine(page, shownAs(nick, text));
    }
  }

  const [left, right] = [await shot(tabs.ada), await shot(tabs.sam)];
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
    <img src="${left}" alt=""><img src="${right}" alt="">`);
  await layout.waitForFunction(() =>
    [...document.images].every((img) => img.complete && img.naturalWidth > 0)
  );
  await Deno.mkdir(new URL(".", OUT), { recursive: true });
  const png = await layout.screenshot({ type: "png" });
  await Deno.writeFile(OUT, png);
  console.log(`wrote ${OUT.pathname} (${png.byteLength} bytes)`);
} finally {
  await browser.close();
  await chat.shutdown();
}
