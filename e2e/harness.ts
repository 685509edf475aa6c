/// <reference lib="dom" />
/**
 * The browser tests' harness: each test gets a fresh server on free ports
 * and a fresh headless Chromium, both closed however the test ends, and it
 * fails if the page's script threw. Each tab opened with `open` is a new
 * person (its own browser context); `visitor` adds a plain-text WebSocket
 * client, which is much quicker than a tab when a test needs people who only
 * talk.
 *
 * Where Chromium is missing the tests are skipped (with a message), unless
 * `CI` is set: then they fail.
 *
 * @module
 */

import assert from "node:assert/strict";
import axe from "axe-core";
import type { Browser, BrowserContext, Page } from "puppeteer-core";
import { type ChatOptions, type ChatServer, startChat } from "../main.ts";
import { type Peer, textClient } from "../tests/test_helpers.ts";
import {
  type ChatTab,
  countLines,
  errorsOf,
  launchBrowser,
  MISSING_BROWSER,
  openChat,
  skipBrowserTests,
  type TestBrowser,
} from "./browser.ts";

/** What every test server starts with: loopback, free ports, no logs. */
export const CHAT_OPTIONS: ChatOptions = {
  port: 0,
  wsPort: 0,
  hostname: "127.0.0.1",
  quiet: true,
  logSink: () => {},
};

if (skipBrowserTests) {
  console.warn(
    `%cSkipping the browser tests in e2e/: ${MISSING_BROWSER}`,
    "color: yellow",
  );
}

/** What a browser test is given. */
export interface Context {
  /** The running server; the restart test replaces it. */
  chat: ChatServer;
  /** The running browser. */
  browser: Browser;
  /** The page's URL on the current server, with an optional `#room`. */
  url(room?: string): string;
  /**
   * Opens a tab on `url` and waits until it is connected. A new person
   * unless `context` (another tab's) is given; `nick` answers the page's
   * first-visit question (else its random name is kept).
   */
  open(
    url: string,
    setup?: (page: Page) => Promise<void>,
    options?: { nick?: string; context?: BrowserContext },
  ): Promise<ChatTab>;
  /** A plain-text client in `room` (default lobby) that has joined. */
  visitor(nick: string, room?: string): Promise<Peer & { nick: string }>;
}

/** A test with a fresh server (started with `options`) and browser. */
export function browserTest(
  name: string,
  fn: (ctx: Context) => Promise<void>,
  options: ChatOptions = {},
): void {
  Deno.test({
    name,
    ignore: skipBrowserTests,
    async fn() {
      const pages: Page[] = [];
      const peers: Peer[] = [];
      let browser: TestBrowser | undefined;
      const ctx: Context = {
        chat: await startChat({ ...CHAT_OPTIONS, ...options }),
        get browser() {
          return browser!.browser;
        },
        url: (room) =>
          `http://127.0.0.1:${ctx.chat.port}/${room ? "#" + room : ""}`,
        open: (url, setup, { nick, context } = {}) =>
          openChat(context ?? browser!.browser, url, async (page) => {
            pages.push(page);
            await setup?.(page);
          }, { nick }),
        async visitor(nick, room) {
          const peer = await textClient(ctx.chat, room ? `/${room}` : "/", {
            nick,
          });
          peers.push(peer);
          assert.equal(peer.nick, nick);
          return peer;
        },
      };
      try {
        browser = await launchBrowser();
        await fn(ctx);
        for (const page of pages) assert.deepEqual(errorsOf(page), []);
      } finally {
        await Promise.all(peers.map((peer) => peer.close().catch(() => {})));
        await browser?.close();
        await ctx.chat.shutdown();
      }
    },
  });
}

/** Lines reading `text`, checked to be exactly one in each page. */
export async function assertOnce(pages: Page[], text: string): Promise<void> {
  for (const page of pages) {
    assert.equal(
      await countLines(page, text),
      1,
      `"${text}" should be shown exactly once`,
    );
  }
}

/** One accessibility finding, as much of it as a failure message needs. */
export interface Violation {
  id: string;
  impact?: string | null;
  help: string;
  nodes: { target: unknown; summary?: string }[];
}

/**
 * Runs axe-core on the page as it is and returns its violations (every rule
 * axe runs by default: WCAG A and AA and best practices). The script is
 * evaluated through the DevTools protocol, which the page's
 * Content-Security-Policy does not apply to.
 */
export async function axeViolations(page: Page): Promise<Violation[]> {
  if (!await page.evaluate(() => "axe" in globalThis)) {
    await page.evaluate(axe.source);
  }
  return await page.evaluate(async () => {
    const { axe } = globalThis as unknown as {
      axe: {
        run(
          context: Document,
          options: object,
        ): Promise<{ violations: Violation[] }>;
      };
    };
    const { violations } = await axe.run(document, {
      resultTypes: ["violations"],
    });
    return violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => ({
        target: n.target,
        summary: (n as { failureSummary?: string }).failureSummary,
      })),
    }));
  });
}

/** Axe finds nothing on any of `pages`, in the light theme and the dark. */
export async function assertAccessible(pages: Page[]): Promise<void> {
  for (const theme of ["light", "dark"]) {
    for (const page of pages) {
      await page.emulateMediaFeatures([
        { name: "prefers-color-scheme", value: theme },
      ]);
      const violations = await axeViolations(page);
      assert.deepEqual(
        violations,
        [],
        `${theme}:\n${JSON.stringify(violations, null, 1)}`,
      );
    }
  }
}
