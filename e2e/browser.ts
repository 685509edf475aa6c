/// <reference lib="dom" />
/**
 * Helpers for the browser tests and the screenshot script: find and launch
 * headless Chromium, open chat tabs, and wait for what the page shows.
 *
 * Nothing here sleeps: every wait is a `waitForFunction` on the DOM state the
 * test expects, with a timeout. Only the front tab gets animation frames, so
 * the waits poll on DOM mutations (`polling: "mutation"`), not on
 * `requestAnimationFrame` (puppeteer's default), which would stall in a
 * background tab.
 *
 * @module
 */

import assert from "node:assert/strict";
import puppeteer, {
  type Browser,
  type BrowserContext,
  type Page,
  type Viewport,
} from "puppeteer-core";

/** The browser the tests drive (Debian's `chromium` package). */
export const CHROMIUM = "/usr/bin/chromium";

/**
 * How long a wait may take. The page's reconnect backoff starts at 500 ms
 * (times a jitter of 0.5–1) and doubles up to 10 s, so a reconnect can take
 * up to 10 s; 15 s leaves room for that.
 */
export const WAIT_MS = 15_000;

/** The flags the browser runs with: headless, and quiet on the network. */
export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
  "--disable-sync",
  "--disable-quic",
];

function chromiumInstalled(): boolean {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
}

/** Is `CI` set (to anything but "", "0" or "false")? */
function inCi(): boolean {
  const value = Deno.env.get("CI");
  return value !== undefined && !["", "0", "false"].includes(value);
}

/** The line the tests print when they skip, and the hint in the CI failure. */
export const MISSING_BROWSER =
  `no Chromium at ${CHROMIUM}; install it with: apt-get install -y chromium`;

/**
 * True when the browser tests should be skipped: Chromium is missing and
 * `CI` is not set. In CI a missing browser is a failure: the tests run, and
 * {@linkcode launchBrowser} throws.
 */
export const skipBrowserTests: boolean = !chromiumInstalled() && !inCi();

/** A running browser with its own fresh profile; `close()` removes both. */
export interface TestBrowser {
  browser: Browser;
  close(): Promise<void>;
}

/** Launches headless Chromium with a fresh temporary `--user-data-dir`. */
export async function launchBrowser(
  viewport: Viewport = { width: 800, height: 600 },
): Promise<TestBrowser> {
  if (!chromiumInstalled()) {
    throw new Error(
      inCi() ? `${MISSING_BROWSER} (CI is set: not skipping)` : MISSING_BROWSER,
    );
  }
  const profile = await Deno.makeTempDir({ prefix: "deno-chat-e2e-" });
  let browser: Browser;
  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      args: [...CHROMIUM_FLAGS, `--user-data-dir=${profile}`],
      defaultViewport: viewport,
      timeout: WAIT_MS,
    });
  } catch (error) {
    await Deno.remove(profile, { recursive: true });
    throw error;
  }
  return {
    browser,
    async close() {
      try {
        await browser.close();
      } finally {
        await Deno.remove(profile, { recursive: true });
      }
    },
  };
}

/** What {@linkcode openChat} opened: the tab, its nick, and its person. */
export interface ChatTab {
  page: Page;
  nick: string;
  /** The browser context (storage) this tab shares with its person's tabs. */
  context: BrowserContext;
}

/**
 * Opens a new tab on `url` and waits until the page is connected and knows
 * its nick. Given the browser, the tab is a new person (a fresh browser
 * context: its own storage, so its own session and nick); given a context,
 * it is one more tab of that person. On a first visit the page asks for a
 * name: the tab answers with `nick`, or accepts the page's random one.
 */
export async function openChat(
  target: Browser | BrowserContext,
  url: string,
  setup?: (page: Page) => Promise<void>,
  { nick }: { nick?: string } = {},
): Promise<ChatTab> {
  const context = "createBrowserContext" in target
    ? await target.createBrowserContext()
    : target;
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  // A page error (an exception in the chat script) fails the test loudly.
  const errors: Error[] = [];
  page.on("pageerror", (error) => errors.push(error as Error));
  pageErrors.set(page, errors);
  await setup?.(page);
  await page.goto(url);
  if (await firstVisit(page)) await chooseName(page, nick);
  await waitConnected(page);
  return { page, nick: await myNick(page), context };
}

/** Waits until the page either asks for a name (true) or is connected. */
export async function firstVisit(page: Page): Promise<boolean> {
  const handle = await page.waitForFunction(() => {
    const dialog = document.getElementById("name-dialog");
    if (dialog instanceof HTMLDialogElement && dialog.open) return "ask";
    return document.querySelector('#state[data-state="connected"]') !== null &&
      "connected";
  }, { polling: "mutation" });
  const state = await handle.jsonValue();
  await handle.dispose();
  return state === "ask";
}

/** Answers the name dialog with `nick` (or keeps its random name): Enter. */
export async function chooseName(page: Page, nick?: string): Promise<void> {
  if (nick !== undefined) {
    await page.$eval("#name-input", (el, nick) => {
      (el as HTMLInputElement).value = nick;
    }, nick);
  }
  await page.focus("#name-input");
  await page.keyboard.press("Enter");
}

const pageErrors = new WeakMap<Page, Error[]>();

/** Exceptions the page's own script threw so far. */
export function errorsOf(page: Page): Error[] {
  return pageErrors.get(page) ?? [];
}

/** Waits for `#state[data-state="connected"]`. */
export async function waitConnected(page: Page): Promise<void> {
  await page.waitForSelector('#state[data-state="connected"]');
}

/** The nick the page shows as its own (`#me`), once it has one. */
export async function myNick(page: Page): Promise<string> {
  const handle = await page.waitForFunction(() => {
    const text = document.getElementById("me")?.textContent ?? "";
    return text !== "" && text !== "…" && text;
  }, { polling: "mutation" });
  const nick = await handle.jsonValue();
  await handle.dispose();
  return String(nick);
}

