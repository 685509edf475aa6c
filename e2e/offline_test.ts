/// <reference lib="dom" />
/**
 * Browser tests of sending when the chat cannot take it (issue 17, point 6):
 * offline a message waits, visibly, and goes out once on reconnect; a send
 * the dropped socket left unanswered is not sent twice; while the store is
 * down a banner says so, and what waits goes out when it is back. No reason
 * beside the input outlives the trouble it was about.
 *
 * The store's trouble is played by a store that wraps the memory store and
 * refuses (or holds) appends when told, as RedisStore refuses them while
 * Redis is down; the last test stops a real redis-server (skipped without
 * one, unless `CI` is set).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { startChat } from "../main.ts";
import type { NewEvent, RoomEvent } from "../wire/protocol.ts";
import {
  MemoryStore,
  type Poster,
  type PostRefusal,
  StoreUnavailable,
} from "../stores/rooms.ts";
import {
  haveRedis,
  startChatProcess,
  startRedis,
} from "../tests/redis_helpers.ts";
import type { Peer } from "../tests/test_helpers.ts";
import { countLines, say, waitConnected, waitForLine } from "./browser.ts";
import {
  assertOnce,
  axeViolations,
  browserTest,
  CHAT_OPTIONS,
  type Context,
} from "./harness.ts";

/**
 * The memory store, but posts and renames can be refused as
 * `unavailable` (`down`) or held until `letAppendsGo()` (`holdAppends()`).
 */
class TroubledStore extends MemoryStore {
  down = false;
  #held?: Promise<void>;
  #letGo?: () => void;

  constructor() {
    super({
      historySize: 100,
      maxHistoryBytes: 262_144,
      maxRooms: 1000,
      onEvict: () => {},
    });
  }

  override async post(
    room: string,
    poster: Poster,
    body: NewEvent,
  ): Promise<RoomEvent | PostRefusal> {
    await this.#held;
    if (this.down) throw new StoreUnavailable("the test's store is down");
    return super.post(room, poster, body);
  }
  override async rename(
    room: string,
    owner: string,
    from: string,
    to: string,
  ): Promise<RoomEvent | "nick_taken"> {
    await this.#held;
    if (this.down) throw new StoreUnavailable("the test's store is down");
    return super.rename(room, owner, from, to);
  }
  override available(): boolean {
    return !this.down;
  }

  /** Appends wait from now on, until `letAppendsGo()`. */
  holdAppends(): void {
    this.#held = new Promise((resolve) => this.#letGo = resolve);
  }
  letAppendsGo(): void {
    this.#letGo?.();
    this.#held = undefined;
  }
}

/** A browser test whose server has a {@linkcode TroubledStore} of its own. */
function troubledTest(
  name: string,
  fn: (ctx: Context, store: TroubledStore) => Promise<void>,
): void {
  const store = new TroubledStore();
  browserTest(name, (ctx) => fn(ctx, store), { store });
}

function inputValue(page: Page): Promise<string> {
  return page.$eval("textarea#input", (el) => el.value);
}

function sendError(page: Page): Promise<string> {
  return page.$eval("#send-error", (el) => el.textContent ?? "");
}

/** The lines waiting in #outbox, as read (time stamp left out). */
function waiting(page: Page): Promise<string[]> {
  return page.$$eval(
    "#outbox li",
    (items) =>
      items.map((li) =>
        [...li.childNodes].filter((node) => node.nodeName !== "TIME")
          .map((node) => node.textContent).join("")
      ),
  );
}

/** Waits until #outbox reads exactly `lines`. */
async function waitWaiting(page: Page, lines: string[]): Promise<void> {
  await page.waitForFunction(
    (lines: string[]) => {
      const shown = [...document.querySelectorAll("#outbox li")].map((li) =>
        [...li.childNodes].filter((node) => node.nodeName !== "TIME")
          .map((node) => node.textContent).join("")
      );
      return JSON.stringify(shown) === JSON.stringify(lines);
    },
    { polling: "mutation" },
    lines,
  );
}

