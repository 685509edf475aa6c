/// <reference lib="dom" />
/**
 * Browser tests of private rooms (issue 27 point 4) on the page: a
 * moderator (signed in by a login token) makes the room invite-only (a
 * lock in the header, a line in the log); a stranger opening the room's
 * address is told it is invite-only and is not let in; the moderator makes
 * an invite link (shown with a Copy button, to the moderator only); the
 * stranger opens it and is let in, the code gone from the address bar, and
 * a reload still lets them in (invited by their session); the used link
 * says so to the next one; axe finds nothing in either page.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { BrowserContext, Page } from "puppeteer-core";
import { AUTH_OPTIONS, hs256 } from "../tests/auth_helpers.ts";
import { metric } from "../tests/test_helpers.ts";
import {
  chooseName,
  firstVisit,
  logLines,
  say,
  WAIT_MS,
  waitConnected,
  waitForLine,
} from "./browser.ts";
import { assertAccessible, browserTest } from "./harness.ts";

/** What the page says to someone a private room does not let in. */
const INVITE_ONLY =
  "This room is invite-only: ask a moderator for an invite link.";

/** The same, when the invite link they came with admits nobody now. */
const LINK_SPENT =
  "This room is invite-only, and this invite link admits nobody now (used up, revoked or expired): ask a moderator for a new one.";

/**
 * A tab of a new person (its own browser context) on `url`, whose first
 * visit is answered with `nick`; not waited for to be connected (a private
 * room may refuse it). Its script's exceptions are collected.
 */
async function stranger(
  context: BrowserContext,
  url: string,
  nick: string,
): Promise<{ page: Page; errors: Error[] }> {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const errors: Error[] = [];
  page.on("pageerror", (error) => errors.push(error as Error));
  await page.goto(url);
  assert.ok(await firstVisit(page), "a first visit asks for a name");
  await chooseName(page, nick);
  return { page, errors };
}

/** The banner's text once it shows, and the page's state. */
async function refusal(page: Page) {
  await page.waitForSelector('#state[data-state="disconnected"]');
  return await page.evaluate(() => ({
    banner: document.getElementById("banner-text")!.textContent,
    bannerShown: !document.getElementById("banner")!.hidden,
    countdown: document.getElementById("countdown")!.textContent,
    dialogOpen: (document.getElementById("name-dialog") as HTMLDialogElement)
      .open,
    online: document.getElementById("count")!.textContent,
  }));
}

/**
 * Whether the header shows the lock: an image named "Invite-only room" in
 * the page's accessibility tree (a hidden one is not in it).
 */
async function locked(page: Page): Promise<boolean> {
  const tree = await page.accessibility.snapshot();
  const banner = tree?.children?.find((node) => node.role === "banner");
  return banner?.children?.some((node) =>
    ["img", "image"].includes(node.role) && node.name === "Invite-only room"
  ) ?? false;
}