/**
 * Brings the tab to the front, types `text` into `#input` and presses Enter,
 * as a person would; a "\n" in `text` is typed as Shift+Enter (a new line).
 */
export async function say(page: Page, text: string): Promise<void> {
  await page.bringToFront();
  await page.click("#input");
  await typeLines(page, text);
  await page.keyboard.press("Enter");
}

/** Types `text` where the focus is, a "\n" as Shift+Enter. */
export async function typeLines(page: Page, text: string): Promise<void> {
  const [first, ...rest] = text.split("\n");
  await page.keyboard.type(first);
  for (const line of rest) {
    await page.keyboard.down("Shift");
    await page.keyboard.press("Enter");
    await page.keyboard.up("Shift");
    await page.keyboard.type(line);
  }
}

/**
 * Waits until what was just sent is settled: the input emptied (the server
 * took it: "sent") or a reason shown beside it (returned).
 */
export async function settled(page: Page): Promise<string> {
  const handle = await page.waitForFunction(() => {
    const input = document.getElementById("input") as HTMLTextAreaElement;
    const error = document.getElementById("send-error")?.textContent ?? "";
    return error !== "" ? error : input.value === "" && "sent";
  }, { polling: 50 }); // a value set is no DOM mutation
  const outcome = await handle.jsonValue();
  await handle.dispose();
  return String(outcome);
}

/**
 * A line of `#log` as the user reads it, without its time stamp, its
 * buttons (a private message's "reply") and its reactions (the chips under
 * it, and the picker while it is open).
 */
export interface LogLine {
  text: string;
  className: string;
  nicks: string[];
}

/** Every line of `#log`, in order. */
export function logLines(page: Page): Promise<LogLine[]> {
  return page.$$eval(
    "#log li",
    (items) =>
      items.map((li) => ({
        text: [...li.childNodes]
          .filter((node) =>
            !["TIME", "BUTTON"].includes(node.nodeName) &&
            !(node instanceof Element && node.matches(".reactions, .picker"))
          )
          .map((node) => node.textContent)
          .join(""),
        className: li.className,
        nicks: [...li.querySelectorAll(".nick")].map((span) =>
          span.textContent ?? ""
        ),
      })),
  );
}

/** How many lines of `#log` read exactly `text`. */
export async function countLines(page: Page, text: string): Promise<number> {
  return (await logLines(page)).filter((line) => line.text === text).length;
}

/**
 * Waits until `#log` has a line that reads exactly `text` (time stamp left
 * out), or, with `{ contains: true }`, one that contains it; returns it.
 */
export async function waitForLine(
  page: Page,
  text: string,
  { contains = false } = {},
): Promise<LogLine> {
  await page.waitForFunction(
    (text: string, contains: boolean) =>
      [...document.querySelectorAll("#log li")].some((li) => {
        const read = [...li.childNodes]
          .filter((node) =>
            !["TIME", "BUTTON"].includes(node.nodeName) &&
            !(node instanceof Element && node.matches(".reactions, .picker"))
          )
          .map((node) => node.textContent)
          .join("");
        return contains ? read.includes(text) : read === text;
      }),
    { polling: "mutation" },
    text,
    contains,
  );
  const lines = await logLines(page);
  return lines.find((line) =>
    contains ? line.text.includes(text) : line.text === text
  )!;
}

/** The nicks in the online list (`#users`), without the " (you)" mark. */
export function onlineNicks(page: Page): Promise<string[]> {
  return page.$$eval(
    "#users li .nick",
    (spans) => spans.map((span) => span.textContent ?? ""),
  );
}

/** Waits until the online list is exactly `nicks` (in any order). */
export async function waitForUsers(page: Page, nicks: string[]): Promise<void> {
  await page.waitForFunction(
    (nicks: string[]) => {
      const shown = [...document.querySelectorAll("#users li .nick")]
        .map((span) => span.textContent ?? "").sort();
      const want = [...nicks].sort();
      return shown.length === want.length &&
        shown.every((nick, i) => nick === want[i]) &&
        document.getElementById("count")?.textContent === String(want.length);
    },
    { polling: "mutation" },
    nicks,
  );
}

/** The id of the log line that reads `text` (its `data-id`). */
export async function lineId(page: Page, text: string): Promise<number> {
  const line = await waitForLine(page, text);
  const id = await page.$$eval(
    "#lines li",
    (items, read) =>
      items.find((li) =>
        [...li.childNodes]
          .filter((node) =>
            !["TIME", "BUTTON"].includes(node.nodeName) &&
            !(node instanceof Element && node.matches(".reactions, .picker"))
          )
          .map((node) => node.textContent).join("") === read
      )?.getAttribute("data-id"),
    line.text,
  );
  assert.ok(id, `"${text}" has an id`);
  return Number(id);
}

/** What has the focus: its tag, id, accessible label, and its line's id. */
export function focusedElement(page: Page) {
  return page.evaluate(() => {
    const el = document.activeElement as HTMLElement | null;
    return {
      tag: el?.tagName,
      id: el?.id,
      label: el?.getAttribute("aria-label") ?? null,
      line: el?.closest("li")?.getAttribute("data-id") ?? null,
    };
  });
}

/**
 * The bar above the input (`replying` or `editing`): its text, or null
 * while it is hidden.
 */
export function barText(
  page: Page,
  bar: "replying" | "editing",
): Promise<string | null> {
  return page.$eval(
    `#${bar}`,
    (el, bar) =>
      (el as HTMLElement).hidden
        ? null
        : el.querySelector(`#${bar}-text`)!.textContent,
    bar,
  );
}