/**
 * Every line `peer` receives up to and including one matching `last`: to
 * count what came before a marker.
 */
async function linesUntil(peer: Peer, last: RegExp): Promise<string[]> {
  const lines: string[] = [];
  for (;;) {
    const line = await peer.next(String(last));
    lines.push(line);
    if (last.test(line)) return lines;
  }
}

browserTest(
  "offline: a message typed while disconnected waits, visibly, and goes out once on reconnect; no stale reason stays",
  async (ctx) => {
    const { page } = await ctx.open(ctx.url(), undefined, { nick: "ada" });
    // The next retry is far off, as after many failed attempts.
    await page.evaluate("attempt = 5");
    const { port, wsPort } = ctx.chat;
    await ctx.chat.shutdown();
    await page.waitForSelector('#state[data-state="reconnecting"]');

    await say(page, "typed while away");
    // Taken by the page: out of the input, no refusal, shown as waiting.
    await waitWaiting(page, [
      "ada: typed while away (waiting for the connection)",
    ]);
    assert.equal(await inputValue(page), "");
    assert.equal(await sendError(page), "");
    assert.equal(await countLines(page, "ada: typed while away"), 0);
    assert.deepEqual(await axeViolations(page), []);

    ctx.chat = await startChat({ ...CHAT_OPTIONS, port, wsPort });
    const bob = await ctx.visitor("bob");
    await page.click("#retry");
    await waitConnected(page);
    await waitForLine(page, "ada: typed while away");
    await waitWaiting(page, []);
    await say(page, "marker");
    await waitForLine(page, "ada: marker");
    const heard = await linesUntil(bob, /^ada: marker$/);
    assert.deepEqual(
      heard.filter((line) => line.startsWith("ada: ")),
      ["ada: typed while away", "ada: marker"],
    );
    await assertOnce([page], "ada: typed while away");
    assert.equal(await sendError(page), "");
    assert.equal(await inputValue(page), "");
  },
);

troubledTest(
  "reconnect: a send the dropped socket left unanswered, taken meanwhile, is shown once and not sent again",
  async (ctx, store) => {
    const { page } = await ctx.open(ctx.url(), undefined, { nick: "ada" });
    const bob = await ctx.visitor("bob");
    await page.evaluate("attempt = 5");

    // The server has the message, but its echo has not come when the
    // socket drops.
    store.holdAppends();
    await say(page, "in flight");
    await page.evaluate("socket.close()");
    await page.waitForSelector('#state[data-state="reconnecting"]');
    // It may have been taken: it waits, out of the input.
    await waitWaiting(page, ["ada: in flight (waiting for the connection)"]);
    assert.equal(await inputValue(page), "");
    store.letAppendsGo();
    await bob.nextMatching(/^ada: in flight$/);

    // The resume brings its echo: not sent a second time.
    await page.click("#retry");
    await waitConnected(page);
    await waitForLine(page, "ada: in flight");
    await waitWaiting(page, []);
    await say(page, "marker");
    await waitForLine(page, "ada: marker");
    const heard = await linesUntil(bob, /^ada: marker$/);
    assert.deepEqual(heard.filter((line) => line.startsWith("ada: ")), [
      "ada: marker",
    ]);
    await assertOnce([page], "ada: in flight");
  },
);