browserTest(
  "a private room refuses a stranger (told it is invite-only) and lets them in with the moderator's invite link, which leaves the address bar; a reload still lets them in; axe finds nothing",
  async ({ browser, chat, open }) => {
    const page = `http://127.0.0.1:${chat.port}/`;
    const token = await hs256({ sub: "op-1", name: "mod", roles: ["op"] });
    const mod = await open(`${page}#secret&token=${token}`);
    assert.equal(mod.nick, "mod");
    assert.equal(await locked(mod.page), false);

    await say(mod.page, "/private on");
    await waitForLine(mod.page, "mod made the room invite-only.");
    await mod.page.waitForSelector("#lock:not([hidden])");
    assert.equal(await locked(mod.page), true);

    // A stranger opens the room's address: not let in, and told why.
    const eveContext = await browser.createBrowserContext();
    const eve = await stranger(eveContext, `${page}#secret`, "eve");
    assert.deepEqual(await refusal(eve.page), {
      banner: INVITE_ONLY,
      bannerShown: true,
      countdown: "",
      dialogOpen: false,
      online: "0",
    });
    await waitForLine(eve.page, INVITE_ONLY);
    assert.equal(await locked(eve.page), false);
    await assertAccessible([eve.page]);

    // The moderator makes a link: shown to the moderator, with a Copy button.
    await say(mod.page, "/invite link");
    const line = await waitForLine(mod.page, "Invite link ", {
      contains: true,
    });
    const match = new RegExp(
      `^Invite link ([\\w-]{8}) for #secret \\(1 use, until .+\\): (${
        page.replaceAll(".", "\\.")
      }#secret&invite=[\\w-]{32})$`,
    ).exec(line.text);
    assert.ok(match, line.text);
    const [, linkId, link] = match;
    const copy = await mod.page.$("#lines li.invite:last-child button.copy");
    assert.ok(copy, "a Copy button");
    assert.equal(
      await copy.evaluate((button) => button.textContent),
      "Copy link",
    );
    await mod.context.overridePermissions(page.slice(0, -1), [
      "clipboard-read",
      "clipboard-write",
      "clipboard-sanitized-write",
    ]);
    await mod.page.bringToFront();
    await copy.click();
    await mod.page.waitForFunction(
      () =>
        document.querySelector("#lines li.invite:last-child button.copy")
          ?.textContent === "Copied",
      { polling: "mutation" },
    );
    await copy.dispose();
    assert.equal(
      await mod.page.evaluate(() => navigator.clipboard.readText()),
      link,
    );
    await assertAccessible([mod.page]);

    // Meanwhile the refused tab did not try again by itself (its first
    // retry would have come within a second): one refusal, still shown.
    assert.equal(
      await metric(chat, 'chat_upgrades_refused_total{reason="invite_only"}'),
      1,
    );
    assert.deepEqual(await refusal(eve.page), {
      banner: INVITE_ONLY,
      bannerShown: true,
      countdown: "",
      dialogOpen: false,
      online: "0",
    });

    // The stranger opens the link: let in, and the code leaves the address.
    await eve.page.goto(link);
    await waitConnected(eve.page);
    await waitForLine(mod.page, "eve has joined.");
    assert.equal(new URL(eve.page.url()).hash, "#secret");
    assert.equal(await locked(eve.page), true);
    assert.equal(
      await eve.page.evaluate(() => document.getElementById("banner")!.hidden),
      true,
    );
    await say(mod.page, "/invites");
    await waitForLine(
      mod.page,
      `#secret is invite-only. Invited: eve (link ${linkId}). Links: none.`,
    );
    // A link is the moderator's alone: eve, in the room now, sees none.
    await say(mod.page, "/invite link 2");
    await waitForLine(mod.page, "(2 uses, until", { contains: true });
    await say(mod.page, "links made");
    await waitForLine(eve.page, "links made", { contains: true });
    assert.ok(
      !(await logLines(eve.page)).some((l) =>
        l.text.startsWith("Invite link") || l.text.includes("&invite=")
      ),
      "no invite link in eve's log",
    );

    // A reload: in again without a code (invited by this browser's session).
    await eve.page.reload();
    await waitConnected(eve.page);
    assert.equal(new URL(eve.page.url()).hash, "#secret");
    assert.equal(await locked(eve.page), true);
    assert.ok(
      !(await logLines(eve.page)).some((l) => l.text.includes("invite-only:")),
      "no refusal after the reload",
    );
    await assertAccessible([eve.page, mod.page]);

    // The link had one use: the next one with it is told it is spent.
    const calContext = await browser.createBrowserContext();
    const cal = await stranger(calContext, link, "cal");
    assert.equal((await refusal(cal.page)).banner, LINK_SPENT);
    assert.equal(new URL(cal.page.url()).hash, new URL(link).hash);

    // Open again: the lock goes, and the line says so to everyone.
    await say(mod.page, "/private off");
    await waitForLine(eve.page, "mod opened the room to everyone.");
    await eve.page.waitForSelector("#lock[hidden]");
    assert.equal(await locked(eve.page), false);
    for (const { errors } of [eve, cal]) assert.deepEqual(errors, []);
  },
  AUTH_OPTIONS,
);

browserTest(
  "a moderator's private-room commands on the page: usage for a bad form, the server's refusal in its words, /invite NICK, /uninvite and /help",
  async ({ chat, open, visitor }) => {
    const page = `http://127.0.0.1:${chat.port}/`;
    const token = await hs256({ sub: "op-1", name: "mod", roles: ["op"] });
    const mod = await open(`${page}#lobby&token=${token}`);
    await visitor("bob");
    await waitForLine(mod.page, "bob has joined.");
    // A form the parser does not take: its usage, beside the input.
    await say(mod.page, "/private maybe");
    await mod.page.waitForFunction(
      () =>
        document.getElementById("send-error")!.textContent ===
          "usage: /private on|off",
      { polling: "mutation" },
    );
    await mod.page.$eval(
      "#input",
      (el) => (el as HTMLTextAreaElement).value = "",
    );
    // A count the server refuses: its words, as a line. A message typed
    // before it sent typing notices: the refusal is not taken for one of
    // theirs (which would turn typing notices off and say nothing).
    await say(mod.page, "hello bob");
    await waitForLine(mod.page, "hello bob", { contains: true });
    await say(mod.page, "/invite link 1001");
    await waitForLine(
      mod.page,
      "error: uses must be a whole number from 1 to 1000",
    );
    await say(mod.page, "/invite bob");
    await waitForLine(mod.page, "bob is invited.");
    await say(mod.page, "/uninvite bob");
    await waitForLine(mod.page, "bob is no longer invited.");
    await say(mod.page, "/uninvite bob");
    await waitForLine(mod.page, "error: bob is not invited here");
    await say(mod.page, "/help");
    await waitForLine(mod.page, "/private on|off", { contains: true });
  },
  AUTH_OPTIONS,
);