troubledTest(
  "store down: a banner says so and the header is not green; what was sent waits and goes out when the store is back",
  async (ctx, store) => {
    const { page } = await ctx.open(ctx.url(), undefined, { nick: "ada" });
    const bob = await ctx.visitor("bob");
    assert.equal(
      await page.$eval("#trouble", (el) => (el as HTMLElement).hidden),
      true,
    );

    store.down = true;
    await say(page, "while the store is down");
    // The refusal shows as a banner, not as a reason beside the input.
    const handle = await page.waitForFunction(() => {
      const trouble = document.getElementById("trouble");
      const error = document.getElementById("send-error")?.textContent ?? "";
      return trouble && !trouble.hidden ? "banner" : error !== "" && error;
    }, { polling: "mutation" });
    assert.equal(await handle.jsonValue(), "banner");
    await handle.dispose();
    assert.equal(
      await page.$eval("#trouble", (el) => el.textContent),
      "The chat server cannot save messages right now. Yours wait below and go out when it is back.",
    );
    assert.deepEqual(
      await page.$eval("#state", (el) => [
        (el as HTMLElement).dataset.state,
        el.textContent,
      ]),
      ["trouble", "sending paused"],
    );
    assert.equal(await inputValue(page), "");
    assert.equal(await sendError(page), "");
    const [pending] = await waiting(page);
    assert.match(
      pending,
      /^ada: while the store is down \((waiting for the server|sending…)\)$/,
    );
    // Typed meanwhile: waits behind it.
    await say(page, "and this one");
    assert.equal((await waiting(page)).length, 2);
    for (const theme of ["light", "dark"]) {
      await page.emulateMediaFeatures([
        { name: "prefers-color-scheme", value: theme },
      ]);
      assert.deepEqual(await axeViolations(page), [], theme);
    }

    // Back: the page's next try goes through, then the next; the banner
    // goes and the header is green again.
    store.down = false;
    await waitForLine(page, "ada: while the store is down");
    await waitForLine(page, "ada: and this one");
    await waitWaiting(page, []);
    await page.waitForSelector("#trouble[hidden]");
    await waitConnected(page);
    await say(page, "marker");
    await waitForLine(page, "ada: marker");
    const heard = await linesUntil(bob, /^ada: marker$/);
    assert.deepEqual(heard.filter((line) => line.startsWith("ada: ")), [
      "ada: while the store is down",
      "ada: and this one",
      "ada: marker",
    ]);
    await assertOnce([page], "ada: while the store is down");
  },
);

// The same with Redis itself stopped and started again (its data kept on
// disk, as in production), the chat in a process of its own.
const withRedis = haveRedis || Boolean(Deno.env.get("CI"));
if (!withRedis) {
  console.warn(
    "%ce2e/offline_test.ts: no redis-server; its Redis test is skipped",
    "color: yellow",
  );
}
if (withRedis) {
  browserTest(
    "store down, with Redis: the banner while Redis is down; what was sent goes out once it is back",
    async (ctx) => {
      const dir = await Deno.makeTempDir({ prefix: "deno-chat-e2e-redis-" });
      let redis = await startRedis({ dir });
      try {
        await ctx.chat.shutdown();
        ctx.chat = (await startChatProcess(redis.url)).server;
        const { page } = await ctx.open(ctx.url(), undefined, { nick: "ada" });
        const bob = await ctx.visitor("bob");
        await say(page, "before");
        await bob.nextMatching(/^ada: before$/);

        await redis.kill();
        await say(page, "while Redis is down");
        await page.waitForSelector("#trouble:not([hidden])");
        assert.equal(await sendError(page), "");
        assert.match(
          (await waiting(page))[0],
          /^ada: while Redis is down \((waiting for the server|sending…)\)$/,
        );

        redis = await startRedis({ port: redis.port, dir });
        await waitForLine(page, "ada: while Redis is down");
        await waitWaiting(page, []);
        await page.waitForSelector("#trouble[hidden]");
        await waitConnected(page);
        await say(page, "marker");
        await waitForLine(page, "ada: marker");
        const heard = await linesUntil(bob, /^ada: marker$/);
        assert.deepEqual(heard.filter((line) => line.startsWith("ada: ")), [
          "ada: while Redis is down",
          "ada: marker",
        ]);
        await assertOnce([page], "ada: while Redis is down");
      } finally {
        await redis.kill();
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}
